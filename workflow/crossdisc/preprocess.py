"""The preprocess stage: raw files of each discipline to one token file (see tokens.py).

A reader turns a source into examples: (id, split, sequence, label, group). Non-text sequences are
lists of symbols, encoded here with the task's alphabet; text sequences (one text, or a pair) are
tokenised with the model tokenizer. Any bad record stops the task with an InputError naming the
file and the record.
"""

import bisect
import csv
import functools
import io
import itertools
import json
import logging
import math
import random
from collections import Counter, defaultdict, namedtuple
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from . import corpus, tokens
from .errors import ConfigError, InputError
from .models import load_tokenizer

log = logging.getLogger(__name__)

MIDI_SPLITS = {"train": "train", "validation": "dev", "dev": "dev", "test": "test"}
# TAPE's file suffixes (`<task>_<suffix>.json`) and our split names.
TAPE_SPLITS = {"train": "train", "valid": "dev", "test": "test"}
TEXT_READERS = {"sentence-order", "glue", "text-table"}
# Symbols of the readers of known data sets, unless a task names its own: MIDI pitches 0..127;
# the UCI splice bases with the ambiguity codes N, D, R, S as symbols of their own.
DEFAULT_ALPHABETS = {"midi": [str(p) for p in range(128)], "uci-splice": list("ACGTNDRS")}
# Class names in the authors' id order (their DNA scripts: splice EI=0, IE=1, N=2; Hilbert-CNN's
# histone files are binary, 0 and 1, so that a stray label is an error, not a third class).
DEFAULT_LABELS = {"uci-splice": ["EI", "IE", "N"], "hilbert-cnn": ["0", "1"]}
SMALL_SPLIT = 10  # fewer examples (pieces) than this in a split: a warning, its metric is coarse

GlueTask = namedtuple("GlueTask", "texts tsv_columns tsv_header labels")
# Per GLUE task: the text columns of the Hugging Face `nyu-mll/glue` Parquet
# files (label column `label`, class ids); the text and label columns of the original TSV files;
# the column names of CoLA's TSVs, which have no header line; the class names in GLUE's id order
# (None: STS-B's similarity score, a regression).
GLUE_TASKS = {
    "cola": GlueTask(["sentence"], ["sentence", "label"], ["source", "label", "label_original", "sentence"],
                     ["unacceptable", "acceptable"]),
    "sst2": GlueTask(["sentence"], ["sentence", "label"], None, ["negative", "positive"]),
    "mrpc": GlueTask(["sentence1", "sentence2"], ["#1 String", "#2 String", "Quality"], None,
                     ["not_equivalent", "equivalent"]),
    "qqp": GlueTask(["question1", "question2"], ["question1", "question2", "is_duplicate"], None,
                    ["not_duplicate", "duplicate"]),
    "stsb": GlueTask(["sentence1", "sentence2"], ["sentence1", "sentence2", "score"], None, None),
    "mnli": GlueTask(["premise", "hypothesis"], ["sentence1", "sentence2", "gold_label"], None,
                     ["entailment", "neutral", "contradiction"]),
    "qnli": GlueTask(["question", "sentence"], ["question", "sentence", "label"], None,
                     ["entailment", "not_entailment"]),
    "rte": GlueTask(["sentence1", "sentence2"], ["sentence1", "sentence2", "label"], None,
                    ["entailment", "not_entailment"]),
}
# (split, subset, Parquet files, TSV file) of each GLUE task: the validation sets are the test
# split, as in the paper; MNLI's matched and mismatched sets are both, told apart by `subset`.
GLUE_FILES = {
    "mnli": [("train", "", "train-*.parquet", "train.tsv"),
             ("test", "matched", "validation_matched-*.parquet", "dev_matched.tsv"),
             ("test", "mismatched", "validation_mismatched-*.parquet", "dev_mismatched.tsv")],
    None: [("train", "", "train-*.parquet", "train.tsv"), ("test", "", "validation-*.parquet", "dev.tsv")],
}


def _random_splits(n, fractions, seed, names=tokens.SPLITS):
    """Split names for n examples: shuffled with `seed`, then cut at the given fractions of the
    first names; the rest take the last name."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    cuts = list(itertools.accumulate(int(n * f) for f in fractions))
    splits = [None] * n
    for rank, i in enumerate(order):
        splits[i] = names[bisect.bisect_right(cuts, rank)]
    return splits


def _read_text(path):
    """A file's text, which must exist, be UTF-8 (a byte-order mark is dropped) and not be empty."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "missing file")
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[:err.start].count(b"\n") + 1
        raise InputError(path, f"not UTF-8 text (byte 0x{data[err.start]:02x})", f"line {line}") from None
    if not text.strip():
        raise InputError(path, "empty file")
    return text


