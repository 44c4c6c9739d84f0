"""Planning at scale: how long Snakemake takes to plan a 10,000-run fine-tuning sweep of this
workflow, against the same number of jobs of two bare Snakefiles.

  ours: the real Snakefile with the embedded default's sources, models and tasks (nothing to
        download) and a sweep of --runs fine-tuning runs: per seed, the text task with 4 models
        (MiniLM and 3 checkpoints of the small BERT) x 2 inits x 5 token maps, and each of the 3
        non-text tasks with 4 models x 5 token maps; 100 runs per seed, --runs / 100 seeds.
  bare, same job shape: the same runs as jobs declaring what ours declare (the fine-tuning rule's
        7 wildcards, 3 inputs made by 3 upstream rules, 3 outputs, a log and a benchmark file; one
        aggregation over every run's metrics.json) as literal patterns: no config, schema, input or
        params functions. The difference to ours is what the workflow adds to Snakemake's own work.
  bare, minimal: one rule with one wildcard and no input, `rule all` asking for --runs outputs.

Each is `snakemake --dry-run --quiet` in a fresh temporary working directory (nothing is built),
best of --rounds. --profile also runs ours under cProfile and prints which of the workflow's own
functions (workflow/, the Snakefile) take time, and their share of planning; the rest is
Snakemake's. The last two lines are the ratios ours / bare, minimal and ours / bare, same job shape.
The table is also written, with the command, hardware and versions, to
benchmarks/results/planning_scale-cpu.{md,json} (benchmarks/record.py).

    python benchmarks/planning_scale.py [--runs 10000] [--rounds 1] [--profile]
"""

import argparse
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

import record

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = shutil.which("snakemake", path=str(Path(sys.executable).parent)) or "snakemake"
TEXT_MAPS = ["shift-1000", "shift-500", "shift-2000", "identity", "random-shift"]
NON_TEXT_MAPS = ["most-frequent", "random-real", "unused", "most-frequent+model-specials",
                 "random-real+model-specials"]
RUNS_PER_SEED = 4 * 2 * 5 + 3 * 4 * 5


