"""Target modules: named presets resolved per model family, checked against the actual model.

A preset (`qv`, `attn`, `mlp`, `all-linear`) means the same thing in every family, but the layer
names differ: Llama/Qwen/Mistral call the query projection `q_proj`, GPT-2 fuses q, k and v into
`c_attn`, BLOOM into `query_key_value`, BERT/RoBERTa/MiniLM use `query`/`value`. Names are peft
`target_modules` entries (matched as a suffix of the module path); a string is a peft regex or
'all-linear'. A target that matches nothing is an error listing the model's linear layers.
"""

from __future__ import annotations

PRESET_NAMES = ("qv", "attn", "mlp", "all-linear")

_LLAMA: dict[str, list[str] | str] = {
    "qv": ["q_proj", "v_proj"],
    "attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
    "mlp": ["gate_proj", "up_proj", "down_proj"],
}
_BERT: dict[str, list[str] | str] = {
    "qv": ["query", "value"],
    "attn": ["query", "key", "value", "attention.output.dense"],
    "mlp": r".*\.intermediate\.dense|.*\.layer\.\d+\.output\.dense",
}
FAMILY_PRESETS: dict[str, dict[str, list[str] | str]] = {
    "llama": _LLAMA,  # also Qwen2/3, Mistral, Mixtral attention, Gemma, Phi-3 style names
    "gpt2": {"qv": ["c_attn"], "attn": ["c_attn", "attn.c_proj"], "mlp": ["c_fc", "mlp.c_proj"]},
    "bloom": {
        "qv": ["query_key_value"],
        "attn": ["query_key_value", "self_attention.dense"],
        "mlp": ["dense_h_to_4h", "dense_4h_to_h"],
    },
    "bert": _BERT,  # also RoBERTa, XLM-R, MiniLM, DistilRoBERTa
}
# transformers `model_type` -> preset family; unknown types use the Llama names (checked anyway).
MODEL_TYPE_FAMILY = {
    **dict.fromkeys(
        [
            "llama",
            "mistral",
            "mixtral",
            "qwen2",
            "qwen3",
            "qwen2_moe",
            "gemma",
            "gemma2",
            "gemma3_text",
            "phi3",
            "olmo",
            "olmo2",
            "smollm3",
            "granite",
        ],
        "llama",
    ),
    **dict.fromkeys(["gpt2", "gpt_bigcode"], "gpt2"),
    "bloom": "bloom",
    **dict.fromkeys(["bert", "roberta", "xlm-roberta", "camembert", "electra"], "bert"),
}


class TargetModuleError(ValueError):
    """A target-module choice that does not fit the model; the message lists its linear layers."""


def family_of(model_type: str | None) -> str:
    return MODEL_TYPE_FAMILY.get(model_type or "", "llama")


def resolve(spec: str | list[str], model_type: str | None) -> list[str] | str:
    """peft `target_modules` for a preset name or an explicit list, for this model type."""
    if isinstance(spec, (list, tuple)):
        return list(spec)
    if spec == "all-linear":
        return "all-linear"
    if spec not in PRESET_NAMES:
        raise TargetModuleError(
            f"grid.target_modules: unknown preset {spec!r}; use one of {', '.join(PRESET_NAMES)} or a list of module "
            "names"
        )
    return FAMILY_PRESETS[family_of(model_type)][spec]


def linear_layer_names(model) -> list[str]:
    """Distinct short names of the model's linear layers (q_proj, c_attn, query_key_value ...)."""
    import torch

    kinds: tuple[type, ...] = (torch.nn.Linear,)
    try:
        from transformers.pytorch_utils import Conv1D  # GPT-2's linear layers

        kinds += (Conv1D,)
    except ImportError:
        pass
    return sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, kinds)})


def resolve_for_model(model, spec: str | list[str]) -> list[str] | str:
    """Resolve `spec` for `model` and check every target matches at least one module."""
    import re

    targets = resolve(spec, getattr(model.config, "model_type", None))
    names = [name for name, _ in model.named_modules() if name]
    if isinstance(targets, str):
        if targets == "all-linear" or any(re.fullmatch(targets, n) for n in names):
            return targets
        missing = [targets]
    else:
        missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        label = f"preset {spec!r} ({model.config.model_type} names): " if isinstance(spec, str) else ""
        raise TargetModuleError(
            f"grid.target_modules: {label}{', '.join(missing)} not found in {type(model).__name__}; "
            f"its linear layers are: {', '.join(linear_layer_names(model))}"
        )
    return targets
