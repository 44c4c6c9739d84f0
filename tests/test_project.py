"""The project's own promises: pinned installs, conda and pip in step, a clean Snakefile."""

import subprocess
import tomllib

import yaml

from conftest import REPO


def pip_requirements():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(project["dependencies"]) | set(project["optional-dependencies"]["offline"])


def test_torch_is_pinned_exactly():
    assert "torch==2.13.0" in pip_requirements()


def test_conda_environment_names_the_same_packages_as_pyproject():
    env = yaml.safe_load((REPO / "envs/crossdisc.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert {p for p in pip if not p.startswith("-e")} == pip_requirements()


def test_snakemake_lint_is_clean():
    result = subprocess.run(["snakemake", "--lint"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Lints for" not in result.stdout + result.stderr


def test_the_embedded_default_plans_every_stage():
    result = subprocess.run(["snakemake", "--dry-run", "--forceall", "--quiet", "rules"], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for rule in ("download_source", "fetch_model", "preprocess", "token_map", "pretrain", "finetune", "aggregate"):
        assert rule in result.stdout
