"""Pre-flight cost of a 1,000-point grid: the workflow's one pre-flight job against one process per point.

    .venv/bin/python benchmarks/bench_preflight.py [--model smollm2-135m|llama3-8b|both] [--per-point-samples 3]

Each model is given as a config.json only (the pre-flight builds it on the meta device; no weights, no
hub). Two 1,000-point grids, each checked by `preflight_grid` in a fresh process (imports and meta
model included, as the workflow's job runs it):

- sweep: r (10 values) x lora_alpha (10) x seeds (10) on qv: 10 distinct adapter shapes;
- shapes: r (50 values) x target presets (qv, attn, mlp, all-linear) x methods (lora, dora, rslora,
  qlora, lora_8bit): 1,000 distinct shapes, every one wrapped by peft (the worst case).

Next to it, the old way measured in the same run: one process per point (`preflight_run`), timed on a
few points and multiplied by 1,000. Prints seconds per point.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CONFIGS = {
    # SmolLM2-135M-Instruct, the default base model
    "smollm2-135m": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 49152,
        "hidden_size": 576,
        "intermediate_size": 1536,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
        "rms_norm_eps": 1e-5,
    },
    # Meta-Llama-3-8B
    "llama3-8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 128256,
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
    },
}
PRESETS = ["qv", "attn", "mlp", "all-linear"]
METHODS = ["lora", "dora", "rslora", "qlora", "lora_8bit"]


def sweep_grid() -> dict:
    return {
        f"r{r}_a{a}_qv_s{s}": {"method": "lora", "r": r, "lora_alpha": float(a), "target_modules": "qv"}
        for r in range(1, 11)
        for a in range(4, 44, 4)
        for s in range(10)
    }


def shapes_grid() -> dict:
    return {
        f"r{r}_a16_{t}_{m}": {"method": m, "r": r, "lora_alpha": 16.0, "target_modules": t}
        for r in range(1, 51)
        for t in PRESETS
        for m in METHODS
    }


GRID_JOB = """
import json, sys, time
start = time.perf_counter()
from loraflow.train.grid_check import PreflightSettings
from loraflow.train.preflight import preflight_grid
model_dir, runs_file, out = sys.argv[1:4]
runs = json.load(open(runs_file))
paths = [f"{out}/runs/{r}/preflight.json" for r in runs]
preflight_grid(model_dir, paths, runs, PreflightSettings(batch_size=8, max_length=512),
               out_csv=f"{out}/preflight.csv")
print(json.dumps({"seconds": time.perf_counter() - start}))
"""

POINT_JOB = """
import json, sys, time
start = time.perf_counter()
from loraflow.train.grid_check import PreflightSettings
from loraflow.train.preflight import preflight_run
model_dir, out = sys.argv[1:3]
preflight_run(model_dir, out, "r8_a16_qv", 8, 16.0, "qv", settings=PreflightSettings(batch_size=8, max_length=512))
print(json.dumps({"seconds": time.perf_counter() - start}))
"""


def run(code: str, *args: str) -> float:
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-3000:])
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=[*CONFIGS, "both"], default="both")
    ap.add_argument(
        "--per-point-samples", type=int, default=3, help="processes timed for the one-process-per-point figure"
    )
    args = ap.parse_args()
    models = list(CONFIGS) if args.model == "both" else [args.model]
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            model_dir = Path(tmp) / name
            model_dir.mkdir()
            (model_dir / "config.json").write_text(json.dumps(CONFIGS[name]))
            for grid_name, grid in (("sweep", sweep_grid()), ("shapes", shapes_grid())):
                runs_file = Path(tmp) / f"{name}-{grid_name}.json"
                runs_file.write_text(json.dumps(grid))
                seconds = run(GRID_JOB, str(model_dir), str(runs_file), str(Path(tmp) / f"out-{name}-{grid_name}"))
                print(
                    f"{name:13s} {grid_name:6s} grid, {len(grid)} points, one job: {seconds:7.1f} s = "
                    f"{seconds / len(grid):.3f} s/point",
                    flush=True,
                )
            per_point = [
                run(POINT_JOB, str(model_dir), str(Path(tmp) / f"{name}-point{i}.json"))
                for i in range(args.per_point_samples)
            ]
            mean = sum(per_point) / len(per_point)
            print(
                f"{name:13s} one process per point (old way, mean of {len(per_point)}): {mean:.2f} s/point "
                f"= {mean * 1000 / 60:.0f} min for 1,000 points",
                flush=True,
            )


if __name__ == "__main__":
    main()
