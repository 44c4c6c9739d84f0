# Helpers shared by all stages (config validation, path patterns, the experiment grid) and
# the input functions that resolve models, token files and token maps.

import itertools
import json
import os
import re
import sys

from humanfriendly import InvalidTimespan, parse_timespan
from jsonschema import ValidationError
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from crossdisc.preflight import missing_local_files
from crossdisc.preprocess import TEXT_READERS


def validate_config():
    """Validate and fill defaults; a bad key or value is reported in one line that names it."""
    try:
        validate(config, "../schemas/config.schema.yaml")
    except WorkflowError as err:
        problem = err.__context__  # Snakemake wraps the jsonschema error it caught
        if not isinstance(problem, ValidationError):
            raise
        where = ".".join(str(p) for p in problem.absolute_path) or "(top level)"
        raise WorkflowError(f"config: {where}: {problem.message}") from None


validate_config()

RESULTS = config["results"]
ENV = "../../envs/crossdisc.yaml"
TEXT_TOKEN_MAPS = re.compile(r"identity|shift-\d+|random-shift")

# Path patterns, each defined once.
RAW = f"{RESULTS}/raw/{{source}}"
MODEL = f"{RESULTS}/models/{{model}}"
CHECKPOINT = f"{RESULTS}/pretrain/{{name}}/step-{{step}}"
TOKENS = f"{RESULTS}/tokens/{{task}}/{{vocab}}.parquet"
TOKEN_MAP = f"{RESULTS}/token_maps/{{token_map}}/{{task}}/{{vocab}}.parquet"
CORPUS = f"{RESULTS}/corpus/{{source}}/{{vocab}}.parquet"  # a tokenised, deduplicated corpus
RUN_ID = "{experiment}/{task}/{model}/{init}/{token_map}/{fraction}/seed-{seed}"
RUN = f"{RESULTS}/runs/{RUN_ID}"
STATE = f"{RESULTS}/state"  # resumable training state, outside every declared output


def alternatives(names):
    return "|".join(re.escape(str(n)) for n in sorted(names, key=str)) or "(?!)"


def is_text_task(task):
    return config["tasks"][task]["reader"] in TEXT_READERS


def split_checkpoint(model):
    """`<pretrain name>@<step>` -> (name, step); None for an off-the-shelf model."""
    if "@" not in model:
        return None
    name, step = model.split("@", 1)
    return name, int(step)


def runs():
    """Every fine-tuning run of every experiment, as wildcard dicts."""
    grid = []
    for experiment, spec in config["experiments"].items():
        for task, model, init, token_map, fraction, seed in itertools.product(
            spec["tasks"], spec["models"], spec["inits"], spec["token_maps"], spec["fractions"], spec["seeds"]
        ):
            grid.append(dict(experiment=experiment, task=task, model=model, init=init, token_map=token_map,
                             fraction=str(float(fraction)), seed=seed))
    return grid


def check_grid():
    """Fail at start-up, with one line naming the experiment, on names the config does not define."""
    for job in runs():
        where = f"config: experiment '{job['experiment']}'"
        if job["task"] not in config["tasks"]:
            raise WorkflowError(f"{where}: unknown task '{job['task']}'")
        ckpt = split_checkpoint(job["model"])
        if ckpt:
            name, step = ckpt
            if name not in config["pretrain"] or step not in config["pretrain"][name]["steps"]:
                raise WorkflowError(f"{where}: '{job['model']}' is not a configured pre-training checkpoint")
        elif job["model"] not in config["models"]:
            raise WorkflowError(f"{where}: unknown model '{job['model']}'")
        if bool(TEXT_TOKEN_MAPS.fullmatch(job["token_map"])) != is_text_task(job["task"]):
            kind = "text" if is_text_task(job["task"]) else "non-text"
            raise WorkflowError(f"{where}: token map '{job['token_map']}' does not apply to {kind} task '{job['task']}'")
    for task, spec in config["tasks"].items():
        if spec["source"] not in config["sources"]:
            raise WorkflowError(f"config: task '{task}': unknown source '{spec['source']}'")


