"""Training micro-batches recorded as CUDA graphs and replayed (on a GPU)."""

import torch

from ..errors import ConfigError


def _tensors(inputs):
    """The tensors of a step's arguments (tensors, or dicts of tensors), in order."""
    for item in inputs:
        yield from item.values() if isinstance(item, dict) else (item,)


def _copies(inputs):
    """Arguments of the same structure, holding copies of the tensors: a graph's static inputs."""
    return [{k: v.clone() for k, v in item.items()} if isinstance(item, dict) else item.clone() for item in inputs]


class GraphedMicroBatches:
    """A training micro-batch (forward, loss and backward) recorded as a CUDA graph per batch shape
    and replayed, so a step costs the GPU's work alone instead of the Python and launch overhead of
    some thousand kernels, which bounds an eager BERT-sized step at batch 32. Recording costs one
    eager step and a capture per shape, not a compilation.

    `run(*inputs)` (tensors, or dicts of tensors: fine-tuning's batch and labels, pre-training's
    batch) returns the micro-batch's loss and accumulates its gradients into the parameters' `.grad`;
    a call returns that loss as a tensor of its own. The first call of the first shape runs eagerly
    (it is the real step and the warm-up recording needs), then records; a later shape is recorded
    first and replayed (a recording runs nothing), so that its step takes memory from the graphs'
    shared pool instead of an eager step's on top of it (at BERT-base's 256 x 512 each is tens of GB).
    Gradients must be zeroed in place (zero_grad(set_to_none=False)): the graphs add into the
    gradient tensors that existed when they were recorded. Dropout draws from the CUDA generator at
    replay, so manual_seed before a step seeds it as in eager mode. A shape that cannot be recorded
    stops the run with a message that says to turn the graphs off (a failed capture leaves the CUDA
    generator and the current stream in a state in which eager steps cannot safely go on)."""

    def __init__(self, run, parameters):
        self.run, self.parameters, self.graphs = run, list(parameters), {}
        self.pool = torch.cuda.graph_pool_handle()  # graphs never run at once: they share one memory pool

    def __call__(self, *inputs):
        shape = tuple((tuple(t.shape), t.dtype) for t in _tensors(inputs))
        if shape not in self.graphs:
            if not self.graphs:
                return self._warm_up_and_record(shape, inputs)
            self._record(shape, inputs)
        graph, static_inputs, loss = self.graphs[shape]
        for static, tensor in zip(_tensors(static_inputs), _tensors(inputs)):
            static.copy_(tensor)
        graph.replay()
        return loss.clone()  # the next replay overwrites `loss`

    def _warm_up_and_record(self, shape, inputs):
        """The first shape's step, eagerly on a side stream (as recording wants its warm-up: the
        libraries' lazy set-up, autograd's first pass), then its recording."""
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            loss = self.run(*inputs)
        torch.cuda.current_stream().wait_stream(side)
        self._record(shape, inputs)
        return loss

    def _record(self, shape, inputs):
        """Record run() on copies of `inputs` as this shape's graph."""
        static_inputs = _copies(inputs)
        gradients = [p.grad.data_ptr() if p.grad is not None else None for p in self.parameters]
        graph = torch.cuda.CUDAGraph()  # torch.cuda.graph first hands back the blocks eager steps left cached
        try:
            with torch.cuda.graph(graph, pool=self.pool):
                loss = self.run(*static_inputs)
        except torch.OutOfMemoryError:
            raise  # as an eager step would
        except RuntimeError as failed:
            raise ConfigError("training.cuda_graphs", f"batch shape {[s for s, _ in shape]} could not be recorded "
                                                      f"as a CUDA graph ({str(failed).splitlines()[0]}): set it to "
                                                      "false to train with eager steps") from failed
        self._check_gradients(gradients)
        self.graphs[shape] = graph, static_inputs, loss

    def _check_gradients(self, before):
        """Recording must have added into the existing gradient tensors, not replaced them."""
        after = [p.grad.data_ptr() if p.grad is not None else None for p in self.parameters]
        if after != before:
            raise ConfigError("training.cuda_graphs", "a CUDA graph replaced parameter gradients instead of adding "
                                                      "into them: set it to false to train with eager steps")
