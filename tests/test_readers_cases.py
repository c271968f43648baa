"""Each reader problem a new user hit, reproduced and fixed: rows merged in a plain TSV, conservation by
content, encoding hints that corrupt, files the readers gave up on, tracebacks instead of one line,
and chat conventions (developer role, a message's name, per-turn weight)."""

from __future__ import annotations

import bz2
import csv
import gzip
import importlib.util
import json
import lzma
from pathlib import Path

import pytest

import loraflow.data.readers as readers
from loraflow.data.clean import clean_dataset, clean_rows
from loraflow.data.conversations import to_messages
from loraflow.data.readers import DataError, iter_raw_rows
from loraflow.data.settings import CleanOutputs, CleanSettings, LengthSettings, ReaderSettings
from loraflow.data.split import assign_splits, split_dataset, stratified_split
from loraflow.io import read_jsonl, write_jsonl

REPO = Path(__file__).resolve().parents[1]
COLUMNS = {
    "messages": "messages",
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "question": "question",
    "answer": "answer",
    "system": "system",
}
ROWS = [
    {"question": "q1", "answer": '"Hi," he said'},
    {"question": "q2", "answer": "a2"},
    {"question": "q3", "answer": 'end" here'},
]


def write(path: Path, data: bytes | str) -> str:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return str(path)


def jsonl(rows, **kw) -> str:
    return "".join(json.dumps(r, **kw) + "\n" for r in rows)


def clean(path: str, **kw):
    reader_kw = {k: kw.pop(k) for k in ("fmt", "encoding", "delimiter") if k in kw}
    return clean_rows(
        iter_raw_rows(path, **reader_kw), path, COLUMNS, kw.pop("on_bad_row", "error"), CleanSettings(**kw)
    )


def answers(rows) -> list[str]:
    return [r["messages"][-1]["content"] for r in rows]


# --------------------------------------------------------------------------------------------------
# TSV dialect and conservation by content
# --------------------------------------------------------------------------------------------------


def test_plain_tsv_with_a_double_quote_keeps_every_row(tmp_path):
    path = write(
        tmp_path / "plain.tsv", "question\tanswer\n" + "".join(f"{r['question']}\t{r['answer']}\n" for r in ROWS)
    )
    c, r, stats, _ = clean(path)
    assert answers(c) == [row["answer"] for row in ROWS] and not r
    assert stats["file"]["quoting"] == "none" and "quotes are text" in stats["file"]["notes"][0]
    assert stats["conserved"] and stats["source_records"] == 3
    assert [row["source"] for row in c] == [
        {"file": path, "record": i, "line": i + 1, "end_line": i + 1} for i in (1, 2, 3)
    ]


def test_tsv_with_consistent_csv_quoting_is_read_quoted(tmp_path):
    path = write(tmp_path / "quoted.tsv", 'question\tanswer\nq1\t"multi\nline\twith tab"\nq2\t"say ""hi"""\n')
    c, _, stats, _ = clean(path)
    assert answers(c) == ["multi\nline\twith tab", 'say "hi"'] and stats["file"]["quoting"] == "minimal"
    assert c[0]["source"] == {"file": path, "record": 1, "line": 2, "end_line": 3}
    # every field quoted (QUOTE_ALL), nothing that needs it: still CSV quoting
    c, _, stats, _ = clean(write(tmp_path / "all.tsv", '"question"\t"answer"\n"q"\t"a"\n'))
    assert answers(c) == ["a"] and stats["file"]["quoting"] == "minimal"
    # a field that is just "quoted" text and no sign of CSV quoting: the quotes are text
    c, _, stats, _ = clean(write(tmp_path / "text.tsv", 'question\tanswer\nq\t"Hello"\nq2\tplain\n'))
    assert answers(c) == ['"Hello"', "plain"] and stats["file"]["quoting"] == "none"


