"""The real Snakefile on a tiny config: every stage runs, outputs hold what they should, a rerun
redoes only what changed, and the aggregation lays out the paper's figures and aggregates a
partial grid."""

import copy
import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO

EXPERIMENTS = {
    "shifted-text": {"tasks": ["word-order"], "models": ["tiny"], "inits": ["pretrained", "scratch"],
                     "token_maps": ["shift-1000"]},
    "non-text": {"tasks": ["composer", "dna", "protein"], "models": ["tiny"], "inits": ["pretrained", "scratch"],
                 "token_maps": ["most-frequent"], "seeds": [100, 101]},
    "steps": {"tasks": ["dna"], "models": ["mini-bert@0", "mini-bert@3"], "token_maps": ["random-real"]},
}
N_RUNS = 2 + 3 * 2 * 2 + 2


def tiny_config(results, model_dir):
    return {
        "results": str(results),
        "sources": {
            "python-docs": {"type": "python-docs"},
            "chorales": {"type": "music21", "composers": ["bach", "monteverdi"], "pieces_per_composer": 3},
            "dna": {"type": "synthetic-dna", "n": 60, "length": 24},
            "protein": {"type": "synthetic-protein", "n": 60, "min_length": 8, "max_length": 16},
        },
        "models": {"tiny": {"source": "local", "path": str(model_dir)}},
        "pretrain": {"mini-bert": {
            "corpus": "python-docs", "tokenizer": "tiny", "steps": [0, 3],
            "architecture": {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64},
            "training": {"max_length": 32, "batch_size": 4}}},
        "token_maps": {"corpus": "python-docs"},
        "protect_checkpoints": True,
        "training": {"lr": 1e-3, "batch_size": 8, "max_steps": 4},
        "tasks": {
            "word-order": {"source": "python-docs", "reader": "sentence-order", "kind": "classification",
                           "metric": "accuracy", "max_length": 24, "max_examples": 80},
            "composer": {"source": "chorales", "reader": "midi", "kind": "vote_classification", "metric": "vote_accuracy",
                         "segment_length": 16, "max_length": 16, "instruments": "all", "add_special_tokens": False},
            "dna": {"source": "dna", "reader": "hilbert-cnn", "file": "data.txt", "kind": "classification",
                    "alphabet": "ACGT", "metric": "accuracy", "max_length": 26, "split_fractions": [0.6, 0.2]},
            "protein": {"source": "protein", "reader": "fasta", "prefix": "data", "kind": "regression",
                        "alphabet": "ARNDCQEGHILKMFPSTWYVXOUBZ", "metric": "spearman", "max_length": 18},
        },
        "experiments": copy.deepcopy(EXPERIMENTS),  # tests edit their copy
        # the composer task stands in for the paper's Table 2 composer column
        "paper_rows": [{"section": "", "row": "BERT", "experiment": "non-text", "model": "tiny", "init": "pretrained",
                        "token_map": "most-frequent"}],
    }


def snakemake(workdir, configfile, *args, check=True):
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(configfile), "--cores", "2", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if check and result.returncode:
        raise AssertionError(result.stdout[-3000:] + result.stderr[-5000:])
    return result


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert):
    workdir = tmp_path_factory.mktemp("workflow")
    configfile = workdir / "tiny.yaml"
    configfile.write_text(yaml.safe_dump(tiny_config(workdir / "results", tiny_bert)))
    snakemake(workdir, configfile)
    return workdir, configfile


def test_every_run_lands_in_the_results_table(finished_run):
    workdir, _ = finished_run
    table = pd.read_csv(workdir / "results/tables/results.csv")
    assert table["seeds"].sum() == N_RUNS
    assert set(table["experiment"]) == set(EXPERIMENTS)
    assert table.query("task == 'protein'")["metric"].unique().tolist() == ["spearman"]
    assert table["test_mean"].between(-100, 100).all()
    two_seeds = table.query("experiment == 'non-text'")
    assert (two_seeds["seeds"] == 2).all() and two_seeds["test_std"].notna().all()
    markdown = (workdir / "results/tables/results.md").read_text()
    assert markdown.count("\n| non-text |") == 6 and "±" in markdown


