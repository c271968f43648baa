"""The tokenizer of a Hugging Face model directory (tokenizer.json) as GGUF vocabulary arrays.

Byte-level BPE (GPT-2 style: SmolLM2, Qwen2, Llama 3) with merges and the pre-tokenizer llama.cpp must
use; SentencePiece-style byte-fallback BPE (Llama 2, Mistral) with scores that rank merges. Special added
tokens are CONTROL tokens, so llama.cpp parses them whole and never prints them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from loraflow.ship.exportable import ExportError

# Pre-tokenizer regexes of the byte-level BPE tokenizers we know (from their tokenizer.json files).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass
class Vocab:
    model: str  # tokenizer.ggml.model: gpt2 | llama
    pre: str  # tokenizer.ggml.pre
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
        raise ExportError(
            f"{model_dir}: tokenizer model {model.get('type')!r}; the GGUF export supports BPE tokenizers "
            "(byte-level like SmolLM2/Qwen2/Llama 3, or SentencePiece-style byte-fallback like Llama 2/Mistral)"
        )
    added = _added_tokens(tj)
    tokens = {i: t for t, i in model["vocab"].items()}
    tokens.update({i: t["content"] for i, t in added.items()})
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    decoder = (tj.get("decoder") or {}).get("type")
    if not model.get("byte_fallback") and decoder == "ByteLevel":
        return Vocab(
            "gpt2",
            _pre_tokenizer_name(tj),
            _padded(tokens, n_vocab),
            _token_types(tokens, added, n_vocab),
            merges=merges,
        )
    if model.get("byte_fallback"):
        return _sentencepiece_style(tj, tokens, added, merges, n_vocab)
    raise ExportError(
        f"{model_dir}: BPE tokenizer with decoder {decoder!r} is neither byte-level nor byte-fallback; not exportable"
    )


def _sentencepiece_style(
    tj: dict, tokens: dict[int, str], added: dict[int, dict], merges: list[str], n_vocab: int
) -> Vocab:
    """A SentencePiece BPE model as Hugging Face stores it (byte_fallback BPE over '▁'-joined text).
    llama.cpp's SPM tokenizer merges the adjacent pair whose result has the highest score, so the score
    of a token is minus the rank of the merge that makes it; tokens no merge makes score 0."""
    import gguf

    vocab = {t: i for i, t in tokens.items()}
    rank: dict[str, int] = {}
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
    prefix = '"Prepend"' in normalizer or (
        pre.get("type") == "Metaspace" and pre.get("prepend_scheme", "always") != "never"
    )
    return Vocab(
        "llama", "default", _padded(tokens, n_vocab), types, scores=scores, merges=merges, add_space_prefix=prefix
    )
