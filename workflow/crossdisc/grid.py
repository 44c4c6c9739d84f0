"""The config model: a config validated against the schema (defaults filled in), cross-checked,
expanded into its fine-tuning runs, and laid out as paths. The workflow's rules ask a `Grid` what to
build and where (workflow/rules/common.smk); nothing here knows about Snakemake, so every check and
every path is tested directly (tests/test_grid.py).

Names: a *run* is one fine-tuning job, a dict of its coordinates (RUN_KEYS); a *cell* is a run less
its seed; a *checkpoint* `<series>@<step>` is one step of a `pretrain` series, trained here or, for a
`source: hub` series, fetched; a *search point* is one combination of the training settings an
experiment's `search` lists, whose runs carry the experiment name `<experiment>.<key>-<value>...`.
"""

import copy
import itertools
import json
import re
from pathlib import Path

import yaml
from humanfriendly import InvalidTimespan, parse_timespan
from jsonschema import Draft202012Validator, ValidationError, validators

from .corpus import shard_names
from .errors import ConfigError
from .preprocess import DEFAULT_ALPHABETS, TEXT_READERS, native_ids

SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"
PUBLISHED = Path(__file__).resolve().parents[1] / "data" / "published.csv"  # the paper's numbers
RUN_KEYS = ("experiment", "task", "model", "init", "token_map", "fraction", "seed")
TEXT_TOKEN_MAPS = re.compile(r"identity|shift-\d+|random-shift")
RANDOM_TABLES = ("random-shift", "random-real")  # the token maps token_maps.build_table draws from a seed
NATIVE = "native"  # the vocabulary of non-text token files: the discipline's own symbols
# A model built from its architecture reads those symbols itself: the `native` token map alone
# (ids unchanged), init `scratch` alone (it has no pretrained weights).
ARCHITECTURE_TOKEN_MAP, ARCHITECTURE_INIT = NATIVE, "scratch"


# ---- validation -------------------------------------------------------------------------------


def _filling_defaults(validator_class):
    """A validator that sets each missing property to the schema's default before checking it."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


DefaultFillingValidator = _filling_defaults(Draft202012Validator)


def validate(config, schema_path=SCHEMA):
    """Check `config` against the schema and fill in its defaults, in place. A bad key or value is
    one ConfigError naming it (`config: tasks.x.kind: 'foo' is not one of [...]`)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    try:
        DefaultFillingValidator(schema).validate(config)
    except ValidationError as problem:
        where = ".".join(str(p) for p in problem.absolute_path) or "(top level)"
        raise ConfigError(where, problem.message) from None
    return config


def split_checkpoint(model):
    """`<series>@<step>` -> (series, step); None for an off-the-shelf model."""
    if "@" not in model:
        return None
    name, step = model.split("@", 1)
    return name, int(step)


def search_settings(spec):
    """An experiment's search points: one training-settings dict per combination of the values its
    `search` lists, in order; one empty dict without a search."""
    search = spec.get("search", {})
    return [dict(zip(search, values)) for values in itertools.product(*search.values())]


def point_name(experiment, setting):
    """A search point's runs' experiment name, `<experiment>.<key>-<value>...` (the experiment's
    own name without a search)."""
    return ".".join([experiment] + [f"{key}-{value}" for key, value in setting.items()])


def alternatives(names):
    """A regular expression matching exactly the given names (a wildcard constraint)."""
    return "|".join(re.escape(str(n)) for n in sorted(set(names), key=str)) or "(?!)"


# ---- path layout ------------------------------------------------------------------------------


