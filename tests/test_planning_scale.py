"""The planning benchmark stays runnable: a small sweep of the real Snakefile plans, against bare
Snakefiles of as many jobs."""

import csv
import io
import subprocess
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


def test_the_same_shape_snakefile_plans_the_sweeps_runs(tmp_path):
    config = planning_scale.sweep_config(100, tmp_path / "results")
    (tmp_path / "Snakefile").write_text(planning_scale.same_shape_snakefile(config))
    result = subprocess.run([planning_scale.SNAKEMAKE, "-s", str(tmp_path / "Snakefile"), "-d", str(tmp_path / "work"),
                             "--detailed-summary", "--cores", "1"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout), delimiter="\t"))
    runs = {row["output_file"].rsplit("/", 1)[0] for row in rows if row["rule"] == "finetune"}
    assert len(runs) == 100 and "aggregate" in {row["rule"] for row in rows}


def test_every_plan_is_timed_and_the_last_lines_are_the_ratios(capsys, tmp_path):
    ratio = planning_scale.main(["--runs", "100", "--profile", "--results-dir", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert ratio > 0 and lines[-1] == f"ratio ours / bare, same job shape: {ratio:.2f}x"
    assert lines[-2].startswith("ratio ours / bare, minimal: ")
    assert [line.split(":")[0] for line in lines[:3]] == ["ours", "bare, same job shape", "bare, minimal"]
    assert any("common.smk:finetune_inputs" in line for line in lines)
    # the results file holds the same figures, under the command that measured them
    written = (tmp_path / "planning_scale-cpu.md").read_text()
    assert f"## `python benchmarks/planning_scale.py --runs 100 --profile --results-dir {tmp_path}`" in written
    assert f"| bare, same job shape | {lines[1].split()[4]} | {ratio:.2f}x |" in written
