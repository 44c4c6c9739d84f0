"""Hilbert-CNN, the paper's discipline-specific DNA model, as a model family of the engine: the
Hilbert-curve layout and k-mer encoding of its authors' code (github Doulrs/Hilbert-CNN,
functions.py), the network's size against the paper's 961K, and a run through the real CLI on the
test config's DNA task."""

import itertools
import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import TEST_CONFIG
from crossdisc import cli, hilbert_cnn, token_maps, tokens
from crossdisc.errors import InputError
from crossdisc.grid import Grid
from crossdisc.models import build_classifier

ARCHITECTURE = {"source": "architecture", "family": "hilbert-cnn", "kmer": 4}
VOCABULARY = tokens.native_vocabulary("ACGT")  # [PAD] [CLS] [SEP] A C G T


def ids_of(sequence):
    return [VOCABULARY.index(base) for base in sequence]


def hilbert_curve_rows(n):
    return hilbert_cnn.hilbert_curve(n).tolist()


def build_model(longest, labels=2):
    return hilbert_cnn.HilbertCNN(VOCABULARY, longest, labels)


def test_the_order_4_curve_is_the_authors_recursion_drawn_by_hand():
    # hilbert_curve(2) = [[0, 1], [3, 2]]; then a = flipud(rot90(t)), b = t + 4, c = t + 8,
    # d = flipud(rot90(t, -1)) + 12, stacked [[a, b], [d, c]]
    assert hilbert_curve_rows(2) == [[0, 1], [3, 2]]
    assert hilbert_curve_rows(4) == [[0, 3, 4, 5],
                                     [1, 2, 7, 6],
                                     [14, 13, 8, 9],
                                     [15, 12, 11, 10]]


def test_the_curve_visits_every_cell_once_each_step_to_a_neighbour_and_fills_its_top_half_first():
    curve = hilbert_cnn.hilbert_curve(32)
    cells = np.argwhere(curve >= 0)[np.argsort(curve.ravel())]
    assert sorted(curve.ravel().tolist()) == list(range(1024))
    assert (np.abs(np.diff(cells, axis=0)).sum(1) == 1).all()
    assert sorted(curve[:16].ravel().tolist()) == list(range(512))


@pytest.mark.parametrize("cells, shape", [(497, (16, 32)), (512, (16, 32)), (513, (32, 32)), (57, (8, 8)),
                                          (32, (4, 8)), (1, (1, 1))])
def test_the_image_is_the_smallest_curve_or_half_curve_holding_the_kmers(cells, shape):
    assert hilbert_cnn.curve_image(cells).shape == shape


def test_the_histone_image_is_the_authors_cut_of_the_order_32_curve():
    # main.py: H = hilbert_curve(32)[:16, :], for the 497 4-mers of a 500-bp sequence
    assert (hilbert_cnn.curve_image(497) == hilbert_cnn.hilbert_curve(32)[:16]).all()


def test_kmer_codes_number_the_words_as_itertools_product_of_the_bases():
    words = ["".join(w) for w in itertools.product("ACGT", repeat=4)]  # the authors' combination()
    bases = torch.tensor([[0, 1, 2, 3, 0, -1, 2, 2, 2]])  # A C G T A N G G G
    assert hilbert_cnn.kmer_codes(bases, 4).tolist() == [[words.index("ACGT"), words.index("CGTA"), -1, -1, -1,
                                                         -1]]
    assert hilbert_cnn.kmer_codes(bases, 1).tolist() == [[0, 1, 2, 3, 0, -1, 2, 2, 2]]
    assert hilbert_cnn.kmer_codes(torch.tensor([[3, 3]]), 2).tolist() == [[15]]  # TT, the last word


def test_the_image_writes_the_ith_kmer_one_hot_to_the_ith_curve_cell_and_leaves_the_rest_zero():
    sequence = "GATTACAGATTACA"  # 11 4-mers: a 4x4 image
    image = hilbert_cnn.HilbertImage(VOCABULARY, len(sequence) + 2, 4)
    with_specials = torch.tensor([[tokens.CLS, *ids_of(sequence), tokens.SEP, 0, 0]])  # padded batch
    picture = image(with_specials)[0]
    assert picture.shape == (256, 4, 4)
    words = ["".join(w) for w in itertools.product("ACGT", repeat=4)]
    expected = torch.zeros(256, 4, 4)
    for i in range(len(sequence) - 3):
        row, col = np.argwhere(hilbert_cnn.hilbert_curve(4) == i)[0]
        expected[words.index(sequence[i:i + 4]), row, col] = 1
    assert torch.equal(picture, expected)
    # without [CLS]/[SEP] (add_special_tokens false) the sequence makes the same image
    assert torch.equal(image(torch.tensor([ids_of(sequence)]))[0], expected)


def test_a_kmer_with_an_ambiguity_code_leaves_its_cell_empty():
    vocabulary = tokens.native_vocabulary("ACGTNDRS")  # the UCI splice alphabet
    sequence = "ACGTNACGT"  # of 6 4-mers only the first and the last hold no N
    image = hilbert_cnn.HilbertImage(vocabulary, len(sequence), 4)
    picture = image(torch.tensor([[vocabulary.index(s) for s in sequence]]))[0]
    curve = image.curve
    occupied = {int(curve[r, c]) for r, c in zip(*torch.nonzero(picture.sum(0), as_tuple=True))}
    assert occupied == {0, 5} and picture.sum() == 2