def test_content_check_catches_a_reader_that_merges_rows(tmp_path, monkeypatch):
    """The old TSV bug put back on purpose: the reader parses with CSV quoting while the file is plain;
    the row count is "conserved", the content check is not fooled."""
    path = write(
        tmp_path / "plain.tsv", "question\tanswer\n" + "".join(f"{r['question']}\t{r['answer']}\n" for r in ROWS)
    )
    original = readers.iter_csv
    monkeypatch.setattr(
        readers, "iter_csv", lambda path, text, sep, quoting, *a: original(path, text, sep, csv.QUOTE_MINIMAL, *a)
    )
    with pytest.raises(DataError, match=r"plain\.tsv: conservation check failed: source record 1 .*read differently"):
        clean(path)


@pytest.mark.parametrize(
    "fault, message", [("drop", "source record 2 of 3 is in no output"), ("twice", "comes out twice")]
)
def test_content_check_catches_lost_and_doubled_rows(tmp_path, fault, message):
    path = write(tmp_path / "d.jsonl", jsonl(ROWS))
    stream = iter_raw_rows(path)

    class Faulty:
        info = stream.info

        def __iter__(self):
            for raw in stream:
                if not (fault == "drop" and raw.record == 2):
                    yield raw
                if fault == "twice" and raw.record == 2:
                    yield raw

    with pytest.raises(DataError, match=message):
        clean_rows(Faulty(), path, COLUMNS, settings=CleanSettings(dedup="none"))


def test_broken_csv_quoting_names_the_line(tmp_path):
    with pytest.raises(DataError, match=r"q\.csv:2: broken CSV quoting \(a quoted field is never closed\)"):
        clean(write(tmp_path / "q.csv", 'question,answer\nq1,"unclosed\nq2,a2\n'))
    with pytest.raises(DataError, match=r"j\.csv:3: broken CSV quoting \(text after the closing quote"):
        clean(write(tmp_path / "j.csv", 'question,answer\nq0,a0\nq1,"x" y\n'))


# --------------------------------------------------------------------------------------------------
# Encodings
# --------------------------------------------------------------------------------------------------


def test_hint_never_names_an_encoding_that_misreads_the_utf8_lines(tmp_path):
    good = [{"question": "Café?", "answer": "naïve – “quoted”"}, {"question": "Zürich", "answer": "Größe"}]
    raw = jsonl(good, ensure_ascii=False).encode() + jsonl(
        [{"question": "x", "answer": "café"}], ensure_ascii=False
    ).encode("cp1252")
    path = write(tmp_path / "mixed.jsonl", raw)
    with pytest.raises(DataError) as err:
        clean(path)
    msg = str(err.value)
    assert "line 3 is not valid utf-8" in msg and "data.on_bad_row: reject" in msg and "data.encoding:" not in msg
    c, r, _, _ = clean(path, on_bad_row="reject")
    assert answers(c) == [g["answer"] for g in good] and [x["line"] for x in r] == [3]


@pytest.mark.parametrize("encoding", ["cp1252", "gb18030"])
def test_following_the_hint_reads_every_row_right(tmp_path, encoding):
    rows = (
        [{"question": "Café?", "answer": "déjà vu, naïve"}, {"question": "plain", "answer": "ascii"}]
        if encoding == "cp1252"
        else [{"question": "你好吗", "answer": "很好，谢谢。"}, {"question": "plain", "answer": "ascii"}]
    )
    path = write(tmp_path / "x.jsonl", jsonl(rows, ensure_ascii=False).encode(encoding))
    with pytest.raises(DataError, match=r"set data\.encoding: (\S+)") as err:
        clean(path)
    hinted = err.value.args[0].split("set data.encoding: ")[1].split()[0]
    decoded = Path(path).read_bytes().decode(hinted)  # the hint decodes the whole file ...
    assert len([json.loads(line) for line in decoded.splitlines()]) == 2
    c, _, stats, _ = clean(path, encoding=hinted)  # ... and following it reads every row, the ASCII ones exactly
    assert len(c) == 2 and answers(c)[1] == "ascii" and stats["conserved"]


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_without_bom_are_read(tmp_path, encoding):
    rows = [{"question": "你好？", "answer": "Grüße 👋"}, {"question": "q", "answer": "a"}]
    path = write(tmp_path / "w.jsonl", jsonl(rows, ensure_ascii=False).encode(encoding))
    c, _, stats, _ = clean(path)
    assert (
        answers(c) == ["Grüße 👋", "a"]
        and stats["file"]["encoding"] == encoding
        and "NUL-byte pattern" in stats["file"]["notes"][0]
    )
    c, _, _, _ = clean(path, encoding="utf-16" if "16" in encoding else "utf-32")  # following the old hint works too
    assert answers(c) == ["Grüße 👋", "a"]
    with pytest.raises(DataError, match=rf"NUL-byte pattern says the file is {encoding}.*data\.encoding: {encoding}"):
        clean(path, encoding="cp1252")