def _read_table(path, delimiter, columns, header=None, quoting=csv.QUOTE_MINIMAL):
    """Rows of a delimited text file as (line number, {column: value}), after checking that it has
    `columns`; `header` names the columns of a file without a header line."""
    reader = csv.reader(io.StringIO(_read_text(path), newline=""), delimiter=delimiter, quoting=quoting)
    names = header or next(reader)
    if len(names) == 1:
        raise InputError(path, f"a single column found: is the delimiter {delimiter!r} right?", "line 1")
    missing = [c for c in columns if c not in names]
    if missing:
        raise InputError(path, f"missing column(s) {missing} (the file has {names})", "line 1")
    rows = []
    try:
        for row in reader:
            if not row:  # a blank line
                continue
            if len(row) != len(names):
                raise InputError(path, f"{len(row)} fields, expected {len(names)}", f"line {reader.line_num}")
            rows.append((reader.line_num, dict(zip(names, row))))
    except csv.Error as err:  # e.g. a field over the csv module's size limit
        raise InputError(path, f"not a readable table ({err})", f"line {reader.line_num}") from None
    if not rows:
        raise InputError(path, "no rows")
    return rows


def _parquet_rows(folder, pattern, columns):
    """Rows of the Parquet files of one split (`pattern`: its shards) as (file, row number, dict)."""
    paths = sorted(Path(folder).glob(pattern))
    if not paths:
        raise InputError(Path(folder) / pattern, "no Parquet file matches")
    rows = []
    for path in paths:
        try:
            table = pq.read_table(path)
        except (OSError, pa.ArrowException) as err:
            raise InputError(path, f"not a readable Parquet file ({err})") from None
        missing = [c for c in columns if c not in table.column_names]
        if missing:
            raise InputError(path, f"missing column(s) {missing} (the file has {table.column_names})")
        for i, row in enumerate(table.select(columns).to_pylist()):
            empty = [c for c in columns if row[c] is None]
            if empty:
                raise InputError(path, f"no value in column(s) {empty}", f"row {i}")
            rows.append((path, i, row))
    return rows


def _json_records(path, layout):
    """The records of a JSON file holding a list of objects; `layout` names it in errors."""
    try:
        records = json.loads(_read_text(path))
    except ValueError as err:
        raise InputError(path, f"not valid JSON ({err})") from None
    if not isinstance(records, list):
        raise InputError(path, f"not a list of records ({layout})")
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(path, f"not a record but {type(record).__name__} ({layout})", f"record {i}")
    return records


def _text_fields(texts):
    """The text of an example, or a pair: tokenised as [CLS] a [SEP] b [SEP]."""
    return {"text": texts[0], "text_pair": texts[1]} if len(texts) == 2 else {"text": texts[0]}


