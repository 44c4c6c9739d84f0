"""GPU slots: training processes running at once on one machine each get a GPU of their own."""

import os
import select
import subprocess
import sys

import pytest
import torch

from crossdisc.gpu_slots import pin_free_gpus

# A training process in miniature: claims a GPU, says which, and holds it until its stdin closes.
CLAIMER = ("import sys; from crossdisc.gpu_slots import claim; "
           "print(','.join(claim(sys.argv[2].split(','), sys.argv[1], int(sys.argv[3]), poll_seconds=0.05)), "
           "flush=True); sys.stdin.read()")


def start_claimer(lock_dir, gpus, count=1):
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(lock_dir), ",".join(gpus), str(count)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def claimed(process, timeout):
    """The GPUs a claimer got ("1" or "0,2"), or None while it is still waiting after `timeout` seconds."""
    ready, _, _ = select.select([process.stdout], [], [], timeout)
    return process.stdout.readline().strip() if ready else None


def test_processes_started_together_never_share_a_gpu_and_a_freed_gpu_is_reused(tmp_path):
    gpus = ["0", "1", "2"]
    processes = [start_claimer(tmp_path, gpus) for _ in gpus]
    try:
        taken = [claimed(p, 30) for p in processes]
        assert sorted(taken) == gpus
        processes.append(start_claimer(tmp_path, gpus))
        assert claimed(processes[-1], 1) is None  # every GPU is held: it waits
        processes[1].stdin.close()  # the holder of one GPU ends
        processes[1].wait()
        assert claimed(processes[-1], 30) == taken[1]
    finally:
        for process in processes:
            process.kill()
            process.wait()


@pytest.mark.parametrize("visible, held, expected", [
    (None, "0", "1"),  # every GPU of the machine
    ("4,7", "4", "7"),  # only those the user made visible, by their ids
])
def test_a_training_process_sees_only_a_gpu_no_other_process_holds(tmp_path, monkeypatch, visible, held, expected):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    if visible:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    else:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    holder = start_claimer(tmp_path, [held])
    try:
        assert claimed(holder, 30) == held
        assert pin_free_gpus("auto", lock_dir=tmp_path) == [expected]
        assert os.environ["CUDA_VISIBLE_DEVICES"] == expected
    finally:
        holder.kill()
        holder.wait()


def test_nothing_is_claimed_on_the_cpu_in_a_torchrun_process_or_inside_a_slurm_job(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert pin_free_gpus("cpu", lock_dir=tmp_path) is None
    monkeypatch.setenv("LOCAL_RANK", "1")  # a process of torchrun: its launcher claimed the job's GPUs
    assert pin_free_gpus("auto", 2, lock_dir=tmp_path) is None
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("SLURM_JOB_ID", "42")  # SLURM has narrowed CUDA_VISIBLE_DEVICES itself
    assert pin_free_gpus("auto", lock_dir=tmp_path) is None
    assert not list(tmp_path.iterdir())


def test_a_job_on_several_gpus_claims_them_all_at_once_or_waits_holding_none(tmp_path):
    gpus = ["0", "1", "2"]
    processes = [start_claimer(tmp_path, gpus)]
    try:
        single = processes[0]
        assert claimed(single, 30) == "0"
        pair = start_claimer(tmp_path, gpus, count=2)
        processes.append(pair)
        assert claimed(pair, 30) == "1,2"
        single.stdin.close()  # one GPU is free again
        single.wait()
        processes.append(start_claimer(tmp_path, gpus, count=2))
        assert claimed(processes[-1], 1) is None  # too few for it: it waits...
        processes.append(start_claimer(tmp_path, gpus))
        assert claimed(processes[-1], 30) == "0"  # ...holding none of them
        pair.stdin.close()
        pair.wait()
        assert claimed(processes[2], 30) == "1,2"
    finally:
        for process in processes:
            process.kill()
            process.wait()
