"""Write a Hugging Face causal LM directory (a merged run) as a GGUF file for llama.cpp and Ollama.

Our own converter on gguf-py's API: `GGUFWriter` for the file, `TensorNameMap` for tensor names,
`SpecialVocab` for merges and special token ids, `gguf.quants` for Q8_0. What llama.cpp needs and
transformers does not write down is handled here:

- **Q/K layout** (Llama family, Mistral): transformers applies rotary embeddings to the two halves of
  each head (`rotate_half`), llama.cpp's `llama` graph to adjacent pairs of dimensions. So the rows of
  every head of `q_proj`/`k_proj` are reordered from [first half, second half] to interleaved pairs.
  Qwen2 runs with llama.cpp's NEOX-style rope (halves, like transformers): no reordering, but its q/k/v
  biases are written.
- **Tied embeddings**: no `output.weight`; llama.cpp then uses `token_embd` as the output head.
- **Tokenizer** (gguf_vocab.py): byte-level BPE with the pre-tokenizer llama.cpp must use, or
  SentencePiece-style byte-fallback BPE with scores that rank merges.
- **Chat template, BOS/EOS/EOT**: the template the run was trained with; `<|im_end|>` as end-of-turn
  when it is not already EOS. No automatic BOS: loraflow trains on the rendered template without
  adding special tokens, so llama.cpp must not add one either (a template that wants BOS writes it).

What can be exported is checked first, without loading the model (exportable.py).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loraflow.ship.exportable import TYPES, ExportError, check_model_config, rope_settings
from loraflow.ship.gguf_vocab import read_vocab

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Tensors
# ---------------------------------------------------------------------------------------------


def rope_interleave(w: np.ndarray, n_head: int) -> np.ndarray:
    """Reorder the rows of a q/k projection (or bias) from transformers' rotate-half layout, where each
    head holds its first rotary halves then its second halves, to llama.cpp's pairwise layout
    (dimension i of the first half next to dimension i of the second half)."""
    rows = w.shape[0]
    head_dim = rows // n_head
    return w.reshape(n_head, 2, head_dim // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def rope_deinterleave(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of rope_interleave."""
    rows = w.shape[0]
    head_dim = rows // n_head
    return w.reshape(n_head, head_dim // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _tensor_type(gguf_name: str, shape: tuple[int, ...], out_type: str):
    """F32 for vectors (norms, biases), F16 or Q8_0 for matrices (Q8_0 needs rows of whole 32-blocks)."""
    import gguf

    Q = gguf.GGMLQuantizationType
    if len(shape) < 2:
        return Q.F32
    if out_type == "q8_0" and shape[-1] % gguf.GGML_QUANT_SIZES[Q.Q8_0][0] == 0:
        return Q.Q8_0
    return Q.F16


@dataclass
class ModelInfo:
    arch: str
    config: dict
    n_layer: int
    n_head: int
    n_head_kv: int
    n_embd: int
    head_dim: int
    n_vocab: int
    tied: bool


def model_info(model_dir: str | Path) -> ModelInfo:
    config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    arch = check_model_config(config, str(model_dir))
    n_head = int(config["num_attention_heads"])
    n_embd = int(config["hidden_size"])
    return ModelInfo(
        arch=arch,
        config=config,
        n_layer=int(config["num_hidden_layers"]),
        n_head=n_head,
        n_head_kv=int(config.get("num_key_value_heads") or n_head),
        n_embd=n_embd,
        head_dim=int(config.get("head_dim") or n_embd // n_head),
        n_vocab=int(config["vocab_size"]),
        tied=bool(config.get("tie_word_embeddings", False)),
    )


def _weight_files(model_dir: Path) -> list[Path]:
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise ExportError(f"{model_dir}: no safetensors weights")
    return files


def plan_tensors(model_dir: str | Path, info: ModelInfo) -> list[tuple[str, str, Path, tuple[int, ...]]]:
    """[(hf name, gguf name, file, shape)] for every tensor to write, in file order."""
    import gguf
    from safetensors import safe_open

    arch = {"llama": gguf.MODEL_ARCH.LLAMA, "qwen2": gguf.MODEL_ARCH.QWEN2}[info.arch]
    names = gguf.get_tensor_name_map(arch, info.n_layer)
    plan, seen = [], set()
    for f in _weight_files(Path(model_dir)):
        with safe_open(f, framework="pt") as st:
            for key in st.keys():
                if key.endswith("rotary_emb.inv_freq"):
                    continue
                if key == "lm_head.weight" and info.tied:
                    continue  # tied: llama.cpp falls back to token_embd
                base, suffix = key.rsplit(".", 1)
                target = names.get_name(base)
                if target is None:
                    raise ExportError(f"{model_dir}: tensor {key} has no GGUF name for architecture {info.arch}")
                plan.append((key, f"{target}.{suffix}", f, tuple(st.get_slice(key).get_shape())))
                seen.add(target)
    if not info.tied and "output" not in seen:
        raise ExportError(f"{model_dir}: untied embeddings but no lm_head.weight")
    return plan


def _load(file: Path, key: str) -> np.ndarray:
    import torch
    from safetensors import safe_open

    with safe_open(file, framework="pt") as st:
        return st.get_tensor(key).to(torch.float32).numpy()


def convert_tensor(gguf_name: str, data: np.ndarray, info: ModelInfo, qtype) -> np.ndarray:
    """The array written for one tensor: rope-interleaved for llama q/k, cast or quantised."""
    import gguf

    if info.arch == "llama" and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
        data = rope_interleave(data, info.n_head if ".attn_q." in gguf_name else info.n_head_kv)
    Q = gguf.GGMLQuantizationType
    if qtype == Q.F32:
        return np.ascontiguousarray(data, dtype=np.float32)
    if qtype == Q.F16:
        return np.ascontiguousarray(data, dtype=np.float16)
    return gguf.quants.quantize(np.ascontiguousarray(data, dtype=np.float32), qtype)


# ---------------------------------------------------------------------------------------------
# The file
# ---------------------------------------------------------------------------------------------


def stop_tokens(tokenizer) -> dict[str, int]:
    """{text: id} of the tokens that end an answer: EOS and <|im_end|> (the evaluation's stop set)."""
    out = {}
    if tokenizer.eos_token is not None:
        out[tokenizer.eos_token] = tokenizer.eos_token_id
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        out["<|im_end|>"] = im_end
    return out


def write_gguf(
    model_dir: str | Path,
    out_path: str | Path,
    out_type: str,
    tokenizer,
    chat_template: str,
    name: str,
    license: str | None = None,
    description: str | None = None,
) -> dict:
    """Write `model_dir` (safetensors + tokenizer.json) as one GGUF file of `out_type` (f16 | q8_0).
    Streams one tensor at a time, so memory stays near the largest tensor. Returns a summary."""
    import gguf

    if out_type not in TYPES:
        raise ExportError(f"GGUF type {out_type!r}; supported: {', '.join(TYPES)}")
    model_dir = Path(model_dir)
    info = model_info(model_dir)
    vocab = read_vocab(model_dir, info.n_vocab)
    plan = plan_tensors(model_dir, info)
    cfg = info.config
    rope = rope_settings(cfg)

    w = gguf.GGUFWriter(str(out_path), info.arch)
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)
    if description:
        w.add_description(description)
    if license:
        w.add_license(license)
    w.add_context_length(int(cfg.get("max_position_embeddings") or 4096))
    w.add_embedding_length(info.n_embd)
    w.add_block_count(info.n_layer)
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_head_count(info.n_head)
    w.add_head_count_kv(info.n_head_kv)
    w.add_layer_norm_rms_eps(float(cfg.get("rms_norm_eps", 1e-6)))
    w.add_rope_freq_base(rope["theta"])
    if info.arch == "llama":
        w.add_rope_dimension_count(info.head_dim)
    if info.head_dim != info.n_embd // info.n_head:
        w.add_key_length(info.head_dim)
        w.add_value_length(info.head_dim)
    if rope["type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rope["factor"]))
    w.add_vocab_size(info.n_vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16 if out_type == "f16" else gguf.LlamaFileType.MOSTLY_Q8_0)
    if out_type != "f16":
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)

    # tokenizer: vocabulary arrays, then merges and special ids through gguf-py's SpecialVocab
    w.add_tokenizer_model(vocab.model)
    w.add_tokenizer_pre(vocab.pre)
    w.add_token_list(vocab.tokens)
    w.add_token_types(vocab.types)
    if vocab.scores is not None:
        w.add_token_scores(vocab.scores)
    if vocab.add_space_prefix is not None:
        w.add_add_space_prefix(vocab.add_space_prefix)
    special = gguf.SpecialVocab(model_dir, load_merges=True, n_vocab=info.n_vocab)
    special.merges = vocab.merges or special.merges
    special.chat_template = chat_template
    special.add_special_token = {"bos": False, "eos": False}  # training adds none; the template writes what it needs
    for typ, tok in (
        ("bos", tokenizer.bos_token_id),
        ("eos", tokenizer.eos_token_id),
        ("pad", tokenizer.pad_token_id),
        ("unk", tokenizer.unk_token_id),
    ):
        if tok is not None:
            special.special_token_ids[typ] = int(tok)
    special.add_to_gguf(w, quiet=True)
    stops = stop_tokens(tokenizer)
    if "<|im_end|>" in stops and stops["<|im_end|>"] != tokenizer.eos_token_id:
        w.add_eot_token_id(stops["<|im_end|>"])

    types = {}
    for hf_name, gguf_name, f, shape in plan:
        qtype = _tensor_type(gguf_name, shape, out_type)
        types[gguf_name] = qtype
        if qtype == gguf.GGMLQuantizationType.Q8_0:
            byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
            w.add_tensor_info(gguf_name, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qtype)
        else:
            dtype = np.dtype(np.float32 if qtype == gguf.GGMLQuantizationType.F32 else np.float16)
            w.add_tensor_info(gguf_name, shape, dtype, int(np.prod(shape)) * dtype.itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for hf_name, gguf_name, f, shape in plan:
        w.write_tensor_data(convert_tensor(gguf_name, _load(f, hf_name), info, types[gguf_name]))
    w.close()
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t.name] = counts.get(t.name, 0) + 1
    return {
        "type": out_type,
        "architecture": info.arch,
        "tensors": len(plan),
        "tensor_types": counts,
        "tokenizer": vocab.model,
        "pre_tokenizer": vocab.pre,
        "n_vocab": info.n_vocab,
        "tied_embeddings": info.tied,
        "stop_tokens": stops,
        "bytes": Path(out_path).stat().st_size,
    }
