"""The aggregate stage: every run's metrics into the results table; the paper's tables with our
numbers beside the published ones; and the figures, training loss per step and the metric against
pre-training steps, laid out panel by panel as the config's `paper_figures` say, or one figure of
each kind over every run."""

import json
import math
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .comparisons import compare, interval  # noqa: E402
from .comparisons import to_latex as comparisons_latex  # noqa: E402
from .comparisons import to_markdown as comparisons_markdown  # noqa: E402
from .files import atomic_path, write_text  # noqa: E402
from .grid import PUBLISHED, RUN_KEYS  # noqa: E402
from .tokens import SPLITS  # noqa: E402
from .tokens import read_meta as read_token_meta  # noqa: E402

RUN_KEYS = list(RUN_KEYS)
CELL_KEYS = RUN_KEYS[:-1]

# The paper's published numbers (workflow/data/published.csv) and where config/paper.yaml runs
# each of their rows: (section, row label as printed) -> the grid cell, task aside (an entry's
# `tasks`, where given, are the tasks it runs: Table 2's "specific" row is Hilbert-CNN on DNA, and
# PLUS-TFM, which the pipeline does not run, on protein). Main Table 1 and appendix Table 1 share
# their rows, as do Table 2 (test) and appendix Table 2 (validation).
PUBLISHED_SPLITS = {"test": "test", "validation": "dev"}
# What a paper table holds per task; `note` says why `ours` is missing, or some of its seeds are.
PAPER_FIELDS = ["ours", "std", "n", "paper", "diff", "note", "metric"]
NOT_RUN_HERE = "not run here"  # no paper_rows entry names a grid cell for the printed row
NOT_IN_GRID = "not in the grid"  # paper_rows names a cell that no experiment of the config runs
CELL_FORMAT = ("Each cell: ours / published (ours minus published), in percent; ours is the mean ± standard "
               "deviation over n seeds where there are several. Validation tables compare our dev split.")

SPLIT_NAMES = {"test": "test", "dev": "validation (dev)"}
MAX_COLUMNS = 4  # panels side by side in a figure; longer rows wrap
LANDING_COMPARISONS = 8  # rows of the paired comparisons on the report's landing page


