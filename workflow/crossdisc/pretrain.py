"""BERT pre-training from scratch (masked language model and next-sentence prediction), as a chain
of checkpoint jobs.

The job for checkpoint N starts from checkpoint M < N (the previous configured step, whose
directory also holds the optimiser, scheduler and step) and trains until step N; the first
checkpoint job builds the initial model. So each checkpoint is an independent output, a finished
one is never recomputed, and a killed job resumes from its last saved state.

The recipe of Devlin et al. (2019) and Google's create_pretraining_data.py: a sequence is
[CLS] A [SEP] B [SEP], A consecutive sentences of a document and B, half the time, the sentences
that follow them, else sentences of another, random document; the pooled [CLS] output learns to
tell which (next-sentence prediction), so checkpoints carry a trained pooler. 15% of a sequence's
tokens are predicted, at most `max_predictions` of them (BERT: 20 at length 128), of those 80%
[MASK], 10% a random token, 10% kept; AdamW with linear warm-up and linear decay. Sequences hold up
to `max_length` tokens, and `long_max_length` from step `long_from_step` on (BERT: 128, then 512,
with 80 predictions, for the last 10% of steps, which is what trains the position embeddings past
128). The MLM output layer is computed only at the predicted positions, as BERT's own code does.
A step's sequences are packed several to a row, each attending to itself alone, which is the loss
of one sequence per row on fewer rows. On a GPU each phase's step has a few shapes, each replayed as
a CUDA graph, and worker processes build the next steps' batches (crossdisc.accel).
The text comes tokenised, deduplicated and sharded from crossdisc.corpus.
"""

import sys
from pathlib import Path

import torch
from tqdm import tqdm

from . import accel, distributed
from .corpus import PreparedCorpus
from .errors import InputError
from .files import atomic_dir
from .models import load_tokenizer
from .pretrain_data import Batches, masked_batch
from .training import StepLog, autocast_for, load_state, pick_device, save_state, seed_step, to_device

DEFAULTS = {"max_length": 128, "batch_size": 32, "lr": 1e-4, "warmup_steps": 0, "weight_decay": 0.01,
            "mask_probability": 0.15, "short_seq_probability": 0.1, "checkpoint_every": 500, "precision": "bf16",
            "cuda_graphs": True, "pack_sequences": True}
STATE_FILE = "training_state.pt"


def pretraining_loss(model, batch):
    """BERT's loss (run_pretraining.py) of a BertForPreTraining on a batch of masked_batch: the masked
    LM's mean negative log-likelihood over the predicted positions, sum(weight * nll) /
    (predictions + 1e-5), plus the next-sentence cross-entropy's mean over the sequences. The MLM
    output layer (hidden x vocabulary, the largest matrix of a small BERT) runs at the (sequences,
    max_predictions) predicted positions only, and the pooler at each sequence's [CLS], wherever a
    sequence lies in the rows (packed several to a row or one per row). The means divide by the
    whole batch's counts (`predictions`, `sequences`), so that the losses of processes that each
    train on some of the batch's rows add up to the loss of one process training on all of them."""
    sequence_ids = batch["sequence_ids"]
    # each token attends to the tokens of its own sequence alone (padding, -1, to padding)
    attention = (sequence_ids.unsqueeze(-1) == sequence_ids.unsqueeze(-2)).unsqueeze(1)
    encoded = model.bert(input_ids=batch["input_ids"], attention_mask=attention,
                         token_type_ids=batch["token_type_ids"], position_ids=batch["position_ids"])
    hidden = encoded.last_hidden_state.flatten(0, 1)
    # index_select: its backward (index_add_) needs no host sync, so the step records as a CUDA graph
    words = model.cls.predictions(hidden.index_select(0, batch["masked_positions"].flatten()))
    nll = torch.nn.functional.cross_entropy(words.float(), batch["masked_targets"].flatten(), reduction="none")
    pooled = model.bert.pooler(hidden.index_select(0, batch["first_positions"]).unsqueeze(1))
    next_sentence = model.cls.seq_relationship(pooled)
    next_nll = torch.nn.functional.cross_entropy(next_sentence.float(), batch["next_sentence_labels"], reduction="sum")
    return ((batch["masked_weights"].flatten() * nll).sum() / (batch["predictions"] + 1e-5)
            + next_nll / batch["sequences"])


def pretraining_model(config, device):
    """A BertForPreTraining (encoder with pooler, MLM and NSP heads) of `config` initialised from
    scratch on `device`, in training mode, with PyTorch's fused attention (sdpa)."""
    from transformers import BertForPreTraining

    return BertForPreTraining._from_config(config, attn_implementation="sdpa").to(device).train()


