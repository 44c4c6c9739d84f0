"""The paper's tables laid out from a runs table and the published numbers: rows and columns as
printed, our number (mean ± standard deviation over seeds) beside the paper's and the difference,
and why a cell of ours is missing."""

import math

import pandas as pd
import yaml

from conftest import REPO
from crossdisc.aggregate import paper_tables, paper_tables_latex, paper_tables_long, paper_tables_markdown, read_published

PUBLISHED = pd.DataFrame(
    [
        ["table1", "shift 1000", "BERT", "qqp", "f1", "test", "81.2"],
        ["table1", "shift 1000", "BERT", "stsb", "spearman", "test", "77.8"],
        ["table1", "shift 1000", "BERT (rand)", "qqp", "f1", "test", "69.3"],
        ["table1", "shift 1000", "BERT (rand)", "stsb", "spearman", "test", "8.3"],
        ["table1", "shift 1000 1% data", "BERT", "qqp", "f1", "test", "66.5"],
        ["table1", "shift 1000 1% data", "BERT", "stsb", "spearman", "test", "57.0"],
        ["appendix_table2", "", "BERT", "composer", "vote_accuracy", "validation", "62.9"],
        ["table2", "", "specific", "composer", "vote_accuracy", "test", ""],
        ["table2", "", "BERT", "composer", "vote_accuracy", "test", "55.2"],
    ],
    columns=["table", "section", "row", "task", "metric", "split", "value"],
)


def run(experiment, task, model, init, token_map, fraction, seed, test, dev):
    return dict(experiment=experiment, task=task, model=model, init=init, token_map=token_map, fraction=fraction,
                seed=seed, metric="x", test=test, dev=dev, steps=1, train_seconds=1.0)


RUNS = pd.DataFrame([
    run("table1-shift1000", "qqp", "bert-base-uncased", "pretrained", "shift-1000", "1.0", 100, 0.80, 0.5),
    run("table1-shift1000", "qqp", "bert-base-uncased", "pretrained", "shift-1000", "1.0", 101, 0.82, 0.5),
    run("table1-shift1000", "stsb", "bert-base-uncased", "pretrained", "shift-1000", "1.0", 100, 0.70, 0.5),
    run("table1-shift1000", "qqp", "bert-base-uncased", "scratch", "shift-1000", "1.0", 100, 0.70, 0.5),
    # the 1%-data run: fraction as its run directory spells it
    run("table1-1pct", "qqp", "bert-base-uncased", "pretrained", "shift-1000", "0.01", 100, 0.60, 0.5),
    run("table2", "composer", "bert-base-uncased", "pretrained", "most-frequent", "1.0", 100, 0.50, 0.60),
    # a run of an experiment no table shows is left out
    run("table2-unused", "composer", "bert-base-uncased", "pretrained", "unused", "1.0", 100, 0.30, 0.30),
])


PAPER_ROWS = yaml.safe_load((REPO / "config" / "paper.yaml").read_text())["paper_rows"]


def test_tables_keep_the_papers_rows_and_columns_with_ours_paper_and_difference():
    tables = paper_tables(RUNS, PAPER_ROWS, PUBLISHED)
    assert list(tables) == ["table1", "appendix_table2", "table2"]
    table1 = tables["table1"]
    assert list(table1.index) == [("shift 1000", "BERT"), ("shift 1000", "BERT (rand)"), ("shift 1000 1% data", "BERT")]
    assert list(table1.columns) == [(t, c) for t in ("qqp", "stsb")
                                    for c in ("ours", "std", "n", "paper", "diff", "note", "metric")]
    bert = table1.loc[("shift 1000", "BERT")]
    assert bert[("qqp", "ours")] == 81.0  # mean of two seeds, in percent
    assert bert[("qqp", "std")] == 1.4 and bert[("qqp", "n")] == 2  # sample standard deviation
    assert bert[("qqp", "paper")] == 81.2 and bert[("qqp", "diff")] == -0.2
    assert bert[("qqp", "metric")] == "f1"
    assert math.isnan(bert[("stsb", "std")]) and bert[("stsb", "n")] == 1
    assert bert[("stsb", "ours")] == 70.0 and bert[("stsb", "diff")] == -7.8
    assert table1.loc[("shift 1000 1% data", "BERT"), ("qqp", "ours")] == 60.0
    rand = table1.loc[("shift 1000", "BERT (rand)")]
    assert math.isnan(rand[("stsb", "ours")]) and rand[("stsb", "paper")] == 8.3  # no such run
    assert rand[("stsb", "note")] == "not in the grid" and rand[("stsb", "n")] == 0


