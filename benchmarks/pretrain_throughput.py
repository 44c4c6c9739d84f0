"""BERT pre-training throughput (masked LM + next-sentence prediction): Hugging Face's
BertForPreTraining with DataCollatorForLanguageModeling against crossdisc's pre-training step
(workflow/crossdisc/pretrain.py), each in a fresh child process, on the same model size, batch,
sequences and hardware.

Both train a BERT from scratch on sentence pairs [CLS] A [SEP] B [SEP] cut from real English (the
CPython language reference) with the BERT recipe (15% selected; 80/10/10; half the pairs labelled
random next). Hugging Face computes the MLM output layer over every position; ours only where a
token was selected. Prints sequences per second and the process's peak memory for each (on a GPU,
peak GPU memory); the last line is the ratio of ours to Hugging Face's. On a GPU both run under
bf16 autocast. Ours builds its model and optimiser as the pipeline does (fused AdamW). The table is
also written, with the command, hardware and versions, to
benchmarks/results/pretrain_throughput-<device>.{md,json} (benchmarks/record.py).

    python benchmarks/pretrain_throughput.py [--steps 20] [--batch-size 32] [--hidden 128 --layers 2] [--device cuda]
"""

import argparse
import multiprocessing
import os
import resource
import sys
import time

import torch

import record
from finetune_throughput import default_model, hardware


def pairs(tokenizer, length, count):
    """`count` pairs (A, B, is_random_next) that fill `length` tokens as [CLS] A [SEP] B [SEP], cut
    from the language reference; every other one is labelled random next."""
    from pydoc_data.topics import topics

    ids = tokenizer(" ".join(topics.values()), add_special_tokens=False, verbose=False)["input_ids"]
    body = length - 3
    blocks = [ids[i * body:(i + 1) * body] for i in range(count)]
    return [(block[:body // 2], block[body // 2:], i % 2 == 1) for i, block in enumerate(blocks)]


def contender(name, args, queue):
    from transformers import BertConfig, BertForPreTraining, DataCollatorForLanguageModeling

    from crossdisc.models import load_tokenizer
    from crossdisc.pretrain import pretraining_loss, pretraining_model
    from crossdisc.pretrain_data import collate

    from crossdisc.training import autocast_for

    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    device = torch.device(args.device)
    autocast = autocast_for(device)
    tokenizer = load_tokenizer(args.tokenizer)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=args.hidden, num_hidden_layers=args.layers,
                        num_attention_heads=args.hidden // 64, intermediate_size=4 * args.hidden)
    ours = name == "crossdisc"
    model = pretraining_model(config, device) if ours else BertForPreTraining(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=ours)
    data = pairs(tokenizer, args.length, args.batch_size * (args.steps + 1))
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=0.15)
    generator = torch.Generator().manual_seed(0)

    def step(i):
        ids, segments, next_labels = collate(data[i * args.batch_size:(i + 1) * args.batch_size], tokenizer)
        with autocast():
            if name == "huggingface":
                features = collator([{"input_ids": sequence} for sequence in ids.tolist()])
                loss = model(input_ids=features["input_ids"].to(device), token_type_ids=segments.to(device),
                             labels=features["labels"].to(device), next_sentence_label=next_labels.to(device)).loss
            else:
                loss = pretraining_loss(model, ids, segments, next_labels, tokenizer, 0.15, generator, device)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(0)  # warm-up, untimed
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.time()
    for i in range(1, args.steps + 1):
        step(i)
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put((args.steps * args.batch_size / (time.time() - started), peak))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="model directory whose tokenizer is used (default: the packaged MiniLM)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results-dir", default=record.RESULTS, help="where the results file is written")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.tokenizer = args.tokenizer or default_model()
    torch.set_num_threads(os.cpu_count())  # as each contender does
    print(f"BERT {args.layers} layers x {args.hidden}, vocabulary of {args.tokenizer}, batch {args.batch_size} x "
          f"{args.length}, {args.steps} steps, {hardware(args.device)}")
    context = multiprocessing.get_context("spawn")
    results = {}
    for name in ("huggingface", "crossdisc"):
        queue = context.Queue()
        process = context.Process(target=contender, args=(name, args, queue))
        process.start()
        results[name] = queue.get()
        process.join()
        speed, peak = results[name]
        print(f"  {name:12s} {speed:8.1f} sequences/s   peak {'GPU ' if args.device == 'cuda' else ''}memory {peak:8.0f} MiB")
    (theirs, their_peak), (ours, our_peak) = results["huggingface"], results["crossdisc"]
    print(f"crossdisc / huggingface = {ours / theirs:.2f}x")
    memory = "peak GPU memory" if args.device == "cuda" else "peak memory"
    columns = ["model", "Hugging Face seq/s", "crossdisc seq/s", "ratio", f"{memory} (HF / ours)"]
    row = [f"{args.layers} layers x {args.hidden}, batch {args.batch_size} x {args.length}, {args.steps} steps",
           f"{theirs:.1f}", f"{ours:.1f}", f"{ours / theirs:.2f}x", f"{their_peak:.0f} / {our_peak:.0f} MiB"]
    print(f"written to {record.save('pretrain_throughput', args.device, argv, columns, [row], (), args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
