"""scripts/gpu_check.sh is meant for a GPU machine; its --cpu-smoke path runs the same three steps
(default pipeline in bf16, a 2-point sweep of a Qwen2.5-shaped model, the MFU benchmark) with 2-layer
models on the CPU, so the script cannot rot unnoticed."""

import importlib.util
import json
import os
import subprocess

import pytest

from conftest import REPO


def gpu_check_module():
    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_gpu_check_cpu_smoke_runs_the_default_pipeline_and_mfu(tmp_path):
    """The shell wrapper, step 1 (a real Snakemake run in bf16) and step 3, end to end."""
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": os.environ.get("PYTHON", str(REPO / ".venv" / "bin" / "python"))}
    if not os.path.exists(env["PYTHON"]):
        import sys

        env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--steps", "default,mfu", "--work", str(tmp_path / "work"),
                           "--budget-s", "900"], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert report["smoke"] and {report[s]["status"] for s in ("default", "mfu")} == {"ok"} and "sweep" not in report
    for step, runs in (("default", {"r4_a16_qv"}),):
        assert set(report[step]["runs"]) == runs and report[step]["base_eval_precision"] == "bf16"
        for run in report[step]["runs"].values():
            assert run["train_precision"] == run["eval_precision"] == "bf16" and run["tokens_per_s"] > 0 and run["peak_memory_mb"] > 0
            assert run["preflight_est_memory_mb"] > 0
        merged = [r for r in report[step]["runs"].values() if "merge_passed" in r]
        assert merged and all(r["merge_passed"] and r["merge_precision"] == "bf16" for r in merged)
    assert [m["model"] for m in report["mfu"]["results"]] == ["SmolLM2-135M (default)", "Llama 1x2048 (config)"]
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "GPU check summary" in log and "merge PASS (bf16)" in log and "tok/s" in log and "MFU" in log
    assert (tmp_path / "out" / "default_comparison.md").is_file()


def test_gpu_check_sweep_step_builds_a_qwen_model_and_a_2_point_bf16_grid(tmp_path, monkeypatch):
    """Step 2 without running Snakemake: the model it builds and the config it runs."""
    gc = gpu_check_module()
    seen = {}
    monkeypatch.setattr(gc, "run_pipeline", lambda name, config, work, out, deadline: seen.update(name=name, config=config) or {"status": "ok"})
    assert gc.step_sweep(tmp_path / "work", tmp_path, True, "qwen2.5-0.5b", 0.0)["model"] == "qwen2.5-0.5b"
    config = seen["config"]
    model_config = json.loads((tmp_path / "work" / "qwen2.5-0.5b-random" / "config.json").read_text())
    assert model_config["architectures"] == ["Qwen2ForCausalLM"] and model_config["num_key_value_heads"] == 2
    assert config["base_model"] == {"source": "local", "path": str(tmp_path / "work" / "qwen2.5-0.5b-random")}
    assert config["grid"]["r"] == [8, 16] and len(config["grid"]["lora_alpha"]) == len(config["grid"]["target_modules"]) == 1
    assert config["train"]["precision"] == "bf16"
    from loraflow.config import validate_config

    validate_config(json.loads(json.dumps(config)))  # a valid workflow config (unknown keys are errors)


def test_gpu_check_prepare_carries_what_the_gpu_image_lacks():
    missing = gpu_check_module().missing_packages()
    assert {"snakemake", "jsonschema", "rouge-score", "nltk"} <= set(missing)
    assert not {"torch", "transformers", "peft", "pandas", "numpy"} & set(missing)  # in the image already
    assert not {"datasets", "gguf", "bitsandbytes"} & set(missing)  # optional inputs only
