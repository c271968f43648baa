"""Train stage: one adapter (or, for method `full`, one fine-tuned model) per grid point.

The loop is plain PyTorch so that no compute is spent on padding (length-grouped dynamic padding)
or on the LM head at positions that are not trained (see modeling.supervised_loss). How the base is
loaded and what is trained depends on the method (LoRA, DoRA, rsLoRA, QLoRA, 8-bit, full; see
methods.py). It checkpoints every `checkpoint_every` steps outside Snakemake's outputs and resumes
from there after a kill, ending with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from loraflow import distributed
from loraflow.checkpoint import Checkpointer
from loraflow.io import atomic_dir, atomic_path, read_json, write_json
from loraflow.methods import QUANTIZED, load_base, make_optimizer, save_trained, trainable_model
from loraflow.modeling import (
    autocast, collate, length_grouped_batches, load_tokenizer, mean_loss, peak_memory_mb, pick_device, set_seed, set_threads,
    supervised_loss, train_weight_dtype, training_precision,
)
from loraflow.tokenization import load_split

log = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "train_loss", "eval_loss", "lr", "tokens_seen", "elapsed_s"]


def parameter_counts(model) -> tuple[int, int]:
    """(trainable, total) as peft counts them (4-bit weights counted unpacked); plain sums for `full`."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    return sum(p.numel() for p in model.parameters() if p.requires_grad), sum(p.numel() for p in model.parameters())


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, state: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in state:
                p.copy_(state[name])


def plan_steps(n_batches: int, grad_accum: int, epochs: float, max_steps: int) -> int:
    return max_steps if max_steps > 0 else max(1, math.ceil(epochs * n_batches / grad_accum))


def batch_stream(lengths: list[int], batch_size: int, seed: int, start: int = 0):
    """Endless (epoch, batch indices); epoch e's order depends only on (seed, e), so the stream can
    be restarted at any position after a resume."""
    position, epoch = 0, 0
    while True:
        for batch in length_grouped_batches(lengths, batch_size, np.random.default_rng([seed, epoch])):
            if position >= start:
                yield epoch, batch
            position += 1
        epoch += 1


