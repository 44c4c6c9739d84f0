"""Where training runs: the device picked at run time, bf16 autocast on GPUs that support it, a
per-step loss log that does not make the CPU wait for the GPU every step, freed memory kept for
reuse on a CPU, and micro-batches replayed as CUDA graphs on a GPU."""

import ctypes
import sys

import torch

READ_EVERY = 32  # steps whose losses are read from the device at once


def pick_device(requested="auto"):
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(requested)


def keep_freed_memory(device):
    """On a CPU, keep the memory that tensors free for reuse instead of handing it back to the kernel
    (Linux with glibc; elsewhere, and on a GPU, nothing changes). A CPU training step frees and
    allocates tensors of tens of MB; glibc serves those above 32 MB from fresh mappings and trims
    the heap below, so every step pays page faults to zero the same memory again (50 ms of a MiniLM
    step for the word embeddings' gradient alone). The process then keeps its peak memory until it
    exits."""
    if device.type != "cpu":
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_max = -1, -4  # mallopt parameters, malloc.h
    libc.mallopt(m_mmap_max, 0)  # no allocation gets its own mapping: all come from the heap
    libc.mallopt(m_trim_threshold, 2**31 - 1)  # and the heap is never trimmed


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


class GraphedMicroBatches:
    """A training micro-batch (forward, loss and backward) recorded as a CUDA graph per batch shape
    and replayed, so a step costs the GPU's work alone instead of the Python and launch overhead of
    some thousand kernels, which bounds an eager BERT-sized step at batch 32. Recording costs one
    eager step per shape, not a compilation.

    `run(batch, labels)` returns the micro-batch's loss and accumulates its gradients into the
    parameters' `.grad`. The first call of a shape runs eagerly (it is the real step and the warm-up
    the recording needs), then records. Gradients must be zeroed in place (zero_grad(set_to_none=False)):
    the graphs add into the gradient tensors that existed when they were recorded. Dropout draws
    from the CUDA generator at replay, so manual_seed before a step seeds it as in eager mode. A
    shape that cannot be recorded falls back to eager for the rest of the run, with one message."""

    def __init__(self, run, parameters):
        self.run, self.parameters, self.graphs = run, list(parameters), {}
        self.pool = torch.cuda.graph_pool_handle()  # graphs never run at once: they share one memory pool
        self.eager = False

    def __call__(self, batch, labels):
        if self.eager:
            return self.run(batch, labels)
        shape = (tuple(batch["input_ids"].shape), labels.dtype)
        if shape in self.graphs:
            graph, static_batch, static_labels, loss = self.graphs[shape]
            for name, tensor in batch.items():
                static_batch[name].copy_(tensor)
            static_labels.copy_(labels)
            graph.replay()
            return loss
        side = torch.cuda.Stream()  # the eager step on a side stream, as recording wants its warm-up
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self.run(batch, labels)
        torch.cuda.current_stream().wait_stream(side)
        self._record(shape, batch, labels)
        return loss

    def _record(self, shape, batch, labels):
        static_batch, static_labels = {k: v.clone() for k, v in batch.items()}, labels.clone()
        gradients = [p.grad.data_ptr() if p.grad is not None else None for p in self.parameters]
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                loss = self.run(static_batch, static_labels)
        except RuntimeError as failed:
            self._check_gradients(gradients)
            print(f"crossdisc: CUDA graphs off, training eagerly: batch shape {shape[0]} could not be recorded "
                  f"({str(failed).splitlines()[0]})", file=sys.stderr)
            self.eager = True
            return
        self._check_gradients(gradients)
        self.graphs[shape] = graph, static_batch, static_labels, loss

    def _check_gradients(self, before):
        """Recording must have added into the existing gradient tensors, not replaced them."""
        after = [p.grad.data_ptr() if p.grad is not None else None for p in self.parameters]
        if after != before:
            raise RuntimeError("a CUDA graph replaced parameter gradients instead of adding into them: "
                               "set training: {cuda_graphs: false}")
