"""Pre-training corpora at scale: preparing a BERT-layout corpus (workflow/crossdisc/corpus.py) and
reading it as pre-training does (workflow/crossdisc/pretrain_data.py's Batches), at two corpus
sizes, to show that memory stays flat as the corpus grows.

For each size a corpus.txt of documents (4 to 80 sentences of 5 to 40 words, drawn from the
running text of the CPython language reference; one document in a hundred a repeat of an earlier
one) is generated with at least that many WordPiece tokens, and cut into shards of a fixed number of
tokens (`--shard-million-tokens`: a larger corpus has more shards, as `corpus_shards` would be set).
Each phase runs in a fresh child process:

  prepare: split-corpus's streaming pass, the shards tokenised by a pool of `--workers` processes
           (as Snakemake runs the shard jobs side by side), gather-corpus's manifest;
  read:    the manifest opened as pre-training opens it and the batches of pre-training's steps
           (batch 256 x 128 tokens, BERT's recipe) built one after another across the whole first
           epoch, shard after shard (the counting pass over every shard included; collation and
           masking, which do not touch the corpus, excluded).

Prints tokens per second of each phase and its peak resident memory (the largest of the phase's
processes). Reading's peak memory is the point: it is that of two shards, whatever the corpus's
size. The table is also written, with the command, hardware and versions, to
benchmarks/results/corpus_scale-cpu.{md,json} (benchmarks/record.py).

    python benchmarks/corpus_scale.py [--million-tokens 25 100] [--shard-million-tokens 12.5] [--workers 2]
"""

import argparse
import math
import os
import re
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import record
from crossdisc.corpus import PreparedCorpus, prepare_corpus, shard_paths
from crossdisc.models import load_tokenizer
from finetune_throughput import default_model

SEED = 100


def peak_rss_mib():
    """The largest peak resident memory of this process and of its finished children (MiB)."""
    return max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024


def write_corpus(path, tokenizer, tokens):
    """A BERT-layout corpus.txt of at least `tokens` WordPiece tokens, written a document at a time.
    Returns its size in bytes."""
    from pydoc_data.topics import topics

    words = np.array(re.findall(r"\w+|[^\w\s]", " ".join(topics.values())))
    per_word = len(tokenizer(" ".join(words[:20000]), add_special_tokens=False, verbose=False)["input_ids"]) / 20000
    rng = np.random.default_rng(SEED)
    written, documents = 0, []
    with open(path, "w", encoding="utf-8") as out:
        while written < 1.05 * tokens:  # 5% over: the tokens per word are estimated
            if documents and rng.random() < 0.01:
                document = documents[rng.integers(len(documents))]
            else:
                lengths = rng.integers(5, 41, size=rng.integers(4, 81))
                at = rng.integers(len(words), size=len(lengths))
                document = "\n".join(" ".join(words[a:a + n]) for a, n in zip(at, lengths)) + "\n"
                written += int(lengths.sum() * per_word)
                if len(documents) < 1000:
                    documents.append(document)
            out.write(document + "\n")
    return path.stat().st_size


def prepare(corpus_txt, tokenizer_dir, manifest, shards, workers, results):
    started = time.time()
    meta = prepare_corpus(corpus_txt, load_tokenizer(tokenizer_dir), manifest, shards, workers)
    results.put({"tokens": meta["tokens"], "documents": meta["documents"], "seconds": time.time() - started,
                 "peak": peak_rss_mib(), "bytes": sum(path.stat().st_size for path in shard_paths(manifest))})


def read(manifest, tokenizer_dir, batch_size, length, results):
    from crossdisc.pretrain import DEFAULTS
    from crossdisc.pretrain_data import Batches

    hp = {**DEFAULTS, "batch_size": batch_size, "max_length": length}
    started = time.time()
    batches = Batches(PreparedCorpus(manifest, load_tokenizer(tokenizer_dir)), hp, SEED)
    steps = max(1, batches.counts(length).sum() // batch_size)  # the first epoch (its remainder left out)
    tokens = sum(len(a) + len(b) for step in range(steps) for a, b, _ in batches(step))
    results.put({"tokens": tokens, "steps": steps, "seconds": time.time() - started, "peak": peak_rss_mib()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="model directory whose tokenizer is used (default: the packaged MiniLM, "
                                            "BERT's uncased WordPiece vocabulary)")
    parser.add_argument("--million-tokens", type=float, nargs="+", default=[25, 100], help="the corpus sizes")
    parser.add_argument("--shard-million-tokens", type=float, default=12.5, help="tokens per shard")
    parser.add_argument("--workers", type=int, default=os.cpu_count(), help="processes tokenising shards")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--dir", help="where the corpora are written (default: a temporary directory)")
    parser.add_argument("--results-dir", default=record.RESULTS, help="where the results file is written")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    args.tokenizer = args.tokenizer or default_model()
    tokenizer = load_tokenizer(args.tokenizer)
    print(f"corpora of {' and '.join(f'{m:g} M' for m in args.million_tokens)} tokens in shards of "
          f"{args.shard_million_tokens:g} M, {args.workers} workers, batches of {args.batch_size} x {args.length}, "
          f"{os.cpu_count()} CPUs")
    rows = []
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for millions in args.million_tokens:
            where = Path(scratch) / f"{millions:g}M"
            where.mkdir()
            text_bytes = write_corpus(where / "corpus.txt", tokenizer, int(millions * 1e6))
            shards = max(1, math.ceil(millions / args.shard_million_tokens))
            made = record.in_fresh_process(prepare, where / "corpus.txt", args.tokenizer, where / "corpus.json", shards,
                                           args.workers)
            (where / "corpus.txt").unlink()
            read_back = record.in_fresh_process(read, where / "corpus.json", args.tokenizer, args.batch_size, args.length)
            rows.append([f"{made['tokens']:,}", str(shards), f"{made['documents']:,}",
                         f"{text_bytes / 2**20:.0f} / {made['bytes'] / 2**20:.0f} MiB",
                         f"{made['tokens'] / made['seconds'] / 1e6:.2f} M", f"{made['peak']:.0f} MiB",
                         f"{read_back['tokens'] / read_back['seconds'] / 1e6:.2f} M", f"{read_back['peak']:.0f} MiB"])
            print(f"  {rows[-1][0]:>11s} tokens, {shards:3d} shards: prepare {rows[-1][4]} tokens/s, peak {rows[-1][5]}; "
                  f"read {read_back['steps']} steps at {rows[-1][6]} tokens/s, peak {rows[-1][7]}", flush=True)
    columns = ["tokens", "shards", "documents", "corpus.txt / prepared", "prepare tokens/s", "prepare peak RSS",
               "read tokens/s", "read peak RSS"]
    notes = ["Prepare: split-corpus, the shards tokenised by a pool of processes, gather-corpus; its peak RSS is "
             "the largest of its processes'. Read: the manifest opened as pre-training opens it and the first "
             f"epoch's batches of {args.batch_size} x {args.length} built step after step (the pairs' tokens per "
             "second, collation and masking excluded)."]
    print(f"written to {record.save('corpus_scale', 'cpu', argv, columns, rows, notes, args.results_dir)}")
    return rows


if __name__ == "__main__":
    main()
