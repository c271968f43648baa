"""What the GGUF export can write, checked without loading a model (JSON only): the workflow runs
these checks when it parses the config, and the export job runs them first, before writing anything."""

from __future__ import annotations

import json
from pathlib import Path

# transformers architecture -> llama.cpp architecture. Mistral runs as `llama` in llama.cpp.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
SUPPORTED = (
    "LlamaForCausalLM (SmolLM2, Llama 2, Llama 3), MistralForCausalLM (Mistral) and Qwen2ForCausalLM (Qwen2, Qwen2.5)"
)
TYPES = ("f16", "q8_0")


class ExportError(ValueError):
    """The model cannot be exported faithfully; the message says why and what is supported."""


def rope_settings(config: dict) -> dict:
    """rope type/theta/scaling from a config.json written by transformers 4 (`rope_theta`,
    `rope_scaling`) or 5 (`rope_parameters`)."""
    params = dict(config.get("rope_parameters") or {})
    scaling = config.get("rope_scaling") or {}
    rope_type = params.get("rope_type") or scaling.get("rope_type") or scaling.get("type") or "default"
    theta = params.get("rope_theta", config.get("rope_theta", 10000.0))
    return {"type": rope_type, "theta": float(theta), "factor": params.get("factor", scaling.get("factor"))}


def check_model_config(config: dict, where: str = "the model") -> str:
    """The llama.cpp architecture for a transformers config.json dict, or ExportError naming the
    supported ones. Also refuses settings the GGUF could not reproduce exactly."""
    archs = config.get("architectures") or [config.get("model_type", "?")]
    arch = archs[0]
    if arch not in ARCHITECTURES:
        raise ExportError(f"{where} is {arch}; GGUF export supports {SUPPORTED}")
    rope = rope_settings(config)
    if rope["type"] not in ("default", "linear"):
        raise ExportError(
            f"{where} uses rope scaling {rope['type']!r}; GGUF export supports no scaling or linear scaling"
        )
    if arch == "Qwen2ForCausalLM" and config.get("use_sliding_window"):
        raise ExportError(f"{where} uses sliding-window attention, which the GGUF export does not reproduce")
    return ARCHITECTURES[arch]


def check_model_dir(model_dir: str | Path) -> str:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ExportError(f"{model_dir}: no config.json, cannot tell the architecture")
    return check_model_config(json.loads(path.read_text(encoding="utf-8")), str(model_dir))