def test_validation_rows_read_dev_and_unrun_rows_stay_empty():
    tables = paper_tables(RUNS, PAPER_ROWS, PUBLISHED)
    assert tables["appendix_table2"].loc[("", "BERT"), ("composer", "ours")] == 60.0  # dev, not test
    assert tables["table2"].loc[("", "BERT"), ("composer", "ours")] == 50.0
    specific = tables["table2"].loc[("", "specific")]
    assert math.isnan(specific[("composer", "ours")]) and math.isnan(specific[("composer", "paper")])  # '-'
    assert specific[("composer", "note")] == "not run here"  # no paper_rows entry


def test_markdown_shows_each_cell_as_ours_paper_and_difference():
    text = paper_tables_markdown(paper_tables(RUNS, PAPER_ROWS, PUBLISHED))
    assert "### table1" in text and "| section | row | qqp (f1) | stsb (spearman) |" in text
    assert "| shift 1000 | BERT | 81.0 ± 1.4 (n=2) / 81.2 (-0.2) | 70.0 / 77.8 (-7.8) |" in text
    assert "| shift 1000 | BERT (rand) | 70.0 / 69.3 (+0.7) | not in the grid / 8.3 |" in text
    assert "|  | specific | not run here / - |" in text


def test_a_partial_aggregation_says_which_seeds_failed_or_did_not_run():
    cell = dict(experiment="table1-shift1000", model="bert-base-uncased", token_map="shift-1000", fraction="1.0")
    missing = [{**cell, "task": "qqp", "init": "pretrained", "seed": 102, "reason": "failed"},
               {**cell, "task": "stsb", "init": "scratch", "seed": 100, "reason": "not run"},
               {**cell, "task": "stsb", "init": "scratch", "seed": 101, "reason": "not run"}]
    table1 = paper_tables(RUNS, PAPER_ROWS, PUBLISHED, missing)["table1"]
    assert table1.loc[("shift 1000", "BERT"), ("qqp", "note")] == "failed: seed 102"
    assert table1.loc[("shift 1000", "BERT"), ("qqp", "ours")] == 81.0  # from the seeds that finished
    assert table1.loc[("shift 1000", "BERT (rand)"), ("stsb", "note")] == "not run: seeds 100, 101"
    text = paper_tables_markdown({"table1": table1})
    assert "| 81.0 ± 1.4 (n=2; failed: seed 102) / 81.2 (-0.2) |" in text
    assert "| not run: seeds 100, 101 / 8.3 |" in text


def test_the_real_published_numbers_lay_out_as_the_papers_four_tables():
    tables = paper_tables(RUNS.iloc[:0], PAPER_ROWS, read_published())
    fields = 7  # ours, std, n, paper, diff, note, metric
    assert {name: frame.shape for name, frame in tables.items()} == {
        "table1": (7, 3 * fields), "appendix_table1": (9, 8 * fields), "table2": (4, 8 * fields),
        "appendix_table2": (3, 8 * fields)}
    assert tables["appendix_table1"].loc[("random shift", "BERT (rand)"), ("rte", "paper")] == 51.0


def test_the_long_table_has_one_row_per_printed_cell():
    long = paper_tables_long(paper_tables(RUNS, PAPER_ROWS, PUBLISHED))
    assert list(long.columns) == ["table", "section", "row", "task", "metric", "ours", "std", "n", "paper", "diff",
                                  "note"]
    assert len(long) == 3 * 2 + 1 + 2  # table1: 3 rows x 2 tasks; appendix_table2: 1; table2: 2 rows x 1
    bert = long.query("table == 'table1' and row == 'BERT' and section == 'shift 1000' and task == 'qqp'").iloc[0]
    assert (bert["ours"], bert["std"], bert["n"], bert["metric"]) == (81.0, 1.4, 2, "f1")
    assert long.query("row == 'specific'")["note"].item() == "not run here"


def test_latex_has_one_tabular_per_table_with_the_same_cells_as_markdown():
    tables = paper_tables(RUNS, PAPER_ROWS, PUBLISHED)
    latex = paper_tables_latex(tables)
    assert latex.count("\\begin{tabular}") == 3
    assert "shift 1000 & BERT & 81.0 $\\pm$ 1.4 (n=2) / 81.2 (-0.2) & 70.0 / 77.8 (-7.8) \\\\" in latex
    assert "shift 1000 1\\% data & BERT & 60.0 / 66.5 (-6.5)" in latex


def test_a_row_of_models_of_different_tasks_shows_ours_where_its_entry_runs_the_task():
    published = pd.DataFrame([["table2", "", "specific", "h3", "accuracy", "test", "87.3"],
                              ["table2", "", "specific", "localization", "accuracy", "test", "69.0"]],
                             columns=PUBLISHED.columns)
    runs = pd.DataFrame([run("table2-hilbert-cnn", "h3", "hilbert-cnn", "scratch", "native", "1.0", 100, 0.85, 0.86)])
    specific = paper_tables(runs, PAPER_ROWS, published)["table2"].loc[("", "specific")]
    assert specific[("h3", "ours")] == 85.0 and specific[("h3", "diff")] == -2.3
    assert specific[("localization", "note")] == "not run here"  # PLUS-TFM
