"""BERT pre-training throughput (masked LM + next-sentence prediction): Hugging Face's recipe against
crossdisc's pre-training step (workflow/crossdisc/pretrain.py), each in a fresh child process, on
the same model size, batch, sequences and hardware.

  (a) Hugging Face: BertForPreTraining with DataCollatorForLanguageModeling, in a plain loop;
  (b) Hugging Face's Trainer: the same model and collator, trained by `Trainer`;
      both, where the whole batch does not fit the GPU's memory at once, in 2, 4 or 8 micro-batches
      whose gradients add up (gradient accumulation), as the table then says;
  (c) crossdisc: BERT's own masking (a fixed number of predictions per sequence), the MLM output
      layer at those positions only, fused AdamW, sequences packed several to a row, and on a GPU
      every batch padded to the sequence length, built ahead by worker processes (--batch-workers)
      and the step replayed as a CUDA graph, as the pipeline trains;
  (d) crossdisc with one sequence per row (training: {pack_sequences: false}), to show what
      packing gains.

All train a BERT from scratch on sentence pairs [CLS] A [SEP] B [SEP] of real English (the CPython
language reference), with 15% of the tokens predicted (80/10/10). `--data full` (default): pairs
that fill the sequence, every other one labelled random next (packing changes nothing there);
`--data recipe`: the pairs pre-training cuts by BERT's recipe (pretrain_data.Batches, a tenth of
the documents to a shorter target, documents' ends short) from a generated corpus of documents of
4 to 80 sentences (corpus_scale.write_corpus), whose share of padding packing removes. On a GPU all run under bf16 autocast (the Trainer with
bf16=True). Prints, per sequence length, each one's sequences per second and peak memory (on a GPU,
peak GPU memory), the ratios of (c) to (a), (b) and (d), and on a GPU the model FLOPs utilisation
against the GPU's bf16 dense peak (GPUs of BF16_PEAK_TFLOPS) and the hours 1M steps would take. The
model FLOPs are BERT's at each sequence's own length (the encoder at its tokens, padding not
counted, the MLM head at BERT's number of predictions), the same for every contender. The table is also written, with the command, hardware and versions, to
benchmarks/results/pretrain_throughput-<device>.{md,json} (benchmarks/record.py).

    python benchmarks/pretrain_throughput.py [--steps 20] [--batch-size 32] [--lengths 128]
        [--hidden 128 --layers 2] [--data full|recipe] [--device cuda]

On a GPU the defaults are the paper's batch 256 at lengths 128 and 512; BERT-base is
`--hidden 768 --layers 12`.
"""

import argparse
import gc
import math
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import record
from finetune_throughput import default_model, hardware

# Dense bf16 tensor throughput (TFLOP/s, without sparsity) by the device name torch reports.
BF16_PEAK_TFLOPS = ((r"H100 80GB HBM3|H100 SXM", 989), (r"H200$", 989), (r"A100", 312))
# BERT's max_predictions_per_seq by sequence length; other lengths predict 15%, rounded up.
BERT_MAX_PREDICTIONS = {128: 20, 512: 80}
BERT_RECIPE = "BERT's recipe over generated documents of 4 to 80 sentences, a tenth of them cut to a shorter target"
CONTENDERS = {"huggingface": "(a) Hugging Face", "trainer": "(b) HF Trainer", "crossdisc": "(c) crossdisc",
              "one-per-row": "(d) crossdisc, one per row"}


def max_predictions(length):
    return BERT_MAX_PREDICTIONS.get(length, math.ceil(0.15 * length))


def bf16_peak_tflops(device_name):
    """The GPU's dense bf16 peak, or None for a GPU not in the table."""
    return next((peak for pattern, peak in BF16_PEAK_TFLOPS if re.search(pattern, device_name)), None)


def training_flops_per_sequence(hidden, layers, intermediate, vocabulary, length, predictions):
    """Matrix-product FLOPs of a BERT pre-training step per sequence, forward and backward (3x the
    forward): every layer's projections and feed-forward block and its attention scores and sums
    at each position, the pooler and NSP head, and the MLM head at `predictions` positions."""
    layer = 2 * length * (4 * hidden * hidden + 2 * hidden * intermediate) + 4 * length * length * hidden
    heads = 2 * (hidden * hidden + 2 * hidden) + 2 * predictions * (hidden * hidden + hidden * vocabulary)
    return 3 * (layers * layer + heads)


