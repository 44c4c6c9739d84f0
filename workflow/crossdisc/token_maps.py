"""Token maps: how the ids of a task's token file become the ids a model reads.

A map is a lookup table `model_id = table[input_id]`, applied at batch time to every position,
padding included, as the authors did. Strategies (names as in the config):

- text tasks (the token file holds the model tokenizer's ids):
  `identity`; `shift-<c>`: (id + c) mod V (the paper's "shift c"); `random-shift`: one fixed,
  seeded random permutation of the whole vocabulary.
- non-text tasks (the token file holds the discipline's own ids, specials first):
  `most-frequent`: each symbol to one of the most frequent subword tokens of a text corpus (the
  assignment the paper reports), specials to the model's own [PAD]/[CLS]/[SEP];
  `random-real`: the authors' table, shuffle(range(1000, V)) + range(0, 1000) read at the input
  id, so every symbol and special lands on a real token; `unused`: symbols to BERT's [unusedN]
  slots, specials to the model's own (the paper's degrading ablation).
  A `+model-specials` suffix on a non-text strategy sends [PAD]/[CLS]/[SEP] to the model's own
  special tokens, so `random-real+model-specials` compares against the authors' table.
- `native`: the task's own ids unchanged, for a model that reads the symbols themselves
  (Hilbert-CNN); it has no tokenizer.
"""

import re
from pathlib import Path

import numpy as np
import pandas as pd

from . import tokens
from .errors import InputError
from .files import atomic_path

TEXT_STRATEGIES = ("identity", "shift-<c>", "random-shift")
NATIVE_STRATEGIES = ("most-frequent", "random-real", "unused")
NATIVE = "native"  # a task's own ids, for a model without a tokenizer
MODEL_SPECIALS = "+model-specials"


def _model_specials(tokenizer):
    return [tokenizer.pad_token_id, tokenizer.cls_token_id, tokenizer.sep_token_id]


def build_table(strategy, meta, tokenizer, seed, token_counts=None):
    """The lookup table (np.int64 array indexed by input id) of one strategy for one task;
    `tokenizer` is None for `native` alone."""
    if strategy == NATIVE:
        _require(meta["vocabulary"] == "native", strategy, meta)
        return np.arange(meta["vocab_size"])
    if strategy.endswith(MODEL_SPECIALS):
        table = build_table(strategy.removesuffix(MODEL_SPECIALS), meta, tokenizer, seed, token_counts)
        _require(meta["vocabulary"] == "native", strategy, meta)
        specials = _model_specials(tokenizer)
        if set(specials) & set(table[len(specials):]):
            raise InputError(meta["task"], f"'{strategy}': a symbol already maps to a model special token")
        table[: len(specials)] = specials
        return table
    vocab_size = len(tokenizer)
    text = meta["vocabulary"] == "text"
    if text and meta["vocab_size"] != vocab_size:
        raise InputError(meta["task"], f"token file vocabulary ({meta['vocab_size']}) differs from the model's ({vocab_size})")
    if strategy == "identity":
        if meta["vocab_size"] > vocab_size:
            raise InputError(meta["task"], "identity map needs the task vocabulary to fit the model's")
        return np.arange(meta["vocab_size"])
    if shift := re.fullmatch(r"shift-(\d+)", strategy):
        _require(text, strategy, meta)
        return (np.arange(vocab_size) + int(shift.group(1))) % vocab_size
    if strategy == "random-shift":
        _require(text, strategy, meta)
        return np.random.default_rng(seed).permutation(vocab_size)
    _require(not text, strategy, meta)
    n_symbols = meta["vocab_size"] - len(tokens.NATIVE_SPECIALS)
    if strategy == "random-real":
        table = np.concatenate([np.random.default_rng(seed).permutation(np.arange(1000, vocab_size)), np.arange(1000)])
        return table[: meta["vocab_size"]]
    if strategy == "most-frequent":
        specials = set(tokenizer.all_special_ids)
        ranked = [i for i in token_counts.sort_values(["count", "id"], ascending=[False, True])["id"] if i not in specials]
        if len(ranked) < n_symbols:
            raise InputError(meta["task"], f"corpus has {len(ranked)} distinct tokens, fewer than {n_symbols} symbols")
        return np.array(_model_specials(tokenizer) + ranked[:n_symbols])
    if strategy == "unused":
        unused = tokenizer.convert_tokens_to_ids([f"[unused{i}]" for i in range(n_symbols)])
        if tokenizer.unk_token_id in unused:
            raise InputError(meta["task"], f"the model vocabulary has fewer than {n_symbols} [unusedN] tokens")
        return np.array(_model_specials(tokenizer) + unused)
    raise InputError(meta["task"], f"unknown token map '{strategy}' (text: {TEXT_STRATEGIES}; non-text: "
                                   f"{NATIVE_STRATEGIES}, {NATIVE})")


def _require(ok, strategy, meta):
    if not ok:
        raise InputError(meta["task"], f"token map '{strategy}' does not apply to a {meta['vocabulary']} vocabulary")


def write_table(path, table, meta, tokenizer):
    """Save a map as an auditable table: input id and symbol, model id and token (without a
    tokenizer, the model reads the symbols)."""
    inputs = meta.get("symbols") or tokenizer.convert_ids_to_tokens(list(range(len(table))))
    outputs = tokenizer.convert_ids_to_tokens(table.tolist()) if tokenizer else [inputs[i] for i in table]
    frame = pd.DataFrame({"input_id": np.arange(len(table)), "input_token": inputs,
                          "model_id": table, "model_token": outputs})
    frame.attrs["crossdisc"] = {"task": meta.get("task"), "vocabulary": meta.get("vocabulary")}  # what it maps
    with atomic_path(path) as tmp:
        frame.to_parquet(tmp, index=False)


def read_table(path, meta=None):
    """The map's model ids by input id; with `meta`, the metadata of the token file it is to map,
    checked to be the task (and size) the map was built for."""
    if not Path(path).is_file():
        raise InputError(path, "no such token map (crossdisc token-map writes one)")
    frame = pd.read_parquet(path, columns=["model_id"])
    if meta is not None:
        built_for = frame.attrs.get("crossdisc", {}).get("task")
        if built_for is not None and built_for != meta["task"]:
            raise InputError(path, f"built for task '{built_for}', not '{meta['task']}'")
        if len(frame) != meta["vocab_size"]:
            raise InputError(path, f"maps {len(frame)} ids; the token file of '{meta['task']}' has {meta['vocab_size']}")
    return frame["model_id"].to_numpy()


def count_tokens(corpus_path, tokenizer):
    """Token frequencies of a prepared corpus (its manifest: duplicates dropped; checked against the
    tokenizer) under the model tokenizer, for `most-frequent`, counted a row group at a time."""
    from . import corpus

    corpus.check_tokenizer(corpus_path, tokenizer)
    counts = np.zeros(len(tokenizer), dtype=np.int64)
    for ids in corpus.token_ids(corpus_path):
        counts += np.bincount(ids, minlength=len(counts))
    return pd.DataFrame({"id": np.arange(len(counts)), "count": counts})