def sweep_config(runs, results):
    """The embedded default with its experiments replaced by a sweep of `runs` fine-tuning runs."""
    if runs % RUNS_PER_SEED:
        raise SystemExit(f"--runs must be a multiple of {RUNS_PER_SEED}")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    seeds = list(range(100, 100 + runs // RUNS_PER_SEED))
    config["results"] = str(results)
    models = ["minilm", *(f"small-bert@{step}" for step in config["pretrain"]["small-bert"]["steps"])]
    config["experiments"] = {
        "sweep-text": {"tasks": ["word-order"], "models": models, "inits": ["pretrained", "scratch"],
                       "token_maps": TEXT_MAPS, "seeds": seeds},
        "sweep-non-text": {"tasks": ["composer-music21", "synthetic-dna-tata", "synthetic-protein-hydropathy"],
                           "models": models, "token_maps": NON_TEXT_MAPS, "seeds": seeds},
    }
    return config


def bare_snakefile(runs):
    return (f"rule all:\n    input: expand('out/{{i}}.txt', i=range({runs}))\n\n\n"
            "rule make:\n    output: 'out/{i}.txt'\n    shell: 'touch {output}'\n")


def same_shape_snakefile(config):
    """A Snakefile planning the runs of `config` with jobs declaring the files of this workflow's
    (workflow/rules/finetune.smk and its upstream rules), as literal patterns."""
    run_id = "{experiment}/{task}/{model}/{init}/{token_map}/{fraction}/seed-{seed}"
    targets = " + ".join(
        f"expand('runs/{run_id}/metrics.json', experiment={name!r}, task={spec['tasks']!r}, "
        f"model={spec['models']!r}, init={spec.get('inits', ['pretrained'])!r}, "
        f"token_map={spec['token_maps']!r}, fraction='1.0', seed={spec['seeds']!r})"
        for name, spec in config["experiments"].items())
    made = {"model": "models/{model}/config.json", "tokens": "tokens/{task}/{model}.parquet",
            "token_map": "token_maps/{task}/{model}/{token_map}.tsv"}
    upstream = "".join(f"rule {rule}:\n    output: {path!r}\n    log: 'logs/{rule}/' + {path!r}\n"
                       "    shell: 'touch {output}'\n\n\n" for rule, path in made.items())
    return (f"rule all:\n    input: 'tables/results.md'\n\n\n"
            f"rule aggregate:\n    input: {targets}\n    output: 'tables/results.md'\n"
            "    log: 'logs/aggregate.log'\n    shell: 'touch {output}'\n\n\n"
            f"{upstream}"
            "rule finetune:\n    input:\n"
            + "".join(f"        {name}={path!r},\n" for name, path in made.items())
            + "    output:\n"
            + "".join(f"        {name}='runs/{run_id}/{name}.{ext}',\n"
                      for name, ext in (("metrics", "json"), ("curve", "parquet"), ("predictions", "parquet")))
            + f"    log: 'logs/finetune/{run_id}.log'\n    benchmark: 'benchmarks/finetune/{run_id}.tsv'\n"
            "    shell: 'touch {output}'\n")


def plan_command(snakefile, workdir, configfile=None):
    command = [SNAKEMAKE, "-s", str(snakefile), "--directory", str(workdir), "--dry-run", "--quiet", "--cores", "1"]
    return command + (["--configfile", str(configfile)] if configfile else [])


def best_time(command, rounds):
    """Best wall time of `command` in seconds, each round in a fresh working directory (its `-d`)."""
    workdir = Path(command[command.index("--directory") + 1])
    times = []
    for _ in range(rounds):
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir()
        start = time.perf_counter()
        result = subprocess.run(command, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if result.returncode:
            raise SystemExit(f"planning failed: {' '.join(command)}\n{result.stderr[-3000:]}")
    return min(times)


def workflow_functions(command, profile_path):
    """[(seconds, function)] of the workflow's own functions under cProfile, entered from Snakemake
    (their callees included; module-level code of the workflow's files counts as Snakemake's), and
    the profiled total."""
    subprocess.run([sys.executable, "-m", "cProfile", "-o", str(profile_path), *command], check=True,
                   capture_output=True)
    stats = pstats.Stats(str(profile_path)).stats

    def ours(func):
        filename, _, name = func
        return name != "<module>" and (filename.startswith(str(REPO / "workflow")) or filename == str(REPO / "Snakefile"))

    entered = {}
    for func, (_, _, _, _, callers) in stats.items():
        if ours(func):
            outside = sum(cumulative for caller, (_, _, _, cumulative) in callers.items() if not ours(caller))
            if outside:
                entered[f"{Path(func[0]).name}:{func[2]}"] = outside
    total = max(cumulative for _, _, _, cumulative, _ in stats.values())
    return sorted(((seconds, name) for name, seconds in entered.items()), reverse=True), total


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="profile ours: the workflow's own functions")
    parser.add_argument("--results-dir", default=record.RESULTS, help="where the results file is written")
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    notes = []
    with tempfile.TemporaryDirectory(prefix="planning-scale-") as tmp:
        tmp = Path(tmp)
        configfile = tmp / "sweep.yaml"
        config = sweep_config(args.runs, tmp / "results")
        configfile.write_text(yaml.safe_dump(config))
        for name, text in (("bare", bare_snakefile(args.runs)), ("same-shape", same_shape_snakefile(config))):
            (tmp / name).mkdir()
            (tmp / name / "Snakefile").write_text(text)
        ours_command = plan_command(REPO / "Snakefile", tmp / "ours", configfile)
        ours = best_time(ours_command, args.rounds)
        same_shape = best_time(plan_command(tmp / "same-shape" / "Snakefile", tmp / "same-shape-work"), args.rounds)
        bare = best_time(plan_command(tmp / "bare" / "Snakefile", tmp / "bare-work"), args.rounds)
        print(f"ours: {ours:.1f} s to plan {args.runs} fine-tuning runs (the real Snakefile, dry run)")
        print(f"bare, same job shape: {same_shape:.1f} s (literal patterns: the same wildcards, inputs, outputs, "
              "log and benchmark per job; no config or functions)")
        print(f"bare, minimal: {bare:.1f} s to plan {args.runs} jobs (one rule, one wildcard, no input)")
        if args.profile:
            functions, total = workflow_functions(ours_command, tmp / "ours.prof")
            share = sum(seconds for seconds, _ in functions)
            notes.append(f"The workflow's own functions under cProfile: {share:.2f} of {total:.1f} s "
                         f"({100 * share / total:.1f}%).")
            print(notes[-1])
            for seconds, name in functions[:8]:
                print(f"  {seconds:6.2f} s  {name}")
    rows = [["ours (the real Snakefile and config)", f"{ours:.1f}", ""],
            ["bare, same job shape", f"{same_shape:.1f}", f"{ours / same_shape:.2f}x"],
            ["bare, minimal", f"{bare:.1f}", f"{ours / bare:.2f}x"]]
    columns = [f"plan of {args.runs} jobs", f"seconds (best of {args.rounds})", "ours / it"]
    print(f"written to {record.save('planning_scale', 'cpu', argv, columns, rows, notes, args.results_dir)}")
    print(f"ratio ours / bare, minimal: {ours / bare:.2f}x")
    print(f"ratio ours / bare, same job shape: {ours / same_shape:.2f}x")
    return ours / same_shape


if __name__ == "__main__":
    main()
