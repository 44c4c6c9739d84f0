"""Readers and the token file: real layouts in, one schema out; bad input names the file and the
record, exits non-zero and leaves no output."""

import subprocess
import sys

import pandas as pd
import pytest

from crossdisc import preprocess, synthetic, tokens
from crossdisc.errors import InputError

DNA_TASK = {"reader": "hilbert-cnn", "file": "data.txt", "kind": "classification", "alphabet": "ACGT",
            "max_length": 12, "add_special_tokens": True, "split_fractions": [0.5, 0.25], "seed": 100}
PROTEIN_TASK = {"reader": "fasta", "prefix": "data", "kind": "regression", "alphabet": "ARNDCQEGHILKMFPSTWYVXOUBZ",
                "max_length": 8, "add_special_tokens": True}


def write_protein(raw, train=">a 0.5\nACDE\n>b 1.5\nKLMNPQ\n"):
    raw.mkdir(exist_ok=True)
    (raw / "data_train.fa").write_text(train)
    (raw / "data_dev.fa").write_text(">c 0.1\nAAA\n")
    (raw / "data_test.fa").write_text(">d -2\nWWY\n")
    return raw


def test_hilbert_cnn_records_become_cls_symbols_sep(tmp_path):
    (tmp_path / "data.txt").write_text("r1\nACGTACGTACGTACGT\n1\nr2\nTTTT\n0\nr3\nGGGG\n1\nr4\nCCCC\n0\n")
    out = tmp_path / "tokens.parquet"
    preprocess.preprocess("dna", DNA_TASK, tmp_path, out)
    frame, meta = tokens.read_token_file(out)
    first = frame.set_index("id").loc["r1"]
    assert list(first["input_ids"]) == [tokens.CLS] + [3, 4, 5, 6] * 2 + [3, 4] + [tokens.SEP]  # cut to 12
    assert meta["symbols"] == ["[PAD]", "[CLS]", "[SEP]", "A", "C", "G", "T"]
    assert meta["label_names"] == ["0", "1"] and first["label"] == 1
    assert sorted(frame["split"].value_counts().to_dict().items()) == [("dev", 1), ("test", 1), ("train", 2)]


def test_fasta_regression_labels_are_floats_and_splits_follow_the_files(tmp_path):
    raw = write_protein(tmp_path / "raw")
    preprocess.preprocess("prot", PROTEIN_TASK, raw, tmp_path / "t.parquet")
    frame, meta = tokens.read_token_file(tmp_path / "t.parquet")
    assert dict(zip(frame["id"], frame["label"])) == {"a": 0.5, "b": 1.5, "c": pytest.approx(0.1), "d": -2.0}
    assert dict(zip(frame["id"], frame["split"])) == {"a": "train", "b": "train", "c": "dev", "d": "test"}
    assert meta["kind"] == "regression" and meta["label_names"] is None


@pytest.mark.parametrize("train, message", [
    (">a 0.5\nACDJ\n", "symbol 'J' is not in the task alphabet"),
    (">a\nACDE\n", "header has no label field"),
    (">a nan\nACDE\n", "not a finite number"),
    (">a high\nACDE\n", "is not a number"),
    (">a 1\nACD\n>a 2\nACD\n", "duplicate id"),
])
def test_bad_fasta_is_rejected_naming_file_and_record(tmp_path, train, message):
    raw = write_protein(tmp_path / "raw", train)
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=message) as err:
        preprocess.preprocess("prot", PROTEIN_TASK, raw, out)
    assert "data_train.fa" in str(err.value) and "record 'a'" in str(err.value)
    assert not out.exists()


def test_hilbert_cnn_with_a_broken_record_count_is_rejected(tmp_path):
    (tmp_path / "data.txt").write_text("r1\nACGT\n1\nr2\nACGT\n")
    with pytest.raises(InputError, match="not a whole number of 3-line records"):
        preprocess.preprocess("dna", DNA_TASK, tmp_path, tmp_path / "t.parquet")


def write_midi(path, pitches):
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for i, p in enumerate(pitches):
        piano.notes.append(pretty_midi.Note(velocity=80, pitch=p, start=i * 0.25, end=i * 0.25 + 0.2))
    midi.instruments.append(piano)
    midi.write(str(path))


MIDI_TASK = {"reader": "midi", "kind": "vote_classification", "segment_length": 4, "max_length": 4,
             "instruments": "first", "add_special_tokens": False}


def write_maestro(raw, rows):
    raw.mkdir(exist_ok=True)
    pd.DataFrame(rows).to_csv(raw / "metadata.csv", index=False)


