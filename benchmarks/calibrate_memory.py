"""Calibrate and check preflight.estimate_memory_mb against the measured peak of real train jobs.

Each job runs the train stage (loraflow.tasks.causal_lm.train.train_lora, the code Snakemake runs) in a fresh process
for a few optimizer steps with a final validation pass, and reports the process's peak RSS (CPU) or
max allocated memory (GPU) next to the estimate and its terms. Jobs:

  default   the default run's settings (config.yaml: batch 8, max_length 512, precision auto) on the
            default run's token cache (--default-results, e.g. results/ of a default run)
  medical   the LLaMA-Factory side-by-side job (batch 4 x 4, max_length 512) on its token cache
            (--medical-results, the results dir of a loraflow_config.yaml run)
  qwen05b-{fp32,bf16}  a random Qwen2ForCausalLM of Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14
            heads, 2 KV heads, intermediate 4864, vocab 151936, tied embeddings) built once under
            --qwen-dir, trained on synthetic rows (short max_length, small batch), in fp32 and in bf16
  targets-{qv,attn,mlp,all-linear}  the default job at r=16 with these target modules (the adapted-input term)

Prints measured MB, estimated MB, the error in %, and the terms. --fit prints the per-token-layer
activation coefficients and process size that a least-squares fit of these points suggests.

    .venv/bin/python benchmarks/calibrate_memory.py [--jobs default,medical,qwen05b-fp32,qwen05b-bf16]
        [--default-results results] [--medical-results lfbench/results] [--qwen-dir qwen05b-shape]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

QWEN = dict(
    hidden_size=896,
    num_hidden_layers=24,
    num_attention_heads=14,
    num_key_value_heads=2,
    intermediate_size=4864,
    vocab_size=151936,
    tie_word_embeddings=True,
    max_position_embeddings=4096,
)


def build_qwen(out: Path, tokenizer_from: Path) -> Path:
    """A randomly initialised Qwen2ForCausalLM of Qwen2.5-0.5B's shape (fp32 safetensors) with a tokenizer copied from
    `tokenizer_from` (any tokenizer whose ids fit the vocabulary)."""
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**QWEN))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for f in tokenizer_from.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens", "vocab", "merges", "chat_template")):
            shutil.copy(f, tmp / f.name)
    tmp.rename(out)
    return out


def synthetic_cache(model_dir: Path, out: Path, rows: int, length: int, seed: int = 0) -> Path:
    """A token cache (npz + meta.json, as the tokenize stage writes it) of random rows of about `length` tokens."""
    import numpy as np

    from loraflow.data.tokenization import tokenizer_digest
    from loraflow.io import write_json

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "tokenizer_sha256": tokenizer_digest(str(model_dir)),
        "data_sha256": "synthetic",
        "max_length": length,
        "splits": {},
    }
    for split, n in (("train", rows), ("val", max(4, rows // 8)), ("test", max(4, rows // 8))):
        lengths = rng.integers(int(0.7 * length), length + 1, size=n)
        ids = rng.integers(10, 40000, size=int(lengths.sum())).astype(np.int32)
        mask = np.zeros(len(ids), dtype=np.uint8)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        for a, b in zip(offsets[:-1], offsets[1:]):
            mask[a + (b - a) // 2 : b] = 1  # second half of each row supervised
        with open(out / f"{split}.npz", "wb") as fh:
            np.savez(fh, input_ids=ids, labels_mask=mask, offsets=offsets.astype(np.int64))
        meta["splits"][split] = {"examples": n, "tokens": int(len(ids)), "supervised_tokens": int(mask.sum())}
    write_json(out / "meta.json", meta)
    return out


CHILD = r"""
import json, sys
from loraflow.binding import bind
from loraflow.tasks.causal_lm.train import train_lora
kw = json.loads(sys.argv[1])
stats = train_lora(**bind(train_lora, kw))
keys = ("peak_memory_mb", "est_memory_mb", "precision", "tokens_per_forward", "packing", "gradient_checkpointing",
        "train_time_s", "tokens_seen")
