"""config/paper.yaml plans the paper's whole grid, every published number of its tables
(workflow/data/published.csv) has a planned run, and every curve of its figures draws planned runs:
the published numbers, the figures and the config stay in step. Read through the config model
(crossdisc/grid.py); nothing is downloaded or trained."""

import copy

import pandas as pd
import pytest
import yaml

from conftest import REPO, plan, snakemake, write_config
from crossdisc.aggregate import PUBLISHED_SPLITS, read_published, select
from crossdisc.grid import Grid

PAPER_CONFIG = REPO / "config" / "paper.yaml"
GLUE = ["mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte"]
NON_TEXT = ["localization", "stability", "fluorescence", "h3", "h4", "h3k9ac", "splice", "composer"]
# rows of the paper x tasks (x token assignments) x seeds, per experiment: the runs behind Tables
# 1-2 and Figures 2-3 on 3 seeds, the non-text ones under both assignments
SEEDS = 3
THREE_SEEDS = {"table1-shift1000", "table1-random-shift", "table1-1pct", "table1-re-emb", "table2", "table2-unused",
               "table2-hilbert-cnn", "appendix-search", "figure3-text", "figure3-protein"}
ASSIGNMENTS = 2  # most-frequent (the paper's text), random-real (the authors' code)
EXPECTED_RUNS = {
    "table1-shift1000": 4 * 8 * SEEDS,  # BERT, BERT (rand), ALBERT, ALBERT (rand)
    "table1-random-shift": 2 * 8 * SEEDS,  # BERT, BERT (rand)
    "table1-1pct": 2 * 8 * SEEDS,  # BERT, BERT (rand) on 1% data
    "table1-re-emb": 1 * 8 * SEEDS,  # BERT (re-emb), normal data
    "appendix-search": 5 * 10 * SEEDS,  # appendix A: 5 optimisers x 10 learning rates on MRPC, from scratch
    "table2": 3 * 8 * ASSIGNMENTS * SEEDS,  # BERT, re-emb, rand
    "table2-unused": 1 * 8 * SEEDS,  # BERT on [unusedN] tokens (section 3.3)
    "table2-hilbert-cnn": 1 * 4 * SEEDS,  # the "specific" row's Hilbert-CNN on the 4 DNA tasks
    "figure3-text": 5 * 3 * SEEDS,  # 5 checkpoints x QQP, QNLI, STS-B
    "figure3-protein": 5 * 3 * ASSIGNMENTS * SEEDS,  # 5 checkpoints x 3 protein tasks
    "figure4-dna-music": 5 * 5 * ASSIGNMENTS,  # 5 checkpoints x 4 DNA tasks + composer
    "figure3-multiberts-text": 5 * 3,  # MultiBERTs seed 0's 5 checkpoints x QQP, QNLI, STS-B
    "figure3-multiberts-protein": 5 * 5 * 3,  # 5 seeds x 5 checkpoints x 3 protein tasks
}


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(PAPER_CONFIG.read_text())


@pytest.fixture(scope="module")
def planned(config):
    """The fine-tuning runs of config/paper.yaml."""
    return Grid(copy.deepcopy(config)).runs


def test_snakemake_plans_a_finetune_job_for_every_run_of_the_grid(planned, tmp_path):
    """The real Snakefile's plan (a --detailed-summary, about 4 s) against the config model's runs."""
    grid = Grid(yaml.safe_load(PAPER_CONFIG.read_text()))
    jobs = plan(tmp_path, PAPER_CONFIG)
    metrics = {path for path, rule in jobs.items() if rule == "finetune" and path.endswith("/metrics.json")}
    assert metrics == {f"{grid.run_dir(run)}/metrics.json" for run in planned}
    assert {rule for rule in jobs.values()} == {"download", "fetch_model", "split_corpus", "prepare_corpus",
                                                "gather_corpus", "preprocess", "pretrain", "token_map",
                                                "run_seeded_token_map", "finetune", "aggregate"}


@pytest.fixture(scope="module")
def published():
    return read_published()


def test_the_paper_config_plans_every_experiment_with_the_papers_rows_times_tasks(planned, config):
    counts, seeds = {}, {}
    for job in planned:
        experiment = job["experiment"].split(".")[0]  # a search point's runs are <experiment>.<setting>...
        counts[experiment] = counts.get(experiment, 0) + 1
        seeds.setdefault(experiment, set()).add(job["seed"])
    assert counts == EXPECTED_RUNS
    assert set(config["experiments"]) == set(EXPECTED_RUNS)
    assert len(planned) == len({tuple(sorted(job.items())) for job in planned})
    assert seeds == {e: {100, 101, 102} if e in THREE_SEEDS else {100} for e in EXPECTED_RUNS}


def test_the_appendix_search_tries_five_optimisers_at_ten_learning_rates_selected_by_training_f1(config):
    grid = Grid(copy.deepcopy(config))
    search = grid.searches()["appendix-search"]
    settings = list(search["points"].values())
    assert {s["optimizer"] for s in settings} == {"adagrad", "adam", "adamax", "radam", "novograd"}
    learning_rates = sorted({s["lr"] for s in settings})
    assert len(learning_rates) == 10 and learning_rates[0] == 1e-7 and learning_rates[-1] == 1e-4 and 1e-5 in learning_rates
    assert sum(1e-6 <= lr <= 1e-5 for lr in learning_rates) == 5  # the second five, between 1e-6 and 1e-5
    assert search["select_on"] == {"split": "train", "metric": "f1"}
    point = next(iter(search["points"]))
    assert grid.hparams(point, "mrpc")["score_train"] is True


