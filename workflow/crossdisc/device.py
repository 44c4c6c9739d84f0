"""Where training runs: the device picked at run time, bf16 autocast on GPUs that support it, and
a per-step loss log that does not make the CPU wait for the GPU every step."""

import torch

READ_EVERY = 32  # steps whose losses are read from the device at once


def pick_device(requested="auto"):
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def autocast_for(device):
    """A context factory: bf16 autocast on a GPU that supports it; a no-op on CPU, where runs stay
    fp32 and exactly reproducible."""
    enabled = device.type == "cuda" and torch.cuda.is_bf16_supported()
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


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
