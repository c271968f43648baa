"""Reading raw training data (JSONL, JSON, CSV, or a hub dataset) into conversations.

Structural problems (malformed JSON, bytes that are not in the declared encoding, rows without
the mapped columns, wrongly typed fields) become `RowError`s that name the file and line; the
clean stage either stops on them or rejects the row with that reason.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Bad input data; the message names the file and line."""


class RowError(ValueError):
    """One row cannot be used; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class RawRow:
    line: int  # 1-based line (JSONL/CSV record start) or item number (JSON array)
    data: Any = None  # the parsed row, or the raw text when parsing failed
    error: RowError | None = None


def detect_format(path: str, fmt: str = "auto") -> str:
    if fmt != "auto":
        return fmt
    suffix = Path(path).suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".csv", ".tsv"):
        return "csv"
    raise DataError(f"{path}: cannot tell the format from the extension {suffix!r}; set data.format")


def iter_raw_rows(path: str, fmt: str = "auto", encoding: str = "utf-8") -> Iterator[RawRow]:
    """Yield every row of a data file with its line number; never drops a row silently."""
    if path.startswith("hf:"):
        raise DataError("hub datasets are read by iter_hub_rows, not iter_raw_rows")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: data file not found")
    fmt = detect_format(path, fmt)
    raw = p.read_bytes()
    if fmt == "jsonl":
        yield from _iter_jsonl(path, raw, encoding)
    elif fmt == "json":
        yield from _iter_json(path, _decode(path, raw, encoding))
    else:
        yield from _iter_csv(path, _decode(path, raw, encoding), delimiter="\t" if p.suffix == ".tsv" else ",")


def _decode(path: str, raw: bytes, encoding: str) -> str:
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(
            f"{path}:{line}: bytes are not valid {encoding} ({exc.reason} at byte {exc.start}); "
            f"set data.encoding (e.g. gb18030) if the file uses another encoding"
        ) from None
    return text.removeprefix("\ufeff")


def _iter_jsonl(path: str, raw: bytes, encoding: str) -> Iterator[RawRow]:
    for number, line_bytes in enumerate(raw.split(b"\n"), start=1):
        if number == 1:
            line_bytes = line_bytes.removeprefix(b"\xef\xbb\xbf")
        try:
            line = line_bytes.decode(encoding)
        except UnicodeDecodeError as exc:
            text = line_bytes.decode(encoding, errors="replace")
            yield RawRow(number, text, RowError("bad_encoding", f"{path}:{number}: not valid {encoding} ({exc.reason})"))
            continue
        if not line.strip():
            continue
        try:
            yield RawRow(number, json.loads(line))
        except json.JSONDecodeError as exc:
            yield RawRow(number, line, RowError("bad_json", f"{path}:{number}: malformed JSON ({exc.msg} at column {exc.colno})"))


def _iter_json(path: str, text: str) -> Iterator[RawRow]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json data file must hold a list of rows (or {{'data': [...]}})")
    for number, row in enumerate(data, start=1):
        yield RawRow(number, row)


def _iter_csv(path: str, text: str, delimiter: str) -> Iterator[RawRow]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    start = reader.line_num + 1
    for record in reader:
        if not any(cell.strip() for cell in record):
            start = reader.line_num + 1
            continue
        if len(record) != len(header):
            detail = f"{path}:{start}: {len(record)} fields, header has {len(header)}"
            yield RawRow(start, delimiter.join(record), RowError("bad_csv", detail))
        else:
            yield RawRow(start, dict(zip(header, record)))
        start = reader.line_num + 1


def iter_hub_rows(name: str, split: str) -> Iterator[RawRow]:
    """Rows of a hub dataset (`hf:<id>`); needs internet, never used by the default config."""
    from datasets import load_dataset

    for number, row in enumerate(load_dataset(name.removeprefix("hf:"), split=split), start=1):
        yield RawRow(number, dict(row))


def to_messages(row: Any, columns: dict[str, str], where: str) -> list[dict]:
    """Map one parsed row to a list of {role, content} messages, or raise RowError."""
    if not isinstance(row, dict):
        raise RowError("bad_row", f"{where}: expected an object, got {type(row).__name__}")
    c = columns
    if c["messages"] in row:
        return _check_messages(row[c["messages"]], where)
    if c["instruction"] in row and c["output"] in row:
        instruction = _text_field(row, c["instruction"], where)
        extra = row.get(c["input"])
        extra = _text_field(row, c["input"], where) if extra is not None else ""
        user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
        messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _text_field(row, c["output"], where)}]
    elif c["question"] in row and c["answer"] in row:
        messages = [
            {"role": "user", "content": _text_field(row, c["question"], where)},
            {"role": "assistant", "content": _text_field(row, c["answer"], where)},
        ]
    else:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise RowError(
            "missing_columns",
            f"{where}: row has none of the mapped column sets "
            f"[{c['messages']}] | [{c['instruction']}, {c['output']}] | [{c['question']}, {c['answer']}]; "
            f"its keys: {keys} (set data.columns to map yours)",
        )
    system = row.get(c["system"])
    if system is not None:
        messages.insert(0, {"role": "system", "content": _text_field(row, c["system"], where)})
    return messages


def _text_field(row: dict, key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _check_messages(messages: Any, where: str) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise RowError("wrong_type", f"{where}: 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RowError("wrong_type", f"{where}: messages[{i}] must be an object with string 'role' and 'content'")
        if m["role"] not in ROLES:
            raise RowError("bad_role", f"{where}: messages[{i}] has unknown role {m['role']!r} (allowed: {', '.join(ROLES)})")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def role_problem(messages: list[dict]) -> tuple[str, str] | None:
    """(reason, detail) if the turn order is unusable for supervised training, else None."""
    roles = [m["role"] for m in messages]
    if "assistant" not in roles:
        return "no_assistant", "no assistant turn to learn from"
    body = roles[1:] if roles[0] == "system" else roles
    if "system" in body:
        return "role_order", "a system message may only come first"
    expected = ["user", "assistant"] * (len(body) // 2 + 1)
    if body != expected[: len(body)] or body[-1] != "assistant":
        return "role_order", f"turns must alternate user/assistant and end with assistant, got {'/'.join(body)}"
    return None
