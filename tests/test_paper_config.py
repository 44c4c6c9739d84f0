"""config/paper.yaml plans the paper's whole grid, every published number of its tables
(workflow/data/published.csv) has a planned run, and every curve of its figures draws planned runs:
the published numbers, the figures and the config stay in step. One dry-run of the real Snakefile
(about 3 s), nothing is downloaded or trained."""

import re
import subprocess

import pandas as pd
import pytest
import yaml

from conftest import REPO
from crossdisc.aggregate import PUBLISHED_SPLITS, read_published, select

PAPER_CONFIG = REPO / "config" / "paper.yaml"
GLUE = ["mnli", "qqp", "qnli", "sst2", "cola", "stsb", "mrpc", "rte"]
NON_TEXT = ["localization", "stability", "fluorescence", "h3", "h4", "h3k9ac", "splice", "composer"]
# rows of the paper x tasks, per experiment
EXPECTED_RUNS = {
    "table1-shift1000": 4 * 8,  # BERT, BERT (rand), ALBERT, ALBERT (rand)
    "table1-random-shift": 2 * 8,  # BERT, BERT (rand)
    "table1-1pct": 2 * 8,  # BERT, BERT (rand) on 1% data
    "table1-re-emb": 1 * 8,  # BERT (re-emb), normal data
    "table2": 3 * 8,  # BERT, re-emb, rand
    "table2-unused": 1 * 8,  # BERT on [unusedN] tokens (section 3.3)
    "figure3-text": 5 * 3,  # 5 checkpoints x QQP, QNLI, STS-B
    "figure3-protein": 5 * 3,  # 5 checkpoints x 3 protein tasks
    "figure4-dna-music": 5 * 5,  # 5 checkpoints x 4 DNA tasks + composer
    "figure3-multiberts-text": 5 * 3,  # MultiBERTs seed 0's 5 checkpoints x QQP, QNLI, STS-B
    "figure3-multiberts-protein": 5 * 5 * 3,  # 5 seeds x 5 checkpoints x 3 protein tasks
}
WILDCARDS = re.compile(r"^rule finetune:\n(?:    .*\n)*?    wildcards: (.*)$", re.M)


@pytest.fixture(scope="module")
def config():
    return yaml.safe_load(PAPER_CONFIG.read_text())


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    """The finetune jobs of a dry-run of config/paper.yaml, as wildcard dicts."""
    workdir = tmp_path_factory.mktemp("paper-dry-run")
    command = ["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(workdir), "--configfile",
               str(PAPER_CONFIG), "--dry-run", "--cores", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = [dict(item.split("=", 1) for item in match.split(", ")) for match in WILDCARDS.findall(result.stdout)]
    counts = dict(re.findall(r"^(\w+)\s+(\d+)$", result.stdout, re.M))
    assert int(counts["finetune"]) == len(jobs)  # every finetune job was parsed
    return jobs


@pytest.fixture(scope="module")
def published():
    return read_published()


def test_the_paper_config_plans_every_experiment_with_the_papers_rows_times_tasks(planned, config):
    counts = {}
    for job in planned:
        counts[job["experiment"]] = counts.get(job["experiment"], 0) + 1
    assert counts == EXPECTED_RUNS
    assert set(config["experiments"]) == set(EXPECTED_RUNS)
    assert len(planned) == len({tuple(sorted(job.items())) for job in planned})
    assert {job["seed"] for job in planned} == {"100"}


def test_the_config_has_the_papers_tasks_models_and_checkpoints(config):
    assert set(config["tasks"]) == set(GLUE) | set(NON_TEXT)
    assert set(config["models"]) == {"bert-base-uncased", "albert-base-v1"}
    paper_bert = config["pretrain"]["bert-base-paper"]
    assert paper_bert["steps"] == [0, 20000, 200000, 500000, 1000000]
    assert paper_bert["architecture"] == {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                                          "intermediate_size": 3072}
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
        if key == ("", "specific"):  # the discipline-specific models are not run here
            continue
        assert key in paper_rows, f"published row {key} of {cell.table} has no entry in paper_rows"
        target = paper_rows[key]
        run = (target["experiment"], cell.task, target["model"], target["init"], target["token_map"],
               str(float(target.get("fraction", 1.0))))
        assert run in runs, f"{cell.table} {key} {cell.task}: no planned run {run}"
        covered.add(run)
    # and the other way round: every run of a table experiment is a published cell
    table_runs = {run for run in runs if run[0] in {r["experiment"] for r in paper_rows.values()}}
    assert table_runs == covered


def test_every_curve_of_the_papers_figures_draws_planned_runs_on_every_task_of_its_row(planned, config):
    planned = pd.DataFrame(planned).assign(seed=lambda frame: frame["seed"].astype(int))
    for spec in config["paper_figures"]:
        for row in spec["rows"]:
            for task in row["tasks"]:
                for curve in row["curves"]:
                    chosen = select(planned, {"fraction": 1.0, **curve}, task)
                    assert not chosen.empty, f"{spec['name']} {task}: curve '{curve['label']}' selects no planned run"
                    if "pretrain" in curve:  # every checkpoint of the series, 0 to 1M steps
                        assert len(chosen) == len(config["pretrain"][curve["pretrain"]]["steps"])
