"""Conservation by content: the clean stage's output (clean + rejected rows) covers every record of the
source file exactly once, and each output row came from the record it names, with the same content.

The reference reading is done apart from the reader, with the format, encoding and dialect the reader
detected: for JSONL the non-empty lines, for JSON the array items (or the wrapper's list, or the values
one after another), for CSV/TSV the records Python's csv module finds (header excluded, blank records
skipped), for Parquet the table's rows. A broken check is a bug of loraflow, never of the data: it
stops the stage before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
from typing import Iterable, Literal

from loraflow.data.records import DataError, RawRow, SourceInfo, digest


def reference_digests(info: SourceInfo) -> list[str] | None:
    """digest() of every source record of the file `info` describes, in file order; None for sources
    without a file (hub datasets)."""
    from loraflow.data.readers import _jsonable, decoded_source, delimited_text, parquet_file

    if info.file_format in ("", "hub"):
        return None
    again = SourceInfo(info.path)
    raw, encoding, text, fmt = decoded_source(info.path, info.file_format, info.encoding or "utf-8", again)
    if fmt == "parquet":
        table = parquet_file(info.path, raw).read()
        return [digest(_jsonable(row)) for row in table.to_pylist()]
    if fmt == "jsonl":
        lines = (
            text.split("\n") if text is not None else [b.decode(encoding, "surrogateescape") for b in raw.split(b"\n")]
        )
        return [digest(line) for line in lines if line.strip()]
    if fmt == "json":
        return [digest(value) for value in _json_records(info, text if text is not None else raw.decode(encoding))]
    body = delimited_text(raw, encoding, text)
    quoting: Literal[0, 1, 2, 3] = csv.QUOTE_NONE if info.quoting == "none" else csv.QUOTE_MINIMAL
    records = csv.reader(io.StringIO(body, newline=""), delimiter=info.delimiter or ",", quoting=quoting)
    next(records, None)  # the header
    return [digest(record) for record in records if any(cell.strip() for cell in record)]


def _json_records(info: SourceInfo, text: str) -> list:
    from loraflow.data.jsonfiles import json_values

    try:
        data = json.loads(text)
    except json.JSONDecodeError:  # values one after another
        return [value for value, _, _ in json_values(info.path, text)[0]]
    if isinstance(data, list):
        return data
    return data[info.json_key] if info.json_key else [data]


def check_coverage(source: str, reference: list[str], rows_out: Iterable[RawRow]) -> int:
    """Raise DataError unless `rows_out` (the raw rows behind every clean and rejected row) are the
    reference's records, each exactly once and with the same content; returns the record count."""

    def fail(what: str) -> DataError:
        return DataError(
            f"{source}: conservation check failed: {what}; nothing was written (a loraflow bug: please report "
            "it with the file)"
        )

    by_record: dict[int, RawRow] = {}
    for raw in rows_out:
        if raw.record in by_record:
            raise fail(f"source record {raw.record} ({raw.where}) comes out twice")
        by_record[raw.record] = raw
    for number, expected in enumerate(reference, start=1):
        found = by_record.pop(number, None)
        if found is None:
            raise fail(f"source record {number} of {len(reference)} is in no output (clean or rejected)")
        if found.fingerprint != expected:
            raise fail(
                f"source record {number} ({found.where}) was read differently from the reference reading of the file"
            )
    if by_record:
        first = by_record[min(by_record)]
        raise fail(f"{len(by_record)} output rows name no source record (e.g. {first.where})")
    return len(reference)
