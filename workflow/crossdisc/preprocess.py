"""The preprocess stage: raw files of each discipline to one token file (see tokens.py).

A reader turns a source into examples: (id, split, sequence, label, group). Non-text sequences are
lists of symbols, encoded here with the task's alphabet; text sequences are tokenised with the
model tokenizer. Any bad record stops the task with an InputError naming the file and the record.
"""

import math
import random
import re
from pathlib import Path

import pandas as pd

from . import tokens
from .errors import InputError
from .models import load_tokenizer

MIDI_SPLITS = {"train": "train", "validation": "dev", "test": "test"}
TEXT_READERS = {"sentence-order"}
# MIDI pitches 0..127 are the music alphabet unless a task names its own.
DEFAULT_ALPHABETS = {"midi": [str(p) for p in range(128)]}


def _random_splits(n, fractions, seed):
    """Split labels for n examples: shuffled with `seed`, then cut at the given fractions."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    n_train = int(n * fractions[0])
    n_dev = int(n * fractions[1])
    splits = [None] * n
    for rank, i in enumerate(order):
        splits[i] = "train" if rank < n_train else "dev" if rank < n_train + n_dev else "test"
    return splits


def read_corpus_sentences(path):
    """Sentences of a corpus in BERT's layout (one sentence per line, blank line between documents)."""
    text = Path(path).read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def sentence_order_examples(raw_dir, task):
    """Word order detection on real English: each sentence is used once, either as written
    (label 1) or with its words shuffled into a different order (label 0). A CoLA-like task whose
    labels follow from a stated rule."""
    path = Path(raw_dir) / "corpus.txt"
    rng = random.Random(task["seed"])
    sentences = [s for s in read_corpus_sentences(path)
                 if task["min_words"] <= len(s.split()) <= task["max_words"]]
    sentences = sorted(set(sentences))
    rng.shuffle(sentences)
    sentences = sentences[: task.get("max_examples") or len(sentences)]
    splits = _random_splits(len(sentences), task["split_fractions"], task["seed"])
    examples = []
    for i, (sentence, split) in enumerate(zip(sentences, splits)):
        label = i % 2
        if not label:
            words = sentence.split()
            shuffled = words[:]
            while shuffled == words:
                rng.shuffle(shuffled)
            sentence = " ".join(shuffled)
        examples.append({"id": f"s{i:06d}", "split": split, "text": sentence, "label": label})
    return examples


