"""Tests for the built-in bilingual QA generator (loraflow.data.builtin.support_qa)."""

from __future__ import annotations

import json
import random
import re
import unicodedata
from collections import Counter

import pytest

from loraflow.data.builtin import catalogue
from loraflow.data.builtin import pool as pool_mod
from loraflow.data.builtin import support_qa as synth
from loraflow.data.builtin.support_qa import DIRTY_KINDS, generate_dataset

CJK = re.compile(r"[\u4e00-\u9fff]")
CONTROL = re.compile("[\x00-\x08\x0e\x1b\u200b\ufeff]")


def norm(text: str) -> str:
    """NFKC + casefold + collapsed whitespace, trailing punctuation/whitespace removed."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    while text and (text[-1].isspace() or unicodedata.category(text[-1]).startswith("P")):
        text = text[:-1]
    return text


def read_rows(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """The default 1500-row set: (summary, rows by id, rows in file order, path)."""
    path = tmp_path_factory.mktemp("synth") / "data.jsonl"
    summary = generate_dataset(str(path), n_rows=1500, seed=0)
    rows = read_rows(path)
    return summary, {r["id"]: r for r in rows}, rows, path


def dirty_ids(summary) -> set[str]:
    return {i for ids in summary["dirty"].values() for i in ids}


def clean_rows(summary, rows) -> list[dict]:
    dirty = dirty_ids(summary)
    return [r for r in rows if r["id"] not in dirty]


# --- determinism and file format -------------------------------------------


def test_same_seed_same_bytes_different_seed_differs(tmp_path):
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    sa = generate_dataset(str(a), n_rows=300, seed=7)
    sb = generate_dataset(str(b), n_rows=300, seed=7)
    generate_dataset(str(c), n_rows=300, seed=8)
    assert a.read_bytes() == b.read_bytes()
    assert sa == sb
    assert a.read_bytes() != c.read_bytes()


def test_row_count_ids_and_schema(dataset):
    summary, by_id, rows, _ = dataset
    assert summary["rows"] == len(rows) == 1500
    assert len(by_id) == 1500
    assert [r["id"] for r in rows] == sorted(by_id)  # ids follow file order
    assert all(re.fullmatch(r"syn-\d{5}", r["id"]) for r in rows)
    for r in rows:
        assert list(r) == ["id", "lang", "question", "answer", "facts"]  # facts: what the answer states (fact metric)
        assert r["lang"] in ("en", "zh")
        assert isinstance(r["question"], str) and isinstance(r["answer"], str)
    assert summary["clean"] == 1500 - len(dirty_ids(summary))


def test_file_is_utf8_one_object_per_line(dataset):
    *_, path = dataset
    raw = path.read_bytes()
    text = raw.decode("utf-8")
    assert "洛摩" in text  # not \u-escaped (ensure_ascii=False)
    assert raw.endswith(b"\n") and b"\r" not in raw
    lines = text.splitlines()  # splitlines also breaks on \x85, \u2028: must not happen inside rows
    assert len(lines) == 1500
    assert all(json.loads(line) for line in lines)


def test_languages_roughly_balanced(dataset):
    _, _, rows, _ = dataset
    counts = Counter(r["lang"] for r in rows)
    assert abs(counts["en"] - counts["zh"]) <= 0.1 * len(rows)
    zh_clean = [r for r in rows if r["lang"] == "zh"][:50]
    assert all(CJK.search(r["question"]) for r in zh_clean)


def test_no_dirtiness_marker_in_rows(dataset):
    _, _, rows, _ = dataset
    assert all(set(r) == {"id", "lang", "question", "answer", "facts"} for r in rows)


def test_atomic_write_leaves_no_temp_files_and_creates_dirs(tmp_path):
    out = tmp_path / "nested" / "dir" / "data.jsonl"
    generate_dataset(str(out), n_rows=120, seed=1)
    generate_dataset(str(out), n_rows=120, seed=2)  # overwrite in place
    assert [p.name for p in out.parent.iterdir()] == ["data.jsonl"]
    assert len(read_rows(out)) == 120


def test_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError):
        generate_dataset(str(tmp_path / "x.jsonl"), n_rows=0)
    with pytest.raises(ValueError):
        generate_dataset(str(tmp_path / "x.jsonl"), dirty_fraction=0.9)
    assert not (tmp_path / "x.jsonl").exists()


def test_warns_when_rows_exceed_the_question_pool(tmp_path, recwarn):
    generate_dataset(str(tmp_path / "ok.jsonl"), n_rows=1500, seed=0)
    assert not [w for w in recwarn if "pool" in str(w.message)]
    with pytest.warns(UserWarning, match="pool"):
        generate_dataset(str(tmp_path / "big.jsonl"), n_rows=2500, seed=0)


def test_cli(tmp_path, capsys):
    out = tmp_path / "cli.jsonl"
    assert synth.main(["--out", str(out), "--rows", "200", "--seed", "3", "--dirty-fraction", "0.1"]) == 0
    assert len(read_rows(out)) == 200
    assert "200 rows" in capsys.readouterr().out


# --- clean rows --------------------------------------------------------------


def test_clean_answers_have_sensible_lengths(dataset):
    summary, _, rows, _ = dataset
    for r in clean_rows(summary, rows):
        a = r["answer"]
        if r["lang"] == "en":
            assert 8 <= len(a.split()) <= 40, a
            assert a.isascii() and a.endswith("."), a
        else:
            assert 15 <= len(a) <= 60, a
            assert CJK.search(a) and a.endswith("。"), a


def test_clean_rows_are_distinct_and_consistent(dataset):
    summary, _, rows, _ = dataset
    clean = clean_rows(summary, rows)
    assert len(clean) == summary["clean"]
    keys = [(norm(r["question"]), norm(r["answer"])) for r in clean]
    assert len(set(keys)) == len(keys)
    # a question always gets the same answer
    answers = {}
    for r in clean:
        assert answers.setdefault(r["question"], r["answer"]) == r["answer"]
    assert not any(CONTROL.search(r["question"] + r["answer"]) for r in clean)


def test_facts_are_asked_with_several_paraphrases(dataset):
    summary, _, rows, _ = dataset
    per_answer = Counter(r["answer"] for r in clean_rows(summary, rows))
    assert max(per_answer.values()) >= 3
    assert sum(1 for n in per_answer.values() if n >= 2) > len(per_answer) / 3


def test_prices_are_consistent_between_languages():
    rng = random.Random(0)
    for p in catalogue.make_catalogue(rng):
        assert p.cny == catalogue.usd_to_cny(p.usd)
        assert 5 <= p.cny / p.usd <= 9.5


def test_catalogue_size_and_pool_paraphrases():
    rng = random.Random(0)
    products = catalogue.make_catalogue(rng)
    assert 30 <= len(products) <= 50
    assert len({p.name for p in products}) == len(products)
    pool = pool_mod.build_pool(products, catalogue.make_policy(rng))
    for lang in ("en", "zh"):
        per_answer = Counter(a for _, a in pool[lang])
        assert min(per_answer.values()) >= 3


# --- dirty rows ----------------------------------------------------------------


def test_every_dirty_kind_present_with_valid_ids(dataset):
    summary, by_id, _, _ = dataset
    assert set(summary["dirty"]) == set(DIRTY_KINDS)
    all_ids = [i for ids in summary["dirty"].values() for i in ids]
    assert len(all_ids) == len(set(all_ids))
    assert 0.06 * 1500 <= len(all_ids) <= 0.10 * 1500
    for kind, ids in summary["dirty"].items():
        assert ids, kind
        assert all(i in by_id for i in ids)


def test_every_kind_present_at_200_rows(tmp_path):
    summary = generate_dataset(str(tmp_path / "small.jsonl"), n_rows=200, seed=5)
    assert all(summary["dirty"][kind] for kind in DIRTY_KINDS)


def test_no_dirty_rows_when_fraction_is_zero(tmp_path):
    summary = generate_dataset(str(tmp_path / "z.jsonl"), n_rows=300, seed=5, dirty_fraction=0)
    assert summary["clean"] == 300 and not dirty_ids(summary)


def rows_of(dataset, kind) -> list[dict]:
    summary, by_id, _, _ = dataset
    rows = [by_id[i] for i in summary["dirty"][kind]]
    assert rows, f"the generator made no {kind} rows: the checks below would pass vacuously"
    return rows


def test_mojibake_rows_are_recoverable_garble(dataset):
    rows = rows_of(dataset, "mojibake")
    assert {r["lang"] for r in rows} == {"en", "zh"}
    for r in rows:
        a = r["answer"]
        if r["lang"] == "zh":
            assert re.search("[ÃåæçèéäÂ]", a) and not CJK.search(a)
            assert CJK.search(a.encode("latin-1").decode("utf-8"))
        else:
            assert "â€" in a or "â„" in a
            fixed = a.encode("cp1252", errors="ignore")  # drops the C1 byte the fallback kept
            assert "™" in fixed.decode("utf-8", errors="replace")
    # some zh rows have a garbled question too
    assert any(not CJK.search(r["question"]) for r in rows if r["lang"] == "zh")


def test_html_rows_contain_tags_or_entities(dataset):
    rows = rows_of(dataset, "html")
    for r in rows:
        assert re.search(r"</?(p|b|br)\s*/?>|&(amp|nbsp);", r["answer"]), r["answer"]
        stripped = re.sub(r"<[^>]+>", "", r["answer"])
        assert len(stripped.strip()) >= 8
    joined = " ".join(r["answer"] for r in rows)
    for marker in ("<p>", "<br/>", "<b>", "&amp;", "&nbsp;"):
        assert marker in joined


def test_control_rows_are_fixable(dataset):
    for r in rows_of(dataset, "control"):
        assert CONTROL.search(r["answer"])
        fixed = CONTROL.sub("", r["answer"])
        assert fixed.endswith(("。", ".")) and len(fixed) >= 15


def test_symbol_run_rows(dataset):
    for r in rows_of(dataset, "symbol_run"):
        assert re.search(r"([!~#.？！])\1{5,}", r["answer"]), r["answer"]
        assert CJK.search(r["answer"]) or len(r["answer"].split()) >= 8


def test_symbol_only_empty_and_too_short(dataset):
    for r in rows_of(dataset, "symbol_only"):
        a = r["answer"]
        assert a and all(unicodedata.category(c)[0] in "PS" for c in a), a
    for r in rows_of(dataset, "empty"):
        assert r["answer"].strip() == ""
        assert r["question"].strip()
    assert all(rows_of(dataset, kind) for kind in ("symbol_only", "empty", "too_short"))  # each kind is there
    for r in rows_of(dataset, "too_short"):
        assert 1 <= len(r["answer"]) <= 2 and r["answer"].strip() and r["answer"].isalnum()


def test_overlong_rows(dataset):
    for r in rows_of(dataset, "overlong"):
        assert len(r["answer"]) > 6000


def test_exact_dups_copy_a_clean_row(dataset):
    summary, by_id, _, _ = dataset
    clean_ids = {r["id"] for r in clean_rows(summary, dataset[2])}
    for i in summary["dirty"]["exact_dup"]:
        src = by_id[summary["dup_of"][i]]
        assert src["id"] in clean_ids and src["id"] != i
        assert (by_id[i]["question"], by_id[i]["answer"]) == (src["question"], src["answer"])


def test_dups_come_after_their_source(dataset):
    """So a first-wins dedup rejects exactly the ids listed as exact_dup/near_dup."""
    summary, _, _, _ = dataset
    dup_ids = summary["dirty"]["exact_dup"] + summary["dirty"]["near_dup"]
    assert sorted(summary["dup_of"]) == sorted(dup_ids)
    assert all(summary["dup_of"][i] < i for i in dup_ids)  # ids follow file order


def test_near_dups_equal_source_only_after_normalisation(dataset):
    summary, by_id, rows, _ = dataset
    clean_keys = {(norm(r["question"]), norm(r["answer"])) for r in clean_rows(summary, rows)}
    for i in summary["dirty"]["near_dup"]:
        dup, src = by_id[i], by_id[summary["dup_of"][i]]
        assert (dup["question"], dup["answer"]) != (src["question"], src["answer"])
        assert norm(dup["question"]) == norm(src["question"])
        assert norm(dup["answer"]) == norm(src["answer"])
        assert (norm(dup["question"]), norm(dup["answer"])) in clean_keys


def test_fixable_rows_do_not_collide_with_clean_questions(dataset):
    """A cleaned html/control/symbol_run row must not turn into a duplicate."""
    summary, _, rows, _ = dataset
    clean_questions = {norm(r["question"]) for r in clean_rows(summary, rows)}
    for kind in ("html", "control", "symbol_run"):
        for r in rows_of(dataset, kind):
            assert norm(CONTROL.sub("", r["question"])) not in clean_questions


def test_builtin_data_through_its_own_clean_settings_rejects_exactly_its_junk(tmp_path):
    """data.builtin_clean (the built-in preset, over the lossless `clean`) fixes or rejects each dirty row
    as its kind says, and leaves every clean row as generated."""
    import yaml

    from helpers import REPO
    from loraflow.config import clean_settings, validate_config
    from loraflow.data.clean import clean_rows as run_clean
    from loraflow.data.readers import iter_raw_rows
    from loraflow.data.settings import CleanSettings

    path = tmp_path / "raw.jsonl"
    summary = generate_dataset(str(path), n_rows=400, seed=42)
    s = clean_settings(validate_config(yaml.safe_load((REPO / "config.yaml").read_text(encoding="utf-8"))))
    columns = {
        "question": "question",
        "answer": "answer",
        "messages": "messages",
        "instruction": "instruction",
        "input": "input",
        "output": "output",
        "system": "system",
        "conversations": "conversations",
        "history": "history",
    }
    clean, rejected, _, _ = run_clean(iter_raw_rows(str(path)), str(path), columns, "error", CleanSettings(**s))
    by_reason: dict[str, set] = {}
    for r in rejected:
        by_reason.setdefault(r["reason"], set()).add(r["row"]["id"])
    dirty = summary["dirty"]
    assert by_reason == {
        "symbol_only": set(dirty["symbol_only"]),
        "empty": set(dirty["empty"]),
        "too_short": set(dirty["too_short"]),
        "too_long": set(dirty["overlong"]),
        "duplicate": set(dirty["exact_dup"]) | set(dirty["near_dup"]),
    }
    raw = {r["id"]: r for r in map(json.loads, path.read_text(encoding="utf-8").splitlines())}
    for row in clean:
        original = raw[row["meta"]["id"]]
        if original["id"] in set(dirty["control"]):  # the sprinkled controls go, no line break comes in
            assert row["messages"][-1]["content"] == CONTROL.sub("", original["answer"])
        elif original["id"] not in dirty_ids(summary):
            assert row["messages"][-1]["content"] == original["answer"]


@pytest.mark.parametrize("n", [1, 7, 10, 23, 40, 120])
def test_catalogue_size_spreads_products_over_the_categories(n):
    products = catalogue.make_catalogue(random.Random(5), n)
    assert len(products) == n and len({p.name for p in products}) == n
    per_category = [sum(p.category_en == c[0] for p in products) for c in catalogue.CATEGORIES]
    assert max(per_category) - min(per_category) <= 1  # in turn over the categories


def test_fewer_products_state_each_fact_in_more_rows(tmp_path):
    counts = {}
    for n in (10, 40):
        generate_dataset(str(tmp_path / f"{n}.jsonl"), n_rows=500, seed=1, n_products=n)
        rows = [json.loads(line) for line in (tmp_path / f"{n}.jsonl").read_text(encoding="utf-8").splitlines()]
        answers = [r["answer"] for r in rows if r.get("facts")]
        counts[n] = len(answers) / len(set(answers))  # rows per distinct answer (one answer per fact and language)
    assert counts[10] > 2 * counts[40]
    with pytest.raises(ValueError, match="n_products"):
        catalogue.make_catalogue(random.Random(0), 0)
