"""The config model (crossdisc/grid.py) on its own: defaults, one-line errors naming the key, the
grid of runs, the path layout, each job's inputs and the wildcard constraints. No Snakemake, except
one end-to-end check that its error reaches the console as the same line."""

import copy
import re

import pytest
import yaml

from conftest import REPO, plan, snakemake, tiny_config, write_config
from crossdisc.errors import ConfigError
from crossdisc.grid import Grid, validate

MULTIBERTS = {"source": "hub", "id": "google/multiberts-seed_0-step_{step}k", "steps": [0, 20000, 2000000]}


@pytest.fixture
def config():
    return tiny_config("results", "tiny-bert")


def error_of(config):
    with pytest.raises(ConfigError) as caught:
        Grid(config)
    return str(caught.value)


def test_validation_fills_the_schemas_defaults():
    config = validate(tiny_config("results", "tiny-bert"))
    steps = config["experiments"]["steps"]
    assert steps["inits"] == ["pretrained"] and steps["seeds"] == [100] and steps["fractions"] == [1.0]
    assert config["device"] == "auto" and config["resources"]["train_runtime"] == "2h"
    assert config["token_maps"]["seed"] == 100


def test_a_reader_option_default_is_filled_for_that_readers_tasks_only():
    tasks = validate(tiny_config("results", "tiny-bert"))["tasks"]
    assert tasks["composer"]["segmenting"] == "onset"  # its segment_length and instruments are the config's
    assert (tasks["word-order"]["min_words"], tasks["word-order"]["max_words"]) == (6, 30)
    for option in ("segmenting", "segment_length", "instruments"):  # a FASTA or DNA task's parameters hold none
        assert [name for name, spec in tasks.items() if option in spec] == ["composer"]
    assert [name for name, spec in tasks.items() if "min_words" in spec] == ["word-order"]


def test_defaults_are_copies_not_shared_between_entries(config):
    validate(config)
    experiments = config["experiments"]
    assert experiments["steps"]["inits"] is not experiments["shifted-text"].get("fractions")
    experiments["steps"]["seeds"].append(101)
    assert experiments["non-text"]["seeds"] == [100, 101]
    assert validate(tiny_config("results", "x"))["experiments"]["steps"]["seeds"] == [100]


def test_a_wrong_value_is_one_line_naming_its_key(config):
    config["tasks"]["dna"]["kind"] = "clasification"
    assert error_of(config).startswith("config: tasks.dna.kind: 'clasification' is not one of")
    del config["tasks"]["dna"]["kind"]
    assert error_of(config) == "config: tasks.dna: 'kind' is a required property"


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["experiments"]["steps"].update(tasks=["rna"]), "config: experiments.steps: unknown task 'rna'"),
    (lambda c: c["tasks"]["protein"].pop("alphabet"),
     "config: tasks.protein.alphabet: the fasta reader needs the task's symbols in id order (e.g. ACGT for DNA)"),
    (lambda c: c["experiments"]["steps"].update(models=["bert"]), "config: experiments.steps: unknown model 'bert'"),
    (lambda c: c["experiments"]["steps"].update(models=["mini-bert@7"]),
     "config: experiments.steps: 'mini-bert@7' is not a configured pre-training checkpoint"),
    (lambda c: c["experiments"]["steps"].update(token_maps=["shift-1000"]),
     "config: experiments.steps: token map 'shift-1000' does not apply to non-text task 'dna'"),
    (lambda c: c["experiments"]["shifted-text"].update(token_maps=["unused"]),
     "config: experiments.shifted-text: token map 'unused' does not apply to text task 'word-order'"),
    (lambda c: c.pop("token_maps"), "config: token_maps.corpus: experiment 'non-text' uses most-frequent"),
    (lambda c: c["token_maps"].update(corpus="wiki"), "config: token_maps.corpus: unknown source 'wiki'"),
    (lambda c: c["tasks"]["dna"].update(source="rna"), "config: tasks.dna.source: unknown source 'rna'"),
    (lambda c: c["pretrain"]["mini-bert"].update(corpus="wiki"), "config: pretrain.mini-bert.corpus: unknown source 'wiki'"),
    (lambda c: c["pretrain"]["mini-bert"].update(tokenizer="bert"),
     "config: pretrain.mini-bert.tokenizer: unknown model 'bert'"),
    (lambda c: c["pretrain"]["mini-bert"]["training"].update(long_from_step=3),
     "config: pretrain.mini-bert.training.long_from_step: 3 is not before the schedule's end (total_steps 3)"),
    (lambda c: c["pretrain"].update(multiberts={**MULTIBERTS, "steps": [0, 1500]}),
     "config: pretrain.multiberts.steps: [1500] are not multiples of step_unit 1000"),
    (lambda c: c["pretrain"].update(multiberts={k: v for k, v in MULTIBERTS.items() if k != "id"}),
     "config: pretrain.multiberts: 'id' is a required property"),
    (lambda c: c["tasks"]["composer"].update(segmenting="authors"),
     "config: tasks.composer.instruments: segmenting 'authors' cuts one instrument's notes"),
    (lambda c: c["tasks"]["protein"].update(alphabet_synonyms={"O": "K"}),
     "config: tasks.protein.alphabet_synonyms: 'O' is a symbol of the alphabet itself"),
    (lambda c: c["tasks"]["protein"].update(alphabet_synonyms={"J": "j"}),
     "config: tasks.protein.alphabet_synonyms: 'J' stands for 'j', not in the alphabet"),
    (lambda c: c["tasks"]["protein"].update(unknown_symbol="?"), "config: tasks.protein.unknown_symbol: '?' is not in"),
    (lambda c: c["resources"].update(train_runtime="soon") if "resources" in c else c.update(
        resources={"train_runtime": "soon"}),
     "config: resources.train_runtime: 'soon' is not a duration such as '90m' or '2h'"),
])
def test_a_cross_reference_the_schema_cannot_check_is_one_line_naming_the_key(config, edit, message):
    edit(config)
    assert error_of(config).startswith(message)


