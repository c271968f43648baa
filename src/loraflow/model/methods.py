"""Training methods: how the base is loaded and what is trained, for each value of `grid.method`.

- lora / dora / rslora: full-precision base, peft LoRA (`use_dora`, `use_rslora`).
- qlora: 4-bit NF4 base with double quantisation and bf16 compute (bitsandbytes), made trainable
  with `prepare_model_for_kbit_training` (gradient checkpointing on), paged AdamW 8-bit.
- lora_8bit: the same with an 8-bit base (`load_in_8bit`).
- full: no adapter; every weight is trained (the reference row of the table).

An optimiser that cannot run here (a GPU-only kernel) falls back to torch AdamW with a log line, and
the optimiser that actually ran is recorded in the run's train_stats.json.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from loraflow.model.device import pick_dtype
from loraflow.model.loading import load_causal_lm

log = logging.getLogger(__name__)

QUANTIZED = ("qlora", "lora_8bit")
# peft flags of every method that trains an adapter: the one place they are set (training, preflight
# and the classification task all build their LoraConfig with `lora_config`).
LORA_FLAGS: dict[str, dict[str, Any]] = {
    "lora": {},
    "dora": {"use_dora": True},
    "rslora": {"use_rslora": True},
    "qlora": {},
    "lora_8bit": {},
}


def lora_config(
    method: str,
    r: int | None,
    lora_alpha: float | None,
    target_modules,
    lora_dropout: float = 0.0,
    task_type: str = "CAUSAL_LM",
    modules_to_save: list[str] | None = None,
    model=None,
):
    """The peft LoraConfig of a grid point: LoRA of rank `r` on `target_modules` (a preset or list,
    resolved for `model`'s family when a model is given), no bias, with the method's flags
    (`use_dora`, `use_rslora`). Training, preflight and the classifier all call this, so the counts
    preflight reports are the ones training gets."""
    from peft import LoraConfig

    from loraflow.model.targets import resolve_for_model

    if method not in LORA_FLAGS:
        raise ValueError(f"grid.method {method!r} trains no adapter (adapter methods: {', '.join(LORA_FLAGS)})")
    if r is None or lora_alpha is None:
        raise ValueError(
            f"grid.method {method!r} needs grid.r and grid.lora_alpha (got r={r}, lora_alpha={lora_alpha})"
        )
    if model is not None:
        target_modules = resolve_for_model(model, target_modules)
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,  # peft annotates it int, but scales by any float alpha
        target_modules=target_modules,
        lora_dropout=lora_dropout,
        bias="none",
        task_type=task_type,
        modules_to_save=modules_to_save,
        **LORA_FLAGS[method],
    )


def quantization_config(method: str):
    """The bitsandbytes config of a quantised method (None for the others)."""
    if method not in QUANTIZED:
        return None
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as err:
        raise RuntimeError(f"grid.method {method} needs bitsandbytes: pip install 'loraflow[quant]' ({err})") from err
    from transformers import BitsAndBytesConfig

    if method == "qlora":
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=torch.bfloat16,
        )
    return BitsAndBytesConfig(load_in_8bit=True)


def load_base(
    model_dir: str,
    device: torch.device,
    method: str = "lora",
    trust_remote_code: bool = False,
    dtype: torch.dtype | None = None,
):
    """The base model as `method` trains on it: quantised for qlora / lora_8bit (the other weights in
    `dtype`), else entirely in `dtype` (default: device.pick_dtype)."""
    quant = quantization_config(method)
    if quant is None:
        return load_causal_lm(model_dir, device, dtype=dtype, trust_remote_code=trust_remote_code)
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(
        model_dir,
        quantization_config=quant,
        dtype=dtype or pick_dtype(device),
        attn_implementation="sdpa",
        device_map={"": device.index or 0} if device.type == "cuda" else "cpu",
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )


def trainable_model(
    model,
    method: str,
    r: int | None,
    lora_alpha: float | None,
    target_modules,
    lora_dropout: float,
    gradient_checkpointing: bool = False,
):
    """Wrap the loaded base for training with `method`: a peft LoRA model, or the model itself (full)."""
    checkpointing = gradient_checkpointing or method in QUANTIZED
    if method == "full":
        model.requires_grad_(True)
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return model
    from peft import get_peft_model, prepare_model_for_kbit_training

    if method in QUANTIZED:
        keep_4bit_weights_trainable(model)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    elif checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return get_peft_model(model, lora_config(method, r, lora_alpha, target_modules, lora_dropout, model=model))


def keep_4bit_weights_trainable(model) -> None:
    """bitsandbytes (0.48+) repacks a 4-bit weight into a CPU inference layout the first time it runs
    in eval mode without gradients (our validation passes) and never unpacks it: gradients then stop
    reaching the LoRA layers for the rest of training. Turn that inference-only repacking off."""
    try:
        from bitsandbytes.nn import Linear4bit
    except ImportError:
        return
    for module in model.modules():
        if isinstance(module, Linear4bit) and getattr(module, "support_avx512bf16_for_cpu", False):
            module.support_avx512bf16_for_cpu = False


def make_optimizer(
    method: str, params: list, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Optimizer:
    """Paged AdamW 8-bit for the quantised methods (falling back to AdamW where it cannot run),
    fused AdamW on GPUs, plain AdamW otherwise."""
    if method in QUANTIZED:
        try:
            import bitsandbytes as bnb

            optimizer = bnb.optim.PagedAdamW8bit(params, lr=lr, weight_decay=weight_decay)
            probe = [torch.zeros_like(p) for p in params]  # one step of zero gradients with lr 0 proves it runs here
            for p, g in zip(params, probe):
                p.grad = g
            saved = [group["lr"] for group in optimizer.param_groups]
            for group in optimizer.param_groups:
                group["lr"] = 0.0
            optimizer.step()
            for group, value in zip(optimizer.param_groups, saved):
                group["lr"] = value
            optimizer.zero_grad(set_to_none=True)
            optimizer.state.clear()
            return optimizer
        except Exception as err:  # noqa: BLE001 - any failure of the GPU-oriented optimiser means: fall back
            log.warning(
                "paged AdamW 8-bit cannot run on %s (%s: %s); falling back to torch.optim.AdamW",
                device,
                type(err).__name__,
                err,
            )
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=device.type == "cuda")


def save_trained(model, method: str, out_dir: str) -> None:
    """The adapter (LoRA methods) or the complete model (full), safetensors only."""
    model.save_pretrained(out_dir, safe_serialization=True)


def save_adapter(model, adapter_name: str, out_dir: str) -> None:
    """One named adapter of a peft model as a standalone adapter directory, written atomically (peft
    writes an adapter other than `default` into a subdirectory of its name: its files are moved up)."""
    from loraflow.io import atomic_dir

    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, selected_adapters=[adapter_name], safe_serialization=True)
        sub = tmp / adapter_name
        if sub.is_dir():
            for f in sub.iterdir():
                f.rename(tmp / f.name)
            sub.rmdir()
