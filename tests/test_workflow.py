"""The whole Snakemake workflow on the tiny model: outputs, table, and what a rerun redoes."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO

pytestmark = pytest.mark.slow
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]


def tiny_config(model_dir: Path) -> dict:
    return {
        "base_model": {"source": "local", "path": str(model_dir)},
        "data": {"builtin_rows": 240},
        "torch_threads": 1,
        "grid": {"r": [2, 4], "lora_alpha": [8], "target_modules": ["qv"]},
        "train": {"max_steps": 4, "batch_size": 4, "eval_every": 2, "learning_rate": 0.01},
        "evaluate": {"max_new_tokens": 8, "batch_size": 8, "max_samples": 12},
    }


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([*SNAKEMAKE, "--directory", str(workdir), *args], capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir: Path) -> dict[str, int]:
    """{rule: count} that a dry run would execute."""
    out = snakemake(workdir, "-n", "--quiet", "rules").stdout
    jobs = {}
    for line in out.splitlines():
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if m and m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


def write_config(workdir: Path, config: dict) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model):
    workdir = tmp_path_factory.mktemp("wf")
    write_config(workdir, tiny_config(tiny_model))
    proc = snakemake(workdir, "--cores", "1", "--resources", "gpu=1")
    return workdir, proc


def test_pipeline_outputs_and_table(finished_run):
    workdir, proc = finished_run
    res = workdir / "results"
    for run in ("r2_a8_qv", "r4_a8_qv"):
        d = res / "runs" / run
        assert (d / "adapter" / "adapter_config.json").is_file()
        assert (d / "adapter" / "adapter_model.safetensors").is_file()
        assert json.loads((d / "merge_check.json").read_text())["passed"]
        assert (d / "merged" / "model.safetensors").is_file()
        log = pd.read_csv(d / "train_log.csv")
        assert list(log["step"]) == [1, 2, 3, 4] and log["eval_loss"].notna().sum() == 2
        samples = [json.loads(line) for line in (d / "samples.jsonl").read_text().splitlines()]
        assert len(samples) == 12 and {"prompt", "reference", "base_answer", "tuned_answer"} <= set(samples[0])
    stats = json.loads((res / "data" / "split_stats.json").read_text())
    assert stats["conserved"] and stats["rows_in"] == 240 == stats["train"] + stats["val"] + stats["test"] + stats["rejected"]
    table = pd.read_csv(res / "comparison.csv")
    assert list(table["run"]) == ["base", "r2_a8_qv", "r4_a8_qv"]
    assert (table["best"].fillna("") != "").sum() == 1
    assert table.loc[1, "trainable_params"] * 2 == table.loc[2, "trainable_params"]
    assert (table.loc[1:, "merge_check"] == "pass").all()
    md = (res / "comparison.md").read_text()
    assert "| base |" in md and "Best run by `rougeL`" in md
    assert "Best run by `rougeL`" in proc.stdout + proc.stderr  # the table is printed at the end
    for rule in ("base_model", "clean", "tokenize", "table"):
        assert (res / "logs" / f"{rule}.log").is_file() and (res / "benchmarks" / f"{rule}.tsv").is_file()


def test_rerun_has_nothing_to_do(finished_run):
    workdir, _ = finished_run
    assert planned_jobs(workdir) == {}


def test_changing_one_grid_value_reruns_only_that_point(finished_run, tiny_model):
    workdir, _ = finished_run
    config = tiny_config(tiny_model)
    config["grid"]["r"] = [2, 8]
    write_config(workdir, config)
    try:
        assert planned_jobs(workdir) == {"preflight": 1, "preflight_table": 1, "train": 1, "evaluate": 1, "merge": 1,
                                         "rank_analysis": 1, "table": 1, "report_figures": 1, "all": 1}
        config["train"]["learning_rate"] = 0.02  # a training hyperparameter: every point, no data stage
        write_config(workdir, config)
        # r8 has not run yet (dry runs only): its preflight is still pending; r2 retrains, no data stage reruns
        assert planned_jobs(workdir) == {"preflight": 1, "preflight_table": 1, "train": 2, "evaluate": 2, "merge": 2,
                                         "rank_analysis": 2, "table": 1, "report_figures": 1, "all": 1}
        config = tiny_config(tiny_model)
        config["clean"] = {"min_answer_chars": 3}  # a cleaning rule: everything downstream of clean
        write_config(workdir, config)
        assert planned_jobs(workdir) == {"clean": 1, "format": 1, "split": 1, "tokenize": 1, "evaluate_base": 1,
                                         "train": 2, "evaluate": 2, "merge": 2, "rank_analysis": 2, "table": 1, "report_figures": 1,
                                         "all": 1}
    finally:
        write_config(workdir, tiny_config(tiny_model))


def test_bad_config_fails_before_any_job(tmp_path, tiny_model):
    config = tiny_config(tiny_model)
    config["train"]["learnig_rate"] = 0.1
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    assert "learnig_rate" in proc.stdout + proc.stderr
    assert not (tmp_path / "results").exists()


def test_missing_target_module_stops_before_training(tmp_path, tiny_model):
    config = tiny_config(tiny_model)
    config["grid"]["target_modules"] = ["qv", ["q_proj", "c_attn"]]
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--cores", "1", check=False)
    assert proc.returncode != 0
    logs = "".join(p.read_text() for p in (tmp_path / "results" / "logs" / "preflight").glob("*.log"))
    assert "c_attn not found in LlamaForCausalLM; its linear layers are: down_proj, gate_proj" in logs
    assert not list((tmp_path / "results").glob("runs/*/train_stats.json"))  # no training started


TIMING = ["train_time_s", "peak_memory_mb", "tok_s_base", "tok_s_adapter", "tok_s_merged"]  # measured, not computed


def assert_same_results(a: Path, b: Path) -> None:
    """Two finished tiny runs agree: split files, adapters (byte for byte), table (timing aside)."""
    for name in ("train.jsonl", "val.jsonl", "test.jsonl", "rejected.jsonl"):
        assert (a / "results/data" / name).read_bytes() == (b / "results/data" / name).read_bytes()
    for run in ("r2_a8_qv", "r4_a8_qv"):
        adapter = f"results/runs/{run}/adapter/adapter_model.safetensors"
        assert (a / adapter).read_bytes() == (b / adapter).read_bytes()
    t1 = pd.read_csv(a / "results/comparison.csv").drop(columns=TIMING)
    t2 = pd.read_csv(b / "results/comparison.csv").drop(columns=TIMING)
    pd.testing.assert_frame_equal(t1, t2)


def test_two_runs_in_parallel_give_identical_results(finished_run, tiny_model, tmp_path):
    """A second complete run, with --cores 2 and no gpu limit (two grid points at once), reproduces
    the first (--cores 1) exactly: split files, adapters and the table (timing columns aside)."""
    first, _ = finished_run
    write_config(tmp_path, tiny_config(tiny_model))
    snakemake(tmp_path, "--cores", "2")
    assert_same_results(first, tmp_path)


def test_keep_going_tabulates_the_other_runs_and_lists_the_failure(tiny_model, tmp_path):
    config = tiny_config(tiny_model)
    config["grid"]["target_modules"] = ["qv", ["input_layernorm"]]  # exists, but LoRA cannot wrap a norm
    write_config(tmp_path, config)
    proc = snakemake(tmp_path, "--cores", "1", "--keep-going", check=False)
    assert proc.returncode != 0
    table = pd.read_csv(tmp_path / "results/comparison.csv")
    ok = table[table["status"] == "ok"]["run"].tolist()
    assert ok == ["base", "r2_a8_qv", "r4_a8_qv"]
    failed = table[table["status"] != "ok"]
    assert sorted(failed["run"]) == ["r2_a8_input_layernorm", "r4_a8_input_layernorm"]
    assert all(s.startswith("FAILED in preflight") for s in failed["status"])
    assert "2 run(s) did not finish" in (tmp_path / "results/comparison.md").read_text()


def test_a_combination_reuses_trained_adapters_and_gets_a_row(finished_run, tiny_model, tmp_path):
    """Adding a `combine` entry to a finished sweep trains nothing: it combines, evaluates, merges and
    analyses the combination, and the table gets its row."""
    import shutil

    first, _ = finished_run
    shutil.copytree(first, tmp_path, dirs_exist_ok=True)
    cfg = tiny_config(tiny_model)
    cfg["combine"] = [{"name": "mix", "adapters": ["r2_a8_qv", "r4_a8_qv"], "weights": [0.5, 0.5]}]
    write_config(tmp_path, cfg)
    jobs = planned_jobs(tmp_path)
    assert "train" not in jobs and "preflight" not in jobs
    assert {k: jobs.get(k) for k in ("combine", "evaluate", "merge", "rank_analysis", "table")} == dict.fromkeys(
        ("combine", "evaluate", "merge", "rank_analysis", "table"), 1)
    snakemake(tmp_path, "--cores", "1", "--resources", "gpu=1")
    table = pd.read_csv(tmp_path / "results/comparison.csv").set_index("run")
    assert list(table.index) == ["base", "r2_a8_qv", "r4_a8_qv", "mix"]
    assert table.loc["mix", "method"] == "combine" and table.loc["mix", "merge_check"] == "pass"
    assert table.loc["mix", "targets"] == "r2_a8_qv+r4_a8_qv" and table.loc["mix", "eff_rank"] <= 6
