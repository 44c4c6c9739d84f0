"""Readers of the paper's real data sets and of a user's own data: small files in the real
layouts in, one token file out; bad input names the file and the record and leaves no output."""

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from crossdisc import download, preprocess, tokens
from crossdisc.errors import InputError
from test_preprocess import write_midi

# Small files in the real layouts, each carrying the quirks of the real file (tests/data/README.md).
DATA = Path(__file__).parent / "data"
GLUE = {"reader": "glue", "kind": "classification", "max_length": 128, "format": "parquet",
        "dev_fraction": 0.0, "seed": 100}


def write_parquet(path, **columns):
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)


def write_mnli_parquet(raw):
    write_parquet(raw / "train-00000-of-00001.parquet", premise=[f"A man plays music {i}." for i in range(4)],
                  hypothesis=["A man is outside.", "Nobody plays.", "Music is played.", "A cat sleeps."],
                  label=[1, 2, 0, 1], idx=list(range(4)))
    for name, label in (("matched", 0), ("mismatched", 2)):
        write_parquet(raw / f"validation_{name}-00000-of-00001.parquet", premise=[f"The {name} premise."] * 2,
                      hypothesis=["A short hypothesis.", "Another one."], label=[label, 1], idx=[0, 1])


def read(out):
    frame, meta = tokens.read_token_file(out)
    return frame.set_index("id"), meta


def test_glue_mnli_parquet_pairs_have_token_types_and_both_test_sets(tmp_path, tiny_bert, tokenizer):
    write_mnli_parquet(tmp_path)
    task = dict(GLUE, glue_task="mnli", dev_fraction=0.5)
    preprocess.preprocess("mnli", task, tmp_path, tmp_path / "t.parquet", tiny_bert)
    frame, meta = read(tmp_path / "t.parquet")
    assert meta["label_names"] == ["entailment", "neutral", "contradiction"]
    assert frame["split"].value_counts().to_dict() == {"test": 4, "train": 2, "dev": 2}
    test = frame[frame["split"] == "test"]
    assert sorted(test["subset"]) == ["matched", "matched", "mismatched", "mismatched"]
    assert set(frame.loc[frame["split"] != "test", "subset"]) == {""}
    row = frame.loc["validation_mismatched-00000-of-00001:0"]
    assert row["label"] == 2
    words = tokenizer.convert_ids_to_tokens(list(row["input_ids"]))
    a, b = tokenizer.tokenize("The mismatched premise."), tokenizer.tokenize("A short hypothesis.")
    assert words == ["[CLS]", *a, "[SEP]", *b, "[SEP]"]
    assert list(row["token_type_ids"]) == [0] * (len(a) + 2) + [1] * (len(b) + 1)


def test_glue_pairs_are_cut_to_max_length(tmp_path, tiny_bert):
    write_mnli_parquet(tmp_path)
    preprocess.preprocess("mnli", dict(GLUE, glue_task="mnli", max_length=8), tmp_path, tmp_path / "t.parquet", tiny_bert)
    frame, _ = read(tmp_path / "t.parquet")
    assert frame["input_ids"].map(len).max() == 8
    assert all(ids[-1] == 102 and list(ids).count(102) == 2 for ids in frame["input_ids"])


