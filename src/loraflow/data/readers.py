"""Reading raw training data (JSONL, JSON, CSV/TSV, Parquet, or a hub dataset) into conversations.

File level (loraflow.data.sources): .gz/.bz2/.xz/.zst files are decompressed; the encoding comes from a
byte-order mark, else from the NUL-byte pattern of UTF-16/32 without one, else `data.encoding`; a
binary file is called one. JSON and JSONL are told apart by content (loraflow.data.jsonfiles: an
array, a `{"<key>": [rows]}` wrapper, or values one after another are JSON); CSV/TSV get their
delimiter and quoting from loraflow.data.dialect (TSV: no quoting unless the file uses CSV quoting
consistently). Every row carries its source location (record number, lines), which the clean stage's
content check (loraflow.data.conservation) compares with a reference reading of the file.

Row level: OpenAI/ChatML `messages` (string content or a list of text parts; role `developer` is the
system role), ShareGPT `conversations` (from/value, roles human/user, gpt/assistant/bot/model, system),
Alpaca (instruction/input/output with optional `system` and `history`) and question/answer rows are
recognised per row. A turn's `weight` (0: not trained on, 1: trained) is kept on its message; its
other keys (`name` ...) go to meta["turn_fields"]. Fields that are not part of the conversation are
returned as `meta` and carried through the data stages unchanged.

Structural problems (malformed JSON, bytes that are not in the encoding, rows without the mapped
columns, wrongly typed fields) become `RowError`s that name the file and line; the clean stage either
stops on them with a `DataError` (one message: file:line, what is wrong, the config key that fixes
it) or rejects the row with that reason.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from loraflow.data.dialect import DELIMITERS, iter_csv, pick_delimiter, pick_quoting
from loraflow.data.jsonfiles import iter_json, iter_jsonl, sniff_json_kind
from loraflow.data.records import DataError, RawRow, RowError, SourceInfo, digest, one_line
from loraflow.data.sources import (
    SAMPLE, ascii_compatible, candidate_encodings, choose_encoding, decode_bytes, encoding_hint, read_source, sniff_bom, strip_compression_suffix,
)

__all__ = ["DataError", "RowError", "RawRow", "SourceInfo", "sniff_bom", "suggest_encoding", "suggest_encodings",
           "decode_bytes", "detect_format", "sniff_json_kind", "iter_raw_rows", "iter_hub_rows", "to_conversation",
           "to_messages", "role_problem"]

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
#: Role names of the common formats, mapped to ChatML roles (OpenAI's `developer` is its newer system role).
ROLE_ALIASES = {
    "system": "system", "developer": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
}
#: Roles of tool-use turns (OpenAI, ShareGPT/LLaMA-Factory, Llama 3): not trainable as plain chat.
TOOL_ROLES = {"tool", "function", "function_call", "observation", "ipython", "tool_call", "tool_response"}
#: Content-part types that hold text (OpenAI chat and responses formats).
TEXT_PART_TYPES = {"text", "input_text", "output_text"}
#: Reasons that are problems of the file's structure: they stop the clean stage unless data.on_bad_row is reject.
STRUCTURAL = {"bad_json", "bad_encoding", "bad_csv", "bad_row", "missing_columns", "wrong_type", "bad_role"}
#: meta key of the turns' keys that are not part of the conversation (a message's `name` ...)
TURN_FIELDS = "turn_fields"
FILE_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
               ".parquet": "parquet", ".pq": "parquet"}
_DELIMITERS = DELIMITERS


def suggest_encodings(raw: bytes, limit: int = 3) -> list[str]:
    """The encodings charset-normalizer finds most plausible for (the first 256 kB of) `raw`, best first."""
    return candidate_encodings(raw)[:limit]


def suggest_encoding(raw: bytes) -> str | None:
    names = suggest_encodings(raw, 1)
    return names[0] if names else None


# --------------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------------


def format_from_extension(path: str) -> str | None:
    return _EXTENSIONS.get(Path(strip_compression_suffix(path)).suffix.lower())


def detect_format(path: str, fmt: str = "auto", head: str | None = None) -> str:
    """The file format: `fmt` unless auto; else the extension, checked against the content for JSON."""
    if fmt != "auto":
        return fmt
    by_ext = format_from_extension(path)
    if by_ext in ("json", "jsonl") and head is not None:
        return sniff_json_kind(head) or by_ext
    if by_ext:
        return by_ext
    if head is not None:
        kind = sniff_json_kind(head)
        if kind:
            return kind
    raise DataError(
        f"{path}: cannot tell the file format from the extension {Path(path).suffix!r} or the content; "
        f"set data.format (one of {', '.join(FILE_FORMATS)})"
    )


class RowStream:
    """The rows of one data file, in order (an iterator); `info` is filled while reading."""

    def __init__(self, path: str, fmt: str, encoding: str, delimiter: str | None, info: SourceInfo | None):
        self.info = info if info is not None else SourceInfo(path)
        self._rows = _read(path, fmt, encoding, delimiter, self.info)

    def __iter__(self) -> "RowStream":
        return self

    def __next__(self) -> RawRow:
        return next(self._rows)


def iter_raw_rows(path: str, fmt: str = "auto", encoding: str = "utf-8", delimiter: str | None = None,
                  info: SourceInfo | None = None) -> RowStream:
    """Every row of a data file with its source location; never drops a row silently.
    `info` (optional; also the stream's `.info`) is filled with the detected format, encoding and dialect."""
    if path.startswith("hf:"):
        raise DataError("hub datasets are read by iter_hub_rows, not iter_raw_rows")
    return RowStream(path, fmt, encoding, delimiter, info)


def decoded_source(path: str, fmt: str, encoding: str, info: SourceInfo) -> tuple[bytes, str, str | None, str]:
    """(bytes, encoding, whole text or None, format) of a text data file; parquet: (bytes, 'parquet', None, 'parquet')."""
    raw = read_source(path, info)
    inner = strip_compression_suffix(path) if info.compression else path
    if fmt == "parquet" or (fmt == "auto" and (format_from_extension(inner) == "parquet" or raw[:4] == b"PAR1")):
        return raw, "parquet", None, "parquet"
    encoding, raw = choose_encoding(path, raw, encoding, info)
    text = decode_bytes(path, raw, encoding) if not ascii_compatible(encoding) else None
    head = text[:SAMPLE] if text is not None else raw[:SAMPLE].decode(encoding, errors="replace")
    return raw, encoding, text, detect_format(inner, fmt, head)


def delimited_text(raw: bytes, encoding: str, text: str | None) -> str:
    """The text of a CSV/TSV file; bytes not valid in an ASCII-compatible encoding become escapes
    (U+DC80-U+DCFF) so that only their record is rejected."""
    return text if text is not None else raw.decode(encoding, errors="surrogateescape")


def _read(path: str, fmt: str, encoding: str, delimiter: str | None, info: SourceInfo) -> Iterator[RawRow]:
    raw, encoding, text, detected = decoded_source(path, fmt, encoding, info)
    info.encoding, info.file_format = encoding, detected
    inner = strip_compression_suffix(path) if info.compression else path
    if info.compression:
        info.notes.append(f"{info.compression}-compressed; decompressed while reading")
    if detected == "parquet":
        yield from _iter_parquet(path, raw)
        return
    by_ext = format_from_extension(inner)
    if fmt == "auto" and by_ext in ("json", "jsonl") and detected != by_ext:
        shape = "JSON spread over lines (an array, a wrapper object or pretty-printed values)" if detected == "json" else "one JSON value per line"
        info.notes.append(f"the file holds {shape}; read as {detected} despite its extension")
    hint_cache: list[str] = []

    def hint() -> str:
        if not hint_cache:
            hint_cache.append(encoding_hint(raw, encoding))
        return hint_cache[0]

    if detected == "jsonl":
        lines = text.split("\n") if text is not None else raw.split(b"\n")
        yield from iter_jsonl(path, lines, encoding, fmt != "auto", hint)
    elif detected == "json":
        rows, info.json_key = iter_json(path, text if text is not None else decode_bytes(path, raw, encoding), fmt != "auto", info.notes)
        yield from rows
    elif detected in ("csv", "tsv"):
        body = delimited_text(raw, encoding, text)
        sep = pick_delimiter(body, detected, delimiter)
        notes: list[str] = []
        quoting = pick_quoting(path, body, sep, notes)
        info.delimiter, info.quoting = sep, "none" if quoting == csv.QUOTE_NONE else "minimal"
        info.notes += notes
        yield from iter_csv(path, body, sep, quoting, delimiter is not None, encoding, hint)
    else:
        raise DataError(f"{path}: unknown data.format {detected!r} (one of auto, {', '.join(FILE_FORMATS)})")


def _jsonable(row: dict) -> dict:
    try:
        json.dumps(row, ensure_ascii=False)
        return row
    except (TypeError, ValueError):
        return json.loads(json.dumps(row, ensure_ascii=False, default=str))


def parquet_file(path: str, raw: bytes):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(pa.BufferReader(raw))
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({one_line(exc)}); check data.path and data.format") from None


def _iter_parquet(path: str, raw: bytes) -> Iterator[RawRow]:
    number = 0
    try:
        for batch in parquet_file(path, raw).iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                number += 1
                data = _jsonable(row)
                yield RawRow(number, data, None, f"{path}: row {number}", number, 0, digest(data), path)
    except DataError:
        raise
    except Exception as exc:  # a damaged column chunk
        raise DataError(f"{path}: row {number + 1}: unreadable Parquet data ({one_line(exc)}); check the file") from None


def iter_hub_rows(name: str, split: str) -> Iterator[RawRow]:
    """Rows of a hub dataset (`hf:<id>`); needs internet, never used by the default config."""
    from datasets import load_dataset

    for number, row in enumerate(load_dataset(name.removeprefix("hf:"), split=split), start=1):
        data = _jsonable(dict(row))
        yield RawRow(number, data, None, f"{name}: row {number}", number, 0, "", name)


# --------------------------------------------------------------------------------------------------
# Rows -> conversations
# --------------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One conversation turn before cleaning: its role and the source fields it is made of."""

    role: str
    parts: list[tuple[str, str]]  # (field path in the source row, text)
    sep: str = "\n"
    weight: int | None = None  # per-turn training weight (0: not trained on, 1: trained), when the source has one

    def content(self) -> str:
        return self.sep.join(text for _, text in self.parts)


@dataclass
class Conversation:
    row_format: str  # messages | sharegpt | alpaca | qa
    turns: list[Turn]
    meta: dict


#: keys of a turn that are part of the conversation; any other key (`name`, ...) goes to meta["turn_fields"]
_TURN_OWN_KEYS = {"role", "from", "content", "value", "weight"}


def _weight(t: dict, path: str, where: str) -> int | None:
    """A turn's `weight` (axolotl's convention: 0 = not trained on, 1 = trained), or None without one."""
    if "weight" not in t:
        return None
    w = t["weight"]
    if isinstance(w, bool) or (isinstance(w, (int, float)) and w in (0, 1)):
        return int(w)
    raise RowError("wrong_type", f"{where}: {path}.weight must be 0, 1, true or false, got {w!r}")


def _turn_list(row: dict, key: str, where: str, extra: dict | None = None) -> list[Turn]:
    """The turns of a messages/conversations list; keys of a turn that are not part of the
    conversation are put into `extra` by turn (e.g. {"messages[1]": {"name": "alice"}})."""
    turns = row[key]
    if not isinstance(turns, list) or not turns:
        raise RowError("wrong_type", f"{where}: field {key!r} must be a non-empty list of turns")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict):
            raise RowError("wrong_type", f"{where}: {key}[{i}] must be an object, got {type(t).__name__}")
        role_key = "role" if "role" in t else "from"
        role = t.get(role_key)
        if not isinstance(role, str):
            raise RowError("wrong_type", f"{where}: {key}[{i}] needs a string 'role' (or ShareGPT 'from')")
        if role.lower() in TOOL_ROLES or t.get("tool_calls") or t.get("function_call"):
            what = f"role {role!r}" if role.lower() in TOOL_ROLES else "tool_calls"
            raise RowError("tool_calls", f"{where}: {key}[{i}] is a tool-call turn ({what}); loraflow trains on plain "
                                         "chat turns, so conversations with tool calls are rejected")
        mapped = ROLE_ALIASES.get(role.lower())
        if mapped is None:
            raise RowError("bad_role", f"{where}: {key}[{i}] has unknown role {role!r} (allowed: system/developer, "
                                       "user/human, assistant/gpt/bot/model)")
        content_key = "content" if "content" in t else "value"
        path = f"{key}[{i}].{content_key}"
        content = t.get(content_key)
        if isinstance(content, str):
            parts = [(path, content)]
        elif isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                if isinstance(part, str):
                    parts.append((f"{path}[{j}]", part))
                elif isinstance(part, dict) and part.get("type", "text") in TEXT_PART_TYPES and isinstance(part.get("text"), str):
                    parts.append((f"{path}[{j}].text", part["text"]))
                elif isinstance(part, dict) and isinstance(part.get("type"), str):
                    raise RowError("non_text_content", f"{where}: {path}[{j}] is a {part['type']!r} part; only text parts can be trained on")
                else:
                    raise RowError("wrong_type", f"{where}: {path}[{j}] must be a text part {{'type': 'text', 'text': ...}}")
            if not parts:
                raise RowError("wrong_type", f"{where}: {path} is an empty list of parts")
        else:
            got = "null" if content is None else type(content).__name__
            raise RowError("wrong_type", f"{where}: {key}[{i}] needs a string '{content_key}' (or a list of text parts), got {got}")
        out.append(Turn(mapped, parts, weight=_weight(t, f"{key}[{i}]", where)))
        others = {k: v for k, v in t.items() if k not in _TURN_OWN_KEYS and k != role_key and k != content_key}
        if others and extra is not None:
            extra[f"{key}[{i}]"] = others
    return out


