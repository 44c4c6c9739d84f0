"""The fine-tuning engine and BERT pre-training on a tiny BERT: outputs, determinism, resumption."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import ARCH, PRETRAIN_HP, dna_token_file, prepared_corpus

from crossdisc import finetune, pretrain, pretrain_data, token_maps, tokens
from crossdisc.errors import InputError
from crossdisc.models import build_classifier


HP = {"lr": 1e-3, "batch_size": 8, "max_steps": 24, "checkpoint_every": 4, "early_stopping": True, "eval_every": 8,
      "metric": "accuracy"}


def test_finetune_writes_metrics_curve_and_predictions(task_files, tiny_bert, tmp_path):
    tokens_path, map_path = task_files
    summary = finetune.finetune(tokens_path, map_path, tiny_bert, "pretrained", tmp_path / "run", tmp_path / "state", HP)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["metric"] == "accuracy" and 0 <= written["test"] <= 1 and written["test"] == summary["test"]
    assert set(written["metrics"]) == {"dev", "test"}
    assert written["cuda_graphs"] is torch.cuda.is_available()
    curve = pd.read_parquet(tmp_path / "run" / "curve.parquet")
    assert curve["step"].tolist() == list(range(1, 25)) and np.isfinite(curve["loss"]).all()
    assert curve["lr"].iloc[-1] == 0.0  # linear decay to zero, no warm-up
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    assert sorted(predictions["split"].unique()) == ["dev", "test"]
    assert not (tmp_path / "state" / "state.pt").exists()  # the resumable state is gone once finished


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("grad_accum", [1, 2])
def test_cuda_graphs_train_as_eager_does(task_files, tiny_bert, tmp_path, grad_accum, monkeypatch):
    """Replayed CUDA graphs give the eager run's losses: same gradients, same dropout draws (at the
    same batch widths: dropout's draws depend on the shape), in fp32."""
    from crossdisc import accel

    monkeypatch.setattr(accel, "batch_width_multiple", lambda device, cuda_graphs: 16)
    tokens_path, map_path = task_files
    hp = {**HP, "grad_accum": grad_accum, "early_stopping": False, "precision": "fp32"}
    graphed = finetune.finetune(tokens_path, map_path, tiny_bert, "scratch", tmp_path / "g", tmp_path / "sg", hp)
    eager = finetune.finetune(tokens_path, map_path, tiny_bert, "scratch", tmp_path / "e", tmp_path / "se",
                              {**hp, "cuda_graphs": False})
    assert graphed["cuda_graphs"] is True and eager["cuda_graphs"] is False
    losses = [pd.read_parquet(tmp_path / run / "curve.parquet")["loss"].to_numpy() for run in ("g", "e")]
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)


def test_finetune_is_deterministic_on_cpu(task_files, tiny_bert, tmp_path):
    tokens_path, map_path = task_files
    a = finetune.finetune(tokens_path, map_path, tiny_bert, "scratch", tmp_path / "a", tmp_path / "sa", HP)
    b = finetune.finetune(tokens_path, map_path, tiny_bert, "scratch", tmp_path / "b", tmp_path / "sb", HP)
    assert pd.read_parquet(tmp_path / "a" / "curve.parquet").equals(pd.read_parquet(tmp_path / "b" / "curve.parquet"))
    assert a["metrics"] == b["metrics"]


def test_regression_task_trains_with_one_output(tmp_path, tiny_bert, tokenizer):
    token_file = dna_token_file(tmp_path / "reg.parquet", kind="regression")
    meta = tokens.read_meta(token_file)
    token_maps.write_table(tmp_path / "map.parquet", token_maps.build_table("unused", meta, tokenizer, 100), meta, tokenizer)
    summary = finetune.finetune(token_file, tmp_path / "map.parquet", tiny_bert, "re-emb", tmp_path / "run",
                                tmp_path / "state", {**HP, "metric": "spearman"})
    assert set(summary["metrics"]["test"]) == {"pearson", "spearman"}


