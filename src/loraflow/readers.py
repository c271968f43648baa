"""Reading raw training data (JSONL, JSON, CSV/TSV, Parquet, or a hub dataset) into conversations.

File level: the encoding comes from a byte-order mark when there is one (UTF-8/16/32), else from
`data.encoding`; UTF-16/32 files are decoded as a whole before they are split into lines. JSON and
JSONL are told apart by content, not only by the extension (case-insensitive); the CSV delimiter is
`data.delimiter` or sniffed (csv.Sniffer, checked against the field counts of the first records).

Row level: OpenAI/ChatML `messages` (string content or a list of text parts), ShareGPT
`conversations` (from/value, roles human/user, gpt/assistant/bot/model, system), Alpaca
(instruction/input/output with optional `system` and `history`) and question/answer rows are
recognised per row. Fields that are not part of the conversation are returned as `meta` and carried
through the data stages unchanged.

Structural problems (malformed JSON, bytes that are not in the encoding, rows without the mapped
columns, wrongly typed fields) become `RowError`s that name the file and line; the clean stage either
stops on them with a `DataError` (one message: file:line, what is wrong, the config key that fixes
it) or rejects the row with that reason.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger(__name__)

ROLES = ("system", "user", "assistant")
#: Role names of the common formats, mapped to ChatML roles.
ROLE_ALIASES = {
    "system": "system",
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant", "bot": "assistant", "model": "assistant", "chatgpt": "assistant",
}
#: Roles of tool-use turns (OpenAI, ShareGPT/LLaMA-Factory, Llama 3): not trainable as plain chat.
TOOL_ROLES = {"tool", "function", "function_call", "observation", "ipython", "tool_call", "tool_response"}
#: Content-part types that hold text (OpenAI chat and responses formats).
TEXT_PART_TYPES = {"text", "input_text", "output_text"}
#: Reasons that are problems of the file's structure: they stop the clean stage unless data.on_bad_row is reject.
STRUCTURAL = {"bad_json", "bad_encoding", "bad_csv", "bad_row", "missing_columns", "wrong_type", "bad_role"}
FILE_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".tab": "tsv",
               ".parquet": "parquet", ".pq": "parquet"}
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))
_DELIMITERS = (",", "\t", ";", "|")
_DELIMITER_NAMES = {",": "','", "\t": "tab", ";": "';'", "|": "'|'"}


class DataError(ValueError):
    """Bad input data. The message is meant for the user as it is: file:line, what is wrong, and the
    config key that fixes it. The workflow prints it once, without a traceback (loraflow.runner)."""

    expected_error = True


class RowError(ValueError):
    """One row cannot be used; `reason` is a short machine-readable tag."""

    def __init__(self, reason: str, detail: str):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class RawRow:
    line: int  # 1-based line (JSONL/CSV record start), item number (JSON array) or row number (Parquet, hub)
    data: Any = None  # the parsed row, or the raw text when parsing failed
    error: RowError | None = None
    where: str = ""  # "file:line" or "file: item N" for messages; set by the readers


@dataclass
class SourceInfo:
    """What the reader found out about a file (logged and written to clean_stats.json)."""

    path: str
    file_format: str = ""
    encoding: str = ""
    delimiter: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = {"file_format": self.file_format, "encoding": self.encoding}
        if self.delimiter is not None:
            out["delimiter"] = self.delimiter
        if self.notes:
            out["notes"] = list(self.notes)
        return out


# --------------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------------


def sniff_bom(raw: bytes) -> tuple[str | None, int]:
    """(encoding, BOM length) from a byte-order mark; (None, 0) without one. UTF-32 is tested first
    because its little-endian BOM starts with the UTF-16 one."""
    for bom, name in _BOMS:
        if raw.startswith(bom):
            return name, len(bom)
    return None, 0


def suggest_encodings(raw: bytes, limit: int = 3) -> list[str]:
    """The encodings charset-normalizer finds most plausible for (the first 256 kB of) `raw`, best first."""
    from charset_normalizer import from_bytes

    sample = raw[: 1 << 18]
    if len(raw) > len(sample) and b"\n" in sample:  # never cut a multi-byte character in two
        sample = sample[: sample.rfind(b"\n") + 1]
    results = from_bytes(sample)
    best = results.best()
    names = [best.encoding] if best else []
    names += [r.encoding for r in results if r.encoding not in names]
    return names[:limit]


def suggest_encoding(raw: bytes) -> str | None:
    names = suggest_encodings(raw, 1)
    return names[0] if names else None


def _encoding_hint(raw: bytes, encoding: str) -> str:
    own = codecs.lookup(encoding).name
    guesses = [g for g in suggest_encodings(raw) if codecs.lookup(g).name != own]
    if guesses:
        more = f" (charset detection's guess; also possible: {', '.join(guesses[1:])})" if len(guesses) > 1 else " (charset detection's guess)"
        return f"set data.encoding: {guesses[0]}{more}"
    return "set data.encoding to the file's encoding (e.g. gb18030, cp1252, utf-16)"


def _ascii_compatible(encoding: str) -> bool:
    """True when newline and the JSON/CSV syntax characters are single ASCII bytes in `encoding`,
    so the bytes may be split into lines before decoding."""
    try:
        return "\n{[,\"".encode(encoding) == b"\n{[,\""
    except (LookupError, UnicodeError):
        return False


def _family(encoding: str) -> str:
    """utf-16 for utf-16 / utf-16-le / utf-16-be, utf-8 for utf-8 / utf-8-sig, else the codec name."""
    name = codecs.lookup(encoding).name
    for suffix in ("-sig", "-le", "-be"):
        name = name.removesuffix(suffix)
    return name


def _check_encoding_name(encoding: str) -> str:
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        raise DataError(f"data.encoding: unknown encoding {encoding!r} (e.g. utf-8, gb18030, cp1252, utf-16)") from None


def decode_bytes(path: str, raw: bytes, encoding: str) -> str:
    """Decode a whole file; a byte that is not valid names its line and the encoding to try."""
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].decode(encoding, errors="replace").count("\n") + 1
        raise DataError(
            f"{path}:{line}: bytes are not valid {encoding} ({exc.reason} at byte {exc.start}); {_encoding_hint(raw, encoding)}"
        ) from None


# --------------------------------------------------------------------------------------------------
# File formats
# --------------------------------------------------------------------------------------------------


def format_from_extension(path: str) -> str | None:
    return _EXTENSIONS.get(Path(path).suffix.lower())


def sniff_json_kind(text: str) -> str | None:
    """'json' (one value: an array, or an object holding a `data` list), 'jsonl' (one value per line),
    or None when the text does not start like JSON."""
    start = len(text) - len(text.lstrip())
    if start == len(text) or text[start] not in "[{":
        return None
    if text[start] == "[":
        return "json"
    try:
        first, end = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    rest = text[end:].lstrip()
    if not rest:  # a single object: a `{"data": [...]}` file, or a one-row JSONL file
        return "json" if isinstance(first, dict) and isinstance(first.get("data"), list) else "jsonl"
    return "jsonl" if "\n" in text[end : len(text) - len(rest)] else None


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


def iter_raw_rows(path: str, fmt: str = "auto", encoding: str = "utf-8", delimiter: str | None = None,
                  info: SourceInfo | None = None) -> Iterator[RawRow]:
    """Yield every row of a data file with its line number; never drops a row silently.
    `info` (optional) is filled with the detected format, encoding and delimiter."""
    if path.startswith("hf:"):
        raise DataError("hub datasets are read by iter_hub_rows, not iter_raw_rows")
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: data file not found (data.path)")
    info = info if info is not None else SourceInfo(path)
    raw = p.read_bytes()
    if fmt == "parquet" or (fmt == "auto" and (format_from_extension(path) == "parquet" or raw[:4] == b"PAR1")):
        info.file_format, info.encoding = "parquet", "parquet"
        yield from _iter_parquet(path)
        return
    encoding = _check_encoding_name(encoding)
    bom_encoding, bom_len = sniff_bom(raw)
    if bom_encoding:
        if _family(encoding) != _family(bom_encoding):
            info.notes.append(f"byte-order mark says {bom_encoding}; used instead of data.encoding {encoding}")
        encoding, raw = bom_encoding, raw[bom_len:]
    info.encoding = encoding
    whole = not _ascii_compatible(encoding)
    text = decode_bytes(path, raw, encoding) if whole else None
    head = text[: 1 << 16] if text is not None else raw[: 1 << 16].decode(encoding, errors="replace")
    detected = detect_format(path, fmt, head)
    if fmt == "auto" and format_from_extension(path) in ("json", "jsonl") and detected != format_from_extension(path):
        shape = "one JSON array (or {\"data\": [...]})" if detected == "json" else "one JSON object per line"
        info.notes.append(f"the file holds {shape}; read as {detected} despite its extension")
    info.file_format = detected
    if detected == "jsonl":
        lines = text.split("\n") if text is not None else None
        yield from _iter_jsonl(path, raw, encoding, lines, explicit=fmt != "auto")
    elif detected == "json":
        yield from _iter_json(path, text if text is not None else decode_bytes(path, raw, encoding), explicit=fmt != "auto")
    elif detected in ("csv", "tsv"):
        text = text if text is not None else decode_bytes(path, raw, encoding)
        sep = _pick_delimiter(path, text, detected, delimiter)
        info.delimiter = sep
        yield from _iter_csv(path, text, sep, explicit=delimiter is not None)
    else:
        raise DataError(f"{path}: unknown data.format {detected!r} (one of auto, {', '.join(FILE_FORMATS)})")


def _json_hint(path: str, line: str, explicit: bool) -> str:
    """Why a JSONL line may not parse: the file is really a JSON array / pretty-printed JSON."""
    s = line.strip()
    if s in ("[", "{", "]", "}", "},", "],") or s.startswith(("[{", "[ {", '"')):
        return "; the file looks like a single JSON document, not one object per line: set data.format: json" + (
            "" if explicit else " (or check the file)")
    return "; fix the line, or set data.on_bad_row: reject to skip such rows with a reason"


def _iter_jsonl(path: str, raw: bytes, encoding: str, lines: list[str] | None, explicit: bool) -> Iterator[RawRow]:
    chunks = lines if lines is not None else raw.split(b"\n")
    hint = None
    for number, chunk in enumerate(chunks, start=1):
        where = f"{path}:{number}"
        if isinstance(chunk, bytes):
            try:
                line = chunk.decode(encoding)
            except UnicodeDecodeError as exc:
                text = chunk.decode(encoding, errors="replace")
                hint = hint or _encoding_hint(raw, encoding)
                detail = f"{where}: bytes are not valid {encoding} ({exc.reason}); {hint}"
                yield RawRow(number, text, RowError("bad_encoding", detail), where)
                continue
        else:
            line = chunk
        if not line.strip():
            continue
        try:
            yield RawRow(number, json.loads(line), None, where)
        except json.JSONDecodeError as exc:
            detail = f"{where}: malformed JSON ({exc.msg} at column {exc.colno}){_json_hint(path, line, explicit)}"
            yield RawRow(number, line, RowError("bad_json", detail), where)


def _iter_json(path: str, text: str, explicit: bool) -> Iterator[RawRow]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        hint = ""
        if sniff_json_kind(text) == "jsonl" or exc.msg == "Extra data":
            hint = "; the file holds one JSON object per line (JSONL): set data.format: jsonl" + ("" if explicit else " or name it .jsonl")
        raise DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}){hint}") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    elif isinstance(data, dict):
        data = [data]  # a single row
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json data file must hold a list of rows (or {{'data': [...]}}), got {type(data).__name__}; check data.path and data.format")
    for number, row in enumerate(data, start=1):
        yield RawRow(number, row, None, f"{path}: item {number}")


def _field_counts(text: str, sep: str, records: int = 50) -> list[int]:
    reader = csv.reader(io.StringIO(text[: 1 << 17], newline=""), delimiter=sep)
    counts = []
    try:
        for record in reader:
            if any(cell.strip() for cell in record):
                counts.append(len(record))
            if len(counts) >= records:
                break
    except csv.Error:
        return []
    if len(text) > 1 << 17 and len(counts) > 1:
        counts = counts[:-1]  # the cut may have split the last record
    return counts


def _consistent(counts: list[int]) -> bool:
    return len(counts) >= 1 and counts[0] > 1 and sum(c == counts[0] for c in counts) >= 0.9 * len(counts)


def _pick_delimiter(path: str, text: str, fmt: str, delimiter: str | None) -> str:
    """data.delimiter if set; tab for TSV; else csv.Sniffer's choice when the first records agree with
    it, else the candidate whose field counts agree best; ',' when nothing splits the header."""
    if delimiter is not None:
        sep = {"tab": "\t", "\\t": "\t"}.get(delimiter, delimiter)
        if len(sep) != 1:
            raise DataError(f"data.delimiter: must be one character (or 'tab'), got {delimiter!r}")
        return sep
    if fmt == "tsv":
        return "\t"
    sample = text[: 1 << 16]
    try:
        sniffed = csv.Sniffer().sniff(sample[: sample.rfind("\n") + 1] or sample, delimiters="".join(_DELIMITERS)).delimiter
    except csv.Error:
        sniffed = None
    if sniffed and _consistent(_field_counts(text, sniffed)):
        return sniffed
    for sep in _DELIMITERS:
        if _consistent(_field_counts(text, sep)):
            return sep
    return ","


def _iter_csv(path: str, text: str, delimiter: str, explicit: bool) -> Iterator[RawRow]:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    name = _DELIMITER_NAMES.get(delimiter, repr(delimiter))
    try:
        header = next(reader)
    except StopIteration:
        return
    start = reader.line_num + 1
    how = "set by data.delimiter" if explicit else "detected; set data.delimiter if that is wrong"
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise DataError(f"{path}:{start}: unreadable CSV record ({exc}); check data.delimiter and the quoting") from None
        if not any(cell.strip() for cell in record):
            start = reader.line_num + 1
            continue
        where = f"{path}:{start}"
        if len(record) != len(header):
            detail = f"{where}: {len(record)} fields, the header has {len(header)} (delimiter {name} {how})"
            yield RawRow(start, delimiter.join(record), RowError("bad_csv", detail), where)
        else:
            yield RawRow(start, dict(zip(header, record)), None, where)
        start = reader.line_num + 1


def _jsonable(row: dict) -> dict:
    try:
        json.dumps(row, ensure_ascii=False)
        return row
    except (TypeError, ValueError):
        return json.loads(json.dumps(row, ensure_ascii=False, default=str))


def _iter_parquet(path: str) -> Iterator[RawRow]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise DataError(f"{path}: not a readable Parquet file ({exc}); check data.path and data.format") from None
    number = 0
    for batch in pf.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            number += 1
            yield RawRow(number, _jsonable(row), None, f"{path}: row {number}")


def iter_hub_rows(name: str, split: str) -> Iterator[RawRow]:
    """Rows of a hub dataset (`hf:<id>`); needs internet, never used by the default config."""
    from datasets import load_dataset

    for number, row in enumerate(load_dataset(name.removeprefix("hf:"), split=split), start=1):
        yield RawRow(number, _jsonable(dict(row)), None, f"{name}: row {number}")


# --------------------------------------------------------------------------------------------------
# Rows -> conversations
# --------------------------------------------------------------------------------------------------


@dataclass
class Turn:
    """One conversation turn before cleaning: its role and the source fields it is made of."""

    role: str
    parts: list[tuple[str, str]]  # (field path in the source row, text)
    sep: str = "\n"

    def content(self) -> str:
        return self.sep.join(text for _, text in self.parts)


@dataclass
class Conversation:
    row_format: str  # messages | sharegpt | alpaca | qa
    turns: list[Turn]
    meta: dict


def _turn_list(row: dict, key: str, where: str) -> list[Turn]:
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
            raise RowError("bad_role", f"{where}: {key}[{i}] has unknown role {role!r} (allowed: system, user/human, "
                                       "assistant/gpt/bot/model)")
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
        out.append(Turn(mapped, parts))
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
    if c["messages"] in row:
        fmt, used, turns = "messages", [c["messages"]], _turn_list(row, c["messages"], where)
    elif c["conversations"] in row:
        fmt, used, turns = "sharegpt", [c["conversations"]], _turn_list(row, c["conversations"], where)
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
    return Conversation(fmt, turns, meta)


def to_messages(row: Any, columns: dict[str, str], where: str) -> list[dict]:
    """Map one parsed row to a list of {role, content} messages (uncleaned), or raise RowError."""
    conv = to_conversation(row, columns, where)
    return [{"role": t.role, "content": t.content()} for t in conv.turns]


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
