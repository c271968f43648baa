"""Property tests of the readers: records with adversarial text, written in every supported format,
encoding and quoting style, read back identical, or refused with one clear DataError/RowError, never a
traceback, a merge or a loss. Differential tests against Python's csv, pandas and pyarrow where they
are the reference. Seeded (derandomized) and with a database of found examples kept in the repo."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from hypothesis import assume, example, given, seed
from hypothesis import strategies as st

from helpers import (
    COLUMNS,
    PIECES,
    PROPS,
    RECORDS,
    SEED,
    TEXT,
    write_delimited,
    write_json,
    write_jsonl,
    write_plain_tsv,
)
from loraflow.data.clean import clean_rows
from loraflow.data.readers import DataError, iter_raw_rows
from loraflow.data.settings import CleanSettings
from loraflow.io import read_jsonl as read_rows
from loraflow.io import write_jsonl as write_rows

SURROGATE = st.sampled_from(["\ud800", "\udfff", "\udc80"])
TEXT_WITH_SURROGATES = st.one_of(TEXT, st.tuples(TEXT, SURROGATE, TEXT).map("".join))
TEXT_ENCODINGS = [
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
    "gb18030",
    "cp1252",
]


# --------------------------------------------------------------------------------------------------
# Writers: how the files people have are made
# --------------------------------------------------------------------------------------------------


def claimed(encoding: str) -> str:
    """data.encoding as a user sets it: left at utf-8 for every UTF file (BOM or not), named otherwise."""
    return "utf-8" if encoding.startswith("utf") else encoding


def representable(records: list[dict], encoding: str) -> list[dict]:
    """The records with what `encoding` cannot hold dropped (cp1252 has no CJK)."""

    def fit(text: str) -> str:
        return text.encode(encoding, "ignore").decode(encoding) if encoding == "cp1252" else text

    return [{k: fit(v) for k, v in r.items()} for r in records]


def expected_delimited(records) -> list[dict]:
    """Records that hold any text: a record of blank fields is a blank line, skipped by every reader."""
    return [r for r in records if any(v.strip() for v in r.values())]


def read(path: Path, **kw) -> list:
    return list(iter_raw_rows(str(path), **kw))


def assert_identical_or_clear(path: Path, expected: list[dict], **kw) -> bool:
    """The reader returns `expected` exactly, or stops with a DataError, or marks rows with a RowError
    (which the clean stage reports as file:line); True when the records came back identical."""
    try:
        rows = read(path, **kw)
    except DataError as err:
        assert "\n" not in str(err) and str(path) in str(err)
        return False
    if any(r.error for r in rows):
        assert all(r.error is None or str(path) in r.error.detail for r in rows)
        return False
    assert [r.data for r in rows] == expected
    assert [r.record for r in rows] == list(range(1, len(rows) + 1))
    return True


# --------------------------------------------------------------------------------------------------
# Round trips that must come back identical
# --------------------------------------------------------------------------------------------------


@seed(SEED)
@PROPS
@given(
    records=RECORDS,
    encoding=st.sampled_from(TEXT_ENCODINGS),
    ensure_ascii=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n"]),
)
def test_jsonl_round_trip(tmp_path_factory, records, encoding, ensure_ascii, newline):
    path = tmp_path_factory.mktemp("p") / "d.jsonl"
    records = representable(records, encoding)
    path.write_bytes(write_jsonl(records, ensure_ascii, newline).encode(encoding))
    assert [r.data for r in read(path, encoding=claimed(encoding))] == records


@seed(SEED)
@PROPS
@given(
    records=RECORDS,
    encoding=st.sampled_from(TEXT_ENCODINGS),
    shape=st.sampled_from(["array", "wrapper", "values"]),
    indent=st.sampled_from([None, 2, "\t"]),
)
@example(
    records=[{"question": "", "answer": ""}], encoding="utf-8", shape="values", indent=None
)  # one pretty object in .json
def test_json_round_trip(tmp_path_factory, records, encoding, shape, indent):
    path = tmp_path_factory.mktemp("p") / "d.json"
    records = representable(records, encoding)
    path.write_bytes(write_json(records, shape, indent).encode(encoding))
    assert [r.data for r in read(path, encoding=claimed(encoding))] == records


@seed(SEED)
@PROPS
@given(
    records=RECORDS,
    encoding=st.sampled_from(TEXT_ENCODINGS),
    sep=st.sampled_from([",", ";", "|", "\t"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    newline=st.sampled_from(["\n", "\r\n"]),
    name=st.sampled_from(["d.csv", "d.tsv", "d.txt"]),
)
@example(
    records=[{"question": "q1", "answer": '"Hi," he said'}, {"question": "q2", "answer": "a2"}],
    encoding="utf-8",
    sep="\t",
    quoting=csv.QUOTE_MINIMAL,
    newline="\n",
    name="d.tsv",
)
def test_csv_round_trip(tmp_path_factory, records, encoding, sep, quoting, newline, name):
    path = tmp_path_factory.mktemp("p") / name
    records = representable(records, encoding)
    if newline == "\n":  # csv.writer leaves a CR unquoted unless it is part of the line terminator: no file can hold it
        records = [{k: v.replace("\r", "") for k, v in r.items()} for r in records]
    path.write_bytes(write_delimited(records, sep, quoting, newline).encode(encoding))
    rows = read(path, encoding=claimed(encoding), delimiter=sep, fmt="tsv" if sep == "\t" else "csv")
    assert [r.data for r in rows] == expected_delimited(records)


@seed(SEED)
@PROPS
@given(
    records=RECORDS,
    encoding=st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "gb18030", "cp1252"]),
    newline=st.sampled_from(["\n", "\r\n"]),
)
@example(
    records=[
        {"question": "q1", "answer": '"Hi," he said'},
        {"question": "q2", "answer": "a2"},
        {"question": "q3", "answer": 'end" here'},
    ],
    encoding="utf-8",
    newline="\n",
)
@example(
    records=[{"question": "", "answer": "\x1f\x1f\x08"}], encoding="utf-8", newline="\n"
)  # control characters: text, not binary
def test_plain_tsv_round_trip(tmp_path_factory, records, encoding, newline):
    """A TSV written without any quoting (the TSV convention): quotes are text, whatever they look like."""
    records = [
        {k: "".join(ch for ch in v if ch not in "\t\r\n\x85\u2028") for k, v in r.items()}
        for r in representable(records, encoding)
    ]
    # The one ambiguity of the convention: a field that is wholly a CSV-quoted string with doubled quotes
    # ("say ""hi""") in a file whose every quote follows CSV rules reads as CSV quoting.
    assume(not any(v.startswith('"') and v.endswith('"') and '""' in v[1:-1] for r in records for v in r.values()))
    path = tmp_path_factory.mktemp("p") / "d.tsv"
    path.write_bytes(write_plain_tsv(records, newline).encode(encoding))
    rows = read(path, encoding=claimed(encoding))
    assert [r.data for r in rows] == expected_delimited(records)


