# Input functions: the config model (validation, cross-checks, the grid, the path layout) is
# crossdisc/grid.py; these functions hand it the wildcards of a job and shape its answers for rules.
import os
import sys

from crossdisc.console import report_at_exit, summary_lines
from crossdisc.errors import ConfigError
from crossdisc.grid import NATIVE, PUBLISHED, Grid, alternatives, dumps
from crossdisc.preflight import local_files, missing_local_files

try:
    grid = Grid(config)  # fills in the schema's defaults, in place
except ConfigError as err:  # one line, the console's last, and no traceback
    sys.exit(f"crossdisc: {err}")

PATHS = grid.paths
RESULTS = PATHS.results
ENV = "../../envs/crossdisc.yaml"


def optional_flag(name):
    """A params function: `--<name> <input.name>` where the job has that input, else nothing."""

    def flag(wildcards, input):
        return f"--{name} {input[name]}" if name in input.keys() else ""

    return flag


def source_spec(wildcards):
    return dumps(config["sources"][wildcards.source])


def local_source_files(wildcards):
    """A source's `file://` files that exist (a missing one stops the run at start-up, with its key)."""
    return [str(path) for path in local_files(config["sources"][wildcards.source]) if path.exists()]


def model_spec(wildcards):
    return dumps(grid.model_spec(wildcards.model))


def task_spec(wildcards):
    return dumps(grid.task_spec(wildcards.task))


# The inputs of a job, from its wildcards (the rules' names for the grid's keyword arguments).
def preprocess_inputs(wildcards):
    return grid.preprocess_inputs(**wildcards)


def corpus_split_inputs(wildcards):
    return grid.corpus_split_inputs(**wildcards)


def corpus_shard_inputs(wildcards):
    return grid.corpus_shard_inputs(**wildcards)


def corpus_shards_of(wildcards):
    return grid.corpus_shards_of(**wildcards)


def token_map_inputs(wildcards):
    return grid.token_map_inputs(**wildcards)


def table_seed(wildcards):
    """The seed of a random table: the run's, in a run-seeded table's path, else token_maps.seed
    (under `seed: run` the shared tables are the deterministic ones, whose seed is unused: 0)."""
    seed = wildcards.get("seed", config["token_maps"]["seed"])
    return 0 if seed == "run" else seed


def pretrain_inputs(wildcards):
    return grid.pretrain_inputs(**wildcards)


def finetune_inputs(wildcards):
    return grid.finetune_inputs(**wildcards)


def pretrain_spec(wildcards):
    return dumps(grid.pretrain_spec(wildcards.name))


def hparams(wildcards):
    return dumps(grid.hparams(wildcards.experiment, wildcards.task))


def run_coordinates(wildcards):
    """The run's place in the grid, recorded in its metrics.json for aggregation to read."""
    return dumps(grid.run_of(**wildcards))


def pretrain_threads(wildcards):
    return grid.pretrain_threads(wildcards.name)


def pretrain_resource(key):
    """A resources function: the job's `key` of grid.pretrain_resources (None: not asked for)."""

    def resource(wildcards):
        return grid.pretrain_resources(wildcards.name)[key]

    return resource


def pretrain_launcher(wildcards, threads):
    return grid.pretrain_launcher(wildcards.name, threads)


def train_mem_mb(wildcards, attempt):
    return grid.train_mem_mb(attempt)


def train_runtime(wildcards, attempt):
    return grid.train_runtime(attempt)


# ---- aggregation ------------------------------------------------------------------------------


def finished(run):
    return os.path.exists(f"{grid.run_dir(run)}/metrics.json")


def aggregated_runs():
    """Every run; with `partial_results`, the runs that have finished."""
    return [run for run in grid.runs if finished(run)] if config["partial_results"] else grid.runs


def aggregated_metrics(wildcards):
    return [f"{grid.run_dir(run)}/metrics.json" for run in aggregated_runs()]


def aggregated_token_files(wildcards):
    """The token files the aggregated runs trained on (their metadata counts examples per split)."""
    files = [grid.tokens_file(run["task"], grid.vocabulary_of(run["model"])) for run in aggregated_runs()]
    return list(dict.fromkeys(files))


def missing_runs(wildcards):
    """With `partial_results`, each unfinished run and why: a failed job leaves its log."""
    if not config["partial_results"]:
        return []
    log = rules.finetune.log[0]
    return [
        {**run, "reason": "failed" if os.path.exists(log.format(**run)) else "not run"}
        for run in grid.runs
        if not finished(run)
    ]


def figure_files(name, kind, labels=None, category="Figures"):
    """A figure's PNG (in the report, with the caption of its kind) and SVG."""
    png = report(f"{PATHS.figures}/{name}.png", caption=f"../report/{kind}.rst", category=category, labels=labels)
    return [png, f"{PATHS.figures}/{name}.svg"]


def overview_figure_files(kind):
    return [path for name in grid.overview_figures(kind) for path in figure_files(name, kind)]


def paper_figure_files():
    return [
        path
        for spec in config["paper_figures"]
        for path in figure_files(spec["name"], spec["kind"], labels={"figure": spec["title"]})
    ]


def paper_table_files():
    """The paper's tables (.md and .csv in the report, .tex beside them), where `paper_rows` is set."""
    caption = "../report/paper_tables.rst"
    return [
        path if path.endswith(".tex") else report(path, caption=caption, category="Results")
        for path in grid.paper_table_paths()
    ]


def results_table_files(name, caption):
    """A table of the results (.md and .csv) in the report under Results."""
    caption = f"../report/{caption}.rst"
    paths = [f"{PATHS.tables}/{name}.{ext}" for ext in ("md", "csv")]
    return [report(path, caption=caption, category="Results") for path in paths]


def comparison_table_files():
    """The paired comparisons (.md and .csv in the report, .tex beside them)."""
    caption = "../report/comparisons.rst"
    return [
        path if path.endswith(".tex") else report(path, caption=caption, category="Results")
        for path in grid.comparison_table_paths()
    ]


def search_table_files():
    return [report(path, caption="../report/search.rst", category="Results") for path in grid.search_table_paths()]


def search_figure_files():
    return [path for name in grid.searches() for path in figure_files(f"search_{name}", "search")]