HILBERT_CNN = {"source": "architecture", "family": "hilbert-cnn"}


def with_hilbert_cnn(config, **experiment):
    config["models"]["hilbert-cnn"] = dict(HILBERT_CNN)
    config["experiments"]["specific"] = {"tasks": ["dna"], "models": ["hilbert-cnn"], "inits": ["scratch"],
                                         "token_maps": ["native"], **experiment}
    return config


@pytest.mark.parametrize("experiment, message", [
    ({"inits": ["scratch", "pretrained"]}, "config: experiments.specific.inits: model 'hilbert-cnn' is built from its "
                                           "architecture (hilbert-cnn): init 'scratch' only, not 'pretrained'"),
    ({"token_maps": ["most-frequent"]}, "config: experiments.specific.token_maps: model 'hilbert-cnn' reads the "
                                        "task's own symbols: token map 'native' only, not 'most-frequent'"),
    ({"models": ["tiny"]}, "config: experiments.specific.token_maps: token map 'native' is for models built from "
                           "their architecture (source: architecture), not 'tiny'"),
    ({"tasks": ["word-order"]}, "config: experiments.specific: token map 'native' does not apply to text task"),
])
def test_a_model_built_from_its_architecture_trains_from_scratch_on_the_native_ids_alone(config, experiment, message):
    assert error_of(with_hilbert_cnn(config, **experiment)).startswith(message)


def test_an_architecture_needs_its_family_and_gets_its_defaults(config):
    with_hilbert_cnn(config)
    assert Grid(copy.deepcopy(config)).model_spec("hilbert-cnn")["kmer"] == 4  # the authors' 4-mers
    del config["models"]["hilbert-cnn"]["family"]
    assert error_of(config) == "config: models.hilbert-cnn: 'family' is a required property"


def test_a_model_built_from_its_architecture_reads_the_native_token_file_through_the_native_map(config):
    grid = Grid(with_hilbert_cnn(config))
    run = next(run for run in grid.runs if run["model"] == "hilbert-cnn")
    assert grid.vocabulary_of("hilbert-cnn") == "native"
    assert grid.finetune_inputs(**run) == {"tokens": "results/tokens/dna/native.parquet",
                                           "token_map": "results/token_maps/native/dna/native.parquet",
                                           "model": "results/models/hilbert-cnn"}
    assert grid.token_map_inputs(token_map="native", task="dna", vocab="native") == {
        "tokens": "results/tokens/dna/native.parquet"}  # the native vocabulary has no tokenizer
    assert re.fullmatch(grid.wildcard_constraints()["token_map"], "native")


