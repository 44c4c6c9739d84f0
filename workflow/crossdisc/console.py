"""What a run ends on, on the console.

A failed run: each step writes its one-line error (file, record, problem) as the last line of its
job log; Snakemake's console only points at that log. The Snakefile's `onerror` hands Snakemake's
own log to `report_at_exit`, which prints each failed step's line once Snakemake has printed
everything else, so that the cause is the console's last word.

A finished run: `summary_lines` says where the tables, figures and report are, the paired
comparisons' first rows, and the warnings preprocessing logged (small or empty splits).
"""

import atexit
import re
import sys
from pathlib import Path

import pandas as pd

from .comparisons import interval

SHOWN_COMPARISONS = 8  # rows of comparisons.csv on the console; the file has them all

FAILED_RULE = re.compile(r"^Error in rule (\S+):$")
JOB_LOG = re.compile(r"^\s+log: (.*?)(?: \(check log file\(s\) for error details\))?$")


def failed_steps(snakemake_log_text):
    """[(rule, [job log paths])] of every job Snakemake's log reports as failed, in its order."""
    steps, rule = [], None
    for line in snakemake_log_text.splitlines():
        if match := FAILED_RULE.match(line):
            rule = match.group(1)
            steps.append((rule, []))
        elif rule and (match := JOB_LOG.match(line)):
            steps[-1][1].extend(match.group(1).split(", "))
            rule = None
    return steps


def error_lines(snakemake_log_text):
    """One line per failed step: the last line of its log, which for a crossdisc step is its own
    one-line error; anything else (a traceback's last line) names the rule and the log."""
    lines = []
    for rule, logs in failed_steps(snakemake_log_text):
        for log in logs:
            path = Path(log)
            text = path.read_text(errors="replace").strip() if path.is_file() else ""
            last = text.splitlines()[-1] if text else "no output"
            lines.append(last if last.startswith("crossdisc") else f"crossdisc: rule {rule} failed ({log}): {last}")
    return list(dict.fromkeys(lines))


def report_at_exit(snakemake_logs):
    """Print the failed steps' error lines to stderr when the process exits (after Snakemake's own
    closing messages)."""
    text = "\n".join(Path(log).read_text(errors="replace") for log in snakemake_logs if Path(log).is_file())
    lines = error_lines(text)
    if lines:
        atexit.register(lambda: print(*lines, sep="\n", file=sys.stderr, flush=True))


def summary_lines(results, logs):
    """The end of a finished run: where its outputs are, the first paired comparisons, and every
    warning preprocessing logged. `results` and `logs` are the results and log directories."""
    tables, figures = Path(results) / "tables", Path(results) / "figures"
    if not (tables / "results.md").is_file():
        return []
    lines = [f"crossdisc: tables in {tables}/ (results.md, comparisons.md, data.md, runtimes.md), figures in {figures}/; "
             f"the HTML report: snakemake --report {results}/report.html"]
    if (tables / "comparisons.csv").is_file():
        comparisons = pd.read_csv(tables / "comparisons.csv")
        for row in comparisons.head(SHOWN_COMPARISONS).itertuples(index=False):
            seeds, test = interval(row.seed_low, row.seed_high, "+"), interval(row.test_low, row.test_high, "+")
            intervals = ", ".join(f"{name} {text}" for name, text in (("seeds", seeds), ("test", test)) if text)
            lines.append(f"crossdisc: {row.comparison}, {row.task} ({row.model}): {row.diff:+.1f} points {row.metric}, "
                         f"{row.seeds} seed{'s' if row.seeds > 1 else ''}" + (f"; 95% {intervals}" if intervals else ""))
        if len(comparisons) > SHOWN_COMPARISONS:
            lines.append(f"crossdisc: ... {len(comparisons) - SHOWN_COMPARISONS} more in {tables}/comparisons.md")
    for log in sorted(Path(logs).glob("preprocess/**/*.log")):
        lines += [f"crossdisc: warning: {line.split(' WARNING ', 1)[1]}" for line in log.read_text(errors="replace").splitlines()
                  if " WARNING " in line]
    return lines
