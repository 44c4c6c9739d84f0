"""The project's own promises: pinned installs, conda and pip in step, a clean Snakefile."""

import json
import os
import re
import subprocess
import sys
import tomllib

import yaml

from conftest import REPO, plan, tiny_config, write_config


def pip_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["offline"])


def test_torch_is_pinned_exactly():
    assert "torch==2.13.0" in pip_requirements()


def test_conda_environment_names_the_same_packages_as_pyproject():
    env = yaml.safe_load((REPO / "envs/crossdisc.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {p for p in pip if not p.startswith("-e")} == pip_requirements()


def test_the_conda_environment_installs_this_project_from_where_snakemake_creates_it(tmp_path):
    """Snakemake copies the env file to .snakemake/conda/ and conda hands its pip section to pip as a
    requirements file there: resolved from such a place, the project entry must still name this
    repository (the Snakefile sets CROSSDISC_ROOT)."""
    env = yaml.safe_load((REPO / "envs/crossdisc.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    requirements = tmp_path / ".snakemake" / "conda" / "requirements.txt"
    requirements.parent.mkdir(parents=True)
    requirements.write_text("\n".join(p for p in pip if p.startswith("-e")) + "\n")
    snakefile = (REPO / "Snakefile").read_text()
    assert 'os.environ["CROSSDISC_ROOT"] = workflow.basedir' in snakefile
    report = tmp_path / "report.json"
    subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--no-index",
                    "--no-build-isolation", "--quiet", "--report", str(report), "-r", str(requirements)],
                   cwd=requirements.parent, env={**os.environ, "CROSSDISC_ROOT": str(REPO)}, check=True)
    installs = json.loads(report.read_text())["install"]
    assert [(i["metadata"]["name"], i["download_info"]["url"]) for i in installs] == [("crossdisc", REPO.as_uri())]


def test_rule_files_are_snakefmt_clean():
    result = subprocess.run(["snakefmt", "--check", "Snakefile", "workflow/rules"], cwd=REPO, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_a_configfile_replaces_the_embedded_default_whole(tmp_path, tiny_bert):
    jobs = plan(tmp_path, write_config(tmp_path / "tiny.yaml", tiny_config("results", tiny_bert)))
    experiments = {path.split("/")[2] for path, rule in jobs.items() if rule == "finetune"}
    assert experiments == {"shifted-text", "non-text", "steps"}  # none of config/config.yaml's


def test_snakemake_lint_is_clean_on_every_config():
    for configfile in ("config/config.yaml", "config/paper.yaml", ".test/config.yaml", "config/examples/own-data.yaml"):
        result = subprocess.run(["snakemake", "--lint", "--configfile", configfile], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Lints for" not in result.stdout + result.stderr


def test_the_embedded_default_compares_on_three_seeds_and_a_seed_offset_moves_them(tmp_path):
    """Its story is paired comparisons with an interval over seeds: each experiment runs 3 or more,
    and `make run SEED_OFFSET=100` plans the same grid on seeds 100 higher."""
    experiments = yaml.safe_load((REPO / "config/config.yaml").read_text())["experiments"]
    assert all(len(spec.get("seeds", [100])) >= 3 for spec in experiments.values())
    planned = {}
    for offset in (0, 100):
        result = subprocess.run(["make", "--dry-run", "run", f"SEED_OFFSET={offset}"], cwd=REPO, capture_output=True,
                                text=True, timeout=60)
        assert f"snakemake --cores 2 --config seed_offset={offset}" in result.stdout, result.stdout + result.stderr
        jobs = plan(tmp_path, REPO / "config/config.yaml", "--config", f"seed_offset={offset}")
        planned[offset] = sorted(re.findall(r"seed-(\d+)/metrics.json", "\n".join(jobs)))
    assert planned[100] and [int(s) + 100 for s in planned[0]] == [int(s) for s in planned[100]]


def test_the_embedded_default_plans_every_stage():
    result = subprocess.run(["snakemake", "--dry-run", "--forceall", "--quiet", "rules"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for rule in ("download", "fetch_model", "preprocess", "token_map", "pretrain", "finetune", "aggregate"):
        assert rule in result.stdout