def test_each_run_has_metrics_a_loss_curve_and_predictions(finished_run):
    workdir, _ = finished_run
    run = workdir / "results/runs/non-text/composer/tiny/pretrained/most-frequent/1.0/seed-101"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["metric"] == "vote_accuracy" and metrics["seed"] == 101
    assert metrics["test"] == metrics["metrics"]["test"]["vote_accuracy"]
    assert len(pd.read_parquet(run / "curve.parquet")) == 4
    predictions = pd.read_parquet(run / "predictions.parquet")
    assert set(predictions["split"]) == {"dev", "test"} and predictions["group"].str.endswith(".mid").all()


def test_token_files_and_maps_hold_what_the_paper_describes(finished_run):
    workdir, _ = finished_run
    shift = pd.read_parquet(workdir / "results/token_maps/shift-1000/word-order/tiny.parquet")
    assert np.array_equal(shift["model_id"], (shift["input_id"] + 1000) % 30522)
    words = pd.read_parquet(workdir / "results/tokens/word-order/tiny.parquet")
    assert set(words["label"]) == {0, 1} and set(words["split"]) == {"train", "dev", "test"}
    music = pd.read_parquet(workdir / "results/tokens/composer/native.parquet")
    assert (music["input_ids"].map(len) == 16).all()


def test_pretraining_checkpoints_and_the_steps_figure_exist(finished_run):
    workdir, _ = finished_run
    for step in (0, 3):
        weights = workdir / f"results/pretrain/mini-bert/step-{step}/model.safetensors"
        assert weights.stat().st_size > 0
        assert not weights.stat().st_mode & 0o222, "protect_checkpoints leaves checkpoints read-only"
    for name in ("loss_curves.png", "pretrain_steps.png"):
        assert (workdir / "results/figures" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert b"<svg" in (workdir / "results/figures/loss_curves.svg").read_bytes()[:500]


def test_the_papers_tables_show_our_number_beside_the_published_one(finished_run):
    workdir, _ = finished_run
    paper = pd.read_csv(workdir / "results/tables/paper.csv")
    cell = paper.query("table == 'table2' and row == 'BERT' and task == 'composer'").iloc[0]
    ours = pd.read_csv(workdir / "results/tables/results.csv").query(
        "experiment == 'non-text' and task == 'composer' and init == 'pretrained'")["test_mean"].item()
    assert cell["paper"] == 55.2 and cell["ours"] == ours and cell["diff"] == round(ours - 55.2, 1)
    assert paper.query("row == 'ALBERT'")["ours"].isna().all()  # rows the config does not run stay empty
    assert "| shift 1000 | BERT |" in (workdir / "results/tables/paper.md").read_text()
    assert "\\begin{tabular}" in (workdir / "results/tables/paper.tex").read_text()


def test_the_report_holds_the_table_and_figures(finished_run):
    workdir, configfile = finished_run
    snakemake(workdir, configfile, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    assert "results.csv" in html and "loss_curves.png" in html


def planned_jobs(workdir, configfile):
    output = snakemake(workdir, configfile, "--dry-run").stdout
    return re.findall(r"^rule (\w+):\n(?:.*\n)*?    wildcards: (.*)$|^rule (\w+):$", output, re.M)


def test_nothing_reruns_after_a_finished_run(finished_run):
    workdir, configfile = finished_run
    assert "Nothing to be done" in snakemake(workdir, configfile, "--dry-run").stdout


def test_changing_one_tasks_training_reruns_only_that_tasks_jobs(finished_run):
    workdir, configfile = finished_run
    config = yaml.safe_load(configfile.read_text())
    config["tasks"]["protein"]["training"] = {"lr": 5e-4}
    changed = workdir / "changed.yaml"
    changed.write_text(yaml.safe_dump(config))
    output = snakemake(workdir, changed, "--dry-run").stdout
    jobs = re.findall(r"^rule (\w+):", output, re.M)
    finetunes = re.findall(r"wildcards: experiment=(\S+), task=(\S+),", output)
    assert sorted(set(jobs)) == ["aggregate", "all", "finetune"]
    assert {task for _, task in finetunes} == {"protein"} and len(finetunes) == 4


def test_a_wrong_config_value_is_one_line_naming_it(tmp_path, tiny_bert):
    config = tiny_config(tmp_path / "results", tiny_bert)
    config["tasks"]["dna"]["kind"] = "clasification"
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile, "--dry-run", check=False)
    assert result.returncode != 0
    assert "config: tasks.dna.kind: 'clasification' is not one of" in result.stdout + result.stderr


def test_an_unknown_task_in_an_experiment_is_named(tmp_path, tiny_bert):
    config = tiny_config(tmp_path / "results", tiny_bert)
    config["experiments"]["steps"]["tasks"] = ["rna"]
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile, "--dry-run", check=False)
    assert "config: experiment 'steps': unknown task 'rna'" in result.stdout + result.stderr


