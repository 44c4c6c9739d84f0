"""What a training job asks the scheduler for: one GPU unless the config trains on the CPU, and the
config's memory and time limit (on a retry, profiles/slurm's `retries`, times the attempt)."""

import re

import yaml

from test_workflow import snakemake, tiny_config


def planned_resources(tmp_path, tiny_bert, **settings):
    """Resources of each rule's jobs in a dry run of the tiny config with `settings` changed."""
    configfile = tmp_path / "tiny.yaml"
    configfile.write_text(yaml.safe_dump({**tiny_config(tmp_path / "results", tiny_bert), **settings}))
    output = snakemake(tmp_path, configfile, "--dry-run", "--forceall").stdout
    return dict(re.findall(r"^rule (\w+):\n(?:    .*\n)*?    resources: (.*)$", output, re.M))


def test_a_training_job_asks_for_one_gpu_and_the_configs_memory_and_time(tmp_path, tiny_bert):
    resources = planned_resources(tmp_path, tiny_bert, resources={"train_mem_mb": 3000, "train_runtime": "90m"})
    for rule in ("finetune", "pretrain"):
        assert {"gpu=1", "mem_mb=3000", "runtime=90"} <= set(resources[rule].split(", "))
    assert "gpu" not in resources["preprocess"]


def test_training_on_the_cpu_asks_for_no_gpu(tmp_path, tiny_bert):
    resources = planned_resources(tmp_path, tiny_bert, device="cpu")
    assert "gpu=0" in resources["finetune"].split(", ")


def test_a_time_limit_that_is_no_duration_is_one_line_naming_it(tmp_path, tiny_bert):
    configfile = tmp_path / "bad.yaml"
    configfile.write_text(yaml.safe_dump({**tiny_config(tmp_path / "results", tiny_bert),
                                          "resources": {"train_runtime": "soon"}}))
    result = snakemake(tmp_path, configfile, "--dry-run", check=False)
    assert result.returncode != 0
    assert "config: resources.train_runtime: 'soon' is not a duration such as '90m' or '2h'" in result.stdout + result.stderr