class Layout:
    """Every path the pipeline writes, as a pattern with {wildcards}, each defined once."""

    def __init__(self, results):
        self.results = results
        self.raw = f"{results}/raw/{{source}}"
        self.checksum_lock = f"{results}/raw/checksums.lock"
        self.model = f"{results}/models/{{model}}"
        self.checkpoint = f"{results}/pretrain/{{name}}/step-{{step}}"
        self.tokens = f"{results}/tokens/{{task}}/{{vocab}}.parquet"
        self.token_map = f"{results}/token_maps/{{token_map}}/{{task}}/{{vocab}}.parquet"
        self.run_seeded_token_map = f"{results}/token_maps/{{token_map}}/{{task}}/{{vocab}}/seed-{{seed}}.parquet"
        # a pre-training corpus per vocabulary: corpus.txt split by document (temporary; split per
        # vocabulary, so that re-splitting for one never makes another's shards look outdated), each
        # shard tokenised, and the manifest of those shards, which pre-training and token maps read
        self.corpus_text_shard = f"{results}/corpus/{{source}}/{{vocab}}/text-{{shard}}.parquet"
        self.corpus_shard = f"{results}/corpus/{{source}}/{{vocab}}/shard-{{shard}}.parquet"
        self.corpus = f"{results}/corpus/{{source}}/{{vocab}}.json"
        self.run_id = "{experiment}/{task}/{model}/{init}/{token_map}/{fraction}/seed-{seed}"
        self.run = f"{results}/runs/{self.run_id}"
        # resumable training state, outside every declared output (Snakemake deletes those first)
        self.run_state = f"{results}/state/runs/{self.run_id}"
        self.pretrain_state = f"{results}/state/pretrain/{{name}}/step-{{step}}"
        self.tables = f"{results}/tables"
        self.figures = f"{results}/figures"


# ---- the grid ---------------------------------------------------------------------------------


