"""Train stage of task seq_cls: LoRA on the encoder plus a trained classification head, per grid point.

peft's SEQ_CLS task type wraps the head (`classifier`, ...) in `modules_to_save`: the head is new,
so it is trained in full and saved inside the adapter next to the LoRA matrices. The loop is plain
PyTorch: length-grouped batches with dynamic padding, AdamW, a warm-up + decay schedule, validation
accuracy every `eval_every` steps; the best validation accuracy (ties: lower validation loss) wins
and is what gets saved.
"""

from __future__ import annotations

import csv
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from loraflow.cls_data import check_method
from loraflow.cls_model import (
    adapter_head_tensors, collate, encode, head_modules, load_classifier, load_tokenizer, predict_logits, read_labels, unk_fraction,
)
from loraflow.io import atomic_dir, atomic_path, read_jsonl, write_json
from loraflow.metrics import accuracy_macro_f1
from loraflow.modeling import peak_memory_mb, pick_device, set_seed, set_threads
from loraflow.train import batch_stream, load_trainable_state, parameter_counts, plan_steps, trainable_state

log = logging.getLogger(__name__)

LOG_FIELDS = ["step", "epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "elapsed_s"]


def lora_classifier(model, r: int, lora_alpha: float, target_modules, lora_dropout: float = 0.05, method: str = "lora"):
    """Wrap a sequence-classification model with LoRA (`method` lora, dora or rslora); the head
    modules are trained in full and saved with the adapter."""
    from peft import get_peft_model

    from loraflow.methods import lora_config

    check_method(method)
    heads = head_modules(model)
    config = lora_config(method, r, lora_alpha, target_modules, lora_dropout, task_type="SEQ_CLS",
                         modules_to_save=list(heads), model=model)  # peft extends modules_to_save in place
    peft_model = get_peft_model(model, config)
    untrained = [h for h in heads if not any(p.requires_grad for n, p in peft_model.named_parameters() if f".{h}.modules_to_save." in n)]
    if untrained:
        raise RuntimeError(f"the classification head {untrained} would not be trained; modules_to_save={config.modules_to_save}")
    return peft_model


def evaluate_split(model, tokenizer, ids: list[list[int]], y: list[int], batch_size: int, device) -> dict:
    """Mean cross-entropy, accuracy and macro-F1 (0-100) of `model` on one split."""
    logits = torch.from_numpy(predict_logits(model, tokenizer, ids, batch_size, device))
    loss = F.cross_entropy(logits, torch.tensor(y)).item()
    return {"loss": loss, **accuracy_macro_f1(logits.argmax(-1).tolist(), list(y))}


def write_log(path: str, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def _listed(targets):
    """peft keeps target_modules as a set of names, or one regex string."""
    return targets if isinstance(targets, str) else sorted(targets)


def _encode_split(path: str, tokenizer, label2id: dict[str, int], max_length: int):
    rows = read_jsonl(path)
    ids, truncated = encode(tokenizer, [r["text"] for r in rows], max_length)
    return ids, [label2id[r["label"]] for r in rows], truncated


@dataclass
class Fitted:
    """A trained classifier in memory (the best validation state loaded) and what to write about it."""

    model: object  # the PeftModel
    tokenizer: object
    heads: list[str]
    log_rows: list[dict]
    stats: dict


def fit_classifier(
    model_dir: str, train_path: str, val_path: str, labels_path: str,
    r: int, lora_alpha: float, target_modules, method: str = "lora", lora_dropout: float = 0.05,
    learning_rate: float = 1e-3, weight_decay: float = 0.0, epochs: float = 1, max_steps: int = 0, batch_size: int = 8,
    grad_accum: int = 1, warmup_steps: int = 0, lr_scheduler: str = "linear", max_grad_norm: float = 1.0,
    eval_every: int = 20, early_stopping_patience: int = 0, max_length: int = 256, eval_batch_size: int = 32,
    seed: int = 42, threads: int | None = None, trust_remote_code: bool = False,
) -> Fitted:
    """Train one grid point; nothing is written."""
    from transformers import get_scheduler

    check_method(method)
    set_threads(threads)
    set_seed(seed)
    device = pick_device()
    labels = read_labels(labels_path)
    label2id = {x: i for i, x in enumerate(labels)}
    tokenizer = load_tokenizer(model_dir)
    train_ids, train_y, truncated = _encode_split(train_path, tokenizer, label2id, max_length)
    val_ids, val_y, _ = _encode_split(val_path, tokenizer, label2id, max_length)
    model = load_classifier(model_dir, labels, device, trust_remote_code)  # head initialised from `seed`
    model.config.pad_token_id = tokenizer.pad_token_id
    heads = head_modules(model)
    model = lora_classifier(model, r, lora_alpha, target_modules, lora_dropout, method)
    trainable, total = parameter_counts(model)
    log.info("%s r=%s alpha=%s targets=%s head=%s: %s trainable of %s parameters (%.4f%%) on %s; %d train rows (%d truncated to %d tokens)",
             method, r, lora_alpha, target_modules, heads, f"{trainable:,}", f"{total:,}",
             100 * trainable / total, device, len(train_ids), truncated, max_length)

    total_steps = plan_steps(math.ceil(len(train_ids) / batch_size), grad_accum, epochs, max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay, fused=device.type == "cuda")
    scheduler = get_scheduler(lr_scheduler, optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps)
    stream = batch_stream([len(x) for x in train_ids], batch_size, seed)
    rows: list[dict] = []
    best = {"accuracy": -1.0, "loss": math.inf, "macro_f1": 0.0, "step": 0}
    best_state, bad_evals, step = None, 0, 0
    start = time.perf_counter()
    model.train()
    while step < total_steps:
        step += 1
        drawn = [next(stream) for _ in range(grad_accum)]
        n_examples = sum(len(batch) for _, batch in drawn)
        step_loss = 0.0
        for _, batch in drawn:
            logits = model(**collate(tokenizer, [train_ids[i] for i in batch], device)).logits
            loss = F.cross_entropy(logits.float(), torch.tensor([train_y[i] for i in batch], device=device), reduction="sum") / n_examples
            loss.backward()
            step_loss += loss.item()
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        row = {"step": step, "epoch": drawn[-1][0] + 1, "train_loss": round(step_loss, 5), "val_loss": "", "val_accuracy": "",
               "val_macro_f1": "", "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.perf_counter() - start, 2)}
        if (eval_every and step % eval_every == 0) or step == total_steps:
            val = evaluate_split(model, tokenizer, val_ids, val_y, eval_batch_size, device)
            row.update(val_loss=round(val["loss"], 5), val_accuracy=round(val["accuracy"], 3), val_macro_f1=round(val["macro_f1"], 3))
            if (val["accuracy"], -val["loss"]) > (best["accuracy"], -best["loss"]):
                best = {**val, "step": step}
                best_state, bad_evals = trainable_state(model), 0
            else:
                bad_evals += 1
            log.info("step %d/%d train_loss %.4f val_loss %.4f val_accuracy %.2f", step, total_steps, step_loss, val["loss"], val["accuracy"])
        rows.append(row)
        if early_stopping_patience and bad_evals >= early_stopping_patience:
            log.info("early stopping at step %d: no validation improvement in %d evaluations", step, bad_evals)
            break
    wall = time.perf_counter() - start
    if best_state is not None and best["step"] != step:
        log.info("restoring the best adapter from step %d (val accuracy %.2f)", best["step"], best["accuracy"])
        load_trainable_state(model, best_state)
    model.eval()
    last = [x["train_loss"] for x in rows[-5:]]
    stats = {
        "method": method, "r": r, "lora_alpha": lora_alpha, "target_modules": target_modules,
        "resolved_target_modules": _listed(model.peft_config["default"].target_modules), "head_modules": heads,
        "num_labels": len(labels), "learning_rate": learning_rate,
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
        "steps": step, "planned_steps": total_steps, "best_step": best["step"],
        "final_train_loss": sum(last) / len(last), "best_val_accuracy": best["accuracy"], "best_val_macro_f1": best["macro_f1"],
        "best_val_loss": best["loss"], "train_time_s": wall, "examples_per_s": step * batch_size * grad_accum / max(wall, 1e-9),
        "peak_memory_mb": peak_memory_mb(device), "device": str(device), "seed": seed,
        "train_rows": len(train_ids), "truncated_rows": truncated, "unk_token_pct": 100 * unk_fraction(tokenizer, train_ids),
    }
    log.info("trained %d steps in %.1fs; best val accuracy %.2f at step %d", step, wall, best["accuracy"], best["step"])
    return Fitted(model, tokenizer, heads, rows, stats)


def save_fitted(fitted: Fitted, out_adapter: str, out_log: str, out_stats: str) -> dict:
    """The adapter (LoRA + head, safetensors, with the tokenizer), train_log.csv, train_stats.json."""
    with atomic_dir(out_adapter) as tmp:
        fitted.model.save_pretrained(str(tmp), safe_serialization=True)
        fitted.tokenizer.save_pretrained(str(tmp))  # so the adapter directory is usable on its own
        saved = adapter_head_tensors(tmp, fitted.heads)
        if not saved:
            raise RuntimeError(f"the adapter in {out_adapter} does not contain the classification head {fitted.heads}")
    write_log(out_log, fitted.log_rows)
    adapter_mb = sum(f.stat().st_size for f in Path(out_adapter).glob("*.safetensors")) / 2**20
    stats = {**fitted.stats, "adapter_mb": adapter_mb, "head_tensors": sorted(saved)}
    write_json(out_stats, stats)
    return stats


def train_classifier(
    model_dir: str, train_path: str, val_path: str, labels_path: str, out_adapter: str, out_log: str, out_stats: str, **hparams,
) -> dict:
    """Stage entry point: fit_classifier (hyperparameters as named there), then save_fitted."""
    return save_fitted(fit_classifier(model_dir, train_path, val_path, labels_path, **hparams), out_adapter, out_log, out_stats)
