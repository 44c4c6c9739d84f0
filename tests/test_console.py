"""The end of a run on the console: a failed step's one-line error, read from Snakemake's log and the
step's own; a finished run's summary."""

import functools
import hashlib
import http.server
import subprocess
import threading

import pandas as pd
import yaml

from conftest import REPO
from crossdisc import console

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
    assert console.failed_steps(text) == [("preprocess", [str(log)]), ("download", [str(download_log)])]
    assert console.error_lines(text + text) == [
        "crossdisc preprocess: error: data.tsv: line 3: label 'x' is not a number",
        f"crossdisc: rule download failed ({download_log}): KeyError: 'files'"]


def test_a_bad_input_ends_the_console_with_the_steps_one_line_naming_the_users_file(tmp_path, tiny_bert):
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
        f"crossdisc preprocess: error: {tmp_path}/data.tsv: line 1: missing column(s) ['label'] "
        "(the file has ['text', 'lab'])")
    assert "Traceback" not in result.stderr


def test_a_download_whose_checksum_differs_ends_the_console_with_the_steps_one_line(tmp_path, tiny_bert):
    served = tmp_path / "served"
    served.mkdir()
    (served / "data.tsv").write_text("text\tlabel\nhello world\t1\n")
    expected = hashlib.sha256(b"the file as it was when the config was written").hexdigest()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{httpd.server_address[1]}/data.tsv"
    config = {"results": str(tmp_path / "results"),
              "sources": {"mine": {"type": "url", "files": [{"url": url, "sha256": expected}]}},
              "models": {"tiny": {"source": "local", "path": str(tiny_bert)}},
              "tasks": {"mine": {"source": "mine", "reader": "text-table", "file": "data.tsv", "text_columns": ["text"],
                                 "label_column": "label", "kind": "classification", "metric": "accuracy"}},
              "experiments": {"mine": {"tasks": ["mine"], "models": ["tiny"], "token_maps": ["identity"]}}}
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    try:
        result = subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                                 "--configfile", str(tmp_path / "config.yaml"), "--cores", "1"],
                                capture_output=True, text=True, timeout=300)
    finally:
        httpd.shutdown()
    actual = hashlib.sha256((served / "data.tsv").read_bytes()).hexdigest()
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"crossdisc download: error: {url}: sha256 mismatch: expected {expected}, got {actual}")
    assert "Traceback" not in result.stderr and not (tmp_path / "results" / "raw" / "mine").exists()


def test_a_finished_run_names_its_outputs_its_first_comparisons_and_the_preprocessing_warnings(tmp_path):
    tables, logs = tmp_path / "results" / "tables", tmp_path / "results" / "logs"
    tables.mkdir(parents=True)
    (tables / "results.md").write_text("| table |\n")
    rows = [{"comparison": "pretrained vs scratch", "task": f"t{i}", "model": "m", "metric": "accuracy", "seeds": seeds,
             "diff": 12.5, "seed_low": low, "seed_high": 20.0, "test_low": 3.0, "test_high": 22.0}
            for i, (seeds, low) in enumerate([(3, 5.0), (1, None)] * 5)]
    pd.DataFrame(rows).to_csv(tables / "comparisons.csv", index=False)
    (logs / "preprocess" / "dna").mkdir(parents=True)
    (logs / "preprocess" / "dna" / "native.log").write_text(
        "2026-12-04 10:00:00,000 INFO dna: examples per split and label: {...}\n"
        "2026-12-04 10:00:00,001 WARNING dna: the dev split has 2 examples; its metrics move by 50 points per example\n")
    lines = console.summary_lines(tmp_path / "results", logs)
    assert lines[0].startswith(f"crossdisc: tables in {tables}/ (results.md, comparisons.md, data.md, runtimes.md)")
    assert lines[1] == ("crossdisc: pretrained vs scratch, t0 (m): +12.5 points accuracy, 3 seeds; "
                        "95% seeds [+5.0, +20.0], test [+3.0, +22.0]")
    assert lines[2] == "crossdisc: pretrained vs scratch, t1 (m): +12.5 points accuracy, 1 seed; 95% test [+3.0, +22.0]"
    assert lines[9] == f"crossdisc: ... 2 more in {tables}/comparisons.md"
    assert lines[10] == "crossdisc: warning: dna: the dev split has 2 examples; its metrics move by 50 points per example"
    assert console.summary_lines(tmp_path / "elsewhere", logs) == []
