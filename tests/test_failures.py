"""A failed step's one-line error ends the console, read from Snakemake's log and the step's own."""

import subprocess

import yaml

from conftest import REPO
from crossdisc import failures

SNAKEMAKE_LOG = """\
[Fri Dec  4 21:25:07 2026]
Error in rule preprocess:
    message: None
    jobid: 0
    input: {raw}, {model}
    output: {out}
    log: {log} (check log file(s) for error details)
    shell:
        crossdisc preprocess --task mine > {log} 2>&1
        (command exited with non-zero exit code)
[Fri Dec  4 21:25:08 2026]
Error in rule download:
    message: None
    jobid: 3
    output: {raw}
    log: {download_log} (check log file(s) for error details)
Shutting down, this might take some time.
Exiting because a job execution failed. Look above for error messages
"""


def test_each_failed_steps_last_log_line_is_reported_once(tmp_path):
    log, download_log = tmp_path / "preprocess.log", tmp_path / "download.log"
    log.write_text("reading\ncrossdisc preprocess: error: data.tsv: line 3: label 'x' is not a number\n\n")
    download_log.write_text("Traceback (most recent call last):\n  ...\nKeyError: 'files'\n")
    text = SNAKEMAKE_LOG.format(raw="raw", model="model", out="out", log=log, download_log=download_log)
    assert failures.failed_steps(text) == [("preprocess", [str(log)]), ("download", [str(download_log)])]
    assert failures.error_lines(text + text) == [
        "crossdisc preprocess: error: data.tsv: line 3: label 'x' is not a number",
        f"crossdisc: rule download failed ({download_log}): KeyError: 'files'"]


def test_a_bad_input_ends_the_console_with_the_steps_one_line(tmp_path, tiny_bert):
    (tmp_path / "data.tsv").write_text("text\tlab\nhello world\t1\n")  # no `label` column
    config = {"results": str(tmp_path / "results"),
              "sources": {"mine": {"type": "url", "files": [{"url": (tmp_path / "data.tsv").as_uri()}]}},
              "models": {"tiny": {"source": "local", "path": str(tiny_bert)}},
              "tasks": {"mine": {"source": "mine", "reader": "text-table", "file": "data.tsv", "text_columns": ["text"],
                                 "label_column": "label", "kind": "classification", "metric": "accuracy"}},
              "experiments": {"mine": {"tasks": ["mine"], "models": ["tiny"], "token_maps": ["identity"]}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    result = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--configfile",
                             str(tmp_path / "config.yaml"), "--cores", "1"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"crossdisc preprocess: error: {tmp_path}/results/raw/mine/data.tsv: line 1: missing column(s) ['label'] "
        "(the file has ['text', 'lab'])")
    assert "Traceback" not in result.stderr
