"""Paired comparisons: each contrast the paper draws between runs that differ in one coordinate
(pretrained vs scratch, most-frequent vs unused tokens, a checkpoint vs step 0, ...), measured on
the test metric as a difference with its uncertainty.

Two sources of noise, two intervals (docs/statistics.md says why these tests):
- over seeds: the runs of a contrast are paired by seed (same data order and draws); the mean of
  the paired differences gets a 95% t interval and a paired t-test (two or more seeds);
- over test examples: a paired bootstrap that resamples the test set (pieces, for a vote metric)
  with the same draws for both arms and every seed, and recomputes the mean difference; a single
  seed gets an interval too, but it says nothing about a reseed.
"""

import math
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from . import metrics
from .grid import RUN_KEYS

# runs pair across experiments only where they trained with the same settings
PAIR_KEYS = [k for k in RUN_KEYS if k != "experiment"] + ["settings"]
RESAMPLES = 1000  # bootstrap draws: the 2.5% and 97.5% percentiles move by < 0.1 point beyond this
BOOTSTRAP_SEED = 0  # fixed, so that a rerun of the aggregation writes the same table
COLUMNS = ["comparison", "task", "model", "init", "token_map", "fraction", "metric", "seeds", "a", "b", "diff",
           "seed_low", "seed_high", "p_value", "test_low", "test_high"]
NOTE = ("a and b: the test metric (percent) of the two arms, mean over seeds; diff: mean paired difference a − b; "
        "seed interval: 95% t interval of diff over seeds, p: paired t-test (both need two or more seeds); test "
        "interval: 95% paired bootstrap over test examples ({resamples} resamples). The compared coordinate shows "
        "`a − b`.")


def pair_runs(runs, contrast):
    """The runs of `contrast` paired: one row per (cell, seed) with both arms' `test` and `run_dir`
    (suffixes _a and _b); the two runs of a pair also trained with the same settings. Runs of the
    same coordinates and settings in two experiments count once."""
    runs = runs.drop_duplicates(subset=PAIR_KEYS)
    vary = contrast["vary"]
    if vary == "step":  # every checkpoint of a series against the same series' step 0
        checkpoints = runs[runs["model"].str.contains("@")]
        if checkpoints.empty:
            return checkpoints
        series_step = checkpoints["model"].str.rsplit("@", n=1, expand=True)
        checkpoints = checkpoints.assign(series=series_step[0], step=series_step[1].astype(int))
        a, b = checkpoints[checkpoints["step"] != 0], checkpoints[checkpoints["step"] == 0]
        keys = ["series"] + [k for k in PAIR_KEYS if k != "model"]
        paired = a.merge(b, on=keys, suffixes=("_a", "_b"))
        return paired.assign(model=paired["model_a"] + " − @0")
    a, b = runs[runs[vary] == contrast["a"]], runs[runs[vary] == contrast["b"]]
    paired = a.merge(b, on=[k for k in PAIR_KEYS if k != vary], suffixes=("_a", "_b"))
    return paired.assign(**{vary: f"{contrast['a']} − {contrast['b']}"})


def compare(runs, contrasts, resamples=RESAMPLES):
    """The comparisons table: one row per contrast and cell (task, model, init, token map,
    fraction), COLUMNS, metrics in percent. `runs` is aggregate.collect's table."""
    rows = []
    for contrast in contrasts:
        paired = pair_runs(runs, contrast)
        if paired.empty:
            continue
        cells = ["task", "model", "init", "token_map", "fraction"]
        for cell, group in paired.groupby(cells, sort=False):
            metric = group["metric_a"].iloc[0]
            a, b = 100 * group["test_a"].to_numpy(float), 100 * group["test_b"].to_numpy(float)
            low, high, p = seed_interval(a - b)
            test_low, test_high = bootstrap_interval(list(group["run_dir_a"]), list(group["run_dir_b"]), metric,
                                                     resamples)
            rows.append([contrast["name"], *cell, metric, len(group), a.mean(), b.mean(), (a - b).mean(),
                         low, high, p, test_low, test_high])
    table = pd.DataFrame(rows, columns=COLUMNS)
    rounded = ["a", "b", "diff", "seed_low", "seed_high", "test_low", "test_high"]
    table[rounded] = table[rounded].round(1)
    table["p_value"] = table["p_value"].round(4)
    return table


def seed_interval(differences, confidence=0.95):
    """(low, high, p) of the mean of paired differences: the t interval and the paired t-test's
    two-sided p; NaN for fewer than two seeds, and p NaN where every difference is the same (no
    spread to test against)."""
    n = len(differences)
    if n < 2:
        return math.nan, math.nan, math.nan
    mean, spread = differences.mean(), differences.std(ddof=1)
    if spread == 0:
        return mean, mean, math.nan
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * spread / math.sqrt(n)
    return mean - half, mean + half, float(stats.ttest_1samp(differences, 0.0).pvalue)