def test_a_task_with_a_train_split_alone_trains_and_writes_empty_predictions(task_files, tiny_bert, tmp_path):
    tokens_path, map_path = task_files
    frame, meta = tokens.read_token_file(tokens_path)
    records = frame.assign(split="train").to_dict("records")
    tokens.write_token_file(tmp_path / "train-only.parquet", records, meta)
    summary = finetune.finetune(tmp_path / "train-only.parquet", map_path, tiny_bert, "pretrained", tmp_path / "run",
                                tmp_path / "state", {**HP, "early_stopping": False})
    assert summary["test"] is None and summary["metrics"] == {}
    assert len(pd.read_parquet(tmp_path / "run" / "predictions.parquet")) == 0


@pytest.mark.parametrize("init", ["pretrained", "scratch", "re-emb", "scratch+pretrained-pos"])
def test_inits_keep_exactly_the_weights_they_promise(tiny_bert, init):
    pretrained = build_classifier(tiny_bert, "pretrained", 2, seed=1).state_dict()
    model = build_classifier(tiny_bert, init, 2, seed=1).state_dict()
    same = {k for k in pretrained if k.startswith("bert.") and np.array_equal(pretrained[k], model[k])}
    words = "bert.embeddings.word_embeddings.weight"
    positions = {"bert.embeddings.position_embeddings.weight", "bert.embeddings.token_type_embeddings.weight"}
    encoder = "bert.encoder.layer.0.attention.self.query.weight"
    expected = {
        "pretrained": words in same and encoder in same,
        "scratch": not (same & positions) and words not in same and encoder not in same,
        "re-emb": words not in same and encoder in same and positions <= same,
        "scratch+pretrained-pos": positions <= same and words not in same and encoder not in same,
    }
    assert expected[init]


@pytest.mark.parametrize("optimizer", ["adamw", "novograd"])
def test_a_killed_finetune_resumes_to_the_metrics_of_an_uninterrupted_run(task_files, tiny_bert, tmp_path, optimizer):
    tokens_path, map_path = task_files
    hp = {**HP, "max_steps": 60, "checkpoint_every": 2, "optimizer": optimizer}
    reference = finetune.finetune(tokens_path, map_path, tiny_bert, "pretrained", tmp_path / "ref", tmp_path / "sref", hp)
    command = [sys.executable, "-m", "crossdisc", "finetune", "--tokens", str(tokens_path), "--token-map", str(map_path),
               "--model", str(tiny_bert), "--init", "pretrained", "--hparams", json.dumps(hp),
               "--state", str(tmp_path / "state"), "--out", str(tmp_path / "run")]
    process = subprocess.Popen(command, stderr=subprocess.DEVNULL)
    state = tmp_path / "state" / "state.pt"
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists() and not (tmp_path / "run" / "metrics.json").exists()
    subprocess.run(command, check=True, stderr=subprocess.DEVNULL)
    resumed = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert resumed["metrics"] == reference["metrics"]
    assert pd.read_parquet(tmp_path / "run" / "curve.parquet").equals(pd.read_parquet(tmp_path / "ref" / "curve.parquet"))


@pytest.mark.parametrize("name", ["adamw", "adam", "adagrad", "adamax", "radam", "novograd"])
def test_every_optimizer_continues_exactly_from_its_saved_state(tmp_path, name):
    """What resumption needs of an optimiser: its state, saved and loaded as tensors and plain
    containers (training.save_state/load_state), continues the steps of the uninterrupted run."""
    from crossdisc.training import load_state, save_state

    def model_and_optimizer():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 2))
        return model, finetune.build_optimizer(name, model.parameters(), lr=1e-2, weight_decay=0.01)

    inputs, targets = torch.randn(16, 4, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 2

    def train(model, optimizer, steps):
        for _ in range(steps):
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
            optimizer.zero_grad()

    model, optimizer = model_and_optimizer()
    train(model, optimizer, 3)
    save_state(tmp_path / "state.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    train(model, optimizer, 3)
    resumed, resumed_optimizer = model_and_optimizer()
    state = load_state(tmp_path / "state.pt")
    resumed.load_state_dict(state["model"])
    resumed_optimizer.load_state_dict(state["optimizer"])
    train(resumed, resumed_optimizer, 3)
    fresh, _ = model_and_optimizer()
    assert not torch.equal(resumed[0].weight, fresh[0].weight)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), resumed.state_dict().values()))