def sentence_order_examples(raw_dir, task):
    """Word order detection on real English: each sentence is used once, either as written
    (label 1) or with its words shuffled into a different order (label 0). A CoLA-like task whose
    labels follow from a stated rule."""
    path = Path(raw_dir) / "corpus.txt"
    rng = random.Random(task["seed"])
    sentences = [s for s in corpus.read_sentences(path)
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


def _glue_label(spec, value):
    """A GLUE label as its class name: the Parquet files and the 0/1 TSV columns hold class ids,
    the NLI TSVs hold names. Anything else is left as it is, for `_labels` to reject."""
    text = str(value)
    if spec.labels is not None and text.isdecimal() and int(text) < len(spec.labels):
        return spec.labels[int(text)]
    return text


def glue_examples(raw_dir, task):
    """A GLUE task from the Hugging Face Parquet files (`train-*.parquet`, `validation-*.parquet`)
    or the original TSV files (train.tsv, dev.tsv), in `directory` of the source. The validation
    sets are the test split (see GLUE_FILES); `dev_fraction` of train, drawn with `seed`, is dev."""
    spec = GLUE_TASKS[task["glue_task"]]
    if (spec.labels is None) != (task["kind"] == "regression"):
        raise InputError(raw_dir, f"GLUE task '{task['glue_task']}' needs kind "
                                  f"'{'regression' if spec.labels is None else 'classification'}'")
    folder = Path(raw_dir) / task.get("directory", "")
    examples = []
    for split, subset, pattern, tsv_name in GLUE_FILES.get(task["glue_task"], GLUE_FILES[None]):
        if task["format"] == "parquet":
            rows = [(path, "row", i, [row[c] for c in spec.texts], row["label"])
                    for path, i, row in _parquet_rows(folder, pattern, spec.texts + ["label"])]
        else:
            path = folder / tsv_name
            # quotes are literal in GLUE's TSVs (as the authors' csv reader had quotechar=None)
            rows = [(path, "line", line, [row[c] for c in spec.tsv_columns[:-1]], row[spec.tsv_columns[-1]])
                    for line, row in _read_table(path, "\t", spec.tsv_columns, spec.tsv_header, csv.QUOTE_NONE)]
        examples += [{"id": f"{path.stem}:{n}", "split": split, "subset": subset, **_text_fields(texts),
                      "label": _glue_label(spec, label), "file": path, where: n}
                     for path, where, n, texts, label in rows]
    train = [ex for ex in examples if ex["split"] == "train"]
    for ex, split in zip(train, _random_splits(len(train), [task["dev_fraction"]], task["seed"], ("dev", "train"))):
        ex["split"] = split
    return examples


def text_table_examples(raw_dir, task):
    """A user's text task: a TSV/CSV `file` with a header, one or two `text_columns`, a
    `label_column` and optionally a `split_column` (train/dev/test); without one, the rows are split
    at `split_fractions` with `seed`."""
    path = Path(raw_dir) / task["file"]
    texts, split_column = task["text_columns"], task.get("split_column")
    rows = _read_table(path, task["delimiter"], [*texts, task["label_column"], *filter(None, [split_column])])
    splits = ([row[split_column] for _, row in rows] if split_column
              else _random_splits(len(rows), task["split_fractions"], task["seed"]))
    examples = []
    for (line, row), split in zip(rows, splits):
        if split not in tokens.SPLITS:
            raise InputError(path, f"unknown split '{split}' (expected one of {list(tokens.SPLITS)})", f"line {line}")
        examples.append({"id": f"{path.stem}:{line}", "split": split, **_text_fields([row[c] for c in texts]),
                         "label": row[task["label_column"]], "file": path, "line": line})
    return examples


def _metadata_rows(path, columns):
    """Rows of a MAESTRO metadata file as (record, row): a CSV (metadata.csv), or MAESTRO v1's JSON
    (maestro-v1.0.0.json), a list of records with the same columns."""
    if path.suffix != ".json":
        return [(f"line {line}", row) for line, row in _read_table(path, ",", columns)]
    records = _json_records(path, "the MAESTRO v1 layout")
    for i, record in enumerate(records):
        missing = [c for c in columns if c not in record]
        if missing:
            raise InputError(path, f"missing column(s) {missing}", f"record {i}")
    return [(f"record {i}", record) for i, record in enumerate(records)]


def _midi_segments(path, instruments, segmenting, length):
    """Pitches of a MIDI file in segments of `length` notes, cut as `segmenting` says. onset: the
    notes (the first instrument's, or all instruments merged) sorted by start time, cut into
    consecutive segments, the trailing partial one dropped. authors: as the authors'
    Music/preprocess.py, the first instrument's notes in pretty_midi's stored order, which is by
    note end (pretty_midi stores a note at its note-off), cut while a note follows the segment, so
    an exact final segment is dropped too, and each segment then sorted by start time. Runs in a
    worker process, so it takes only picklable arguments."""
    import pretty_midi

    try:
        midi = pretty_midi.PrettyMIDI(str(path))
    except Exception as err:  # pretty_midi raises many types for a broken file
        raise InputError(path, f"not a readable MIDI file ({err})") from err
    tracks = midi.instruments if instruments == "all" else midi.instruments[:1]
    if not any(track.notes for track in tracks):
        raise InputError(path, "MIDI file has no notes")
    if segmenting == "authors":
        notes = tracks[0].notes
        # the k with (k + 1) * length < len(notes), as the authors' `while (i+1)*128 < len(notes)`
        cuts = [notes[k * length:(k + 1) * length] for k in range((len(notes) - 1) // length)]
        return [[n.pitch for n in sorted(cut, key=lambda n: n.start)] for cut in cuts]
    notes = sorted((n for track in tracks for n in track.notes), key=lambda n: (n.start, n.pitch))
    return [[n.pitch for n in notes[k * length:(k + 1) * length]] for k in range(len(notes) // length)]


def midi_examples(raw_dir, task):
    """MAESTRO layout: a `metadata` file naming each MIDI file, its label (`label_column`, default
    canonical_composer) and its split; a user's CSV may leave out the split column, and its pieces
    are then split at `split_fractions` with `seed`. Notes are cut into segments of `segment_length`
    pitches as `segmenting` says (see _midi_segments); each segment carries its piece for vote
    evaluation. `workers` processes parse the files; the output keeps metadata order.
    Paths are relative to `directory` of the source (MAESTRO's zip unpacks into maestro-v1.0.0/)."""
    raw_dir = Path(raw_dir) / task.get("directory", "")
    meta_path = raw_dir / task.get("metadata", "metadata.csv")
    label_column = task.get("label_column", "canonical_composer")
    rows = _metadata_rows(meta_path, ["midi_filename", label_column])
    has_splits = all("split" in row for _, row in rows)
    for record, row in rows:
        if has_splits and row["split"] not in MIDI_SPLITS:
            raise InputError(meta_path, f"unknown split '{row['split']}'", record)
        if not (raw_dir / row["midi_filename"]).is_file():
            raise InputError(meta_path, f"missing MIDI file '{row['midi_filename']}'", record)
    splits = ([MIDI_SPLITS[row["split"]] for _, row in rows] if has_splits
              else _random_splits(len(rows), task["split_fractions"], task["seed"]))
    read = functools.partial(_midi_segments, instruments=task["instruments"], segmenting=task["segmenting"],
                             length=task["segment_length"])
    paths = [raw_dir / row["midi_filename"] for _, row in rows]
    if task.get("workers", 1) > 1:
        with ProcessPoolExecutor(task["workers"]) as pool:
            pieces = list(pool.map(read, paths, chunksize=4))
    else:
        pieces = map(read, paths)
    examples = []
    for (_, row), split, segments in zip(rows, splits, pieces):
        name = row["midi_filename"]
        examples += [{"id": f"{name}#{k}", "split": split, "symbols": segment, "label": row[label_column],
                      "group": name} for k, segment in enumerate(segments)]
    return examples


def hilbert_cnn_examples(raw_dir, task):
    """Hilbert-CNN layout: three lines per record (id, sequence, label); split 90/5/5 with a
    fixed seed as the authors did. The real files' id lines are `>ID`, some with a trailing space:
    the id is what follows the '>', stripped."""
    path = Path(raw_dir) / task["file"]
    lines = _read_text(path).splitlines()
    if len(lines) % 3:
        raise InputError(path, f"{len(lines)} lines is not a whole number of 3-line records")
    records = [lines[i:i + 3] for i in range(0, len(lines), 3)]
    splits = _random_splits(len(records), task["split_fractions"], task["seed"])
    return [{"id": name.removeprefix(">").strip(), "split": split, "symbols": list(seq.strip().upper()),
             "label": label.strip(), "file": path, "line": 3 * i + 1}
            for i, ((name, seq, label), split) in enumerate(zip(records, splits))]


def uci_splice_examples(raw_dir, task):
    """UCI splice-junction layout (`splice.data`, or Hilbert-CNN's byte-identical `splice.txt`):
    lines `CLASS, NAME, SEQUENCE` (60 bp); split 90/5/5 with a fixed seed as the authors did.
    Every record is kept, as the authors kept them: the real file repeats 12 instance names, each
    as an exact duplicate record. The first record of a name has the name as its id, a later one
    `NAME:<line>`, and the job log says how many names repeat."""
    path = Path(raw_dir) / task["file"]
    rows = _read_table(path, ",", [], header=["class", "name", "sequence"])
    splits = _random_splits(len(rows), task["split_fractions"], task["seed"])
    examples, records = [], defaultdict(list)
    for (line, row), split in zip(rows, splits):
        name = row["name"].strip()
        # Only later occurrences are renamed, so a file without repeated names (and every name
        # that occurs once) keeps the instance names as ids; the line number makes the id unique
        # and says where the record is.
        examples.append({"id": f"{name}:{line}" if name in records else name, "split": split,
                         "symbols": list(row["sequence"].strip().upper()), "label": row["class"].strip(),
                         "file": path, "line": line})
        records[name].append(tuple(row.values()))
    repeated = [recs for recs in records.values() if len(recs) > 1]
    if repeated:
        exact = sum(len(set(recs)) == 1 for recs in repeated)
        log.log(logging.INFO if exact == len(repeated) else logging.WARNING,
                "%s: %d instance names occur more than once, %d of them only as exact duplicate records; "
                "all %d records kept, a later occurrence with the id NAME:<line>", path, len(repeated), exact,
                len(rows))
    return examples


def tape_json_examples(raw_dir, task):
    """TAPE's raw JSON release (`data_raw_pytorch/<task>.tar.gz`, extracted into `directory`):
    `<prefix>_{train,valid,test}.json`, each a list of records with the sequence in `primary` and
    the label in `label_field` as a one-element list (`log_fluorescence`, `stability_score`), as
    TAPE's own datasets read `item[field][0]`. valid is the dev split. Ids are `<file>:<record>`
    (e.g. `fluorescence_valid:17`), unique across the three files whatever TAPE's `id` fields hold."""
    folder, field = Path(raw_dir) / task.get("directory", ""), task["label_field"]
    examples = []
    for suffix, split in TAPE_SPLITS.items():
        path = folder / f"{task['prefix']}_{suffix}.json"
        for i, record in enumerate(_json_records(path, "TAPE's JSON layout")):
            missing = [key for key in ("primary", field) if key not in record]
            if missing:
                raise InputError(path, f"missing field(s) {missing}", f"record {i}")
            value = record[field]
            if not isinstance(value, list) or len(value) != 1:
                raise InputError(path, f"'{field}' is {value!r}, not a one-element list", f"record {i}")
            if isinstance(value[0], bool) or not isinstance(value[0], (int, float)):
                raise InputError(path, f"'{field}' holds {value[0]!r}, not a number", f"record {i}")
            if not isinstance(record["primary"], str):
                raise InputError(path, f"'primary' is {record['primary']!r}, not a sequence", f"record {i}")
            examples.append({"id": f"{path.stem}:{i}", "split": split, "symbols": list(record["primary"].upper()),
                             "label": value[0], "file": path, "record": i})
    return examples


def fasta_examples(raw_dir, task):
    """FASTA with header `>NAME LABEL`: PLUS's `<prefix>_{train,dev,test}.fa`, or one `file` split
    at `split_fractions` with `seed`, or one `file` split by its headers (`test_marker`): DeepLoc
    1.0's `deeploc_data.fasta` has the third field `test` on its test records; the others are
    train, of which `dev_size`, drawn with `seed`, are dev. `label_before` keeps the label up to
    the first separator (PLUS), `label_before_last` up to the last (DeepLoc); records whose label
    is in `drop_labels` are left out, and the job log counts them. `keep_ends` cuts longer
    sequences to their first and last N residues before the max_length cut (PLUS localization:
    500, as the authors did)."""
    from Bio import SeqIO

    raw_dir = Path(raw_dir)
    if task.get("file"):
        files = [(raw_dir / task["file"], None)]
    else:
        files = [(raw_dir / f"{task['prefix']}_{split}.fa", split) for split in tokens.SPLITS]
    keep, marker, drop = task.get("keep_ends"), task.get("test_marker"), set(task.get("drop_labels", []))
    examples = []
    for path, split in files:
        try:
            records = list(SeqIO.parse(io.StringIO(_read_text(path)), "fasta"))
        except ValueError as err:  # Biopython's explanation starts with a one-line summary
            raise InputError(path, f"not a FASTA file ({str(err).splitlines()[0]})") from None
        dropped = 0
        for record in records:
            fields = record.description.split()
            if len(fields) < 2:
                raise InputError(path, "header has no label field", f"record '{record.id}'")
            # PLUS localization labels carry a suffix after '-'; the authors kept the part before
            # the first, so the one two-location label 'Cytoplasm-Nucleus' counts as Cytoplasm.
            # DeepLoc's labels end in -M, -S or -U (membrane-bound, soluble, unknown): cut at the
            # last '-', 'Cytoplasm-Nucleus' stays whole, for drop_labels to leave out.
            if task.get("label_before"):
                label = fields[1].split(task["label_before"], 1)[0]
            elif task.get("label_before_last"):
                label = fields[1].rsplit(task["label_before_last"], 1)[0]
            else:
                label = fields[1]
            if label in drop:
                dropped += 1
                continue
            record_split = split
            if marker:
                if len(fields) > 2 and fields[2] != marker:
                    raise InputError(path, f"third header field '{fields[2]}' is not the test marker '{marker}'",
                                     f"record '{record.id}'")
                record_split = "test" if len(fields) > 2 else "train"
            sequence = str(record.seq).upper()
            if keep and len(sequence) > 2 * keep:
                sequence = sequence[:keep] + sequence[-keep:]
            examples.append({"id": record.id, "split": record_split, "symbols": list(sequence), "label": label,
                             "file": path})
        if dropped:
            log.info("%s: %d records with a label in %s left out", path, dropped, sorted(drop))
    if marker:
        path, train = files[0][0], [ex for ex in examples if ex["split"] == "train"]
        if len(train) == len(examples):
            raise InputError(path, f"no header has the test marker '{marker}' as its third field")
        if task["dev_size"] > len(train):
            raise InputError(path, f"dev_size {task['dev_size']} is more than the {len(train)} records outside "
                                   f"the test split")
        for i in random.Random(task["seed"]).sample(range(len(train)), task["dev_size"]):
            train[i]["split"] = "dev"
    elif task.get("file"):
        for ex, split in zip(examples, _random_splits(len(examples), task["split_fractions"], task["seed"])):
            ex["split"] = split
    return examples


READERS = {
    "sentence-order": sentence_order_examples,
    "glue": glue_examples,
    "text-table": text_table_examples,
    "midi": midi_examples,
    "hilbert-cnn": hilbert_cnn_examples,
    "uci-splice": uci_splice_examples,
    "fasta": fasta_examples,
    "tape-json": tape_json_examples,
}


def _error(example, source, problem):
    """An InputError naming the example's file (else the source) and its line, row, record
    number or id."""
    key = next((k for k in ("line", "row", "record") if k in example), None)
    record = f"{key} {example[key]}" if key else f"record '{example['id']}'"
    return InputError(example.get("file", source), problem, record)


def _labels(examples, task, source):
    """Label values: floats for regression; class ids in the order of `labels` when the config
    gives them, else in the order of a known data set (GLUE, splice), else in order of first
    appearance (as the authors numbered composers)."""
    if task["kind"] == "regression":
        values = []
        for ex in examples:
            try:
                value = float(ex["label"])
            except ValueError:
                raise _error(ex, source, f"label '{ex['label']}' is not a number") from None
            if not math.isfinite(value):
                raise _error(ex, source, f"label '{ex['label']}' is not a finite number")
            values.append(value)
        return values, None
    known = GLUE_TASKS[task["glue_task"]].labels if task["reader"] == "glue" else DEFAULT_LABELS.get(task["reader"])
    names = [str(n) for n in task.get("labels") or known or dict.fromkeys(str(ex["label"]) for ex in examples)]
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for ex in examples:
        if str(ex["label"]) not in index:
            raise _error(ex, source, f"unknown class '{ex['label']}' (expected one of {names})")
        ids.append(index[str(ex["label"])])
    return ids, names


def native_ids(task_name, task):
    """The vocabulary of a non-text task ([PAD], [CLS], [SEP], then its alphabet) and the id of every
    symbol it reads: the alphabet's own, and each of `alphabet_synonyms` on the id of the symbol it
    stands for. An option that points outside the alphabet is a ConfigError naming it."""
    where = f"tasks.{task_name}"
    alphabet = [str(a) for a in task.get("alphabet") or DEFAULT_ALPHABETS[task["reader"]]]
    vocab = tokens.native_vocabulary(alphabet)
    ids = {symbol: i for i, symbol in enumerate(vocab)}
    for synonym, symbol in task.get("alphabet_synonyms", {}).items():
        if synonym in alphabet:
            raise ConfigError(f"{where}.alphabet_synonyms", f"'{synonym}' is a symbol of the alphabet itself")
        if symbol not in alphabet:
            raise ConfigError(f"{where}.alphabet_synonyms", f"'{synonym}' stands for '{symbol}', not in the alphabet")
        ids[synonym] = ids[symbol]
    if "unknown_symbol" in task and task["unknown_symbol"] not in alphabet:
        raise ConfigError(f"{where}.unknown_symbol", f"'{task['unknown_symbol']}' is not in the alphabet")
    return vocab, ids


def preprocess(task_name, task, raw_dir, out_path, tokenizer_dir=None):
    """Read one task's raw source and write its token file."""
    examples = READERS[task["reader"]](raw_dir, task)
    if not examples:
        raise InputError(raw_dir, f"task '{task_name}' produced no examples")
    seen = set()
    for ex in examples:
        if ex["id"] in seen:
            raise _error(ex, raw_dir, "duplicate id")
        seen.add(ex["id"])
    if task.get("split_sizes"):  # e.g. the paper's Table 4: the data are the ones it used
        sizes = {split: sum(ex["split"] == split for ex in examples) for split in tokens.SPLITS}
        if sizes != task["split_sizes"]:
            raise InputError(raw_dir, f"task '{task_name}': split sizes {sizes} differ from the configured "
                                      f"split_sizes {task['split_sizes']}")
    labels, label_names = _labels(examples, task, raw_dir)
    max_length = task["max_length"]
    meta = {"task": task_name, "kind": task["kind"], "label_names": label_names,
            "source_sha256": (Path(raw_dir) / "SHA256SUMS").read_text() if (Path(raw_dir) / "SHA256SUMS").exists() else None}
    records = []
    if task["reader"] in TEXT_READERS:
        tokenizer = load_tokenizer(tokenizer_dir)
        pairs = "text_pair" in examples[0]
        # one batch call of the fast tokenizer; pairs are cut longest-first, as GLUE features were
        encoded = tokenizer([ex["text"] for ex in examples], [ex["text_pair"] for ex in examples] if pairs else None,
                            truncation=True, max_length=max_length)
        meta.update(vocabulary="text", tokenizer=str(tokenizer_dir), vocab_size=len(tokenizer))
        for ex, ids, types, label in zip(examples, encoded["input_ids"], encoded["token_type_ids"], labels):
            records.append({"id": ex["id"], "split": ex["split"], "input_ids": ids,
                            "token_type_ids": types if pairs else [], "group": ex["id"],
                            "subset": ex.get("subset", ""), "label": label})
    else:
        vocab, symbol_ids = native_ids(task_name, task)
        unknown_id = symbol_ids[task["unknown_symbol"]] if "unknown_symbol" in task else None
        specials = task["add_special_tokens"]
        body = max_length - 2 if specials else max_length
        meta.update(vocabulary="native", symbols=vocab, vocab_size=len(vocab))
        unknown = Counter()  # symbols read as unknown_symbol, for the job log
        for ex, label in zip(examples, labels):
            symbols = [str(s) for s in ex["symbols"][:body]]
            outside = [s for s in symbols if s not in symbol_ids]
            if outside and unknown_id is None:
                raise _error(ex, raw_dir, f"symbol '{outside[0]}' is not in the task alphabet")
            unknown.update(outside)
            ids = [symbol_ids.get(s, unknown_id) for s in symbols]
            if not ids:
                raise _error(ex, raw_dir, "empty sequence")
            if specials:
                ids = [tokens.CLS] + ids + [tokens.SEP]
            records.append({"id": ex["id"], "split": ex["split"], "input_ids": ids, "token_type_ids": [],
                            "group": ex.get("group", ex["id"]), "label": label})
        if unknown:
            log.info("%s: symbols outside the alphabet read as '%s': %s", task_name, task["unknown_symbol"],
                     dict(sorted(unknown.items())))
    meta["split_counts"] = split_counts(records, label_names, task["kind"])
    tokens.write_token_file(out_path, records, meta)
    log.info("%s: examples per split and label: %s", task_name, meta["split_counts"])
    unit = "pieces" if task["kind"] == "vote_classification" else "examples"
    for split in tokens.SPLITS:
        size = sum(meta["split_counts"].get(split, {}).values())
        if size < SMALL_SPLIT:
            log.warning("%s: the %s split has %d %s; its metrics %s", task_name, split, size,
                        unit[:-1] if size == 1 else unit,
                        "are not computed" if size == 0 else f"move by {100 / size:.0f} points per {unit[:-1]}")


def split_counts(records, label_names, kind):
    """{split: {label: examples}} of a token file's records (pieces, for a vote task: its metric
    counts pieces); a regression's values count under 'all'."""
    counts = {}
    seen = set()
    for r in records:
        if kind == "vote_classification":
            if (r["split"], r["group"]) in seen:
                continue
            seen.add((r["split"], r["group"]))
        label = "all" if label_names is None else label_names[r["label"]]
        split = counts.setdefault(r["split"], {})
        split[label] = split.get(label, 0) + 1
    return counts

