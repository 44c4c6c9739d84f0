"""Readers and the token file: real layouts in, one schema out; bad input names the file and the
record, exits non-zero and leaves no output."""

import random
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
    """A one-instrument MIDI file of short notes, one every quarter second."""
    write_midi_tracks(path, [(p, i * 0.25, i * 0.25 + 0.2) for i, p in enumerate(pitches)])


def write_midi_tracks(path, *tracks):
    """A MIDI file with one instrument per track, each a list of (pitch, start, end) notes."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    for program, notes in enumerate(tracks):
        instrument = pretty_midi.Instrument(program=program)
        instrument.notes += [pretty_midi.Note(velocity=80, pitch=p, start=s, end=e) for p, s, e in notes]
        midi.instruments.append(instrument)
    midi.write(str(path))


MIDI_TASK = {"reader": "midi", "kind": "vote_classification", "segment_length": 4, "max_length": 4,
             "instruments": "first", "segmenting": "onset", "add_special_tokens": False}


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


# A long note (60) starts first and ends after five short ones: pretty_midi stores a note at its
# note-off, so the stored order is by end, not by start.
LONG_NOTE_FIRST = [(60, 0.0, 3.0), (62, 0.5, 0.9), (64, 1.0, 1.4), (65, 1.5, 1.9), (67, 2.0, 2.4), (69, 2.5, 2.9),
                   (71, 3.5, 3.9), (72, 4.0, 4.4)]


def segments_of(tmp_path, *tracks, **options):
    """The pitch segments (of 4) the midi reader makes of one piece with these tracks."""
    write_midi_tracks(tmp_path / "a.mid", *tracks)
    write_maestro(tmp_path, [{"canonical_composer": "Bach", "split": "train", "midi_filename": "a.mid"}])
    preprocess.preprocess("music", {**MIDI_TASK, **options}, tmp_path, tmp_path / "m.parquet")
    frame, _ = tokens.read_token_file(tmp_path / "m.parquet")
    return [[i - 3 for i in ids] for ids in frame["input_ids"]]  # native id p + 3 is pitch p


def test_pretty_midi_stores_notes_in_the_order_they_end(tmp_path):
    import pretty_midi

    write_midi_tracks(tmp_path / "a.mid", LONG_NOTE_FIRST)
    stored = pretty_midi.PrettyMIDI(str(tmp_path / "a.mid")).instruments[0].notes
    assert [n.pitch for n in stored] == [62, 64, 65, 67, 69, 60, 71, 72]


@pytest.mark.parametrize("extra, segmenting, segments", [
    # 8 notes, an exact multiple of 4: onset keeps both segments; the authors' loop
    # `while (i+1)*128 < len(notes)` drops the exact final one
    ([], "onset", [[60, 62, 64, 65], [67, 69, 71, 72]]),
    ([], "authors", [[62, 64, 65, 67]]),
    # a 9th note: the authors' second segment is stored notes 5-8 (69, 60, 71, 72) sorted by start
    ([(74, 4.5, 4.9)], "onset", [[60, 62, 64, 65], [67, 69, 71, 72]]),
    ([(74, 4.5, 4.9)], "authors", [[62, 64, 65, 67], [60, 69, 71, 72]]),
])
def test_midi_segments_onset_sorted_or_cut_in_stored_order_as_the_authors_did(tmp_path, extra, segmenting, segments):
    assert segments_of(tmp_path, LONG_NOTE_FIRST + extra, segmenting=segmenting) == segments


def authors_get_pitch(midi_data, length=128):
    """The authors' Music/preprocess.py get_pitch, verbatim but for the segment length."""
    note_list = []
    instrument = midi_data.instruments
    notes = instrument[0].notes
    i = 0
    while (i + 1) * length < len(notes):
        note = sorted(notes[i * length:(i + 1) * length], key=lambda x: x.start)
        note = [n.pitch for n in note]
        note_list.append(note)
        i += 1
    return note_list


def test_authors_segmenting_equals_the_authors_code_on_chords_and_overlapping_notes(tmp_path):
    import pretty_midi

    rng = random.Random(7)  # chords (shared onsets) of notes of random lengths: stored order is by end
    notes = [(rng.randrange(40, 90), beat * 0.5, beat * 0.5 + rng.choice([0.2, 0.7, 1.5, 3.0]))
             for beat in range(30) for _ in range(rng.randrange(1, 4))]
    segments = segments_of(tmp_path, notes, segmenting="authors")
    assert segments == authors_get_pitch(pretty_midi.PrettyMIDI(str(tmp_path / "a.mid")), 4)
    assert len(segments) == (len(notes) - 1) // 4


def test_midi_instruments_all_merges_the_tracks_by_onset_and_authors_reads_the_first(tmp_path):
    piano = [(60, 0.0, 0.4), (62, 1.0, 1.4), (64, 2.0, 2.4), (65, 3.0, 3.4), (67, 4.0, 4.4)]
    violin = [(72, 0.5, 0.9), (74, 1.5, 1.9), (76, 2.5, 2.9)]
    merged = segments_of(tmp_path, piano, violin, instruments="all", segmenting="onset")
    assert merged == [[60, 72, 62, 74], [64, 76, 65, 67]]
    assert segments_of(tmp_path, piano, violin, instruments="first", segmenting="authors") == [[60, 62, 64, 65]]


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


def test_preprocessing_counts_each_split_and_label_and_warns_on_a_small_split(tmp_path, caplog):
    (tmp_path / "data.txt").write_text("r1\nACGT\n1\nr2\nTTTT\n0\nr3\nGGGG\n1\nr4\nCCCC\n0\n")
    with caplog.at_level("INFO"):
        preprocess.preprocess("dna", DNA_TASK, tmp_path, tmp_path / "tokens.parquet")
    _, meta = tokens.read_token_file(tmp_path / "tokens.parquet")
    assert sum(sum(labels.values()) for labels in meta["split_counts"].values()) == 4
    assert set(meta["split_counts"]) == {"train", "dev", "test"}
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "dna: the dev split has 1 example; its metrics move by 100 points per example" in warnings
