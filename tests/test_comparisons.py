import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from crossdisc import aggregate, comparisons, metrics

PAPER_CONTRASTS = [
    {"name": "pretrained vs scratch", "vary": "init", "a": "pretrained", "b": "scratch"},
    {"name": "checkpoint vs step 0", "vary": "step"},
]


def write_run(root, experiment, task, model, init, seed, labels, predictions, token_map="most-frequent",
              metric="accuracy", groups=None, hparams=None):
    """A finished run directory: metrics.json as finetune writes it and test predictions."""
    run = {"experiment": experiment, "task": task, "model": model, "init": init, "token_map": token_map,
           "fraction": "1.0", "seed": seed}
    run_dir = root / experiment / task / model / init / str(seed)
    run_dir.mkdir(parents=True)
    frame = pd.DataFrame({"split": "test", "id": [f"x{i}" for i in range(len(labels))],
                          "group": groups if groups is not None else [f"x{i}" for i in range(len(labels))],
                          "subset": "", "label": labels, "prediction": predictions})
    frame.to_parquet(run_dir / "predictions.parquet", index=False)
    test = metrics.score(frame, frame["prediction"].to_numpy(), metrics.kind_of(metric))[metric]
    summary = {"run": run, "metric": metric, "test": test, "dev": None, "steps": 1, "train_seconds": 1.0,
               "metrics": {"test": {metric: test}}, "hparams": hparams or {"lr": 1e-4}}
    (run_dir / "metrics.json").write_text(json.dumps(summary))
    return run_dir / "metrics.json"


def test_the_seed_interval_is_the_t_interval_and_the_paired_t_test():
    low, high, p = comparisons.seed_interval(np.array([1.0, 2.0, 3.0]))
    half = 4.302653 / math.sqrt(3)  # t(0.975, 2 degrees of freedom) x sd 1 / sqrt(3)
    assert (low, high) == pytest.approx((2 - half, 2 + half), abs=1e-5)
    assert p == pytest.approx(2 * stats.t.sf(2 / (1 / math.sqrt(3)), 2)) and p == pytest.approx(0.0742, abs=1e-4)
    assert all(math.isnan(v) for v in comparisons.seed_interval(np.array([5.0])))
    low, high, p = comparisons.seed_interval(np.array([0.0, 0.0, 0.0]))  # all at the majority class
    assert (low, high) == (0.0, 0.0) and math.isnan(p)


def test_the_paired_bootstrap_interval_matches_the_normal_approximation(tmp_path):
    # a right on all 400 examples, b on 300: each example differs by 1 (100 of them) or 0, so the
    # difference is 25 points with a standard error of sqrt(.25 * .75 / 400) = 2.165 points
    labels = np.zeros(400, int)
    wrong = np.zeros(400, int)
    wrong[::4] = 1
    a = write_run(tmp_path, "e", "t", "m", "pretrained", 100, labels, labels).parent
    b = write_run(tmp_path, "e", "t", "m", "scratch", 100, labels, wrong).parent
    low, high = comparisons.bootstrap_interval([a], [b], "accuracy")
    assert low == pytest.approx(25 - 1.96 * 2.165, abs=0.8) and high == pytest.approx(25 + 1.96 * 2.165, abs=0.8)
    assert comparisons.bootstrap_interval([a], [a], "accuracy") == (0.0, 0.0)


def test_a_vote_metric_is_resampled_by_piece(tmp_path):
    # 4 pieces of 3 segments; a votes every piece right, b every piece wrong: whatever pieces a draw
    # takes, the difference is 100 points (resampling segments could split a piece's vote)
    groups = [g for g in "abcd" for _ in range(3)]
    labels = np.array([0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1])
    a = write_run(tmp_path, "e", "t", "m", "pretrained", 100, labels, labels, metric="vote_accuracy", groups=groups)
    b = write_run(tmp_path, "e", "t", "m", "scratch", 100, labels, 1 - labels, metric="vote_accuracy", groups=groups)
    assert comparisons.bootstrap_interval([a.parent], [b.parent], "vote_accuracy") == (100.0, 100.0)


@pytest.mark.parametrize("metric", ["accuracy", "vote_accuracy", "mcc", "spearman"])
def test_each_resample_scores_as_the_metric_itself_on_the_resampled_examples(metric):
    """Accuracy and vote accuracy take one array operation for all draws; each draw's score is
    still metrics.score of the resampled predictions (of the resampled pieces, for a vote)."""
    rng = np.random.default_rng(0)
    regression = metric == "spearman"
    labels = rng.normal(size=60) if regression else rng.integers(0, 3, 60)
    preds = labels + rng.normal(size=60) if regression else np.where(rng.random(60) < 0.6, labels, rng.integers(0, 3, 60))
    groups = [f"piece{i // 4}" for i in range(60)]
    frame = pd.DataFrame({"id": [f"x{i}" for i in range(60)], "group": groups, "subset": "", "label": labels,
                          "prediction": preds})
    units = frame["group"].unique() if metric == "vote_accuracy" else frame["id"]
    draws = rng.integers(0, len(units), size=(20, len(units)))
    expected = []
    for draw in draws:
        if metric == "vote_accuracy":  # the drawn pieces, each with all its segments, a repeat counting twice
            truth, voted = metrics.vote(frame["group"], frame["label"], frame["prediction"])
            expected.append(metrics.accuracy(np.asarray(truth)[draw], np.asarray(voted)[draw]))
        else:
            sample = frame.iloc[draw]
            expected.append(metrics.score(sample, sample["prediction"].to_numpy(), metrics.kind_of(metric))[metric])
    assert comparisons._resampled_scores(frame, metric, draws) == pytest.approx(expected)


