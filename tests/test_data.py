"""Clean, format, split and tokenise stages on the generated data and on hand-made bad input."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from loraflow.data.builtin.support_qa import generate_dataset
from loraflow.data.chatml import format_example, render_with_spans
from loraflow.data.clean import clean_dataset, clean_rows
from loraflow.data.readers import DataError, iter_raw_rows
from loraflow.data.settings import CleanOutputs, CleanSettings, LengthSettings, ReaderSettings, SplitFiles, TokenFiles
from loraflow.data.split import assign_splits, prompt_key, split_dataset
from loraflow.data.tokenization import StaleCacheError, encode_example, load_split, tokenize_splits
from loraflow.tasks.seq_cls.data import normalize_text

COLUMNS = {
    "messages": "messages",
    "instruction": "instruction",
    "input": "input",
    "output": "output",
    "question": "question",
    "answer": "answer",
    "system": "system",
}
# What the default config.yaml switches on for the (deliberately dirty) built-in data.
_CONFIG = yaml.safe_load((Path(__file__).resolve().parents[1] / "config.yaml").read_text(encoding="utf-8"))
BUILTIN_CLEAN = {**_CONFIG["clean"], **_CONFIG["data"]["builtin_clean"]}  # the built-in data's own fixers


def write_lines(path, lines, encoding="utf-8"):
    path.write_bytes("\n".join(lines).encode(encoding) + b"\n")
    return str(path)


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory, tiny_model):
    d = tmp_path_factory.mktemp("clean")
    info = generate_dataset(str(d / "raw.jsonl"), n_rows=600, seed=3)
    out = CleanOutputs(
        str(d / "clean.jsonl"),
        str(d / "rejected.jsonl"),
        str(d / "stats.json"),
        str(d / "changes.jsonl"),
        str(d / "report.html"),
    )
    stats = clean_dataset(
        str(d / "raw.jsonl"),
        str(tiny_model),
        out,
        ReaderSettings(COLUMNS),
        CleanSettings(**BUILTIN_CLEAN),
        LengthSettings(max_tokens=512, system_prompt="Be brief."),
    )
    return d, info, stats


def test_every_dirty_kind_is_caught_and_rows_are_conserved(cleaned):
    d, info, stats = cleaned
    raw_ids = [json.loads(line)["id"] for line in (d / "raw.jsonl").read_text().splitlines()]
    line_of = {rid: i + 1 for i, rid in enumerate(raw_ids)}
    rejected = {r["line"]: r["reason"] for r in map(json.loads, (d / "rejected.jsonl").read_text().splitlines())}
    clean_lines = {json.loads(line)["line"] for line in (d / "clean.jsonl").read_text().splitlines()}
    assert stats["rows_in"] == 600 == len(clean_lines) + len(rejected)
    assert stats["conserved"] and not clean_lines & set(rejected)
    expected = {
        "symbol_only": "symbol_only",
        "empty": "empty",
        "exact_dup": "duplicate",
        "near_dup": "duplicate",
        "overlong": "too_long",
        "too_short": "too_short",
    }
    for kind, reason in expected.items():
        for rid in info["dirty"][kind]:
            assert rejected.get(line_of[rid]) == reason, (kind, rid)
    fixers = {
        "html": ("html",),
        "control": ("control_chars", "zero_width"),
        "symbol_run": ("symbol_run",),
        "mojibake": ("mojibake",),
    }
    changes = [json.loads(line) for line in (d / "changes.jsonl").read_text().splitlines()]
    for kind, names in fixers.items():  # fixable: kept, cleaned, and the change recorded
        lines = {line_of[rid] for rid in info["dirty"][kind]}
        assert lines <= clean_lines, kind
        assert lines <= {c["line"] for c in changes if c["fixer"] in names}, kind
        assert sum(stats["fixed"][f] for f in names) >= len(lines)
    assert len(rejected) == sum(len(info["dirty"][k]) for k in expected)
    # the only changes are the ones the dirty rows need: no clean row is touched
    dirty_lines = {line_of[rid] for ids in info["dirty"].values() for rid in ids}
    assert {c["line"] for c in changes} <= dirty_lines


def test_clean_text_has_no_html_controls_or_runs(cleaned):
    d, _, _ = cleaned
    text = (d / "clean.jsonl").read_text()
    for bad in ("<p>", "<br", "&amp;", "\\u0000", "\u200b", "\ufeff", "!!!!", "~~~~", "â€", "æ´"):
        assert bad not in text
    assert "，" in text and "？" in text  # full-width punctuation of the Chinese rows is kept (no NFKC)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("<p>Price:&nbsp;<b>$129</b></p>", "Price: $129"),
        ("Ｈｅｌｌｏ　world\u200b\x00!!!!!!", "Hello world!"),
        ("line one\r\n\r\n\r\n\r\nline   two", "line one\n\nline two"),
        ("wait......", "wait..."),
    ],
)
def test_normalize_text(raw, expected):
    assert normalize_text(raw) == expected


def rows_of(tmp_path, name, lines, **kw):
    return clean_rows(iter_raw_rows(write_lines(tmp_path / name, lines)), str(tmp_path / name), COLUMNS, **kw)[:3]


def test_malformed_json_names_file_and_line(tmp_path):
    lines = ['{"question": "a?", "answer": "yes indeed"}', '{"question": "b?", "answer": ']
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        rows_of(tmp_path, "bad.jsonl", lines)
    clean, rejected, stats = rows_of(tmp_path, "bad.jsonl", lines, on_bad_row="reject")
    assert len(clean) == 1 and rejected[0]["reason"] == "bad_json" and stats["conserved"]


def test_missing_columns_and_wrong_types_name_the_line(tmp_path):
    with pytest.raises(DataError, match=r"x\.jsonl:2: row has none of the mapped column sets.*its keys: prompt, reply"):
        rows_of(tmp_path, "x.jsonl", ['{"question": "a?", "answer": "fine"}', '{"prompt": "b", "reply": "c"}'])
    with pytest.raises(DataError, match=r"y\.jsonl:1: field 'answer' must be a string, got int"):
        rows_of(tmp_path, "y.jsonl", ['{"question": "a?", "answer": 42}'])


def test_role_problems_are_rejected_with_reasons(tmp_path):
    lines = [
        json.dumps({"messages": [{"role": "user", "content": "hi there"}]}),
        json.dumps({"messages": [{"role": "assistant", "content": "hello"}, {"role": "user", "content": "hi"}]}),
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello you"}]}),
        json.dumps({"instruction": "Translate", "input": "猫", "output": "cat cat"}),
    ]
    clean, rejected, stats = rows_of(tmp_path, "m.jsonl", lines)
    assert [r["reason"] for r in rejected] == ["no_assistant", "role_order"]
    assert len(clean) == 2 and clean[1]["messages"][0]["content"] == "Translate\n\n猫"


def test_empty_and_all_rejected_files_are_errors(tmp_path):
    with pytest.raises(DataError, match="no data rows"):
        rows_of(tmp_path, "e.jsonl", [""])
    with pytest.raises(DataError, match="all 2 rows were rejected"):
        rows_of(tmp_path, "r.jsonl", ['{"question": "a?", "answer": ""}', '{"question": "b?", "answer": "!!!!"}'])


def test_non_utf8_bytes_name_the_line(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("question,answer\n你好吗,很好谢谢\n".encode("gb18030"))
    with pytest.raises(
        DataError, match=r"gbk\.csv:2: bytes are not valid utf-8 \(invalid \w+ byte\); set data\.encoding: \S+"
    ):
        clean_rows(iter_raw_rows(str(path)), str(path), COLUMNS)
    assert [r.error.reason for r in iter_raw_rows(str(path))] == ["bad_encoding"]  # only that record, not the file
    rows = list(iter_raw_rows(str(path), encoding="gb18030"))
    assert rows[0].data == {"question": "你好吗", "answer": "很好谢谢"}


def test_csv_with_embedded_newlines_bom_and_crlf(tmp_path):
    path = tmp_path / "q.csv"
    path.write_bytes(b'\xef\xbb\xbfquestion,answer\r\n"multi\r\nline, ""quoted""",ok fine\r\nsecond,row two\r\n')
    rows = list(iter_raw_rows(str(path)))
    assert [r.line for r in rows] == [2, 4]
    assert rows[0].data["question"] == 'multi\r\nline, "quoted"'