def write_log(path: str, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def train_lora(
    model_dir: str, train_path: str, val_path: str, tokens_meta: str,
    out_adapter: str, out_log: str, out_stats: str,
    r: int | None, lora_alpha: float | None, target_modules, lora_dropout: float = 0.05, method: str = "lora",
    learning_rate: float = 1e-3, learning_rate_full: float = 5e-5, gradient_checkpointing: bool = False, precision: str = "fp32",
    weight_decay: float = 0.0, epochs: float = 1, max_steps: int = 0,
    batch_size: int = 8, grad_accum: int = 1, warmup_steps: int = 0, lr_scheduler: str = "linear",
    max_grad_norm: float = 1.0, eval_every: int = 20, early_stopping_patience: int = 0,
    max_eval_batches: int = 0, checkpoint_every: int = 0, checkpoint_dir: str | None = None, nproc_per_node: int = 1,
    seed: int = 42, threads: int | None = None, trust_remote_code: bool = False, preflight: str | None = None,
) -> dict:
    hparams = {k: v for k, v in locals().items() if k not in ("out_adapter", "out_log", "out_stats", "threads", "checkpoint_dir", "preflight")}
    if nproc_per_node > 1 and "WORLD_SIZE" not in os.environ:  # start again as nproc_per_node processes
        distributed.launch(nproc_per_node, __name__, {k: v for k, v in locals().items() if k != "hparams"})
        return read_json(out_stats)
    from transformers import get_scheduler

    rank, world = distributed.world()
    set_threads(threads or (max(1, len(os.sched_getaffinity(0)) // world) if world > 1 else None))
    set_seed(seed)
    device = pick_device()
    amp = training_precision(precision, device)
    tokenizer = load_tokenizer(model_dir)
    train_set = load_split(train_path, tokens_meta, model_dir)
    val_set = load_split(val_path, tokens_meta, model_dir)
    base = load_base(model_dir, device, method, trust_remote_code, dtype=train_weight_dtype(amp, method))
    model = trainable_model(base, method, r, lora_alpha, target_modules, lora_dropout, gradient_checkpointing)
    trainable, total = parameter_counts(model)
    log.info("%s r=%s alpha=%s targets=%s: %s trainable of %s parameters (%.4f%%) on %s, %s compute", method,
             r, lora_alpha, target_modules, f"{trainable:,}", f"{total:,}", 100 * trainable / total, device, amp)

    lengths = [len(ids) for ids, _ in train_set]
    total_steps = plan_steps(math.ceil(len(train_set) / batch_size), grad_accum * world, epochs, max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    lr = learning_rate_full if method == "full" else learning_rate
    optimizer = make_optimizer(method, params, lr, weight_decay, device)
    scheduler = get_scheduler(lr_scheduler, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    state = {"step": 0, "micro_batches": 0, "rows": [], "best_loss": math.inf, "best_step": 0, "bad_evals": 0,
             "tokens_seen": 0, "supervised_seen": 0, "elapsed_s": 0.0}
    best_state = None
    ckpt = Checkpointer(checkpoint_dir, hparams, tokens_meta) if checkpoint_every and checkpoint_dir else None
    if ckpt and (resumed := ckpt.load(model, optimizer, scheduler)):
        state, best_state = resumed
        log.info("resumed from checkpoint at step %d of %d", state["step"], total_steps)

    stream = batch_stream(lengths, batch_size, seed, start=state["micro_batches"])
    start = time.perf_counter() - state["elapsed_s"]
    model.train()
    while state["step"] < total_steps:
        step = state["step"] + 1
        drawn = [next(stream) for _ in range(grad_accum * world)]
        parts = [[train_set[i] for i in batch] for _, batch in drawn]
        n_target = sum(int(m[1:].sum()) for ex in parts for _, m in ex)  # over all ranks' micro-batches
        step_loss = 0.0
        for ex in parts[rank::world]:
            with autocast(amp, device):
                loss_sum, _ = supervised_loss(model, collate(ex, tokenizer.pad_token_id, device))
            (loss_sum / max(n_target, 1)).backward()
            step_loss += loss_sum.item() / max(n_target, 1)
        if world > 1:
            distributed.sum_gradients(params)
            step_loss = distributed.sum_value(step_loss, device)
        state["tokens_seen"] += sum(len(ids) for ex in parts for ids, _ in ex)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        state["supervised_seen"] += n_target
        state["micro_batches"] += grad_accum * world
        state["step"] = step
        state["elapsed_s"] = time.perf_counter() - start
        row = {"step": step, "epoch": drawn[-1][0] + 1, "train_loss": round(step_loss, 5), "eval_loss": "",
               "lr": scheduler.get_last_lr()[0], "tokens_seen": state["tokens_seen"], "elapsed_s": round(state["elapsed_s"], 2)}
        if (eval_every and step % eval_every == 0) or step == total_steps:
            row["eval_loss"] = round(mean_loss(model, val_set, batch_size * 2, tokenizer.pad_token_id, device, max_eval_batches), 5)
            if row["eval_loss"] < state["best_loss"]:
                state.update(best_loss=row["eval_loss"], best_step=step, bad_evals=0)
                best_state = trainable_state(model)
            else:
                state["bad_evals"] += 1
        state["rows"].append(row)
        log.info("step %d/%d train_loss %.4f%s lr %.2e %.0f tok/s", step, total_steps, step_loss,
                 f" eval_loss {row['eval_loss']:.4f}" if row["eval_loss"] != "" else "", row["lr"], state["tokens_seen"] / max(state["elapsed_s"], 1e-9))
        stop = early_stopping_patience and state["bad_evals"] >= early_stopping_patience
        if stop:
            log.info("early stopping at step %d: no eval improvement in %d evaluations", step, state["bad_evals"])
            break
        if ckpt and rank == 0 and step % checkpoint_every == 0 and step < total_steps:
            ckpt.save(model, optimizer, scheduler, state, best_state)
    wall = state["elapsed_s"]
    if best_state is not None and state["best_step"] != state["step"]:
        log.info("restoring the best adapter from step %d (eval loss %.4f)", state["best_step"], state["best_loss"])
        load_trainable_state(model, best_state)

    if rank != 0:
        distributed.finish()
        return {}
    with atomic_dir(out_adapter) as tmp:
        save_trained(model, method, str(tmp))
    write_log(out_log, state["rows"])
    last = [r["train_loss"] for r in state["rows"][-5:]]
    stats = {
        "method": method, "r": r, "lora_alpha": lora_alpha, "target_modules": target_modules, "learning_rate": lr,
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
        "adapter_mb": sum(f.stat().st_size for f in Path(out_adapter).glob("*.safetensors")) / 2**20,
        "steps": state["step"], "planned_steps": total_steps, "best_step": state["best_step"],
        "final_train_loss": sum(last) / len(last), "best_eval_loss": state["best_loss"],
        "train_time_s": wall, "tokens_seen": state["tokens_seen"], "supervised_tokens_seen": state["supervised_seen"],
        "tokens_per_s": state["tokens_seen"] / max(wall, 1e-9), "peak_memory_mb": peak_memory_mb(device),
        "device": str(device), "precision": amp, "processes": world, "seed": seed, "optimizer": type(optimizer).__name__,
        "quantization": {"qlora": "nf4 (double quant, bf16 compute)", "lora_8bit": "int8"}.get(method, "none"),
        "gradient_checkpointing": gradient_checkpointing or method in QUANTIZED,
    }
    if preflight:  # the pre-flight estimate next to the measurement, to keep the estimate honest
        stats["preflight_est_memory_mb"] = read_json(preflight)["est_peak_train_memory_mb"]
    write_json(out_stats, stats)
    if ckpt:
        ckpt.clear()
    distributed.finish()
    log.info("trained %d steps in %.1fs (%.0f tokens/s), best eval loss %.4f", stats["steps"], wall, stats["tokens_per_s"], state["best_loss"])
    return stats


if __name__ == "__main__":  # one rank of a torchrun launch: python -m loraflow.train kwargs.json
    logging.basicConfig(level=logging.INFO, format="%(asctime)s rank" + os.environ.get("RANK", "0") + " %(name)s: %(message)s")
    with open(sys.argv[1], encoding="utf-8") as fh:
        train_lora(**json.load(fh))
