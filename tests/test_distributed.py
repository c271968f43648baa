"""A training job as two torchrun processes (gloo on CPU) matches the single-process run."""

import pandas as pd
import torch
from safetensors.torch import load_file

from helpers import run_args
from loraflow.binding import bind


def test_two_processes_equal_one_with_the_same_global_batch(tiny_data, tmp_path):
    from loraflow.tasks.causal_lm.train import train_lora

    common = dict(max_steps=4, lora_dropout=0.0, checkpoint_every=0, eval_every=2)
    single = dict(run_args(tiny_data, tmp_path / "one", tmp_path / "c1"), **common, batch_size=2, grad_accum=2)
    double = dict(
        run_args(tiny_data, tmp_path / "two", tmp_path / "c2"), **common, batch_size=2, grad_accum=1, nproc_per_node=2
    )
    s1 = train_lora(**bind(train_lora, single))
    s2 = train_lora(**bind(train_lora, double))  # relaunches itself under torchrun with 2 ranks
    assert s2["processes"] == 2 and s1["processes"] == 1
    assert s1["tokens_seen"] == s2["tokens_seen"] and s1["steps"] == s2["steps"] == 4
    a = load_file(tmp_path / "one/adapter/adapter_model.safetensors")
    b = load_file(tmp_path / "two/adapter/adapter_model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    l1, l2 = pd.read_csv(tmp_path / "one/log.csv"), pd.read_csv(tmp_path / "two/log.csv")
    pd.testing.assert_series_equal(l1["train_loss"], l2["train_loss"], atol=1e-4)
