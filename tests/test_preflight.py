"""A user-supplied `file://` source that is missing stops a real run before any job starts, with one
line naming the config key and the path; a dry run plans and prints the same line as a warning."""

import subprocess

import yaml

from conftest import REPO, plan, snakemake, write_config
from crossdisc.preflight import missing_local_files


def test_only_missing_local_files_are_reported_with_their_key_and_hint(tmp_path):
    present = tmp_path / "corpus.txt"
    present.write_text("text\n")
    sources = {
        "corpus": {"type": "url", "hint": "put your corpus there",
                   "files": [{"url": present.as_uri()}, {"url": f"file://{tmp_path}/gone%20away.txt"}]},
        "web": {"type": "url", "files": [{"url": "https://example.org/data.txt"}]},
        "generated": {"type": "python-docs"},
    }
    assert missing_local_files(sources, {"corpus", "web", "generated"}) == [
        f"config: sources.corpus.files[1].url: {tmp_path}/gone away.txt does not exist: put your corpus there"]


def user_config(tmp_path, url):
    """A text task on a user's TSV (a file:// source), and a second source that no run reads."""
    return {
        "results": str(tmp_path / "results"),
        "sources": {"mine": {"type": "url", "files": [{"url": url}], "hint": "export it from the lab database"},
                    "unused": {"type": "url", "files": [{"url": f"file://{tmp_path}/never-read.tsv"}]}},
        "models": {"tiny": {"source": "local", "path": str(tmp_path / "model")}},
        "token_maps": {},
        "tasks": {"mine": {"source": "mine", "reader": "text-table", "file": "data.tsv", "text_columns": ["text"],
                           "label_column": "label", "kind": "classification", "metric": "accuracy",
                           "max_length": 16}},
        "experiments": {"mine": {"tasks": ["mine"], "models": ["tiny"], "token_maps": ["identity"]}},
    }


def run(tmp_path, config, *args):
    configfile = tmp_path / "config.yaml"
    configfile.write_text(yaml.safe_dump(config))
    return subprocess.run(["snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path),
                           "--configfile", str(configfile), "--cores", "1", *args],
                          capture_output=True, text=True, timeout=300)


def test_a_missing_user_file_stops_a_real_run_before_any_job(tmp_path):
    missing = tmp_path / "data.tsv"
    result = run(tmp_path, user_config(tmp_path, missing.as_uri()))
    line = f"crossdisc: config: sources.mine.files[0].url: {missing} does not exist: export it from the lab database"
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == line
    assert "Traceback" not in result.stderr and "never-read" not in result.stderr
    assert not (tmp_path / "results").exists()


def test_a_dry_run_plans_and_warns(tmp_path):
    missing = tmp_path / "data.tsv"
    result = run(tmp_path, user_config(tmp_path, missing.as_uri()), "--dry-run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"crossdisc: warning: config: sources.mine.files[0].url: {missing} does not exist" in result.stderr
    configfile = write_config(tmp_path / "planned.yaml", user_config(tmp_path, missing.as_uri()))
    assert plan(tmp_path, configfile)[f"{tmp_path}/results/raw/mine"] == "download"


def test_a_source_already_downloaded_needs_no_file(tmp_path):
    (tmp_path / "results/raw/mine").mkdir(parents=True)
    result = run(tmp_path, user_config(tmp_path, (tmp_path / "deleted.tsv").as_uri()), "--dry-run",
                 "--until", "download")
    assert result.returncode == 0 and "does not exist" not in result.stderr, result.stderr[-3000:]


def test_editing_a_users_file_reruns_its_source_and_what_is_built_from_it(tmp_path, tiny_bert):
    data = tmp_path / "data.tsv"
    data.write_text("text\tlabel\n" + "".join(f"line {i} of text\t{i % 2}\n" for i in range(40)))
    config = {**user_config(tmp_path, data.as_uri()), "models": {"tiny": {"source": "local", "path": str(tiny_bert)}}}
    configfile = write_config(tmp_path / "mine.yaml", config)
    tokens = f"{tmp_path}/results/tokens/mine/tiny.parquet"
    snakemake(tmp_path, configfile, tokens)
    assert plan(tmp_path, configfile, tokens) == {}
    data.write_text(data.read_text() + "one more line of text\t1\n")
    assert plan(tmp_path, configfile, tokens) == {f"{tmp_path}/results/raw/mine": "download", tokens: "preprocess"}
    snakemake(tmp_path, configfile, tokens, "--forcerun", "download")  # no checksum lock stands in the way
    assert (tmp_path / "results/raw/mine/data.tsv").read_text().endswith("one more line of text\t1\n")
