"""Clean stage: normalise text, fix what can be fixed, reject the rest with a reason.

Every input row ends in exactly one of clean.jsonl or rejected.jsonl; clean_stats.json records the
counts and the check rows_in == clean + rejected.
"""

from __future__ import annotations

import html
import logging
import re
import unicodedata
from collections import Counter
from typing import Iterable

from loraflow.io import write_json, write_jsonl
from loraflow.readers import DataError, RawRow, RowError, iter_hub_rows, iter_raw_rows, role_problem, to_messages

log = logging.getLogger(__name__)

_TAG = re.compile(r"</?[A-Za-z][A-Za-z0-9]*(?:\s[^<>]*)?/?>")
_MOJIBAKE_PAIR = re.compile(r"[\u00c2-\u00f4][\u0080-\u00bf\u2018-\u203a\u0152\u0153\u0160\u0161\u0178\u017d\u017e\u0192\u02c6\u02dc\u20ac\u2122]")
_SYMBOL_RUN = re.compile(r"([^\w\s])\1{3,}")
_SPACES = re.compile(r"[ \t\u3000]+")
_NEWLINES = re.compile(r"\n{3,}")
_KEEP_CONTROLS = {"\n", "\t"}


def is_mojibake(text: str) -> bool:
    """UTF-8 bytes that were decoded as Latin-1/cp1252 (e.g. 'æ´›' for '洛', 'â€™' for '’')."""
    pairs = _MOJIBAKE_PAIR.findall(text)
    if not pairs:
        return False
    for encoding in ("cp1252", "latin-1"):
        try:
            return text.encode(encoding).decode("utf-8") != text
        except UnicodeError:
            continue
    return len(pairs) >= 2


def normalize_text(text: str) -> str:
    """NFKC, HTML tags and entities removed, control/format characters removed, symbol runs and
    whitespace collapsed."""
    text = html.unescape(_TAG.sub(" ", text))
    text = unicodedata.normalize("NFKC", text).replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if ch in _KEEP_CONTROLS or unicodedata.category(ch) not in ("Cc", "Cf"))
    text = _SYMBOL_RUN.sub(lambda m: "..." if m.group(1) == "." else m.group(1), text)
    text = _SPACES.sub(" ", text)
    text = "\n".join(line.strip() for line in text.split("\n"))
    return _NEWLINES.sub("\n\n", text).strip()


def has_content(text: str) -> bool:
    return any(unicodedata.category(ch)[0] in "LN" for ch in text)


def dedup_key(messages: list[dict]) -> str:
    """Key under which near-identical conversations collide (case, spacing, trailing punctuation)."""
    parts = []
    for m in messages:
        t = unicodedata.normalize("NFKC", m["content"]).casefold()
        parts.append(m["role"] + ":" + re.sub(r"[\W_]+", "", t))
    return "\x1f".join(parts)


def _rejection(raw: RawRow, reason: str, detail: str) -> dict:
    return {"line": raw.line, "reason": reason, "detail": detail, "row": raw.data}


def _clean_row(raw: RawRow, where: str, columns: dict, min_answer_chars: int, max_chars: int, reject_mojibake: bool):
    """(messages, fixes) for a usable row; raises RowError with the rejection reason otherwise."""
    if raw.error:
        raise raw.error
    messages = to_messages(raw.data, columns, where)
    problem = role_problem(messages)
    if problem:
        raise RowError(*problem)
    if reject_mojibake:
        for m in messages:
            if is_mojibake(m["content"]):
                raise RowError("mojibake", f"{m['role']} text looks like UTF-8 decoded as Latin-1: {m['content'][:60]!r}")
    fixes = set()
    cleaned = []
    for m in messages:
        content = normalize_text(m["content"])
        if _TAG.search(m["content"]):
            fixes.add("html")
        if any(unicodedata.category(ch) in ("Cc", "Cf") and ch not in "\n\t\r" for ch in m["content"]):
            fixes.add("control_chars")
        if _SYMBOL_RUN.search(m["content"]):
            fixes.add("symbol_run")
        cleaned.append({"role": m["role"], "content": content})
    for m in cleaned:
        if m["role"] == "system":
            continue
        if not m["content"]:
            raise RowError("empty", f"empty {m['role']} turn")
        if not has_content(m["content"]):
            raise RowError("symbol_only", f"{m['role']} turn has only symbols: {m['content'][:40]!r}")
    answer = cleaned[-1]["content"]
    if len(answer) < min_answer_chars:
        raise RowError("too_short", f"answer has {len(answer)} characters (< clean.min_answer_chars={min_answer_chars})")
    total = sum(len(m["content"]) for m in cleaned)
    if total > max_chars:
        raise RowError("too_long", f"{total} characters (> clean.max_chars={max_chars})")
    return cleaned, fixes


