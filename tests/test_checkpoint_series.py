"""A `pretrain` entry may name published step checkpoints (`source: hub`): its `<name>@<step>`
models are fetched like any hub model, and nothing is pre-trained. Planned by the real Snakefile
(`--detailed-summary`), nothing downloaded."""

from conftest import plan, tiny_config, write_config

MULTIBERTS = {"source": "hub", "id": "google/multiberts-seed_0-step_{step}k", "steps": [0, 20000, 2000000]}


def series_config(tmp_path, tiny_bert, **entry):
    config = tiny_config("results", tiny_bert)
    config["pretrain"]["multiberts"] = {**MULTIBERTS, **entry}
    config["experiments"] = {
        "steps-dna": {"tasks": ["dna"], "models": ["multiberts@20000", "multiberts@2000000"], "token_maps": ["random-real"]},
        "steps-text": {"tasks": ["word-order"], "models": ["multiberts@2000000"], "token_maps": ["shift-1000"]},
    }
    return write_config(tmp_path / "series.yaml", config)


def outputs_of(jobs, rule):
    return {path for path, planned_rule in jobs.items() if planned_rule == rule}


def test_a_hub_series_plans_fetch_jobs_not_pretraining(tmp_path, tiny_bert):
    jobs = plan(tmp_path, series_config(tmp_path, tiny_bert))
    assert not outputs_of(jobs, "pretrain") and not outputs_of(jobs, "gather_corpus")
    # the two fine-tuned steps, and the first step as the vocabulary of the text task
    assert outputs_of(jobs, "fetch_model") == {"results/models/multiberts@0", "results/models/multiberts@20000",
                                               "results/models/multiberts@2000000"}
    assert outputs_of(jobs, "preprocess") == {"results/tokens/dna/native.parquet",
                                              "results/tokens/word-order/multiberts@0.parquet"}


def test_a_hub_series_with_a_tokenizer_shares_that_models_token_files(tmp_path, tiny_bert):
    jobs = plan(tmp_path, series_config(tmp_path, tiny_bert, tokenizer="tiny"))
    assert "results/tokens/word-order/tiny.parquet" in outputs_of(jobs, "preprocess")
    assert "results/models/multiberts@0" not in jobs
    assert not any("multiberts" in path for path in outputs_of(jobs, "preprocess") | outputs_of(jobs, "token_map"))


def test_a_trained_series_prepares_its_corpus_once_in_shards(tmp_path, tiny_bert):
    config = {**tiny_config("results", tiny_bert), "corpus_shards": 3}
    jobs = plan(tmp_path, write_config(tmp_path / "tiny.yaml", config))
    shards = ("00000", "00001", "00002")
    assert outputs_of(jobs, "split_corpus") == {f"results/corpus/python-docs/tiny/text-{shard}.parquet"
                                                for shard in shards}
    assert outputs_of(jobs, "prepare_corpus") == {f"results/corpus/python-docs/tiny/shard-{shard}.parquet"
                                                  for shard in shards}
    assert outputs_of(jobs, "gather_corpus") == {"results/corpus/python-docs/tiny.json"}
    assert outputs_of(jobs, "pretrain") == {"results/pretrain/mini-bert/step-0", "results/pretrain/mini-bert/step-3"}