def test_paper_figures_must_name_what_the_config_defines(config):
    curve = {"label": "BERT", "experiment": "non-text", "model": "tiny", "init": "pretrained"}
    figure = {"name": "figure2", "kind": "loss", "title": "t", "rows": [{"tasks": ["rna"], "curves": [curve]}]}
    assert error_of({**copy.deepcopy(config), "paper_figures": [figure]}) == \
        "config: paper_figures.figure2: unknown task 'rna'"
    figure["rows"][0] = {"tasks": ["dna"], "curves": [{**curve, "model": "bert"}]}
    assert error_of({**copy.deepcopy(config), "paper_figures": [figure]}) == \
        "config: paper_figures.figure2: curve 'BERT': unknown model 'bert'"
    figure["rows"][0] = {"tasks": ["dna"], "curves": [curve]}
    assert error_of({**copy.deepcopy(config), "paper_figures": [figure, figure]}) == \
        "config: paper_figures.figure2: two figures have this name"


def test_the_grid_is_every_combination_of_each_experiment(config):
    runs = Grid(config).runs
    assert len(runs) == 2 + 3 * 2 * 2 + 2
    assert runs[0] == dict(experiment="shifted-text", task="word-order", model="tiny", init="pretrained",
                           token_map="shift-1000", fraction="1.0", seed=100)
    assert {run["seed"] for run in runs if run["experiment"] == "non-text"} == {100, 101}


def test_paths_follow_the_layout(config):
    grid = Grid(config)
    assert grid.run_dir(grid.runs[0]) == "results/runs/shifted-text/word-order/tiny/pretrained/shift-1000/1.0/seed-100"
    # resumable state outside the declared outputs, where earlier releases left it
    assert grid.paths.run_state.format(**grid.runs[0]) == \
        "results/state/runs/shifted-text/word-order/tiny/pretrained/shift-1000/1.0/seed-100"
    assert grid.model_dir("tiny") == "results/models/tiny"
    assert grid.model_dir("mini-bert@3") == "results/pretrain/mini-bert/step-3"
    assert grid.tokens_file("word-order", "tiny") == "results/tokens/word-order/tiny.parquet"
    assert grid.tokens_file("dna", "tiny") == "results/tokens/dna/native.parquet"  # one file per non-text task


def test_a_corpus_is_split_into_the_configured_shards_tokenised_per_vocabulary_and_gathered(config):
    grid = Grid({**config, "corpus_shards": 2})
    assert grid.corpus_shards() == ["00000", "00001"]
    assert grid.corpus_split_inputs(source="python-docs", vocab="tiny") == {"raw": "results/raw/python-docs"}
    assert grid.corpus_shard_inputs(source="python-docs", vocab="tiny", shard="00001") == {
        "text": "results/corpus/python-docs/tiny/text-00001.parquet", "tokenizer": "results/models/tiny"}
    assert grid.corpus_shards_of(source="python-docs", vocab="tiny") == [
        "results/corpus/python-docs/tiny/shard-00000.parquet", "results/corpus/python-docs/tiny/shard-00001.parquet"]
    assert Grid(config).corpus_shards() == ["00000"]  # the default: one shard


def test_each_jobs_inputs(config):
    grid = Grid(config)
    assert grid.preprocess_inputs(task="dna", vocab="native") == {"raw": "results/raw/dna"}
    assert grid.preprocess_inputs(task="word-order", vocab="tiny") == {
        "raw": "results/raw/python-docs", "tokenizer": "results/models/tiny"}
    assert grid.token_map_inputs(token_map="most-frequent", task="dna", vocab="tiny") == {
        "tokens": "results/tokens/dna/native.parquet", "tokenizer": "results/models/tiny",
        "corpus": "results/corpus/python-docs/tiny.json"}
    assert "corpus" not in grid.token_map_inputs(token_map="random-real", task="dna", vocab="tiny")
    assert grid.pretrain_inputs(name="mini-bert", step="0") == {
        "corpus": "results/corpus/python-docs/tiny.json", "tokenizer": "results/models/tiny"}
    assert grid.pretrain_inputs(name="mini-bert", step="3")["previous"] == "results/pretrain/mini-bert/step-0"
    run = {**grid.runs[-1], "seed": str(grid.runs[-1]["seed"])}  # as wildcards: strings
    assert grid.finetune_inputs(**run) == {"tokens": "results/tokens/dna/native.parquet",
                                           "token_map": "results/token_maps/random-real/dna/tiny.parquet",
                                           "model": "results/pretrain/mini-bert/step-3"}
    assert grid.run_of(**run) == grid.runs[-1]


