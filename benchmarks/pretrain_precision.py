"""Pre-training in bf16 against fp32, and replayed CUDA graphs against eager steps: the same short
pre-training (crossdisc.pretrain, as the pipeline runs it) three times on one corpus, seed and
model, and how far their loss curves lie apart.

  (a) bf16 autocast, CUDA graphs (the defaults on a GPU);
  (b) fp32, CUDA graphs;
  (c) fp32, eager steps (training.cuda_graphs: false).

(a) against (b) is what bf16 changes; (b) against (c) what the graphs and the padding to the
sequence length change (rounding only; dropout is drawn differently for the two widths, so set
`--no-dropout` to compare them step by step). The corpus is the CPython language reference, one
document per topic. Prints each run's sequences per second, its mean loss over the last tenth of the
steps, and the largest step-by-step loss difference between the runs. On a CPU every run is fp32
and eager, so the three agree exactly. The table is also written, with the command, hardware and
versions, to benchmarks/results/pretrain_precision-<device>.{md,json} (benchmarks/record.py).

    python benchmarks/pretrain_precision.py [--steps 100] [--batch-size 32] [--length 128]
        [--hidden 128 --layers 2] [--no-dropout] [--device cuda]
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import record
from finetune_throughput import default_model, hardware

RUNS = {"(a) bf16, graphs": {"precision": "bf16", "cuda_graphs": True},
        "(b) fp32, graphs": {"precision": "fp32", "cuda_graphs": True},
        "(c) fp32, eager": {"precision": "fp32", "cuda_graphs": False}}


def write_corpus(path):
    """The language reference in BERT's corpus layout: a sentence per line, a blank line between
    documents (one per topic)."""
    from pydoc_data.topics import topics

    documents = []
    for text in topics.values():
        sentences = [s.strip() for s in " ".join(text.split()).split(". ") if len(s.split()) > 2]
        if len(sentences) > 1:
            documents.append("\n".join(sentences))
    path.write_text("\n\n".join(documents) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", help="model directory whose tokenizer is used (default: the packaged MiniLM)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--no-dropout", action="store_true", help="dropout 0, so graphs and eager compare step by step")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results-dir", default=record.RESULTS, help="where the results file is written")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    from crossdisc import pretrain
    from crossdisc.corpus import prepare_corpus
    from crossdisc.models import load_tokenizer

    tokenizer_dir = args.tokenizer or default_model()
    architecture = {"hidden_size": args.hidden, "num_hidden_layers": args.layers,
                    "num_attention_heads": max(1, args.hidden // 64), "intermediate_size": 4 * args.hidden}
    if args.no_dropout:
        architecture.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hp = {"max_length": args.length, "batch_size": args.batch_size, "lr": 1e-4, "warmup_steps": args.steps // 10,
          "checkpoint_every": 10**9}
    print(f"BERT {args.layers} layers x {args.hidden}, batch {args.batch_size} x {args.length}, {args.steps} steps "
          f"from scratch{', no dropout' if args.no_dropout else ''}, {hardware(args.device)}")
    curves, rows = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_corpus(tmp / "corpus.txt")
        prepare_corpus(tmp / "corpus.txt", load_tokenizer(tokenizer_dir), tmp / "corpus.json")
        for i, (name, setting) in enumerate(RUNS.items()):
            started = time.time()
            pretrain.pretrain(tmp / "corpus.json", tokenizer_dir, architecture, tmp / f"run-{i}", args.steps,
                              args.steps, {**hp, **setting}, device=args.device)
            seconds = time.time() - started  # model building and the first steps included
            state = torch.load(tmp / f"run-{i}" / pretrain.STATE_FILE, weights_only=True)
            curves[name] = np.array([point["loss"] for point in state["curve"]])
            tail = curves[name][-max(1, args.steps // 10):].mean()
            speed = args.steps * args.batch_size / seconds
            print(f"  {name:18s} {speed:8.1f} sequences/s (all included)   last-tenth mean loss {tail:.4f}   "
                  f"first {curves[name][0]:.4f}")
            rows.append([name, f"{speed:.1f}", f"{curves[name][0]:.4f}", f"{tail:.4f}"])
    (a, b, c) = curves.values()
    differences = {"(a) - (b), bf16 against fp32": np.abs(a - b).max(),
                   "(b) - (c), graphs against eager": np.abs(b - c).max()}
    for label, value in differences.items():
        print(f"  largest step-by-step loss difference {label}: {value:.2g}")
    notes = [f"Largest step-by-step loss difference {label}: {value:.2g}." for label, value in differences.items()]
    columns = ["run", "sequences/s (start-up included)", "first loss", "mean loss, last tenth of the steps"]
    print(f"written to {record.save('pretrain_precision', args.device, argv, columns, rows, notes, args.results_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
