"""The paper's figures laid out from config data: a sub-figure per row, a panel per task, curves that
select runs like paper_rows; and without `paper_figures`, one figure of each kind over every run.
Also the aggregation's other tables of the report: examples per split and label, and run times."""

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, dna_token_file
from crossdisc import tokens
from crossdisc.aggregate import (aggregate, collect, data_summary, draw_figure, draw_headline, overview_figures,
                                 paper_figure, runtime_summary, select)
from crossdisc.preprocess import split_counts

PAPER_FIGURES = {spec["name"]: spec for spec in yaml.safe_load((REPO / "config/paper.yaml").read_text())["paper_figures"]}


def write_run(root, experiment, task, model, init, token_map, seed, test, losses, fraction="1.0"):
    run = root / "runs" / experiment / task / model / init / token_map / fraction / f"seed-{seed}"
    run.mkdir(parents=True)
    coordinates = dict(experiment=experiment, task=task, model=model, init=init, token_map=token_map,
                       fraction=fraction, seed=seed)
    (run / "metrics.json").write_text(json.dumps({
        "run": coordinates, "metric": "accuracy", "test": test, "dev": test + 0.01, "steps": len(losses),
        "train_seconds": 1.0, "metrics": {"test": {"accuracy": test}, "dev": {"accuracy": test + 0.01}}}))
    pd.DataFrame({"step": range(1, len(losses) + 1), "loss": losses}).to_parquet(run / "curve.parquet")
    return run / "metrics.json"


@pytest.fixture
def runs(tmp_path):
    """A small grid in paper.yaml's names: BERT and from scratch on two DNA tasks (two seeds), and
    the pipeline's checkpoints at 0, 20K and 1M steps on one."""
    paths = []
    for task in ("h3", "h4"):
        for seed, shift in ((100, 0.0), (101, 0.1)):
            paths.append(write_run(tmp_path, "table2", task, "bert-base-uncased", "pretrained", "most-frequent", seed,
                                   0.8 + shift / 10, [1.0 - shift, 0.5, 0.2]))
            paths.append(write_run(tmp_path, "table2", task, "bert-base-uncased", "scratch", "most-frequent", seed,
                                   0.6, [1.0, 0.9, 0.8 + shift]))
    for step, test in ((0, 0.5), (20000, 0.7), (1000000, 0.8)):
        paths.append(write_run(tmp_path, "figure4-dna-music", "h3", f"bert-base-paper@{step}", "pretrained",
                               "most-frequent", 100, test, [1.0, 0.8]))
    return collect(paths), paths


def test_a_curve_selects_the_runs_it_names_and_a_series_every_checkpoint(runs):
    table, _ = runs
    bert = {"label": "BERT", "experiment": "table2", "model": "bert-base-uncased", "init": "pretrained",
            "token_map": "most-frequent", "fraction": 1.0}
    assert sorted(select(table, bert, "h3")["seed"]) == [100, 101]
    series = {"label": "ours", "pretrain": "bert-base-paper", "init": "pretrained"}
    assert sorted(select(table, series, "h3")["model"]) == ["bert-base-paper@0", "bert-base-paper@1000000",
                                                            "bert-base-paper@20000"]
    assert select(table, series, "h4").empty


def test_a_paper_figure_has_a_row_per_sub_figure_and_a_panel_per_task():
    figure = paper_figure(PAPER_FIGURES["appendix_figure3"])
    assert [row["title"] for row in figure["rows"]] == ["(a) DNA", "(b) music: composer (MAESTRO)"]
    assert [[panel["task"] for panel in row["panels"]] for row in figure["rows"]] == [["h3", "h4", "h3k9ac", "splice"],
                                                                                      ["composer"]]
    assert [curve["label"] for curve in figure["rows"][0]["panels"][0]["curves"]] == [
        "BERT", "from scratch", "BERT (random-real)", "from scratch (random-real)"]


def test_the_papers_figures_are_laid_out_as_printed():
    assert list(PAPER_FIGURES) == ["figure2", "appendix_figure3", "figure3", "appendix_figure1", "appendix_figure2",
                                   "appendix_figure4", "figure3_multiberts"]
    kinds = {name: (spec["kind"], spec.get("split", "test")) for name, spec in PAPER_FIGURES.items()}
    assert kinds == {"figure2": ("loss", "test"), "appendix_figure3": ("loss", "test"), "figure3": ("steps", "test"),
                     "appendix_figure1": ("steps", "dev"), "appendix_figure2": ("steps", "dev"),
                     "appendix_figure4": ("steps", "test"), "figure3_multiberts": ("steps", "test")}
    for spec in PAPER_FIGURES.values():
        if spec["kind"] == "steps":  # checkpoint series, and the official BERT as reference lines
            for row in spec["rows"]:
                series = [c for c in row["curves"] if "pretrain" in c]
                references = [c for c in row["curves"] if "pretrain" not in c]
                assert series and all("model" not in c for c in series)
                assert references and all(c["model"] == "bert-base-uncased" for c in references)
    multiberts = PAPER_FIGURES["figure3_multiberts"]["rows"]
    assert [c.get("pretrain") for c in multiberts[1]["curves"]] == [f"multiberts-seed{n}" for n in range(5)] + [None]


def svg_texts(path):
    return set(re.findall(r"<!-- (.*?) -->", path.read_text()))


