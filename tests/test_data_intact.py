"""Data in, data intact: legitimate text passes the data stages byte for byte, fixers change
only broken text and every change is recorded, the chat formats people have are read, overlong rows are
truncated or rejected as configured, and bad input gives one message naming file:line and the config key."""

from __future__ import annotations

import codecs
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from loraflow.data.chatml import format_dataset, render
from loraflow.data.clean import clean_dataset, clean_rows, has_content
from loraflow.data.conversations import to_messages
from loraflow.data.dedup import near_key
from loraflow.data.fixers import collapse_symbol_runs, collapse_whitespace, remove_controls
from loraflow.data.markup import looks_like_html, strip_html
from loraflow.data.readers import DataError, SourceInfo, iter_raw_rows
from loraflow.data.settings import CleanOutputs, CleanSettings, LengthSettings, ReaderSettings, SplitFiles, TokenFiles
from loraflow.data.split import split_dataset
from loraflow.data.textfix import FixOptions, TextProblem, fix_text
from loraflow.data.tokenization import tokenize_splits

REPO = Path(__file__).resolve().parents[1]
TRICKY = REPO / "tests" / "data" / "tricky_rows.jsonl"
COLUMNS = {
    "messages": "messages",
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "question": "question",
    "answer": "answer",
    "system": "system",
}


def write(path: Path, text: str, encoding: str = "utf-8") -> str:
    path.write_bytes(text.encode(encoding))
    return str(path)


def jsonl(rows) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def clean(path, **kw):
    info = SourceInfo(str(path))
    reader_kw = {k: kw.pop(k) for k in ("fmt", "encoding", "delimiter") if k in kw}
    columns, on_bad_row = {**COLUMNS, **kw.pop("columns", {})}, kw.pop("on_bad_row", "error")
    result = clean_rows(
        iter_raw_rows(str(path), info=info, **reader_kw), str(path), columns, on_bad_row, CleanSettings(**kw), info=info
    )
    return (*result, info)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------------------------------