@pytest.mark.parametrize(
    "data, what",
    [
        (bytes(range(256)) * 8, "control bytes"),
        (b"PK\x03\x04" + bytes(64), "ZIP archive"),
        (b"\x89PNG\r\n\x1a\n" + bytes(64), "PNG image"),
    ],
)
def test_binary_file_is_called_binary(tmp_path, data, what):
    with pytest.raises(DataError, match=rf"binary file \(.*{what}.*check data\.path") as err:
        clean(write(tmp_path / "data.jsonl", data))
    assert "encoding" not in str(err.value)


# --------------------------------------------------------------------------------------------------
# Files the readers gave up on
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix, compress", [(".gz", gzip.compress), (".bz2", bz2.compress), (".xz", lzma.compress)])
@pytest.mark.parametrize("inner", [".jsonl", ".csv"])
def test_compressed_files_are_read_transparently(tmp_path, suffix, compress, inner):
    text = (
        jsonl(ROWS)
        if inner == ".jsonl"
        else "question,answer\n"
        + "".join(f'{r["question"]},"{r["answer"].replace(chr(34), 2 * chr(34))}"\n' for r in ROWS)
    )
    c, _, stats, _ = clean(write(tmp_path / f"d{inner}{suffix}", compress(text.encode())))
    assert answers(c) == [r["answer"] for r in ROWS] and stats["conserved"] and stats["file"]["compression"]


def test_zstd_needs_one_package_or_is_read(tmp_path):
    path = tmp_path / "d.jsonl.zst"
    if importlib.util.find_spec("zstandard") is None:
        write(path, b"\x28\xb5\x2f\xfd" + bytes(16))
        with pytest.raises(DataError, match=r"zstd-compressed; install the Python package zstandard"):
            clean(str(path))
    else:
        import zstandard

        write(path, zstandard.ZstdCompressor().compress(jsonl(ROWS).encode()))
        assert answers(clean(str(path))[0]) == [r["answer"] for r in ROWS]


@pytest.mark.parametrize(
    "name, data",
    [
        (
            "d.jsonl.gz",
            gzip.compress(jsonl(ROWS).encode(), mtime=0)[:30] + b"\x00" * 8 + gzip.compress(b"x", mtime=0)[30:],
        ),
        ("d.jsonl.gz", gzip.compress(jsonl(ROWS).encode(), mtime=0)[:-6]),
        ("d.parquet", b"PAR1" + bytes(40) + b"PAR1"),
    ],
)
def test_damaged_compressed_and_parquet_files_are_one_line(tmp_path, name, data):
    """Found by the fuzzer: zlib's own error escaped, pyarrow's message spans several lines."""
    with pytest.raises(DataError) as err:
        clean(write(tmp_path / name, data))
    assert "\n" not in str(err.value) and "check" in str(err.value)