def test_chatml_spans_cover_exactly_the_assistant_replies(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    msgs = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "A1"},
        {"role": "user", "content": "Q2"},
        {"role": "assistant", "content": "A2"},
    ]
    text, spans = render_with_spans(tok, msgs)
    assert [text[a:b] for a, b in spans] == ["A1<|im_end|>\n", "A2<|im_end|>\n"]
    ex = format_example(tok, msgs[1:3], "Be brief.")
    assert (
        ex["prompt"]
        == "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nQ1<|im_end|>\n<|im_start|>assistant\n"
    )
    ids, mask = encode_example(tok, ex["text"], ex["assistant_spans"], 512)
    supervised = tok.decode([i for i, m in zip(ids, mask) if m])
    assert supervised == "A1<|im_end|>\n"


def test_builtin_chatml_template_when_tokenizer_has_none(tiny_model_no_template):
    from transformers import AutoTokenizer

    from loraflow.data.chatml import ensure_chat_template

    tok = AutoTokenizer.from_pretrained(tiny_model_no_template)
    assert ensure_chat_template(tok) == "builtin-chatml"
    text, spans = render_with_spans(tok, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    assert text == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nyo<|im_end|>\n"


def _conv(q, a):
    return {
        "id": q,
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": q},
            {"role": "assistant", "content": a},
        ],
    }