# Legitimate text: byte-identical through clean -> format
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tricky_run(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("tricky")
    out = CleanOutputs(
        str(d / "clean.jsonl"),
        str(d / "rejected.jsonl"),
        str(d / "stats.json"),
        str(d / "changes.jsonl"),
        str(d / "report.html"),
    )
    stats = clean_dataset(
        str(TRICKY), str(tiny_model), out, ReaderSettings(COLUMNS), lengths=LengthSettings(max_tokens=1024)
    )
    format_dataset(str(d / "clean.jsonl"), str(tiny_model), str(d / "formatted.jsonl"), str(d / "fstats.json"), "")
    return d, stats


def test_tricky_corpus_passes_clean_and_format_byte_identical(tricky_run, tiny_model):
    from transformers import AutoTokenizer

    d, stats = tricky_run
    source = read_jsonl(TRICKY)
    formatted = read_jsonl(d / "formatted.jsonl")
    assert stats["rows_in"] == stats["clean"] == len(source) == len(formatted) == 29
    assert stats["changes"] == {} and (d / "changes.jsonl").read_text() == ""
    assert stats["row_formats"] == {"alpaca": 1, "messages": 2, "qa": 25, "sharegpt": 1}
    tok = AutoTokenizer.from_pretrained(tiny_model)
    for row, out in zip(source, formatted):
        messages = to_messages(row, COLUMNS, "x")
        assert out["text"] == render(tok, messages), row["case"]
        answers = [m["content"] + "<|im_end|>\n" for m in messages if m["role"] == "assistant"]
        assert [out["text"][a:b] for a, b in out["assistant_spans"]] == answers, row["case"]
        assert out["reference"] == messages[-1]["content"]
        assert out["meta"] == {
            k: v
            for k, v in row.items()
            if k
            not in {
                "question",
                "answer",
                "messages",
                "conversations",
                "instruction",
                "input",
                "output",
                "system",
                "history",
            }
        }
    cases = {r["case"] for r in source}
    for needed in (
        "python",
        "java_generics",
        "cpp_include",
        "latex",
        "url_entities",
        "chinese",
        "japanese",
        "emoji_zwj",
        "persian_zwnj",
        "thai_marks_1",
        "hindi_1",
        "european",
        "markdown_table",
    ):
        assert needed in cases


def test_tricky_corpus_survives_near_dedup(tmp_path):
    c, rejected, stats, changes, _ = clean(TRICKY, dedup="near")
    assert not rejected and len(c) == 29 and not changes


def test_meta_travels_through_split(tricky_run):
    d, _ = tricky_run
    out = [str(d / f"{s}.jsonl") for s in ("train", "val", "test")]
    stats = split_dataset(
        str(d / "formatted.jsonl"),
        str(d / "stats.json"),
        *out,
        str(d / "split.json"),
        {"train": 0.6, "val": 0.2, "test": 0.2},
        1,
    )
    assert stats["conserved"]
    metas = {r["meta"]["case"]: r["meta"] for p in out for r in read_jsonl(p)}
    assert metas["sharegpt"]["source"] == {"name": "demo", "id": 7}
    assert metas["messages_multiturn"]["tags"] == ["units", "multi-turn"]


# --------------------------------------------------------------------------------------------------
# Fixers
# --------------------------------------------------------------------------------------------------


def test_default_fixers_only_nfc_line_endings_and_controls():
    text = "caf\u0065\u0301\r\nline\rtwo\x00\x1b\x85\tkept\u200d\u200c ，？² ₂ \u200b  indented"
    fixed, changes = fix_text(text, FixOptions())
    assert fixed == "café\nline\ntwo\n\tkept\u200d\u200c ，？² ₂ \u200b  indented"  # NEL (U+0085) is a line break
    assert [c.fixer for c in changes] == ["line_endings", "control_chars", "nfc"]


@pytest.mark.parametrize(
    "text",
    [
        "Map<String, List<Integer>> m = new HashMap<>();",
        "#include <iostream>\n#include <map>",
        "if x<y and y>z: pass",
        "https://e.com/?a=1&copy=2&times=3&para=4&sect=5&reg=6&not=7",
        "Use `<b>x</b>` for bold.",
        "```html\n<p>code</p>\n```",
        "Box<B> b; Optional<P> p;",
        "Tom &amp; Jerry without markup",
    ],
)
def test_not_html_is_left_alone(text):
    assert not looks_like_html(text)
    assert strip_html(text) == text


def test_html_is_turned_into_text_outside_code():
    assert strip_html("<p>Price:&nbsp;<b>$129</b> &amp; tax</p>") == "Price: $129 & tax"
    assert strip_html("<p>one<br/>two</p>") == "one\ntwo"
    assert (
        strip_html("<b>bold</b> and `<i>code</i>` and &copy=2 and &copy;") == "bold and `<i>code</i>` and &copy=2 and ©"
    )
    assert strip_html("<div>a</div>\n```\n<p>kept</p>\n```") == "a\n\n```\n<p>kept</p>\n```"


def test_mojibake_repaired_recorded_or_rejected():
    zh = "洛摩家居的保修期是两年。"
    fixed, changes = fix_text(zh.encode("utf-8").decode("latin-1"), FixOptions())
    assert fixed == zh and changes[0].fixer == "mojibake" and "latin-1" in changes[0].detail
    en = "It’s the Lumora™ kettle — 2 years."
    assert fix_text(en.encode("utf-8").decode("cp1252"), FixOptions())[0] == en
    for legit in (
        "»Grüße aus München«, sagte er.",
        "« Bonjour », dit-elle ; l’été à Noël.",
        "Ærø Łódź Dvořák İstanbul",
    ):
        assert fix_text(legit, FixOptions()) == (legit, [])
    with pytest.raises(TextProblem, match="only partly"):  # the last character's bytes are cut off
        fix_text("洛摩家居".encode("utf-8")[:-1].decode("latin-1"), FixOptions())
    with pytest.raises(TextProblem, match="clean.mojibake: repair would fix it"):
        fix_text(zh.encode("utf-8").decode("latin-1"), FixOptions(mojibake="reject"))
    broken = zh.encode("utf-8").decode("latin-1")
    assert fix_text(broken, FixOptions(mojibake="keep"))[0] == remove_controls(broken)
    fixed, changes = fix_text("C1 quotes \x93like this\x94 and\x85", FixOptions())  # cp1252 bytes read as Latin-1
    assert fixed == "C1 quotes “like this” and…" and changes[0].detail == "encode latin-1, decode windows-1252"


def test_optional_fixers_do_what_they_say():
    assert fix_text("（１２３）？ x²", FixOptions(nfkc=True))[0] == "(123)? x2"
    assert fix_text("a\u200bb\ufeffc\u00add\u200de", FixOptions(remove_zero_width=True))[0] == "abcd\u200de"
    assert collapse_symbol_runs("wow!!!!!! wait...... `a----b`") == "wow! wait... `a----b`"
    assert collapse_whitespace("  a   b  \n\n\n\n```\n    code\n```") == "a b\n\n```\n    code\n```"
    assert fix_text("  x  ", FixOptions(trim=True))[0] == "x"


def test_near_duplicates_never_merge_different_letters_digits_marks_or_operators():
    def key(q, a="same answer"):
        return near_key([{"role": "user", "content": q}, {"role": "assistant", "content": a}])

    assert key("What is the price?") == key("  WHAT   is the price？？") == key("ｗｈａｔ　ｉｓ　ｔｈｅ　ｐｒｉｃｅ")
    for a, b in [
        ("ใกล้", "ไกล"),
        ("ป่า", "ปา"),
        ("कम", "काम"),
        ("2×2=4", "2+2=4"),
        ("x²", "x2"),
        ("v1", "v2"),
        ("a-b", "ab"),
    ]:
        assert key(a) != key(b), (a, b)


def test_content_check_keeps_emoji_and_short_answers(tmp_path):
    assert has_content("- 😌😊") and has_content("∞") and has_content("C") and has_content("是")
    assert not has_content("~~~~~") and not has_content("……", "any") and not has_content("?!?!", "any")
    path = write(
        tmp_path / "s.jsonl",
        jsonl(
            [
                {"question": "Which language?", "answer": "C"},
                {"question": "Feel?", "answer": "😌"},
                {"question": "Junk?", "answer": "#####"},
            ]
        ),
    )
    c, rejected, _, _, _ = clean(path)
    assert [r["messages"][-1]["content"] for r in c] == ["C", "😌"]
    assert [r["reason"] for r in rejected] == ["symbol_only"]


def test_audit_trail_and_report(tmp_path, tiny_model):
    rows = [
        {"question": "Line\r\nbreaks?", "answer": "Yes\x00 indeed."},
        {"question": "Price?", "answer": "<p>It costs &amp; <b>$5</b></p>"},
        {"question": "Brand?", "answer": "洛摩家居".encode("utf-8").decode("latin-1")},
        {"question": "Plain?", "answer": "Untouched, «really»."},
    ]
    path = write(tmp_path / "a.jsonl", jsonl(rows))
    d = tmp_path
    out = CleanOutputs(
        str(d / "c.jsonl"), str(d / "r.jsonl"), str(d / "s.json"), str(d / "changes.jsonl"), str(d / "report.html")
    )
    stats = clean_dataset(path, str(tiny_model), out, ReaderSettings(COLUMNS), CleanSettings(strip_html=True))
    changes = read_jsonl(d / "changes.jsonl")
    assert [(c["line"], c["field"], c["fixer"]) for c in changes] == [
        (1, "question", "line_endings"),
        (1, "answer", "control_chars"),
        (2, "answer", "html"),
        (3, "answer", "mojibake"),
    ]
    assert changes[2]["before"] == rows[1]["answer"] and changes[2]["after"] == "It costs & $5"
    assert stats["changes"] == {
        "control_chars": {"rows": 1, "fields": 1},
        "html": {"rows": 1, "fields": 1},
        "line_endings": {"rows": 1, "fields": 1},
        "mojibake": {"rows": 1, "fields": 1},
    }
    assert json.loads((d / "s.json").read_text())["fixed"] == {
        "control_chars": 1,
        "html": 1,
        "line_endings": 1,
        "mojibake": 1,
    }
    report = (d / "report.html").read_text()
    assert "What the cleaner changed" in report
    for fixer in ("mojibake", "html", "control_chars", "line_endings"):
        assert f"<h3>{fixer}: 1 fields</h3>" in report
    assert "⟨U+0000⟩" in report and "洛摩家居" in report


# --------------------------------------------------------------------------------------------------
# Formats
# --------------------------------------------------------------------------------------------------


def test_openai_messages_with_text_parts_and_tool_calls(tmp_path):
    rows = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "Part one."}, {"type": "text", "text": "Part two."}],
                },
                {"role": "assistant", "content": "Both parts."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Weather?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [{"id": "1", "type": "function", "function": {"name": "w"}}],
                },
                {"role": "tool", "content": "sunny", "tool_call_id": "1"},
                {"role": "assistant", "content": "Sunny."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]},
                {"role": "assistant", "content": "A cat."},
            ]
        },
    ]
    c, rejected, stats, _, _ = clean(
        write(tmp_path / "o.jsonl", jsonl(rows))
    )  # on_bad_row error: these are not structural
    assert c[0]["messages"][0]["content"] == "Part one.\nPart two."
    assert [r["reason"] for r in rejected] == ["tool_calls", "non_text_content"]
    assert "messages[1] is a tool-call turn (tool_calls)" in rejected[0]["detail"]
    assert "conversations with tool calls are rejected" in rejected[0]["detail"]