def test_run_seeded_random_tables_are_one_per_seed_and_the_others_stay_shared(config):
    config["token_maps"]["seed"] = "run"
    config["experiments"]["steps"]["seeds"] = [100, 101]
    grid = Grid(config)
    tables = {(r["token_map"], r["seed"]): grid.finetune_inputs(**r)["token_map"] for r in grid.runs
              if r["task"] == "dna"}
    assert tables[("random-real", 101)] == "results/token_maps/random-real/dna/tiny/seed-101.parquet"
    assert tables[("random-real", 100)] == "results/token_maps/random-real/dna/tiny/seed-100.parquet"
    assert tables[("most-frequent", 101)] == "results/token_maps/most-frequent/dna/tiny.parquet"


def test_a_seed_offset_moves_every_training_seed_and_leaves_the_data_seeds(config):
    plain = Grid(copy.deepcopy(config))
    config["seed_offset"] = 100
    config["token_maps"]["seed"] = "run"
    moved = Grid(config)
    assert [r["seed"] + 100 for r in plain.runs] == [r["seed"] for r in moved.runs]
    assert moved.pretrain_spec("mini-bert")["seed"] == plain.pretrain_spec("mini-bert")["seed"] + 100
    assert moved.pretrain_spec("mini-bert")["seed"] == Grid(config).pretrain_spec("mini-bert")["seed"]  # not twice
    run = next(r for r in moved.runs if r["token_map"] == "random-real")
    assert moved.finetune_inputs(**run)["token_map"].endswith(f"seed-{run['seed']}.parquet")
    assert config["sources"] == plain.config["sources"]


def test_snakemake_builds_a_run_seeded_table_per_seed(tmp_path, tiny_bert):
    config = tiny_config("results", tiny_bert)
    config["token_maps"]["seed"] = "run"
    config["experiments"]["steps"]["seeds"] = [100, 101]
    jobs = plan(tmp_path, write_config(tmp_path / "seeded.yaml", config))
    assert sorted(path for path, rule in jobs.items() if rule == "run_seeded_token_map") == [
        f"results/token_maps/random-real/dna/tiny/seed-{seed}.parquet" for seed in (100, 101)]
    assert "results/token_maps/most-frequent/dna/tiny.parquet" in jobs


def test_a_search_runs_every_combination_of_its_settings_under_its_own_name(config):
    config["experiments"]["steps"]["search"] = {"lr": [1e-5, 1e-6], "batch_size": [4, 8, 16]}
    grid = Grid(config)
    points = [r["experiment"] for r in grid.runs if r["experiment"].startswith("steps")]
    assert points[:2] == ["steps.lr-1e-05.batch_size-4"] * 2 and len(points) == 2 * 3 * 2  # x 2 checkpoints
    assert grid.hparams("steps.lr-1e-06.batch_size-16", "dna") == {
        **grid.hparams("shifted-text", "dna"), "lr": 1e-6, "batch_size": 16, "score_train": True}
    assert grid.searches()["steps"]["points"]["steps.lr-1e-06.batch_size-8"] == {"lr": 1e-6, "batch_size": 8}
    assert grid.searches()["steps"]["select_on"] == {"split": "train"}
    assert re.fullmatch(grid.wildcard_constraints()["experiment"], "steps.lr-1e-05.batch_size-8")
    assert not re.fullmatch(grid.wildcard_constraints()["experiment"], "steps")
    assert grid.search_table_paths() == ["results/tables/search.md", "results/tables/search.csv"]


