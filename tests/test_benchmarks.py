"""The benchmarks stay runnable: each contender trains a few steps of a tiny model."""

import sys

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import finetune_throughput as bench  # noqa: E402

from crossdisc import token_maps  # noqa: E402


def test_every_contender_trains_on_the_same_task(tiny_bert, tokenizer, tmp_path):
    token_file = tmp_path / "task.parquet"
    bench.write_task(token_file, *bench.glue_like_pairs(tokenizer, 80, seed=1), vocab_size=len(tokenizer))
    map_file = tmp_path / "map.parquet"
    token_maps.write_table(map_file, np.arange(len(tokenizer)), {"vocabulary": "text"}, tokenizer)
    results = [bench.run_trainer(tiny_bert, token_file, 2, 8, 1, tmp_path, "cpu", best=False),
               bench.run_trainer(tiny_bert, token_file, 2, 8, 1, tmp_path, "cpu", best=True),
               bench.run_engine(tiny_bert, token_file, map_file, 2, 8, 1, tmp_path, "cpu")]
    for speed, accuracy in results:
        assert speed > 0 and 0 <= accuracy <= 1


@pytest.mark.parametrize("data", ["full", "recipe"])
def test_every_pretraining_contender_trains(tiny_bert, tmp_path, data):
    import argparse
    import queue

    import pretrain_throughput

    args = argparse.Namespace(tokenizer=str(tiny_bert), steps=2, batch_size=4, hidden=64, layers=1, device="cpu",
                              data=data, batch_workers=2)
    if data == "recipe":
        tokenizer = pretrain_throughput.setting(args)[1]
        args.corpus = pretrain_throughput.prepare_recipe_corpus(tokenizer, 4000, tmp_path)
        lengths = [len(a) + len(b) + 3 for a, b, _ in pretrain_throughput.pairs(args, tokenizer, 128)]
        assert len(lengths) == 12 and max(lengths) <= 128 and min(lengths) < 128  # some short, as BERT cuts them
    for name in pretrain_throughput.CONTENDERS:
        results = queue.Queue()
        pretrain_throughput.contender(name, args, 128 if data == "recipe" else 32, results)
        speed, peak, build_ms, micro_batches = results.get()
        assert speed > 0 and peak > 0 and (build_ms > 0 if name in ("crossdisc", "one-per-row") else build_ms is None)
        assert micro_batches == 1  # the whole batch fits
    # where it does not (on a GPU), Hugging Face's contenders accumulate the gradients of micro-batches
    assert pretrain_throughput.run_loop("huggingface", args, 32, micro_batches=2)[0] > 0
    assert pretrain_throughput.run_trainer(args, 32, micro_batches=2)[0] > 0


def test_model_flops_and_gpu_peaks_of_the_pretraining_benchmark():
    import pretrain_throughput as bench

    # BERT-base at 128 with 20 predictions, by hand: a layer 2*128*(4*768^2 + 2*768*3072) + 4*128^2*768
    # = 1,862,270,976; pooler and NSP 2*(768^2 + 2*768) = 1,182,720; MLM head 2*20*(768^2 + 768*30522)
    # = 961,228,800; forward 12 layers + heads = 23,309,663,232; x3 with the backward
    assert bench.training_flops_per_sequence(768, 12, 3072, 30522, 128, 20) == 69_928_989_696
    assert bench.max_predictions(128) == 20 and bench.max_predictions(512) == 80 and bench.max_predictions(32) == 5
    names = ("NVIDIA H100 80GB HBM3", "NVIDIA H200", "NVIDIA A100-SXM4-80GB", "NVIDIA H100 PCIe", "NVIDIA H200 NVL",
             "Tesla T4")
    peaks = {name: bench.bf16_peak_tflops(name) for name in names}
    assert peaks == {"NVIDIA H100 80GB HBM3": 989, "NVIDIA H200": 989, "NVIDIA A100-SXM4-80GB": 312,
                     "NVIDIA H100 PCIe": None, "NVIDIA H200 NVL": None, "Tesla T4": None}