def test_sharegpt_roles_and_multi_turn(tmp_path):
    rows = [
        {
            "conversations": [
                {"from": "system", "value": "Be short."},
                {"from": "human", "value": "Hi"},
                {"from": "gpt", "value": "Hello."},
                {"from": "user", "value": "Again"},
                {"from": "bot", "value": "Hello again."},
            ],
            "id": "a",
        },
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "model", "value": "A from model."}]},
        {"conversations": [{"from": "human", "value": "Q"}, {"from": "function_call", "value": "{}"}]},
        {"conversations": [{"from": "alien", "value": "Q"}, {"from": "gpt", "value": "A"}]},
    ]
    path = write(tmp_path / "sg.jsonl", jsonl(rows))
    with pytest.raises(
        DataError, match=r"sg\.jsonl:4: conversations\[0\] has unknown role 'alien'.*data\.on_bad_row: reject"
    ):
        clean(path)
    c, rejected, stats, _, _ = clean(path, on_bad_row="reject")
    assert [m["role"] for m in c[0]["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    assert c[0]["meta"] == {"id": "a"} and c[1]["messages"][1] == {"role": "assistant", "content": "A from model."}
    assert [r["reason"] for r in rejected] == ["tool_calls", "bad_role"] and stats["row_formats"] == {"sharegpt": 2}


def test_alpaca_with_system_and_history(tmp_path):
    row = {
        "instruction": "Translate:",
        "input": "谢谢",
        "output": "Thanks",
        "system": "Translator.",
        "history": [["你好", "Hello"]],
        "src": 1,
    }
    c, *_ = clean(write(tmp_path / "al.jsonl", jsonl([row, {"instruction": "Say hi", "input": "", "output": "hi"}])))
    assert c[0]["messages"] == [
        {"role": "system", "content": "Translator."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Translate:\n\n谢谢"},
        {"role": "assistant", "content": "Thanks"},
    ]
    assert c[0]["meta"] == {"src": 1} and c[1]["messages"][0]["content"] == "Say hi"


def test_json_and_jsonl_told_apart_by_content(tmp_path):
    rows = [{"question": f"q{i}?", "answer": f"answer {i}"} for i in range(3)]
    array_in_jsonl = write(tmp_path / "array.jsonl", json.dumps(rows, indent=2))
    c, _, _, _, info = clean(array_in_jsonl)
    assert len(c) == 3 and info.file_format == "json" and "read as json" in info.notes[0]
    lines_in_json = write(tmp_path / "lines.JSON", jsonl(rows))
    c, _, _, _, info = clean(lines_in_json)
    assert len(c) == 3 and info.file_format == "jsonl"
    with pytest.raises(DataError, match=r"array\.jsonl:1: malformed JSON .*set data\.format: json"):
        clean(array_in_jsonl, fmt="jsonl")
    c, _, _, _, info = clean(lines_in_json, fmt="json")  # JSON values one after another: each is a row
    assert [r["messages"][1]["content"] for r in c] == [
        "answer 0",
        "answer 1",
        "answer 2",
    ] and info.file_format == "json"


def test_csv_dialects_and_case_insensitive_extensions(tmp_path):
    semi = write(
        tmp_path / "semi.csv", 'question;answer;topic\n"What, exactly?";"It is; quoted";a\nSecond?;Yes, two;b\n'
    )
    c, _, _, _, info = clean(semi)
    assert (
        info.delimiter == ";" and c[0]["messages"][1]["content"] == "It is; quoted" and c[1]["meta"] == {"topic": "b"}
    )
    tsv = write(tmp_path / "upper.TSV", "question\tanswer\nA, b?\tc, d\n")
    c, _, _, _, info = clean(tsv)
    assert info.delimiter == "\t" and c[0]["messages"][0]["content"] == "A, b?"
    pipe = write(tmp_path / "p.txt", "question|answer\nq?|an answer\n")
    c, *_ = clean(pipe, fmt="csv", delimiter="|")
    assert c[0]["messages"][1]["content"] == "an answer"
    bad = write(tmp_path / "bad.csv", "question,answer\nq1,a1\nq2,a2,extra\n")
    with pytest.raises(
        DataError, match=r"bad\.csv:3: 3 fields, the header has 2 \(delimiter ',' detected; set data\.delimiter"
    ):
        clean(bad)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "utf-8-sig"])
def test_bom_encodings_are_decoded_before_lines_are_split(tmp_path, encoding):
    rows = [{"question": f"第{i}个问题？", "answer": f"答案 {i}：ŝ"} for i in range(30)]
    raw = jsonl(rows).encode(encoding)
    if encoding == "utf-16-be":
        raw = codecs.BOM_UTF16_BE + raw
    path = tmp_path / "u.jsonl"
    path.write_bytes(raw)
    c, rejected, stats, _, info = clean(path)  # data.encoding stays utf-8: the BOM decides
    assert stats["rows_in"] == 30 and len(c) == 30 and not rejected
    assert c[7]["messages"] == [
        {"role": "user", "content": "第7个问题？"},
        {"role": "assistant", "content": "答案 7：ŝ"},
    ]


def test_gbk_file_error_names_the_line_and_the_encoding(tmp_path):
    lines = ["question,answer"] + [
        f"高血压患者第{i}次应该注意什么？,清淡饮食，按时服药，定期复查血压。" for i in range(40)
    ]
    path = write(tmp_path / "gbk.csv", "\n".join(lines) + "\n", "gbk")
    with pytest.raises(DataError, match=r"gbk\.csv:2: bytes are not valid utf-8 .*; set data\.encoding: gb18030"):
        clean(path)
    c, *_ = clean(path, encoding="gb18030")
    assert len(c) == 40 and c[0]["messages"][0]["content"] == "高血压患者第0次应该注意什么？"


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"instruction": ["Add 2+2", "Name a colour"], "output": ["4", "Blue"], "score": [0.5, 1.0]})
    pq.write_table(table, tmp_path / "d.Parquet")
    c, _, _, _, info = clean(tmp_path / "d.Parquet")
    assert (
        info.file_format == "parquet"
        and [r["messages"][1]["content"] for r in c] == ["4", "Blue"]
        and c[1]["meta"] == {"score": 1.0}
    )


