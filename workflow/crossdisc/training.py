"""What fine-tuning and pre-training share: the device picked at run time, bf16 autocast on GPUs
that support it (or fp32 throughout, where asked), the seeds that make a run reproducible and
resumable exactly, the resumable state file, and a per-step loss log that does not make the CPU
wait for the GPU every step."""

import torch

from .files import atomic_path

READ_EVERY = 32  # steps whose losses are read from the device at once


def pick_device(requested="auto"):
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def uses_bf16(device, precision="bf16"):
    """Whether a run autocasts to bf16: with precision bf16, on a GPU that supports it. Never on a
    CPU, where runs stay fp32 and exactly reproducible, nor with precision fp32, which is full fp32
    (PyTorch leaves TF32 matrix products off unless asked)."""
    return precision == "bf16" and device.type == "cuda" and torch.cuda.is_bf16_supported()


def autocast_for(device, precision="bf16"):
    """A context factory: bf16 autocast where `uses_bf16`, else a no-op."""
    enabled = uses_bf16(device, precision)
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def to_device(batch, device):
    """A dict of CPU tensors on `device`; on a GPU copied from pinned memory without blocking, so
    the CPU prepares the next batch while the GPU trains on this one."""
    if device.type == "cuda":
        batch = {k: v.pin_memory() for k, v in batch.items()}
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def data_generator(seed, epoch):
    """The generator of an epoch's example order: seeded by (seed, epoch) alone, so a resumed run
    sees exactly the batches an uninterrupted one would."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def seed_step(seed, step, process=0):
    """Seed torch's global generators (dropout, on CPU and GPU) for one optimiser step: everything
    random in a step depends on (seed, step) only, and on which of a data-parallel run's processes
    draws (`process`: its rank), so that processes draw different dropout masks."""
    torch.manual_seed(seed * 1_000_003 + step + process * 2**40)


def save_state(path, state):
    """Write a resumable training state (a dict of tensors, numbers and lists) atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path):
    """The state save_state wrote, or None; read as tensors and plain containers only."""
    return torch.load(path, map_location="cpu", weights_only=True) if path and path.exists() else None


class StepLog:
    """The per-step training curve: a list of dicts with a "loss". A new step's loss may be a device
    tensor; it is read in bulk every READ_EVERY steps or when `read()` is called, because reading it
    at once (`.item()`) stalls the GPU's queue of work every step."""

    def __init__(self, points=()):
        self.points = list(points)
        self.unread = []

    def add(self, point):
        self.points.append(point)
        if torch.is_tensor(point["loss"]):
            self.unread.append(point)
            if len(self.unread) >= READ_EVERY:
                self.read()

    def read(self):
        """Every point with its loss as a float (for saving, stopping rules and the outputs)."""
        if self.unread:
            values = torch.stack([p["loss"].detach().float() for p in self.unread]).tolist()
            for point, value in zip(self.unread, values):
                point["loss"] = value
            self.unread.clear()
        return self.points
