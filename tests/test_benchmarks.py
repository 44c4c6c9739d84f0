"""The benchmarks stay runnable: each contender trains a few steps of a tiny model."""

import sys

import numpy as np

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


def test_both_pretraining_contenders_train(tiny_bert):
    import argparse
    import queue

    import pretrain_throughput

    args = argparse.Namespace(tokenizer=str(tiny_bert), steps=2, batch_size=4, length=32, hidden=64, layers=1,
                              device="cpu")
    for name in ("huggingface", "crossdisc"):
        results = queue.Queue()
        pretrain_throughput.contender(name, args, results)
        speed, peak = results.get()
        assert speed > 0 and peak > 0


def test_the_preprocessing_benchmark_runs_both_parts(tiny_bert, tmp_path, capsys):
    import preprocess_throughput

    speedup = preprocess_throughput.main(["--tokenizer", str(tiny_bert), "--composers", "bach", "palestrina",
                                          "--pieces", "3", "--pairs", "200", "--rounds", "1",
                                          "--cache", str(tmp_path / "music21")])
    out = capsys.readouterr().out
    assert speedup > 0 and "files/s" in out and "rows/s" in out
    assert out.strip().splitlines()[-1].startswith("parallel speedup")
    assert len(list((tmp_path / "music21" / "midi").glob("*.mid"))) == 6