def test_glue_cola_tsv_without_header_keeps_quotes_literal(tmp_path, tiny_bert):
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "train.tsv").write_text('gj04\t1\t\tOur friends won\'t buy this analysis.\n'
                                                 'gj04\t0\t*\tThe "more we study verbs.\n')
    (tmp_path / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tThey drank the pub dry.\n")
    task = dict(GLUE, glue_task="cola", format="tsv", directory="CoLA")
    preprocess.preprocess("cola", task, tmp_path, tmp_path / "t.parquet", tiny_bert)
    frame, meta = read(tmp_path / "t.parquet")
    assert meta["label_names"] == ["unacceptable", "acceptable"]
    assert frame["label"].to_dict() == {"train:1": 1, "train:2": 0, "dev:1": 1}
    assert frame["split"].to_dict() == {"train:1": "train", "train:2": "train", "dev:1": "test"}
    assert all(len(types) == 0 for types in frame["token_type_ids"])  # single sentences


def test_glue_mnli_tsv_reads_gold_label_names(tmp_path, tiny_bert):
    header = "index\tgenre\tsentence1\tsentence2\tlabel1\tgold_label\n"
    (tmp_path / "train.tsv").write_text(header + "0\tfiction\tA man sings.\tSomeone sings.\tentailment\tentailment\n")
    for name in ("matched", "mismatched"):
        (tmp_path / f"dev_{name}.tsv").write_text(header + "0\tslate\tIt rains.\tIt is dry.\tcontradiction\tcontradiction\n")
    preprocess.preprocess("mnli", dict(GLUE, glue_task="mnli", format="tsv"), tmp_path, tmp_path / "t.parquet", tiny_bert)
    frame, _ = read(tmp_path / "t.parquet")
    assert frame["label"].to_dict() == {"train:2": 0, "dev_matched:2": 2, "dev_mismatched:2": 2}
    assert frame["subset"].to_dict() == {"train:2": "", "dev_matched:2": "matched", "dev_mismatched:2": "mismatched"}


def test_glue_stsb_is_a_regression(tmp_path, tiny_bert):
    for name, score in (("train", 3.8), ("validation", 0.25)):
        write_parquet(tmp_path / f"{name}-00000-of-00001.parquet", sentence1=["A plane takes off."],
                      sentence2=["An air plane is taking off."], label=[score], idx=[0])
    task = dict(GLUE, glue_task="stsb", kind="regression")
    preprocess.preprocess("stsb", task, tmp_path, tmp_path / "t.parquet", tiny_bert)
    frame, meta = read(tmp_path / "t.parquet")
    assert frame["label"].tolist() == pytest.approx([3.8, 0.25]) and meta["label_names"] is None


@pytest.mark.parametrize("layout, message, where", [
    ({"train-0.parquet": {"premise": ["a"], "label": [0]}}, r"missing column\(s\) \['hypothesis'\]", "train-0.parquet"),
    ({"train-0.parquet": {"premise": ["a"], "hypothesis": ["b"], "label": [0]},
      "validation_matched-0.parquet": {"premise": ["a"], "hypothesis": ["b"], "label": [-1]}},
     "unknown class '-1'", "validation_matched-0.parquet: row 0"),
    ({"train-0.parquet": {"premise": ["a"], "hypothesis": [None], "label": [0]}},
     "no value in column", "train-0.parquet: row 0"),
    ({}, "no Parquet file matches", "train-*.parquet"),
])
def test_bad_glue_parquet_is_rejected_naming_file_and_row(tmp_path, layout, message, where):
    for name, columns in layout.items():
        write_parquet(tmp_path / name, **columns)
    for name in ("validation_matched-0.parquet", "validation_mismatched-0.parquet"):
        if not (tmp_path / name).exists():
            write_parquet(tmp_path / name, premise=["a"], hypothesis=["b"], label=[0])
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=message) as err:
        preprocess.preprocess("mnli", dict(GLUE, glue_task="mnli"), tmp_path, out)
    assert where in str(err.value) and not out.exists()


def test_a_glue_tsv_row_with_missing_fields_is_rejected(tmp_path):
    (tmp_path / "train.tsv").write_text("sentence\tlabel\nfine\t1\nbroken\n")
    with pytest.raises(InputError, match=r"train.tsv: line 3: 1 fields, expected 2"):
        preprocess.preprocess("sst2", dict(GLUE, glue_task="sst2", format="tsv"), tmp_path, tmp_path / "t.parquet")


def test_glue_stsb_as_a_classification_is_rejected(tmp_path):
    with pytest.raises(InputError, match="needs kind 'regression'"):
        preprocess.preprocess("stsb", dict(GLUE, glue_task="stsb"), tmp_path, tmp_path / "t.parquet")


TABLE = {"reader": "text-table", "kind": "classification", "max_length": 32, "delimiter": "\t",
         "split_fractions": [0.5, 0.25], "seed": 100}


def test_text_table_pairs_with_a_split_column(tmp_path, tiny_bert, tokenizer):
    (tmp_path / "pairs.tsv").write_text("q\ta\tanswer\twhere\nIs it red?\tIt is blue.\tno\ttrain\n"
                                        "Is it big?\tIt is huge.\tyes\tdev\nDoes it fly?\tIt flies.\tyes\ttest\n")
    task = dict(TABLE, file="pairs.tsv", text_columns=["q", "a"], label_column="answer", split_column="where",
                labels=["no", "yes"])
    preprocess.preprocess("qa", task, tmp_path, tmp_path / "t.parquet", tiny_bert)
    frame, meta = read(tmp_path / "t.parquet")
    assert frame["split"].to_dict() == {"pairs:2": "train", "pairs:3": "dev", "pairs:4": "test"}
    assert frame["label"].to_dict() == {"pairs:2": 0, "pairs:3": 1, "pairs:4": 1}
    words = tokenizer.convert_ids_to_tokens(list(frame.loc["pairs:2", "input_ids"]))
    assert words == ["[CLS]", "is", "it", "red", "?", "[SEP]", "it", "is", "blue", ".", "[SEP]"]
    assert list(frame.loc["pairs:2", "token_type_ids"]) == [0] * 6 + [1] * 5


