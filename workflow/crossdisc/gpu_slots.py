"""One GPU to each training process on a machine with several.

Snakemake counts GPU jobs (`--resources gpu=N` runs at most N at once) but does not say which GPU
each one gets, so every job would train on the first. A training process therefore claims a free
GPU before torch initialises CUDA: an exclusive lock (flock) on one file per GPU in the temporary
directory, shared by every process on the machine and held until the process ends (the kernel drops
it even after SIGKILL), and CUDA_VISIBLE_DEVICES narrowed to that GPU. A SLURM job has been given
its own GPUs already.
"""

import fcntl
import logging
import os
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)


def claim(gpus, lock_dir, poll_seconds=5.0):
    """The first of `gpus` (ids as CUDA_VISIBLE_DEVICES writes them) that no other process holds,
    held until this process exits; waits while every one is held."""
    waiting = False
    while True:
        for gpu in gpus:
            fd = os.open(Path(lock_dir) / f"crossdisc-gpu-{gpu}.lock", os.O_RDONLY | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return gpu  # the descriptor stays open: closing it would free the GPU
            except BlockingIOError:
                os.close(fd)
        if not waiting:
            log.info("all %d GPUs are held by other training jobs: waiting for one to finish "
                     "(snakemake --resources gpu=%d starts no more jobs than there are GPUs)", len(gpus), len(gpus))
            waiting = True
        time.sleep(poll_seconds)


def pin_free_gpu(device, lock_dir=None):
    """Narrow CUDA_VISIBLE_DEVICES to one GPU that no other training process holds, and return it;
    None when training on the CPU, inside a SLURM job, or without a GPU."""
    if device == "cpu" or "SLURM_JOB_ID" in os.environ:
        return None
    import torch

    # NVML counts without initialising CUDA (after which CUDA_VISIBLE_DEVICES would be ignored);
    # the count honours a CUDA_VISIBLE_DEVICES the user set, whose ids are the ones to hand out.
    count = torch.cuda.device_count()
    if not count:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = [gpu.strip() for gpu in visible.split(",")][:count] if visible else [str(i) for i in range(count)]
    gpu = claim(gpus, lock_dir or tempfile.gettempdir())
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    log.info("training on GPU %s", gpu)
    return gpu
