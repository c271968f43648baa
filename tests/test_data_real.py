"""The real data sets through the data stages (their directory: $LORAFLOW_DATA_DIR, else shared/data beside
the checkout; skipped where there is none):
the raw GB18030 medical CSV and a JSONL set come out with every legitimate row kept byte for byte."""

from __future__ import annotations

import csv
import io
import json

import pytest

from helpers import COLUMNS, DATA_DIR_ENV, real_data_dir
from loraflow.data.chatml import format_dataset
from loraflow.data.clean import clean_dataset
from loraflow.data.settings import CleanOutputs, LengthSettings, ReaderSettings, SplitFiles, TokenFiles
from loraflow.data.split import split_dataset
from loraflow.data.tokenization import tokenize_splits

DATA = real_data_dir()

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(DATA is None, reason=f"no real data sets: set {DATA_DIR_ENV} to their directory"),
]


def run_stages(tmp_path, tiny_model, path, max_tokens, tokenize=True, **kw):
    d = tmp_path
    out = CleanOutputs(
        str(d / "clean.jsonl"), str(d / "rejected.jsonl"), str(d / "stats.json"), str(d / "changes.jsonl")
    )
    stats = clean_dataset(
        str(path),
        str(tiny_model),
        out,
        ReaderSettings(kw.pop("columns", COLUMNS), **kw),
        lengths=LengthSettings(max_tokens=max_tokens),
    )
    format_dataset(str(d / "clean.jsonl"), str(tiny_model), str(d / "formatted.jsonl"), str(d / "fstats.json"), "")
    splits = [str(d / f"{s}.jsonl") for s in ("train", "val", "test")]
    split = split_dataset(
        str(d / "formatted.jsonl"),
        str(d / "stats.json"),
        *splits,
        str(d / "split.json"),
        {"train": 0.8, "val": 0.1, "test": 0.1},
        42,
    )
    if tokenize:  # the truncations the clean stage recorded are the ones the tokenise stage makes
        npz = [str(d / f"{s}.npz") for s in ("train", "val", "test")]
        meta = tokenize_splits(str(tiny_model), SplitFiles(*splits), TokenFiles(*npz, str(d / "meta.json")), max_tokens)
        assert sum(s["truncated"] for s in meta["splits"].values()) == stats["overlong"]["truncated"]
    clean = [json.loads(line) for line in (d / "clean.jsonl").read_text(encoding="utf-8").splitlines()]
    changes = [json.loads(line) for line in (d / "changes.jsonl").read_text(encoding="utf-8").splitlines()]
    assert stats["conserved"] and split["conserved"] and split["rows_in"] == stats["rows_in"] == stats["source_records"]
    return stats, clean, changes


def test_gb18030_medical_csv(tmp_path, tiny_model):
    path = DATA / "zh_medical_dialogue_im_raw_gb18030.csv"
    stats, clean, changes = run_stages(
        tmp_path, tiny_model, path, 4096, tokenize=False, encoding="gb18030", columns={**COLUMNS, "question": "ask"}
    )
    assert stats["file"] == {"file_format": "csv", "encoding": "gb18030", "delimiter": ",", "quoting": "minimal"}
    assert stats["rows_in"] == 7644 and stats["rejected_by_reason"].get("duplicate") == 396
    assert set(stats["rejected_by_reason"]) <= {"duplicate", "prompt_too_long"}
    assert {c["fixer"] for c in changes} <= {"truncate"}  # no character of any row changed
    reader = csv.reader(io.StringIO(path.read_bytes().decode("gb18030"), newline=""))
    header, records, start = next(reader), {}, 2
    for cells in reader:  # records by the line they start on (answers may span lines)
        records[start] = dict(zip(header, cells))
        start = reader.line_num + 1
    for row in clean:  # every kept row: exactly the file's cells, department and title carried as meta
        rec = records[row["line"]]
        assert row["messages"] == [
            {"role": "user", "content": rec["ask"]},
            {"role": "assistant", "content": rec["answer"]},
        ]
        assert row["meta"] == {"department": rec["department"], "title": rec["title"]}
    assert sum("，" in r["messages"][1]["content"] for r in clean) > 0.9 * len(clean)  # full-width punctuation kept


def test_jsonl_set(tmp_path, tiny_model):
    path = DATA / "en_self_instruct_user_oriented.jsonl"
    stats, clean, changes = run_stages(tmp_path, tiny_model, path, 512)  # small limit: some answers are truncated
    assert stats["rows_in"] == 252 and set(stats["rejected_by_reason"]) <= {"prompt_too_long"}
    assert {c["fixer"] for c in changes} == {"truncate"} and stats["overlong"]["truncated"] == len(changes) > 0
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for row in clean:
        src = rows[row["line"] - 1]
        user = src["instruction"] + ("\n\n" + src["input"] if src["input"].strip() else "")
        assert row["messages"] == [{"role": "user", "content": user}, {"role": "assistant", "content": src["output"]}]
