"""Data-parallel training over the processes that torchrun starts, one per GPU (NCCL) or several on
the CPU (gloo): the process group, each process's device and its rows of the step's batch. A process
started without torchrun is a world of one, and nothing here changes what it does."""

import os
import sys

import torch
import torch.distributed as dist

from .errors import ConfigError


class Ranks:
    """This process's place among the training processes: `rank` of `size`."""

    def __init__(self, rank=0, size=1):
        self.rank, self.size = rank, size

    @property
    def main(self):
        """The process that writes the state and the checkpoint (they all hold the same weights)."""
        return self.rank == 0

    def check_batch(self, batch_size):
        if batch_size % self.size:
            raise ConfigError("training.batch_size", f"{batch_size} sequences per step do not divide among "
                                                     f"{self.size} processes (GPUs x nodes)")

    def rows(self, batch_rows):
        """This process's contiguous rows of a batch: equal shares of a full batch; an epoch's short
        last batch is split as evenly as it goes."""
        return range(self.rank * batch_rows // self.size, (self.rank + 1) * batch_rows // self.size)

    def gradient_sum(self, parameters):
        """A call that sums the parameters' gradients over the processes (a no-op for one process),
        which start from process 0's parameters (as DistributedDataParallel makes them)."""
        if self.size == 1:
            return lambda: None
        parameters = list(parameters)
        for parameter in parameters:
            dist.broadcast(parameter.detach(), 0)
        return GradientSum(parameters)

    def sum(self, value):
        """The sum of a tensor over the processes (each process's part of the loss: the step's loss)."""
        if self.size > 1:
            value = value.clone()
            dist.all_reduce(value)
        return value


class GradientSum:
    """Sums the gradients of `parameters` over the processes, called after each backward pass: they
    are views of one buffer, given before the first backward pass, that one all-reduce adds up.
    After the backward rather than from autograd hooks (DistributedDataParallel's way, which overlaps
    the exchange with the backward pass), so that a backward pass replayed as a CUDA graph, which
    adds into these same tensors and runs no hooks, takes part too."""

    def __init__(self, parameters):
        parameters = [p for p in parameters if p.requires_grad]
        self.buffer = torch.zeros(sum(p.numel() for p in parameters), dtype=parameters[0].dtype,
                                  device=parameters[0].device)
        offset = 0
        for p in parameters:
            p.grad = self.buffer[offset:offset + p.numel()].view_as(p)
            offset += p.numel()

    def __call__(self):
        dist.all_reduce(self.buffer)


def start(device):
    """This process's Ranks and device. Under torchrun (WORLD_SIZE > 1) it joins the process group:
    NCCL with its node's LOCAL_RANK-th GPU (every process of a node sees the node's GPUs: the job's,
    given by SLURM or claimed by `crossdisc claim-gpus`), gloo on the CPU."""
    size = int(os.environ.get("WORLD_SIZE", 1))
    if size == 1:
        return Ranks(), device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    ranks = Ranks(dist.get_rank(), size)
    if ranks.main:
        print(f"data-parallel on {size} processes ({dist.get_backend()})", file=sys.stderr)
    return ranks, device


def finish():
    """Leave the process group (where start joined one) once every process is done."""
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