def test_directory_and_missing_file_are_told_apart(tmp_path):
    with pytest.raises(DataError, match=r"is a directory; data\.path must name one data file"):
        clean(str(tmp_path))
    with pytest.raises(DataError, match=r"data file not found \(data\.path\)"):
        clean(str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize("name", ["pretty.json", "pretty.jsonl", "pretty.txt"])
def test_pretty_printed_objects_one_after_another_are_read(tmp_path, name):
    path = write(tmp_path / name, "".join(json.dumps(r, indent=2) + "\n" for r in ROWS))
    c, _, stats, _ = clean(path, **({"fmt": "json"} if name.endswith(".txt") else {}))
    assert answers(c) == [r["answer"] for r in ROWS] and stats["file"]["file_format"] == "json"
    assert c[1]["source"] == {"file": path, "record": 2, "line": 5, "end_line": 8}
    with pytest.raises(
        DataError, match=r"not one object per line: set data\.format: json"
    ):  # the one message, when forced
        clean(path, fmt="jsonl")


@pytest.mark.parametrize("wrapper", [{"rows": ROWS}, {"version": 2, "examples": ROWS}, {"data": ROWS}])
def test_wrapper_object_reads_its_list_and_logs_the_key(tmp_path, wrapper):
    path = write(tmp_path / "w.json", json.dumps(wrapper, indent=1))
    c, _, stats, _ = clean(path)
    key = next(k for k, v in wrapper.items() if isinstance(v, list))
    assert answers(c) == [r["answer"] for r in ROWS] and stats["file"]["json_key"] == key
    assert any(f"{key!r} list" in n for n in stats["file"]["notes"]) and stats["conserved"]


def test_wrapper_with_two_lists_names_them_and_a_single_row_is_a_row(tmp_path):
    with pytest.raises(DataError, match=r"several lists of rows \(train, test\)"):
        clean(write(tmp_path / "two.json", json.dumps({"train": ROWS, "test": ROWS})))
    single = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
    assert answers(clean(write(tmp_path / "one.json", json.dumps(single)))[0]) == ["a"]


# --------------------------------------------------------------------------------------------------
# One line instead of a traceback
# --------------------------------------------------------------------------------------------------


def test_lone_surrogate_with_reject_is_written_and_reads_back(tmp_path, tiny_model):
    path = write(
        tmp_path / "s.jsonl", '{"question": "q", "answer": "bad \\ud800 half"}\n{"question": "q2", "answer": "ok"}\n'
    )
    out = {k: str(tmp_path / f"{k}.jsonl") for k in ("clean", "rejected", "changes")}
    files = CleanOutputs(
        out["clean"], out["rejected"], str(tmp_path / "stats.json"), out["changes"], str(tmp_path / "r.html")
    )
    stats = clean_dataset(
        path,
        str(tiny_model),
        files,
        ReaderSettings(COLUMNS, on_bad_row="reject"),
        lengths=LengthSettings(system_prompt=""),
    )
    rejected = read_jsonl(out["rejected"])
    assert stats["conserved"] and [r["reason"] for r in rejected] == ["bad_encoding"]
    assert rejected[0]["row"]["answer"] == "bad \ud800 half"  # written \u-escaped: reads back as the same string
    write_jsonl(tmp_path / "x.jsonl", [{"t": "\udc80"}])
    assert read_jsonl(tmp_path / "x.jsonl") == [{"t": "\udc80"}]


def test_too_small_to_split_is_one_line_naming_rows_and_fractions():
    rows = [
        {"id": str(i), "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]}
        for i in range(2)
    ]
    with pytest.raises(
        DataError,
        match=r"too few rows to split: 2 rows in 2 distinct prompts "
        r".*train 0\.8 / val 0\.1 / test 0\.1 \(config key split",
    ):
        assign_splits(rows, {"train": 0.8, "val": 0.1, "test": 0.1}, 0)
    labelled = [{"line": i, "text": f"t{i}", "label": "a"} for i in range(2)]
    with pytest.raises(DataError, match=r"too few rows to split: 2 rows"):
        stratified_split(labelled, {"train": 0.8, "val": 0.1, "test": 0.1}, 0, ["a"])


def test_source_location_reaches_the_split_files(tmp_path, tiny_model):
    from loraflow.data.chatml import format_dataset

    rows = [{"question": f"question {i}?", "answer": f"answer {i}"} for i in range(30)] + [
        {"question": "bad", "answer": ""}
    ]
    path = write(tmp_path / "d.jsonl", jsonl(rows))
    files = CleanOutputs(str(tmp_path / "clean.jsonl"), str(tmp_path / "rej.jsonl"), str(tmp_path / "cs.json"))
    stats = clean_dataset(
        path, str(tiny_model), files, ReaderSettings(COLUMNS), lengths=LengthSettings(system_prompt="")
    )
    format_dataset(
        str(tmp_path / "clean.jsonl"), str(tiny_model), str(tmp_path / "f.jsonl"), str(tmp_path / "fs.json"), ""
    )
    outs = [str(tmp_path / f"{s}.jsonl") for s in ("train", "val", "test")]
    split = split_dataset(
        str(tmp_path / "f.jsonl"),
        str(tmp_path / "cs.json"),
        *outs,
        str(tmp_path / "s.json"),
        {"train": 0.8, "val": 0.1, "test": 0.1},
        0,
    )
    placed = [r["source"] for p in outs for r in read_jsonl(p)] + [
        r["source"] for r in read_jsonl(tmp_path / "rej.jsonl")
    ]
    assert stats["conserved"] and split["conserved"] and sorted(s["record"] for s in placed) == list(range(1, 32))
    assert all(s == {"file": path, "record": s["record"], "line": s["record"], "end_line": s["record"]} for s in placed)


def test_split_rows_carry_their_source_and_are_placed_once(tmp_path):
    rows = [
        {
            "id": str(i + 1),
            "source": {"file": "f.jsonl", "record": i + 1},
            "meta": {},
            "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a", "weight": 1}],
        }
        for i in range(20)
    ]
    write_jsonl(tmp_path / "f.jsonl", rows)
    (tmp_path / "cs.json").write_text(json.dumps({"rows_in": 21, "rejected": 1}))
    outs = [str(tmp_path / f"{s}.jsonl") for s in ("train", "val", "test")]
    stats = split_dataset(
        str(tmp_path / "f.jsonl"),
        str(tmp_path / "cs.json"),
        *outs,
        str(tmp_path / "s.json"),
        {"train": 0.8, "val": 0.1, "test": 0.1},
        3,
    )
    placed = [r for p in outs for r in read_jsonl(p)]
    assert stats["conserved"] and sorted(r["source"]["record"] for r in placed) == list(range(1, 21))
    assert all(r["messages"][1]["weight"] == 1 for r in placed)