check_grid()


# ---- models -----------------------------------------------------------------------------------


def model_dir(model):
    ckpt = split_checkpoint(model)
    if ckpt:
        return checkpoint_dir(*ckpt)
    return MODEL.format(model=model)


def vocabulary_of(model):
    """The model whose tokenizer (vocabulary) a model reads: itself, or a checkpoint's tokenizer model."""
    ckpt = split_checkpoint(model)
    return checkpoint_vocabulary(ckpt[0]) if ckpt else model


def model_spec(wildcards):
    ckpt = split_checkpoint(wildcards.model)  # a step of a published checkpoint series
    return json.dumps(fetched_checkpoint_spec(*ckpt) if ckpt else config["models"][wildcards.model])


# ---- sources, tokens, token maps --------------------------------------------------------------


def source_spec(wildcards):
    return json.dumps(config["sources"][wildcards.source])


def tokens_file(task, model):
    """Text tasks are tokenised per model vocabulary; non-text tasks have one native vocabulary."""
    vocab = vocabulary_of(model) if is_text_task(task) else "native"
    return TOKENS.format(task=task, vocab=vocab)


def preprocess_inputs(wildcards):
    inputs = {"raw": RAW.format(source=config["tasks"][wildcards.task]["source"])}
    if wildcards.vocab != "native":
        inputs["tokenizer"] = MODEL.format(model=wildcards.vocab)
    return inputs


def tokenizer_flag(wildcards, input):
    return f"--tokenizer {input.tokenizer}" if "tokenizer" in input.keys() else ""


def task_spec(wildcards):
    """What preprocessing reads of a task: everything but its training settings and worker count,
    so tuning a task does not rebuild its token file."""
    spec = {k: v for k, v in config["tasks"][wildcards.task].items() if k not in ("training", "metric", "workers")}
    return json.dumps(spec, sort_keys=True)


def token_map_inputs(wildcards):
    text = is_text_task(wildcards.task)
    inputs = {
        "tokens": TOKENS.format(task=wildcards.task, vocab=wildcards.vocab if text else "native"),
        "tokenizer": MODEL.format(model=wildcards.vocab),
    }
    if wildcards.token_map == "most-frequent":  # counts the corpus as prepared for this vocabulary
        inputs["corpus"] = CORPUS.format(source=config["token_maps"]["corpus"], vocab=wildcards.vocab)
    return inputs


def corpus_flag(wildcards, input):
    return f"--corpus {input.corpus}" if "corpus" in input.keys() else ""


# ---- pre-training -----------------------------------------------------------------------------


def is_fetched(name):
    """A `pretrain` entry with `source: hub` names published step checkpoints instead of training."""
    return config["pretrain"][name].get("source", "train") == "hub"


def fetched_checkpoints():
    """`<name>@<step>` of every step of every fetched series: models under results/models/."""
    return [f"{name}@{step}" for name in config["pretrain"] if is_fetched(name) for step in config["pretrain"][name]["steps"]]


def checkpoint_dir(name, step):
    return MODEL.format(model=f"{name}@{step}") if is_fetched(name) else CHECKPOINT.format(name=name, step=step)


def checkpoint_vocabulary(name):
    """The model whose tokenizer a series reads: its `tokenizer`, else (fetched series) its first step."""
    spec = config["pretrain"][name]
    return spec.get("tokenizer") or f"{name}@{min(spec['steps'])}"


def fetched_checkpoint_spec(name, step):
    """The `models` spec of one step of a fetched series: `{step}` in `id` and `revision` is the
    optimiser step divided by `step_unit` (default 1000: MultiBERTs' `step_20k` is step 20000)."""
    spec = config["pretrain"][name]
    value = step // spec.get("step_unit", 1000)
    fetched = {"source": "hub", "id": spec["id"].format(step=value)}
    if spec.get("revision"):
        fetched["revision"] = spec["revision"].format(step=value)
    if spec.get("sha256", {}).get(str(step)):
        fetched["sha256"] = spec["sha256"][str(step)]
    return fetched