def test_text_table_csv_without_split_column_is_split_at_random(tmp_path, tiny_bert):
    rows = "".join(f'"Review {i}, with a comma",{i % 2}\n' for i in range(8))
    (tmp_path / "reviews.csv").write_text("text,stars\n" + rows)
    task = dict(TABLE, file="reviews.csv", text_columns=["text"], label_column="stars", delimiter=",")
    preprocess.preprocess("reviews", task, tmp_path, tmp_path / "t.parquet", tiny_bert)
    frame, _ = read(tmp_path / "t.parquet")
    assert frame["split"].value_counts().to_dict() == {"train": 4, "dev": 2, "test": 2}


@pytest.mark.parametrize("content, message, record", [
    (b"sentence\tgrade\nGood.\t1\n", r"missing column\(s\) \['label'\]", "line 1"),
    (b"sentence,label\nGood.,1\n", "a single column found: is the delimiter '\\\\t' right", "line 1"),
    (b"sentence\tlabel\nGood.\t1\nCaf\xe9.\t0\n", "not UTF-8 text", "line 3"),
    (b"", "empty file", None),
    (b"sentence\tlabel\nGood.\t1\nBad.\tmaybe\n", "unknown class 'maybe'", "line 3"),
    (b"sentence\tlabel\tsplit\nGood.\t1\tvalidation\n", "unknown split 'validation'", "line 2"),
])
def test_bad_text_table_is_rejected_naming_file_and_line(tmp_path, tiny_bert, content, message, record):
    (tmp_path / "mine.tsv").write_bytes(content)
    task = dict(TABLE, file="mine.tsv", text_columns=["sentence"], label_column="label", labels=["0", "1"])
    if b"split" in content:
        task["split_column"] = "split"
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=message) as err:
        preprocess.preprocess("mine", task, tmp_path, out, tiny_bert)
    assert "mine.tsv" in str(err.value) and (record is None or f"mine.tsv: {record}:" in str(err.value))
    assert not out.exists()


LOCALIZATION = ["Cell.membrane", "Cytoplasm", "Endoplasmic.reticulum", "Extracellular", "Golgi.apparatus",
                "Lysosome/Vacuole", "Mitochondrion", "Nucleus", "Peroxisome", "Plastid"]
PROTEIN = "ARNDCQEGHILKMFPSTWYVXOUBZ"
PLUS_TASK = {"reader": "fasta", "prefix": "localization", "kind": "classification", "alphabet": PROTEIN,
             "labels": LOCALIZATION, "label_before": "-", "keep_ends": 500, "max_length": 512,
             "add_special_tokens": True}


def test_plus_localization_labels_and_the_500_plus_500_cut(tmp_path):
    long = "A" * 500 + "C" * 200 + "W" * 500
    (tmp_path / "localization_train.fa").write_text(f">P1 Cytoplasm-Nucleus\n{long[:600]}\n{long[600:]}\n"
                                                    ">P2 Cell.membrane-M\nMKV\n")
    (tmp_path / "localization_dev.fa").write_text(">P3 Lysosome/Vacuole-U\nMKV\n")
    (tmp_path / "localization_test.fa").write_text(">P4 Plastid-S\nMKV\n")
    preprocess.preprocess("loc", PLUS_TASK, tmp_path, tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert frame["label"].to_dict() == {"P1": 1, "P2": 0, "P3": 5, "P4": 9}  # Cytoplasm-Nucleus is Cytoplasm
    symbols = [meta["symbols"][i] for i in frame.loc["P1", "input_ids"]]
    assert symbols == ["[CLS]"] + ["A"] * 500 + ["W"] * 10 + ["[SEP]"]  # first 500 + last 500, then 512


def test_a_user_fasta_file_is_split_at_random(tmp_path):
    (tmp_path / "mine.fa").write_text("".join(f">s{i} {'yes' if i % 2 else 'no'}\nMKVL\n" for i in range(8)))
    task = dict(PLUS_TASK, file="mine.fa", labels=None, label_before=None, keep_ends=None,
                split_fractions=[0.5, 0.25], seed=100)
    preprocess.preprocess("mine", task, tmp_path, tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert frame["split"].value_counts().to_dict() == {"train": 4, "dev": 2, "test": 2}
    assert meta["label_names"] == ["no", "yes"]


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b">s1 yes\nMK\xffV\n", "not UTF-8 text"),
                                              (b"no header here\n", "not a FASTA file")])