# --------------------------------------------------------------------------------------------------
# Chat conventions
# --------------------------------------------------------------------------------------------------


def test_developer_role_name_and_weight_are_honoured(tmp_path):
    row = {
        "messages": [
            {"role": "developer", "content": "Be terse."},
            {"role": "user", "content": "hi", "name": "alice"},
            {"role": "assistant", "content": "draft", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": "final", "weight": True},
        ]
    }
    c, r, _, _ = clean(write(tmp_path / "c.jsonl", jsonl([row])))
    assert not r and c[0]["messages"] == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "draft", "weight": 0},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "final", "weight": 1},
    ]
    assert c[0]["meta"] == {"turn_fields": {"messages[1]": {"name": "alice"}}}
    sharegpt = {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a", "weight": 0.0}]}
    assert to_messages(sharegpt, COLUMNS, "x")[1] == {"role": "assistant", "content": "a", "weight": 0}


@pytest.mark.parametrize("weight", [0.5, 2, "0", None])
def test_bad_weight_is_a_row_error(tmp_path, weight):
    row = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": weight}]}
    path = write(tmp_path / "w.jsonl", jsonl([row, {"question": "q2", "answer": "fine"}]))
    with pytest.raises(DataError, match=r"w\.jsonl:1: messages\[1\]\.weight must be 0, 1, true or false"):
        clean(path)
    c, r, _, _ = clean(path, on_bad_row="reject")
    assert answers(c) == ["fine"] and r[0]["reason"] == "wrong_type"


def test_dedup_compares_role_and_content_only(tmp_path):
    a = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a", "weight": 1}]}
    b = {"messages": [{"role": "user", "content": "q", "name": "bob"}, {"role": "assistant", "content": "a"}]}
    c, r, _, _ = clean(write(tmp_path / "d.jsonl", jsonl([a, b])))
    assert len(c) == 1 and c[0]["messages"][1]["weight"] == 1 and [x["reason"] for x in r] == ["duplicate"]