def test_split_is_deterministic_grouped_and_order_independent():
    rows = [_conv(f"question {i % 150}" + (" " if i % 2 else ""), f"answer {i}") for i in range(400)]
    a = assign_splits(rows, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=7)
    b = assign_splits(list(reversed(rows)), {"train": 0.8, "val": 0.1, "test": 0.1}, seed=7)
    c = assign_splits(rows, {"train": 0.8, "val": 0.1, "test": 0.1}, seed=8)

    def ids(parts):
        return {k: sorted(r["id"] + r["messages"][-1]["content"] for r in v) for k, v in parts.items()}

    assert ids(a) == ids(b) and ids(a) != ids(c)
    keys = {k: {prompt_key(r) for r in v} for k, v in a.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["val"] and not keys["val"] & keys["test"]
    assert sum(len(v) for v in a.values()) == 400
    assert 300 <= len(a["train"]) <= 340


def test_split_stage_checks_conservation(tmp_path):
    rows = [dict(_conv(f"q{i}", "a"), text="t", assistant_spans=[]) for i in range(50)]
    (tmp_path / "f.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "cs.json").write_text(json.dumps({"rows_in": 53, "rejected": 3}))
    out = [str(tmp_path / f"{s}.jsonl") for s in ("train", "val", "test")]
    stats = split_dataset(
        str(tmp_path / "f.jsonl"),
        str(tmp_path / "cs.json"),
        *out,
        str(tmp_path / "s.json"),
        {"train": 0.8, "val": 0.1, "test": 0.1},
        1,
    )
    assert stats["conserved"] and stats["train"] + stats["val"] + stats["test"] == 50
    (tmp_path / "cs.json").write_text(json.dumps({"rows_in": 60, "rejected": 3}))
    with pytest.raises(DataError, match="conservation broken: 60 rows in, 53 out"):
        split_dataset(
            str(tmp_path / "f.jsonl"),
            str(tmp_path / "cs.json"),
            *out,
            str(tmp_path / "s.json"),
            {"train": 0.8, "val": 0.1, "test": 0.1},
            1,
        )


def test_tokenise_cache_refuses_another_tokenizer(tmp_path, tiny_model, tiny_model_no_template):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    ex = format_example(tok, _conv("q", "the answer")["messages"], "")
    paths = {}
    for s in ("train", "val", "test"):
        paths[s] = tmp_path / f"{s}.jsonl"
        paths[s].write_text(json.dumps(ex) + "\n")
    outs = [str(tmp_path / f"{s}.npz") for s in ("train", "val", "test")]
    meta = tokenize_splits(
        str(tiny_model), SplitFiles(*map(str, paths.values())), TokenFiles(*outs, str(tmp_path / "meta.json")), 64
    )
    assert meta["splits"]["train"]["examples"] == 1
    ((ids, mask),) = load_split(outs[0], str(tmp_path / "meta.json"), str(tiny_model))
    assert isinstance(ids, np.ndarray) and mask.sum() == meta["splits"]["train"]["supervised_tokens"] > 0
    with pytest.raises(StaleCacheError, match="another tokenizer"):
        load_split(outs[0], str(tmp_path / "meta.json"), str(tiny_model_no_template))


def test_jsonl_with_bom_crlf_bad_bytes_huge_row_and_mixed_schemas(tmp_path):
    """One file with the awkward inputs users have: each row ends in clean or rejected with a reason."""
    huge = "x" * 1_000_000
    lines = [
        '\ufeff{"question": "What is the BOM?", "answer": "A byte order mark."}\r',  # BOM + CRLF
        '{"instruction": "Translate", "input": "猫", "output": "cat, the animal"}\r',
        json.dumps({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello there"}]})
        + "\r",
        json.dumps({"question": "Huge?", "answer": huge}),  # a 1 MB single row
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_bytes("\n".join(lines).encode("utf-8") + b"\n" + b'{"question": "bad \xff byte", "answer": "no"}\n')
    clean, rejected, stats, _ = clean_rows(
        iter_raw_rows(str(path)), str(path), COLUMNS, on_bad_row="reject", settings=CleanSettings(max_chars=4000)
    )
    assert [c["line"] for c in clean] == [1, 2, 3]
    assert clean[0]["messages"][0]["content"] == "What is the BOM?"  # no BOM, no \r
    assert {r["line"]: r["reason"] for r in rejected} == {4: "too_long", 5: "bad_encoding"}
    assert stats["rows_in"] == 5 and stats["conserved"]
    with pytest.raises(DataError, match=r"mixed\.jsonl:5: bytes are not valid utf-8"):
        clean_rows(iter_raw_rows(str(path)), str(path), COLUMNS)


def test_json_array_file_and_wrong_message_types(tmp_path):
    path = tmp_path / "rows.json"
    path.write_text(
        json.dumps(
            [
                {"question": "q?", "answer": "fine answer"},
                {"messages": [{"role": "user", "content": 5}]},
                {"messages": [{"role": "robot", "content": "x"}]},
            ]
        )
    )
    clean, rejected, _, _ = clean_rows(iter_raw_rows(str(path)), str(path), COLUMNS, on_bad_row="reject")
    assert len(clean) == 1 and [r["reason"] for r in rejected] == ["wrong_type", "bad_role"]
    assert "unknown role 'robot'" in rejected[1]["detail"]