def test_runs_pair_by_seed_across_experiments_and_checkpoints_pair_with_step_0(tmp_path):
    labels = np.array([0, 1] * 10)
    paths = []
    for seed, (a_right, b_right) in zip([100, 101, 102], [(20, 10), (18, 12), (16, 10)]):
        for init, right, experiment in (("pretrained", a_right, "table"), ("scratch", b_right, "scratch-runs")):
            preds = labels.copy()
            preds[right:] = 1 - preds[right:]
            paths.append(write_run(tmp_path, experiment, "dna", "bert", init, seed, labels, preds))
    for step, right in ((0, 10), (3, 16)):
        paths.append(write_run(tmp_path, "steps", "dna", f"mini@{step}", "pretrained", 100, labels,
                               np.where(np.arange(20) < right, labels, 1 - labels)))
    table = comparisons.compare(aggregate.collect(paths), PAPER_CONTRASTS, resamples=200)

    init = table[table["comparison"] == "pretrained vs scratch"].iloc[0]
    differences = np.array([50.0, 30.0, 30.0])  # (20-10)/20, (18-12)/20, (16-10)/20 in points
    low, high, p = comparisons.seed_interval(differences)
    assert (init["init"], init["seeds"], init["diff"]) == ("pretrained − scratch", 3, pytest.approx(36.7, abs=0.05))
    assert (init["seed_low"], init["seed_high"], init["p_value"]) == pytest.approx(
        (round(low, 1), round(high, 1), round(p, 4)))
    assert init["test_low"] < init["diff"] < init["test_high"]

    step = table[table["comparison"] == "checkpoint vs step 0"].iloc[0]
    assert (step["model"], step["seeds"], step["diff"]) == ("mini@3 − @0", 1, 30.0)
    assert math.isnan(step["seed_low"]) and step["test_low"] < 30 < step["test_high"]
    assert "| pretrained vs scratch | dna | bert | pretrained − scratch |" in comparisons.to_markdown(table)
    assert r"\begin{tabular}" in comparisons.to_latex(table)


def test_runs_on_different_test_examples_are_not_compared(tmp_path):
    a = write_run(tmp_path, "e", "t", "m", "pretrained", 100, [0, 1], [0, 1]).parent
    b = write_run(tmp_path, "e", "t", "m", "scratch", 100, [0, 1, 1], [0, 1, 1]).parent
    with pytest.raises(ValueError, match="different test examples"):
        comparisons.bootstrap_interval([a], [b], "accuracy")


def test_runs_trained_with_other_settings_are_not_paired(tmp_path):
    labels = np.array([0, 1] * 5)
    paths = [write_run(tmp_path, "e", "t", "m", "pretrained", 100, labels, labels),
             write_run(tmp_path, "f", "t", "m", "scratch", 100, labels, 1 - labels, hparams={"lr": 5e-4})]
    assert comparisons.compare(aggregate.collect(paths), PAPER_CONTRASTS).empty


def test_contrasts_without_runs_on_both_sides_are_left_out(tmp_path):
    labels = np.array([0, 1])
    paths = [write_run(tmp_path, "e", "t", "m", "pretrained", 100, labels, labels)]  # no scratch, no checkpoints
    assert comparisons.compare(aggregate.collect(paths), PAPER_CONTRASTS).empty


def test_the_reports_landing_page_is_valid_rst_with_the_comparisons_and_links(tmp_path):
    from docutils.core import publish_parts

    labels = np.array([0, 1] * 10)
    paths = [write_run(tmp_path, "e", "dna", "bert", init, 100, labels, preds)
             for init, preds in (("pretrained", labels), ("scratch", 1 - labels))]
    runs = aggregate.collect(paths)
    rst = aggregate.overview_rst(comparisons.compare(runs, PAPER_CONTRASTS, resamples=50), runs)
    # the report appends a link target for each of its files; the page links five of them
    targets = "\n".join(f".. _{name}: #" for name in ("results.html", "headline.png", "comparisons.md", "data.md",
                                                       "runtimes.md"))
    html = publish_parts(rst + "\n" + targets, writer="html", settings_overrides={"report_level": 2})["html_body"]
    assert html.count("<table") == 1 and "system-message" not in html
    assert "<td>+100.0</td>" in html and "pretrained vs scratch" in html
    page = aggregate.results_html(aggregate.summarise(runs))
    assert page.count("<tr") == 3 and "<td>100.0</td>" in page


def test_names_in_the_landing_page_stay_text():
    from docutils.core import publish_parts

    rst = aggregate._list_table("t", ["model"], [["small-bert@600 − @0"], ["a_b*"]])
    html = publish_parts(rst, writer="html", settings_overrides={"report_level": 2})["html_body"].replace("&#64;", "@")
    assert "<td>small-bert@600 − @0</td>" in html and "<td>a_b*</td>" in html and "mailto" not in html