def _text(row: dict, key: str, where: str) -> str:
    value = row[key]
    if not isinstance(value, str):
        raise RowError("wrong_type", f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    return value


def _history(row: dict, key: str, where: str) -> list[Turn]:
    history = row.get(key)
    if history is None:
        return []
    if not isinstance(history, list):
        raise RowError("wrong_type", f"{where}: field {key!r} must be a list of [question, answer] pairs")
    turns = []
    for k, pair in enumerate(history):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(x, str) for x in pair)):
            raise RowError("wrong_type", f"{where}: {key}[{k}] must be a [question, answer] pair of strings")
        turns += [Turn("user", [(f"{key}[{k}][0]", pair[0])]), Turn("assistant", [(f"{key}[{k}][1]", pair[1])])]
    return turns


def _split_hint(row: dict) -> str:
    """A CSV read with the wrong delimiter has one column whose name holds the real delimiter."""
    if len(row) == 1 and any(sep in str(next(iter(row))) for sep in _DELIMITERS):
        return ", or data.delimiter: the header was read as one column"
    return ""


def to_conversation(row: Any, columns: dict[str, str], where: str) -> Conversation:
    """Recognise the row's format and split it into turns (with their source fields) and metadata."""
    if not isinstance(row, dict):
        raise RowError("bad_row", f"{where}: expected an object, got {type(row).__name__}")
    c = {"conversations": "conversations", "history": "history", "system": "system", **columns}
    turn_fields: dict = {}
    if c["messages"] in row:
        fmt, used, turns = "messages", [c["messages"]], _turn_list(row, c["messages"], where, turn_fields)
    elif c["conversations"] in row:
        fmt, used, turns = "sharegpt", [c["conversations"]], _turn_list(row, c["conversations"], where, turn_fields)
    elif c["instruction"] in row and c["output"] in row:
        fmt, used = "alpaca", [c["instruction"], c["input"], c["output"], c["history"]]
        parts = [(c["instruction"], _text(row, c["instruction"], where))]
        if row.get(c["input"]) is not None and _text(row, c["input"], where).strip():
            parts.append((c["input"], row[c["input"]]))
        turns = [*_history(row, c["history"], where), Turn("user", parts, "\n\n"),
                 Turn("assistant", [(c["output"], _text(row, c["output"], where))])]
    elif c["question"] in row and c["answer"] in row:
        fmt, used = "qa", [c["question"], c["answer"]]
        turns = [Turn("user", [(c["question"], _text(row, c["question"], where))]),
                 Turn("assistant", [(c["answer"], _text(row, c["answer"], where))])]
    else:
        keys = ", ".join(sorted(map(str, row))) or "none"
        raise RowError(
            "missing_columns",
            f"{where}: row has none of the mapped column sets [{c['messages']}] | [{c['conversations']}] | "
            f"[{c['instruction']}, {c['output']}] | [{c['question']}, {c['answer']}]; its keys: {keys} "
            f"(set data.columns to map yours{_split_hint(row)})",
        )
    system = row.get(c["system"])
    if system is not None:
        used.append(c["system"])
        if turns[0].role == "system":
            raise RowError("role_order", f"{where}: both a {c['system']!r} field and a system turn")
        turns.insert(0, Turn("system", [(c["system"], _text(row, c["system"], where))]))
    meta = {k: v for k, v in row.items() if k not in used}
    if turn_fields:
        if TURN_FIELDS in meta:
            raise RowError("wrong_type", f"{where}: the row has a field {TURN_FIELDS!r}, the name loraflow keeps the turns' "
                                         "other keys (such as `name`) under; rename it")
        meta[TURN_FIELDS] = turn_fields
    return Conversation(fmt, turns, meta)


def message(role: str, content: str, weight: int | None) -> dict:
    """A message dict: role and content, and `weight` only when the source turn has one."""
    return {"role": role, "content": content} if weight is None else {"role": role, "content": content, "weight": weight}


def to_messages(row: Any, columns: dict[str, str], where: str) -> list[dict]:
    """Map one parsed row to a list of {role, content[, weight]} messages (uncleaned), or raise RowError."""
    conv = to_conversation(row, columns, where)
    return [message(t.role, t.content(), t.weight) for t in conv.turns]


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
