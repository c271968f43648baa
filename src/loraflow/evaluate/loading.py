"""The model a run produced, loaded for evaluation exactly as it will be used."""

from __future__ import annotations

from pathlib import Path

from loraflow.model.device import pick_device, pick_dtype
from loraflow.model.loading import load_causal_lm


def load_for_eval(
    model_dir: str,
    adapter_dir: str | None,
    trust_remote_code: bool = False,
    method: str = "lora",
    precision: str | None = None,
):
    """The model a run produced: base + adapter (the base quantised again for qlora / lora_8bit, as it
    was trained), a fully fine-tuned model (method full: `adapter_dir` holds the whole model), or the
    untouched base when `adapter_dir` is None; weights in the deploy `precision` (auto | fp32 | bf16,
    see model.device.pick_dtype; peft keeps adapter weights in fp32)."""
    from loraflow.model.methods import load_base

    device = pick_device()
    dtype = pick_dtype(device, precision)
    if adapter_dir and not (Path(adapter_dir) / "adapter_config.json").is_file():
        return load_causal_lm(adapter_dir, device, dtype=dtype, trust_remote_code=trust_remote_code).eval()
    model = load_base(model_dir, device, method if adapter_dir else "lora", trust_remote_code, dtype=dtype)
    if adapter_dir:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()