def full_pairs(tokenizer, length, count):
    """`count` pairs (A, B, is_random_next) that fill `length` tokens as [CLS] A [SEP] B [SEP], cut
    from the language reference (read again from its start where it runs out); every other one is
    labelled random next."""
    from pydoc_data.topics import topics

    body = length - 3
    ids = tokenizer(" ".join(topics.values()), add_special_tokens=False, verbose=False)["input_ids"]
    ids = np.resize(np.array(ids), count * body).tolist()
    blocks = [ids[i * body:(i + 1) * body] for i in range(count)]
    return [(block[:body // 2], block[body // 2:], i % 2 == 1) for i, block in enumerate(blocks)]


def prepare_recipe_corpus(tokenizer, tokens, directory):
    """A generated corpus of at least `tokens` WordPiece tokens, prepared as the workflow prepares
    one; returns its manifest."""
    from corpus_scale import write_corpus

    from crossdisc.corpus import prepare_corpus

    text, manifest = directory / "corpus.txt", directory / "manifest.json"
    write_corpus(text, tokenizer, tokens)
    prepare_corpus(text, tokenizer, manifest)
    return manifest


def pairs(args, tokenizer, length):
    """The pairs of every step, batch after batch: full_pairs, or with args.data "recipe" the
    batches of BERT's recipe at `length` from the corpus of args.corpus."""
    count = args.batch_size * (args.steps + 1)
    if args.data == "full":
        return full_pairs(tokenizer, length, count)
    from crossdisc.corpus import PreparedCorpus
    from crossdisc.pretrain import DEFAULTS
    from crossdisc.pretrain_data import Batches

    batches = Batches(PreparedCorpus(args.corpus, tokenizer),
                      {**DEFAULTS, "max_length": length, "batch_size": args.batch_size}, seed=0)
    return [pair for step in range(args.steps + 1) for pair in batches(step)]


def contender(name, args, length, queue):
    """Train `name` for args.steps timed steps at `length` after untimed ones (the first step; for
    crossdisc on a GPU, one of each batch shape, whose graph it records); put (sequences/s of the
    timed steps, peak memory in MiB, for crossdisc the mean CPU milliseconds of building a batch
    from its pairs, else None, and the micro-batches a step took) on the queue, or None if it ran out
    of GPU memory. Hugging Face's contenders, out of memory with the whole batch at once (their MLM
    head scores every position against the whole vocabulary), take the step in 2, 4 or 8 micro-batches
    whose gradients add up, as its recipe does with gradient accumulation."""
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    for micro_batches in (1, 2, 4, 8) if name in ("huggingface", "trainer") else (1,):
        if args.batch_size % micro_batches:
            break
        try:
            result = (run_trainer(args, length, micro_batches) if name == "trainer"
                      else run_loop(name, args, length, micro_batches))
        except torch.cuda.OutOfMemoryError:
            result = None
        if result is not None:
            queue.put((*result, micro_batches))
            return
        # out of the handler, the failed attempt's frames are let go: free their memory for the next
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    queue.put(None)


def setting(args):
    from transformers import BertConfig

    from crossdisc.models import load_tokenizer

    tokenizer = load_tokenizer(args.tokenizer)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=max(1, args.hidden // 64), intermediate_size=4 * args.hidden)
    return torch.device(args.device), tokenizer, config


def peak_memory(device):
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_loop(name, args, length, micro_batches=1):
    from transformers import BertForPreTraining, DataCollatorForLanguageModeling

    from crossdisc import accel
    from crossdisc.pretrain import DEFAULTS, pretraining_loss, pretraining_model
    from crossdisc.pretrain_data import collate, masked_batch
    from crossdisc.training import autocast_for, seed_step, to_device

    device, tokenizer, config = setting(args)
    autocast = autocast_for(device)
    data = pairs(args, tokenizer, length)
    batch_of = lambda i: data[i * args.batch_size:(i + 1) * args.batch_size]  # noqa: E731
    build_seconds = []
    if name == "huggingface":
        model = BertForPreTraining(config).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)

        def step(i):
            batch, size = batch_of(i), args.batch_size // micro_batches
            for part in range(micro_batches):
                ids, segments, next_labels, _ = collate(batch[part * size:(part + 1) * size], tokenizer)
                features = collator([{"input_ids": sequence} for sequence in ids.tolist()])
                with autocast():
                    loss = model(input_ids=features["input_ids"].to(device), token_type_ids=segments.to(device),
                                 labels=features["labels"].to(device),
                                 next_sentence_label=next_labels.to(device)).loss
                (loss / micro_batches).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        def warm_up():
            step(0)
    else:  # as crossdisc.pretrain.pretrain trains
        model = pretraining_model(config, device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
        hp = {**DEFAULTS, "max_length": length, "max_predictions": max_predictions(length),
              "pack_sequences": name == "crossdisc"}

        def train_step(batch):
            with autocast():
                loss = pretraining_loss(model, batch)
            loss.backward()
            return loss.detach()

        run_step = accel.micro_batch_runner(train_step, model, device, hp["cuda_graphs"])
        layout = accel.pretraining_batch_layout(device, hp["cuda_graphs"], hp["pack_sequences"])

        def build(i):
            return masked_batch(batch_of(i), tokenizer, hp, length, 0, i, **layout)

        built = []
        for i in range(args.steps + 1):  # here, timed: the CPU's part, which a GPU step must hide
            building = time.perf_counter()
            built.append(build(i))
            build_seconds.append(time.perf_counter() - building)
        build_seconds = build_seconds[1:]  # the first pays for first calls
        first_of_shape = {}
        for i, batch in enumerate(built):
            first_of_shape.setdefault(tuple(tuple(t.shape) for t in batch.values()), i)
        timed = accel.pretraining_batches(build, range(1, args.steps + 1), device, args.batch_workers)

        def train(batch, i):
            seed_step(0, i)
            run_step(to_device(batch, device))
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)

        def warm_up():
            """Where steps are graphs, a step of each batch shape, so that every graph is recorded
            before the timing starts (packed batches come in a few shapes); else the first step. Then
            the first timed batch is taken, so that starting the batch workers is not timed either."""
            graphed = accel.uses_cuda_graphs(device, hp["cuda_graphs"])
            for i in first_of_shape.values() if graphed else (0,):
                train(built[i], i)
            batches.append(next(timed))

        batches = []

        def step(i):
            train(batches.pop() if batches else next(timed), i)

    warm_up()  # untimed
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.time()
    for i in range(1, args.steps + 1):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.time() - started
    build_ms = 1000 * np.mean(build_seconds) if build_seconds else None
    return args.steps * args.batch_size / seconds, peak_memory(device), build_ms


def run_trainer(args, length, micro_batches=1):
    from transformers import (BertForPreTraining, DataCollatorForLanguageModeling, Trainer, TrainerCallback,
                              TrainingArguments)

    device, tokenizer, config = setting(args)
    examples = []
    for a, b, is_random_next in pairs(args, tokenizer, length):
        ids = [tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
        examples.append({"input_ids": ids, "token_type_ids": [0] * (len(a) + 2) + [1] * (len(b) + 1),
                         "next_sentence_label": int(is_random_next)})

    class Clock(TrainerCallback):
        """The times at the end of the first step (the warm-up) and of the latest."""

        def __init__(self):
            self.times = []

        def on_step_end(self, arguments, state, control, **kwargs):
            if device.type == "cuda":
                torch.cuda.synchronize()
            self.times = [*self.times[:1], time.time()]

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.batch_size // micro_batches,
            gradient_accumulation_steps=micro_batches, max_steps=args.steps + 1, learning_rate=1e-4,
            logging_strategy="no", save_strategy="no", report_to=[], use_cpu=device.type == "cpu",
            bf16=device.type == "cuda" and torch.cuda.is_bf16_supported(), dataloader_num_workers=0, seed=0,
            disable_tqdm=True)
        Trainer(model=BertForPreTraining(config), args=training, train_dataset=examples, callbacks=[clock],
                data_collator=DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)).train()
    first, last = clock.times
    return args.steps * args.batch_size / (last - first), peak_memory(device), None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    on_gpu = torch.cuda.is_available()
    parser.add_argument("--tokenizer", help="model directory whose tokenizer is used (default: the packaged MiniLM)")
    parser.add_argument("--steps", type=int, default=20, help="timed steps, after untimed ones")
    parser.add_argument("--batch-size", type=int, default=256 if on_gpu else 32)
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 512] if on_gpu else [128])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--contenders", nargs="+", choices=list(CONTENDERS), default=list(CONTENDERS))
    parser.add_argument("--data", choices=["full", "recipe"], default="full",
                        help="pairs that fill the sequence, or BERT's recipe over a generated corpus")
    parser.add_argument("--device", default="cuda" if on_gpu else "cpu")
    parser.add_argument("--batch-workers", type=int, default=2,
                        help="on a GPU, processes that build (c)'s and (d)'s batches ahead, as pre-training jobs do")
    parser.add_argument("--results-dir", default=record.RESULTS, help="where the results file is written")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.tokenizer = args.tokenizer or default_model()
    with tempfile.TemporaryDirectory() as tmp:
        if args.data == "recipe":
            tokens = int(1.2 * max(args.lengths) * args.batch_size * (args.steps + 1))
            args.corpus = prepare_recipe_corpus(setting(args)[1], tokens, Path(tmp))
        return measure(args, argv)


