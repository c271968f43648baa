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
- **Tokenizer**: byte-level BPE (GPT-2 style: SmolLM2, Qwen2, Llama 3) with merges and the pre-tokenizer
  llama.cpp must use; SentencePiece-style byte-fallback BPE (Llama 2, Mistral) with scores that rank
  merges. Special added tokens are CONTROL tokens, so llama.cpp parses them whole and never prints them.
- **Chat template, BOS/EOS/EOT**: the template the run was trained with; `<|im_end|>` as end-of-turn
  when it is not already EOS. No automatic BOS: loraflow trains on the rendered template without
  adding special tokens, so llama.cpp must not add one either (a template that wants BOS writes it).

`check_model_config` is light (no torch) and runs at config parse time and first in the export job.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

# transformers architecture -> llama.cpp architecture. Mistral runs as `llama` in llama.cpp.
ARCHITECTURES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
SUPPORTED = "LlamaForCausalLM (SmolLM2, Llama 2, Llama 3), MistralForCausalLM (Mistral) and Qwen2ForCausalLM (Qwen2, Qwen2.5)"
TYPES = ("f16", "q8_0")

# Pre-tokenizer regexes of the byte-level BPE tokenizers we know (from their tokenizer.json files).
QWEN2_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_SPLIT = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"


class ExportError(ValueError):
    """The model cannot be exported faithfully; the message says why and what is supported."""


# ---------------------------------------------------------------------------------------------
# What can be exported (light: JSON only)
# ---------------------------------------------------------------------------------------------

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
        raise ExportError(f"{where} uses rope scaling {rope['type']!r}; GGUF export supports no scaling or linear scaling")
    if arch == "Qwen2ForCausalLM" and config.get("use_sliding_window"):
        raise ExportError(f"{where} uses sliding-window attention, which the GGUF export does not reproduce")
    return ARCHITECTURES[arch]


def check_model_dir(model_dir: str | Path) -> str:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise ExportError(f"{model_dir}: no config.json, cannot tell the architecture")
    return check_model_config(json.loads(path.read_text(encoding="utf-8")), str(model_dir))


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

@dataclass
class Vocab:
    model: str                 # tokenizer.ggml.model: gpt2 | llama
    pre: str                   # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: list[str] = field(default_factory=list)
    add_space_prefix: bool | None = None


def _pre_tokenizer_name(tj: dict) -> str:
    """llama.cpp's name for the pre-tokenizer of a byte-level BPE tokenizer.json (ExportError if unknown:
    llama.cpp would split text differently from the tokenizer the model was trained with)."""
    pre = tj.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        if pattern == QWEN2_SPLIT:
            return "qwen2"
        if pattern == LLAMA3_SPLIT:
            return "llama-bpe"
    raise ExportError(
        f"unrecognised byte-level pre-tokenizer {json.dumps(pre)[:300]}; the GGUF export knows GPT-2, SmolLM2, "
        "Qwen2 and Llama 3 pre-tokenizers (llama.cpp would otherwise split text differently)"
    )


def _added_tokens(tj: dict) -> dict[int, dict]:
    return {t["id"]: t for t in tj.get("added_tokens") or []}


def _padded(tokens: dict[int, str], n_vocab: int) -> list[str]:
    """Token strings by id; embedding rows without a token become [PAD<id>] (type UNUSED)."""
    if tokens and max(tokens) >= n_vocab:
        raise ExportError(f"the tokenizer has token id {max(tokens)} but the model only {n_vocab} embedding rows")
    return [tokens.get(i, f"[PAD{i}]") for i in range(n_vocab)]


