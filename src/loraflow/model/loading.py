"""Loading a causal LM and its tokenizer, and reaching the transformers model inside a peft wrapper."""

from __future__ import annotations

import torch

from loraflow.model.device import pick_dtype


def load_causal_lm(
    model_dir: str, device: torch.device, dtype: torch.dtype | None = None, trust_remote_code: bool = False
):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_dir,
        dtype=dtype or pick_dtype(device),
        attn_implementation="sdpa",
        trust_remote_code=trust_remote_code,
        use_safetensors=True,
    )
    return model.to(device)


def load_tokenizer(model_dir: str, padding_side: str = "right"):
    from transformers import AutoTokenizer

    from loraflow.data.chatml import ensure_chat_template

    tok = AutoTokenizer.from_pretrained(model_dir, padding_side=padding_side)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    ensure_chat_template(tok)
    return tok


def unwrap(model):
    """The transformers model inside a peft wrapper (LoRA layers stay injected)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model