def test_the_precision_benchmark_trains_its_three_runs(tiny_bert, tmp_path, capsys):
    import pretrain_precision

    assert pretrain_precision.main(["--tokenizer", str(tiny_bert), "--steps", "4", "--batch-size", "4", "--length",
                                    "64", "--hidden", "32", "--layers", "1", "--no-dropout", "--device", "cpu",
                                    "--results-dir", str(tmp_path)]) == 0
    # on a CPU all three are fp32 and eager: the same curve
    assert "largest step-by-step loss difference (a) - (b), bf16 against fp32: 0" in capsys.readouterr().out
    assert len(pretrain_precision.RUNS) == (tmp_path / "pretrain_precision-cpu.md").read_text().count("| (")


def test_the_preprocessing_benchmark_runs_both_parts(tiny_bert, tmp_path, capsys):
    import preprocess_throughput

    speedup = preprocess_throughput.main(["--tokenizer", str(tiny_bert), "--composers", "bach", "palestrina",
                                          "--pieces", "3", "--pairs", "200", "--rounds", "1",
                                          "--cache", str(tmp_path / "music21"), "--results-dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert speedup > 0 and "files/s" in out and "rows/s" in out
    assert out.strip().splitlines()[-1].startswith("parallel speedup")
    assert len(list((tmp_path / "music21" / "midi").glob("*.mid"))) == 6
    assert f"| {speedup:.2f}x |" in (tmp_path / "preprocess_throughput-cpu.md").read_text()


def test_the_corpus_benchmark_prepares_and_reads_both_sizes(tiny_bert, tmp_path, capsys):
    import corpus_scale

    rows = corpus_scale.main(["--tokenizer", str(tiny_bert), "--million-tokens", "0.02", "0.06",
                              "--shard-million-tokens", "0.02", "--workers", "2", "--batch-size", "16",
                              "--dir", str(tmp_path), "--results-dir", str(tmp_path)])
    assert [row[1] for row in rows] == ["1", "3"]  # shards of a fixed size: more of them for the larger corpus
    assert all(int(row[0].replace(",", "")) >= size for row, size in zip(rows, (20000, 60000)))
    assert all(float(row[column].split()[0]) > 0 for row in rows for column in (4, 5, 6, 7))
    assert "prepare" in capsys.readouterr().out
    assert "| read tokens/s | read peak RSS |" in (tmp_path / "corpus_scale-cpu.md").read_text()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus_scale-cpu.json", "corpus_scale-cpu.md"]


def test_a_results_file_keeps_the_latest_run_of_each_command_with_what_measured_it(tmp_path):
    import json
    import os
    import platform

    import record
    import transformers

    columns = ["model", "ours seq/s"]
    record.save("pretrain_throughput", "cpu", [], columns, [["2 layers", "150.0"]], results_dir=tmp_path)
    record.save("pretrain_throughput", "cpu", ["--layers", "4"], columns, [["4 layers", "57.2"]], results_dir=tmp_path)
    markdown = record.save("pretrain_throughput", "cpu", [], columns, [["2 layers", "151.3"]], ["a note"],
                           results_dir=tmp_path)
    assert markdown == tmp_path / "pretrain_throughput-cpu.md"
    records = json.loads((tmp_path / "pretrain_throughput-cpu.json").read_text())
    assert [(r["command"], r["rows"]) for r in records] == [
        ("python benchmarks/pretrain_throughput.py --layers 4", [["4 layers", "57.2"]]),
        ("python benchmarks/pretrain_throughput.py", [["2 layers", "151.3"]])]
    latest = records[-1]
    assert latest["hardware"]["cpu_count"] == os.cpu_count() and latest["hardware"]["cpu"]
    assert latest["versions"]["python"] == platform.python_version()
    assert latest["versions"]["transformers"] == transformers.__version__
    text = markdown.read_text()
    assert text.index("## `python benchmarks/pretrain_throughput.py --layers 4`") < text.index(
        "## `python benchmarks/pretrain_throughput.py`")
    assert "| 2 layers | 151.3 |\n\na note\n" in text and "150.0" not in text
    assert f"{latest['date']}; {latest['hardware']['cpu']}, {os.cpu_count()} CPUs" in text
