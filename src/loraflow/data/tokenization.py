"""Tokenise stage: token ids and assistant-only label masks for all splits, once for the whole grid.

Stored as .npz (flat int32 ids, uint8 mask, offsets; no pickles). meta.json records a digest of the
tokenizer files, the split files and the settings, and `load_split` refuses a cache whose digest does
not match the tokenizer it is used with.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from loraflow.data.settings import SplitFiles, TokenFiles
from loraflow.io import atomic_path, read_json, read_jsonl, sha256_files, write_json

log = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
)


class StaleCacheError(RuntimeError):
    pass


def tokenizer_digest(model_dir: str) -> str:
    files = [Path(model_dir) / f for f in TOKENIZER_FILES if (Path(model_dir) / f).is_file()]
    if not files:
        raise FileNotFoundError(f"no tokenizer files in {model_dir}")
    return sha256_files(files)


def _mask(offsets, spans: list[list[int]]) -> list[int]:
    """1 for tokens lying inside an assistant span (and covering at least one character)."""
    off = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)
    inside = np.zeros(len(off), dtype=bool)
    for s, e in spans:
        inside |= (off[:, 0] >= s) & (off[:, 1] <= e)
    return (inside & (off[:, 1] > off[:, 0])).astype(np.uint8).tolist()


def _encode(tokenizer, text: str, spans: list[list[int]]) -> tuple[list[int], list[int]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], _mask(enc["offset_mapping"], spans)


def _encode_rows(tokenizer, rows: list[dict], batch: int = 256):
    """(ids, mask) per row, tokenised in batches (the fast tokenizer runs a batch in parallel)."""
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        enc = tokenizer([r["text"] for r in chunk], add_special_tokens=False, return_offsets_mapping=True)
        for row, ids, offsets in zip(chunk, enc["input_ids"], enc["offset_mapping"]):
            yield row, ids, _mask(offsets, row["assistant_spans"])


def encode_example(
    tokenizer, text: str, spans: list[list[int]], max_length: int, truncate: bool = False
) -> tuple[list[int], list[int]]:
    """Token ids and a 0/1 mask that is 1 exactly on tokens inside an assistant span.

    Longer than `max_length`: with `truncate` the first max_length tokens are kept (the mask is
    computed on the whole text first, so it stays exact), else ValueError."""
    ids, mask = _encode(tokenizer, text, spans)
    if len(ids) > max_length:
        if not truncate:
            raise ValueError(
                f"example has {len(ids)} tokens > tokenize.max_length={max_length}; the clean stage should have "
                "rejected it"
            )
        ids, mask = ids[:max_length], mask[:max_length]
    return ids, mask


def tokenize_splits(
    model_dir: str, splits: SplitFiles, out: TokenFiles, max_length: int, overlong: str = "truncate"
) -> dict:
    """Tokenise stage entry point. tokenize.overlong = truncate cuts examples at max_length (the clean
    stage has already rejected rows whose prompt alone does not fit, and recorded every cut answer);
    the split files, and so the test references, keep the whole text."""
    split_paths = {"train": splits.train, "val": splits.val, "test": splits.test}
    out_paths = {"train": out.out_train, "val": out.out_val, "test": out.out_test}
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if not tokenizer.is_fast:
        raise ValueError(f"{model_dir}: a fast tokenizer (offset mapping) is needed to build label masks")
    meta: dict[str, Any] = {
        "tokenizer_sha256": tokenizer_digest(model_dir),
        "data_sha256": sha256_files(split_paths.values()),
        "max_length": max_length,
        "overlong": overlong,
        "splits": {},
    }
    for name, path in split_paths.items():
        rows = read_jsonl(path)
        ids, masks, offsets = [], [], [0]
        truncated = longest = 0
        for row, i, m in _encode_rows(tokenizer, rows):
            if len(i) > max_length:
                if overlong != "truncate":
                    raise ValueError(
                        f"{path}: example {row['id']} has {len(i)} tokens > tokenize.max_length={max_length}; "
                        "the clean stage should have rejected it (rerun clean)"
                    )
                i, m = i[:max_length], m[:max_length]
                truncated += 1
            longest = max(longest, len(i))
            ids.extend(i)
            masks.extend(m)
            offsets.append(len(ids))
        with atomic_path(out_paths[name]) as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    input_ids=np.asarray(ids, dtype=np.int32),
                    labels_mask=np.asarray(masks, dtype=np.uint8),
                    offsets=np.asarray(offsets, dtype=np.int64),
                )
        meta["splits"][name] = {
            "examples": len(rows),
            "tokens": len(ids),
            "supervised_tokens": int(sum(masks)),
            "truncated": truncated,
            "longest": longest,
        }  # tokens of the longest example (bounds a forward pass: memory estimates)
        log.info(
            "tokenised %s: %d examples (%d truncated at %d tokens), %d tokens (%d supervised)",
            name,
            len(rows),
            truncated,
            max_length,
            len(ids),
            sum(masks),
        )
    write_json(out.meta_path, meta)
    return meta


def load_split(path: str, meta_path: str, model_dir: str) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(ids, mask)] per example; raises StaleCacheError if the cache was built with another tokenizer."""
    meta = read_json(meta_path)
    current = tokenizer_digest(model_dir)
    if meta["tokenizer_sha256"] != current:
        raise StaleCacheError(
            f"{meta_path}: token cache was built with another tokenizer ({meta['tokenizer_sha256'][:12]} != "
            f"{current[:12]}); rerun the tokenize rule"
        )
    with np.load(path, allow_pickle=False) as npz:
        ids, mask, offsets = npz["input_ids"], npz["labels_mask"], npz["offsets"]
    return [(ids[a:b], mask[a:b]) for a, b in zip(offsets[:-1], offsets[1:])]
