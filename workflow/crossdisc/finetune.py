"""Fine-tune one model on one task: the single training engine of every discipline.

It reads top to bottom: settings, data, model, optimiser, the training loop (evaluation, best-dev
checkpoint, resumable state), then the outputs. Disciplines differ only in their token file (ids,
labels, task kind) and their token map; nothing here branches on the discipline.

Defaults follow the paper: Adam (AdamW without weight decay), lr 1e-5, batch 32, linear decay to
zero, no warm-up, no gradient clipping. The other optimisers are those of the paper's search
(appendix A); a constant lr and a step cap serve the runs that train until the loss converges. A
baseline trains here too, as a model family (Hilbert-CNN: its own input encoding in its forward,
its own L2 penalty in its output, its settings in config).
"""

import functools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from . import accel, metrics, token_maps, tokens
from .errors import InputError
from .files import atomic_path, write_text
from .models import build_classifier
from .training import (StepLog, autocast_for, data_generator, load_state, pick_device, save_state, seed_step,
                       to_device, uses_bf16)

DEFAULTS = {
    "lr": 1e-5, "batch_size": 32, "grad_accum": 1, "epochs": 3, "max_steps": None, "weight_decay": 0.0,
    "early_stopping": False, "eval_every": None, "checkpoint_every": 200, "metric": None,
    "group_by_length": True, "stop_loss": None, "stop_window": 20, "cuda_graphs": True,
    "optimizer": "adamw", "lr_schedule": "linear", "precision": "bf16", "fraction_sampling": "random",
    "score_train": False,
}
MEGA_BATCH = 50  # batches whose examples are sorted by length together (as Hugging Face's LengthGroupedSampler)


def subsample(train, fraction, seed, stratified=False):
    """The paper's low-resource setting: a fixed random subset of `fraction` of the training split,
    drawn with the seed. Stratified, each label keeps its share of the subset (the largest remainders
    settle the rounding), so that 25 RTE pairs are not 9 against 16 by chance; the size is the same."""
    keep = max(1, round(len(train) * fraction))
    if not stratified:
        return train.sample(n=keep, random_state=seed).reset_index(drop=True)
    quotas = train["label"].value_counts().sort_index() * keep / len(train)
    sizes = np.floor(quotas).astype(int)
    largest_remainders = (quotas - sizes).sort_values(ascending=False, kind="stable").index
    sizes.loc[largest_remainders[: keep - sizes.sum()]] += 1
    parts = [train[train["label"] == label].sample(n=size, random_state=seed) for label, size in sizes.items()]
    return pd.concat(parts).sort_index().reset_index(drop=True)


def build_optimizer(name, parameters, lr, weight_decay):
    """AdamW (the default; decoupled weight decay) or an optimiser of the paper's search: Adagrad,
    Adam, Adamax, RAdam (torch's, weight decay added to the gradient) and NovoGrad (Ginsburg et al.
    2019: a second moment per layer, as NVIDIA's NeMo/apex reference and its defaults)."""
    if name == "novograd":
        from pytorch_optimizer import NovoGrad

        return NovoGrad(parameters, lr=lr, betas=(0.95, 0.98), weight_decay=weight_decay, grad_averaging=False)
    optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "adagrad": torch.optim.Adagrad,
                  "adamax": torch.optim.Adamax, "radam": torch.optim.RAdam}
    fused = {"fused": True} if name in ("adamw", "adam") else {}  # one kernel for the whole update
    return optimizers[name](parameters, lr=lr, weight_decay=weight_decay, **fused)


