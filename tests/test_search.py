"""The ranking of a grid search (aggregate.search_ranking) and its figure, on runs with known scores."""

import json

import pandas as pd
import pytest

from crossdisc import aggregate

SEARCH = {"appendix": {"points": {f"appendix.optimizer-{o}.lr-{lr}": {"optimizer": o, "lr": lr}
                                  for o in ("adam", "radam") for lr in (1e-5, 1e-6)},
                       "select_on": {"split": "train"}}}
TRAIN_F1 = {("adam", 1e-5): [0.9, 0.8, 0.85], ("adam", 1e-6): [0.6, 0.7, 0.65],
            ("radam", 1e-5): [0.95, 0.5, 0.6], ("radam", 1e-6): [0.7, 0.72, 0.74]}


def search_runs(tmp_path):
    paths = []
    for (optimizer, lr), values in TRAIN_F1.items():
        for seed, value in zip((100, 101, 102), values):
            run = {"experiment": f"appendix.optimizer-{optimizer}.lr-{lr}", "task": "mrpc", "model": "bert",
                   "init": "scratch", "token_map": "shift-1000", "fraction": "1.0", "seed": seed}
            path = tmp_path / f"{optimizer}-{lr}-{seed}.json"
            path.write_text(json.dumps({"run": run, "metric": "f1", "test": 0.5, "dev": None, "steps": 1,
                                        "train_seconds": 1.0,
                                        "metrics": {"test": {"f1": 0.5}, "train": {"f1": value, "accuracy": 0.1}}}))
            paths.append(path)
    return aggregate.collect(paths)


def test_the_search_ranks_its_points_by_the_mean_training_f1_and_selects_the_best(tmp_path):
    ranking = aggregate.search_ranking(search_runs(tmp_path), SEARCH)
    assert ranking[["optimizer", "lr"]].values.tolist() == [["adam", 1e-5], ["radam", 1e-6], ["radam", 1e-5],
                                                            ["adam", 1e-6]]
    best = ranking.iloc[0]
    assert (best["mean"], best["std"], best["n"], best["select_on"]) == (85.0, 5.0, 3, "train f1")
    assert ranking["selected"].tolist() == [True, False, False, False]
    markdown = aggregate.search_markdown(ranking)
    assert "| 1 | adam | 1e-05 | 85.0 | 5.0 | 3 | selected |" in markdown


def test_the_search_figure_is_a_heat_map_of_two_settings(tmp_path):
    ranking = aggregate.search_ranking(search_runs(tmp_path), SEARCH)
    aggregate.draw_search(ranking, [tmp_path / "search_appendix.png"])
    assert (tmp_path / "search_appendix.png").read_bytes()[:4] == b"\x89PNG"


def test_a_point_without_the_selection_split_has_no_mean_and_is_ranked_last(tmp_path):
    runs = search_runs(tmp_path)
    runs["scores"] = [{} if "radam" in e else s for e, s in zip(runs["experiment"], runs["scores"])]
    ranking = aggregate.search_ranking(runs, SEARCH)
    assert ranking["n"].tolist() == [3, 3, 0, 0] and pd.isna(ranking["mean"].iloc[-1])
    assert ranking["selected"].tolist() == [True, False, False, False]
