"""The pipeline on a real single-node SLURM cluster through profiles/slurm: the embedded default's
DAG (corpus, most-frequent maps, the pre-training chain, every experiment) runs to sane results;
training jobs that SLURM requeues (pre-emption) or cancels (Snakemake then retries them) resume from
their saved state instead of from step 0; and every shipped config plans through every shipped
profile.

It installs Debian's SLURM packages and needs root, so it runs where CI=true (and fails there if
SLURM cannot be brought up) or CROSSDISC_SLURM_TEST=1, and is skipped elsewhere. The SLURM plugin
is installed into the running environment for the test and removed again afterwards."""

import importlib.util
import os
import re
import subprocess
import sys
import time
import tomllib

import pandas as pd
import pytest
import yaml

from conftest import REPO

pytestmark = [
    pytest.mark.slurm,
    pytest.mark.skipif(os.environ.get("CI") != "true" and os.environ.get("CROSSDISC_SLURM_TEST") != "1",
                       reason="brings up SLURM as root: set CROSSDISC_SLURM_TEST=1 (CI=true runs it)"),
]

CLUSTER = REPO / "tests/slurm/cluster.sh"
CONFIGS = sorted(REPO.glob("config/**/*.yaml"))
PROFILES = [None, "profiles/slurm"]  # None: profiles/default alone, which every run reads
# Long enough to be caught mid-training, with a resumable save every 25 steps.
RESUME = {"tasks": ["word-order"], "models": ["small-bert@0"], "token_maps": ["shift-1000"], "seeds": [1, 2],
          "training": {"max_steps": 600, "checkpoint_every": 25}}
# The embedded default's pre-training checkpoints, moved to earlier steps for the test.
SHORTER_PRETRAINING = {"small-bert@100": "small-bert@10", "small-bert@400": "small-bert@20"}
RESUMED = re.compile(r"resumed from step (\d+) of (\d+)")


