"""GPU slots on a simulated multi-GPU machine: no two concurrent jobs share a device, kill -9 frees one,
a job of N processes gets N devices, one per rank."""

import json
import os
import signal
import subprocess
import sys

import pytest

from helpers import REPO

JOB = """
import json, os, sys, time
from loraflow.train.gpu_slots import claim_gpu
got = claim_gpu(1, timeout_s=30)
print("claimed", flush=True)
start = time.time()
time.sleep(float(sys.argv[1]))
print(json.dumps({"device": got, "visible": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()}))
"""


def spawn(tmp_path, seconds, gpus="2"):
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO / "src"),
        "LORAFLOW_GPU_COUNT": gpus,
        "LORAFLOW_GPU_LOCK_DIR": str(tmp_path),
    }
    env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen([sys.executable, "-c", JOB, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_never_share_a_gpu(tmp_path):
    procs = [spawn(tmp_path, 0.6) for _ in range(5)]
    results = [result(p) for p in procs]
    assert all(r["device"] == [r["visible"]] and r["visible"] in ("0", "1") for r in results)
    for i, a in enumerate(results):
        for b in results[i + 1 :]:
            overlap = a["start"] < b["end"] and b["start"] < a["end"]
            assert not (overlap and a["device"] == b["device"]), (a, b)
    # with five jobs and two devices, both devices were used
    assert {r["visible"] for r in results} == {"0", "1"}


def result(proc):
    return json.loads(proc.communicate(timeout=60)[0].splitlines()[-1])


def test_a_killed_job_frees_its_gpu(tmp_path):
    holder = spawn(tmp_path, 600)
    assert holder.stdout.readline().strip() == "claimed"
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    a, b = spawn(tmp_path, 1.0), spawn(tmp_path, 1.0)
    ra, rb = result(a), result(b)
    assert ra["start"] < rb["end"] and rb["start"] < ra["end"]  # ran at the same time: both slots were free
    assert {ra["visible"], rb["visible"]} == {"0", "1"}


def test_single_gpu_and_slurm_are_left_alone(tmp_path, monkeypatch):
    from loraflow.train.gpu_slots import claim_gpu

    monkeypatch.setenv("LORAFLOW_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("LORAFLOW_GPU_COUNT", "1")
    assert claim_gpu(1) is None
    monkeypatch.setenv("LORAFLOW_GPU_COUNT", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert claim_gpu(1) is None


MULTI = """
import json, os, subprocess, sys
from loraflow.train.gpu_slots import claim_gpu
got = claim_gpu(2, timeout_s=30)
subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "loraflow.train.distributed", sys.argv[1]], check=True, capture_output=True)
print(json.dumps(got))
"""


def test_a_two_gpu_job_gets_two_free_devices_and_its_ranks_use_one_each(tmp_path):
    """train.nproc_per_node 2 -> the job claims 2 slots on a simulated 4-GPU machine (one busy), and
    its two torchrun ranks each use a different one of them."""
    holder = spawn(tmp_path, 600, gpus="4")
    try:
        assert holder.stdout.readline().strip() == "claimed"
        env = {
            **os.environ,
            "PYTHONPATH": str(REPO / "src"),
            "LORAFLOW_GPU_COUNT": "4",
            "LORAFLOW_GPU_LOCK_DIR": str(tmp_path),
        }
        env.pop("SLURM_JOB_ID", None)
        out = tmp_path / "ranks"
        out.mkdir()
        proc = subprocess.run(
            [sys.executable, "-c", MULTI, str(out)], env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        claimed = json.loads(proc.stdout.splitlines()[-1])
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert len(claimed) == 2 and "0" not in claimed  # device 0 was held by another job
    ranks = [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]
    assert [r["device"] for r in ranks] == claimed  # rank i -> the i-th claimed device: distinct
    assert all(r["cuda_visible_devices"] == ",".join(claimed) for r in ranks)


def test_a_job_with_more_ranks_than_gpu_slots_is_refused(monkeypatch):
    """Snakemake scales a gpu=2 request down to --resources gpu=1; the job says so instead of failing in rank 1."""
    from loraflow.train.gpu_slots import check_ranks

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("LORAFLOW_GPU_COUNT", "4")
    with pytest.raises(RuntimeError, match="--resources gpu=2"):
        check_ranks(1, 2)
    check_ranks(2, 2)
    monkeypatch.setenv("LORAFLOW_GPU_COUNT", "0")  # CPU only: gloo ranks need no device
    check_ranks(1, 2)