def test_paper_figures_are_drawn_with_titles_axes_legends_and_absent_curves_named(runs, tmp_path):
    table, _ = runs
    loss = paper_figure(PAPER_FIGURES["appendix_figure3"])
    draw_figure(loss, table, [tmp_path / "loss.png", tmp_path / "loss.svg"])
    assert (tmp_path / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    texts = svg_texts(tmp_path / "loss.svg")
    assert {"(a) DNA", "h3", "h4", "optimiser step", "training loss", "BERT (n=2 seeds)",
            "from scratch (n=2 seeds)"} <= texts
    # h3k9ac, splice and composer did not run, nor did any run with the random-real table
    assert "no runs: BERT, from scratch, BERT (random-real), from scratch (random-real)" in texts
    assert "no runs: BERT (random-real), from scratch (random-real)" in texts
    steps = paper_figure(PAPER_FIGURES["appendix_figure4"])
    draw_figure(steps, table, [tmp_path / "steps.svg"])
    texts = svg_texts(tmp_path / "steps.svg")
    assert {"0", "20K", "1M", "pre-training steps", "test accuracy (%)", "BERT (our pre-training)",
            "google (n=2 seeds)"} <= texts


def test_without_paper_figures_one_figure_of_each_kind_covers_every_run(runs):
    table, _ = runs
    figures = overview_figures(table)
    loss_panels = figures["loss"]["rows"][0]["panels"]
    assert [(p["task"], p["title"]) for p in loss_panels] == [("h3", "h3\n[table2]"), ("h4", "h4\n[table2]"),
                                                              ("h3", "h3\n[figure4-dna-music]")]
    assert [c["label"] for c in loss_panels[0]["curves"]] == ["bert-base-uncased (pretrained)",
                                                             "bert-base-uncased (scratch)"]
    (steps,) = figures["steps"]["rows"][0]["panels"]
    assert [c["label"] for c in steps["curves"]] == ["bert-base-paper (pretrained)", "bert-base-uncased (off the shelf)"]


def test_aggregate_draws_each_paper_figure_to_the_files_named_after_it(runs, tmp_path):
    _, paths = runs
    out = tmp_path / "out"
    specs = [PAPER_FIGURES["appendix_figure3"], PAPER_FIGURES["appendix_figure4"]]
    files = [out / f"{spec['name']}.{suffix}" for spec in specs for suffix in ("png", "svg")]
    aggregate(paths, {"tables": [out / "results.csv"], "paper_figures": files}, {"paper_figures": specs})
    assert all(path.stat().st_size > 0 for path in files)
    assert "Appendix Figure 4: test performance" in (out / "appendix_figure4.svg").read_text()
    assert not (out / "loss_curves.png").exists()


def test_the_headline_figure_has_a_panel_per_experiment_and_a_bar_per_variant(runs, tmp_path):
    table, _ = runs
    draw_headline(table, [tmp_path / "headline.svg"])
    texts = svg_texts(tmp_path / "headline.svg")
    assert {"table2", "figure4-dna-music", "pretrained", "scratch", "bert-base-paper@20000", "test metric (%)"} <= texts
    # two panels; table2 draws 2 tasks x 2 inits, the checkpoints 3 models on one task: 7 bars
    assert len(re.findall(r'<g id="patch_\d+">', (tmp_path / "headline.svg").read_text())) >= 7


def test_the_data_table_counts_each_split_and_label_and_the_runtime_table_each_experiment(runs, tmp_path):
    table, paths = runs
    records = [{"id": f"r{i}", "split": split, "input_ids": [1, 5, 2], "group": f"r{i}", "label": label}
               for i, (split, label) in enumerate([("train", 0)] * 3 + [("train", 1)] * 2 + [("dev", 1), ("test", 0)])]
    tokens.write_token_file(tmp_path / "h3.parquet", records, {
        "task": "h3", "kind": "classification", "label_names": ["no", "yes"],
        "split_counts": split_counts(records, ["no", "yes"], "classification")})
    data = data_summary([tmp_path / "h3.parquet", dna_token_file(tmp_path / "native.parquet", n=20)])
    assert data.to_dict("records")[:2] == [{"task": "h3", "vocabulary": "h3", "label": "no", "train": 3, "dev": 0, "test": 1},
                                           {"task": "h3", "vocabulary": "h3", "label": "yes", "train": 2, "dev": 1, "test": 0}]
    # a token file without per-label counts (an earlier release's) gives its split sizes
    assert data.to_dict("records")[2] == {"task": "dna", "vocabulary": "native", "label": "all", "train": 14, "dev": 3,
                                          "test": 3}
    times = runtime_summary(table)
    assert times.to_dict("records") == [
        {"experiment": "table2", "model": "bert-base-uncased", "runs": 8, "steps": 3.0, "seconds_per_run": 1.0,
         "total_minutes": 0.1},
        {"experiment": "figure4-dna-music", "model": "bert-base-paper@0", "runs": 1, "steps": 2.0,
         "seconds_per_run": 1.0, "total_minutes": 0.0},
        {"experiment": "figure4-dna-music", "model": "bert-base-paper@20000", "runs": 1, "steps": 2.0,
         "seconds_per_run": 1.0, "total_minutes": 0.0},
        {"experiment": "figure4-dna-music", "model": "bert-base-paper@1000000", "runs": 1, "steps": 2.0,
         "seconds_per_run": 1.0, "total_minutes": 0.0}]
    out = tmp_path / "out"
    aggregate(paths, {"data_tables": [out / "data.md"], "runtime_tables": [out / "runtimes.csv"],
                      "overview": [out / "overview.rst"]}, token_files=[tmp_path / "h3.parquet"])
    assert "| h3 | h3 | yes | 2 | 1 | 0 |" in (out / "data.md").read_text()
    assert "total_minutes" in (out / "runtimes.csv").read_text()
    assert "Fine-tuning: 11 runs, 0.2 minutes of training in all" in (out / "overview.rst").read_text()
