"""The real Snakefile on a tiny config: every stage runs, outputs hold what they should, a rerun
redoes only what changed, and the aggregation lays out the paper's figures and aggregates a
partial grid."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import TEST_CONFIG, plan, snakemake, tiny_config, write_config
from crossdisc.grid import Grid

pytestmark = pytest.mark.slow  # trains: a few minutes on 2 cores

EXPERIMENTS = yaml.safe_load(TEST_CONFIG.read_text())["experiments"]
N_RUNS = 2 + 3 * 2 * 2 + 2


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_bert):
    workdir = tmp_path_factory.mktemp("workflow")
    configfile = write_config(workdir / "tiny.yaml", tiny_config(workdir / "results", tiny_bert))
    (workdir / "console.txt").write_text(snakemake(workdir, configfile).stderr)
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
    assert metrics["seed"] == 101 and 0 <= metrics["metrics"]["test"]["vote_accuracy"] <= 1
    assert metrics["metric"] is None  # no early stopping: the headline metric is read at aggregation
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
    for name in ("loss_curves.png", "pretrain_steps.png", "headline.png"):
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


def test_the_paired_comparisons_pair_the_runs_seed_by_seed(finished_run):
    workdir, _ = finished_run
    table = pd.read_csv(workdir / "results/tables/comparisons.csv")
    init = table.query("comparison == 'pretrained vs scratch'")
    assert sorted(init["task"]) == ["composer", "dna", "protein", "word-order"]
    two_seeds = init.query("task != 'word-order'")
    assert (two_seeds["seeds"] == 2).all() and two_seeds["seed_low"].notna().all()
    assert (init["test_low"] <= init["diff"] + 0.05).all() and (init["diff"] <= init["test_high"] + 0.05).all()
    step = table.query("comparison == 'checkpoint vs step 0'").iloc[0]
    assert (step["task"], step["model"], step["seeds"]) == ("dna", "mini-bert@3 − @0", 1)
    assert "| pretrained vs scratch | composer |" in (workdir / "results/tables/comparisons.md").read_text()


def test_the_data_table_counts_the_examples_each_run_trained_and_was_tested_on(finished_run):
    workdir, _ = finished_run
    data = pd.read_csv(workdir / "results/tables/data.csv")
    assert {"composer", "dna", "protein", "word-order"} <= set(data["task"])
    assert (data[["train", "dev", "test"]].sum(axis=1) > 0).all()
    runtimes = pd.read_csv(workdir / "results/tables/runtimes.csv")
    cells = pd.read_csv(workdir / "results/tables/results.csv")
    assert runtimes["runs"].sum() == cells["seeds"].sum() and runtimes["seconds_per_run"].notna().all()


def test_a_finished_run_ends_on_where_its_results_are_and_its_first_comparisons(finished_run):
    workdir, _ = finished_run
    summary = [line for line in (workdir / "console.txt").read_text().splitlines() if line.startswith("crossdisc: ")]
    assert summary[0].startswith(f"crossdisc: tables in {workdir}/results/tables/ (results.md, comparisons.md, data.md, runtimes.md)")
    assert any(line.startswith("crossdisc: pretrained vs scratch, word-order (tiny): ") for line in summary)


def test_the_report_holds_the_table_and_figures(finished_run):
    workdir, configfile = finished_run
    snakemake(workdir, configfile, "--report", str(workdir / "report.html"))
    html = (workdir / "report.html").read_text(errors="replace")
    assert "results.csv" in html and "loss_curves.png" in html and "comparisons.csv" in html
    assert "crossdisc: results" in html and "Paired comparisons" in html and "results.html" in html  # opens on them
    assert "data.csv" in html and "runtimes.csv" in html and "Fine-tuning: " in html


def test_nothing_reruns_after_a_finished_run(finished_run):
    workdir, configfile = finished_run
    assert plan(workdir, configfile) == {}


def test_changing_a_tasks_headline_metric_re_aggregates_without_retraining(finished_run):
    workdir, configfile = finished_run
    config = yaml.safe_load(configfile.read_text())
    config["tasks"]["protein"]["metric"] = "pearson"  # no early stopping: the metric picks no checkpoint
    changed = write_config(workdir / "metric.yaml", config)
    assert set(plan(workdir, changed).values()) == {"aggregate"}


def test_changing_one_tasks_training_reruns_only_that_tasks_jobs(finished_run):
    workdir, configfile = finished_run
    config = yaml.safe_load(configfile.read_text())
    config["tasks"]["protein"]["training"] = {"lr": 5e-4}
    changed = write_config(workdir / "changed.yaml", config)
    planned = plan(workdir, changed)
    grid = Grid(config)
    protein_runs = [run for run in grid.runs if run["task"] == "protein"]
    assert len(protein_runs) == 4
    assert {path for path, rule in planned.items() if rule == "finetune"} == {
        f"{grid.run_dir(run)}/{name}" for run in protein_runs
        for name in ("metrics.json", "curve.parquet", "predictions.parquet")}
    assert set(planned.values()) == {"finetune", "aggregate"}


@pytest.fixture(scope="module")
def composer_run(tmp_path_factory, tiny_bert):
    """A second, smaller finished run: the composer task (Table 2's composer column), pre-trained
    and from scratch, two seeds."""
    workdir = tmp_path_factory.mktemp("composer")
    config = tiny_config(workdir / "results", tiny_bert)
    config["experiments"] = {"non-text": {**EXPERIMENTS["non-text"], "tasks": ["composer"]}}
    configfile = write_config(workdir / "composer.yaml", config)
    snakemake(workdir, configfile)
    return workdir, configfile


def test_paper_figures_in_the_config_are_drawn_rerunning_only_the_aggregation(composer_run):
    workdir, configfile = composer_run
    config = yaml.safe_load(configfile.read_text())
    curves = [{"label": label, "experiment": "non-text", "model": "tiny", "init": init, "token_map": "most-frequent"}
              for label, init in (("BERT", "pretrained"), ("from scratch", "scratch"))]
    config["paper_figures"] = [{"name": "figure2", "kind": "loss", "title": "Training loss, a panel per task",
                                "rows": [{"title": "(b) music", "tasks": ["composer"], "curves": curves}]}]
    figures = write_config(workdir / "figures.yaml", config)
    assert set(plan(workdir, figures).values()) == {"aggregate"}
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
    assert set(plan(workdir, configfile, "--config", "partial_results=True").values()) == {"aggregate"}
    snakemake(workdir, configfile, "--config", "partial_results=True")
    paper = pd.read_csv(workdir / "results/tables/paper.csv", keep_default_na=False)
    bert = paper.query("table == 'table2' and row == 'BERT' and task == 'composer'").iloc[0]
    assert (bert["ours"], bert["n"], bert["note"]) == ("", 0, "not run: seed 100; failed: seed 101")
    assert "| not run: seed 100; failed: seed 101 / 55.2 |" in (workdir / "results/tables/paper.md").read_text()
    assert set(pd.read_csv(workdir / "results/tables/results.csv")["init"]) == {"scratch"}
