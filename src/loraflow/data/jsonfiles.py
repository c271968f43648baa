"""JSON and JSONL files: one value per line (JSONL), or JSON text: an array of rows, one object holding
one list of rows (`{"data": [...]}`, `{"rows": [...]}` ...), or JSON objects one after another
(pretty-printed or not). Every value keeps its record number and text lines."""

from __future__ import annotations

import json
from typing import Any, Iterator

from loraflow.data.records import DataError, RawRow, RowError, digest

_DECODER = json.JSONDecoder()
_WS = " \t\n\r"
#: keys of a turn; a list of such objects is a conversation, not a list of rows
_TURN_KEYS = {"role", "from"}
#: fields of a row in the common formats; an object with one of them is a row, not a wrapper of rows
_ROW_KEYS = {"messages", "conversations", "instruction", "output", "question", "answer", "prompt", "response", "text"}


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WS:
        pos += 1
    return pos


class _Lines:
    """Line numbers of increasing positions in one text, counted incrementally (linear in the text)."""

    def __init__(self, text: str):
        self.text, self.pos, self.line = text, 0, 1

    def __call__(self, pos: int) -> int:
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def sniff_json_kind(text: str) -> str | None:
    """'json' (an array, one object holding a list of rows, or values spanning several lines), 'jsonl'
    (one value per line), or None when the text does not start like JSON."""
    start = _skip(text, 0)
    if start == len(text) or text[start] not in "[{":
        return None
    if text[start] == "[":
        return "json"
    try:
        first, end = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError:
        return None
    rest = _skip(text, end)
    if rest == len(text):  # a single object: a wrapper of rows, or a one-row file (pretty-printed: JSON)
        try:
            return "json" if "\n" in text[start:end] or wrapper_key(first) else "jsonl"
        except DataError:  # several lists of rows: the JSON reader says so, naming the file
            return "json"
    if "\n" in text[start:end]:  # pretty-printed values one after another
        return "json"
    return "jsonl" if "\n" in text[end:rest] else None


def wrapper_key(value: Any) -> str | None:
    """The key of the one list of row objects in a top-level object ({"data": [...]}, {"rows": [...]}),
    or None when the object is itself a row (it has a conversation field, or its lists are turns)."""
    if not isinstance(value, dict) or _ROW_KEYS & set(value):
        return None
    rows = [
        k
        for k, v in value.items()
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and not any(_TURN_KEYS & set(x) for x in v)
    ]
    if isinstance(value.get("data"), list) and "data" not in rows:
        rows.append("data")
    if len(rows) > 1:
        raise DataError(
            f"the top-level object holds several lists of rows ({', '.join(rows)}); keep the one to train on "
            "in a file of its own"
        )
    return rows[0] if rows else None


def _json_error(path: str, text: str, exc: json.JSONDecodeError, explicit: bool) -> DataError:
    hint = ""
    if sniff_json_kind(text) == "jsonl" or exc.msg == "Extra data":
        hint = "; if the file holds one JSON object per line (JSONL), set data.format: jsonl" + (
            "" if explicit else " or name it .jsonl"
        )
    return DataError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno}){hint}")


def _array(text: str, pos: int) -> list[tuple[Any, int, int]]:
    """The items of the array at `pos` with their lines; a syntax error raises the parser's own message."""
    out, line = [], _Lines(text)
    pos = _skip(text, pos + 1)
    if pos < len(text) and text[pos] == "]":
        pos += 1
    else:
        while True:
            value, end = _DECODER.raw_decode(text, pos)
            out.append((value, line(pos), line(end - 1)))
            pos = _skip(text, end)
            if pos < len(text) and text[pos] == ",":
                pos = _skip(text, pos + 1)
            elif pos < len(text) and text[pos] == "]":
                pos += 1
                break
            else:
                json.loads(text)
                raise json.JSONDecodeError("Expecting ',' delimiter", text, pos)
    if _skip(text, pos) != len(text):
        raise json.JSONDecodeError("Extra data", text, _skip(text, pos))
    return out


def json_values(path: str, text: str, explicit: bool = False) -> tuple[list[tuple[Any, int, int]], str | None]:
    """([(value, first line, last line)], wrapper key) of the records of a JSON text."""
    pos = _skip(text, 0)
    if pos == len(text):
        return [], None
    out, line = [], _Lines(text)
    try:
        if text[pos] == "[":
            return _array(text, pos), None
        while pos < len(text):
            value, end = _DECODER.raw_decode(text, pos)
            out.append((value, line(pos), line(end - 1)))
            pos = _skip(text, end)
    except json.JSONDecodeError as exc:
        raise _json_error(path, text, exc, explicit) from None
    if len(out) == 1:
        try:
            key = wrapper_key(out[0][0])
        except DataError as err:
            raise DataError(f"{path}: {err}") from None
        if key:
            return [(v, 0, 0) for v in out[0][0][key]], key
    return out, None


def iter_json(path: str, text: str, explicit: bool, notes: list[str]) -> tuple[Iterator[RawRow], str | None]:
    values, key = json_values(path, text, explicit)
    if key:
        notes.append(f"the file is one object holding the rows in its {key!r} list; read that list")
    elif values and not text.lstrip(_WS).startswith("[") and len(values) > 1:
        notes.append(f"the file holds {len(values)} JSON values one after another; each is a row")

    def rows() -> Iterator[RawRow]:
        for number, (value, first, last) in enumerate(values, start=1):
            yield RawRow(number, value, None, f"{path}: item {number}", number, last, digest(value), path, first)

    return rows(), key


def _line_hint(line: str, explicit: bool) -> str:
    """Why a JSONL line may not parse: the file is really one JSON document or pretty-printed values."""
    s = line.strip()
    if s in ("[", "{", "]", "}", "},", "],") or s.startswith(("[{", "[ {", '"')):
        return (
            "; the file looks like JSON spread over several lines (an array or pretty-printed objects), not one object "
            "per line: set data.format: json" + ("" if explicit else " (or auto)")
        )
    return "; fix the line, or set data.on_bad_row: reject to skip such rows with a reason"


def iter_jsonl(path: str, lines: list, encoding: str, explicit: bool, hint) -> Iterator[RawRow]:
    """Rows of a JSONL file; `lines` are str (already decoded) or bytes (decoded here, line by line);
    `hint()` gives the encoding advice for a line whose bytes are not valid."""
    record = 0
    for number, chunk in enumerate(lines, start=1):
        where = f"{path}:{number}"
        error = None
        if isinstance(chunk, bytes):
            line = chunk.decode(encoding, errors="surrogateescape")
            try:
                chunk.decode(encoding)
            except UnicodeDecodeError as exc:
                error = RowError("bad_encoding", f"{where}: bytes are not valid {encoding} ({exc.reason}); {hint()}")
        else:
            line = chunk
        if not line.strip():
            continue
        record += 1
        row = RawRow(number, None, error, where, record, number, digest(line), path)
        if error:
            row.data = chunk.decode(encoding, errors="replace")
        else:
            try:
                row.data = json.loads(line)
            except json.JSONDecodeError as exc:
                row.data = line
                row.error = RowError(
                    "bad_json", f"{where}: malformed JSON ({exc.msg} at column {exc.colno}){_line_hint(line, explicit)}"
                )
        yield row