def test_the_config_has_the_papers_tasks_models_and_checkpoints(config):
    assert set(config["tasks"]) == set(GLUE) | set(NON_TEXT)
    assert set(config["models"]) == {"bert-base-uncased", "albert-base-v1", "hilbert-cnn"}
    paper_bert = config["pretrain"]["bert-base-paper"]
    assert paper_bert["steps"] == [0, 20000, 200000, 500000, 1000000]
    assert paper_bert["architecture"] == {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                          "intermediate_size": 3072}
    # Devlin et al.: batch 256, 1M steps, 128 tokens for 90% of them and 512 for the last 10%
    assert {k: paper_bert["training"][k] for k in ("batch_size", "max_length", "long_max_length", "long_from_step")} == \
        {"batch_size": 256, "max_length": 128, "long_max_length": 512, "long_from_step": 900000}
    localization = config["tasks"]["localization"]["labels"]
    assert localization[0] == "Cell.membrane" and localization[-1] == "Plastid" and len(localization) == 10


def test_published_csv_holds_every_cell_of_the_four_tables(published):
    sizes = published.groupby("table").size().to_dict()
    assert sizes == {"table1": 7 * 3, "appendix_table1": 9 * 8, "table2": 4 * 8, "appendix_table2": 3 * 8}
    assert set(published["split"]) == set(PUBLISHED_SPLITS)
    assert (published["value"] == "").sum() == 1  # Table 2: no discipline-specific composer model
    assert published.query("value != ''")["value"].astype(float).between(0, 100).all()
    # main Table 1 repeats cells of appendix Table 1
    main = published.query("table == 'table1'").set_index(["section", "row", "task"])["value"]
    full = published.query("table == 'appendix_table1'").set_index(["section", "row", "task"])["value"]
    assert (full.loc[main.index] == main).all()


def test_every_published_number_maps_to_a_planned_run(planned, published, config):
    runs = {(j["experiment"], j["task"], j["model"], j["init"], j["token_map"], j["fraction"]) for j in planned}
    paper_rows = {(r["section"], r["row"]): r for r in config["paper_rows"]}
    covered = set()
    for cell in published.itertuples(index=False):
        key = (cell.section, cell.row)
        assert cell.metric == config["tasks"][cell.task]["metric"], (cell.table, cell.task)
        if key == ("", "specific") and cell.task not in paper_rows[key]["tasks"]:
            continue  # PLUS-TFM (protein) is not run here, and no composer model is published
        assert key in paper_rows, f"published row {key} of {cell.table} has no entry in paper_rows"
        target = paper_rows[key]
        run = (target["experiment"], cell.task, target["model"], target["init"], target["token_map"],
               str(float(target.get("fraction", 1.0))))
        assert run in runs, f"{cell.table} {key} {cell.task}: no planned run {run}"
        covered.add(run)
    # and the other way round: every run of a table experiment is a published cell, but for the
    # random-real assignment, which the paper does not print (tables/comparisons.md compares it)
    table_runs = {run for run in runs if run[0] in {r["experiment"] for r in paper_rows.values()}
                  and run[4] != "random-real"}
    assert table_runs == covered


def test_every_curve_of_the_papers_figures_draws_planned_runs_on_every_task_of_its_row(planned, config):
    planned = pd.DataFrame(planned)
    for spec in config["paper_figures"]:
        for row in spec["rows"]:
            for task in row["tasks"]:
                for curve in row["curves"]:
                    chosen = select(planned, {"fraction": 1.0, **curve}, task)
                    assert not chosen.empty, f"{spec['name']} {task}: curve '{curve['label']}' selects no planned run"
                    if "pretrain" in curve:  # every checkpoint of the series, 0 to 1M steps
                        assert chosen["model"].nunique() == len(config["pretrain"][curve["pretrain"]]["steps"])


def test_a_paper_series_on_8_gpus_plans_one_torchrun_job_per_checkpoint_that_asks_for_them(config, tmp_path):
    config = copy.deepcopy(config)
    series = config["pretrain"]["bert-base-paper"]
    series["gpus"] = 8  # as the comment in config/paper.yaml offers
    targets = [f"{config['results']}/pretrain/bert-base-paper/step-{step}" for step in series["steps"]]
    output = snakemake(tmp_path, write_config(tmp_path / "paper-8-gpus.yaml", config), "--dry-run", "--printshellcmds",
                       "--cores", "32", *targets).stdout
    jobs = output.split("rule pretrain:")[1:]
    assert len(jobs) == len(series["steps"])
    for job in jobs:
        resources = next(line for line in job.splitlines() if line.strip().startswith("resources:"))
        assert "gpu=8," in resources and "tasks=" not in resources and "mpi=" not in resources
        # 4 threads (resources.train_threads) for each of the 8 processes
        assert "OMP_NUM_THREADS=4 crossdisc claim-gpus 8 torchrun --nproc-per-node 8 --standalone -m crossdisc pretrain " in job
