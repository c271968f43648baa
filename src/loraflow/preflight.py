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

log = logging.getLogger(__name__)


class TargetModuleError(ValueError):
    pass


def meta_model(model_dir_or_config, trust_remote_code: bool = False):
    """The model architecture on the meta device: shapes only, no memory, no weights read."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig

    config = model_dir_or_config
    if not isinstance(config, PretrainedConfig):
        config = AutoConfig.from_pretrained(model_dir_or_config, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)


def linear_layer_names(model) -> list[str]:
    """Distinct short names of the model's linear layers (q_proj, c_attn, ...)."""
    import torch

    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)}
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2 style "linear" layers

        names |= {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, Conv1D)}
    except ImportError:
        pass
    return sorted(names)


def check_targets(model, target_modules) -> None:
    """Raise TargetModuleError naming any target the model lacks and listing what it has."""
    if isinstance(target_modules, str):
        return  # 'all-linear' and regexes are resolved by peft itself
    module_names = [name for name, _ in model.named_modules()]
    missing = [t for t in target_modules if not any(n == t or n.endswith("." + t) for n in module_names)]
    if missing:
        raise TargetModuleError(
            f"grid.target_modules: {', '.join(missing)} not found in {type(model).__name__}; "
            f"its linear layers are: {', '.join(linear_layer_names(model))}"
        )


def lora_counts(model, r: int, lora_alpha: float, target_modules) -> tuple[int, int]:
    """(trainable, total) parameters exactly as peft counts them."""
    import torch
    from peft import LoraConfig, TaskType, get_peft_model

    check_targets(model, target_modules)
    config = LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=target_modules, bias="none", task_type=TaskType.CAUSAL_LM)
    with torch.device("meta"):
        peft_model = get_peft_model(model, config)
    return peft_model.get_nb_trainable_parameters()


def estimate_memory_mb(model, trainable: int, total: int, batch_size: int, seq_len: int, bytes_per_param: int = 4) -> float:
    """Rough peak training memory: weights + LoRA grads and AdamW states + activations of one step."""
    cfg = model.config
    hidden = getattr(cfg, "hidden_size", 0) or getattr(cfg, "n_embd", 0)
    layers = getattr(cfg, "num_hidden_layers", 0) or getattr(cfg, "n_layer", 0)
    inter = getattr(cfg, "intermediate_size", 4 * hidden) or 4 * hidden
    tokens = batch_size * seq_len
    weights = total * bytes_per_param
    optimizer = trainable * (bytes_per_param + 8)  # gradient + two fp32 Adam moments
    activations = tokens * layers * (10 * hidden + 3 * inter) * bytes_per_param  # saved tensors per layer
    head = tokens * getattr(cfg, "vocab_size", 0) * 4 / 2  # logits on supervised positions (about half)
    return (weights + optimizer + activations + head) / 2**20


def preflight_run(
    model_dir: str, out_json: str, run: str, r: int, lora_alpha: float, target_modules,
    batch_size: int = 8, max_length: int = 512, trust_remote_code: bool = False,
) -> dict:
    """Preflight stage entry point for one grid point."""
    model = meta_model(model_dir, trust_remote_code)
    trainable, total = lora_counts(model, r, lora_alpha, target_modules)
    info = {
        "run": run, "r": r, "lora_alpha": lora_alpha, "target_modules": target_modules,
        "trainable_params": trainable, "total_params": total, "trainable_pct": 100 * trainable / total,
        "adapter_mb": trainable * 4 / 2**20,
        "est_peak_train_memory_mb": estimate_memory_mb(model, trainable, total, batch_size, max_length),
    }
    write_json(out_json, info)
    log.info("%s: %s trainable of %s (%.4f%%), adapter %.2f MB", run, f"{trainable:,}", f"{total:,}", info["trainable_pct"], info["adapter_mb"])
    return info


def preflight_table(runs: list[str], out_csv: str) -> pd.DataFrame:
    df = pd.DataFrame([read_json(p) for p in runs])
    with atomic_path(out_csv) as tmp:
        df.to_csv(tmp, index=False)
    return df
