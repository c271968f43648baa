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


def test_gpu_check_peer_pins_llamafactory_at_the_harness_lock(tmp_path):
    """The peer step's wheels: LLaMA-Factory 0.9.5 and the versions of the harness's lock, not the image's."""
    lock = tmp_path / "requirements-lock.txt"
    lock.write_text("# a comment\ntransformers==5.6.0\npeft==0.18.1\naccelerate==1.11.0\ntrl==0.24.0\ndatasets==4.0.0\ndill==0.3.8\n"
                    "multiprocess==0.70.16\nfire==0.7.1\ntokenizers==0.22.2\nhuggingface_hub==1.33.0\nregex==2026.11.15\nfsspec==2025.3.0\ntermcolor==3.3.0\nomegaconf==2.4.0\nrouge-chinese==1.0.3\njieba==0.42.1\n"
                    "gradio==5.1.0\n")
    pins = gpu_check_module().peer_pins(tmp_path)
    assert pins["llamafactory"] == "0.9.5" and pins["transformers"] == "5.6.0" and pins["rouge-chinese"] == "1.0.3"
    assert "gradio" not in pins  # the web UI is not carried
    (tmp_path / "requirements-lock.txt").write_text("transformers==5.6.0\n")
    with pytest.raises(KeyError):
        gpu_check_module().peer_pins(tmp_path)  # a package the lock does not pin is an error, not a guess


def test_gpu_check_slims_the_pulp_wheel_to_the_linux_x86_64_solver(tmp_path):
    import zipfile

    whl = tmp_path / "pulp-3.3.2-py3-none-any.whl"
    names = ["pulp/__init__.py", "pulp/solverdir/cbc/linux/i64/cbc", "pulp/solverdir/cbc/linux/arm64/cbc", "pulp/solverdir/cbc/win/i64/cbc.exe",
             "pulp/solverdir/cbc/osx/i64/cbc", "pulp-3.3.2.dist-info/RECORD"]
    with zipfile.ZipFile(whl, "w") as z:
        for n in names:
            z.writestr(n, n * 100)
    gpu_check_module().slim_pulp(tmp_path)
    with zipfile.ZipFile(whl) as z:
        assert sorted(z.namelist()) == sorted(["pulp/__init__.py", "pulp/solverdir/cbc/linux/i64/cbc", "pulp-3.3.2.dist-info/RECORD"])
        assert z.read("pulp/solverdir/cbc/linux/i64/cbc") == b"pulp/solverdir/cbc/linux/i64/cbc" * 100


def test_gpu_check_peer_step_runs_the_side_by_side_with_the_carried_llamafactory(tmp_path, monkeypatch):
    """Step 4 without LLaMA-Factory: skipped where nothing was carried; else the benchmark's command line."""
    import sys

    gc = gpu_check_module()
    monkeypatch.setattr(gc, "BUNDLE", tmp_path / "bundle")
    assert gc.step_peer(tmp_path / "work", tmp_path, True, 0.0)["status"].startswith("skipped")
    (tmp_path / "bundle" / "peer" / "wheels").mkdir(parents=True)
    (tmp_path / "work" / "llamafactory-site" / "llamafactory").mkdir(parents=True)  # installed already: no pip
    monkeypatch.setattr(gc, "default_model", lambda work, smoke: ({"source": "local", "path": "/m/smollm2-random"}, "random SmolLM2"))
    seen = []

    class Done:
        returncode, stdout, stderr = 1, "", "boom"

    monkeypatch.setattr(gc.subprocess, "run", lambda cmd, **kw: seen.append(cmd) or Done())
    result = gc.step_peer(tmp_path / "work", tmp_path, False, 0.0)
    assert result["status"].startswith("exit 1") and (tmp_path / "peer.log").read_text() == "boom"
    cmd = seen[0]
    assert cmd[:2] == [sys.executable, str(REPO / "benchmarks" / "bench_vs_llamafactory.py")]
    opt = {k: v for k, v in zip(cmd[2:], cmd[3:]) if k.startswith("--")}
    assert opt["--lf-python"] == sys.executable and opt["--lf-pythonpath"].split(os.pathsep)[0] == str(tmp_path / "work" / "llamafactory-site")
    assert opt["--base-model-dir"] == "/m/smollm2-random" and opt["--eval-precision"] == "fp32" and opt["--trainer-ref"] == "0"
    assert opt["--harness"] == str(tmp_path / "bundle" / "peer" / "harness") and opt["--rows"] == "400"