def test_midi_is_cut_into_segments_that_carry_their_piece(tmp_path):
    write_midi(tmp_path / "a.mid", [60, 62, 64, 65, 67, 69, 71, 72, 74])  # 2 segments + 1 dropped note
    write_midi(tmp_path / "b.mid", [40, 41, 42, 43])
    write_maestro(tmp_path, [
        {"canonical_composer": "Chopin", "split": "train", "midi_filename": "a.mid"},
        {"canonical_composer": "Bach", "split": "test", "midi_filename": "b.mid"},
    ])
    preprocess.preprocess("music", MIDI_TASK, tmp_path, tmp_path / "m.parquet")
    frame, meta = tokens.read_token_file(tmp_path / "m.parquet")
    assert frame["group"].tolist() == ["a.mid", "a.mid", "b.mid"]
    assert list(frame["input_ids"][0]) == [60 + 3, 62 + 3, 64 + 3, 65 + 3]  # pitch p -> native id p + 3
    assert meta["label_names"] == ["Chopin", "Bach"]  # order of first appearance
    assert frame["split"].tolist() == ["train", "train", "test"]


def test_a_file_that_is_not_midi_is_rejected_by_the_command_line(tmp_path):
    (tmp_path / "a.mid").write_bytes(b"not a midi file")
    write_maestro(tmp_path, [{"canonical_composer": "Bach", "split": "train", "midi_filename": "a.mid"}])
    out = tmp_path / "m.parquet"
    import json
    result = subprocess.run([sys.executable, "-m", "crossdisc", "preprocess", "--task", "music", "--spec",
                             json.dumps(MIDI_TASK), "--raw", str(tmp_path), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "a.mid: not a readable MIDI file" in error_lines[0]
    assert not out.exists()


def test_midi_without_notes_is_rejected(tmp_path):
    write_midi(tmp_path / "a.mid", [])
    write_maestro(tmp_path, [{"canonical_composer": "Bach", "split": "train", "midi_filename": "a.mid"}])
    with pytest.raises(InputError, match="a.mid: MIDI file has no notes"):
        preprocess.preprocess("music", MIDI_TASK, tmp_path, tmp_path / "m.parquet")


def test_sentence_order_labels_follow_the_rule(tmp_path, tiny_bert):
    sentences = [f"Sentence number {i} has quite a few words in it." for i in range(40)]
    (tmp_path / "corpus.txt").write_text("\n".join(sentences) + "\n")
    task = {"reader": "sentence-order", "kind": "classification", "max_length": 32, "seed": 1, "min_words": 3,
            "max_words": 30, "split_fractions": [0.8, 0.1]}
    examples = preprocess.sentence_order_examples(tmp_path, task)
    for ex in examples:
        assert (ex["text"] in sentences) == bool(ex["label"])
        assert sorted(ex["text"].split()) in [sorted(s.split()) for s in sentences]
    preprocess.preprocess("order", task, tmp_path, tmp_path / "o.parquet", tiny_bert)
    frame, meta = tokens.read_token_file(tmp_path / "o.parquet")
    assert meta["vocabulary"] == "text" and frame["input_ids"][0][0] == 101  # [CLS] of the BERT vocabulary


def test_synthetic_tata_box_labels_follow_the_stated_rule():
    records = synthetic.tata_box_records(200, 40, seed=3)
    assert all(bool(synthetic.TATA_BOX.search(seq)) == bool(label) for _, seq, label in records)
    assert sum(label for *_, label in records) == 100


def test_synthetic_hydropathy_label_is_the_peak_of_the_hydropathy_plot():
    assert synthetic.hydropathy_peak("RRRIIIRRR", 3) == pytest.approx(4.5)
    for _, seq, label in synthetic.hydropathy_records(20, 10, 20, seed=3, window=5):
        assert label == pytest.approx(synthetic.hydropathy_peak(seq, 5), abs=1e-4)


def test_midi_files_are_found_inside_the_sources_directory(tmp_path):
    folder = tmp_path / "maestro-v1.0.0"
    folder.mkdir()
    write_midi(folder / "a.mid", [60, 61, 62, 63])
    write_maestro(folder, [{"canonical_composer": "Bach", "split": "train", "midi_filename": "a.mid"}])
    preprocess.preprocess("music", {**MIDI_TASK, "directory": "maestro-v1.0.0"}, tmp_path, tmp_path / "m.parquet")
    assert tokens.read_token_file(tmp_path / "m.parquet")[0]["group"].tolist() == ["a.mid"]
