"""kill -9 in the middle of training, rerun, and end with the same adapter as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO

ARGS = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], max_steps=150, batch_size=2, eval_every=10,
            learning_rate=0.01, lora_dropout=0.1, threads=1, seed=5, checkpoint_every=5)


def run_args(data, out, ckpt):
    d, npz = data
    return dict(model_dir=str(d["model"]), train_path=npz[0], val_path=npz[1], tokens_meta=str(d["meta"]),
                out_adapter=str(out / "adapter"), out_log=str(out / "log.csv"), out_stats=str(out / "stats.json"),
                checkpoint_dir=str(ckpt), **ARGS)


def kill_after_first_checkpoint(module: str, function: str, args: dict, checkpoint_dir) -> int:
    """Run the train stage `module.function(**args)` in a new process and kill -9 it as soon as it has
    written a checkpoint in `checkpoint_dir`; returns the checkpoint's step."""
    code = f"import json; from {module} import {function}; {function}(**json.loads({json.dumps(json.dumps(args))}))"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state = checkpoint_dir / "state.json"
    deadline = time.time() + 120
    while not state.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert state.exists(), "no checkpoint was written before the kill"
    return json.loads(state.read_text())["step"]


def test_killed_training_resumes_to_the_identical_adapter(tiny_data, tmp_path, caplog):
    from loraflow.train.loop import train_lora

    reference = train_lora(**run_args(tiny_data, tmp_path / "ref", tmp_path / "ckpt_ref"))
    assert not (tmp_path / "ckpt_ref").exists()  # cleared after success

    args = run_args(tiny_data, tmp_path / "killed", tmp_path / "ckpt")
    killed_at = kill_after_first_checkpoint("loraflow.train.loop", "train_lora", args, tmp_path / "ckpt")
    assert killed_at < ARGS["max_steps"]
    assert not (tmp_path / "killed" / "adapter").exists()  # nothing that looks complete

    with caplog.at_level("INFO", logger="loraflow.train.loop"):
        resumed = train_lora(**args)
    assert f"resumed from checkpoint at step {killed_at}" in caplog.text
    a = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU
    assert resumed["best_eval_loss"] == reference["best_eval_loss"]
    log_a = pd.read_csv(tmp_path / "ref" / "log.csv").drop(columns="elapsed_s")
    log_b = pd.read_csv(tmp_path / "killed" / "log.csv").drop(columns="elapsed_s")
    pd.testing.assert_frame_equal(log_a, log_b)


def test_checkpoint_of_other_settings_is_discarded(tiny_data, tmp_path, caplog):
    from loraflow.train.loop import train_lora

    args = dict(run_args(tiny_data, tmp_path / "a", tmp_path / "ckpt"), max_steps=12)
    (tmp_path / "ckpt").mkdir()  # left behind by a run with other settings
    (tmp_path / "ckpt" / "state.json").write_text(json.dumps({"step": 10, "fingerprint": "another-run"}))
    with caplog.at_level("INFO", logger="loraflow"):
        stats = train_lora(**args)
    assert "discarding checkpoint" in caplog.text and "resumed" not in caplog.text
    assert stats["steps"] == 12 and not (tmp_path / "ckpt").exists()
