"""The README's "your own data" example runs as a user would run it: config/examples/own-data.yaml
and its files in a working directory of their own, the Snakefile named with -s."""

import csv
import shutil
import subprocess

import pytest

from conftest import REPO
from crossdisc import tokens


@pytest.mark.slow
def test_the_own_data_example_runs_end_to_end_from_another_directory(tmp_path):
    shutil.copytree(REPO / "config" / "examples", tmp_path / "config" / "examples")
    command = ["snakemake", "-s", REPO / "Snakefile", "--configfile", "config/examples/own-data.yaml", "--cores", "2"]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]

    with open(tmp_path / "results-own-data" / "tables" / "results.csv") as table:
        rows = list(csv.DictReader(table))
    assert sorted((r["experiment"], r["task"], r["init"], r["token_map"], r["metric"]) for r in rows) == [
        ("my-non-text", "my-melodies", init, "most-frequent", "vote_accuracy") for init in ("pretrained", "scratch")
    ] + [("my-non-text", "my-proteins", init, "most-frequent", "accuracy") for init in ("pretrained", "scratch")
         ] + [("my-text", "my-reviews", init, "shift-1000", "accuracy") for init in ("pretrained", "scratch")]
    assert all(0 <= float(r["test_mean"]) <= 100 and r["seeds"] == "1" for r in rows)
    comparisons = (tmp_path / "results-own-data" / "tables" / "comparisons.md").read_text()
    assert all(f"| pretrained vs scratch | {task} |" in comparisons for task in ("my-reviews", "my-proteins",
                                                                                 "my-melodies"))
    # each reader took its file as the example's comments say: the TSV's split column, the FASTA
    # file cut at split_fractions [0.7, 0.15], the MIDI pieces' splits (4 segments of 16 per piece)
    token_files = {"my-reviews": "minilm", "my-proteins": "native", "my-melodies": "native"}  # text: the model's ids
    splits = {task: tokens.read_token_file(tmp_path / "results-own-data" / "tokens" / task / f"{vocabulary}.parquet"
                                           )[0]["split"].value_counts().to_dict()
              for task, vocabulary in token_files.items()}
    assert splits == {"my-reviews": {"train": 34, "dev": 7, "test": 7},
                      "my-proteins": {"train": 28, "dev": 6, "test": 6},
                      "my-melodies": {"train": 24, "dev": 8, "test": 8}}


def test_the_readmes_own_data_excerpt_is_taken_from_the_example():
    readme = (REPO / "README.md").read_text()
    excerpt = readme.split("```yaml\n", 1)[1].split("```", 1)[0].splitlines()
    example = (REPO / "config" / "examples" / "own-data.yaml").read_text().splitlines()
    assert len(excerpt) > 10 and [line for line in excerpt if line not in example] == []