def pretrain(corpus_path, tokenizer_dir, architecture, out_dir, step, total_steps, hparams, seed=100,
             previous_dir=None, state_dir=None, device="auto", batch_workers=2):
    """Train until `step` and save the checkpoint to out_dir. corpus_path is a prepared corpus's
    manifest (`crossdisc gather-corpus`), checked against the tokenizer and read a shard at a time.
    On a GPU, `batch_workers` processes build the batches ahead (0: this process builds them)."""
    from transformers import BertConfig

    hp = {**DEFAULTS, **hparams}
    ranks, device = distributed.start(pick_device(device))  # under torchrun: this process's rank and GPU
    ranks.check_batch(hp["batch_size"])
    autocast = autocast_for(device, hp["precision"])
    tokenizer = load_tokenizer(tokenizer_dir)

    longest = max(hp["max_length"], hp.get("long_max_length", 0))
    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, longest),
                        pad_token_id=tokenizer.pad_token_id, **architecture)
    torch.manual_seed(seed)
    model = pretraining_model(config, device)
    # fused: one kernel for the whole update (the foreach default launches several per group)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], fused=True)

    def schedule(s):
        if s < hp["warmup_steps"]:
            return (s + 1) / hp["warmup_steps"]
        return max(0.0, (total_steps - s) / max(1, total_steps - hp["warmup_steps"]))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    # the processes' gradients, summed after each backward pass (replayed graph or eager), are the batch's
    sum_gradients = ranks.gradient_sum(model.parameters())

    def train_step(batch):
        """Forward, loss and backward of this process's rows of a step's batch; returns their loss."""
        with autocast():
            loss = pretraining_loss(model, batch)
        loss.backward()
        return loss.detach()

    run_step = accel.micro_batch_runner(train_step, model, device, hp["cuda_graphs"])  # speed only
    layout = accel.pretraining_batch_layout(device, hp["cuda_graphs"], hp["pack_sequences"])
    at, curve = 0, StepLog()
    state_path = Path(state_dir) / STATE_FILE if state_dir else None
    for candidate in (state_path, Path(previous_dir) / STATE_FILE if previous_dir else None):
        if (state := load_state(candidate)) is not None:
            if state["model"].keys() != model.state_dict().keys():
                raise InputError(candidate, "not a state of this series' model (an MLM-only state of an earlier "
                                            "release?): delete it to train the series afresh")
            if state["step"] <= step:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])  # moves the moments to the model's device
                scheduler.load_state_dict(state["scheduler"])
                at, curve = state["step"], StepLog(state["curve"])
                print(f"resuming from step {at} ({candidate})", file=sys.stderr)
                break

    def training_state():
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": at, "curve": curve.read()}

    batches = Batches(PreparedCorpus(corpus_path, tokenizer) if at < step else None, hp, seed)
    batches.count_chunks(range(at, step))  # one pass over the corpus, before any batch worker starts

    def batch_of(s):
        """This process's rows of step s's batch, masked and laid out (masking depends on (seed,
        step, row) alone: a resumed chain is exact)."""
        length, _ = batches.phase(s)
        pairs = batches(s)  # the step's whole batch, the same in every process
        if len(pairs) < ranks.size:
            raise InputError(corpus_path, f"{len(pairs)} sequences of {length} tokens in all: fewer than the "
                                          f"{ranks.size} processes that would share them")
        return masked_batch(pairs, tokenizer, hp, length, seed, s, ranks.rows(len(pairs)), **layout)

    progress = tqdm(total=step, initial=at, file=sys.stderr, mininterval=5, desc="pre-train",
                    disable=not ranks.main)
    for batch in accel.pretraining_batches(batch_of, range(at, step), device, batch_workers):  # speed only
        seed_step(seed, at, ranks.rank)  # dropout depends on (seed, step, process)
        loss = run_step(to_device(batch, device))
        sum_gradients()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=False)  # in place: recorded graphs add into the same tensors
        at += 1
        curve.add({"step": at, "loss": ranks.sum(loss)})
        if progress.update(1):  # tqdm refreshed the bar: show the latest loss read
            progress.set_postfix(loss=f"{curve.read()[-1]['loss']:.3f}", refresh=False)
        if ranks.main and state_path and at % hp["checkpoint_every"] == 0 and at < step:
            save_state(state_path, training_state())
    progress.close()

    if ranks.main:
        with atomic_dir(out_dir) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            torch.save(training_state(), tmp / STATE_FILE)
        if state_path:
            state_path.unlink(missing_ok=True)
    distributed.finish()

