"""kill -9 in the middle of training, rerun, and end with the same adapter as an uninterrupted run."""

import json

import pandas as pd
import torch
from safetensors.torch import load_file

from helpers import TRAIN_ARGS, kill_after_first_checkpoint, run_args
from loraflow.binding import bind


def test_killed_training_resumes_to_the_identical_adapter(tiny_data, tmp_path, caplog):
    from loraflow.tasks.causal_lm.train import train_lora

    reference = train_lora(**bind(train_lora, run_args(tiny_data, tmp_path / "ref", tmp_path / "ckpt_ref")))
    assert not (tmp_path / "ckpt_ref").exists()  # cleared after success

    args = run_args(tiny_data, tmp_path / "killed", tmp_path / "ckpt")
    killed_at = kill_after_first_checkpoint("loraflow.tasks.causal_lm.train", "train_lora", args, tmp_path / "ckpt")
    assert killed_at < TRAIN_ARGS["max_steps"]
    assert not (tmp_path / "killed" / "adapter").exists()  # nothing that looks complete

    with caplog.at_level("INFO", logger="loraflow.train.loop"):
        resumed = train_lora(**bind(train_lora, args))
    assert f"resumed from checkpoint at step {killed_at}" in caplog.text
    a = load_file(tmp_path / "ref" / "adapter" / "adapter_model.safetensors")
    b = load_file(tmp_path / "killed" / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bit-identical on CPU
    assert resumed["best_eval_loss"] == reference["best_eval_loss"]
    log_a = pd.read_csv(tmp_path / "ref" / "log.csv").drop(columns="elapsed_s")
    log_b = pd.read_csv(tmp_path / "killed" / "log.csv").drop(columns="elapsed_s")
    pd.testing.assert_frame_equal(log_a, log_b)


def test_checkpoint_of_other_settings_is_discarded(tiny_data, tmp_path, caplog):
    from loraflow.tasks.causal_lm.train import train_lora

    args = dict(run_args(tiny_data, tmp_path / "a", tmp_path / "ckpt"), max_steps=12)
    (tmp_path / "ckpt").mkdir()  # left behind by a run with other settings
    (tmp_path / "ckpt" / "state.json").write_text(json.dumps({"step": 10, "fingerprint": "another-run"}))
    with caplog.at_level("INFO", logger="loraflow"):
        stats = train_lora(**bind(train_lora, args))
    assert "discarding checkpoint" in caplog.text and "resumed" not in caplog.text
    assert stats["steps"] == 12 and not (tmp_path / "ckpt").exists()
