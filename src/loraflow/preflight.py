"""Pre-flight: what a grid point will cost, and whether its target modules exist, before training.

Everything runs on the meta device: the model is built from its config without weights, peft wraps
it as training would, and the counts are peft's own. Snakemake schedules these jobs first, so a bad
target module stops the sweep before any training starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from loraflow.io import atomic_path, read_json, write_json
from loraflow.targets import TargetModuleError, linear_layer_names, resolve_for_model  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)


def meta_model(model_dir_or_config, trust_remote_code: bool = False):
    """The model architecture on the meta device: shapes only, no memory, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    config = model_dir_or_config
    if not isinstance(config, PretrainedConfig):
        config = AutoConfig.from_pretrained(model_dir_or_config, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def check_targets(model, target_modules) -> list[str] | str:
    """The peft targets for a preset or list on this model; TargetModuleError lists its linear layers."""
    return resolve_for_model(model, target_modules)


def lora_counts(model, r: int | None, lora_alpha: float | None, target_modules, method: str = "lora") -> tuple[int, int]:
    """(trainable, total) parameters exactly as peft counts them (every weight for method full)."""
    import torch
    from peft import get_peft_model

    from loraflow.methods import lora_config

    total = sum(p.numel() for p in model.parameters())
    if method == "full":
        return total, total
    config = lora_config(method, r, lora_alpha, target_modules, model=model)  # the config training builds
    with torch.device("meta"):
        peft_model = get_peft_model(model, config)
    return peft_model.get_nb_trainable_parameters()


# Bytes per weight of the quantised linear layers (NF4 with double-quantised scales, int8 + scales).
WEIGHT_BYTES = {"qlora": 0.53, "lora_8bit": 1.03}


def estimate_memory_mb(model, trainable: int, total: int, batch_size: int, seq_len: int, bytes_per_param: int = 4,
                       method: str = "lora", gradient_checkpointing: bool = False) -> float:
    """Rough peak training memory: weights + gradients and AdamW states of the trained parameters
    + activations of one step (one layer's worth plus layer inputs under gradient checkpointing)."""
    import torch

    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)
    layers = getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)
    inter = getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden
    tokens = batch_size * seq_len
    weights = total * bytes_per_param
    if method in WEIGHT_BYTES:  # the decoder's linear layers are stored quantised
        head = model.get_output_embeddings()
        quantised = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head)
        weights -= quantised * (bytes_per_param - WEIGHT_BYTES[method])
    state_bytes = 2 if method in WEIGHT_BYTES else 8  # AdamW moments: two 1-byte (paged AdamW 8-bit) or two fp32
    optimizer = trainable * (bytes_per_param + state_bytes)  # gradient + moments
    per_layer = tokens * (10 * hidden + 3 * inter) * bytes_per_param  # saved tensors per layer
    checkpointed = gradient_checkpointing or method in WEIGHT_BYTES
    activations = (tokens * hidden * bytes_per_param * layers + per_layer) if checkpointed else per_layer * layers
    logits = tokens * getattr(cfg, "vocab_size", 0) * 4 / 2  # logits on supervised positions (about half)
    return (weights + optimizer + activations + logits) / 2**20


def preflight_run(
    model_dir: str, out_json: str, run: str, r: int | None, lora_alpha: float | None, target_modules, method: str = "lora",
    batch_size: int = 8, max_length: int = 512, gradient_checkpointing: bool = False, trust_remote_code: bool = False,
) -> dict:
    """Preflight stage entry point for one grid point."""
    model = meta_model(model_dir, trust_remote_code)
    trainable, total = lora_counts(model, r, lora_alpha, target_modules, method)
    info = {
        "run": run, "method": method, "r": r, "lora_alpha": lora_alpha,
        "target_modules": None if method == "full" else check_targets(model, target_modules),
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
        "adapter_mb": trainable * 4 / 2**20,
        "est_peak_train_memory_mb": estimate_memory_mb(model, trainable, total, batch_size, max_length, method=method,
                                                       gradient_checkpointing=gradient_checkpointing),
    }
    write_json(out_json, info)
    log.info("%s: %s trainable of %s (%.4f%%), adapter %.2f MB", run, f"{trainable:,}", f"{total:,}", info["trainable_pct"], info["adapter_mb"])
    return info


def preflight_table(runs: list[str], out_csv: str) -> pd.DataFrame:
    df = pd.DataFrame([read_json(p) for p in runs])
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