def test_missing_columns_message_names_the_key(tmp_path):
    path = write(tmp_path / "x.jsonl", jsonl([{"prompt": "p", "reply": "r"}]))
    with pytest.raises(
        DataError,
        match=r"x\.jsonl:1: row has none of the mapped column sets.*its keys: prompt, reply \(set data\.columns",
    ):
        clean(path)
    c, *_ = clean(path, columns={"question": "prompt", "answer": "reply"})
    assert c[0]["messages"][1]["content"] == "r"


@pytest.mark.parametrize(
    "name, content, kw, message",
    [
        ("gone.jsonl", None, {}, r"gone\.jsonl: data file not found \(data\.path\)"),
        (
            "x.jsonl",
            '{"question": "q", "answer": "a"}\n',
            {"encoding": "klingon"},
            r"data\.encoding: unknown encoding 'klingon'",
        ),
        ("x.csv", "question,answer\nq,a\n", {"delimiter": ";;"}, r"data\.delimiter: must be one character"),
        ("x.parquet", "not parquet at all", {}, r"x\.parquet: not a readable Parquet file .*data\.format"),
        ("x.dat", "question,answer\nq,a\n", {}, r"x\.dat: cannot tell the file format .*set data\.format"),
        ("e.jsonl", "\n\n", {}, r"e\.jsonl: no data rows found .*data\.path"),
        (
            "w.jsonl",
            '{"question": "q", "answer": 5}\n',
            {},
            r"w\.jsonl:1: field 'answer' must be a string, got int .*data\.on_bad_row",
        ),
        (
            "h.json",
            '[{"question": "q"}]',
            {},
            r"h\.json: item 1: row has none of the mapped column sets .*data\.columns",
        ),
        (
            "t.csv",
            "question\tanswer\nq\ta\n",
            {"delimiter": ","},
            r"t\.csv:2: row has none .*its keys: question\tanswer \(set data\.columns to map yours, "
            r"or data\.delimiter: the header was read as one column",
        ),
    ],
)
def test_error_messages_name_file_line_and_key(tmp_path, name, content, kw, message):
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message):
        clean(path, **kw)