def test_novograd_takes_the_steps_of_ginsburg_et_al():
    """Per layer: v = |g|^2 at the first step, then beta2 v + (1 - beta2) |g|^2; m = g / sqrt(v) +
    wd * w at the first step, then beta1 m + g / sqrt(v) + wd * w; w -= lr m (betas 0.95, 0.98)."""
    weight, other = torch.nn.Parameter(torch.tensor([1.0, 2.0])), torch.nn.Parameter(torch.tensor([3.0]))
    optimizer = finetune.build_optimizer("novograd", [weight, other], lr=0.1, weight_decay=0.5)
    weight.grad, other.grad = torch.tensor([0.3, 0.4]), torch.tensor([2.0])
    optimizer.step()
    # |g| = 0.5: m = [0.6, 0.8] + 0.5 * [1, 2] = [1.1, 1.8]; the other layer: 1 + 0.5 * 3 = 2.5
    np.testing.assert_allclose(weight.detach(), [1 - 0.11, 2 - 0.18], rtol=1e-6)
    np.testing.assert_allclose(other.detach(), [3 - 0.25], rtol=1e-6)
    weight.grad, other.grad = torch.tensor([0.6, 0.8]), torch.tensor([2.0])
    optimizer.step()
    # v = 0.98 * 0.25 + 0.02 * 1.0 = 0.265; m = 0.95 * [1.1, 1.8] + [0.6, 0.8] / sqrt(0.265) + 0.5 * [0.89, 1.82]
    m = 0.95 * np.array([1.1, 1.8]) + np.array([0.6, 0.8]) / np.sqrt(0.265) + 0.5 * np.array([0.89, 1.82])
    np.testing.assert_allclose(weight.detach(), np.array([0.89, 1.82]) - 0.1 * m, rtol=1e-6)


def test_subsample_stratified_keeps_each_labels_share():
    """The class counts of RTE's training split (2,490 pairs) and CoLA's (8,551 sentences) at 1%:
    25 and 86 examples, as the plain draw, shared out by the largest remainders; and three classes."""
    cases = (((1249, 1241), 0.01, (13, 12)),  # quotas 12.54, 12.46
             ((2528, 6023), 0.01, (25, 61)),  # quotas 25.43, 60.58
             ((5, 7, 8), 0.25, (1, 2, 2)))  # quotas 1.25, 1.75, 2.0
    for counts, fraction, expected in cases:
        labels = np.repeat(np.arange(len(counts)), counts)
        train = pd.DataFrame({"id": [f"r{i}" for i in range(len(labels))], "label": labels})
        subset = finetune.subsample(train, fraction, seed=100, stratified=True)
        assert tuple(subset["label"].value_counts().sort_index()) == expected
        assert subset["id"].is_unique and len(subset) == len(finetune.subsample(train, fraction, seed=100))
        assert subset.equals(finetune.subsample(train, fraction, seed=100, stratified=True))
        # the default draw is the one every earlier run made: a seeded sample of the whole split
        assert finetune.subsample(train, fraction, seed=100).equals(
            train.sample(n=len(subset), random_state=100).reset_index(drop=True))


def test_score_train_scores_the_subset_trained_on(task_files, tiny_bert, tmp_path):
    tokens_path, map_path = task_files
    hp = {**HP, "max_steps": 4, "early_stopping": False, "score_train": True, "fraction_sampling": "stratified"}
    summary = finetune.finetune(tokens_path, map_path, tiny_bert, "pretrained", tmp_path / "run", tmp_path / "state",
                                hp, fraction=0.5)
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert set(written["metrics"]) == {"train", "dev", "test"}
    assert set(written["metrics"]["train"]) == set(written["metrics"]["test"]) == {"accuracy", "mcc", "f1"}
    assert written["train"] == written["metrics"]["train"]["accuracy"] == summary["train"]
    predictions = pd.read_parquet(tmp_path / "run" / "predictions.parquet")
    train = predictions[predictions["split"] == "train"]
    assert len(train) == written["train_examples"] == 34  # half of the 68 training examples
    assert written["train"] == np.mean(train["label"] == train["prediction"])


