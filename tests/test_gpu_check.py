"""scripts/gpu_check.{sh,py}, the GPU check a user runs on a CUDA machine: the default pipeline in bf16, a
2-point sweep of a Qwen2.5-shaped model and the MFU benchmark. On a CPU its logic is tested directly and its
--cpu-smoke path runs the steps end to end with 2-layer models, so the script cannot rot unnoticed; on a
CUDA machine the MFU step runs for real."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

from helpers import REPO

CUDA = torch.cuda.is_available()


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_wrapper(tmp_path, *args: str) -> subprocess.CompletedProcess:
    python = os.environ.get("PYTHON", str(REPO / ".venv" / "bin" / "python"))
    env = {**os.environ, "PYTHON": python if os.path.exists(python) else sys.executable}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_check.sh"), "--out", str(tmp_path / "out"), *args],
        capture_output=True,
        text=True,
        env=env,
    )


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_the_default_pipeline_and_mfu(tmp_path):
    """The shell wrapper, step 1 (a real Snakemake run in bf16) and step 3, end to end."""
    proc = run_wrapper(
        tmp_path, "--cpu-smoke", "--steps", "default,mfu", "--work", str(tmp_path / "work"), "--budget-s", "1800"
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["smoke"] and {report[s]["status"] for s in ("default", "mfu")} == {"ok"} and "sweep" not in report
    for step, runs in (("default", {"r4_a16_qv"}),):
        assert set(report[step]["runs"]) == runs and report[step]["base_eval_precision"] == "bf16"
        for run in report[step]["runs"].values():
            assert (
                run["train_precision"] == run["eval_precision"] == "bf16"
                and run["tokens_per_s"] > 0
                and run["peak_memory_mb"] > 0
            )
            assert run["preflight_est_memory_mb"] > 0
        merged = [r for r in report[step]["runs"].values() if "merge_passed" in r]
        assert merged and all(r["merge_passed"] and r["merge_precision"] == "bf16" for r in merged)
    assert [m["model"] for m in report["mfu"]["results"]] == ["SmolLM2-135M (default)", "Llama 1x2048 (config)"]
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "GPU check summary" in log and "merge PASS (bf16)" in log and "tok/s" in log and "MFU" in log
    assert (tmp_path / "out" / "default_comparison.md").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not CUDA, reason="no CUDA device: the MFU step is run on a GPU")
def test_gpu_check_mfu_step_on_the_gpu(tmp_path):
    proc = run_wrapper(tmp_path, "--steps", "mfu", "--budget-s", "300")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["environment"]["gpu"] == torch.cuda.get_device_name() and report["mfu"]["status"] == "ok"
    for m in report["mfu"]["results"]:
        assert (
            m["device"].startswith("cuda")
            and m["dtype"] == "torch.bfloat16"
            and m["tokens_per_s"] > 0
            and m["peak_memory_gb"] > 0
        )


@pytest.mark.skipif(CUDA, reason="checks what happens where there is no CUDA device")
def test_gpu_check_without_a_gpu_stops_and_says_how_to_try_it(tmp_path):
    proc = run_wrapper(tmp_path, "--steps", "mfu")
    assert proc.returncode != 0
    assert "no CUDA device visible to torch (use --cpu-smoke" in proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "gpu_check.json").exists()  # nothing ran


def test_gpu_check_shares_its_budget_among_the_steps_asked_for():
    gc = gpu_check_module()
    ends = gc.deadlines(["default", "sweep", "mfu"], 100.0, 1000.0)
    assert list(ends) == ["default", "sweep", "mfu"] and ends["mfu"] == pytest.approx(1100.0)
    assert ends["default"] == pytest.approx(100 + 1000 * gc.SHARE["default"])
    ends = gc.deadlines(["mfu", "default"], 0.0, 900.0)  # run in the fixed order; the shares are renormalised
    assert list(ends) == ["default", "mfu"] and ends["mfu"] == pytest.approx(900.0)
    assert ends["default"] == pytest.approx(900 * gc.SHARE["default"] / (gc.SHARE["default"] + gc.SHARE["mfu"]))
    for bad in (["peer"], [""], []):
        with pytest.raises(SystemExit, match="--steps takes"):
            gc.deadlines(bad, 0.0, 60.0)


def test_gpu_check_fails_on_a_failed_step_or_merge_check():
    gc = gpu_check_module()
    ok_run = {"merge_passed": True}
    report = {"default": {"status": "ok", "runs": {"r4": ok_run, "r8": {}}}, "mfu": {"status": "ok"}}
    assert gc.failures(report) == []
    report["sweep"] = {"status": "timed out", "runs": {"r8": {"merge_passed": False}}}
    report["mfu"] = {"status": "exit 1: CUDA out of memory"}
    assert gc.failures(report) == ["sweep", "mfu", "sweep/r8 merge"]


def test_gpu_check_collects_the_figures_of_a_finished_run(tmp_path):
    run = tmp_path / "runs" / "r8_a16_qv"
    run.mkdir(parents=True)
    (run / "train_stats.json").write_text(
        json.dumps(
            {
                "precision": "bf16",
                "tokens_per_s": 1234.56,
                "train_time_s": 12.34,
                "peak_memory_mb": 900.4,
                "preflight_est_memory_mb": 950.0,
            }
        )
    )
    (run / "eval.json").write_text(
        json.dumps({"precision": "bf16", "eval_loss": 1.23456, "rougeL": 30.123, "generation_tokens_per_s": 88.88})
    )
    (run / "merge_check.json").write_text(json.dumps({"passed": False, "precision": "bf16", "max_abs_logit_diff": 0.5}))
    (tmp_path / "runs" / "r16_a16_qv").mkdir()  # not trained (yet)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "eval.json").write_text(json.dumps({"precision": "bf16"}))
    got = gpu_check_module().collect(tmp_path)
    assert got["base_eval_precision"] == "bf16" and got["runs"]["r16_a16_qv"] == {}
    row = got["runs"]["r8_a16_qv"]
    assert (row["tokens_per_s"], row["peak_memory_mb"], row["test_loss"], row["rougeL"]) == (1234.6, 900, 1.2346, 30.12)
    assert (
        row["merge_passed"] is False and row["merge_fp32_max_abs_diff"] == 0.5 and row["merge_deploy_tolerance"] is None
    )


def test_gpu_check_default_step_runs_config_yaml_in_bf16(tmp_path, monkeypatch):
    """Step 1 without running Snakemake: config.yaml with train.precision bf16 on the model it built."""
    import yaml

    gc = gpu_check_module()
    seen = {}
    monkeypatch.setattr(
        gc,
        "run_pipeline",
        lambda name, config, work, out, deadline: seen.update(name=name, config=config) or {"status": "ok"},
    )
    result = gc.step_default(tmp_path / "work", tmp_path, True, 0.0)
    assert seen["name"] == "default" and result["status"] == "ok" and "random weights" in result["model"]
    config, default = seen["config"], yaml.safe_load((REPO / "config.yaml").read_text())
    assert config["train"]["precision"] == "bf16" and config["base_model"]["path"] == str(
        tmp_path / "work" / "smollm2-random"
    )
    assert config["grid"]["r"] == [4] and config["grid"]["target_modules"] == default["grid"]["target_modules"]
    assert json.loads((tmp_path / "work" / "smollm2-random" / "config.json").read_text())["num_hidden_layers"] == 2
    from loraflow.config import validate_config

    validate_config(json.loads(json.dumps(config)))


def test_gpu_check_sweep_step_builds_a_qwen_model_and_a_2_point_bf16_grid(tmp_path, monkeypatch):
    """Step 2 without running Snakemake: the model it builds and the config it runs."""
    gc = gpu_check_module()
    seen = {}
    monkeypatch.setattr(
        gc,
        "run_pipeline",
        lambda name, config, work, out, deadline: seen.update(name=name, config=config) or {"status": "ok"},
    )
    assert gc.step_sweep(tmp_path / "work", tmp_path, True, "qwen2.5-0.5b", 0.0)["model"] == "qwen2.5-0.5b"
    config = seen["config"]
    model_config = json.loads((tmp_path / "work" / "qwen2.5-0.5b-random" / "config.json").read_text())
    assert model_config["architectures"] == ["Qwen2ForCausalLM"] and model_config["num_key_value_heads"] == 2
    assert config["base_model"] == {"source": "local", "path": str(tmp_path / "work" / "qwen2.5-0.5b-random")}
    assert (
        config["grid"]["r"] == [8, 16]
        and len(config["grid"]["lora_alpha"]) == len(config["grid"]["target_modules"]) == 1
    )
    assert config["train"]["precision"] == "bf16"
    from loraflow.config import validate_config

    validate_config(json.loads(json.dumps(config)))  # a valid workflow config (unknown keys are errors)