def slurm_requirement():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["slurm"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A running single-node SLURM and the SLURM plugin, both gone again after the module."""
    state = tmp_path_factory.mktemp("slurm")
    start = subprocess.run(["timeout", "-s", "KILL", "300", CLUSTER, "start", state], capture_output=True, text=True)
    assert start.returncode == 0, f"SLURM did not come up:\n{start.stdout}{start.stderr}"
    had_plugin = importlib.util.find_spec("snakemake_executor_plugin_slurm") is not None
    try:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *slurm_requirement()], check=True,
                       timeout=300)
        yield state
    finally:
        if not had_plugin:  # with the plugin and no controller, every snakemake start stalls
            subprocess.run([sys.executable, "-m", "pip", "uninstall", "--quiet", "--yes",
                            "snakemake-executor-plugin-slurm", "snakemake-executor-plugin-slurm-jobstep"], check=False)
        subprocess.run([CLUSTER, "stop", state], check=False, timeout=120)


def snakemake_on_slurm(workdir, configfile, *args, limit_s=300):
    """profiles/slurm as it is, but for this cluster: two cores per job, job states from squeue (there
    is no accounting database for sacct) and fast polling; under SIGKILL, which a stuck status
    poll still obeys. The pre-training series runs on 2 nodes (embedded_default): SLURM jobs of 2
    tasks, placed here on the one node there is (nodes=1; --set-resources replaces the profile's,
    so its partitions are repeated)."""
    return ["timeout", "-s", "KILL", str(limit_s), "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir),
            "--configfile", str(configfile), "--profile", str(REPO / "profiles/slurm"), "--cores", "2",
            "--slurm-status-command", "squeue", "--slurm-init-seconds-before-status-checks", "2",
            "--seconds-between-status-checks", "2", "--set-resources", "pretrain:nodes=1",
            "pretrain:slurm_partition=gpu", "finetune:slurm_partition=gpu", *args]


def resume_run(seed):
    return f"resume/word-order/small-bert@0/pretrained/shift-1000/1.0/seed-{seed}"


def embedded_default(results):
    """config/config.yaml with every rule and edge of its DAG and less work: fine-tuning runs of 8
    steps, one seed per experiment (each SLURM job costs seconds of Snakemake start-up, and two cores
    run two at a time), pre-training checkpoints at 10 and 20 steps, each trained by 2 processes in
    2 SLURM tasks; plus the runs that the test interrupts."""
    text = (REPO / "config/config.yaml").read_text()
    for long, short in SHORTER_PRETRAINING.items():
        text = text.replace(long, short)
    config = yaml.safe_load(text)
    config["results"] = str(results)
    config["pretrain"]["small-bert"]["steps"] = [0, 10, 20]
    config["pretrain"]["small-bert"]["training"]["long_from_step"] = 18  # the last 10%, as the default's
    config["pretrain"]["small-bert"].update(nodes=2, gpus=1)  # a torchrun on each of 2 nodes: 2 tasks
    for block in [config, *config["tasks"].values(), *config["experiments"].values()]:
        if "max_steps" in block.get("training", {}):
            block["training"]["max_steps"] = 8
    for experiment in config["experiments"].values():
        experiment["seeds"] = experiment.get("seeds", [100])[:1]
    config["experiments"]["resume"] = RESUME
    config["resources"] = {"train_mem_mb": 1000}  # a retry asks twice as much: both fit a small node
    return config


def n_runs(config):
    sizes = [[len(e["tasks"]), len(e["models"]), len(e.get("inits", [1])), len(e["token_maps"]),
              len(e.get("fractions", [1])), len(e.get("seeds", [1]))] for e in config["experiments"].values()]
    return sum(a * b * c * d * f * g for a, b, c, d, f, g in sizes)


def running_resume_jobs():
    """SLURM job of each running resume run, by seed: the plugin writes rule and wildcards into the
    job comment, e.g. rule_finetune_wildcards_resume_word-order_small-bert@0_pretrained_shift-1000_1.0_2."""
    jobs = subprocess.run(["squeue", "-h", "-t", "running", "-o", "%i|%k"], capture_output=True, text=True,
                          check=True).stdout
    found = {}
    for line in jobs.splitlines():
        job, comment = line.split("|", 1)
        if comment.startswith("rule_finetune_wildcards_resume_"):
            found[int(comment.rsplit("_", 1)[1])] = job
    return found


def interrupt_resume_runs(workdir, process, deadline):
    """Once a resume run has saved its state, interrupt its SLURM job: requeue the first, as a
    pre-empted job is, and cancel the second, which fails it as a time-out would. {seed: how}."""
    interrupted = {}
    while len(interrupted) < len(RESUME["seeds"]):
        assert time.time() < deadline and process.poll() is None, f"resume runs interrupted: {interrupted}"
        for seed, job in running_resume_jobs().items():
            if seed in interrupted or not (workdir / "results/state/runs" / resume_run(seed) / "state.pt").exists():
                continue
            if interrupted:
                subprocess.run(["scancel", job], check=True)
                interrupted[seed] = "cancelled"
            else:
                subprocess.run(["scontrol", "requeue", job], check=True)
                # a requeued job waits about two minutes before it may start again: not in a test
                subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
                interrupted[seed] = "requeued"
        time.sleep(0.2)
    return interrupted


@pytest.fixture(scope="module")
def slurm_run(cluster, tmp_path_factory):
    """The embedded default on SLURM, with two long training jobs interrupted on the way."""
    workdir = tmp_path_factory.mktemp("slurm-workflow")
    config = embedded_default(workdir / "results")
    configfile = workdir / "slurm.yaml"
    configfile.write_text(yaml.safe_dump(config))
    log = workdir / "snakemake.log"
    with log.open("w") as out:
        process = subprocess.Popen(snakemake_on_slurm(workdir, configfile, limit_s=1200), stdout=out,
                                   stderr=subprocess.STDOUT)
        try:
            deadline = time.time() + 1140
            interrupted = interrupt_resume_runs(workdir, process, deadline)
            process.wait(timeout=max(1, deadline + 60 - time.time()))
        finally:
            process.kill()
            process.wait()
    output = log.read_text()
    assert process.returncode == 0, output[-6000:]
    return workdir, configfile, output, {how: seed for seed, how in interrupted.items()}


def resumed_step(workdir, seed):
    """The step a resume run's last attempt resumed from, as its log says."""
    log = (workdir / "results/logs/finetune" / f"{resume_run(seed)}.log").read_text()
    step, total = map(int, RESUMED.search(log).groups())
    assert total == RESUME["training"]["max_steps"]
    return step


def test_every_run_of_the_embedded_default_finishes_on_slurm_with_sane_results(slurm_run):
    workdir, configfile, output, _ = slurm_run
    table = pd.read_csv(workdir / "results/tables/results.csv")
    assert table["seeds"].sum() == n_runs(yaml.safe_load(configfile.read_text()))
    assert table["test_mean"].between(-100, 100).all()
    assert (workdir / "results/figures/pretrain_steps.png").stat().st_size > 0
    # the corpus and its most-frequent token maps were built on the cluster
    assert list((workdir / "results/token_maps/most-frequent").glob("*/minilm.parquet"))
    assert "Group job prepare" in output  # preprocessing and token maps went as group jobs
    for rule in ("download", "fetch_model", "aggregate"):  # local rules: not submitted
        assert f"localrule {rule}:" in output


def test_a_pretraining_job_of_two_tasks_trains_on_two_processes(slurm_run):
    workdir, _, output, _ = slurm_run
    for step in (10, 20):
        log = (workdir / f"results/logs/pretrain/small-bert/step-{step}.log").read_text()
        assert "data-parallel on 2 processes (gloo)" in log  # one torchrun in each of the job's 2 tasks
        assert (workdir / f"results/pretrain/small-bert/step-{step}/model.safetensors").exists()


def test_a_requeued_training_job_resumes_from_its_saved_state(slurm_run):
    workdir, _, output, seeds = slurm_run
    assert output.count("Trying to restart job") == 1  # SLURM restarted it, not a Snakemake retry
    assert 0 < resumed_step(workdir, seeds["requeued"]) < RESUME["training"]["max_steps"]


def test_a_cancelled_training_job_is_retried_and_resumes_from_its_saved_state(slurm_run):
    workdir, _, output, seeds = slurm_run
    assert "SLURM status is: 'CANCELLED'" in output and "Trying to restart job" in output
    retry = output[output.index("Trying to restart job"):]  # the second attempt asks for twice as much
    resubmitted = retry[retry.index(f"seed={seeds['cancelled']}"):].split("\n\n")[0]
    assert "mem_mb=2000" in resubmitted and "runtime=240" in resubmitted
    assert 0 < resumed_step(workdir, seeds["cancelled"]) < RESUME["training"]["max_steps"]


def test_nothing_is_left_to_do_afterwards(slurm_run):
    workdir, configfile, _, _ = slurm_run
    rerun = subprocess.run(snakemake_on_slurm(workdir, configfile, "--dry-run"), capture_output=True, text=True)
    assert rerun.returncode == 0 and "Nothing to be done" in rerun.stdout, rerun.stdout[-3000:] + rerun.stderr[-3000:]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p or "default")
@pytest.mark.parametrize("configfile", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_plans_through_every_shipped_profile(cluster, tmp_path, configfile, profile):
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile",
               str(configfile), "--dry-run", "--quiet", "rules"]
    if profile:
        command += ["--profile", str(REPO / profile), "--slurm-status-command", "squeue"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "finetune" in result.stdout