def test_a_search_value_that_is_no_valid_training_setting_is_one_line(config):
    config["experiments"]["steps"]["search"] = {"lr": [1e-5, -1.0]}
    assert error_of(config) == "config: experiments.steps.search.lr: -1.0 is less than or equal to the minimum of 0"
    config["experiments"]["steps"]["search"] = {"learning_rate": [1e-5]}
    assert error_of(config).startswith("config: experiments.steps.search: Additional properties are not allowed")


def test_training_settings_merge_defaults_then_task_then_experiment(config):
    config["training"]["batch_size"] = 8
    config["tasks"]["dna"]["training"] = {"lr": 1e-4, "epochs": 5}
    config["experiments"]["steps"]["training"] = {"lr": 5e-4}
    hparams = Grid(config).hparams("steps", "dna")
    assert (hparams["lr"], hparams["epochs"], hparams["batch_size"]) == (5e-4, 5, 8)
    assert Grid(config).hparams("non-text", "protein")["lr"] == 1e-3
    # the metric is read at aggregation, unless early stopping selects the best dev checkpoint by it
    assert "metric" not in hparams
    config["experiments"]["steps"]["training"]["early_stopping"] = True
    assert Grid(config).hparams("steps", "dna")["metric"] == "accuracy"


def test_training_options_left_unset_stay_out_of_a_runs_params(config):
    """The engine applies their defaults: a new option leaves the params (and so the finished jobs)
    of runs that do not set it as they were."""
    hparams = Grid(config).hparams("steps", "dna")
    assert not {"optimizer", "lr_schedule", "precision", "fraction_sampling", "score_train"} & set(hparams)
    config["experiments"]["steps"]["training"] = {"optimizer": "novograd", "precision": "fp32"}
    assert {"optimizer": "novograd", "precision": "fp32"}.items() <= Grid(config).hparams("steps", "dna").items()
    config["experiments"]["steps"]["training"] = {"optimizer": "sgd"}
    assert "optimizer" in error_of(config)


def test_a_hub_series_is_fetched_step_by_step_and_reads_its_first_steps_vocabulary(config):
    config["pretrain"]["multiberts"] = {**MULTIBERTS, "revision": "step-{step}", "sha256": {"20000": "ab" * 32}}
    config["experiments"]["hub"] = {"tasks": ["word-order"], "models": ["multiberts@20000"], "token_maps": ["identity"]}
    grid = Grid(config)
    assert grid.model_spec("multiberts@20000") == {"source": "hub", "id": "google/multiberts-seed_0-step_20k",
                                                   "revision": "step-20", "sha256": "ab" * 32}
    assert grid.model_dir("multiberts@20000") == "results/models/multiberts@20000"
    assert grid.vocabulary_of("multiberts@20000") == "multiberts@0"
    assert grid.fetched_checkpoints() == ["multiberts@0", "multiberts@20000", "multiberts@2000000"]
    assert grid.trained_series() == ["mini-bert"]
    config["pretrain"]["multiberts"]["tokenizer"] = "tiny"
    assert Grid(config).vocabulary_of("multiberts@20000") == "tiny"


def test_sources_in_grid_are_the_tasks_the_most_frequent_corpus_and_pretraining_corpora(config):
    config["sources"]["unused"] = {"type": "python-docs"}
    assert Grid(config).sources_in_grid() == {"python-docs", "chorales", "dna", "protein"}


def test_wildcard_constraints_match_exactly_the_configured_names(config):
    constraints = {key: re.compile(value) for key, value in Grid(config).wildcard_constraints().items()}
    assert constraints["token_map"].fullmatch("shift-1000") and not constraints["token_map"].fullmatch("shift-100")
    assert constraints["vocab"].fullmatch("native") and constraints["vocab"].fullmatch("tiny")
    assert not constraints["vocab"].fullmatch("tiny/x")
    assert constraints["model"].fullmatch("mini-bert@3") and not constraints["model"].fullmatch("mini-bert@4")
    assert constraints["fraction"].fullmatch("1.0") and not constraints["fraction"].fullmatch("0.5")
    assert constraints["init"].fullmatch("scratch") and not constraints["init"].fullmatch("re-emb")