def test_the_network_has_the_papers_961k_weights_plus_its_batch_norm_scales_and_shifts():
    model = build_model(longest=502)  # 500 bp and [CLS]/[SEP]: the 16x32 image
    weights = sum(p.numel() for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))
                  for p in m.parameters())
    norms = sum(p.numel() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d) for p in m.parameters())
    assert (weights, norms) == (961_924, 1_536)
    assert sum(p.numel() for p in model.parameters()) == 963_460


def test_the_output_carries_the_authors_l2_penalty_on_the_convolution_kernels():
    model = build_model(longest=62).eval()  # batch normalisation of one example: its moving averages
    output = model(torch.tensor([[tokens.CLS, *ids_of("ACGT" * 15), tokens.SEP]]))
    kernels = sum(m.weight.pow(2).sum() for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert output.logits.shape == (1, 2)
    assert torch.isclose(output.penalty, 1.5 * 5e-4 * kernels / 2)


def test_the_family_is_built_from_its_architecture_only(tmp_path):
    from crossdisc.models import fetch_model

    fetch_model(ARCHITECTURE, tmp_path / "model")
    assert json.loads((tmp_path / "model" / "config.json").read_text()) == {"family": "hilbert-cnn", "kmer": 4}
    model = build_classifier(tmp_path / "model", "scratch", 3, seed=100, symbols=VOCABULARY, longest=62)
    assert isinstance(model, hilbert_cnn.HilbertCNN) and model.classifier[-1].out_features == 3
    with pytest.raises(InputError, match="init 'scratch' only, not 'pretrained'"):
        build_classifier(tmp_path / "model", "pretrained", 2, seed=100, symbols=VOCABULARY, longest=62)


def test_the_native_token_map_keeps_the_tasks_ids_and_names_its_symbols(tmp_path):
    meta = {"task": "dna", "vocabulary": "native", "vocab_size": 7, "symbols": VOCABULARY}
    table = token_maps.build_table("native", meta, None, seed=100)
    assert table.tolist() == list(range(7))
    token_maps.write_table(tmp_path / "map.parquet", table, meta, None)
    written = pd.read_parquet(tmp_path / "map.parquet")
    assert written["model_token"].tolist() == VOCABULARY
    with pytest.raises(InputError, match="does not apply to a text vocabulary"):
        token_maps.build_table("native", {**meta, "vocabulary": "text"}, None, seed=100)


def test_a_hilbert_cnn_run_trains_on_the_test_configs_dna_task_through_the_cli(tmp_path):
    """The test config's DNA task (the embedded default's TATA-box detection at 60 records of 24 bp:
    a 4x8 image) through the real commands: download, preprocess, the native token map, the model's
    directory, fine-tuning; its coordinates, paths and settings from the config model."""
    config = yaml.safe_load(TEST_CONFIG.read_text())
    config["models"]["hilbert-cnn"] = ARCHITECTURE
    config["experiments"]["specific"] = {"tasks": ["dna"], "models": ["hilbert-cnn"], "inits": ["scratch"],
                                         "token_maps": ["native"],
                                         "training": {"lr": 3e-3, "lr_schedule": "constant", "max_steps": 2,
                                                      "early_stopping": True, "eval_every": 1}}
    grid = Grid(config)
    run = next(run for run in grid.runs if run["experiment"] == "specific")
    inputs = grid.finetune_inputs(**run)
    assert inputs["tokens"] == "results/tokens/dna/native.parquet"
    assert inputs["token_map"] == "results/token_maps/native/dna/native.parquet"
    assert inputs["model"] == "results/models/hilbert-cnn"
    assert set(grid.token_map_inputs("native", "dna", "native")) == {"tokens"}  # no tokenizer
    raw, model_dir = tmp_path / "raw", tmp_path / "model"
    token_file, token_map, out = tmp_path / "tokens.parquet", tmp_path / "map.parquet", tmp_path / "run"
    for argv in (["download", "--spec", json.dumps(config["sources"]["dna"]), "--out", str(raw)],
                 ["preprocess", "--task", "dna", "--spec", json.dumps(grid.task_spec("dna")), "--raw", str(raw),
                  "--out", str(token_file)],
                 ["token-map", "--strategy", "native", "--tokens", str(token_file), "--out", str(token_map)],
                 ["fetch-model", "--spec", json.dumps(grid.model_spec("hilbert-cnn")), "--out", str(model_dir)],
                 ["finetune", "--tokens", str(token_file), "--token-map", str(token_map), "--model", str(model_dir),
                  "--init", "scratch", "--hparams", json.dumps(grid.hparams("specific", "dna")), "--run",
                  json.dumps(run), "--device", "cpu", "--state", str(tmp_path / "state"), "--out", str(out)]):
        cli.main(argv)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["run"] == run and metrics["steps"] == 2 and metrics["train_examples"] == 36  # 60% of 60
    assert metrics["metric"] == "accuracy" and 0 <= metrics["test"] <= 1 and 0 <= metrics["dev"] <= 1  # early stopping
    assert set(metrics["metrics"]) == {"dev", "test"} and metrics["hparams"]["lr_schedule"] == "constant"
    curve = pd.read_parquet(out / "curve.parquet")
    assert (curve["lr"] == 3e-3).all() and np.isfinite(curve["loss"]).all()  # constant, as the authors' Adam
    predictions = pd.read_parquet(out / "predictions.parquet")
    assert len(predictions) == 24 and set(predictions["prediction"]) <= {0, 1}