def clean_rows(
    rows: Iterable[RawRow],
    source: str,
    columns: dict,
    on_bad_row: str = "error",
    min_answer_chars: int = 2,
    max_chars: int = 4000,
    reject_mojibake: bool = True,
    dedup: bool = True,
    token_length=None,
    max_tokens: int | None = None,
) -> tuple[list[dict], list[dict], dict]:
    """Pure cleaning logic: (clean rows, rejected rows, stats). `token_length(messages)` is optional."""
    structural = {"bad_json", "bad_encoding", "bad_csv", "bad_row", "missing_columns", "wrong_type", "bad_role"}
    clean, rejected, seen = [], [], {}
    fixes: Counter = Counter()
    rows_in = 0
    for raw in rows:
        rows_in += 1
        where = f"{source}:{raw.line}"
        try:
            messages, row_fixes = _clean_row(raw, where, columns, min_answer_chars, max_chars, reject_mojibake)
            if dedup:
                key = dedup_key(messages)
                if key in seen:
                    raise RowError("duplicate", f"same conversation as line {seen[key]} after normalisation")
                seen[key] = raw.line
            if token_length is not None and max_tokens is not None:
                n_tokens = token_length(messages)
                if n_tokens > max_tokens:
                    raise RowError("too_long", f"{n_tokens} tokens (> tokenize.max_length={max_tokens})")
        except RowError as err:
            if err.reason in structural and on_bad_row == "error":
                detail = err.detail if err.detail.startswith(source) else f"{where}: {err.detail}"
                raise DataError(f"{detail} (set data.on_bad_row: reject to skip such rows with a reason)") from None
            rejected.append(_rejection(raw, err.reason, err.detail))
            continue
        fixes.update(row_fixes)
        clean.append({"id": f"{raw.line}", "line": raw.line, "messages": messages})
    if rows_in == 0:
        raise DataError(f"{source}: no data rows found (empty file?)")
    if not clean:
        reasons = Counter(r["reason"] for r in rejected)
        raise DataError(f"{source}: all {rows_in} rows were rejected ({dict(reasons)}); nothing to train on")
    stats = {
        "input": source,
        "rows_in": rows_in,
        "clean": len(clean),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(Counter(r["reason"] for r in rejected).items())),
        "fixed": dict(sorted(fixes.items())),
        "conserved": rows_in == len(clean) + len(rejected),
    }
    if not stats["conserved"]:
        raise AssertionError(f"row conservation broken: {stats}")
    return clean, rejected, stats


def clean_dataset(
    data_path: str,
    model_dir: str,
    out_clean: str,
    out_rejected: str,
    out_stats: str,
    columns: dict,
    data_format: str = "auto",
    encoding: str = "utf-8",
    hf_split: str = "train",
    on_bad_row: str = "error",
    min_answer_chars: int = 2,
    max_chars: int = 4000,
    max_tokens: int = 512,
    reject_mojibake: bool = True,
    dedup: bool = True,
    system_prompt: str = "",
) -> dict:
    """Clean stage entry point. Token lengths use the base model's chat template and tokenizer."""
    from transformers import AutoTokenizer

    from loraflow.chatml import ensure_chat_template, render, with_system_prompt

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ensure_chat_template(tokenizer)

    def token_length(messages):
        return len(tokenizer(render(tokenizer, with_system_prompt(messages, system_prompt)))["input_ids"])

    rows = iter_hub_rows(data_path, hf_split) if data_path.startswith("hf:") else iter_raw_rows(data_path, data_format, encoding)
    clean, rejected, stats = clean_rows(
        rows, data_path, columns, on_bad_row, min_answer_chars, max_chars, reject_mojibake, dedup, token_length, max_tokens
    )
    write_jsonl(out_clean, clean)
    write_jsonl(out_rejected, rejected)
    write_json(out_stats, stats)
    log.info("clean: %d rows in, %d clean, %d rejected %s", stats["rows_in"], stats["clean"], stats["rejected"], stats["rejected_by_reason"])
    return stats