def test_training_resources_scale_with_the_attempt_and_a_cpu_run_asks_for_no_gpu(config):
    config["resources"] = {"train_mem_mb": 3000, "train_runtime": "90m"}
    grid = Grid(copy.deepcopy(config))
    assert (grid.train_gpus(), grid.train_mem_mb(), grid.train_runtime()) == (1, 3000, "90m")
    assert (grid.train_mem_mb(2), grid.train_runtime(2)) == (6000, "180m")
    assert Grid({**config, "device": "cpu"}).train_gpus() == 0


def test_a_series_on_one_process_asks_for_one_gpu_and_runs_crossdisc_itself(config):
    grid = Grid(config)
    assert grid.pretrain_resources("mini-bert") == {"gpu": 1, "nodes": None, "tasks": None, "tasks_per_gpu": 0,
                                                    "gres": None, "mpi": None}
    assert grid.pretrain_launcher("mini-bert", threads=1) == "crossdisc"


def test_a_series_on_several_gpus_of_one_node_claims_them_all_for_one_torchrun(config):
    config["resources"] = {"train_threads": 2}
    config["pretrain"]["mini-bert"]["gpus"] = 4
    grid = Grid(config)
    # one task: the SLURM plugin runs the command once, with the job's 4 GPUs (--gpus=4)
    assert grid.pretrain_resources("mini-bert")["gpu"] == 4 and grid.pretrain_threads("mini-bert") == 8
    assert grid.pretrain_resources("mini-bert")["tasks"] is None
    assert grid.pretrain_launcher("mini-bert", threads=8) == (
        "OMP_NUM_THREADS=2 crossdisc claim-gpus 4 torchrun --nproc-per-node 4 --standalone -m crossdisc")


def test_processes_on_the_cpu_ask_for_no_gpu_and_claim_none(config):
    config["device"] = "cpu"
    config["pretrain"]["mini-bert"]["gpus"] = 2
    grid = Grid(config)
    assert grid.pretrain_resources("mini-bert")["gpu"] == 0
    assert grid.pretrain_launcher("mini-bert", threads=2) == (
        "OMP_NUM_THREADS=1 torchrun --nproc-per-node 2 --standalone -m crossdisc")


def test_a_series_on_several_nodes_asks_slurm_for_a_task_and_the_gpus_of_each_node(config):
    config["pretrain"]["mini-bert"].update(gpus=2, nodes=2)
    grid = Grid(config)
    # sbatch --nodes=2 --ntasks=2 --gres=gpu:2, and the command runs once, without srun (mpi)
    assert grid.pretrain_resources("mini-bert") == {"gpu": None, "nodes": 2, "tasks": 2, "tasks_per_gpu": 0,
                                                    "gres": "gpu:2", "mpi": "srun"}
    launcher = grid.pretrain_launcher("mini-bert", threads=4)
    assert launcher.startswith("OMP_NUM_THREADS=2 srun --kill-on-bad-exit=1 --ntasks 2 --cpus-per-task 4 --gres gpu:2 "
                               "torchrun --nproc-per-node 2 --nnodes 2 --rdzv-backend c10d --rdzv-id $SLURM_JOB_ID ")
    assert launcher.endswith(" -m crossdisc")


def test_a_series_processes_are_not_part_of_what_it_trains(config):
    before = Grid(copy.deepcopy(config)).pretrain_spec("mini-bert")
    config["pretrain"]["mini-bert"].update(gpus=2, nodes=2)
    assert Grid(config).pretrain_spec("mini-bert") == before  # so changing them retrains nothing


def test_the_processes_of_a_series_must_divide_its_batch(config):
    config["pretrain"]["mini-bert"]["gpus"] = 3
    assert error_of(config) == ("config: pretrain.mini-bert.gpus: 3 processes (gpus x nodes) do not divide "
                                "training.batch_size 4: each trains on an equal share")


def test_snakemake_ends_on_the_config_errors_one_line(tmp_path):
    config = tiny_config(tmp_path / "results", tmp_path / "tiny")
    config["experiments"]["steps"]["tasks"] = ["rna"]
    result = snakemake(tmp_path, write_config(tmp_path / "bad.yaml", config), "--dry-run", check=False)
    assert result.returncode != 0
    assert result.stderr.splitlines()[-1] == "crossdisc: config: experiments.steps: unknown task 'rna'"
    assert "Traceback" not in result.stdout + result.stderr
