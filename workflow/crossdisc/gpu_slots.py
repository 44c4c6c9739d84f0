"""Its own GPUs to each training job on a machine with several.

Snakemake counts GPU jobs (`--resources gpu=N` runs at most N at once) but does not say which GPU
each one gets, so every job would train on the first. A training process therefore claims a free
GPU before torch initialises CUDA: an exclusive lock (flock) on one file per GPU in the temporary
directory, shared by every process on the machine and held until the process ends (the kernel drops
it even after SIGKILL), and CUDA_VISIBLE_DEVICES narrowed to that GPU. A pre-training job on several
GPUs claims them all at once in `crossdisc claim-gpus`, which then execs torchrun: its processes see
those GPUs, one each. A SLURM job has been given its own GPUs already.
"""

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

from .errors import ConfigError

log = logging.getLogger(__name__)


def claim(gpus, lock_dir, count=1, poll_seconds=5.0):
    """`count` of `gpus` (ids as CUDA_VISIBLE_DEVICES writes them) that no other process holds, held
    until this process, and a program it execs (torchrun), exits; waits while fewer are free. All or
    none: two jobs that each held a GPU while waiting for a second would wait for each other forever."""
    waiting = False
    while True:
        held = {}
        for gpu in gpus:
            fd = os.open(Path(lock_dir) / f"crossdisc-gpu-{gpu}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            os.set_inheritable(fd, True)  # the descriptor stays open, across exec too: closing it frees the GPU
            held[gpu] = fd
            if len(held) == count:
                return list(held)
        for fd in held.values():  # too few are free: hand back those taken, and wait
            os.close(fd)
        if not waiting:
            log.info("fewer than %d of %d GPUs are free of other training jobs: waiting for them to finish "
                     "(snakemake --resources gpu=%d starts no more jobs than there are GPUs)", count, len(gpus),
                     len(gpus))
            waiting = True
        time.sleep(poll_seconds)


def pin_free_gpus(device, count=1, lock_dir=None):
    """Narrow CUDA_VISIBLE_DEVICES to `count` GPUs that no other training process holds, and return
    them; None when training on the CPU, inside a SLURM job, in a process that torchrun started (its
    launcher claimed the job's GPUs), or without a GPU."""
    if device == "cpu" or "SLURM_JOB_ID" in os.environ or "LOCAL_RANK" in os.environ:
        return None
    import torch

    # NVML counts without initialising CUDA (after which CUDA_VISIBLE_DEVICES would be ignored);
    # the count honours a CUDA_VISIBLE_DEVICES the user set, whose ids are the ones to hand out.
    available = torch.cuda.device_count()
    if not available:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [gpu.strip() for gpu in visible.split(",")][:available] if visible else [str(i) for i in range(available)]
    if count > len(gpus):
        raise ConfigError("pretrain.gpus", f"{count} GPUs asked for, {len(gpus)} on this machine")
    claimed = claim(gpus, lock_dir or tempfile.gettempdir(), count)
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(claimed)
    log.info("training on GPU %s", ", ".join(claimed))
    return claimed
