"""BERT pre-training from scratch (masked language model and next-sentence prediction), as a chain
of checkpoint jobs.

The job for checkpoint N starts from checkpoint M < N (the previous configured step, whose
directory also holds the optimiser, scheduler and step) and trains until step N; the first
checkpoint job builds the initial model. So each checkpoint is an independent output, a finished
one is never recomputed, and a killed job resumes from its last saved state.

The recipe of Devlin et al. (2019) and Google's create_pretraining_data.py: a sequence is
[CLS] A [SEP] B [SEP], A consecutive sentences of a document and B, half the time, the sentences
that follow them, else sentences of another, random document; the pooled [CLS] output learns to
tell which (next-sentence prediction), so checkpoints carry a trained pooler. 15% of the non-special
tokens selected, of those 80% [MASK], 10% a random token, 10% kept; AdamW with linear warm-up and
linear decay. Sequences hold up to `max_length` tokens, and `long_max_length` from step
`long_from_step` on (BERT: 128, then 512 for the last 10% of steps, which is what trains the
position embeddings past 128). The MLM output layer is computed only at the selected positions.
The text comes tokenised, deduplicated and sharded from crossdisc.corpus.
"""

import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from . import distributed
from .corpus import PreparedCorpus
from .errors import InputError
from .files import atomic_dir
from .models import load_tokenizer
from .pretrain_data import Batches, collate, mask_tokens
from .training import StepLog, autocast_for, load_state, pick_device, save_state, seed_step

DEFAULTS = {"max_length": 128, "batch_size": 32, "lr": 1e-4, "warmup_steps": 0, "weight_decay": 0.01,
            "mask_probability": 0.15, "short_seq_probability": 0.1, "checkpoint_every": 500}
STATE_FILE = "training_state.pt"


def pretraining_loss(model, ids, segments, next_labels, tokenizer, probability, generator, device, rows=None):
    """Masked-LM plus next-sentence loss of a BertForPreTraining on a padded batch, with the MLM
    output layer (hidden x vocabulary, the largest matrix of a small BERT) applied only at selected
    positions. With `rows` (a data-parallel process's share, a range), the batch is still masked
    whole, so the draws do not depend on the process, and the loss is this process's part of the
    batch's: sums over its rows divided by the whole batch's counts (selected positions, sequences),
    so that the processes' parts add up to the loss of one process training on the whole batch."""
    attention = ids != tokenizer.pad_token_id
    special = ~attention | (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    corrupted, chosen, targets = mask_tokens(ids, special, tokenizer.mask_token_id, len(tokenizer), probability, generator)
    predictions, sequences, weight = len(targets), len(ids), 1.0
    if rows is not None:
        if not rows:  # an epoch's short last batch left this process no rows: a row at weight 0 keeps it in step
            rows, weight = range(1), 0.0
        mine = slice(rows.start, rows.stop)
        corrupted, attention, segments, chosen, next_labels = (
            t[mine] for t in (corrupted, attention, segments, chosen, next_labels))
        targets = ids[mine][chosen]
    encoded = model.bert(input_ids=corrupted.to(device), attention_mask=attention.to(device),
                         token_type_ids=segments.to(device))
    words = model.cls.predictions(encoded.last_hidden_state[chosen.to(device)])
    next_sentence = model.cls.seq_relationship(encoded.pooler_output)
    sum_of = torch.nn.functional.cross_entropy
    return weight * (sum_of(words.float(), targets.to(device), reduction="sum") / predictions
                     + sum_of(next_sentence.float(), next_labels.to(device), reduction="sum") / sequences)


class PretrainingLoss(torch.nn.Module):
    """The model with pretraining_loss as its forward: DistributedDataParallel averages gradients
    only of what runs through its wrapped module's forward (pretraining_loss calls the model's parts)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, *args, **kwargs):
        return pretraining_loss(self.model, *args, **kwargs)


def pretraining_model(config, device):
    """A BertForPreTraining (encoder with pooler, MLM and NSP heads) of `config` initialised from
    scratch on `device`, in training mode."""
    from transformers import BertForPreTraining

    return BertForPreTraining(config).to(device).train()


def pretrain(corpus_path, tokenizer_dir, architecture, out_dir, step, total_steps, hparams, seed=100,
             previous_dir=None, state_dir=None, device="auto"):
    """Train until `step` and save the checkpoint to out_dir. corpus_path is a prepared corpus's
    manifest (`crossdisc gather-corpus`), checked against the tokenizer and read a shard at a time."""
    from transformers import BertConfig

    hp = {**DEFAULTS, **hparams}
    ranks, device = distributed.start(pick_device(device))  # under torchrun: this process's rank and GPU
    ranks.check_batch(hp["batch_size"])
    autocast = autocast_for(device)
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
    step_loss = PretrainingLoss(model)
    if ranks.size > 1:  # averages the processes' gradients in the backward pass (the buffers are constants)
        step_loss = DistributedDataParallel(step_loss, forward_sync_buffers=False)
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
    progress = tqdm(total=step, initial=at, file=sys.stderr, mininterval=5, desc="pre-train",
                    disable=not ranks.main)
    while at < step:
        ids, segments, next_labels = collate(batches(at), tokenizer)  # the step's whole batch, in every process
        generator = seed_step(seed, at)  # masking and dropout depend on (seed, step): a resumed chain is exact
        with autocast():
            loss = step_loss(ids, segments, next_labels, tokenizer, hp["mask_probability"], generator, device,
                             ranks.rows(len(ids)))
        (loss * ranks.size).backward()  # DDP averages the gradients of the processes' parts: times size, their sum
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        at += 1
        curve.add({"step": at, "loss": ranks.sum(loss.detach())})
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