# --------------------------------------------------------------------------------------------------
# Overlong rows
# --------------------------------------------------------------------------------------------------


def test_overlong_truncate_keeps_prompt_references_and_label_masks(tmp_path, tiny_model, caplog):
    from transformers import AutoTokenizer

    long_answer = " ".join(f"word{i}" for i in range(300))
    rows = [{"question": f"Short question {i}?", "answer": f"Short answer {i}."} for i in range(6)]
    rows += [{"question": "Long answer please?", "answer": long_answer}, {"question": "x " * 400, "answer": "too late"}]
    path = write(tmp_path / "long.jsonl", jsonl(rows))
    d = tmp_path
    with caplog.at_level(logging.WARNING, logger="loraflow.data.clean"):
        out = CleanOutputs(str(d / "c.jsonl"), str(d / "r.jsonl"), str(d / "s.json"), str(d / "ch.jsonl"))
        stats = clean_dataset(
            path, str(tiny_model), out, ReaderSettings(COLUMNS), lengths=LengthSettings(max_tokens=128)
        )
    assert stats["overlong"] == {
        "policy": "truncate",
        "max_length": 128,
        "rows_measured": 8,
        "over_max_length": 2,
        "truncated": 1,
        "prompt_too_long": 1,
        "share": 0.25,
        "warning": stats["overlong"]["warning"],
    }
    assert "2 of 8 rows (25 %) are longer than tokenize.max_length=128" in caplog.text
    assert [(r["line"], r["reason"]) for r in read_jsonl(d / "r.jsonl")] == [(8, "prompt_too_long")]
    (change,) = read_jsonl(d / "ch.jsonl")
    assert change["fixer"] == "truncate" and change["line"] == 7 and change["before"] == long_answer
    assert long_answer.startswith(change["after"]) and 0 < len(change["after"]) < len(long_answer)

    format_dataset(str(d / "c.jsonl"), str(tiny_model), str(d / "f.jsonl"), str(d / "fs.json"), "")
    splits = [str(d / f"{s}.jsonl") for s in ("train", "val", "test")]
    split = split_dataset(
        str(d / "f.jsonl"), str(d / "s.json"), *splits, str(d / "ss.json"), {"train": 0.5, "val": 0.25, "test": 0.25}, 0
    )
    assert split["conserved"] and split["rows_in"] == 8
    everything = [r for p in splits for r in read_jsonl(p)]
    assert (
        next(r for r in everything if r["id"] == "7")["reference"] == long_answer
    )  # the reference keeps the whole answer
    npz = [str(d / f"{s}.npz") for s in ("train", "val", "test")]
    meta = tokenize_splits(str(tiny_model), SplitFiles(*splits), TokenFiles(*npz, str(d / "meta.json")), 128)
    assert sum(s["truncated"] for s in meta["splits"].values()) == 1
    tok = AutoTokenizer.from_pretrained(tiny_model)
    from loraflow.data.tokenization import encode_example

    row = next(r for r in everything if r["id"] == "7")
    ids, mask = encode_example(tok, row["text"], row["assistant_spans"], 128, truncate=True)
    assert len(ids) == 128 and mask[-1] == 1 and mask[0] == 0
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == change["after"]
    with pytest.raises(ValueError, match="tokenize.max_length=128"):
        encode_example(tok, row["text"], row["assistant_spans"], 128)

    out = CleanOutputs(str(d / "c2.jsonl"), str(d / "r2.jsonl"), str(d / "s2.json"))
    stats = clean_dataset(
        path, str(tiny_model), out, ReaderSettings(COLUMNS), lengths=LengthSettings(max_tokens=128, overlong="reject")
    )
    assert stats["rejected_by_reason"] == {"too_long": 2} and stats["overlong"]["truncated"] == 0