@pytest.fixture(scope="module")
def composer_run(tmp_path_factory, tiny_bert):
    """A second, smaller finished run: the composer task (Table 2's composer column), pre-trained
    and from scratch, two seeds."""
    workdir = tmp_path_factory.mktemp("composer")
    config = tiny_config(workdir / "results", tiny_bert)
    config["experiments"] = {"non-text": {**EXPERIMENTS["non-text"], "tasks": ["composer"]}}
    configfile = workdir / "composer.yaml"
    configfile.write_text(yaml.safe_dump(config))
    snakemake(workdir, configfile)
    return workdir, configfile


def executed_rules(output):
    return sorted(set(re.findall(r"^(?:local)?rule (\w+):", output, re.M)))


def test_paper_figures_in_the_config_are_drawn_rerunning_only_the_aggregation(composer_run):
    workdir, configfile = composer_run
    config = yaml.safe_load(configfile.read_text())
    curves = [{"label": label, "experiment": "non-text", "model": "tiny", "init": init, "token_map": "most-frequent"}
              for label, init in (("BERT", "pretrained"), ("from scratch", "scratch"))]
    config["paper_figures"] = [{"name": "figure2", "kind": "loss", "title": "Training loss, a panel per task",
                                "rows": [{"title": "(b) music", "tasks": ["composer"], "curves": curves}]}]
    figures = workdir / "figures.yaml"
    figures.write_text(yaml.safe_dump(config))
    assert executed_rules(snakemake(workdir, figures, "--dry-run").stdout) == ["aggregate", "all"]
    snakemake(workdir, figures)
    assert (workdir / "results/figures/figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = (workdir / "results/figures/figure2.svg").read_text()
    assert "(b) music" in svg and "from scratch (n=2 seeds)" in svg
    snakemake(workdir, figures, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    assert "figure2.png" in html and "Training loss, a panel per task" in html


def test_a_partial_aggregation_says_which_runs_failed_or_did_not_run_and_runs_nothing_else(composer_run):
    workdir, configfile = composer_run
    pretrained = "non-text/composer/tiny/pretrained/most-frequent/1.0"
    for seed in (100, 101):  # as Snakemake leaves a failed job: no outputs, and its log
        shutil.rmtree(workdir / f"results/runs/{pretrained}/seed-{seed}")
    (workdir / f"results/logs/finetune/{pretrained}/seed-100.log").unlink()  # never ran
    result = snakemake(workdir, configfile, "--config", "partial_results=True")
    assert executed_rules(result.stdout + result.stderr) == ["aggregate", "all"]
    paper = pd.read_csv(workdir / "results/tables/paper.csv", keep_default_na=False)
    bert = paper.query("table == 'table2' and row == 'BERT' and task == 'composer'").iloc[0]
    assert (bert["ours"], bert["n"], bert["note"]) == ("", 0, "not run: seed 100; failed: seed 101")
    assert "| not run: seed 100; failed: seed 101 / 55.2 |" in (workdir / "results/tables/paper.md").read_text()
    assert set(pd.read_csv(workdir / "results/tables/results.csv")["init"]) == {"scratch"}


def test_a_paper_figure_naming_what_the_config_lacks_is_one_line_naming_it(tmp_path, tiny_bert):
    config = tiny_config(tmp_path / "results", tiny_bert)
    curve = {"label": "BERT", "experiment": "non-text", "model": "tiny", "init": "pretrained"}
    config["paper_figures"] = [{"name": "figure2", "kind": "loss", "title": "t", "rows": [{"tasks": ["rna"], "curves": [curve]}]}]
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile, "--dry-run", check=False)
    assert "config: paper_figures 'figure2': unknown task 'rna'" in result.stdout + result.stderr
    config["paper_figures"][0]["rows"][0] = {"tasks": ["dna"], "curves": [{"label": "ours", "pretrain": "mini-bert"}]}
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile, "--dry-run", check=False)  # a loss curve needs a model
    assert "config: paper_figures.0.rows.0.curves.0: 'model' is a required property" in result.stdout + result.stderr