print("RESULT " + json.dumps({k: stats[k] for k in keys}))
"""


def measure(model_dir: Path, tokens: Path, steps: int, **train) -> dict:
    out = Path(tempfile.mkdtemp(prefix="loraflow-calib-"))
    kw = dict(
        model_dir=str(model_dir),
        train_path=str(tokens / "train.npz"),
        val_path=str(tokens / "val.npz"),
        tokens_meta=str(tokens / "meta.json"),
        out_adapter=str(out / "adapter"),
        out_log=str(out / "log.csv"),
        out_stats=str(out / "stats.json"),
        r=8,
        lora_alpha=16,
        target_modules="qv",
        max_steps=steps,
        eval_every=0,
        checkpoint_every=0,
    )
    kw.update(train)
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(kw)], capture_output=True, text=True, env=env)
    shutil.rmtree(out, ignore_errors=True)
    line = next((x for x in proc.stdout.splitlines() if x.startswith("RESULT ")), None)
    if proc.returncode or line is None:
        raise SystemExit(f"calibration job failed:\n{proc.stderr[-3000:]}")
    return json.loads(line[len("RESULT ") :])


def terms_of(model_dir: Path, tokens: Path, **train) -> dict:
    """The estimate's terms for these settings, computed here exactly as the train stage does (a forward pass
    bounded by the longest train rows, model.batching.pass_bound)."""
    import torch
    from peft import get_peft_model

    from loraflow.io import read_json
    from loraflow.model.batching import forward_tokens, pass_bound
    from loraflow.model.device import pick_device
    from loraflow.model.memory import TrainJob, estimate_memory_mb, weights_file_info
    from loraflow.model.methods import lora_config
    from loraflow.train.grid_check import meta_model

    model = meta_model(str(model_dir))
    config = lora_config(
        "lora", train.get("r", 8), train.get("lora_alpha", 16), train.get("target_modules", "qv"), model=model
    )
    with torch.device("meta"):
        model = get_peft_model(model, config)  # wrapped, as the pre-flight and the train stage estimate it
    trainable, total = model.get_nb_trainable_parameters()
    meta = read_json(tokens / "meta.json")
    batch, max_length = train["batch_size"], meta["max_length"]
    per = forward_tokens(
        train.get("tokens_per_forward", 0), train.get("packing", True), batch, max_length, pick_device()
    )
    terms: dict = {}
    job = TrainJob(
        batch,
        max_length,
        precision=train.get("precision", "auto"),
        tokens_per_forward=pass_bound(per, batch, max_length, meta["splits"]["train"].get("longest")),
        train_rows=meta["splits"]["train"]["examples"],
        weights_file=weights_file_info(model_dir),
    )
    est = estimate_memory_mb(model, trainable, total, job, terms=terms)
    return {"estimate": est, "terms": terms}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", default="default,medical,qwen05b-fp32,qwen05b-bf16")
    ap.add_argument("--default-results", default=str(REPO / "results"))
    ap.add_argument("--medical-results", default="lfbench/results")
    ap.add_argument("--qwen-dir", default=str(Path(tempfile.gettempdir()) / "loraflow-qwen05b-shape"))
    ap.add_argument("--qwen-max-length", type=int, default=128)
    ap.add_argument("--qwen-batch-size", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument(
        "--extra", default="", help="JSON of extra train_lora arguments for every job (e.g. '{\"packing\": false}')"
    )
    args = ap.parse_args()
    extra = json.loads(args.extra) if args.extra else {}

    rows = []
    for job in args.jobs.split(","):
        if job == "default":
            res = Path(args.default_results)
            model_dir, tokens = res / "base_model", res / "tokens"
            train = dict(batch_size=8, grad_accum=1, learning_rate=1e-3, lora_dropout=0.05, precision="auto")
        elif job == "medical":
            res = Path(args.medical_results)
            model_dir, tokens = res / "base_model", res / "tokens"
            train = dict(batch_size=4, grad_accum=4, learning_rate=2e-4, lora_dropout=0.0, precision="auto")
        elif job.startswith("targets-"):  # the default job at r=16 on other targets (attn, mlp, all-linear, ...)
            res = Path(args.default_results)
            model_dir, tokens = res / "base_model", res / "tokens"
            train = dict(batch_size=8, learning_rate=1e-3, lora_dropout=0.05, precision="auto", r=16, lora_alpha=32)
            train["target_modules"] = job.split("-", 1)[1]
        elif job.startswith("qwen05b-"):
            donor = next(
                p
                for p in (Path(args.default_results) / "base_model", Path(args.medical_results) / "base_model")
                if p.is_dir()
            )
            model_dir = build_qwen(Path(args.qwen_dir), donor)
            tokens = synthetic_cache(
                model_dir, Path(args.qwen_dir + f"-tokens-{args.qwen_max_length}"), 32, args.qwen_max_length
            )
            train = dict(
                batch_size=args.qwen_batch_size,
                grad_accum=1,
                learning_rate=1e-4,
                lora_dropout=0.0,
                precision=job.split("-", 1)[1],
            )
        else:
            raise SystemExit(f"unknown job {job}")
        if not (tokens / "meta.json").is_file():
            print(f"{job}: no token cache at {tokens}: skipped")
            continue
        train.update(extra)
        got = measure(model_dir, tokens, args.steps, **train)
        est = terms_of(model_dir, tokens, **train)
        err = 100 * (est["estimate"] / got["peak_memory_mb"] - 1)
        rows.append({"job": job, **got, "estimate_mb": est["estimate"], "error_pct": err, "terms": est["terms"]})
        print(
            f"{job:14s} measured {got['peak_memory_mb']:8,.0f} MB  estimate {est['estimate']:8,.0f} MB  ({err:+.1f} %) "
            f" {got['precision']}, {got['tokens_per_forward'] or 'micro-batch'} tokens/pass  terms "
            + " ".join(f"{k}={v:,.0f}" if isinstance(v, float) else f"{k}={v}" for k, v in est["terms"].items()),
            flush=True,
        )
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