def collate(rows, table, device, multiple=1):
    """Pad a batch to its longest example rounded up to `multiple`, then map every position through
    the token map, padding included. On a GPU the batch is copied from pinned memory without
    blocking."""
    width = -(-max(len(r) for r in rows["input_ids"]) // multiple) * multiple
    ids = np.zeros((len(rows), width), dtype=np.int64)
    mask = np.zeros((len(rows), width), dtype=np.int64)
    types = np.zeros((len(rows), width), dtype=np.int64)
    for i, (seq, seq_types) in enumerate(zip(rows["input_ids"], rows["token_type_ids"])):
        ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
        types[i, : len(seq_types)] = seq_types
    return to_device({"input_ids": table[torch.from_numpy(ids)], "attention_mask": torch.from_numpy(mask),
                      "token_type_ids": torch.from_numpy(types)}, device)


def predict(model, frame, table, kind, batch_size, device, autocast):
    model.eval()
    outputs = []
    with torch.no_grad(), autocast():
        for start in range(0, len(frame), batch_size):
            logits = model(**collate(frame.iloc[start:start + batch_size], table, device)).logits.float()
            outputs.append(logits.squeeze(-1) if kind == "regression" else logits.argmax(-1))
    model.train()
    return torch.cat(outputs).cpu().numpy() if outputs else np.array([])


def length_grouped(order, lengths, batch_size, generator):
    """Batches of similar length, so dynamic padding pads little: the shuffled order is cut into
    mega-batches, each sorted by length and cut into batches, and the batches are shuffled."""
    span = MEGA_BATCH * batch_size
    batches = []
    for start in range(0, len(order), span):
        mega = order[start:start + span]
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches += [mega[i:i + batch_size] for i in range(0, len(mega), batch_size)]
    return [batches[i] for i in torch.randperm(len(batches), generator=generator).tolist()]


def finetune(tokens_path, token_map_path, model_dir, init, out_dir, state_dir, hparams, seed=100,
             fraction=1.0, device="auto", run=None):
    """Train and evaluate; write curve.parquet, predictions.parquet and metrics.json to out_dir.
    `run`, the run's coordinates in the experiment grid, is recorded in metrics.json as given."""
    # ---- settings -------------------------------------------------------------------------------
    if unknown := sorted(set(hparams) - set(DEFAULTS)):
        raise InputError("--hparams", f"unknown setting(s) {unknown}; known: {sorted(DEFAULTS)}")
    hp = {**DEFAULTS, **hparams}
    if hp["early_stopping"] and not hp["metric"]:
        raise InputError("--hparams", "early_stopping keeps the best dev checkpoint by `metric`, which is not set")
    out_dir, state_path = Path(out_dir), Path(state_dir) / "state.pt"
    device = pick_device(device)
    autocast = autocast_for(device, hp["precision"])

    # ---- data -----------------------------------------------------------------------------------
    frame, meta = tokens.read_token_file(tokens_path)
    kind = meta["kind"]
    table = torch.tensor(token_maps.read_table(token_map_path, meta), dtype=torch.long)
    train = frame[frame["split"] == "train"].reset_index(drop=True)
    if fraction < 1.0:  # the paper's low-resource setting
        stratified = hp["fraction_sampling"] == "stratified" and kind != "regression"  # regression: no classes
        train = subsample(train, fraction, seed, stratified)
    dev = frame[frame["split"] == "dev"].reset_index(drop=True)
    test = frame[frame["split"] == "test"].reset_index(drop=True)
    micro_per_epoch = math.ceil(len(train) / hp["batch_size"])
    total_steps = hp["max_steps"] or math.ceil(hp["epochs"] * micro_per_epoch / hp["grad_accum"])

    lengths = train["input_ids"].map(len).to_numpy()

    @functools.lru_cache(maxsize=1)
    def epoch_batches(epoch):
        """The batches of one epoch, from a generator seeded by (seed, epoch) alone, so a resumed
        run sees exactly the batches an uninterrupted one would."""
        generator = data_generator(seed, epoch)
        order = torch.randperm(len(train), generator=generator).numpy()
        if hp["group_by_length"]:
            return length_grouped(order, lengths, hp["batch_size"], generator)
        return [order[i:i + hp["batch_size"]] for i in range(0, len(order), hp["batch_size"])]

    def micro_batch(m):
        epoch, position = divmod(m, micro_per_epoch)
        return train.iloc[epoch_batches(epoch)[position]]

    # ---- model and optimiser --------------------------------------------------------------------
    num_labels = 1 if kind == "regression" else len(meta["label_names"])
    longest = int(frame["input_ids"].map(len).max())
    model = build_classifier(model_dir, init, num_labels, seed, meta.get("symbols"), longest).to(device).train()
    accel.prepare(model)  # speed only: trains as the plain model does
    multiple = accel.batch_width_multiple(device, hp["cuda_graphs"])

    def train_micro_batch(batch, labels):
        """Forward, loss and backward of one micro-batch; returns its (undivided) loss."""
        with autocast():
            output = model(**batch)
        logits = output.logits.float()
        if kind == "regression":
            loss = torch.nn.functional.mse_loss(logits.squeeze(-1), labels.float())
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels)
        penalty = getattr(output, "penalty", None)  # a family's own regulariser (Hilbert-CNN: L2 on its kernels)
        ((loss if penalty is None else loss + penalty) / hp["grad_accum"]).backward()
        return loss.detach()

    run_micro_batch = accel.micro_batch_runner(train_micro_batch, model, device, hp["cuda_graphs"])
    optimizer = build_optimizer(hp["optimizer"], model.parameters(), hp["lr"], hp["weight_decay"])
    schedules = {"linear": lambda s: max(0.0, 1 - s / total_steps),  # the paper's: to zero, no warm-up
                 "constant": lambda s: 1.0}  # until converged: the lr does not reach zero at the cap first
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules[hp["lr_schedule"]])
    step, curve, evaluations, best = 0, StepLog(), [], None

    if state := load_state(state_path):  # resume exactly where a killed run stopped
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, curve, evaluations, best = state["step"], StepLog(state["curve"]), state["evaluations"], state["best"]
        print(f"resumed from step {step} of {total_steps}", file=sys.stderr)

    def training_state():
        return {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "step": step,
                "curve": curve.read(), "evaluations": evaluations, "best": best}

    def converged(curve):
        """The paper's 1%-data setting trains "until the training loss converges": with stop_loss
        set, stop once the mean loss of the last stop_window steps falls below it."""
        if hp["stop_loss"] is None:
            return False  # and the losses stay on the device unread
        window = [point["loss"] for point in curve.read()[-hp["stop_window"]:]]
        return len(window) == hp["stop_window"] and np.mean(window) < hp["stop_loss"]

    # ---- training loop --------------------------------------------------------------------------
    started, examples = time.time(), 0
    progress = tqdm(total=total_steps, initial=step, file=sys.stderr, mininterval=5, desc="fine-tune")
    while step < total_steps:
        seed_step(seed, step)  # dropout depends on (seed, step) only: resumable exactly
        loss_sum = 0.0  # a device tensor after the first micro-batch, read in bulk by StepLog
        for m in range(step * hp["grad_accum"], (step + 1) * hp["grad_accum"]):
            rows = micro_batch(m)
            batch = collate(rows, table, device, multiple)
            labels = to_device({"labels": torch.tensor(rows["label"].to_numpy())}, device)["labels"]  # no sync
            loss_sum = loss_sum + run_micro_batch(batch, labels)
            examples += len(rows)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=False)  # in place: recorded graphs add into the same tensors
        step += 1
        curve.add({"step": step, "epoch": step * hp["grad_accum"] / micro_per_epoch,
                   "loss": loss_sum / hp["grad_accum"], "lr": scheduler.get_last_lr()[0]})
        if progress.update(1):  # tqdm refreshed the bar: show the latest loss read
            progress.set_postfix(loss=f"{curve.read()[-1]['loss']:.4f}", refresh=False)

        done = step == total_steps or converged(curve)
        if hp["early_stopping"] and len(dev) and (step % hp["eval_every"] == 0 or done):
            preds = predict(model, dev, table, kind, 2 * hp["batch_size"], device, autocast)
            value = metrics.score(dev, preds, kind)[hp["metric"]]
            evaluations.append({"step": step, "dev": value})
            if best is None or value > best["dev"]:  # keep the best dev checkpoint
                best = {"step": step, "dev": value,
                        "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}}
        if done:
            break
        if step % hp["checkpoint_every"] == 0:
            save_state(state_path, training_state())
    progress.close()
    if device.type == "cuda":
        torch.cuda.synchronize(device)  # the steps still queued belong to the training time
    seconds = time.time() - started

    # ---- outputs --------------------------------------------------------------------------------
    if best is not None:
        model.load_state_dict(best["model"])
    results, predictions = {}, []
    scored = (("train", train),) if hp["score_train"] else ()  # the appendix's search ranks on train
    for split, part in scored + (("dev", dev), ("test", test)):
        preds = predict(model, part, table, kind, 2 * hp["batch_size"], device, autocast)
        if len(part):  # a task may have no dev split (or, trained for its curve alone, no test)
            results[split] = metrics.score(part, preds, kind)
        predictions.append(pd.DataFrame({"split": split, "id": part["id"], "group": part["group"],
                                         "subset": part["subset"] if "subset" in part else "",
                                         "label": part["label"], "prediction": preds}))
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "curve.parquet") as tmp:
        pd.DataFrame(curve.read()).to_parquet(tmp, index=False)
    with atomic_path(out_dir / "predictions.parquet") as tmp:
        pd.concat(predictions).to_parquet(tmp, index=False)
    summary = {
        "run": run or {},
        "metric": hp["metric"],
        "test": results.get("test", {}).get(hp["metric"]),
        "dev": results.get("dev", {}).get(hp["metric"]),
        "train": results.get("train", {}).get(hp["metric"]),
        "metrics": results,
        "steps": step,
        "converged": None if hp["stop_loss"] is None else bool(converged(curve)),
        "best_step": best["step"] if best else step,
        "train_examples": len(train),
        "train_seconds": round(seconds, 2),
        "examples_per_second": round(examples / seconds, 2) if seconds > 0 else None,
        "device": str(device),
        "bf16_autocast": uses_bf16(device, hp["precision"]),
        "cuda_graphs": accel.replays_graphs(run_micro_batch),
        "hparams": hp,
        "seed": seed,
        "fraction": fraction,
    }
    write_text(out_dir / "metrics.json", json.dumps(summary, indent=2) + "\n")
    state_path.unlink(missing_ok=True)
    return summary