def read_published(path=PUBLISHED):
    """The published numbers, one row per table cell; `value` as printed (text), empty where the
    paper prints '-'."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _fraction(value):
    """A data fraction as its run directory spells it (1 -> '1.0')."""
    return str(float(value))


def collect(metrics_paths, headline=None):
    """One row per run: its grid coordinates (as its metrics.json records them), its task's
    headline metric (from `headline`, {task: metric}, else the one the run recorded) on test and
    dev (fractions), directory, and `scores`, every metric of every scored split."""
    rows = []
    for path in metrics_paths:
        summary = json.loads(Path(path).read_text())
        run, scores = summary["run"], summary.get("metrics", {})
        metric = (headline or {}).get(run["task"]) or summary["metric"]
        rows.append({**{key: run[key] for key in RUN_KEYS}, "metric": metric,
                     "test": scores.get("test", {}).get(metric), "dev": scores.get("dev", {}).get(metric),
                     "steps": summary["steps"], "train_seconds": summary["train_seconds"],
                     "run_dir": str(Path(path).parent), "scores": scores, "settings": _training_settings(summary)})
    columns = RUN_KEYS + ["metric", "test", "dev", "steps", "train_seconds", "run_dir", "scores", "settings"]
    return pd.DataFrame(rows, columns=columns)


def _training_settings(summary):
    """A run's training settings as one comparable string, less what does not change training (the
    metric a run records, whether it scored its training split)."""
    settings = {k: v for k, v in summary.get("hparams", {}).items() if k not in ("metric", "score_train")}
    return json.dumps(settings, sort_keys=True)


def summarise(runs):
    """One row per grid cell: mean and standard deviation over seeds, in percent as the paper."""
    cells = runs.groupby(CELL_KEYS + ["metric"], sort=False).agg(
        test_mean=("test", "mean"), test_std=("test", "std"), dev_mean=("dev", "mean"), seeds=("seed", "count"))
    for col in ("test_mean", "test_std", "dev_mean"):
        cells[col] = (100 * cells[col]).round(1)
    return cells.reset_index()


def to_markdown(cells):
    header = ["experiment", "task", "model", "init", "token map", "data", "metric", "test", "dev", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in cells.itertuples(index=False):
        test = f"{c.test_mean:.1f}" + (f" ± {c.test_std:.1f}" if c.seeds > 1 else "")
        dev = "" if pd.isna(c.dev_mean) else f"{c.dev_mean:.1f}"
        lines.append(f"| {c.experiment} | {c.task} | {c.model} | {c.init} | {c.token_map} | {c.fraction} | "
                     f"{c.metric} | {test} | {dev} | {c.seeds} |")
    return "\n".join(lines) + "\n"


def aggregate(metrics_paths, outputs, settings=None, published=None, token_files=()):
    """Write every output of the aggregation from the runs whose metrics.json are given.

    `outputs` maps each kind of output to its paths (any kind may be absent): `tables` (the
    results table, .md/.csv/.html), `paper_tables` (.md/.csv/.tex), `comparisons` (the paired
    comparisons, .md/.csv/.tex), `search_tables` and `search_figures` (search_<experiment>.*),
    `headline_figure`, `loss_figure` and `steps_figure` (one figure of each kind over every run),
    `paper_figures` (<name>.png/.svg of each paper_figures entry), `data_tables` (examples per split
    and label of each token file), `runtime_tables` (training time per experiment and model) and
    `overview` (the report's landing page, reStructuredText).

    `settings` holds the config's `paper_rows`, `paper_figures`, `comparisons`, `searches`
    (Grid.searches), `headline` ({task: its headline metric}; default the metric each run
    recorded) and `missing` (each planned run without metrics and why, for the paper tables'
    notes). `published` is the paper's numbers (default: read published.csv); `token_files` the
    runs' token files, whose metadata holds their split and label counts."""
    settings = settings or {}
    paths = lambda kind: list(outputs.get(kind, ()))  # noqa: E731
    runs = collect(metrics_paths, settings.get("headline"))
    cells = summarise(runs)
    writers = {".csv": lambda c: c.to_csv(index=False), ".md": to_markdown, ".html": results_html}
    for path in paths("tables"):
        write_text(path, writers[Path(path).suffix](cells))
    if paths("paper_tables"):
        tables = paper_tables(runs, settings.get("paper_rows", ()), published, settings.get("missing", ()))
        writers = {".csv": lambda t: paper_tables_long(t).to_csv(index=False), ".md": paper_tables_markdown,
                   ".tex": paper_tables_latex}
        for path in paths("paper_tables"):
            write_text(path, writers[Path(path).suffix](tables))
    paired = compare(runs, settings.get("comparisons", ())) if paths("comparisons") or paths("overview") else None
    writers = {".csv": lambda t: t.to_csv(index=False), ".md": comparisons_markdown, ".tex": comparisons_latex}
    for path in paths("comparisons"):
        write_text(path, writers[Path(path).suffix](paired))
    data, times = data_summary(token_files), runtime_summary(runs)
    for kind, table in (("data_tables", data), ("runtime_tables", times)):
        for path in paths(kind):
            write_text(path, table.to_csv(index=False) if str(path).endswith(".csv") else plain_markdown(table))
    for path in paths("overview"):
        write_text(path, overview_rst(paired, runs))
    if searches := settings.get("searches"):
        ranking = search_ranking(runs, searches)
        for path in paths("search_tables"):
            write_text(path, ranking.to_csv(index=False) if str(path).endswith(".csv") else search_markdown(ranking))
        for experiment in searches:
            draw_search(ranking[ranking["experiment"] == experiment],
                        [p for p in paths("search_figures") if Path(p).stem == f"search_{experiment}"])
    if paths("headline_figure"):
        draw_headline(runs, paths("headline_figure"))
    overview = overview_figures(runs)
    for kind in ("loss", "steps"):
        if paths(f"{kind}_figure"):
            draw_figure(overview[kind], runs, paths(f"{kind}_figure"))
    for spec in settings.get("paper_figures", ()):
        draw_figure(paper_figure(spec), runs, [p for p in paths("paper_figures") if Path(p).stem == spec["name"]])


# ---- what was trained on, and for how long ---------------------------------------------------


def data_summary(token_files):
    """Examples per split and label of each token file (a row per task, vocabulary and label; a
    vote task counts its pieces, a regression task its values under 'all'), from the counts
    preprocessing recorded in the file's metadata."""
    rows = []
    for path in token_files:
        meta = read_token_meta(path)
        # a token file written before the per-label counts has its split sizes only
        counts = meta.get("split_counts") or {split: {"all": size} for split, size in meta["split_sizes"].items()}
        labels = list(dict.fromkeys(label for per_label in counts.values() for label in per_label))
        for label in labels:
            rows.append({"task": meta["task"], "vocabulary": Path(path).stem, "label": label,
                         **{split: counts.get(split, {}).get(label, 0) for split in SPLITS}})
    return pd.DataFrame(rows, columns=["task", "vocabulary", "label", *SPLITS])


def runtime_summary(runs):
    """Fine-tuning time per experiment and model: runs, mean optimiser steps and seconds per run,
    and the total in minutes (with the number of runs, what a larger grid of the same runs costs)."""
    grouped = runs.groupby(["experiment", "model"], sort=False)
    table = grouped.agg(runs=("task", "size"), steps=("steps", "mean"), seconds_per_run=("train_seconds", "mean"),
                        total_minutes=("train_seconds", lambda s: s.sum() / 60)).reset_index()
    return table.round({"steps": 0, "seconds_per_run": 2, "total_minutes": 1})


def plain_markdown(frame):
    """A DataFrame as a Markdown table, numbers as they are."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines) + "\n"


# ---- the paper's tables -----------------------------------------------------------------------


def paper_tables(runs, paper_rows, published=None, missing=()):
    """The paper's tables laid out as printed, our numbers beside the published ones.

    `runs` is the runs table of `collect` (one row per run, metrics as fractions); `paper_rows` the
    config's `paper_rows` (which grid cell each printed row is); `published` the rows of
    published.csv (default: read it); `missing` as for `aggregate`. Returns {table name: DataFrame}
    in the order of published.csv: rows (section, row label) and columns (task, field) in the
    paper's order, fields as PAPER_FIELDS, in percent to one decimal: `ours` the mean over seeds of
    the cell's `test` (published split test) or `dev` (published split validation), `std` their
    standard deviation (NaN for one seed), `n` the seeds, `paper` the published number (NaN where
    the paper prints '-'), `diff` ours minus paper, `note` why `ours` is missing (not run here, not
    in the grid, failed, not run) or seeds of it are."""
    published = read_published() if published is None else published
    targets = {(r["section"], r["row"]): r for r in paper_rows}
    stats = runs.groupby(CELL_KEYS)[["test", "dev"]].agg(["mean", "std", "count"])
    lost = {}
    for run in missing:
        lost.setdefault(tuple(run[k] for k in CELL_KEYS), []).append((run["seed"], run["reason"]))
    tables = {}
    for table, cells in published.groupby("table", sort=False):
        rows = list(dict.fromkeys(zip(cells["section"], cells["row"])))
        tasks = list(dict.fromkeys(cells["task"]))
        values = {(c.section, c.row, c.task): _paper_cell(c, targets.get((c.section, c.row)), stats, lost)
                  for c in cells.itertuples(index=False)}
        tables[table] = pd.DataFrame(
            [[values[(section, row, task)][field] for task in tasks for field in PAPER_FIELDS] for section, row in rows],
            index=pd.MultiIndex.from_tuples(rows, names=["section", "row"]),
            columns=pd.MultiIndex.from_product([tasks, PAPER_FIELDS], names=["task", ""]))
    return tables


def _paper_cell(cell, target, stats, lost):
    """The fields of one printed cell (a row of published.csv) with its paper_rows entry `target`."""
    paper = float(cell.value) if cell.value != "" else math.nan
    values = {"ours": math.nan, "std": math.nan, "n": 0, "paper": paper, "diff": math.nan, "note": "",
              "metric": cell.metric}
    if target is None or cell.task not in target.get("tasks", [cell.task]):
        return {**values, "note": NOT_RUN_HERE}
    key = (target["experiment"], cell.task, target["model"], target["init"], target["token_map"],
           _fraction(target.get("fraction", 1.0)))
    note = _lost_note(lost.get(key, []))
    if key not in stats.index:
        return {**values, "note": note or NOT_IN_GRID}
    mean, std, n = stats.loc[key, PUBLISHED_SPLITS[cell.split]]
    if not n:
        return {**values, "note": note or f"no {PUBLISHED_SPLITS[cell.split]} metric"}
    ours = round(100 * mean, 1)
    return {**values, "ours": ours, "std": round(100 * std, 1), "n": int(n), "diff": round(ours - paper, 1),
            "note": note}


def _lost_note(lost):
    """[(seed, reason)] as 'failed: seed 100; not run: seeds 101, 102'."""
    seeds = {}
    for seed, reason in sorted(lost):
        seeds.setdefault(reason, []).append(str(seed))
    return "; ".join(f"{reason}: seed{'s' if len(s) > 1 else ''} {', '.join(s)}" for reason, s in seeds.items())


def _cell_text(values, plus_minus="±"):
    """`ours / paper (diff)` of one cell's fields; `ours` carries ± std and n over several seeds, and
    a missing `ours` is replaced by why."""
    paper = "-" if pd.isna(values["paper"]) else f"{values['paper']:.1f}"
    if pd.isna(values["ours"]):
        return f"{values['note']} / {paper}"
    ours = f"{values['ours']:.1f}"
    remarks = [values["note"]] if values["note"] else []
    if values["n"] > 1:
        ours += f" {plus_minus} {values['std']:.1f}"
        remarks.insert(0, f"n={values['n']}")
    if remarks:
        ours += f" ({'; '.join(remarks)})"
    diff = "" if pd.isna(values["diff"]) else f" ({values['diff']:+.1f})"
    return f"{ours} / {paper}{diff}"


def _table_rows(frame):
    """(task headers `task (metric)`, rows of (section, row, [cell texts])) of a paper table."""
    tasks = list(dict.fromkeys(frame.columns.get_level_values("task")))
    headers = [f"{task} ({frame[(task, 'metric')].iloc[0]})" for task in tasks]
    return headers, [(section, row, [values[task] for task in tasks]) for (section, row), values in frame.iterrows()]


def paper_tables_long(tables):
    """`paper_tables` as one long CSV-ready frame, one row per printed cell."""
    frames = []
    for name, frame in tables.items():
        long = frame.stack("task", future_stack=True).reset_index()
        frames.append(long.assign(table=name)[["table", "section", "row", "task", "metric", "ours", "std", "n",
                                                "paper", "diff", "note"]])
    return pd.concat(frames, ignore_index=True)


def paper_tables_markdown(tables):
    """Markdown of `paper_tables`: one table each, a cell `ours / paper (diff)`."""
    parts = [CELL_FORMAT + "\n"]
    for name, frame in tables.items():
        headers, rows = _table_rows(frame)
        lines = [f"### {name}", "", "| section | row | " + " | ".join(headers) + " |", "|" + "---|" * (len(headers) + 2)]
        for section, row, cells in rows:
            lines.append(f"| {section} | {row} | " + " | ".join(_cell_text(c) for c in cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def paper_tables_latex(tables):
    """LaTeX of `paper_tables`: one tabular each, a cell `ours / paper (diff)`."""
    def escape(text):
        return str(text).replace("%", r"\%").replace("_", r"\_").replace("&", r"\&")

    parts = [f"% {CELL_FORMAT.replace('±', '+/-')}\n"]
    for name, frame in tables.items():
        headers, rows = _table_rows(frame)
        lines = [f"% {name}", r"\begin{tabular}{ll" + "c" * len(headers) + "}", r"\hline",
                 " & ".join(["section", "row"] + [escape(h) for h in headers]) + r" \\", r"\hline"]
        for section, row, cells in rows:
            texts = [escape(_cell_text(c, plus_minus=r"$\pm$")) for c in cells]
            lines.append(" & ".join([escape(section), escape(row)] + texts) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


# ---- figures ----------------------------------------------------------------------------------
# A figure is rows of panels (the paper's sub-figures (a), (b), ...), a panel one task, and a curve
# a selection of runs like a paper_rows entry: each field it names must match.


def paper_figure(spec):
    """A `paper_figures` entry as drawn: each row's tasks are its panels, each with the row's curves."""
    rows = [{"title": row.get("title"), "panels": [{"title": task, "task": task, "curves": row["curves"]}
                                                   for task in row["tasks"]]} for row in spec["rows"]]
    return {**spec, "rows": rows}


def overview_figures(runs):
    """The figures without `paper_figures`, one of each kind over every run. `loss`: a panel per
    experiment and task, a curve per model, init (and token map and data fraction where they vary).
    `steps`: a panel per task and token map, a curve per pre-training series and init with two or
    more checkpoints (single ones are in the table), and the off-the-shelf pre-trained models on the
    same task and token map as reference lines."""
    loss = []
    for (experiment, task), cell in runs.groupby(["experiment", "task"], sort=False):
        variants = cell[["model", "init", "token_map", "fraction"]].drop_duplicates()
        varying = [k for k in ("token_map", "fraction") if variants[k].nunique() > 1]
        curves = [{"label": f"{v['model']} ({', '.join([v['init']] + [v[k] for k in varying])})",
                   "experiment": experiment, **v} for v in variants.to_dict("records")]
        loss.append({"title": f"{task}\n[{experiment}]", "task": task, "curves": curves})

    checkpoints = runs[runs["model"].str.contains("@")]
    checkpoints = checkpoints.assign(series=checkpoints["model"].str.split("@").str[0])
    several = checkpoints.groupby(["task", "token_map", "series", "init"])["model"].transform("nunique") > 1
    steps = []
    for (task, token_map), cell in checkpoints[several].groupby(["task", "token_map"], sort=False):
        curves = [{"label": f"{series} ({init})", "pretrain": series, "init": init, "token_map": token_map}
                  for series, init in cell[["series", "init"]].drop_duplicates().itertuples(index=False)]
        shelf = runs[(runs["task"] == task) & (runs["token_map"] == token_map) & (runs["init"] == "pretrained")
                     & ~runs["model"].str.contains("@")]
        curves += [{"label": f"{model} (off the shelf)", "model": model, "init": "pretrained", "token_map": token_map}
                   for model in shelf["model"].unique()]
        steps.append({"title": f"{task} [{token_map}]", "task": task, "curves": curves})
    return {"loss": {"kind": "loss", "title": "Training loss: pre-trained vs other initialisations",
                     "rows": [{"panels": loss}]},
            "steps": {"kind": "steps", "split": "test", "title": "Effect of pre-training steps",
                      "rows": [{"panels": steps}]}}


def select(runs, curve, task):
    """The runs one curve draws on one task; `pretrain` matches every checkpoint `<name>@<step>`."""
    chosen = runs[runs["task"] == task]
    for key in ("experiment", "model", "init", "token_map"):
        if key in curve:
            chosen = chosen[chosen[key] == curve[key]]
    if "fraction" in curve:
        chosen = chosen[chosen["fraction"] == _fraction(curve["fraction"])]
    if "pretrain" in curve:
        chosen = chosen[chosen["model"].str.startswith(f"{curve['pretrain']}@")]
    return chosen


def save_figure(fig, paths):
    """Write a figure to each of `paths` (its format from the suffix), atomically, and close it."""
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], dpi=120)
    plt.close(fig)


def draw_figure(figure, runs, paths):
    """Draw a figure (a `paper_figure` or an `overview_figures` one) to each of `paths`: a
    sub-figure per row, titled as the row, its panels side by side."""
    rows = figure["rows"]
    columns = max(1, min(MAX_COLUMNS, max(len(row["panels"]) for row in rows)))
    heights = [max(1, -(-len(row["panels"]) // columns)) for row in rows]
    fig = plt.figure(figsize=(4.3 * columns, 3.3 * sum(heights) + 0.5 * len(rows)), layout="constrained")
    draw_panel = {"loss": _loss_panel, "steps": _steps_panel}[figure["kind"]]
    for sub, row, height in zip(fig.subfigures(len(rows), 1, height_ratios=heights, squeeze=False)[:, 0], rows, heights):
        if row.get("title"):
            sub.suptitle(row["title"])
        axes = list(sub.subplots(height, columns, squeeze=False).flat)
        for ax, panel in zip(axes, row["panels"]):
            draw_panel(ax, panel, runs, figure.get("split", "test"))
        for ax in axes[len(row["panels"]):]:
            ax.set_visible(False)
        if not row["panels"]:
            sub.text(0.5, 0.5, "no runs to draw", ha="center", va="center", color="0.4")
    fig.suptitle(figure["title"], fontweight="bold")
    save_figure(fig, paths)


def _label(curve, chosen):
    seeds = chosen["seed"].nunique()
    return curve["label"] + (f" (n={seeds} seeds)" if seeds > 1 else "")


def _finish(ax, absent):
    """Legend, and the curves of the panel that have no runs, named."""
    if ax.has_data():
        ax.legend(fontsize=7)
    if absent:
        ax.text(0.5, 0.02 if ax.has_data() else 0.5, "no runs: " + ", ".join(absent), transform=ax.transAxes,
                ha="center", va="bottom", fontsize=7, color="0.4")


def _loss_panel(ax, panel, runs, split):
    """Training loss per optimiser step, mean over seeds, smoothed (one step's loss is noisy)."""
    absent = []
    for color, curve in enumerate(panel["curves"]):
        chosen = select(runs, curve, panel["task"])
        if chosen.empty:
            absent.append(curve["label"])
            continue
        loss = pd.concat(pd.read_parquet(Path(d) / "curve.parquet") for d in chosen["run_dir"]).groupby("step")["loss"].mean()
        smooth = loss.rolling(max(1, len(loss) // 20), min_periods=1).mean()
        ax.plot(smooth.index, smooth.values, color=f"C{color}", label=_label(curve, chosen))
    ax.set(title=panel["title"], xlabel="optimiser step", ylabel="training loss")
    _finish(ax, absent)


def _steps_panel(ax, panel, runs, split):
    """The metric of `split` against pre-training steps: a point per checkpoint of each `pretrain`
    curve (mean, and standard deviation over seeds as a bar), evenly spaced as 0, 20K, 200K, ...;
    a `model` curve is a dashed reference line at its mean."""
    absent, drawn = [], []
    for color, curve in enumerate(panel["curves"]):
        chosen = select(runs, curve, panel["task"])
        if chosen.empty:
            absent.append(curve["label"])
        else:
            drawn.append((f"C{color}", curve, chosen))
    steps = sorted({_pretrain_step(m) for _, curve, chosen in drawn if "pretrain" in curve for m in chosen["model"]})
    for color, curve, chosen in drawn:
        if "pretrain" in curve:
            by_step = chosen.groupby(chosen["model"].map(_pretrain_step))[split]
            mean, std = 100 * by_step.mean(), 100 * by_step.std()
            ax.errorbar([steps.index(s) for s in mean.index], mean.values, yerr=std.values, marker="o", capsize=3,
                        color=color, label=_label(curve, chosen))
        else:
            ax.axhline(100 * chosen[split].mean(), linestyle="--", color=color, label=_label(curve, chosen))
    ax.set_xticks(range(len(steps)), [_step_label(s) for s in steps])
    metric = next((chosen["metric"].iloc[0] for _, _, chosen in drawn), "metric")
    ax.set(title=panel["title"], xlabel="pre-training steps", ylabel=f"{SPLIT_NAMES[split]} {metric} (%)")
    _finish(ax, absent)


def _pretrain_step(model):
    """`<pretrain name>@<step>` -> step."""
    return int(model.rsplit("@", 1)[1])


def _step_label(step):
    """20000 -> '20K', 1000000 -> '1M', as the paper labels its checkpoints."""
    for size, unit in ((1_000_000, "M"), (1000, "K")):
        if step >= size and step % size == 0:
            return f"{step // size}{unit}"
    return str(step)


# ---- the report's landing page ----------------------------------------------------------------


def _list_table(title, header, rows):
    """A reStructuredText list-table; cells are escaped, so that a name like small-bert@600 stays
    text (not an e-mail address) and _ * ` | are not markup."""
    def cell(value):
        return re.sub(r"([\\*`_|@])", r"\\\1", str(value))

    lines = [f".. list-table:: {title}", "   :header-rows: 1", ""]
    for row in [header] + rows:
        lines.append(f"   * - {cell(row[0])}")
        lines += [f"     - {cell(value)}" for value in row[1:]]
    return "\n".join(lines) + "\n"


def overview_rst(paired, runs=None):
    """The report's landing page, short (the report centres it beside the rule graph): what was run,
    the first paired comparisons, links to the full tables and the headline figure, and how long
    fine-tuning took."""
    parts = ["crossdisc: results", "==================", "",
             "Text-pre-trained transformers fine-tuned on data whose tokens no longer mean what they meant in "
             "pre-training, against the same models trained from scratch (Kao & Lee, 2021). Every run's test "
             "metric: `results.html`_ (and the headline figure, `headline.png`_); every paired comparison: "
             "`comparisons.md`_; examples per split and label: `data.md`_; figures and tables as files under "
             "Results and Figures.", ""]
    if runs is not None and len(runs):
        parts += [f"Fine-tuning: {len(runs)} runs, {runs['train_seconds'].sum() / 60:.1f} minutes of training "
                  "in all (per experiment and model: `runtimes.md`_).", ""]
    if paired is not None and len(paired):
        rows = [[r.comparison, r.task, r.model, r.seeds, f"{r.diff:+.1f}", interval(r.seed_low, r.seed_high),
                 interval(r.test_low, r.test_high)] for r in paired.head(LANDING_COMPARISONS).itertuples(index=False)]
        title = "Paired comparisons: a − b in points, 95% intervals over seeds and over test examples" + (
            f" (the first {LANDING_COMPARISONS} of {len(paired)})" if len(paired) > LANDING_COMPARISONS else "")
        parts.append(_list_table(title, ["comparison", "task", "model", "seeds", "a − b", "seeds 95%", "test 95%"],
                                 rows))
    return "\n".join(parts)


def results_html(cells):
    """The results table as an HTML page (the report shows it as it is)."""
    table = cells.assign(test=[f"{m:.1f}" + (f" ± {s:.1f}" if n > 1 else "")
                               for m, s, n in zip(cells["test_mean"], cells["test_std"], cells["seeds"])])
    table = table[["experiment", "task", "model", "init", "token_map", "fraction", "metric", "test", "dev_mean", "seeds"]]
    body = table.rename(columns={"token_map": "token map", "fraction": "data", "dev_mean": "dev"}).to_html(
        index=False, na_rep="", float_format="{:.1f}".format, border=0)
    return ("<!doctype html><html><head><meta charset='utf-8'><title>crossdisc results</title><style>"
            "body{font-family:sans-serif} table{border-collapse:collapse} td,th{padding:2px 8px;"
            "border-bottom:1px solid #ddd;text-align:left}</style></head><body>"
            "<h3>Test metric per grid cell (percent; mean ± sd over seeds)</h3>" + body + "</body></html>\n")


# ---- the headline figure ----------------------------------------------------------------------


def draw_headline(runs, paths):
    """The test metric of every run: a panel per experiment, a group of bars per task, a bar per
    variant (model, init, token map, fraction, where they vary) at the mean over seeds with the
    standard deviation, and every seed as a point."""
    experiments = list(dict.fromkeys(runs["experiment"]))
    fig, axes = plt.subplots(len(experiments), 1, figsize=(10, 3.2 * len(experiments)), squeeze=False,
                             layout="constrained")
    for ax, experiment in zip(axes[:, 0], experiments):
        chosen = runs[runs["experiment"] == experiment]
        keys = [k for k in ("model", "init", "token_map", "fraction") if chosen[k].nunique() > 1] or ["init"]
        variants = list(dict.fromkeys(map(tuple, chosen[keys].itertuples(index=False))))
        tasks = list(dict.fromkeys(chosen["task"]))
        width = 0.8 / len(variants)
        labelled = set()
        for v, variant in enumerate(variants):
            mask = (chosen[keys].apply(tuple, axis=1) == variant)
            for t, task in enumerate(tasks):
                scores = 100 * chosen[mask & (chosen["task"] == task)]["test"].dropna()
                if scores.empty:
                    continue
                x = t - 0.4 + width * (v + 0.5)
                ax.bar(x, scores.mean(), width, yerr=scores.std() if len(scores) > 1 else None, capsize=2,
                       color=f"C{v}", alpha=0.7, label=None if v in labelled else ", ".join(map(str, variant)))
                labelled.add(v)
                ax.plot([x] * len(scores), scores, "k.", markersize=4)
        metrics = chosen.groupby("task", sort=False)["metric"].first()
        ax.set_xticks(range(len(tasks)), [f"{t}\n({metrics[t]})" for t in tasks])
        ax.set(title=experiment, ylabel="test metric (%)")
        ax.legend(fontsize=7, title=", ".join(keys), title_fontsize=7)
    fig.suptitle("Test metric per task: mean ± sd over seeds, each seed a point", fontweight="bold")
    save_figure(fig, paths)


# ---- grid searches ----------------------------------------------------------------------------


def search_ranking(runs, searches):
    """One row per search point, best first within each experiment: its settings, the mean and
    standard deviation (percent) of the selection metric over its runs (seeds and cells), how many,
    and whether it is the one selected (the highest mean)."""
    frames = []
    for experiment, search in searches.items():
        split, metric = search["select_on"]["split"], search["select_on"].get("metric")
        rows = []
        for point, setting in search["points"].items():
            chosen = runs[runs["experiment"] == point]
            values = [scores[split][metric or headline] for scores, headline in zip(chosen["scores"], chosen["metric"])
                      if (metric or headline) in scores.get(split, {})]
            name = metric or (chosen["metric"].iloc[0] if len(chosen) else "metric")
            rows.append({"experiment": experiment, "point": point, **setting, "select_on": f"{split} {name}",
                         "mean": 100 * pd.Series(values, dtype=float).mean(),
                         "std": 100 * pd.Series(values, dtype=float).std(), "n": len(values)})
        ranked = pd.DataFrame(rows).sort_values("mean", ascending=False, na_position="last", kind="stable")
        ranked["selected"] = [i == 0 and n > 0 for i, n in enumerate(ranked["n"])]
        frames.append(ranked)
    ranking = pd.concat(frames, ignore_index=True)
    ranking[["mean", "std"]] = ranking[["mean", "std"]].round(1)
    return ranking


SEARCH_FIELDS = ["experiment", "point", "select_on", "mean", "std", "n", "selected"]


def _setting_keys(ranked):
    """The training settings a search varies (its ranking's other columns)."""
    return [k for k in ranked.columns if k not in SEARCH_FIELDS and ranked[k].notna().any()]


def search_markdown(ranking):
    parts = []
    for experiment, ranked in ranking.groupby("experiment", sort=False):
        keys = _setting_keys(ranked)
        lines = [f"### {experiment}: ranked by {ranked['select_on'].iloc[0]} (mean ± sd over runs, percent)", "",
                 "| rank | " + " | ".join(keys) + " | mean | sd | runs | |", "|" + "---|" * (len(keys) + 5)]
        for rank, row in enumerate(ranked.itertuples(index=False), 1):
            values = [str(getattr(row, k)) for k in keys]
            lines.append(f"| {rank} | " + " | ".join(values) + f" | {row.mean:.1f} | {row.std:.1f} | {row.n} | "
                         + ("selected |" if row.selected else " |"))
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def draw_search(ranked, paths):
    """A search's grid: with two settings a heat map of the selection metric (rows the first
    setting, columns the second, the selected point outlined); otherwise its points as bars."""
    keys = _setting_keys(ranked)
    title = f"Grid search {ranked['experiment'].iloc[0]}: {ranked['select_on'].iloc[0]} (%)"
    if len(keys) == 2:
        grid = ranked.pivot_table(index=keys[0], columns=keys[1], values="mean", sort=False)
        fig, ax = plt.subplots(figsize=(1.0 * len(grid.columns) + 3, 0.6 * len(grid.index) + 2), layout="constrained")
        image = ax.imshow(grid.to_numpy(float), cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(grid.columns)), [str(c) for c in grid.columns], rotation=45, ha="right")
        ax.set_yticks(range(len(grid.index)), [str(i) for i in grid.index])
        ax.set(xlabel=keys[1], ylabel=keys[0])
        for (i, j), value in np.ndenumerate(grid.to_numpy(float)):
            if not np.isnan(value):
                ax.text(j, i, f"{value:.1f}", ha="center", va="center", fontsize=7, color="w")
        best = ranked[ranked["selected"]]
        if len(best):
            i, j = list(grid.index).index(best[keys[0]].iloc[0]), list(grid.columns).index(best[keys[1]].iloc[0])
            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        fig.colorbar(image, ax=ax)
    else:
        labels = [", ".join(f"{k}={row[k]}" for k in keys) for _, row in ranked.iterrows()]
        fig, ax = plt.subplots(figsize=(6, 0.3 * len(labels) + 1.5), layout="constrained")
        ax.barh(range(len(labels)), ranked["mean"], xerr=ranked["std"].fillna(0),
                color=["C3" if s else "C0" for s in ranked["selected"]])
        ax.set_yticks(range(len(labels)), labels)
        ax.invert_yaxis()
    ax.set_title(title)
    save_figure(fig, paths)
