"""Train stage: one LoRA adapter per grid point, with transformers + peft.

The loop is plain PyTorch so that no compute is spent on padding (length-grouped dynamic padding)
or on the LM head at positions that are not trained (see modeling.supervised_loss).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from pathlib import Path

import numpy as np
import torch

from loraflow.io import atomic_dir, atomic_path, write_json
from loraflow.modeling import (
    collate, length_grouped_batches, load_causal_lm, load_tokenizer, mean_loss, peak_memory_mb,
    pick_device, set_seed, set_threads, supervised_loss,
)
from loraflow.tokenization import load_split

log = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "train_loss", "eval_loss", "lr", "tokens_seen", "elapsed_s"]


def lora_model(model, r: int, lora_alpha: float, target_modules, lora_dropout: float):
    from peft import LoraConfig, TaskType, get_peft_model

    config = LoraConfig(
        r=r, lora_alpha=lora_alpha, target_modules=target_modules, lora_dropout=lora_dropout,
        bias="none", task_type=TaskType.CAUSAL_LM,
    )
    return get_peft_model(model, config)


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def plan_steps(n_batches: int, grad_accum: int, epochs: float, max_steps: int) -> int:
    return max_steps if max_steps > 0 else max(1, math.ceil(epochs * n_batches / grad_accum))


def train_lora(
    model_dir: str, train_path: str, val_path: str, tokens_meta: str,
    out_adapter: str, out_log: str, out_stats: str,
    r: int, lora_alpha: float, target_modules, lora_dropout: float = 0.05,
    learning_rate: float = 1e-3, weight_decay: float = 0.0, epochs: float = 1, max_steps: int = 0,
    batch_size: int = 8, grad_accum: int = 1, warmup_steps: int = 0, lr_scheduler: str = "linear",
    max_grad_norm: float = 1.0, eval_every: int = 20, early_stopping_patience: int = 0,
    max_eval_batches: int = 0, seed: int = 42, threads: int | None = None, trust_remote_code: bool = False,
) -> dict:
    from transformers import get_scheduler

    set_threads(threads)
    set_seed(seed)
    device = pick_device()
    tokenizer = load_tokenizer(model_dir)
    train_set = load_split(train_path, tokens_meta, model_dir)
    val_set = load_split(val_path, tokens_meta, model_dir)
    model = lora_model(load_causal_lm(model_dir, device, trust_remote_code=trust_remote_code), r, lora_alpha, target_modules, lora_dropout)
    trainable, total = model.get_nb_trainable_parameters()
    log.info("LoRA r=%d alpha=%g targets=%s: %s trainable of %s parameters (%.4f%%) on %s",
             r, lora_alpha, target_modules, f"{trainable:,}", f"{total:,}", 100 * trainable / total, device)

    rng = np.random.default_rng(seed)
    lengths = [len(ids) for ids, _ in train_set]
    n_batches = math.ceil(len(train_set) / batch_size)
    total_steps = plan_steps(n_batches, grad_accum, epochs, max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=device.type == "cuda")
    scheduler = get_scheduler(lr_scheduler, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)

    def micro_batches():
        epoch = 0
        while True:
            for batch in length_grouped_batches(lengths, batch_size, rng):
                yield epoch, [train_set[i] for i in batch]
            epoch += 1

    stream = micro_batches()
    rows, best = [], {"loss": math.inf, "step": 0, "state": None}
    bad_evals, tokens_seen, supervised_seen, start = 0, 0, 0, time.perf_counter()
    model.train()
    for step in range(1, total_steps + 1):
        parts = [next(stream) for _ in range(grad_accum)]
        n_target = sum(int(m[1:].sum()) for _, examples in parts for _, m in examples)
        step_loss = 0.0
        for epoch, examples in parts:
            batch = collate(examples, tokenizer.pad_token_id, device)
            loss_sum, _ = supervised_loss(model, batch)
            (loss_sum / max(n_target, 1)).backward()
            step_loss += loss_sum.item() / max(n_target, 1)
            tokens_seen += int(batch["attention_mask"].sum())
        supervised_seen += n_target
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step, "epoch": round(epoch + 1, 3), "train_loss": round(step_loss, 5), "eval_loss": "",
               "lr": scheduler.get_last_lr()[0], "tokens_seen": tokens_seen, "elapsed_s": round(time.perf_counter() - start, 2)}
        if (eval_every and step % eval_every == 0) or step == total_steps:
            row["eval_loss"] = round(mean_loss(model, val_set, batch_size * 2, tokenizer.pad_token_id, device, max_eval_batches), 5)
            if row["eval_loss"] < best["loss"]:
                best, bad_evals = {"loss": row["eval_loss"], "step": step, "state": trainable_state(model)}, 0
            else:
                bad_evals += 1
        rows.append(row)
        log.info("step %d/%d train_loss %.4f%s lr %.2e %.0f tok/s", step, total_steps, step_loss,
                 f" eval_loss {row['eval_loss']:.4f}" if row["eval_loss"] != "" else "", row["lr"], tokens_seen / max(row["elapsed_s"], 1e-9))
        if early_stopping_patience and bad_evals >= early_stopping_patience:
            log.info("early stopping at step %d: no eval improvement in %d evaluations", step, bad_evals)
            break
    wall = time.perf_counter() - start
    if best["state"] is not None and best["step"] != rows[-1]["step"]:
        log.info("restoring the best adapter from step %d (eval loss %.4f)", best["step"], best["loss"])
        with torch.no_grad():
            for name, p in model.named_parameters():
                if name in best["state"]:
                    p.copy_(best["state"][name])

    with atomic_dir(out_adapter) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
    with atomic_path(out_log) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    last = [r["train_loss"] for r in rows[-5:]]
    stats = {
        "r": r, "lora_alpha": lora_alpha, "target_modules": target_modules,
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
        "adapter_mb": (Path(out_adapter) / "adapter_model.safetensors").stat().st_size / 2**20,
        "steps": rows[-1]["step"], "planned_steps": total_steps, "best_step": best["step"],
        "final_train_loss": sum(last) / len(last), "best_eval_loss": best["loss"],
        "train_time_s": wall, "tokens_seen": tokens_seen, "supervised_tokens_seen": supervised_seen,
        "tokens_per_s": tokens_seen / wall, "peak_memory_mb": peak_memory_mb(device),
        "device": str(device), "seed": seed, "optimizer": type(optimizer).__name__,
    }
    write_json(out_stats, stats)
    log.info("trained %d steps in %.1fs (%.0f tokens/s), best eval loss %.4f", stats["steps"], wall, stats["tokens_per_s"], best["loss"])
    return stats
