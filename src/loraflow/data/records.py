"""The types every reader shares: a raw row with its source location, the errors, and what the reader
found out about a file (format, encoding, dialect, compression)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any


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


def one_line(exc: BaseException, limit: int = 200) -> str:
    """A library's error message as one short line (pyarrow's span several)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def digest(value: Any) -> str:
    """Fingerprint of a source record's content (a line's text, a CSV record's fields, a JSON value);
    the conservation check compares it with the reference reading of the file."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=True, default=str)
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class RawRow:
    line: int  # 1-based line (JSONL/CSV record start), item number (JSON) or row number (Parquet, hub)
    data: Any = None  # the parsed row, or the raw text when parsing failed
    error: RowError | None = None
    where: str = ""  # "file:line" or "file: item N" for messages; set by the readers
    record: int = 0  # 1-based index of the source record among all records of the file (0: unknown)
    end_line: int = 0  # last text line of the record (CSV records and JSON values may span lines; 0: unknown)
    fingerprint: str = ""  # digest() of the record's source content
    file: str = ""
    first_line: int = 0  # first text line of the record where `line` is not one (JSON items)

    def source(self) -> dict:
        """The row's source location, written with every clean, rejected and split row."""
        out: dict = {"file": self.file, "record": self.record}
        if self.end_line:
            out["line"] = self.first_line or self.line
            out["end_line"] = self.end_line
        return out


@dataclass
class SourceInfo:
    """What the reader found out about a file (logged and written to clean_stats.json)."""

    path: str
    file_format: str = ""
    encoding: str = ""
    delimiter: str | None = None
    quoting: str | None = None  # csv: "minimal"; tsv: "none" or "minimal" (the dialect decision)
    compression: str | None = None
    json_key: str | None = None  # the key of a {"<key>": [rows]} wrapper
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out: dict[str, Any] = {"file_format": self.file_format, "encoding": self.encoding}
        for key in ("delimiter", "quoting", "compression", "json_key"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.notes:
            out["notes"] = list(self.notes)
        return out
