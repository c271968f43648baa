"""Duplicate keys of the clean stage (clean.dedup): `exact` (the same conversation after NFC and trimming)
or `near` (equal up to case, full-width forms, spacing and trailing punctuation). The split stage groups
rows by the near key of their prompt (loraflow.data.split.prompt_key)."""

from __future__ import annotations

import re
import unicodedata

from loraflow.data.fixers import nfc

DEDUP_MODES = {"exact": "exact", "near": "near", "none": "none", True: "exact", False: "none"}

_WS = re.compile(r"\s+")


def exact_key(messages: list[dict]) -> str:
    """Conversations that are the same after NFC and trimming each turn's whitespace."""
    return "\x1f".join(m["role"] + ":" + nfc(m["content"]).strip() for m in messages)


def _fold_width(text: str) -> str:
    """Full-width ASCII variants (U+FF01-U+FF5E) and the ideographic space -> ASCII; nothing else."""
    return "".join(
        chr(ord(ch) - 0xFEE0) if "\uff01" <= ch <= "\uff5e" else " " if ch == "\u3000" else ch for ch in text
    )


def near_text(text: str) -> str:
    """Text under the near-duplicate key: NFC, full-width ASCII folded, case folded, whitespace runs
    collapsed and trailing punctuation/whitespace removed. Letters, digits, combining marks and
    symbols (operators) all stay, so texts that differ in one of them never collide."""
    t = _WS.sub(" ", nfc(_fold_width(nfc(text))).casefold()).strip()
    end = len(t)
    while end and (t[end - 1].isspace() or unicodedata.category(t[end - 1]).startswith("P")):
        end -= 1
    return t[:end]


def near_key(messages: list[dict]) -> str:
    """Conversations equal up to case, full-width forms, spacing and trailing punctuation."""
    return "\x1f".join(m["role"] + ":" + near_text(m["content"]) for m in messages)


def dedup_key(messages: list[dict], mode: str = "exact") -> str:
    return near_key(messages) if mode == "near" else exact_key(messages)