class Grid:
    """A validated, cross-checked config and what follows from it. Raises ConfigError on the first
    problem, naming the key."""

    def __init__(self, config, schema_path=SCHEMA):
        self.config = validate(config, schema_path)
        self.paths = Layout(self.config["results"])
        self.search_points = {point_name(name, setting): (name, setting)
                              for name, spec in self.config["experiments"].items() for setting in search_settings(spec)}
        self.runs = self._expand()
        self.train_runtime_minutes = self._train_runtime_minutes()
        self._check_runs()
        self._check_tasks()
        self._check_pretrain()
        self._check_paper_figures()
        self._check_searches(schema_path)

    # -- expansion --

    def _expand(self):
        runs = []
        for experiment, (name, _) in self.search_points.items():
            spec = self.config["experiments"][name]
            for task, model, init, token_map, fraction, seed in itertools.product(
                spec["tasks"], spec["models"], spec["inits"], spec["token_maps"], spec["fractions"], spec["seeds"]
            ):
                runs.append(dict(experiment=experiment, task=task, model=model, init=init, token_map=token_map,
                                 fraction=str(float(fraction)), seed=seed + self.config["seed_offset"]))
        return runs

    def _train_runtime_minutes(self):
        runtime = self.config["resources"]["train_runtime"]
        try:
            return parse_timespan(runtime) / 60
        except InvalidTimespan:
            raise ConfigError("resources.train_runtime", f"'{runtime}' is not a duration such as '90m' or '2h'") from None

    # -- what a training job asks the scheduler for --

    def train_gpus(self):
        """One GPU unless the config trains on the CPU: locally `--resources gpu=N` runs at most N
        at once and each job takes a GPU of its own (gpu_slots.py); SLURM gets it as --gpus."""
        return 0 if self.config["device"] == "cpu" else 1

    def pretrain_threads(self, name):
        """train_threads for each of a pre-training job's processes on a node."""
        return self.config["resources"]["train_threads"] * self.config["pretrain"][name]["gpus"]

    def pretrain_resources(self, name):
        """What a checkpoint job of series `name` asks for, in the resources of Snakemake and its
        SLURM executor plugin (a None is left out). On one node: `gpu` GPUs, counted locally by
        `--resources gpu=N` and asked of SLURM as --gpus, where the plugin runs the job's command once
        (one task), on all of them. On several nodes (SLURM): one task per node and the node's GPUs
        (gres), and the plugin's `mpi`, under which it runs the command without srun, so that the
        command's own srun starts a torchrun on every node (pretrain_launcher). tasks_per_gpu 0: never
        a task per GPU (--ntasks-per-gpu, which the plugin derives from `tasks`, and before 2.7.1
        set to 1 for every GPU job)."""
        spec = self.config["pretrain"][name]
        gpus = 0 if self.config["device"] == "cpu" else spec["gpus"]
        if spec["nodes"] == 1:
            return {"gpu": gpus, "nodes": None, "tasks": None, "tasks_per_gpu": 0, "gres": None, "mpi": None}
        return {"gpu": None, "nodes": spec["nodes"], "tasks": spec["nodes"], "tasks_per_gpu": 0,
                "gres": f"gpu:{gpus}" if gpus else None, "mpi": "srun"}

    def pretrain_launcher(self, name, threads):
        """The command that starts `crossdisc` (the stage's arguments follow) for a checkpoint job of
        series `name` with `threads` cores per node: the command itself for one process; torchrun with
        `gpus` processes on one node, on GPUs claimed all at once where no scheduler gave the job its
        own (`crossdisc claim-gpus`); on several nodes, srun starting one torchrun per node (a task
        of all the node's cores), which meet at a rendezvous on the node that runs the command, the
        job's first, at a port of the job's id."""
        spec = self.config["pretrain"][name]
        gpus, nodes, on_gpu = spec["gpus"], spec["nodes"], self.config["device"] != "cpu"
        if gpus * nodes == 1:
            return "crossdisc"
        # torchrun sets 1 thread per process where OMP_NUM_THREADS is unset; Snakemake sets the job's
        threads_each = f"OMP_NUM_THREADS={max(1, threads // gpus)}"
        torchrun = f"torchrun --nproc-per-node {gpus}"
        if nodes == 1:
            claim = f"crossdisc claim-gpus {gpus} " if on_gpu else ""
            return f"{threads_each} {claim}{torchrun} --standalone -m crossdisc"
        gres = f" --gres gpu:{gpus}" if on_gpu else ""
        return (f"{threads_each} srun --kill-on-bad-exit=1 --ntasks {nodes} --cpus-per-task {threads}{gres} "
                f"{torchrun} --nnodes {nodes} --rdzv-backend c10d --rdzv-id $SLURM_JOB_ID "
                f'--rdzv-endpoint "$(hostname)":$((29500 + SLURM_JOB_ID % 1000)) -m crossdisc')

    def train_mem_mb(self, attempt=1):
        """A retried job (`retries`, as in profiles/slurm) gets the config's memory and time times its
        attempt: it failed for lack of one of them, and resumes from its saved state."""
        return self.config["resources"]["train_mem_mb"] * attempt

    def train_runtime(self, attempt=1):
        return f"{round(self.train_runtime_minutes * attempt)}m"

    # -- cross-checks: what the schema cannot see, each one line naming the key --

    def _check_runs(self):
        config = self.config
        for run in self.runs:
            where = f"experiments.{self.search_points[run['experiment']][0]}"
            if run["task"] not in config["tasks"]:
                raise ConfigError(where, f"unknown task '{run['task']}'")
            checkpoint = split_checkpoint(run["model"])
            if checkpoint:
                name, step = checkpoint
                if name not in config["pretrain"] or step not in config["pretrain"][name]["steps"]:
                    raise ConfigError(where, f"'{run['model']}' is not a configured pre-training checkpoint")
            elif run["model"] not in config["models"]:
                raise ConfigError(where, f"unknown model '{run['model']}'")
            self._check_architecture_run(run, where)
            text = self.is_text_task(run["task"])
            if bool(TEXT_TOKEN_MAPS.fullmatch(run["token_map"])) != text:
                kind = "text" if text else "non-text"
                raise ConfigError(where, f"token map '{run['token_map']}' does not apply to {kind} task '{run['task']}'")
            if run["token_map"].startswith("most-frequent"):
                corpus = config["token_maps"].get("corpus")
                if corpus is None:
                    raise ConfigError("token_maps.corpus", f"experiment '{run['experiment']}' uses most-frequent, "
                                      "which counts the tokens of this source: name one of `sources`")
                if corpus not in config["sources"]:
                    raise ConfigError("token_maps.corpus", f"unknown source '{corpus}'")

    def _check_architecture_run(self, run, where):
        """A model built from its architecture (Hilbert-CNN) trains from scratch on the task's own
        symbols; the `native` token map is for such models only."""
        if self.is_architecture(run["model"]):
            family = self.config["models"][run["model"]]["family"]
            if run["init"] != ARCHITECTURE_INIT:
                raise ConfigError(f"{where}.inits", f"model '{run['model']}' is built from its architecture "
                                  f"({family}): init '{ARCHITECTURE_INIT}' only, not '{run['init']}'")
            if run["token_map"] != ARCHITECTURE_TOKEN_MAP:
                raise ConfigError(f"{where}.token_maps", f"model '{run['model']}' reads the task's own symbols: token "
                                  f"map '{ARCHITECTURE_TOKEN_MAP}' only, not '{run['token_map']}'")
        elif run["token_map"] == ARCHITECTURE_TOKEN_MAP:
            raise ConfigError(f"{where}.token_maps", f"token map '{ARCHITECTURE_TOKEN_MAP}' is for models built from "
                              f"their architecture (source: architecture), not '{run['model']}'")

    def _check_tasks(self):
        for task, spec in self.config["tasks"].items():
            if spec["source"] not in self.config["sources"]:
                raise ConfigError(f"tasks.{task}.source", f"unknown source '{spec['source']}'")
            reader = spec["reader"]
            if reader not in TEXT_READERS and reader not in DEFAULT_ALPHABETS and "alphabet" not in spec:
                raise ConfigError(f"tasks.{task}.alphabet", f"the {reader} reader needs the task's symbols in id "
                                  "order (e.g. ACGT for DNA)")
            if reader == "midi" and spec["segmenting"] == "authors" and spec["instruments"] != "first":
                raise ConfigError(f"tasks.{task}.instruments", "segmenting 'authors' cuts one instrument's notes in "
                                  "pretty_midi's stored order: use instruments: first (or segmenting: onset)")
            if not self.is_text_task(task):
                native_ids(task, spec)  # the alphabet options name symbols of the alphabet

    def _check_pretrain(self):
        config = self.config
        for name, spec in config["pretrain"].items():
            where = f"pretrain.{name}"
            if spec.get("tokenizer") and spec["tokenizer"] not in config["models"]:
                raise ConfigError(f"{where}.tokenizer", f"unknown model '{spec['tokenizer']}'")
            if self.is_fetched(name):
                unit = spec.get("step_unit", 1000)
                if bad := [s for s in spec["steps"] if s % unit]:
                    raise ConfigError(f"{where}.steps", f"{bad} are not multiples of step_unit {unit}")
            elif spec["corpus"] not in config["sources"]:
                raise ConfigError(f"{where}.corpus", f"unknown source '{spec['corpus']}'")
            processes = spec["gpus"] * spec["nodes"]
            if spec["training"]["batch_size"] % processes:
                raise ConfigError(f"{where}.gpus", f"{processes} processes (gpus x nodes) do not divide "
                                  f"training.batch_size {spec['training']['batch_size']}: each trains on an equal share")
            long_from = spec["training"].get("long_from_step")
            if long_from is not None and long_from >= (total := self.pretrain_spec(name)["total_steps"]):
                raise ConfigError(f"{where}.training.long_from_step", f"{long_from} is not before the schedule's end "
                                  f"(total_steps {total}): no step would train at long_max_length")

    def _check_paper_figures(self):
        config = self.config
        known = {"experiment": set(config["experiments"]), "pretrain": set(config["pretrain"]),
                 "model": set(config["models"]) | {run["model"] for run in self.runs}}
        names = [spec["name"] for spec in config["paper_figures"]]
        for spec in config["paper_figures"]:
            where = f"paper_figures.{spec['name']}"
            if names.count(spec["name"]) > 1:
                raise ConfigError(where, "two figures have this name")
            for row in spec["rows"]:
                if unknown := [task for task in row["tasks"] if task not in config["tasks"]]:
                    raise ConfigError(where, f"unknown task '{unknown[0]}'")
                for curve in row["curves"]:
                    for key, defined in known.items():
                        if key in curve and curve[key] not in defined:
                            raise ConfigError(where, f"curve '{curve['label']}': unknown {key} '{curve[key]}'")

    def _check_searches(self, schema_path):
        """Every point of a `search` is a valid `training` block."""
        definitions = yaml.safe_load(Path(schema_path).read_text())["$defs"]
        training = Draft202012Validator({"$defs": definitions, "$ref": "#/$defs/training"})
        for name, setting in self.search_points.values():
            if problem := next(training.iter_errors(setting), None):
                where = ".".join(["experiments", name, "search", *map(str, problem.absolute_path)])
                raise ConfigError(where, problem.message)

    # -- tasks, models and vocabularies --

    def is_text_task(self, task):
        return self.config["tasks"][task]["reader"] in TEXT_READERS

    def is_architecture(self, model):
        """A `models` entry with `source: architecture`: a model family of the pipeline's own."""
        return not split_checkpoint(model) and self.config["models"][model]["source"] == "architecture"

    def is_fetched(self, name):
        """A `pretrain` series with `source: hub` names published checkpoints instead of training."""
        return self.config["pretrain"][name].get("source", "train") == "hub"

    def trained_series(self):
        return [name for name in self.config["pretrain"] if not self.is_fetched(name)]

    def fetched_checkpoints(self):
        """`<series>@<step>` of every step of every fetched series: models under <results>/models/."""
        return [f"{name}@{step}" for name, spec in self.config["pretrain"].items() if self.is_fetched(name)
                for step in spec["steps"]]

    def model_dir(self, model):
        checkpoint = split_checkpoint(model)
        if checkpoint and not self.is_fetched(checkpoint[0]):
            return self.paths.checkpoint.format(name=checkpoint[0], step=checkpoint[1])
        return self.paths.model.format(model=model)

    def vocabulary_of(self, model):
        """The model whose tokenizer a model reads: itself, or its series' `tokenizer` (a fetched
        series without one: its first step); NATIVE for a model built from its architecture, which
        reads the task's own symbols."""
        checkpoint = split_checkpoint(model)
        if not checkpoint:
            return NATIVE if self.is_architecture(model) else model
        spec = self.config["pretrain"][checkpoint[0]]
        return spec.get("tokenizer") or f"{checkpoint[0]}@{min(spec['steps'])}"

    def model_spec(self, model):
        """The `models` entry of a model; for a step of a fetched series, the entry of that step:
        `{step}` in `id` and `revision` is the step divided by `step_unit` (default 1000:
        MultiBERTs' `step_20k` is step 20000)."""
        checkpoint = split_checkpoint(model)
        if not checkpoint:
            return self.config["models"][model]
        name, step = checkpoint
        spec = self.config["pretrain"][name]
        value = step // spec.get("step_unit", 1000)
        fetched = {"source": "hub", "id": spec["id"].format(step=value)}
        if spec.get("revision"):
            fetched["revision"] = spec["revision"].format(step=value)
        if spec.get("sha256", {}).get(str(step)):
            fetched["sha256"] = spec["sha256"][str(step)]
        return fetched

    def vocabularies(self):
        """Every vocabulary a token file or token map is built for."""
        models = {run["model"] for run in self.runs} | {spec["tokenizer"] for spec in self.config["pretrain"].values()
                                                         if spec.get("tokenizer")}
        return {self.vocabulary_of(model) for model in models} | {NATIVE}

    # -- what each stage reads: a job's inputs from its wildcards --

    def preprocess_inputs(self, task, vocab):
        inputs = {"raw": self.paths.raw.format(source=self.config["tasks"][task]["source"])}
        if vocab != NATIVE:
            inputs["tokenizer"] = self.paths.model.format(model=vocab)
        return inputs

    def corpus_shards(self):
        """The names of a corpus's shards (`{shard}` in their paths)."""
        return shard_names(self.config["corpus_shards"])

    def corpus_split_inputs(self, source, vocab):
        return {"raw": self.paths.raw.format(source=source)}

    def corpus_shard_inputs(self, source, vocab, shard):
        return {"text": self.paths.corpus_text_shard.format(source=source, vocab=vocab, shard=shard),
                "tokenizer": self.paths.model.format(model=vocab)}

    def corpus_shards_of(self, source, vocab):
        """Every prepared shard of one corpus, which its manifest gathers."""
        return [self.paths.corpus_shard.format(source=source, vocab=vocab, shard=shard) for shard in self.corpus_shards()]

    def token_map_inputs(self, token_map, task, vocab, seed=None):  # a table's seed leaves its inputs as they are
        inputs = {"tokens": self.tokens_file(task, vocab)}
        if vocab != NATIVE:  # the native vocabulary has no tokenizer
            inputs["tokenizer"] = self.paths.model.format(model=vocab)
        if token_map.startswith("most-frequent"):  # counts the corpus as prepared for this vocabulary
            inputs["corpus"] = self.paths.corpus.format(source=self.config["token_maps"]["corpus"], vocab=vocab)
        return inputs

    def token_map_file(self, token_map, task, vocab, seed):
        """The table a run of `seed` reads: its own where random tables follow the run's seed."""
        if self.config["token_maps"]["seed"] == "run" and token_map.removesuffix("+model-specials") in RANDOM_TABLES:
            return self.paths.run_seeded_token_map.format(token_map=token_map, task=task, vocab=vocab, seed=seed)
        return self.paths.token_map.format(token_map=token_map, task=task, vocab=vocab)

    def pretrain_inputs(self, name, step):
        spec = self.config["pretrain"][name]
        inputs = {"corpus": self.paths.corpus.format(source=spec["corpus"], vocab=spec["tokenizer"]),
                  "tokenizer": self.paths.model.format(model=spec["tokenizer"])}
        earlier = [s for s in spec["steps"] if s < int(step)]
        if earlier:  # continues from the configured step before this one
            inputs["previous"] = self.paths.checkpoint.format(name=name, step=max(earlier))
        return inputs

    def finetune_inputs(self, experiment, task, model, init, token_map, fraction, seed):
        vocab = self.vocabulary_of(model)
        return {"tokens": self.tokens_file(task, vocab),
                "token_map": self.token_map_file(token_map, task, vocab, seed),
                "model": self.model_dir(model)}

    def run_of(self, experiment, task, model, init, token_map, fraction, seed):
        """A run's coordinates from its wildcards (strings): as `runs` holds them."""
        return dict(experiment=experiment, task=task, model=model, init=init, token_map=token_map,
                    fraction=fraction, seed=int(seed))

    def tokens_file(self, task, vocab):
        """Text tasks are tokenised per model vocabulary; non-text tasks have one native vocabulary."""
        return self.paths.tokens.format(task=task, vocab=vocab if self.is_text_task(task) else NATIVE)

    def task_spec(self, task):
        """What preprocessing reads of a task: everything but its training settings, metric and
        worker count, so tuning a task does not rebuild its token file."""
        return {k: v for k, v in self.config["tasks"][task].items() if k not in ("training", "metric", "workers")}

    def pretrain_spec(self, name):
        """What pre-training reads of a series: everything but its processes (gpus, nodes), which
        do not change what it trains, so changing them does not retrain finished checkpoints."""
        spec = {k: v for k, v in self.config["pretrain"][name].items() if k not in ("gpus", "nodes")}
        spec.setdefault("total_steps", max(spec["steps"]))
        spec["seed"] += self.config["seed_offset"]
        return spec

    def hparams(self, experiment, task):
        """Training settings of a run: defaults < task < experiment < its search point; with early
        stopping, the task's metric, which picks the best dev checkpoint (otherwise the metric is
        read at aggregation: changing it re-aggregates, it does not retrain); a search that selects
        on the training split has it scored. Only what the run uses, so editing one task reruns only
        its jobs."""
        name, setting = self.search_points[experiment]
        spec, task_spec = self.config["experiments"][name], self.config["tasks"][task]
        hparams = {**self.config["training"], **task_spec.get("training", {}), **spec.get("training", {}), **setting}
        if hparams.get("early_stopping"):
            hparams["metric"] = task_spec["metric"]
        if "search" in spec and spec["select_on"]["split"] == "train":
            hparams["score_train"] = True
        return hparams

    def headline_metrics(self):
        """{task: its headline metric}, which the aggregation reads from each run's metrics."""
        return {task: spec["metric"] for task, spec in self.config["tasks"].items()}

    # -- runs --

    def run_dir(self, run):
        return self.paths.run.format(**run)

    def sources_in_grid(self):
        """The sources the configured runs read: their tasks', the corpus of most-frequent token
        maps, and the corpora of the series they pre-train."""
        config = self.config
        names = {config["tasks"][run["task"]]["source"] for run in self.runs}
        if any(run["token_map"].startswith("most-frequent") for run in self.runs):
            names.add(config["token_maps"]["corpus"])
        series = {checkpoint[0] for run in self.runs if (checkpoint := split_checkpoint(run["model"]))}
        return names | {config["pretrain"][name]["corpus"] for name in series if not self.is_fetched(name)}

    def has_pretrain_runs(self):
        return any(split_checkpoint(run["model"]) for run in self.runs)

    # -- aggregation --

    def overview_figures(self, kind):
        """Without `paper_figures`, one figure of each kind over every run: `loss` (training loss)
        and `steps` (the metric against pre-training steps, where runs start from a series)."""
        if self.config["paper_figures"] or (kind == "steps" and not self.has_pretrain_runs()):
            return []
        return [{"loss": "loss_curves", "steps": "pretrain_steps"}[kind]]

    def paper_table_paths(self):
        """The paper's tables, where `paper_rows` says which grid cell each printed row is."""
        if not self.config["paper_rows"]:
            return []
        return [f"{self.paths.tables}/paper.{suffix}" for suffix in ("md", "csv", "tex")]

    def searches(self):
        """{experiment: its search points {run experiment name: setting}, and `select_on`} of every
        experiment with a `search`."""
        return {name: {"points": {point: setting for point, (n, setting) in self.search_points.items() if n == name},
                       "select_on": spec["select_on"]}
                for name, spec in self.config["experiments"].items() if "search" in spec}

    def search_table_paths(self):
        return [f"{self.paths.tables}/search.{suffix}" for suffix in ("md", "csv")] if self.searches() else []

    def comparison_table_paths(self):
        """The paired comparisons of `comparisons` (none without it)."""
        if not self.config["comparisons"]:
            return []
        return [f"{self.paths.tables}/comparisons.{suffix}" for suffix in ("md", "csv", "tex")]

    def wildcard_constraints(self):
        """A regular expression per wildcard: exactly the names the config defines."""
        config = self.config
        return {
            "source": alternatives(config["sources"]),
            "model": alternatives({run["model"] for run in self.runs} | set(config["models"])
                                  | set(self.fetched_checkpoints())),
            "name": alternatives(config["pretrain"]),
            "step": r"\d+",
            "task": alternatives(config["tasks"]),
            "vocab": alternatives(self.vocabularies()),
            "token_map": alternatives({run["token_map"] for run in self.runs}),
            "experiment": alternatives(self.search_points),
            "init": alternatives({run["init"] for run in self.runs}),
            "fraction": alternatives({run["fraction"] for run in self.runs}),
            "seed": r"\d+",
            "shard": r"\d+",
        }


def dumps(value):
    """A spec or setting as one stable JSON string (for a rule's params and command line)."""
    return json.dumps(value, sort_keys=True)
