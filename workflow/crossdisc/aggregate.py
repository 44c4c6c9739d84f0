"""The aggregate stage: every run's metrics into one table, training-loss curves and the
pre-training-steps figure."""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from .files import atomic_path, write_text  # noqa: E402

RUN_KEYS = ["experiment", "task", "model", "init", "token_map", "fraction", "seed"]
CELL_KEYS = RUN_KEYS[:-1]

# The paper's published numbers (workflow/data/published.csv) and where config/paper.yaml runs
# each of their rows: (section, row label as printed) -> the grid cell, task aside. Main Table 1
# and appendix Table 1 share their rows, as do Table 2 (test) and appendix Table 2 (validation);
# Table 2's "specific" row (PLUS-TFM, Hilbert-CNN) is not run by the pipeline (None).
PUBLISHED = Path(__file__).resolve().parents[1] / "data" / "published.csv"
PUBLISHED_SPLITS = {"test": "test", "validation": "dev"}


def read_published(path=PUBLISHED):
    """The published numbers, one row per table cell; `value` as printed (text), empty where the
    paper prints '-'."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def run_key(metrics_path):
    """The run's grid coordinates, read back from its directory
    results/runs/<experiment>/<task>/<model>/<init>/<token_map>/<fraction>/seed-<s>/."""
    parts = Path(metrics_path).parent.parts[-len(RUN_KEYS):]
    return dict(zip(RUN_KEYS, parts[:-1] + (int(parts[-1].removeprefix("seed-")),)))


def collect(metrics_paths):
    rows = []
    for path in metrics_paths:
        summary = json.loads(Path(path).read_text())
        rows.append({**run_key(path), "metric": summary["metric"], "test": summary["test"], "dev": summary["dev"],
                     "steps": summary["steps"], "train_seconds": summary["train_seconds"]})
    return pd.DataFrame(rows)


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


def _save(fig, paths):
    for path in paths:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix[1:], dpi=120, bbox_inches="tight")
    plt.close(fig)


def _grid(n):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, axes.flat


def plot_loss_curves(runs, curve_paths, paths):
    """Training loss per step, pre-trained against the other inits, averaged over seeds (the
    paper's Figure 2)."""
    curves = []
    for path in curve_paths:
        frame = pd.read_parquet(path)
        curves.append(frame.assign(**run_key(Path(path).parent / "metrics.json")))
    curves = pd.concat(curves)
    panels = list(curves.groupby(["experiment", "task"], sort=False))
    fig, axes = _grid(len(panels))
    for ax, ((experiment, task), panel) in zip(axes, panels):
        several_maps = panel["token_map"].nunique() > 1
        for (model, init, token_map), line in panel.groupby(["model", "init", "token_map"], sort=False):
            mean = line.groupby("step")["loss"].mean()
            smooth = mean.rolling(max(1, len(mean) // 20), min_periods=1).mean()
            ax.plot(smooth.index, smooth.values, label=f"{model} ({init}{', ' + token_map if several_maps else ''})")
        ax.set(title=f"{task}\n[{experiment}]", xlabel="optimiser step", ylabel="training loss")
        ax.legend(fontsize=7)
    fig.suptitle("Training loss: pre-trained vs other initialisations")
    fig.tight_layout()
    _save(fig, paths)


def plot_pretrain_steps(runs, paths):
    """Test metric against pre-training steps of the pipeline's own checkpoints (`name@step`),
    with the off-the-shelf pre-trained model on the same task and token map as a reference line
    (the paper's Figure 3)."""
    steps = runs[runs["model"].str.contains("@")].copy()
    steps["series"] = steps["model"].str.split("@").str[0]
    steps["pretrain_step"] = steps["model"].str.split("@").str[1].astype(int)
    # a curve needs at least two checkpoints (single-checkpoint ablations are in the table)
    steps = steps[steps.groupby(["task", "token_map", "series", "init"])["pretrain_step"].transform("nunique") > 1]
    panels = list(steps.groupby(["task", "token_map"], sort=False))
    fig, axes = _grid(max(1, len(panels)))
    for ax, ((task, token_map), panel) in zip(axes, panels):
        for (name, init), line in panel.groupby(["series", "init"], sort=False):
            mean = line.groupby("pretrain_step")["test"].mean() * 100
            ax.plot(mean.index, mean.values, marker="o", label=f"{name} ({init})")
        reference = runs[(runs["task"] == task) & (runs["token_map"] == token_map) & (runs["init"] == "pretrained")
                         & ~runs["model"].str.contains("@")]
        for model, ref in reference.groupby("model"):
            ax.axhline(100 * ref["test"].mean(), linestyle="--", color="grey", label=f"{model} (off the shelf)")
        ax.set(title=f"{task} [{token_map}]", xlabel="pre-training steps", ylabel=f"test {panel['metric'].iloc[0]} (%)")
        ax.legend(fontsize=7)
    fig.suptitle("Effect of pre-training steps")
    fig.tight_layout()
    _save(fig, paths)


def paper_tables_long(tables):
    """`paper_tables` as one long CSV-ready frame: table, section, row, task, ours, paper, diff."""
    frames = []
    for name, frame in tables.items():
        long = frame.stack("task", future_stack=True).reset_index()
        frames.append(long.assign(table=name)[["table", "section", "row", "task", "ours", "paper", "diff"]])
    return pd.concat(frames, ignore_index=True)


def aggregate(metrics_paths, table_paths, loss_figure_paths, steps_figure_paths=(), paper_rows=(),
              paper_table_paths=()):
    runs = collect(metrics_paths)
    if paper_table_paths:
        tables = paper_tables(runs, paper_rows)
        writers = {".csv": lambda t: paper_tables_long(t).to_csv(index=False), ".md": paper_tables_markdown,
                   ".tex": paper_tables_latex}
        for path in paper_table_paths:
            write_text(path, writers[Path(path).suffix](tables))
    cells = summarise(runs)
    for path in table_paths:
        text = cells.to_csv(index=False) if str(path).endswith(".csv") else to_markdown(cells)
        write_text(path, text)
    curve_paths = [Path(p).parent / "curve.parquet" for p in metrics_paths]
    plot_loss_curves(runs, curve_paths, loss_figure_paths)
    if steps_figure_paths:
        plot_pretrain_steps(runs, steps_figure_paths)


def paper_tables(runs, paper_rows, published=None):
    """The paper's tables laid out as printed, our numbers beside the published ones.

    `runs` is the runs table of `collect` (one row per run, metrics as fractions); `paper_rows`
    the config's `paper_rows` (which grid cell each printed row is); `published` the rows of
    published.csv (default: read it). Returns {table name: DataFrame} in the order
    of published.csv: rows (section, row label) and columns (task, ours | paper | diff) in the
    paper's order, in percent to one decimal. `ours` is the mean over seeds of the run's `test`
    (published split test) or `dev` (published split validation) of the grid cell its paper row
    names; NaN where the paper row is not run here, a run is missing, or the paper prints '-'."""
    published = read_published() if published is None else published
    targets = {(r["section"], r["row"]): {**{k: r[k] for k in ("experiment", "model", "init", "token_map")},
                                          "fraction": str(float(r.get("fraction", 1.0)))} for r in paper_rows}
    runs = runs.assign(fraction=runs["fraction"].map(lambda f: str(float(f))))
    means = runs.groupby(CELL_KEYS, sort=False)[["test", "dev"]].mean()
    tables = {}
    for table, cells in published.groupby("table", sort=False):
        rows = list(dict.fromkeys(zip(cells["section"], cells["row"])))
        tasks = list(dict.fromkeys(cells["task"]))
        columns = pd.MultiIndex.from_product([tasks, ["ours", "paper", "diff"]], names=["task", ""])
        frame = pd.DataFrame(float("nan"), index=pd.MultiIndex.from_tuples(rows, names=["section", "row"]),
                             columns=columns)
        for cell in cells.itertuples(index=False):
            paper = float(cell.value) if cell.value != "" else float("nan")
            target = targets.get((cell.section, cell.row))
            ours = float("nan")
            if target is not None:
                key = tuple({**target, "task": cell.task}[k] for k in CELL_KEYS)
                if key in means.index:
                    ours = round(100 * means.loc[key, PUBLISHED_SPLITS[cell.split]], 1)
            frame.loc[(cell.section, cell.row), (cell.task, "ours")] = ours
            frame.loc[(cell.section, cell.row), (cell.task, "paper")] = paper
            frame.loc[(cell.section, cell.row), (cell.task, "diff")] = round(ours - paper, 1)
        tables[table] = frame
    return tables


def _cell_texts(frame, tasks):
    """Rows of a paper table as (section, row, [`ours / paper (diff)` per task]), '-' where missing."""
    def number(x, signed=False):
        return "-" if pd.isna(x) else (f"{x:+.1f}" if signed else f"{x:.1f}")

    for (section, row), values in frame.iterrows():
        yield section, row, [f"{number(values[(t, 'ours')])} / {number(values[(t, 'paper')])} "
                             f"({number(values[(t, 'diff')], signed=True)})" for t in tasks]


def paper_tables_markdown(tables):
    """Markdown of `paper_tables`: one table each, a cell `ours / paper (diff)`."""
    parts = []
    for name, frame in tables.items():
        tasks = list(dict.fromkeys(frame.columns.get_level_values("task")))
        lines = [f"### {name}", "", "| section | row | " + " | ".join(tasks) + " |", "|" + "---|" * (len(tasks) + 2)]
        for section, row, cells in _cell_texts(frame, tasks):
            lines.append(f"| {section} | {row} | " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)


def paper_tables_latex(tables):
    """LaTeX of `paper_tables`: one tabular each, a cell `ours / paper (diff)`."""
    def escape(text):
        return str(text).replace("%", r"\%").replace("_", r"\_").replace("&", r"\&")

    parts = []
    for name, frame in tables.items():
        tasks = list(dict.fromkeys(frame.columns.get_level_values("task")))
        lines = [f"% {name}: ours / published (ours minus published), percent",
                 r"\begin{tabular}{ll" + "c" * len(tasks) + "}", r"\hline",
                 " & ".join(["section", "row"] + [escape(t) for t in tasks]) + r" \\", r"\hline"]
        for section, row, cells in _cell_texts(frame, tasks):
            lines.append(" & ".join([escape(section), escape(row)] + cells) + r" \\")
        lines += [r"\hline", r"\end{tabular}"]
        parts.append("\n".join(lines) + "\n")
    return "\n".join(parts)
