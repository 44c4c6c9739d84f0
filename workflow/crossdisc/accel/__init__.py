"""Speed machinery, behind the few calls the training loops make; a reader of the loops can skip
this package, and every piece trains exactly as the plain PyTorch it replaces (tested).

- `prepare(model)`: for a sequence classifier of the BERT family, a last layer that computes only
  the [CLS] position its head reads (first_position).
- `micro_batch_runner(run, model, device, cuda_graphs)`: on a GPU, each micro-batch shape recorded
  once as a CUDA graph and replayed (cuda_graphs), which removes the per-kernel launch work that
  bounds a BERT-sized step at batch 32. Few shapes exist: fine-tuning rounds batch widths to
  `batch_width_multiple`; pre-training pads every batch to its phase's sequence length, rounds its
  number of packed rows (`pretraining_batch_layout`) and predicts a fixed number of positions per
  sequence, so each phase has a few shapes.
- `pretraining_batches(build, steps, device, workers)`: on a GPU, each step's batch built ahead by
  worker processes (batches_ahead), so that the CPU's work on a batch does not set the pace of a
  job of many GPUs, whose processes each train on a small share of the batch.
"""

from .batches_ahead import built_ahead
from .cuda_graphs import GraphedMicroBatches
from .first_position import first_position_last_layer


def prepare(model):
    """The model, in place, with the speed-ups that apply to it. They are for Hugging Face models;
    a model family of the pipeline's own (Hilbert-CNN) is left as it is."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        first_position_last_layer(model)  # leaves other models alone
    return model


def uses_cuda_graphs(device, cuda_graphs):
    return device.type == "cuda" and cuda_graphs


def batch_width_multiple(device, cuda_graphs):
    """Batches are padded to a multiple of this: 16 where each width is a recorded graph."""
    return 16 if uses_cuda_graphs(device, cuda_graphs) else 1


def pretraining_batch_layout(device, cuda_graphs, pack_sequences):
    """The layout arguments of pretrain_data.masked_batch. Where each batch shape is a recorded
    graph, rows as long as the phase's sequence length and packed rows numbering a multiple of 8 (a
    phase then has a few shapes); where steps run eagerly, rows as long as the longest and as many
    as the sequences fill (less work)."""
    graphs = uses_cuda_graphs(device, cuda_graphs)
    return {"pad_to_length": graphs, "pack_rows_multiple": (8 if graphs else 1) if pack_sequences else None}


def batch_workers(device, workers):
    """Worker processes that build pre-training batches: `workers` on a GPU; none on a CPU, whose
    cores the training step itself keeps busy."""
    return workers if device.type == "cuda" else 0


def pretraining_batches(build, steps, device, workers):
    """build(step) for each of `steps` (a range), in order: where batch_workers gives workers, built
    ahead by them while this process trains; else built here, when asked for."""
    if (workers := batch_workers(device, workers)) and steps:
        return built_ahead(build, steps, workers)
    return map(build, steps)


def micro_batch_runner(run, model, device, cuda_graphs):
    """`run(*inputs)` (forward, loss, backward of a micro-batch; inputs are tensors or dicts of
    tensors) as the loop should call it.
    Graphs add into the gradient tensors they were recorded with: zero them in place
    (zero_grad(set_to_none=False))."""
    if not uses_cuda_graphs(device, cuda_graphs):
        return run
    return GraphedMicroBatches(run, [p for p in model.parameters() if p.requires_grad])


def replays_graphs(runner):
    """Whether a runner from micro_batch_runner trains on replayed CUDA graphs."""
    return isinstance(runner, GraphedMicroBatches)
