"""Reading raw training data (JSONL, JSON, CSV/TSV, Parquet, or a hub dataset) into rows.

File level (loraflow.data.sources): .gz/.bz2/.xz/.zst files are decompressed; the encoding comes from a
byte-order mark, else from the NUL-byte pattern of UTF-16/32 without one, else `data.encoding`; a
binary file is called one. JSON and JSONL are told apart by content (loraflow.data.jsonfiles: an
array, a `{"<key>": [rows]}` wrapper, or values one after another are JSON); CSV/TSV get their
delimiter and quoting from loraflow.data.dialect (TSV: no quoting unless the file uses CSV quoting
consistently). Every row carries its source location (record number, lines), which the clean stage's
content check (loraflow.data.conservation) compares with a reference reading of the file.

Row level: loraflow.data.conversations turns a row into a conversation (messages, ShareGPT, Alpaca,
question/answer).

Structural problems (malformed JSON, bytes that are not in the encoding, rows without the mapped
columns, wrongly typed fields) become `RowError`s that name the file and line; the clean stage either
stops on them with a `DataError` (one message: file:line, what is wrong, the config key that fixes
it) or rejects the row with that reason.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path
from typing import Iterator

from loraflow.data.dialect import iter_csv, pick_delimiter, pick_quoting
from loraflow.data.jsonfiles import iter_json, iter_jsonl, sniff_json_kind
from loraflow.data.records import DataError, RawRow, RowError, SourceInfo, digest, one_line
from loraflow.data.sources import (
    SAMPLE,
    ascii_compatible,
    candidate_encodings,
    choose_encoding,
    decode_bytes,
    encoding_hint,
    read_source,
    sniff_bom,
    strip_compression_suffix,
)

__all__ = [
    "DataError",
    "RowError",
    "RawRow",
    "SourceInfo",
    "sniff_bom",
    "suggest_encoding",
    "suggest_encodings",
    "decode_bytes",
    "detect_format",
    "sniff_json_kind",
    "iter_raw_rows",
    "iter_hub_rows",
]

log = logging.getLogger(__name__)

FILE_FORMATS = ("jsonl", "json", "csv", "tsv", "parquet")
_EXTENSIONS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


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


def iter_raw_rows(
    path: str, fmt: str = "auto", encoding: str = "utf-8", delimiter: str | None = None, info: SourceInfo | None = None
) -> RowStream:
    """Every row of a data file with its source location; never drops a row silently.
    `info` (optional; also the stream's `.info`) is filled with the detected format, encoding and dialect."""
    if path.startswith("hf:"):
        raise DataError("hub datasets are read by iter_hub_rows, not iter_raw_rows")
    return RowStream(path, fmt, encoding, delimiter, info)


def decoded_source(path: str, fmt: str, encoding: str, info: SourceInfo) -> tuple[bytes, str, str | None, str]:
    """(bytes, encoding, whole text or None, format) of a text data file;
    parquet: (bytes, 'parquet', None, 'parquet')."""
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
        shape = (
            "JSON spread over lines (an array, a wrapper object or pretty-printed values)"
            if detected == "json"
            else "one JSON value per line"
        )
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
        rows, info.json_key = iter_json(
            path, text if text is not None else decode_bytes(path, raw, encoding), fmt != "auto", info.notes
        )
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
        raise DataError(
            f"{path}: not a readable Parquet file ({one_line(exc)}); check data.path and data.format"
        ) from None


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
        raise DataError(
            f"{path}: row {number + 1}: unreadable Parquet data ({one_line(exc)}); check the file"
        ) from None


def iter_hub_rows(name: str, split: str) -> Iterator[RawRow]:
    """Rows of a hub dataset (`hf:<id>`); needs internet, never used by the default config."""
    from datasets import load_dataset

    for number, row in enumerate(load_dataset(name.removeprefix("hf:"), split=split), start=1):
        data = _jsonable(dict(row))
        yield RawRow(number, data, None, f"{name}: row {number}", number, 0, "", name)