@seed(SEED)
@PROPS
@given(records=RECORDS)
def test_parquet_round_trip(tmp_path_factory, records):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("p") / "d.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    assert [r.data for r in read(path)] == records


# --------------------------------------------------------------------------------------------------
# Anything goes: identical, or one clear error
# --------------------------------------------------------------------------------------------------


@seed(SEED)
@PROPS
@given(
    records=st.lists(
        st.fixed_dictionaries({"question": TEXT_WITH_SURROGATES, "answer": TEXT_WITH_SURROGATES}),
        min_size=1,
        max_size=4,
    ),
    fmt=st.sampled_from(["jsonl", "json", "csv", "tsv"]),
    encoding=st.sampled_from(TEXT_ENCODINGS),
    claimed=st.sampled_from(["same", "utf-8"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL, csv.QUOTE_NONE]),
    ensure_ascii=st.booleans(),
)
@example(
    records=[{"question": "q", "answer": "bad \ud800 half"}, {"question": "q2", "answer": "ok"}],
    fmt="jsonl",
    encoding="utf-8",
    claimed="same",
    quoting=csv.QUOTE_MINIMAL,
    ensure_ascii=True,
)  # a lone surrogate escape, rejected, then written
def test_any_file_reads_identical_or_fails_clearly(
    tmp_path_factory, records, fmt, encoding, claimed, quoting, ensure_ascii
):
    """Lone surrogates, encodings that cannot hold the text, no BOM with data.encoding left at utf-8,
    TSV without quoting that holds tabs: identical records, or a DataError/RowError naming the file."""
    if fmt == "jsonl":
        text = write_jsonl(records, ensure_ascii, "\n")
    elif fmt == "json":
        text = write_json(records, "array", 1)
    elif quoting == csv.QUOTE_NONE:
        text = ("question,answer\n" if fmt == "csv" else "question\tanswer\n") + "".join(
            f"{r['question']}{',' if fmt == 'csv' else chr(9)}{r['answer']}\n" for r in records
        )
    else:
        text = write_delimited(records, "," if fmt == "csv" else "\t", quoting, "\n")
    try:
        data = text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "strict")
    except UnicodeEncodeError:  # what the encoding cannot hold is written as '?', and so expected
        data = text.encode(encoding, "replace")
        records = [{k: v.encode(encoding, "replace").decode(encoding) for k, v in r.items()} for r in records]
    path = tmp_path_factory.mktemp("p") / f"d.{fmt}"
    path.write_bytes(data)
    expected = expected_delimited(records) if fmt in ("csv", "tsv") else records
    kw = {"encoding": encoding if claimed == "same" else "utf-8"}
    assert_identical_or_clear(path, expected, **kw)
    # the clean stage: one message, or clean and rejected rows, content-checked and writable
    try:
        clean, rejected, stats, _ = clean_rows(
            iter_raw_rows(str(path), **kw), str(path), COLUMNS, "reject", CleanSettings(dedup="none")
        )
    except DataError as err:
        assert "\n" not in str(err)
    else:
        assert stats["conserved"]
        write_rows(path.with_name("rejected.jsonl"), rejected)  # what was read can be written, and reads back
        assert read_rows(path.with_name("rejected.jsonl")) == json.loads(json.dumps(rejected))