def test_a_bad_user_fasta_file_is_rejected(tmp_path, content, message):
    (tmp_path / "mine.fa").write_bytes(content)
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=f"mine.fa: .*{message}"):
        preprocess.preprocess("mine", dict(PLUS_TASK, file="mine.fa", split_fractions=[0.5, 0.25], seed=1), tmp_path, out)
    assert not out.exists()


# PLUS's protein alphabet (seonwoo-min/PLUS, plus/data/alphabets.py, class Protein): 21 symbols,
# O read as K, U as C, B and Z as X, any other character as X.
PLUS_ALPHABET = {"alphabet": "ARNDCQEGHILKMFPSTWYVX", "alphabet_synonyms": {"O": "K", "U": "C", "B": "X", "Z": "X"},
                 "unknown_symbol": "X"}


def test_plus_alphabet_reads_synonyms_and_unknown_characters_as_plus_does(tmp_path, caplog):
    (tmp_path / "localization_train.fa").write_text(">P1 Cytoplasm-S\nMKOUBZJ*\n>P2 Nucleus-S\nmkv\n")
    (tmp_path / "localization_dev.fa").write_text(">P3 Plastid-S\nWY\n")
    (tmp_path / "localization_test.fa").write_text(">P4 Plastid-S\nAX\n")
    with caplog.at_level("INFO", logger="crossdisc.preprocess"):
        preprocess.preprocess("loc", {**PLUS_TASK, **PLUS_ALPHABET}, tmp_path, tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert meta["symbols"] == ["[PAD]", "[CLS]", "[SEP]", *"ARNDCQEGHILKMFPSTWYVX"]
    assert [meta["symbols"][i] for i in frame.loc["P1", "input_ids"]] == ["[CLS]", *"MKKCXXXX", "[SEP]"]
    # PLUS's own ids, Protein().encode(b"MKOUBZJ*"), are ours less the two specials after [PAD]
    assert [i - 2 for i in frame.loc["P1", "input_ids"][1:-1]] == [13, 12, 12, 5, 21, 21, 21, 21]
    assert [meta["symbols"][i] for i in frame.loc["P2", "input_ids"]] == ["[CLS]", *"MKV", "[SEP]"]
    assert "loc: symbols outside the alphabet read as 'X': {'*': 1, 'J': 1}" in caplog.text


@pytest.mark.parametrize("options", [{"alphabet": PROTEIN},
                                     {**PLUS_ALPHABET, "unknown_symbol": None}])  # synonyms, no unknown rule
def test_without_unknown_symbol_an_unknown_character_is_one_line_naming_file_and_record(tmp_path, options):
    (tmp_path / "localization_train.fa").write_text(">P1 Cytoplasm-S\nMKOUBZ\n>P2 Nucleus-S\nMKJV\n")
    (tmp_path / "localization_dev.fa").write_text(">P3 Plastid-S\nWY\n")
    (tmp_path / "localization_test.fa").write_text(">P4 Plastid-S\nAX\n")
    task = {key: value for key, value in {**PLUS_TASK, **options}.items() if value is not None}
    out = tmp_path / "t.parquet"
    result = subprocess.run([sys.executable, "-m", "crossdisc", "preprocess", "--task", "loc", "--spec",
                             json.dumps(task), "--raw", str(tmp_path), "--out", str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 1 and not out.exists()
    assert [line for line in result.stderr.splitlines() if "error" in line] == [
        f"crossdisc preprocess: error: {tmp_path / 'localization_train.fa'}: record 'P2': "
        "symbol 'J' is not in the task alphabet"]


DEEPLOC_TASK = {"reader": "fasta", "file": "deeploc_data.fasta", "kind": "classification", "alphabet": PROTEIN,
                "labels": LOCALIZATION, "label_before_last": "-", "drop_labels": ["Cytoplasm-Nucleus"],
                "test_marker": "test", "dev_size": 2, "keep_ends": 500, "max_length": 512, "add_special_tokens": True,
                "split_fractions": [0.9, 0.05], "seed": 100}


def test_deeploc_splits_by_its_test_field_and_leaves_out_two_location_proteins(tmp_path, caplog):
    task = dict(DEEPLOC_TASK, split_sizes={"train": 5, "dev": 2, "test": 4})
    with caplog.at_level("INFO", logger="crossdisc.preprocess"):
        preprocess.preprocess("loc", task, DATA / "deeploc", tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert "deeploc_data.fasta: 3 records with a label in ['Cytoplasm-Nucleus'] left out" in caplog.text
    assert not {"P63033", "Q9Y2K1", "O95479"} & set(frame.index)  # Cytoplasm-Nucleus, in train and test
    assert set(frame.index[frame["split"] == "test"]) == {"Q9H400", "O14625", "Q6NUK4", "P12270"}
    assert set(frame.index[frame["split"] == "dev"]) == {"P22462-2", "P35613"}  # drawn with seed 100
    assert frame["label"].to_dict() == {"Q9H400": 0, "Q5I0E9": 1, "P22462-2": 7, "Q8N4C9": 5, "O14625": 3,
                                        "P35613": 2, "P51580": 4, "Q6NUK4": 6, "P49748": 8, "Q3E7K4": 9,
                                        "P12270": 7}
    assert len(frame.loc["P22462-2", "input_ids"]) == 512  # 1,100 residues: first 500 + last 500, then cut


def test_deeploc_two_location_label_is_not_cut_to_cytoplasm(tmp_path):
    task = dict(DEEPLOC_TASK, labels=None, drop_labels=[])
    preprocess.preprocess("loc", task, DATA / "deeploc", tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert meta["label_names"][frame.loc["Q9Y2K1", "label"]] == "Cytoplasm-Nucleus"
    assert meta["label_names"][frame.loc["Q5I0E9", "label"]] == "Cytoplasm"


@pytest.mark.parametrize("content, change, message", [
    (">a Nucleus-S test\nMKV\n>b Plastid-S\nMKV\n", {"dev_size": 2},
     "dev_size 2 is more than the 1 records outside the test split"),
    (">a Nucleus-S\nMKV\n>b Plastid-S\nMKV\n", {}, "no header has the test marker 'test' as its third field"),
    (">a Nucleus-S test\nMKV\n>b Plastid-S new_test_set\nMKV\n", {},
     "record 'b': third header field 'new_test_set' is not the test marker 'test'"),
])
def test_a_bad_deeploc_file_is_rejected_naming_it(tmp_path, content, change, message):
    (tmp_path / "deeploc_data.fasta").write_text(content)
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=f"deeploc_data.fasta: {message}"):
        preprocess.preprocess("loc", {**DEEPLOC_TASK, "dev_size": 0, **change}, tmp_path, out)
    assert not out.exists()


TAPE_TASK = {"reader": "tape-json", "kind": "regression", "alphabet": PROTEIN, "add_special_tokens": True}
FLUORESCENCE = dict(TAPE_TASK, directory="fluorescence", prefix="fluorescence", label_field="log_fluorescence",
                    max_length=256)
STABILITY = dict(TAPE_TASK, directory="stability", prefix="stability", label_field="stability_score", max_length=50)


def test_tape_archive_unpacks_into_its_task_folder_and_labels_come_out_of_one_element_lists(tmp_path):
    # packed as TAPE's data_raw_pytorch/fluorescence.tar.gz: a top-level fluorescence/ folder
    with tarfile.open(tmp_path / "fluorescence.tar.gz", "w:gz") as archive:
        archive.add(DATA / "tape" / "fluorescence", arcname="fluorescence")
    spec = {"type": "url", "extract": True, "files": [{"url": (tmp_path / "fluorescence.tar.gz").as_uri()}]}
    download.build_source(spec, tmp_path / "raw")
    task = dict(FLUORESCENCE, split_sizes={"train": 6, "dev": 2, "test": 3})
    preprocess.preprocess("fluorescence", task, tmp_path / "raw", tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    records = json.loads((DATA / "tape" / "fluorescence" / "fluorescence_valid.json").read_text())
    assert frame.loc["fluorescence_valid:1", "label"] == pytest.approx(records[1]["log_fluorescence"][0])
    assert frame.loc["fluorescence_valid:1", "split"] == "dev"  # TAPE's valid is the dev split
    assert meta["kind"] == "regression" and meta["label_names"] is None
    assert set(frame["input_ids"].map(len)) == {239}  # the 237 residues of GFP within [CLS] x [SEP]


def test_tape_stability_is_read_from_its_folder_with_its_own_label_field(tmp_path):
    preprocess.preprocess("stability", STABILITY, DATA / "tape", tmp_path / "t.parquet")
    frame, _ = read(tmp_path / "t.parquet")
    records = json.loads((DATA / "tape" / "stability" / "stability_train.json").read_text())
    labels = frame.loc[[f"stability_train:{i}" for i in range(len(records))], "label"]
    assert labels.tolist() == pytest.approx([r["stability_score"][0] for r in records])
    assert frame["split"].value_counts().to_dict() == {"train": 5, "dev": 2, "test": 2}


def test_tape_sequences_read_with_plus_alphabet(tmp_path):
    (tmp_path / "fluorescence").mkdir()
    for suffix in ("train", "valid", "test"):
        records = [{"primary": "SKGEEUFTOBZJ", "log_fluorescence": [3.5]}]
        (tmp_path / "fluorescence" / f"fluorescence_{suffix}.json").write_text(json.dumps(records))
    preprocess.preprocess("fluorescence", {**FLUORESCENCE, **PLUS_ALPHABET}, tmp_path, tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    symbols = [meta["symbols"][i] for i in frame.loc["fluorescence_train:0", "input_ids"]]
    assert symbols == ["[CLS]", *"SKGEECFTKXXX", "[SEP]"]


def test_split_sizes_other_than_configured_stop_preprocessing(tmp_path):
    task = dict(STABILITY, split_sizes={"train": 53614, "dev": 2512, "test": 12851})
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=r"task 'stability': split sizes \{'train': 5, 'dev': 2, 'test': 2\} differ "
                                         r"from the configured split_sizes") as err:
        preprocess.preprocess("stability", task, DATA / "tape", out)
    assert "\n" not in str(err.value) and not out.exists()


@pytest.mark.parametrize("record, message", [
    ({"primary": "MKV", "log_fluorescence": [3.1, 2.0]}, r"'log_fluorescence' is \[3.1, 2.0\], not a one-element list"),
    ({"primary": "MKV", "log_fluorescence": 3.1}, "'log_fluorescence' is 3.1, not a one-element list"),
    ({"primary": "MKV"}, r"missing field\(s\) \['log_fluorescence'\]"),
    ({"primary": "MKV", "log_fluorescence": ["3.1"]}, "'log_fluorescence' holds '3.1', not a number"),
    ({"primary": "MKV", "log_fluorescence": [None]}, "'log_fluorescence' holds None, not a number"),
    ({"primary": "MKJ", "log_fluorescence": [3.1]}, "symbol 'J' is not in the task alphabet"),
    ({"primary": "MKV", "log_fluorescence": [float("nan")]}, "label 'nan' is not a finite number"),
])
def test_a_bad_tape_record_is_rejected_naming_file_and_record(tmp_path, record, message):
    (tmp_path / "fluorescence").mkdir()
    good = {"primary": "MKV", "log_fluorescence": [1.5]}
    for suffix in ("train", "valid", "test"):
        rows = [good, record] if suffix == "train" else [good]
        (tmp_path / "fluorescence" / f"fluorescence_{suffix}.json").write_text(json.dumps(rows))
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=f"fluorescence_train.json: record 1: {message}"):
        preprocess.preprocess("fluorescence", FLUORESCENCE, tmp_path, out)
    assert not out.exists()


SPLICE_TASK = {"reader": "uci-splice", "file": "splice.data", "kind": "classification", "max_length": 62,
               "add_special_tokens": True, "split_fractions": [0.9, 0.05], "seed": 100}


def test_uci_splice_keeps_ambiguity_codes_and_splits_90_5_5(tmp_path):
    rows = [f"{['EI', 'IE', 'N'][i % 3]},{' ' * (i % 4)}NAME-{i},  {'ACGT' * 14}{'NDRS'[i % 4]}ACG\n" for i in range(20)]
    (tmp_path / "splice.data").write_text("".join(rows))
    preprocess.preprocess("splice", SPLICE_TASK, tmp_path, tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert meta["symbols"] == ["[PAD]", "[CLS]", "[SEP]", *"ACGTNDRS"]
    assert meta["label_names"] == ["EI", "IE", "N"]
    assert frame.loc["NAME-1", "label"] == 1 and len(frame.loc["NAME-1", "input_ids"]) == 62
    assert meta["symbols"][frame.loc["NAME-3", "input_ids"][57]] == "S"
    assert frame["split"].value_counts().to_dict() == {"train": 18, "dev": 1, "test": 1}


def test_uci_splice_keeps_repeated_names_and_their_positions_in_the_split(tmp_path, caplog):
    rows = [f"{['EI', 'IE', 'N'][i % 3]},  NAME-{i},  {'ACGT' * 15}\n" for i in range(20)]
    rows[6] = rows[4]  # an exact duplicate record, as UCI's file has 12
    rows[9] = rows[2].replace("ACGT,", "TTTT,").replace("ACGT\n", "TTTT\n")  # the name again, other bases
    (tmp_path / "splice.data").write_text("".join(rows))
    with caplog.at_level("INFO", logger="crossdisc.preprocess"):
        preprocess.preprocess("splice", SPLICE_TASK, tmp_path, tmp_path / "t.parquet")
    frame, _ = read(tmp_path / "t.parquet")
    assert len(frame) == 20 and {"NAME-4", "NAME-4:7", "NAME-2", "NAME-2:10"} <= set(frame.index)
    assert "2 instance names occur more than once, 1 of them only as exact duplicate records" in caplog.text
    assert caplog.records[-1].levelname == "WARNING"  # one repeated name is not a duplicate record
    # the split follows the line, as the authors' shuffle of all records: renaming changes nothing
    unique = [row.replace(",  NAME-", ",  OTHER-") if i in (6, 9) else row for i, row in enumerate(rows)]
    (tmp_path / "splice.data").write_text("".join(unique))
    preprocess.preprocess("splice", SPLICE_TASK, tmp_path, tmp_path / "u.parquet")
    other, _ = tokens.read_token_file(tmp_path / "u.parquet")
    assert frame["split"].tolist() == other["split"].tolist()


def test_uci_splice_lines_as_the_real_file_has_them(tmp_path, caplog):
    """Lines of UCI's splice.data (= Hilbert-CNN's splice.txt): space-padded fields, repeated
    names as exact duplicate records, ambiguity codes; every record is kept."""
    with caplog.at_level("INFO", logger="crossdisc.preprocess"):
        preprocess.preprocess("splice", dict(SPLICE_TASK, file="splice.txt"), DATA / "splice", tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert len(frame) == 25 and frame["label"].value_counts().to_dict() == {0: 16, 1: 5, 2: 4}
    assert {"HUMALBGC-DONOR-17044", "HUMALBGC-DONOR-17044:7", "HUMMYLCA-DONOR-644:15",
            "HUMALBGC-ACCEPTOR-18496:18"} <= set(frame.index)
    assert "4 instance names occur more than once, 4 of them only as exact duplicate records" in caplog.text
    assert [r.levelname for r in caplog.records if "instance names" in r.getMessage()] == ["INFO"]
    assert set(frame["input_ids"].map(len)) == {62}  # 60 bases within [CLS] x [SEP]
    symbols = {meta["symbols"][i] for ids in frame["input_ids"] for i in ids}
    assert {"N", "D", "R", "S"} <= symbols
    assert meta["symbols"][frame.loc["HUMMHB27B-ACCEPTOR-1202", "input_ids"][1]] == "D"
    assert frame["split"].value_counts().to_dict() == {"train": 22, "dev": 1, "test": 2}


@pytest.mark.parametrize("line, message", [("XX, NAME-2, ACGT", "unknown class 'XX'"),
                                           ("EI, NAME-2", "2 fields, expected 3"),
                                           ("EI, NAME-2, ACGTQ", "symbol 'Q' is not in the task alphabet")])
def test_bad_uci_splice_rows_are_rejected_naming_the_line(tmp_path, line, message):
    (tmp_path / "splice.data").write_text(f"EI, NAME-1, ACGT\n{line}\n")
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=f"splice.data: line 2: {message}"):
        preprocess.preprocess("splice", SPLICE_TASK, tmp_path, out)
    assert not out.exists()


HISTONE_TASK = {"reader": "hilbert-cnn", "file": "H3.txt", "kind": "classification", "alphabet": "ACGT",
                "max_length": 502, "add_special_tokens": True, "split_fractions": [0.9, 0.05], "seed": 100}


def test_hilbert_cnn_ids_lose_the_fasta_mark_and_trailing_space(tmp_path):
    preprocess.preprocess("h3", HISTONE_TASK, DATA / "hilbert-cnn", tmp_path / "t.parquet")
    frame, meta = read(tmp_path / "t.parquet")
    assert list(frame.index) == [f"H3_{i:04d}" for i in range(1, 21)]  # not '>H3_0001 '
    assert set(frame["input_ids"].map(len)) == {502}  # 500 bases within [CLS] x [SEP]
    assert meta["label_names"] == ["0", "1"] and frame.loc["H3_0001", "label"] == 1  # the file's ids, as the authors
    assert frame["split"].value_counts().to_dict() == {"train": 18, "dev": 1, "test": 1}


def test_a_stray_label_in_a_binary_histone_file_is_an_error_not_a_third_class(tmp_path):
    (tmp_path / "H3.txt").write_text(">H3_0001\nACGT\n1\n>H3_0002\nACGA\n2\n")
    with pytest.raises(InputError, match=r"H3.txt: line 4: unknown class '2' \(expected one of \['0', '1'\]\)"):
        preprocess.preprocess("h3", HISTONE_TASK, tmp_path, tmp_path / "t.parquet")


MAESTRO_TASK = {"reader": "midi", "kind": "vote_classification", "segment_length": 4, "max_length": 4,
                "instruments": "first", "segmenting": "onset", "add_special_tokens": False,
                "metadata": "maestro-v1.0.0.json"}
MAESTRO_ROW = {"canonical_title": "Piece", "year": 2004, "audio_filename": "", "duration": 1.0}


def write_maestro_v1(raw, n=5):
    (raw / "2004").mkdir(parents=True)
    records = []
    for i in range(n):
        write_midi(raw / "2004" / f"p{i}.midi", [40 + i + k for k in range(4 * (i + 1))])
        records.append(dict(MAESTRO_ROW, canonical_composer=["Bach", "Chopin"][i % 2], midi_filename=f"2004/p{i}.midi",
                            split=["train", "validation", "test"][i % 3]))
    (raw / "maestro-v1.0.0.json").write_text(json.dumps(records))


def test_maestro_v1_json_parsed_by_workers_keeps_metadata_order(tmp_path):
    write_maestro_v1(tmp_path)
    preprocess.preprocess("music", dict(MAESTRO_TASK, workers=1), tmp_path, tmp_path / "one.parquet")
    preprocess.preprocess("music", dict(MAESTRO_TASK, workers=2), tmp_path, tmp_path / "two.parquet")
    one, meta = tokens.read_token_file(tmp_path / "one.parquet")
    two, _ = tokens.read_token_file(tmp_path / "two.parquet")
    pd.testing.assert_frame_equal(one, two)
    assert one["group"].tolist() == ["2004/p0.midi"] + ["2004/p1.midi"] * 2 + ["2004/p2.midi"] * 3 \
        + ["2004/p3.midi"] * 4 + ["2004/p4.midi"] * 5
    assert meta["label_names"] == ["Bach", "Chopin"]
    assert one.drop_duplicates("group")["split"].tolist() == ["train", "dev", "test", "train", "dev"]


def test_a_broken_midi_file_in_a_worker_names_the_file(tmp_path):
    write_maestro_v1(tmp_path, n=3)
    (tmp_path / "2004" / "p1.midi").write_bytes(b"not midi")
    with pytest.raises(InputError, match="p1.midi: not a readable MIDI file"):
        preprocess.preprocess("music", dict(MAESTRO_TASK, workers=2), tmp_path, tmp_path / "t.parquet")


def test_maestro_json_record_without_a_column_is_rejected(tmp_path):
    (tmp_path / "maestro-v1.0.0.json").write_text(json.dumps([{"midi_filename": "a.midi"}]))
    with pytest.raises(InputError, match=r"maestro-v1.0.0.json: record 0: missing column\(s\) \['canonical_composer'\]"):
        preprocess.preprocess("music", MAESTRO_TASK, tmp_path, tmp_path / "t.parquet")


USER_MIDI = dict(MAESTRO_TASK, metadata="labels.csv", label_column="label", split_fractions=[0.5, 0.25], seed=100)


def test_a_user_midi_directory_with_a_label_csv(tmp_path):
    (tmp_path / "tunes").mkdir()
    lines = ["midi_filename,label"]
    for i in range(8):
        write_midi(tmp_path / "tunes" / f"t{i}.mid", [60 + i] * 8)
        lines.append(f"tunes/t{i}.mid,{'jig' if i % 2 else 'reel'}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    preprocess.preprocess("tunes", USER_MIDI, tmp_path, tmp_path / "t.parquet")
    frame, meta = tokens.read_token_file(tmp_path / "t.parquet")
    assert meta["label_names"] == ["reel", "jig"]
    pieces = frame.drop_duplicates("group")
    assert pieces["split"].value_counts().to_dict() == {"train": 4, "dev": 2, "test": 2}
    assert frame.groupby("group")["split"].nunique().max() == 1  # a piece's segments share a split


@pytest.mark.parametrize("csv, message", [
    ("midi_filename,label\ntunes/missing.mid,jig\n", "line 2: missing MIDI file 'tunes/missing.mid'"),
    ("midi_filename;label\ntunes/t0.mid;jig\n", "line 1: a single column found"),
    ("midi_filename,composer\ntunes/t0.mid,jig\n", r"line 1: missing column\(s\) \['label'\]"),
    ("midi_filename,label,split\ntunes/t0.mid,jig,holdout\n", "line 2: unknown split 'holdout'"),
])
def test_a_bad_user_midi_csv_is_rejected_naming_the_line(tmp_path, csv, message):
    (tmp_path / "tunes").mkdir()
    write_midi(tmp_path / "tunes" / "t0.mid", [60] * 8)
    (tmp_path / "labels.csv").write_text(csv)
    out = tmp_path / "t.parquet"
    with pytest.raises(InputError, match=f"labels.csv: {message}"):
        preprocess.preprocess("tunes", USER_MIDI, tmp_path, out)
    assert not out.exists()