def check_pretrain():
    """Fail at start-up, with one line naming the entry, on what the schema cannot check."""
    for name, spec in config["pretrain"].items():
        where = f"config: pretrain '{name}'"
        if is_fetched(name):
            unit = spec.get("step_unit", 1000)
            if bad := [s for s in spec["steps"] if s % unit]:
                raise WorkflowError(f"{where}: steps {bad} are not multiples of step_unit {unit}")
            if spec.get("tokenizer") and spec["tokenizer"] not in config["models"]:
                raise WorkflowError(f"{where}: unknown tokenizer model '{spec['tokenizer']}'")
            continue
        if spec["corpus"] not in config["sources"]:
            raise WorkflowError(f"{where}: unknown corpus source '{spec['corpus']}'")
        if spec["tokenizer"] not in config["models"]:
            raise WorkflowError(f"{where}: unknown tokenizer model '{spec['tokenizer']}'")


check_pretrain()


def corpus_inputs(wildcards):
    return {"raw": RAW.format(source=wildcards.source), "tokenizer": MODEL.format(model=wildcards.vocab)}


def previous_checkpoint(wildcards):
    """The checkpoint a pre-training job continues from: the configured step before this one."""
    earlier = [s for s in config["pretrain"][wildcards.name]["steps"] if s < int(wildcards.step)]
    return CHECKPOINT.format(name=wildcards.name, step=max(earlier)) if earlier else None


def pretrain_inputs(wildcards):
    spec = config["pretrain"][wildcards.name]
    inputs = {"corpus": CORPUS.format(source=spec["corpus"], vocab=spec["tokenizer"]),
              "tokenizer": MODEL.format(model=spec["tokenizer"])}
    if previous_checkpoint(wildcards):
        inputs["previous"] = previous_checkpoint(wildcards)
    return inputs


def previous_flag(wildcards, input):
    return f"--previous {input.previous}" if "previous" in input.keys() else ""


def pretrain_spec(wildcards):
    spec = dict(config["pretrain"][wildcards.name])
    spec.setdefault("total_steps", max(spec["steps"]))
    return json.dumps(spec)


# ---- fine-tuning ------------------------------------------------------------------------------


def finetune_inputs(wildcards):
    return {
        "tokens": tokens_file(wildcards.task, wildcards.model),
        "token_map": TOKEN_MAP.format(token_map=wildcards.token_map, task=wildcards.task,
                                      vocab=vocabulary_of(wildcards.model)),
        "model": model_dir(wildcards.model),
    }


def hparams(wildcards):
    """Training settings of one run: defaults < task < experiment, plus the task's metric. Only
    what this run uses enters its params, so editing one task reruns only that task's jobs."""
    task = config["tasks"][wildcards.task]
    merged = {**config["training"], **task.get("training", {}),
              **config["experiments"][wildcards.experiment].get("training", {}), "metric": task["metric"]}
    return json.dumps(merged, sort_keys=True)


# ---- training resources -----------------------------------------------------------------------


def train_runtime_minutes():
    """The config's time limit of a training job; checked at start-up, for one line naming it."""
    runtime = config["resources"]["train_runtime"]
    try:
        return parse_timespan(runtime) / 60
    except InvalidTimespan:
        raise WorkflowError(f"config: resources.train_runtime: '{runtime}' is not a duration such as '90m' or '2h'") from None


TRAIN_RUNTIME_MINUTES = train_runtime_minutes()
# A training job asks for one GPU unless it trains on the CPU: locally `--resources gpu=N` runs at
# most N at once (without it the count is unlimited), and each takes a GPU of its own
# (crossdisc/gpu_slots.py); the SLURM executor requests it with sbatch --gpus.
TRAIN_GPUS = 0 if config["device"] == "cpu" else 1


def train_mem_mb(wildcards, attempt):
    """A retried job (`retries` in profiles/slurm) gets the memory and time of the config times
    its attempt: it failed for lack of one of them, and resumes from its saved state."""
    return config["resources"]["train_mem_mb"] * attempt