def test_precision_fp32_turns_bf16_autocast_off(monkeypatch):
    from crossdisc.training import uses_bf16

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert uses_bf16(cuda, "bf16") and not uses_bf16(cuda, "fp32")
    assert not uses_bf16(cpu, "bf16")  # a CPU runs fp32 whatever the setting


def test_the_precision_setting_reaches_the_loop(task_files, tiny_bert, tmp_path, monkeypatch):
    asked = []
    real = finetune.autocast_for
    monkeypatch.setattr(finetune, "autocast_for", lambda device, precision: asked.append(precision) or real(device, precision))
    tokens_path, map_path = task_files
    summary = finetune.finetune(tokens_path, map_path, tiny_bert, "pretrained", tmp_path / "run", tmp_path / "state",
                                {**HP, "max_steps": 2, "precision": "fp32"})
    assert asked == ["fp32"] and summary["bf16_autocast"] is False


def test_pretraining_chain_gives_the_checkpoints_of_one_uninterrupted_run(tmp_path, tiny_bert):
    """Across the switch to the long sequence length too (at step 6, inside the last link)."""
    from safetensors.torch import load_file

    corpus = prepared_corpus(tmp_path, tiny_bert)
    hp = {**PRETRAIN_HP, "long_max_length": 48, "long_from_step": 6}
    run = lambda step, out, previous=None: pretrain.pretrain(corpus, tiny_bert, ARCH, out, step, 8, hp,
                                                             previous_dir=previous)
    run(0, tmp_path / "step-0")
    run(4, tmp_path / "step-4", tmp_path / "step-0")
    run(8, tmp_path / "step-8", tmp_path / "step-4")
    run(8, tmp_path / "direct-8", tmp_path / "step-0")
    chained = load_file(tmp_path / "step-8" / "model.safetensors")
    direct = load_file(tmp_path / "direct-8" / "model.safetensors")
    assert chained.keys() == direct.keys()
    assert all(np.array_equal(chained[k], direct[k]) for k in chained)
    initial = load_file(tmp_path / "step-0" / "model.safetensors")
    assert not all(np.array_equal(initial[k], chained[k]) for k in chained)


def test_a_checkpoint_loads_as_a_classifier(tmp_path, tiny_bert):
    run_dir = tmp_path / "step-2"
    pretrain.pretrain(prepared_corpus(tmp_path, tiny_bert), tiny_bert, ARCH, run_dir, 2, 2, PRETRAIN_HP)
    model = build_classifier(run_dir, "pretrained", 3, seed=0)
    from crossdisc.models import load_tokenizer

    assert model.config.num_labels == 3 and load_tokenizer(run_dir).cls_token_id == 101


def test_a_killed_pretraining_resumes_to_the_checkpoint_of_an_uninterrupted_run(tmp_path, tiny_bert):
    """SIGKILL `crossdisc pretrain` once its resumable state exists, rerun the same command, and get
    the same weights as a run that was never interrupted, the switch to the long sequence length
    (step 16) included."""
    from safetensors.torch import load_file

    prepared = prepared_corpus(tmp_path, tiny_bert)
    spec = {"architecture": ARCH, "total_steps": 30, "seed": 100,
            "training": {**PRETRAIN_HP, "checkpoint_every": 2, "long_max_length": 48, "long_from_step": 16}}

    def command(name):
        return [sys.executable, "-m", "crossdisc", "pretrain", "--corpus", str(prepared), "--tokenizer", str(tiny_bert),
                "--spec", json.dumps(spec), "--step", "30", "--state", str(tmp_path / f"state-{name}"),
                "--device", "cpu", "--out", str(tmp_path / name)]

    subprocess.run(command("reference"), check=True, stderr=subprocess.DEVNULL)
    process = subprocess.Popen(command("run"), stderr=subprocess.DEVNULL)
    state = tmp_path / "state-run" / pretrain.STATE_FILE
    deadline = time.time() + 120
    while not state.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert state.exists() and not (tmp_path / "run").exists()
    killed_at = torch_load_step(state)
    assert 0 < killed_at < 16
    rerun = subprocess.run(command("run"), check=True, stderr=subprocess.PIPE, text=True)
    assert f"resuming from step {killed_at}" in rerun.stderr
    assert not state.exists()  # the resumable state is gone once the checkpoint is written
    resumed = load_file(tmp_path / "run" / "model.safetensors")
    reference = load_file(tmp_path / "reference" / "model.safetensors")
    assert resumed.keys() == reference.keys()
    assert all(np.array_equal(resumed[k], reference[k]) for k in reference)


