"""What a failed run ends on. Each step writes its one-line error (file, record, problem) as the
last line of its job log; Snakemake's console only points at that log. The Snakefile's `onerror`
hands Snakemake's own log to `report_at_exit`, which prints each failed step's line once Snakemake
has printed everything else, so that the cause is the console's last word."""

import atexit
import re
import sys
from pathlib import Path

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
