"""Models: materialise a model source into a local directory, and build it with a given init.

A model directory holds safetensors weights, its config and its tokenizer. Loading never runs
remote code. A hub repository with pickled weights only (`pytorch_model.bin`, e.g. the MultiBERTs
checkpoints) is converted once, at fetch time: the file is unpickled only after its sha256 matched,
and then by `torch.load(weights_only=True)`, which builds tensors and refuses any other object.

A model family built from its architecture alone (`source: architecture`: Hilbert-CNN, the paper's
DNA baseline) has a directory with its config.json only, which names its `family`.
"""

import importlib
import json
import shutil
from pathlib import Path

from .errors import InputError
from .files import atomic_dir, sha256_of

MODEL_FILES = ("config.json", "model.safetensors", "vocab.txt", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "spiece.model", "merges.txt", "vocab.json")
PICKLED_WEIGHTS = "pytorch_model.bin"
INITS = ("pretrained", "scratch", "re-emb", "scratch+pretrained-pos")
ARCHITECTURE_CONFIG = "config.json"
ARCHITECTURE_KEYS = ("family", "kmer")  # what a `source: architecture` entry says of its model


def _package_dir(spec):
    module = importlib.import_module(spec["package"])
    return Path(module.__file__).parent / spec.get("subdir", "model")


def _hub_dir(spec):
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(spec["id"], revision=spec.get("revision"), allow_patterns=list(MODEL_FILES)))


LOCATORS = {"package": _package_dir, "hub": _hub_dir, "local": lambda spec: Path(spec["path"])}


def _hub_pickled_weights(spec, snapshot):
    """Download a hub repository's pytorch_model.bin (at the commit of `snapshot`) and return it with
    the sha256 it must have: the config's, else the one the hub lists for the LFS file."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError

    where = f"{spec['id']}@{snapshot.name}"
    url = hf_hub_url(spec["id"], PICKLED_WEIGHTS, revision=snapshot.name)
    try:
        listed = (get_hf_file_metadata(url).etag or "").strip('"')
    except EntryNotFoundError:
        raise InputError(where, f"neither model.safetensors nor {PICKLED_WEIGHTS} in the repository") from None
    expected = spec.get("sha256") or listed
    if len(expected) != 64 or expected.strip("0123456789abcdef"):
        raise InputError(where, f"{PICKLED_WEIGHTS} has no sha256 on the hub: give `sha256` in the config")
    path = Path(hf_hub_download(spec["id"], PICKLED_WEIGHTS, revision=snapshot.name))
    return path, expected


def _check_sha256(path, expected):
    if expected and (actual := sha256_of(path)) != expected:
        raise InputError(path, f"sha256 mismatch: expected {expected}, got {actual}")


def _safetensors_from_pickle(pickled, sha256, out):
    """Write the tensors of a checked pytorch_model.bin as safetensors (shared tensors, e.g. BERT's
    tied output embeddings, stored once each as safetensors requires)."""
    import pickle

    import torch
    from safetensors.torch import save_file

    try:
        state = torch.load(pickled, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError) as err:
        raise InputError(pickled, f"not a plain tensor checkpoint, refused: {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(pickled, "not a state dict of tensors, refused")
    seen, tensors = set(), {}
    for name, tensor in state.items():
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        tensors[name] = tensor.clone().contiguous() if key in seen else tensor.contiguous()
        seen.add(key)
    save_file(tensors, out, metadata={"format": "pt", "converted_from": PICKLED_WEIGHTS, "sha256": sha256})


def fetch_model(spec, out_dir):
    """Copy a model's weights, config and tokenizer into out_dir, verifying the weights' sha256
    (`sha256`: of model.safetensors, or of pytorch_model.bin for a hub repository without one); for
    `source: architecture`, write the family's config alone: there is nothing to fetch."""
    if spec["source"] == "architecture":
        with atomic_dir(out_dir) as tmp:
            config = {key: spec[key] for key in ARCHITECTURE_KEYS if key in spec}
            (tmp / ARCHITECTURE_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        return
    source = LOCATORS[spec["source"]](spec)
    weights = source / "model.safetensors"
    pickled = None
    if weights.is_file():
        _check_sha256(weights, spec.get("sha256"))
    elif spec["source"] == "hub":
        pickled, expected = _hub_pickled_weights(spec, source)
        _check_sha256(pickled, expected)  # before a single byte of it is unpickled
    else:
        raise InputError(source, "no model.safetensors: only safetensors weights are loaded")
    with atomic_dir(out_dir) as tmp:
        for name in MODEL_FILES:
            if (source / name).is_file():
                shutil.copy2(source / name, tmp / name)
        if pickled:
            _safetensors_from_pickle(pickled, expected, tmp / "model.safetensors")
            print(f"converted {PICKLED_WEIGHTS} (sha256 {expected}) to model.safetensors")


def require_model_dir(model_dir):
    """A model is a local directory here (`crossdisc fetch-model` writes it): a missing one is one
    line, not the hub's 'Repo id must be in the form ...'."""
    if not Path(model_dir).is_dir():
        raise InputError(model_dir, "no such model directory (crossdisc fetch-model writes one)")


def load_tokenizer(model_dir):
    from transformers import AutoTokenizer

    require_model_dir(model_dir)
    return AutoTokenizer.from_pretrained(model_dir, trust_remote_code=False)


def architecture_family(model_dir):
    """The family of a model directory written for `source: architecture`, else None."""
    path = Path(model_dir) / ARCHITECTURE_CONFIG
    return json.loads(path.read_text()).get("family") if path.is_file() else None


def build_classifier(model_dir, init, num_labels, seed, symbols=None, longest=None):
    """A sequence classifier (num_labels 1 = regression) from model_dir under one of INITS:
    `pretrained` loads every weight; `scratch` is the architecture's own default initialisation
    (BERT: N(0, 0.02^2)); `re-emb` re-initialises only the word embeddings of the pretrained model;
    `scratch+pretrained-pos` keeps the pretrained position and token-type embeddings.

    A family built from its architecture (Hilbert-CNN) is `scratch` only and reads the task's own
    symbols: `symbols` is the native vocabulary (id -> symbol) of the token file, `longest` its
    longest sequence in tokens, which sizes the input."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if init not in INITS:
        raise InputError(model_dir, f"unknown init '{init}' (expected one of {', '.join(INITS)})")
    require_model_dir(model_dir)
    if family := architecture_family(model_dir):
        return _build_family(model_dir, family, init, num_labels, seed, symbols, longest)
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


def _build_family(model_dir, family, init, num_labels, seed, symbols, longest):
    import torch

    from . import hilbert_cnn

    if family != hilbert_cnn.FAMILY:
        raise InputError(model_dir, f"unknown model family '{family}' (expected {hilbert_cnn.FAMILY})")
    if init != "scratch":
        raise InputError(model_dir, f"a {family} model is built from its architecture: init 'scratch' only, "
                                    f"not '{init}'")
    if symbols is None:
        raise InputError(model_dir, f"a {family} model reads a task's own symbols: the token file has a text "
                                    "vocabulary")
    config = json.loads((Path(model_dir) / ARCHITECTURE_CONFIG).read_text())
    torch.manual_seed(seed)
    return hilbert_cnn.HilbertCNN(symbols, longest, num_labels, kmer=config["kmer"])