def torch_load_step(path):
    import torch

    return torch.load(path, weights_only=True)["step"]


def test_masking_follows_the_bert_recipe(tokenizer):
    """Of the predicted tokens 80% become [MASK], 10% a random token, 10% stay; [CLS] and [SEP]
    never are predicted (rows of [CLS] 99 x 5000 [SEP], 15 predictions each)."""
    import torch

    ids = torch.full((2000, 101), 5000)
    ids[:, 0], ids[:, -1] = tokenizer.cls_token_id, tokenizer.sep_token_id
    corrupted, positions, targets, weights = pretrain_data.mask_tokens(
        ids, torch.ones_like(ids, dtype=torch.bool), tokenizer, 0.15, 20, seed=1, step=0)
    assert weights.sum(1).eq(15).all() and (positions[:, :15] > 0).all() and (positions[:, :15] < 100).all()
    assert (targets[:, :15] == 5000).all()
    predicted = corrupted.gather(1, positions[:, :15])
    masked = (predicted == tokenizer.mask_token_id).float().mean().item()
    kept = (predicted == 5000).float().mean().item()
    assert masked == pytest.approx(0.8, abs=0.01) and kept == pytest.approx(0.1, abs=0.01)
    assert (corrupted != 5000).sum().item() == 2 * 2000 + (predicted != 5000).sum().item()  # nothing else changed


def test_length_grouping_pads_less_and_covers_every_example_once():
    import torch

    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 128, size=1000)
    order = rng.permutation(1000)
    batches = finetune.length_grouped(order, lengths, 16, torch.Generator().manual_seed(0))
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(order, len(batches)))
    assert padded < 0.75 * random_padded


@pytest.mark.parametrize("missing, message", [("tokens", "no such token file"), ("model", "no such model directory")])
def test_a_missing_input_of_finetune_is_one_line(task_files, tiny_bert, tmp_path, capsys, missing, message):
    from crossdisc import cli

    tokens_path, map_path = task_files
    paths = {"tokens": str(tokens_path), "model": str(tiny_bert), missing: str(tmp_path / "gone")}
    with pytest.raises(SystemExit) as exit:
        cli.main(["finetune", "--tokens", paths["tokens"], "--token-map", str(map_path), "--model", paths["model"],
                  "--init", "pretrained", "--state", str(tmp_path / "state"), "--out", str(tmp_path / "run")])
    assert exit.value.code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"crossdisc finetune: error: {tmp_path}/gone: {message} " + (
        "(crossdisc preprocess writes one)" if missing == "tokens" else "(crossdisc fetch-model writes one)")
    assert not (tmp_path / "run").exists()


def test_an_unknown_hparams_key_is_refused(task_files, tiny_bert, tmp_path):
    tokens_path, map_path = task_files
    with pytest.raises(InputError, match=r"--hparams: unknown setting\(s\) \['learning_rate'\]"):
        finetune.finetune(tokens_path, map_path, tiny_bert, "pretrained", tmp_path / "run", tmp_path / "state",
                          {"learning_rate": 1e-3})


def test_stop_loss_ends_training_once_the_loss_has_converged(task_files, tiny_bert, tmp_path):
    tokens_path, map_path = task_files
    hp = {**HP, "lr": 3e-3, "max_steps": 400, "stop_loss": 0.2, "stop_window": 5, "early_stopping": False,
          "lr_schedule": "constant"}
    summary = finetune.finetune(tokens_path, map_path, tiny_bert, "pretrained", tmp_path / "run", tmp_path / "state", hp)
    curve = pd.read_parquet(tmp_path / "run" / "curve.parquet")
    assert summary["steps"] == len(curve) < 400 and summary["converged"] is True
    assert curve["loss"].tail(5).mean() < 0.2
    assert (curve["lr"] == 3e-3).all()  # constant: no decay towards the cap