def _token_types(tokens: dict[int, str], added: dict[int, dict], n_vocab: int, byte_tokens: bool = False) -> list[int]:
    import gguf

    types = []
    for i in range(n_vocab):
        if i not in tokens:
            types.append(gguf.TokenType.UNUSED)
        elif byte_tokens and len(tokens[i]) == 6 and tokens[i].startswith("<0x") and tokens[i].endswith(">"):
            types.append(gguf.TokenType.BYTE)
        elif i in added:
            types.append(gguf.TokenType.CONTROL if added[i].get("special") else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
    return [int(t) for t in types]


def read_vocab(model_dir: str | Path, n_vocab: int) -> Vocab:
    """The tokenizer of `model_dir` (tokenizer.json) as GGUF vocabulary arrays."""
    path = Path(model_dir) / "tokenizer.json"
    if not path.is_file():
        raise ExportError(f"{model_dir}: no tokenizer.json (a fast tokenizer is needed to export the vocabulary)")
    tj = json.loads(path.read_text(encoding="utf-8"))
    model = tj.get("model") or {}
    if model.get("type") != "BPE":
        raise ExportError(f"{model_dir}: tokenizer model {model.get('type')!r}; the GGUF export supports BPE tokenizers "
                          "(byte-level like SmolLM2/Qwen2/Llama 3, or SentencePiece-style byte-fallback like Llama 2/Mistral)")
    added = _added_tokens(tj)
    tokens = {i: t for t, i in model["vocab"].items()}
    tokens.update({i: t["content"] for i, t in added.items()})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    decoder = (tj.get("decoder") or {}).get("type")
    if not model.get("byte_fallback") and decoder == "ByteLevel":
        return Vocab("gpt2", _pre_tokenizer_name(tj), _padded(tokens, n_vocab), _token_types(tokens, added, n_vocab), merges=merges)
    if model.get("byte_fallback"):
        return _sentencepiece_style(tj, tokens, added, merges, n_vocab)
    raise ExportError(f"{model_dir}: BPE tokenizer with decoder {decoder!r} is neither byte-level nor byte-fallback; not exportable")


def _sentencepiece_style(tj: dict, tokens: dict[int, str], added: dict[int, dict], merges: list[str], n_vocab: int) -> Vocab:
    """A SentencePiece BPE model as Hugging Face stores it (byte_fallback BPE over '▁'-joined text).
    llama.cpp's SPM tokenizer merges the adjacent pair whose result has the highest score, so the score
    of a token is minus the rank of the merge that makes it; tokens no merge makes score 0."""
    import gguf

    vocab = {t: i for i, t in tokens.items()}
    rank = {}
    for k, m in enumerate(merges):
        a, b = m.split(" ", 1)
        rank.setdefault(a + b, k)
    scores = [-float(rank[t]) if t in rank else 0.0 for t in _padded(tokens, n_vocab)]
    types = _token_types(tokens, added, n_vocab, byte_tokens=True)
    unk = (tj.get("model") or {}).get("unk_token")
    if unk in vocab:
        types[vocab[unk]] = int(gguf.TokenType.UNKNOWN)
    normalizer = json.dumps(tj.get("normalizer") or {})
    pre = tj.get("pre_tokenizer") or {}
    prefix = '"Prepend"' in normalizer or (pre.get("type") == "Metaspace" and pre.get("prepend_scheme", "always") != "never")
    return Vocab("llama", "default", _padded(tokens, n_vocab), types, scores=scores, merges=merges, add_space_prefix=prefix)


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
        arch=arch, config=config, n_layer=int(config["num_hidden_layers"]), n_head=n_head,
        n_head_kv=int(config.get("num_key_value_heads") or n_head), n_embd=n_embd,
        head_dim=int(config.get("head_dim") or n_embd // n_head), n_vocab=int(config["vocab_size"]),
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
    model_dir: str | Path, out_path: str | Path, out_type: str, tokenizer, chat_template: str,
    name: str, license: str | None = None, description: str | None = None,
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
    for typ, tok in (("bos", tokenizer.bos_token_id), ("eos", tokenizer.eos_token_id), ("pad", tokenizer.pad_token_id), ("unk", tokenizer.unk_token_id)):
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
    return {"type": out_type, "architecture": info.arch, "tensors": len(plan), "tensor_types": counts,
            "tokenizer": vocab.model, "pre_tokenizer": vocab.pre, "n_vocab": info.n_vocab, "tied_embeddings": info.tied,
            "stop_tokens": stops, "bytes": Path(out_path).stat().st_size}