def measure(args, argv):
    torch.set_num_threads(os.cpu_count())  # as each contender does
    peak = bf16_peak_tflops(torch.cuda.get_device_name()) if args.device == "cuda" else None
    print(f"BERT {args.layers} layers x {args.hidden}, vocabulary of {args.tokenizer}, batch {args.batch_size}, "
          f"{args.steps} timed steps after untimed ones, {hardware(args.device)}"
          + (f" (bf16 dense peak {peak} TFLOP/s)" if peak else ", no MFU (not a GPU of BF16_PEAK_TFLOPS)"
             if args.device == "cuda" else ""))
    _, tokenizer, config = setting(args)
    memory = "peak GPU memory" if args.device == "cuda" else "peak memory"
    rows, hours = [], {}
    for length in args.lengths:
        lengths = [len(a) + len(b) + 3 for a, b, _ in pairs(args, tokenizer, length)]
        flops = np.mean([training_flops_per_sequence(args.hidden, args.layers, config.intermediate_size,
                                                     config.vocab_size, n, max_predictions(length)) for n in lengths])
        print(f"length {length} ({max_predictions(length)} predictions, sequences of {np.mean(lengths):.1f} tokens "
              f"on average, {flops / 1e9:.1f} GFLOP per sequence):")
        speeds, size = {}, f"{args.layers} x {args.hidden}, batch {args.batch_size} x {length}"
        for name in sorted(args.contenders, key=lambda name: name == "crossdisc"):  # (c) last, for its ratios
            result = record.in_fresh_process(contender, name, args, length)  # none inherits another's state
            if result is None:
                print(f"  {CONTENDERS[name]:26s} out of GPU memory")
                rows.append([size, CONTENDERS[name], "out of memory", "", "", "", "", ""])
                continue
            speed, peak_mib, build_ms, micro_batches = speeds[name] = result
            label = CONTENDERS[name] + (f", {micro_batches} x {args.batch_size // micro_batches} accumulated"
                                        if micro_batches > 1 else "")
            row = [size, label]
            build = f"{build_ms:.1f}" if build_ms is not None else ""
            mfu = f"{100 * speed * flops / (peak * 1e12):.1f}%" if peak else "-"
            hours[name, length] = 1e6 * args.batch_size / speed / 3600
            ratios = " / ".join(f"{speed / speeds[other][0]:.2f}x" if other in speeds else "-"
                                for other in ("huggingface", "trainer", "one-per-row")) if name == "crossdisc" else ""
            print(f"  {label:26s} {speed:9.1f} sequences/s   {memory} {peak_mib:8.0f} MiB   MFU {mfu:>6s}   "
                  f"1M steps {hours[name, length]:8.1f} h" + (f"   batch built in {build} ms" if build else "")
                  + (f"   (c)/(a) / (c)/(b) / (c)/(d) = {ratios}" if ratios else ""))
            rows.append(row + [f"{speed:.1f}", ratios, f"{peak_mib:.0f} MiB", mfu, f"{hours[name, length]:.1f}", build])
    notes = [f"Data: {args.data} ({'pairs that fill the sequence' if args.data == 'full' else BERT_RECIPE}). "
             "Sequences per second after untimed steps (the first; for (c) and (d) on a GPU, one of each batch "
             "shape, so that no recording is timed); MFU against the GPU's bf16 dense peak, with BERT's "
             "model FLOPs of each sequence's tokens for every contender; hours for 1M steps at that batch and length; "
             "for (c) and (d), the CPU milliseconds of masking and laying out a step's batch from its pairs in one "
             "process (mean over the timed steps' batches, built before them), which a GPU step must outlast where "
             f"the batches are built by the training process (--batch-workers 0; here {args.batch_workers} on a GPU)."]
    if ("crossdisc", 128) in hours and ("crossdisc", 512) in hours:
        schedule = 0.9 * hours["crossdisc", 128] + 0.1 * hours["crossdisc", 512]
        notes.append(f"BERT's schedule (90% of 1M steps at 128, 10% at 512) with (c): {schedule:.1f} h.")
        print(notes[-1])
    columns = ["model, batch x length", "contender", "sequences/s", "(c)/(a) / (c)/(b) / (c)/(d)", memory, "MFU",
               "hours for 1M steps", "CPU ms to build a batch"]
    print(f"written to {record.save('pretrain_throughput', args.device, argv, columns, rows, notes, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
