"""Training micro-batches recorded as CUDA graphs and replayed (on a GPU)."""

import sys

import torch


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

    @property
    def active(self):
        """Whether steps are replayed graphs (False once a shape could not be recorded)."""
        return not self.eager

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
