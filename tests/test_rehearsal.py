"""Scale rehearsal on the CPU: a second architecture at a realistic shape (Qwen2.5-0.5B: 494M
parameters, 24 layers, GQA 14/2 heads, tied 151936-token embeddings, rope theta 1e6; random weights,
local tokenizer) runs the whole pipeline in bf16 through the real Snakemake workflow: preflight,
train a few steps, evaluate, merge with both checks, table. Kept short by loraflow.model.shapes.rehearsal_config."""

import json
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml

from helpers import REPO

pytestmark = pytest.mark.slow


def test_qwen05_shape_runs_the_whole_pipeline_in_bf16(qwen05_model, tmp_path):
    from loraflow.model.shapes import PUBLISHED_PARAMS, rehearsal_config

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(rehearsal_config(qwen05_model)))
    start = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "-s",
            str(REPO / "Snakefile"),
            "--directory",
            str(tmp_path),
            "--cores",
            "1",
            "--resources",
            "gpu=1",
        ],
        capture_output=True,
        text=True,
        env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")},
    )
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-6000:]
    res = tmp_path / "results"
    run = res / "runs" / "r8_a16_qv"
    stats = json.loads((run / "train_stats.json").read_text())
    assert stats["precision"] == "bf16" and stats["steps"] == 2
    assert stats["total_params"] == PUBLISHED_PARAMS["qwen2.5-0.5b"] + stats["trainable_params"]
    assert stats["trainable_params"] == 24 * 8 * (
        (896 + 896) + (896 + 128)
    )  # r x (in + out) of q_proj and v_proj per layer
    preflight = pd.read_csv(res / "preflight.csv").set_index("run").loc["r8_a16_qv"]  # the grid's preflight table
    assert (preflight["trainable_params"], preflight["total_params"]) == (
        stats["trainable_params"],
        stats["total_params"],
    )
    for eval_json in (run / "eval.json", res / "base" / "eval.json"):
        assert json.loads(eval_json.read_text())["precision"] == "bf16"
    check = json.loads((run / "merge_check.json").read_text())
    assert check["passed"] and check["precision"] == "bf16" and check["max_abs_logit_diff"] <= check["tolerance"]
    assert check["deploy_max_abs_logit_diff"] <= check["deploy_tolerance"]
    merged = run / "merged" / "model.safetensors"
    assert merged.stat().st_size < 2.05 * PUBLISHED_PARAMS["qwen2.5-0.5b"]  # saved in bf16 (2 bytes a weight)
    table = pd.read_csv(res / "comparison.csv")
    assert list(table["run"]) == ["base", "r8_a16_qv"]
    merges = pd.read_csv(res / "merges.csv").set_index("run")  # merge.runs best: merged after the table, listed here
    assert bool(merges.loc["r8_a16_qv", "passed"]) and merges.loc["r8_a16_qv", "precision"] == "bf16"
    # the pre-flight knows the rows (token cache meta): its estimate is the train stage's, within 25 % of the
    # measured peak
    assert stats["preflight_est_memory_mb"] == pytest.approx(stats["est_memory_mb"], rel=1e-9)
    assert abs(stats["preflight_est_memory_mb"] / stats["peak_memory_mb"] - 1) <= 0.25
    cpu = {
        p.parent.name + "/" + p.stem: pd.read_csv(p, sep="\t")["cpu_time"].iloc[0]
        for p in (res / "benchmarks").rglob("*.tsv")
    }
    print(
        f"\nrehearsal: {wall:.0f} s wall, {sum(cpu.values()):.0f} s CPU over {len(cpu)} jobs (train "
        f"{cpu.get('train/r8_a16_qv', float('nan')):.0f}, evaluate {cpu.get('evaluate/r8_a16_qv', float('nan')):.0f}, "
        f"merge {cpu.get('merge/r8_a16_qv', float('nan')):.0f}); train {stats['tokens_per_s']:.2f} tokens/s, peak "
        f"memory {stats['peak_memory_mb']:.0f} MB measured vs {stats['preflight_est_memory_mb']:.0f} MB estimated; "
        f"merge max |Δlogit| {check['max_abs_logit_diff']:.2g} in fp32, {check['deploy_max_abs_logit_diff']:.2g} in "
        f"bf16 (tolerance {check['deploy_tolerance']:.2g})"
    )
