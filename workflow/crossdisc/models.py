"""Models: materialise a model source into a local directory, and build it with a given init.

A model directory holds safetensors weights, its config and its tokenizer. Loading never runs
remote code and never reads pickled weights.
"""

import importlib
import shutil
from pathlib import Path

from .errors import InputError
from .files import atomic_dir, sha256_of

MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "spiece.model", "merges.txt", "vocab.json")
INITS = ("pretrained", "scratch", "re-emb", "scratch+pretrained-pos")


def _package_dir(spec):
    module = importlib.import_module(spec["package"])
    return Path(module.__file__).parent / spec.get("subdir", "model")


def _hub_dir(spec):
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(spec["id"], revision=spec.get("revision"), allow_patterns=list(MODEL_FILES)))


LOCATORS = {"package": _package_dir, "hub": _hub_dir, "local": lambda spec: Path(spec["path"])}


def fetch_model(spec, out_dir):
    """Copy a model's weights, config and tokenizer into out_dir, verifying the weights' sha256."""
    source = LOCATORS[spec["source"]](spec)
    weights = source / "model.safetensors"
    if not weights.is_file():
        raise InputError(source, "no model.safetensors: only safetensors weights are loaded")
    if spec.get("sha256") and sha256_of(weights) != spec["sha256"]:
        raise InputError(weights, f"sha256 mismatch: expected {spec['sha256']}, got {sha256_of(weights)}")
    with atomic_dir(out_dir) as tmp:
        for name in MODEL_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)


def load_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)


def build_classifier(model_dir, init, num_labels, seed):
    """A sequence classifier (num_labels 1 = regression) from model_dir under one of INITS:
    `pretrained` loads every weight; `scratch` is the architecture's own default initialisation
    (BERT: N(0, 0.02^2)); `re-emb` re-initialises only the word embeddings of the pretrained model;
    `scratch+pretrained-pos` keeps the pretrained position and token-type embeddings."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if init not in INITS:
        raise InputError(model_dir, f"unknown init '{init}' (expected one of {', '.join(INITS)})")
    config = AutoConfig.from_pretrained(model_dir, num_labels=num_labels, trust_remote_code=False,
                                        problem_type="regression" if num_labels == 1 else None)
    torch.manual_seed(seed)
    if init in ("scratch", "scratch+pretrained-pos"):
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_dir, config=config, use_safetensors=True, trust_remote_code=False)
    if init == "re-emb":
        words = model.get_input_embeddings().weight
        with torch.no_grad():
            words.normal_(0.0, config.initializer_range)
            if config.pad_token_id is not None:
                words[config.pad_token_id].zero_()
    if init == "scratch+pretrained-pos":
        pretrained = AutoModelForSequenceClassification.from_pretrained(
            model_dir, config=config, use_safetensors=True, trust_remote_code=False)
        keep = ("position_embeddings", "token_type_embeddings")
        state = {k: v for k, v in pretrained.state_dict().items() if k.endswith(tuple(f"{n}.weight" for n in keep))}
        model.load_state_dict(state, strict=False)
    return model