@seed(SEED)
@PROPS
@given(
    records=st.lists(st.fixed_dictionaries({"question": TEXT, "answer": TEXT}), min_size=2, max_size=6),
    foreign=st.sets(st.integers(0, 5), min_size=1),
    encoding=st.sampled_from(["cp1252", "cp1250", "latin-1", "gb18030", "shift_jis"]),
)
@example(
    records=[{"question": "Café?", "answer": "naïve “x”"}, {"question": "q", "answer": "café"}],
    foreign={1},
    encoding="cp1252",
)
def test_a_hint_is_safe_to_follow(tmp_path_factory, records, foreign, encoding):
    """A UTF-8 file with some lines in another encoding: a hint that names an encoding reads every
    UTF-8 line the same under it; otherwise the hint is data.on_bad_row: reject, naming the lines."""
    lines = []
    for i, r in enumerate(records):
        text = json.dumps(r, ensure_ascii=False) + "\n"
        lines.append(text.encode(encoding, "ignore") if i in foreign else text.encode("utf-8"))
    path = tmp_path_factory.mktemp("p") / "m.jsonl"
    path.write_bytes(b"".join(lines))
    try:
        clean_rows(iter_raw_rows(str(path)), str(path), COLUMNS, settings=CleanSettings(dedup="none"))
        return  # every line happened to be valid UTF-8
    except DataError as err:
        message = str(err)
    if "are not valid utf-8" not in message:
        return  # the lines happened to decode, and the rows were rejected for what they hold
    if "set data.encoding: " in message:
        hinted = message.split("set data.encoding: ")[1].split()[0]
        for line in lines:
            try:
                utf8 = line.decode("utf-8")
            except UnicodeDecodeError:
                continue
            assert line.decode(hinted) == utf8, (hinted, line)
    else:
        assert "data.on_bad_row: reject" in message and "line" in message


