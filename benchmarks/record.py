"""Where a benchmark's figures are kept: benchmarks/results/<benchmark>-<device>.{json,md}, so that
every figure the documentation quotes can be traced to a file that says what measured it.

Each file holds one record per command (the benchmark's arguments): rerunning a command replaces
its record, another command (e.g. a larger model) adds one. A record carries the exact command, the
date, the hardware (CPU model, core count, GPU), the versions of Python, torch, transformers and
Snakemake, and the benchmark's table. The JSON file is the data; the Markdown file is rendered
from it, for the documentation to link and quote. Also what the benchmarks share in how they measure:
each contender in a fresh process (in_fresh_process).
"""

import datetime
import json
import multiprocessing
import os
import platform
import re
import shlex
from importlib import metadata
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
PACKAGES = ("torch", "transformers", "snakemake")


def in_fresh_process(target, *args):
    """What target(*args, queue) puts on its queue, run in a new (spawned) process, so that no
    contender inherits another's state (allocator, caches, settings). `target` must be picklable (a
    module-level function or a functools.partial of one)."""
    context = multiprocessing.get_context("spawn")
    queue = context.SimpleQueue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    process.join()
    if process.exitcode != 0:
        raise SystemExit(f"a contender failed (exit code {process.exitcode}): {target} {args}")
    return queue.get()


def cpu_model():
    """The CPU's model name as the kernel reports it (platform.processor() is empty on most Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_label(device):
    """`cpu`, or the GPU's name as a file-name part (`nvidia-h200`): GPUs of other models keep
    files of their own."""
    if device == "cpu":
        return "cpu"
    import torch

    return re.sub(r"[^a-z0-9]+", "-", torch.cuda.get_device_name().lower()).strip("-")


def environment(device):
    """What a figure was measured on and with."""
    versions = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    hardware = {"cpu": cpu_model(), "cpu_count": os.cpu_count(), "usable_cpus": len(os.sched_getaffinity(0))}
    if device != "cpu":
        import torch

        hardware["gpu"] = torch.cuda.get_device_name()
        versions["cuda"] = torch.version.cuda
    return {"hardware": hardware, "versions": versions}


def save(benchmark, device, argv, columns, rows, notes=(), results_dir=RESULTS):
    """Store this run of `benchmark` (its command-line arguments `argv`) as the record of its
    command in <results_dir>/<benchmark>-<device label>.json and rewrite the Markdown beside it.
    `rows` are lists of cells under `columns`; `notes` are lines printed under the table. Returns
    the Markdown file's path."""
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    stem = results_dir / f"{benchmark}-{device_label(device)}"
    json_path, markdown_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    command = shlex.join(["python", f"benchmarks/{benchmark}.py", *argv])
    record = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              **environment(device), "columns": list(columns), "rows": [[str(cell) for cell in row] for row in rows],
              "notes": list(notes)}
    records = json.loads(json_path.read_text()) if json_path.exists() else []
    records = [r for r in records if r["command"] != command] + [record]
    json_path.write_text(json.dumps(records, indent=1) + "\n")
    markdown_path.write_text(to_markdown(benchmark, records))
    return markdown_path


def to_markdown(benchmark, records):
    lines = [f"# {benchmark}", "",
             f"Written by `benchmarks/{benchmark}.py` (the data: the `.json` file beside this one); one section "
             "per command, from its latest run.", ""]
    for record in records:
        hardware, versions = record["hardware"], record["versions"]
        machine = f"{hardware['cpu']}, {hardware['cpu_count']} CPUs ({hardware['usable_cpus']} usable)"
        if "gpu" in hardware:
            machine = f"{hardware['gpu']}; {machine}"
        software = ", ".join(f"{name} {version}" for name, version in versions.items() if version)
        lines += [f"## `{record['command']}`", "", f"{record['date']}; {machine}; {software}.", "",
                  "| " + " | ".join(record["columns"]) + " |", "|" + "---|" * len(record["columns"])]
        lines += ["| " + " | ".join(row) + " |" for row in record["rows"]]
        lines += ["", *record["notes"], ""] if record["notes"] else [""]
    return "\n".join(lines)
