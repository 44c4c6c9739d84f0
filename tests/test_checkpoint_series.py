"""A `pretrain` entry may name published step checkpoints (`source: hub`): its `<name>@<step>`
models are fetched like any hub model, and nothing is pre-trained. Planned with --dry-run only
(no network)."""

import re

import yaml

from test_workflow import snakemake, tiny_config

MULTIBERTS = {"source": "hub", "id": "google/multiberts-seed_0-step_{step}k", "steps": [0, 20000, 2000000]}


def dry_run(tmp_path, config):
    configfile = tmp_path / "series.yaml"
    configfile.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, configfile, "--dry-run", "--printshellcmds", check=False)
    return result.returncode, result.stdout + result.stderr


def series_config(tmp_path, tiny_bert, **entry):
    config = tiny_config(tmp_path / "results", tiny_bert)
    config["pretrain"]["multiberts"] = {**MULTIBERTS, **entry}
    config["experiments"] = {
        "steps-dna": {"tasks": ["dna"], "models": ["multiberts@20000", "multiberts@2000000"], "token_maps": ["random-real"]},
        "steps-text": {"tasks": ["word-order"], "models": ["multiberts@2000000"], "token_maps": ["shift-1000"]},
    }
    return config


def jobs(output):
    """(rule, wildcards) of every planned job."""
    return re.findall(r"^rule (\w+):\n(?:    .*\n)*?    wildcards: (.*)$", output, re.M)


def test_a_hub_series_plans_fetch_jobs_not_pretraining(tmp_path, tiny_bert):
    code, output = dry_run(tmp_path, series_config(tmp_path, tiny_bert))
    assert code == 0, output[-3000:]
    planned = jobs(output)
    rules = {rule for rule, _ in planned}
    assert "pretrain" not in rules and "prepare_corpus" not in rules
    fetched = {w for rule, w in planned if rule == "fetch_model"}
    # the two fine-tuned steps, and the first step as the vocabulary of the text task
    assert fetched == {"model=multiberts@0", "model=multiberts@20000", "model=multiberts@2000000"}
    assert "google/multiberts-seed_0-step_20k" in output and "google/multiberts-seed_0-step_2000k" in output
    assert re.search(r"wildcards: task=word-order, vocab=multiberts@0", output)
    assert "results/models/multiberts@20000" in output and "results/pretrain/multiberts" not in output


def test_a_hub_series_with_a_tokenizer_shares_that_models_token_files(tmp_path, tiny_bert):
    code, output = dry_run(tmp_path, series_config(tmp_path, tiny_bert, tokenizer="tiny"))
    assert code == 0, output[-3000:]
    assert re.search(r"wildcards: task=word-order, vocab=tiny$", output, re.M)
    assert "vocab=multiberts" not in output and "model=multiberts@0" not in output


def test_a_trained_series_prepares_its_corpus_once(tmp_path, tiny_bert):
    config = tiny_config(tmp_path / "results", tiny_bert)
    code, output = dry_run(tmp_path, config)
    assert code == 0, output[-3000:]
    planned = jobs(output)
    assert [w for rule, w in planned if rule == "prepare_corpus"] == ["source=python-docs, vocab=tiny"]
    assert {w for rule, w in planned if rule == "pretrain"} == {"name=mini-bert, step=0", "name=mini-bert, step=3"}
    assert re.search(r"crossdisc pretrain --corpus \S+/results/corpus/python-docs/tiny\.parquet ", output)


def test_hub_steps_must_fit_the_step_unit_and_trained_series_need_a_corpus(tmp_path, tiny_bert):
    code, output = dry_run(tmp_path, series_config(tmp_path, tiny_bert, steps=[0, 1500, 20000, 2000000]))
    assert code and "config: pretrain 'multiberts': steps [1500] are not multiples of step_unit 1000" in output
    config = series_config(tmp_path, tiny_bert)
    del config["pretrain"]["mini-bert"]["corpus"]
    code, output = dry_run(tmp_path, config)
    assert code and "config: pretrain.mini-bert: 'corpus' is a required property" in output
    config = series_config(tmp_path, tiny_bert)
    del config["pretrain"]["multiberts"]["id"]
    code, output = dry_run(tmp_path, config)
    assert code and "config: pretrain.multiberts: 'id' is a required property" in output
