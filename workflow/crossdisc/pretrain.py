"""Masked-language-model pre-training from scratch, as a chain of checkpoint jobs.

The job for checkpoint N starts from checkpoint M < N (the previous configured step, whose
directory also holds the optimiser, scheduler and step) and trains until step N; the first
checkpoint job builds the initial model. So each checkpoint is an independent output, a finished
one is never recomputed, and a killed job resumes from its last saved state.

The BERT recipe: 15% of the non-special tokens selected, of those 80% [MASK], 10% a random token,
10% kept; AdamW with linear warm-up and linear decay. The MLM output layer is computed only at the
selected positions, and sentences of a document are packed into full-length sequences. The text
comes tokenised and deduplicated from `crossdisc prepare-corpus` (crossdisc.corpus).
"""

import math
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .corpus import read_documents
from .files import atomic_dir
from .models import load_tokenizer
from .training import StepLog, autocast_for, data_generator, load_state, pick_device, save_state, seed_step

DEFAULTS = {"max_length": 128, "batch_size": 32, "lr": 1e-4, "warmup_steps": 0, "weight_decay": 0.01,
            "mask_probability": 0.15, "checkpoint_every": 500}
STATE_FILE = "training_state.pt"


def pack_documents(documents, tokenizer, max_length):
    """Sequences [CLS] s1 s2 ... [SEP] filled with consecutive sentences of one document.

    `documents` are prepared documents (crossdisc.corpus): each a list of its sentences' token ids."""
    body = max_length - 2
    blocks = []
    for sentences in documents:
        ids = [t for s in sentences for t in s]
        for start in range(0, len(ids), body):
            chunk = ids[start:start + body]
            if len(chunk) >= body // 4:  # a short document tail carries too little context
                blocks.append([tokenizer.cls_token_id] + chunk + [tokenizer.sep_token_id])
    return blocks


def mask_tokens(ids, special, mask_id, vocab_size, probability, generator):
    """BERT masking: returns the corrupted ids, the selected positions and their original ids."""
    chosen = (torch.rand(ids.shape, generator=generator) < probability) & ~special
    action = torch.rand(ids.shape, generator=generator)
    corrupted = ids.clone()
    corrupted[chosen & (action < 0.8)] = mask_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    corrupted[randomise] = torch.randint(vocab_size, ids.shape, generator=generator)[randomise]
    return corrupted, chosen, ids[chosen]


def pad_batch(blocks, pad_id):
    ids = torch.full((len(blocks), max(map(len, blocks))), pad_id)
    for i, seq in enumerate(blocks):
        ids[i, : len(seq)] = torch.as_tensor(seq)
    return ids


def mlm_loss(model, ids, tokenizer, probability, generator, device):
    """Masked-language-model loss of a BertForMaskedLM on a padded batch, with the output layer
    (hidden x vocabulary, the largest matrix of a small BERT) applied only at selected positions."""
    attention = ids != tokenizer.pad_token_id
    special = ~attention | (ids == tokenizer.cls_token_id) | (ids == tokenizer.sep_token_id)
    corrupted, chosen, targets = mask_tokens(ids, special, tokenizer.mask_token_id, len(tokenizer), probability, generator)
    hidden = model.bert(input_ids=corrupted.to(device), attention_mask=attention.to(device)).last_hidden_state
    logits = model.cls(hidden[chosen.to(device)])
    return torch.nn.functional.cross_entropy(logits.float(), targets.to(device))


def mlm_model(config, device):
    """A BertForMaskedLM of `config` initialised from scratch on `device`, in training mode."""
    from transformers import BertForMaskedLM

    return BertForMaskedLM(config).to(device).train()


def pretrain(corpus_path, tokenizer_dir, architecture, out_dir, step, total_steps, hparams, seed=100,
             previous_dir=None, state_dir=None, device="auto"):
    """Train until `step` and save the checkpoint to out_dir. corpus_path is a prepared corpus
    (`crossdisc prepare-corpus`), checked against the tokenizer."""
    from transformers import BertConfig

    hp = {**DEFAULTS, **hparams}
    device = pick_device(device)
    autocast = autocast_for(device)
    tokenizer = load_tokenizer(tokenizer_dir)

    config = BertConfig(vocab_size=len(tokenizer), max_position_embeddings=max(512, hp["max_length"]),
                        pad_token_id=tokenizer.pad_token_id, **architecture)
    torch.manual_seed(seed)
    model = mlm_model(config, device)
    # fused: one kernel for the whole update (the foreach default launches several per group)
    optimizer = torch.optim.AdamW(model.parameters(), lr=hp["lr"], weight_decay=hp["weight_decay"], fused=True)

    def schedule(s):
        if s < hp["warmup_steps"]:
            return (s + 1) / hp["warmup_steps"]
        return max(0.0, (total_steps - s) / max(1, total_steps - hp["warmup_steps"]))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    at, curve = 0, StepLog()
    state_path = Path(state_dir) / STATE_FILE if state_dir else None
    for candidate in (state_path, Path(previous_dir) / STATE_FILE if previous_dir else None):
        if (state := load_state(candidate)) is not None:
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

    documents = read_documents(corpus_path, tokenizer) if at < step else []
    blocks = pack_documents(documents, tokenizer, hp["max_length"])
    per_epoch = math.ceil(len(blocks) / hp["batch_size"]) if blocks else 1
    progress = tqdm(total=step, initial=at, file=sys.stderr, mininterval=5, desc="pre-train")
    while at < step:
        epoch, position = divmod(at, per_epoch)
        order = torch.randperm(len(blocks), generator=data_generator(seed, epoch))
        batch = [blocks[i] for i in order[position * hp["batch_size"]:(position + 1) * hp["batch_size"]]]
        generator = seed_step(seed, at)  # masking and dropout depend on (seed, step): a resumed chain is exact
        with autocast():
            loss = mlm_loss(model, pad_batch(batch, tokenizer.pad_token_id), tokenizer, hp["mask_probability"],
                            generator, device)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        at += 1
        curve.add({"step": at, "loss": loss.detach()})
        if progress.update(1):  # tqdm refreshed the bar: show the latest loss read
            progress.set_postfix(loss=f"{curve.read()[-1]['loss']:.3f}", refresh=False)
        if state_path and at % hp["checkpoint_every"] == 0 and at < step:
            save_state(state_path, training_state())
    progress.close()

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        torch.save(training_state(), tmp / STATE_FILE)
    if state_path:
        state_path.unlink(missing_ok=True)

