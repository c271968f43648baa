"""Mutation fuzzer of the data readers and the clean stage: valid files in every format, then truncated,
bytes flipped, inserted or deleted, lines doubled, two files spliced. Every outcome is either a clean
stage whose content check holds (every source record in exactly one of clean/rejected, with its
content) and whose rows can be written, or one DataError line naming the file; never another
exception, never a silent loss."""

from __future__ import annotations

import bz2
import csv
import gzip
import json

from hypothesis import event, given, seed, settings
from hypothesis import strategies as st

from helpers import (
    COLUMNS,
    PROPS,
    RECORDS,
    SEED,
    write_delimited,
    write_json,
    write_plain_tsv,
)
from helpers import (
    write_jsonl as jsonl_text,
)
from loraflow.data.clean import clean_rows
from loraflow.data.readers import DataError, iter_raw_rows
from loraflow.data.settings import CleanSettings
from loraflow.io import read_jsonl, write_jsonl

FORMATS = ["jsonl", "json", "csv", "tsv", "plain.tsv", "parquet", "jsonl.gz", "csv.bz2"]


def plain(records: list[dict]) -> list[dict]:
    """The records a plain TSV can hold (no tab or line break in a field)."""
    return [{k: v.replace("\t", " ").replace("\n", " ").replace("\r", " ") for k, v in r.items()} for r in records]


def base_file(records: list[dict], fmt: str, encoding: str) -> bytes:
    if fmt == "parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(records), buf)
        return buf.getvalue()
    if fmt.startswith("jsonl"):
        text = jsonl_text(records, False, "\n")
    elif fmt == "json":
        text = write_json(records, "array", 1)
    elif fmt == "plain.tsv":
        text = write_plain_tsv(plain(records), "\n")
    else:
        text = write_delimited(records, "\t" if fmt == "tsv" else ",", csv.QUOTE_MINIMAL, "\r\n")
    data = text.encode(encoding, "replace")
    return gzip.compress(data, mtime=0) if fmt.endswith(".gz") else bz2.compress(data) if fmt.endswith(".bz2") else data


@st.composite
def mutation(draw, data: bytes, other: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "double_line", "splice", "none"]))
    event(f"mutation {kind}")
    n = len(data)
    at = draw(st.integers(0, max(n - 1, 0)))
    if kind == "truncate":
        return data[:at]
    if kind == "flip" and n:
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    if kind == "insert":
        piece = draw(
            st.sampled_from(
                [
                    b'"',
                    b"\t",
                    b",",
                    b"\n",
                    b"\r",
                    b"\x00",
                    b"\xff",
                    b"\xc3",
                    b"{",
                    b"]",
                    b"\\",
                    b"\xef\xbb\xbf",
                    b"\xed\xa0\x80",
                    b"\\ud800",
                    b"PAR1",
                ]
            )
            | st.binary(min_size=1, max_size=4)
        )
        return data[:at] + piece + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 8)) :]
    if kind == "double_line":
        lines = data.split(b"\n")
        i = draw(st.integers(0, len(lines) - 1))
        return b"\n".join(lines[: i + 1] + lines[i:])
    if kind == "splice":
        return data[:at] + other[draw(st.integers(0, max(len(other) - 1, 0))) :]
    return data


@seed(SEED)
@settings(PROPS, max_examples=1000)
@given(
    records=RECORDS,
    fmt=st.sampled_from(FORMATS),
    other_fmt=st.sampled_from(FORMATS),
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "gb18030"]),
    on_bad_row=st.sampled_from(["error", "reject"]),
    data=st.data(),
)
def test_mutated_files_never_crash_or_lose_rows(tmp_path_factory, records, fmt, other_fmt, encoding, on_bad_row, data):
    d = tmp_path_factory.mktemp("fuzz")
    raw = data.draw(mutation(base_file(records, fmt, encoding), base_file(records[::-1], other_fmt, "utf-8")))
    path = d / f"d.{fmt}"
    path.write_bytes(raw)
    kw = {"encoding": encoding} if encoding == "gb18030" else {}
    if raw == base_file(records, fmt, encoding) and encoding != "gb18030":  # unchanged: the records come back exactly
        expected = plain(records) if fmt == "plain.tsv" else records
        if fmt.split(".")[-1] in ("csv", "tsv") or fmt == "csv.bz2":
            expected = [r for r in expected if any(v.strip() for v in r.values())]
        assert [r.data for r in iter_raw_rows(str(path), **kw)] == expected
    try:
        clean, rejected, stats, _ = clean_rows(
            iter_raw_rows(str(path), **kw), str(path), COLUMNS, on_bad_row, CleanSettings(dedup="none")
        )
    except DataError as err:
        event(f"{fmt}: DataError {str(err).split(': ', 2)[1][:30]}")
        message = str(err)
        assert "\n" not in message and message.strip() and "conservation check failed" not in message, message
        return
    event(f"{fmt}: read, {'some' if rejected else 'none'} rejected")
    assert stats["conserved"] and stats["rows_in"] == len(clean) + len(rejected)
    if "source_records" in stats:
        assert stats["source_records"] == stats["rows_in"]
        assert sorted(r["source"]["record"] for r in (*clean, *rejected)) == list(range(1, stats["rows_in"] + 1))
    write_jsonl(d / "clean.jsonl", clean)  # whatever was read can be written and reads back the same
    write_jsonl(d / "rejected.jsonl", rejected)
    assert read_jsonl(d / "clean.jsonl") == json.loads(json.dumps(clean))
    assert len(read_jsonl(d / "rejected.jsonl")) == len(rejected)
