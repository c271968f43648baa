"""GPU slots on a simulated 2-GPU machine: no two concurrent jobs share a device, kill -9 frees one."""

import json
import os
import signal
import subprocess
import sys

from conftest import REPO

JOB = """
import json, os, sys, time
from loraflow.gpu_slots import claim_gpu
got = claim_gpu(1, timeout_s=30)
print("claimed", flush=True)
start = time.time()
time.sleep(float(sys.argv[1]))
print(json.dumps({"device": got, "visible": os.environ["CUDA_VISIBLE_DEVICES"], "start": start, "end": time.time()}))
"""


def spawn(tmp_path, seconds, gpus="2"):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "LORAFLOW_GPU_COUNT": gpus, "LORAFLOW_GPU_LOCK_DIR": str(tmp_path)}
    env.pop("SLURM_JOB_ID", None)
    return subprocess.Popen([sys.executable, "-c", JOB, str(seconds)], env=env, stdout=subprocess.PIPE, text=True)


def test_concurrent_jobs_never_share_a_gpu(tmp_path):
    procs = [spawn(tmp_path, 0.6) for _ in range(5)]
    results = [result(p) for p in procs]
    assert all(r["device"] == [r["visible"]] and r["visible"] in ("0", "1") for r in results)
    for i, a in enumerate(results):
        for b in results[i + 1:]:
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
    from loraflow.gpu_slots import claim_gpu

    monkeypatch.setenv("LORAFLOW_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("LORAFLOW_GPU_COUNT", "1")
    assert claim_gpu(1) is None
    monkeypatch.setenv("LORAFLOW_GPU_COUNT", "4")
    monkeypatch.setenv("SLURM_JOB_ID", "123")
    assert claim_gpu(1) is None