def midi_examples(raw_dir, task):
    """MAESTRO layout: metadata.csv plus MIDI files. Notes sorted by start time (first instrument,
    or all instruments merged), cut into consecutive segments of `segment_length` pitches, the
    trailing partial segment dropped; each segment carries its piece id for vote evaluation."""
    import pretty_midi

    raw_dir = Path(raw_dir)
    meta_path = raw_dir / "metadata.csv"
    metadata = pd.read_csv(meta_path)
    length = task["segment_length"]
    examples = []
    for line, row in enumerate(metadata.itertuples(index=False), start=2):
        midi_path = raw_dir / row.midi_filename
        if row.split not in MIDI_SPLITS:
            raise InputError(meta_path, f"unknown split '{row.split}'", f"line {line}")
        try:
            midi = pretty_midi.PrettyMIDI(str(midi_path))
        except Exception as err:  # pretty_midi raises many types for a broken file
            raise InputError(midi_path, f"not a readable MIDI file ({err})") from err
        instruments = midi.instruments if task["instruments"] == "all" else midi.instruments[:1]
        notes = sorted((n for inst in instruments for n in inst.notes), key=lambda n: (n.start, n.pitch))
        if not notes:
            raise InputError(midi_path, "MIDI file has no notes")
        pitches = [n.pitch for n in notes]
        for k in range(len(pitches) // length):
            examples.append({"id": f"{row.midi_filename}#{k}", "split": MIDI_SPLITS[row.split],
                             "symbols": pitches[k * length:(k + 1) * length],
                             "label": row.canonical_composer, "group": row.midi_filename})
    return examples


def hilbert_cnn_examples(raw_dir, task):
    """Hilbert-CNN layout: three lines per record (id, sequence, label); split 90/5/5 with a
    fixed seed as the authors did."""
    path = Path(raw_dir) / task["file"]
    lines = path.read_text().splitlines()
    if not lines:
        raise InputError(path, "empty file")
    if len(lines) % 3:
        raise InputError(path, f"{len(lines)} lines is not a whole number of 3-line records")
    records = [lines[i:i + 3] for i in range(0, len(lines), 3)]
    splits = _random_splits(len(records), task["split_fractions"], task["seed"])
    return [{"id": name.strip(), "split": split, "symbols": list(seq.strip().upper()), "label": label.strip(),
             "line": 3 * i + 1} for i, ((name, seq, label), split) in enumerate(zip(records, splits))]


def fasta_examples(raw_dir, task):
    """PLUS layout: `<prefix>_{train,dev,test}.fa`, header `>NAME LABEL`."""
    from Bio import SeqIO

    examples = []
    for split in tokens.SPLITS:
        path = Path(raw_dir) / f"{task['prefix']}_{split}.fa"
        if not path.is_file():
            raise InputError(path, "missing FASTA file")
        for record in SeqIO.parse(path, "fasta"):
            fields = record.description.split()
            if len(fields) < 2:
                raise InputError(path, "header has no label field", f"record '{record.id}'")
            examples.append({"id": record.id, "split": split, "symbols": list(str(record.seq).upper()),
                             "label": fields[1], "file": path})
    return examples


READERS = {
    "sentence-order": sentence_order_examples,
    "midi": midi_examples,
    "hilbert-cnn": hilbert_cnn_examples,
    "fasta": fasta_examples,
}


def _where(example, source):
    path = example.get("file", source)
    record = f"line {example['line']}" if "line" in example else f"record '{example['id']}'"
    return path, record


def _labels(examples, task, source):
    """Label values: floats for regression; class ids in the order of `labels` when the config
    gives them, else in order of first appearance (as the authors numbered composers)."""
    if task["kind"] == "regression":
        values = []
        for ex in examples:
            try:
                value = float(ex["label"])
            except ValueError:
                raise InputError(*_where(ex, source), f"label '{ex['label']}' is not a number") from None
            if not math.isfinite(value):
                raise InputError(*_where(ex, source), f"label '{ex['label']}' is not a finite number")
            values.append(value)
        return values, None
    names = [str(n) for n in task.get("labels") or dict.fromkeys(str(ex["label"]) for ex in examples)]
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for ex in examples:
        if str(ex["label"]) not in index:
            raise InputError(*_where(ex, source), f"unknown class '{ex['label']}' (expected one of {names})")
        ids.append(index[str(ex["label"])])
    return ids, names


def preprocess(task_name, task, raw_dir, out_path, tokenizer_dir=None):
    """Read one task's raw source and write its token file."""
    examples = READERS[task["reader"]](raw_dir, task)
    if not examples:
        raise InputError(raw_dir, f"task '{task_name}' produced no examples")
    seen = set()
    for ex in examples:
        if ex["id"] in seen:
            raise InputError(*_where(ex, raw_dir), "duplicate id")
        seen.add(ex["id"])
    labels, label_names = _labels(examples, task, raw_dir)
    max_length = task["max_length"]
    meta = {"task": task_name, "kind": task["kind"], "label_names": label_names,
            "source_sha256": (Path(raw_dir) / "SHA256SUMS").read_text() if (Path(raw_dir) / "SHA256SUMS").exists() else None}
    records = []
    if task["reader"] in TEXT_READERS:
        tokenizer = load_tokenizer(tokenizer_dir)
        encoded = tokenizer([ex["text"] for ex in examples], truncation=True, max_length=max_length)
        meta.update(vocabulary="text", tokenizer=str(tokenizer_dir), vocab_size=len(tokenizer))
        for ex, ids, types, label in zip(examples, encoded["input_ids"], encoded["token_type_ids"], labels):
            records.append({"id": ex["id"], "split": ex["split"], "input_ids": ids, "token_type_ids": [],
                            "group": ex["id"], "label": label})
    else:
        alphabet = [str(a) for a in task.get("alphabet") or DEFAULT_ALPHABETS[task["reader"]]]
        vocab = tokens.native_vocabulary(alphabet)
        index = {symbol: i for i, symbol in enumerate(vocab)}
        specials = task["add_special_tokens"]
        body = max_length - 2 if specials else max_length
        meta.update(vocabulary="native", symbols=vocab, vocab_size=len(vocab))
        for ex, label in zip(examples, labels):
            try:
                ids = [index[str(s)] for s in ex["symbols"][:body]]
            except KeyError as err:
                raise InputError(*_where(ex, raw_dir), f"symbol {err} is not in the task alphabet") from None
            if not ids:
                raise InputError(*_where(ex, raw_dir), "empty sequence")
            if specials:
                ids = [tokens.CLS] + ids + [tokens.SEP]
            records.append({"id": ex["id"], "split": ex["split"], "input_ids": ids, "token_type_ids": [],
                            "group": ex.get("group", ex["id"]), "label": label})
    tokens.write_token_file(out_path, records, meta)

