"""Data-parallel pre-training: `torchrun` processes (gloo on the CPU) that each train on their rows of
the step's batch end at the weights of one process training on the whole batch, and a job one of
whose processes is killed resumes to the checkpoint of a job never interrupted."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ARCH, prepared_corpus

from crossdisc import pretrain

STEPS = 30
# Dropout off, so that runs on different numbers of processes train the same function. Batches of 2
# sequences, one per process, over the switch from length 32 to 48.
SPEC = {"architecture": {**ARCH, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0},
        "total_steps": STEPS, "seed": 100,
        "training": {"max_length": 32, "batch_size": 2, "lr": 1e-3, "warmup_steps": 2, "checkpoint_every": 2,
                     "long_max_length": 48, "long_from_step": 16}}
# The processes' gradients are summed in another order than one process sums them.
TOLERANCE = 1e-5


def pretrain_command(corpus, tokenizer, out, processes):
    launcher = (["torchrun", "--standalone", "--nproc-per-node", str(processes), "-m", "crossdisc"]
                if processes > 1 else [sys.executable, "-m", "crossdisc"])
    return [*launcher, "pretrain", "--corpus", str(corpus), "--tokenizer", str(tokenizer), "--spec", json.dumps(SPEC),
            "--step", str(STEPS), "--state", str(state_dir(out)), "--device", "cpu", "--out", str(out)]


def state_dir(out):
    return out.parent / f"{out.name}-state"


def weights(checkpoint):
    from safetensors.torch import load_file

    return load_file(checkpoint / "model.safetensors")


def losses(checkpoint):
    return [point["loss"] for point in torch.load(checkpoint / pretrain.STATE_FILE, weights_only=True)["curve"]]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory, tiny_bert):
    """The corpus (two shards: each process reads them as the other does), and the checkpoint of an
    uninterrupted 2-process run."""
    tmp = tmp_path_factory.mktemp("distributed")
    corpus = prepared_corpus(tmp, tiny_bert, shards=2)
    subprocess.run(pretrain_command(corpus, tiny_bert, tmp / "two", 2), check=True, capture_output=True)
    return corpus, tmp / "two"


def test_two_processes_train_the_weights_of_one_process_on_the_same_batches(two_process_run, tiny_bert, tmp_path):
    corpus, two = two_process_run
    subprocess.run(pretrain_command(corpus, tiny_bert, tmp_path / "one", 1), check=True, capture_output=True)
    one, both = weights(tmp_path / "one"), weights(two)
    assert one.keys() == both.keys()
    for name in one:
        np.testing.assert_allclose(both[name], one[name], atol=TOLERANCE, rtol=0, err_msg=name)
    # the loss of every step is the whole batch's
    assert len(losses(two)) == STEPS
    np.testing.assert_allclose(losses(two), losses(tmp_path / "one"), atol=TOLERANCE, rtol=0)


def process_of_rank(launcher, rank):
    """The pid of torchrun's worker of `rank` (a child of the launcher with RANK in its environment)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            environment = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError):
            continue  # gone meanwhile
        if parent == launcher and f"RANK={rank}".encode() in environment:
            return int(stat.parent.name)
    return None


def test_a_job_whose_process_is_killed_resumes_to_the_checkpoint_of_an_uninterrupted_job(two_process_run, tiny_bert,
                                                                                          tmp_path):
    corpus, uninterrupted = two_process_run
    out = tmp_path / "two"
    command = pretrain_command(corpus, tiny_bert, out, 2)
    launcher = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = state_dir(out) / pretrain.STATE_FILE
    deadline = time.time() + 120
    while not state.exists() and launcher.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    worker = process_of_rank(launcher.pid, 1)
    assert worker, "rank 1 had ended before its job saved a state"
    os.kill(worker, signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0  # torchrun stops the other process and fails the job
    assert state.exists() and not out.exists()
    killed_at = torch.load(state, weights_only=True)["step"]
    assert 0 < killed_at < STEPS
    rerun = subprocess.run(command, check=True, capture_output=True, text=True)
    assert f"resuming from step {killed_at}" in rerun.stderr
    assert not state.exists()  # rank 0 removed it once the checkpoint was written
    resumed, reference = weights(out), weights(uninterrupted)
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[name], reference[name]) for name in reference)
    assert losses(out) == losses(uninterrupted)


def test_the_gradients_to_sum_stay_views_of_one_buffer_through_backward_passes():
    """What lets one all-reduce add up every gradient, and a replayed CUDA graph add into the same
    tensors: backward passes and in-place zeroing keep each gradient a view of the shared buffer."""
    from crossdisc.distributed import GradientSum

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    summed = GradientSum(model.parameters())
    pointers = [p.grad.data_ptr() for p in model.parameters()]
    for _ in range(2):
        model(torch.randn(5, 4)).square().sum().backward()
        assert [p.grad.data_ptr() for p in model.parameters()] == pointers
        torch.testing.assert_close(summed.buffer, torch.cat([p.grad.flatten() for p in model.parameters()]))
        assert summed.buffer.abs().sum() > 0
        model.zero_grad(set_to_none=False)
        assert not summed.buffer.any()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gradients_summed_after_a_replayed_graph_train_as_eager_steps(tokenizer):
    """On a GPU (a process group of one NCCL rank: the all-reduce runs, the sum is the gradient
    itself): steps replayed as CUDA graphs whose gradients one all-reduce then sums train as eager
    steps without it, in fp32 and without dropout."""
    import socket

    import torch.distributed as dist
    from test_pretrain import numbered_documents
    from transformers import BertConfig

    from crossdisc import accel, pretrain_data
    from crossdisc.distributed import GradientSum
    from crossdisc.training import to_device

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    device = torch.device("cuda", 0)  # init_process_group wants an indexed device
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1, device_id=device)
    try:
        hp = {**pretrain.DEFAULTS, "max_length": 40, "batch_size": 8, "max_predictions": 6}
        batches = pretrain_data.Batches([numbered_documents(20, 10)], hp, seed=1)
        config = BertConfig(vocab_size=len(tokenizer), **SPEC["architecture"])
        curves = {}
        for graphs in (True, False):
            torch.manual_seed(0)
            model = pretrain.pretraining_model(config, device)
            summed = GradientSum(model.parameters()) if graphs else lambda: None
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)

            def train_step(batch):
                loss = pretrain.pretraining_loss(model, batch)
                loss.backward()
                return loss.detach()

            run_step, curves[graphs] = accel.micro_batch_runner(train_step, model, device, graphs), []
            for step in range(6):
                batch = pretrain_data.masked_batch(batches(step), tokenizer, hp, 40, 1, step, pad_to_length=graphs,
                                                   pack_rows_multiple=8 if graphs else 1)
                curves[graphs].append(run_step(to_device(batch, device)).item())
                summed()
                optimizer.step()
                optimizer.zero_grad(set_to_none=False)
            assert accel.replays_graphs(run_step) == graphs
        np.testing.assert_allclose(curves[True], curves[False], rtol=1e-3)
    finally:
        dist.destroy_process_group()
