"""Pre-training batches built ahead of the training step by worker processes (on a GPU)."""

import torch

from ..errors import InputError

# A batch takes milliseconds, loading a shard seconds: a worker that has built none in this long has
# hung, and the job fails (a retry resumes it) instead of waiting out its time limit.
HUNG_AFTER_S = 600


class _StepBatches(torch.utils.data.Dataset):
    """`build(step)` as a dataset indexed by the step. A batch is a function of its step alone, so a
    worker process builds exactly the batch the training process would. An InputError comes back
    as the item, for the training process to raise as itself (a DataLoader re-raises a worker's
    exception as a RuntimeError holding its traceback)."""

    def __init__(self, build):
        self.build = build

    def __getitem__(self, step):
        try:
            return self.build(step)
        except InputError as error:
            return error


def built_ahead(build, steps, workers):
    """build(step) for each of `steps`, in order, built by `workers` worker processes (each step's
    by one of them, two steps ahead per worker). The workers fork from this process (`build` and
    what it holds are inherited, not pickled) and end with the iteration. No pinning thread
    (DataLoader's pin_memory): a CUDA graph recorded while another thread allocates pinned memory
    fails, so the training process pins each batch itself (training.to_device)."""
    loader = torch.utils.data.DataLoader(_StepBatches(build), sampler=steps, batch_size=None, num_workers=workers,
                                         multiprocessing_context="fork", timeout=HUNG_AFTER_S)
    for batch in loader:
        if isinstance(batch, InputError):
            raise batch
        yield batch
