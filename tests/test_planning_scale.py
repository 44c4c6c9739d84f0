"""The planning benchmark stays runnable: a small sweep of the real Snakefile plans, against a bare
Snakefile of as many jobs."""

import sys

import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import planning_scale  # noqa: E402


def test_the_sweep_has_the_asked_number_of_runs_over_the_embedded_defaults_tasks(tmp_path):
    config = planning_scale.sweep_config(300, tmp_path)
    runs = sum(len(spec["tasks"]) * len(spec["models"]) * len(spec.get("inits", ["pretrained"]))
               * len(spec["token_maps"]) * len(spec["seeds"]) for spec in config["experiments"].values())
    assert runs == 300 and config["results"] == str(tmp_path)
    assert {t for spec in config["experiments"].values() for t in spec["tasks"]} == set(config["tasks"])
    with pytest.raises(SystemExit):
        planning_scale.sweep_config(150, tmp_path)


def test_both_plans_are_timed_and_the_last_line_is_their_ratio(capsys):
    ratio = planning_scale.main(["--runs", "100", "--profile"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert ratio > 0 and lines[-1] == f"ratio ours / bare: {ratio:.2f}x"
    assert lines[0].startswith("ours: ") and lines[1].startswith("bare: ")
    assert any("common.smk:finetune_inputs" in line for line in lines)