def bootstrap_interval(run_dirs_a, run_dirs_b, metric, resamples=RESAMPLES, confidence=0.95):
    """The paired bootstrap interval (percent) of the mean over seeds of metric(a) − metric(b) on
    the test split: run_dirs_a[i] and run_dirs_b[i] are seed i's two runs. Every draw resamples the
    same test examples for all of them. NaN where a run saved no test predictions."""
    arms = [[_test_predictions(d) for d in dirs] for dirs in (run_dirs_a, run_dirs_b)]
    if any(p is None or p.empty for arm in arms for p in arm):
        return math.nan, math.nan
    units = _units(arms[0][0], metric)
    if any(not _units(p, metric).equals(units) for arm in arms for p in arm):
        raise ValueError(f"runs compared on different test examples: {run_dirs_a[0]} and {run_dirs_b[0]}")
    draws = np.random.default_rng(BOOTSTRAP_SEED).integers(0, len(units), size=(resamples, len(units)))
    scores = [[_resampled_scores(p, metric, draws) for p in arm] for arm in arms]
    differences = 100 * (np.mean(scores[0], axis=0) - np.mean(scores[1], axis=0))
    tail = 100 * (1 - confidence) / 2
    return tuple(np.percentile(differences, [tail, 100 - tail]))


def _test_predictions(run_dir):
    path = Path(run_dir) / "predictions.parquet"
    if not path.exists():
        return None
    predictions = pd.read_parquet(path)
    return predictions[predictions["split"] == "test"].sort_values("id", kind="stable").reset_index(drop=True)


def _units(predictions, metric):
    """What the bootstrap resamples: the pieces of a vote metric (whose score is per piece), else
    the examples."""
    return pd.Series(pd.unique(predictions["group"])) if metric == "vote_accuracy" else predictions["id"]


def _resampled_scores(predictions, metric, draws):
    """`metric` of the test predictions resampled at each row of `draws` (unit positions). A mean
    over units (accuracy, and vote accuracy over the pieces, each voted once) is one array
    operation for all draws; other metrics, and the mean of subsets' metrics (MNLI), are recomputed
    per draw."""
    labels, preds = predictions["label"].to_numpy(), predictions["prediction"].to_numpy()
    if metric == "vote_accuracy":
        truth, voted = metrics.vote(predictions["group"], labels, preds)
        return (np.asarray(truth) == np.asarray(voted))[draws].mean(axis=1)
    subsets = "subset" in predictions and predictions["subset"].nunique() > 1
    if metric == "accuracy" and not subsets:
        return (labels == preds)[draws].mean(axis=1)
    kind = metrics.kind_of(metric)
    if subsets:
        return np.array([metrics.score(predictions.iloc[draw], preds[draw], kind)[metric] for draw in draws])
    return np.array([metrics.evaluate(kind, labels[draw], preds[draw])[metric] for draw in draws])


def interval(low, high, sign=""):
    """`[low, high]` to one decimal (`sign="+"`: signed), or "" where there is none (NaN)."""
    return "" if pd.isna(low) else f"[{low:{sign}.1f}, {high:{sign}.1f}]"


def to_markdown(table, resamples=RESAMPLES):
    header = ["comparison", "task", "model", "init", "token map", "data", "metric", "seeds", "a", "b", "a − b",
              "seed 95% interval", "p", "test 95% interval"]
    lines = [NOTE.format(resamples=resamples), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.itertuples(index=False):
        seed, test = interval(r.seed_low, r.seed_high), interval(r.test_low, r.test_high)
        p = "" if pd.isna(r.p_value) else f"{r.p_value:.3g}"
        lines.append(f"| {r.comparison} | {r.task} | {r.model} | {r.init} | {r.token_map} | {r.fraction} | {r.metric} "
                     f"| {r.seeds} | {r.a:.1f} | {r.b:.1f} | {r.diff:+.1f} | {seed} | {p} | {test} |")
    return "\n".join(lines) + "\n"


def to_latex(table, resamples=RESAMPLES):
    def escape(text):
        return str(text).replace("%", r"\%").replace("_", r"\_").replace("&", r"\&").replace("−", "$-$")

    lines = [f"% {NOTE.format(resamples=resamples).replace('−', '-')}", r"\begin{tabular}{lllllrrrrll}", r"\hline",
             r"comparison & task & model & init & token map & seeds & a & b & $a-b$ & seeds 95\% & test 95\% \\",
             r"\hline"]
    for r in table.itertuples(index=False):
        seed, test = interval(r.seed_low, r.seed_high), interval(r.test_low, r.test_high)
        cells = [r.comparison, r.task, r.model, r.init, r.token_map, r.seeds, f"{r.a:.1f}", f"{r.b:.1f}",
                 f"{r.diff:+.1f}", seed, test]
        lines.append(" & ".join(escape(c) for c in cells) + r" \\")
    return "\n".join(lines + [r"\hline", r"\end{tabular}"]) + "\n"