# --------------------------------------------------------------------------------------------------
# One clear message
# --------------------------------------------------------------------------------------------------


RUNNER_SCRIPT = """
import sys, types
from loraflow.data.readers import DataError
from loraflow import runner
mod = types.ModuleType("fake_stage")
def stage(kind):
    if kind == "data":
        raise DataError("data.jsonl:3: malformed JSON (Expecting value at column 5); set data.format: json")
    raise RuntimeError("a bug")
mod.stage = stage
sys.modules["fake_stage"] = mod
smk = types.SimpleNamespace(
    log=[sys.argv[1]], input={}, output={}, params={"kind": sys.argv[2]}, resources={}, threads=1
)
runner.call_stage(smk, "fake_stage", "stage")
"""


def test_expected_error_is_one_line_without_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    log = tmp_path / "stage.log"
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER_SCRIPT, str(log), "data"], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 1 and proc.stdout == ""
    assert (
        proc.stderr
        == "loraflow error: data.jsonl:3: malformed JSON (Expecting value at column 5); set data.format: json\n"
    )
    text = log.read_text()
    assert "ERROR loraflow: data.jsonl:3: malformed JSON" in text and "Traceback" not in text
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER_SCRIPT, str(tmp_path / "bug.log"), "bug"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1 and "RuntimeError: a bug" in proc.stderr  # an unexpected error keeps its traceback
    assert "Traceback" in (tmp_path / "bug.log").read_text()


def test_snakemake_shows_a_data_error_once(tmp_path):
    (tmp_path / "Snakefile").write_text(
        'rule fail:\n    output: out_path="out.txt"\n    log: "logs/fail.log"\n    params: kind="data"\n    script: '
        '"fail.py"\n'
    )
    (tmp_path / "fail.py").write_text(
        'from loraflow.runner import call_stage\ncall_stage(snakemake, "fake_stage2", "stage")\n'
    )
    (tmp_path / "fake_stage2.py").write_text(
        "from loraflow.data.readers import DataError\ndef stage(out_path, kind):\n    raise DataError('raw.csv:7: "
        "bytes are not valid utf-8; set data.encoding: gb18030')\n"
    )
    profile = (REPO / "profiles" / "default" / "config.yaml").read_text()
    (tmp_path / "profile").mkdir()
    (tmp_path / "profile" / "config.yaml").write_text(profile)
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'src'}:{tmp_path}"}
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--cores", "1", "--profile", str(tmp_path / "profile")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert out.count("raw.csv:7: bytes are not valid utf-8; set data.encoding: gb18030") == 1, out
    assert "Traceback" not in out