# --------------------------------------------------------------------------------------------------
# Differential: Python's csv, pandas and pyarrow as the reference
# --------------------------------------------------------------------------------------------------

PLAIN_TEXT = TEXT.map(lambda t: t.replace("\x00", "").replace("\r", "")).filter(lambda t: t.strip() != "")


@seed(SEED)
@PROPS
@given(
    records=st.lists(st.fixed_dictionaries({"question": PLAIN_TEXT, "answer": PLAIN_TEXT}), min_size=1, max_size=5),
    sep=st.sampled_from([",", "\t", ";"]),
)
def test_csv_agrees_with_pandas_and_pyarrow(tmp_path_factory, records, sep):
    import pandas as pd
    import pyarrow as pa
    from pyarrow import csv as pacsv

    path = tmp_path_factory.mktemp("p") / "d.csv"
    path.write_bytes(write_delimited(records, sep, csv.QUOTE_MINIMAL, "\n").encode())
    ours = [r.data for r in read(path, delimiter=sep)]
    frame = pd.read_csv(
        path, sep=sep, dtype=str, keep_default_na=False, na_filter=False, skip_blank_lines=False, engine="python"
    )
    assert ours == frame.to_dict("records")
    table = pacsv.read_csv(
        path,
        parse_options=pacsv.ParseOptions(delimiter=sep, newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={"question": pa.string(), "answer": pa.string()},
            strings_can_be_null=False,
            quoted_strings_can_be_null=False,
        ),
    )
    assert ours == table.to_pylist()


@seed(SEED)
@PROPS
@given(records=st.lists(st.fixed_dictionaries({"question": PLAIN_TEXT, "answer": PLAIN_TEXT}), min_size=1, max_size=5))
def test_plain_tsv_agrees_with_pandas_without_quoting(tmp_path_factory, records):
    import pandas as pd

    records = [{k: "".join(ch for ch in v if ch not in "\t\n\x85\u2028") or "x" for k, v in r.items()} for r in records]
    assume(not any(v.startswith('"') and v.endswith('"') and '""' in v[1:-1] for r in records for v in r.values()))
    path = tmp_path_factory.mktemp("p") / "d.tsv"
    path.write_bytes(write_plain_tsv(records, "\n").encode())
    frame = pd.read_csv(path, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False, na_filter=False)
    assert [r.data for r in read(path)] == frame.to_dict("records") == records


@seed(SEED)
@PROPS
@given(records=st.lists(st.fixed_dictionaries({"question": TEXT, "answer": TEXT}), min_size=1, max_size=5))
def test_jsonl_agrees_with_pyarrow(tmp_path_factory, records):
    from pyarrow import json as pajson

    path = tmp_path_factory.mktemp("p") / "d.jsonl"
    path.write_bytes(write_jsonl(records, False, "\n").encode())
    assert [r.data for r in read(path)] == pajson.read_json(path).to_pylist() == records


@pytest.mark.parametrize("sep", [",", "\t"])
def test_reference_check_runs_on_every_property_file(tmp_path, sep):
    """The clean stage's content check (Python's csv on the whole file) agrees with the reader on a
    file with every piece above in it."""
    records = [{"question": f"q{i} {p}", "answer": f"{p} a{i}"} for i, p in enumerate(PIECES)]
    path = tmp_path / ("d.csv" if sep == "," else "d.tsv")
    path.write_bytes(write_delimited(records, sep, csv.QUOTE_MINIMAL, "\r\n").encode())
    clean, rejected, stats, _ = clean_rows(
        iter_raw_rows(str(path)), str(path), COLUMNS, "reject", CleanSettings(dedup="none")
    )
    assert stats["conserved"] and stats["source_records"] == len(records) == len(clean) + len(rejected)