def train_runtime(wildcards, attempt):
    return f"{round(TRAIN_RUNTIME_MINUTES * attempt)}m"


def state_dir(wildcards):
    return RUN.replace(RESULTS, STATE, 1).format(**wildcards)


def sources_in_grid():
    """The sources that the configured runs read: their tasks', the corpus of most-frequent token
    maps, and the corpora of the series they pre-train."""
    jobs = runs()
    names = {config["tasks"][job["task"]]["source"] for job in jobs}
    if any(job["token_map"] == "most-frequent" for job in jobs) and "corpus" in config["token_maps"]:
        names.add(config["token_maps"]["corpus"])
    series = {ckpt[0] for job in jobs if (ckpt := split_checkpoint(job["model"]))}
    names |= {config["pretrain"][name]["corpus"] for name in series if not is_fetched(name)}
    return names


def has_pretrain_runs():
    return any(split_checkpoint(job["model"]) for job in runs())


# ---- aggregation ------------------------------------------------------------------------------


def finished(job):
    return os.path.exists(f"{RUN.format(**job)}/metrics.json")


def aggregated_metrics(wildcards):
    """Every run's metrics; with `partial_results`, those of the runs that have finished."""
    jobs = [job for job in runs() if finished(job)] if config["partial_results"] else runs()
    return [f"{RUN.format(**job)}/metrics.json" for job in jobs]


def missing_runs(wildcards):
    """With `partial_results`, why each unfinished run has no metrics: a failed job leaves its log."""
    if not config["partial_results"]:
        return {}
    log = rules.finetune.log[0]
    return {RUN.format(**job): "failed" if os.path.exists(log.format(**job)) else "not run"
            for job in runs() if not finished(job)}


def paper_table_files():
    """The paper's tables, where the config says which grid cell each printed row is."""
    if not config["paper_rows"]:
        return []
    tables = [f"{RESULTS}/tables/paper.{suffix}" for suffix in ("md", "csv", "tex")]
    return [report(path, caption="../report/paper_tables.rst", category="Results") for path in tables[:2]] + tables[2:]


def figure_files(name, kind, labels=None):
    """A figure's PNG (in the report, with the caption of its kind) and SVG."""
    caption = {"loss": "../report/loss_curves.rst", "steps": "../report/pretrain_steps.rst"}[kind]
    return [report(f"{RESULTS}/figures/{name}.png", caption=caption, category="Figures", labels=labels),
            f"{RESULTS}/figures/{name}.svg"]


def overview_figure_files(kind):
    """Without `paper_figures`, one figure of each kind over every run: training loss, and the
    metric against pre-training steps where runs start from a checkpoint series."""
    if config["paper_figures"] or (kind == "steps" and not has_pretrain_runs()):
        return []
    return figure_files({"loss": "loss_curves", "steps": "pretrain_steps"}[kind], kind)


def paper_figure_files():
    return [path for spec in config["paper_figures"]
            for path in figure_files(spec["name"], spec["kind"], labels={"figure": spec["title"]})]


def check_paper_figures():
    """Fail at start-up, with one line naming the figure, on names the config does not define."""
    known = {"experiment": set(config["experiments"]), "pretrain": set(config["pretrain"]),
             "model": set(config["models"]) | {job["model"] for job in runs()}}
    names = [spec["name"] for spec in config["paper_figures"]]
    for spec in config["paper_figures"]:
        where = f"config: paper_figures '{spec['name']}'"
        if names.count(spec["name"]) > 1:
            raise WorkflowError(f"{where}: two figures have this name")
        for row in spec["rows"]:
            if unknown := [task for task in row["tasks"] if task not in config["tasks"]]:
                raise WorkflowError(f"{where}: unknown task '{unknown[0]}'")
            for curve in row["curves"]:
                for key, defined in known.items():
                    if key in curve and curve[key] not in defined:
                        raise WorkflowError(f"{where}: curve '{curve['label']}': unknown {key} '{curve[key]}'")


check_paper_figures()


def final_outputs():
    return rules.aggregate.output
