"""Fact checks, answer checks and the retention set; the evaluate stage runs them on the tiny model."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loraflow.evaluate.answer_check import as_number, check_answer, is_loop, numbers_in, row_facts, states_facts
from loraflow.evaluate.retention import build_items, is_correct, load_items
from loraflow.io import read_json, read_jsonl, write_jsonl


def test_numbers_and_facts():
    assert numbers_in("The AeroBlend X2 costs $1,299 and holds 3.5 L; ３ years") == [1299.0, 3.5, 3.0]
    assert as_number("129") == 129.0 and as_number("Midnight Black") is None and as_number("400-123-4567") is None
    right = "The Lumora HaloPure X2 costs $279 and comes with a 3-year warranty."
    assert states_facts(right, ["279", "3"]) == 100.0
    assert states_facts("The Lumora HaloPure X2 costs $299 and comes with a 3-year warranty.", ["279", "3"]) == 0.0
    assert states_facts("It has a capacity of 10 litres.", ["3.5"]) == 0.0  # fluent but wrong: the example
    assert states_facts("洛摩 NovaPure S5 有珍珠白和天空蓝两种颜色可选。", ["珍珠白", "天空蓝"]) == 100.0
    assert states_facts("Call 400-123-4567.", ["400-123-4567"]) == 100.0
    assert states_facts("It comes in Sage Greenish.", ["Sage Green"]) == 0.0  # whole words
    assert (
        row_facts({"facts": ["1"]}) == ["1"]
        and row_facts({"meta": {"facts": ["2"]}}) == ["2"]
        and row_facts({}) is None
    )


# Units of a loop: 3+ characters, a letter or digit among them, not one character over and over.
_UNITS = st.text(st.sampled_from("ab年份2018 ,。x"), min_size=3, max_size=12).filter(
    lambda u: len(set(u)) > 1 and any(c.isalnum() for c in u) and u.strip() == u
)


@settings(max_examples=80, deadline=None)
@given(unit=_UNITS, times=st.integers(3, 6), head=st.text(max_size=20), tail=st.text(max_size=20))
def test_a_loop_states_no_fact_whatever_it_holds(unit, times, head, tail):
    answer = head + " " + " ".join([unit] * times) + " " + tail
    assert is_loop(answer)
    facts = [n for n in ("2018", "12") if n in unit] or [unit.split()[0]]
    assert states_facts(answer, facts) == 0.0


@settings(max_examples=80, deadline=None)
@given(words=st.lists(st.text(st.sampled_from("abcdefg年月日份"), min_size=1, max_size=6), unique=True, max_size=12))
def test_an_answer_of_distinct_words_is_no_loop(words):
    # No three-character stretch is said three times running in a sentence of distinct words
    # joined by distinct numbers.
    answer = " ".join(f"{w} {i}" for i, w in enumerate(words))
    assert not is_loop(answer)


@settings(max_examples=80, deadline=None)
@given(fact=st.integers(1, 9999), others=st.lists(st.integers(1, 9999), max_size=6, unique=True))
def test_a_list_of_guesses_states_no_number(fact, others):
    # One numeric fact allows up to three distinct numbers in the answer; more are a list of guesses.
    guesses = [fact] + [n for n in others if n != fact]
    answer = "It could be " + ", ".join(map(str, guesses)) + "."
    assert states_facts(answer, [str(fact)]) == (100.0 if len(guesses) <= 3 else 0.0)


def test_the_loop_the_check_used_to_accept():
    # A real answer to a launch-year question (fact 2018) that only loops.
    loop = "洛摩 LumiSweep S5 年 2018 年 12 年 2018 年 12 年 2018 年 12 年 2018 年 12"
    assert is_loop(loop) and states_facts(loop, ["2018"]) == 0.0
    guesses = "洛摩会员费用可以选拇路 5 升，可选 4 升，可选 3 升，可选 2 升，可选 1 升。"  # a real answer, fact 3
    assert states_facts(guesses, ["3"]) == 0.0
    assert states_facts("洛摩 LumiSweep S5 于 2018 年上市。", ["2018"]) == 100.0
    for emphasis in ("Great!!! Thanks!!!!!!", "好的～～～～～～", "哈哈哈哈哈哈哈哈哈 2018", "1, 2, 3, 4, 5, 6, 7"):
        assert not is_loop(emphasis)
    item = {"check": "sequence", "answers": [1, 2, 3]}
    assert is_correct(item, "1, 2, 3") and not is_correct(item, "1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2, 3")
    assert is_correct({"check": "contains", "answers": ["lamp"]}, "lamp lamp lamp")  # "repeat the word"


def test_answer_check_modes():
    assert check_answer("exact", "Positive.", "positive") == 100.0
    assert check_answer("exact", "It is positive", "positive") == 0.0
    assert check_answer("contains", "I think it is Paris, France", "paris") == 100.0
    assert check_answer("numeric", "The total is 1,250 dollars.", "1250") == 100.0
    assert check_answer("numeric", "The total is 1,205 dollars.", "1250") == 0.0
    assert check_answer("regex", "Reasoning... the answer is B.", "b", r"answer is (\w)") == 100.0
    assert check_answer("regex", "no verdict", "b", r"answer is (\w)") == 0.0
    with pytest.raises(ValueError, match="answer_pattern"):
        check_answer("regex", "x", "y")


def test_builtin_rows_state_their_facts(tmp_path):
    from loraflow.data.builtin.support_qa import generate_dataset

    summary = generate_dataset(str(tmp_path / "raw.jsonl"), n_rows=400, seed=3)
    rows = read_jsonl(tmp_path / "raw.jsonl")
    dirty = {i for ids in summary["dirty"].values() for i in ids}
    clean = [r for r in rows if r["id"] not in dirty]
    assert all(r["facts"] for r in rows)
    assert all(states_facts(r["answer"], r["facts"]) == 100.0 for r in clean)  # the reference states every fact
    # a wrong number is caught: change one fact's digits in the answer
    r = next(r for r in clean if r["facts"][0].isdigit() and len(r["facts"][0]) >= 2)
    wrong = r["answer"].replace(r["facts"][0], str(int(r["facts"][0]) + 1))
    assert states_facts(wrong, r["facts"]) == 0.0


def test_retention_set_is_bilingual_balanced_and_checkable():
    items = build_items()
    assert len(items) >= 300 and len({i["id"] for i in items}) == len(items)
    kinds = Counter((i["lang"], i["kind"]) for i in items)
    assert set(kinds) == {(lang, k) for lang in ("en", "zh") for k in ("arithmetic", "units", "facts", "instructions")}
    assert build_items() == items  # generated, seeded: the same set every time
    assert Counter(i["kind"] for i in load_items(40)).most_common()[-1][1] >= 8  # the first N stay mixed
    for it in items:  # the expected number never appears in the question, so echoing it is not a right answer
        if it["check"] == "numeric":
            assert not any(float(a) in numbers_in(it["prompt"]) for a in it["answers"]), it
    by_id = {i["id"]: i for i in items}
    assert is_correct(by_id["ret-en-arithmetic-000"], "69 plus 38 is 107.")
    assert not is_correct(by_id["ret-en-arithmetic-000"], "69 plus 38 is 106.")
    assert is_correct(by_id["ret-zh-facts-000"], "巴黎") and is_correct(by_id["ret-zh-facts-000"], "It is Paris.")
    count = next(i for i in items if i["check"] == "sequence" and "Count" in i["prompt"])
    assert is_correct(count, "Sure: " + ", ".join(count["answers"])) and not is_correct(count, "1, 3, 2")
    larger = next(i for i in items if i["check"] == "first_number")
    assert is_correct(larger, f"{larger['answers'][0]} is larger.")


@pytest.fixture(scope="module")
def fact_split(tiny_data, tmp_path_factory):
    """The tiny test split with facts on its rows (as the data stages carry them) and a meta-dict row."""
    paths, npz = tiny_data
    d = tmp_path_factory.mktemp("facts")
    rows = read_jsonl(paths["dir"] / "test.jsonl")
    facts = {"0": ["129"], "1": ["Two"], "3": ["2021"], "5": ["30"], "6": ["50"]}
    for r in rows:
        if r["id"] in facts:
            r["facts"] = facts[r["id"]]
    rows[4]["meta"] = {"facts": ["洛摩"]}
    write_jsonl(d / "test.jsonl", rows)
    return d, paths, npz


def test_evaluate_writes_val_test_facts_and_retention_on_the_tiny_model(fact_split, tiny_model):
    from loraflow.evaluate.run import evaluate_model
    from loraflow.evaluate.settings import EvalPaths, EvalSettings

    d, paths, npz = fact_split
    common = EvalSettings(
        max_new_tokens=6,
        batch_size=8,
        consistency_questions=0,
        retention_items=24,
        retention_max_new_tokens=4,
        answer_check="contains",
        val_samples=3,
    )
    val = dict(val_path=str(d / "test.jsonl"), val_tokens=npz[1])
    base = evaluate_model(
        EvalPaths(
            str(tiny_model),
            str(d / "test.jsonl"),
            npz[2],
            str(paths["meta"]),
            str(d / "base.json"),
            str(d / "base_gen.jsonl"),
            out_scores=str(d / "base_scores.jsonl"),
            **val,
        ),
        common,
        threads=1,
    )
    assert base["fact_rows"] == 6 and 0 <= base["fact_acc"] <= 100 and "answer_ok" in base
    assert base["val"]["generated_examples"] == 3 and base["val"]["examples"] == 8 and "rougeL" in base["val"]
    assert base["retention"]["items"] == 24 and base["retention"]["measured_on"] == "all items"
    from loraflow.evaluate.retention import retention_part

    # every scored item says which part it is in (val may choose a run, test is reported)
    ret_lines = [r for r in read_jsonl(d / "base_scores.jsonl") if r["split"] == "retention"]
    assert all(r["part"] == retention_part(r["id"]) for r in ret_lines)
    assert base["retention"]["items_val"] + base["retention"]["items_test"] == 24
    assert base["retention"]["items_val"] == sum(r["part"] == "val" for r in ret_lines)
    lines = read_jsonl(d / "base_scores.jsonl")
    assert Counter(r["split"] for r in lines) == {"test": 8, "val": 8, "retention": 24}
    test_lines = [r for r in lines if r["split"] == "test"]
    assert [r["id"] for r in test_lines] == [str(i) for i in range(8)]
    assert sum(r["loss_sum"] for r in test_lines) / sum(r["tokens"] for r in test_lines) == pytest.approx(
        base["eval_loss"]
    )
    assert sum("fact_acc" in r for r in test_lines) == 6 and all("bleu_stats" in r for r in test_lines)

    # a run is asked only the retention items the base answered correctly (here: as if it got three right)
    marked = [
        dict(r, correct=100.0 if r["id"] in ("ret-en-arithmetic-000", "ret-en-units-000", "ret-zh-facts-000") else 0.0)
        for r in lines
    ]
    write_jsonl(d / "base_scores_marked.jsonl", marked)
    run = evaluate_model(
        EvalPaths(
            str(tiny_model),
            str(d / "test.jsonl"),
            npz[2],
            str(paths["meta"]),
            str(d / "run.json"),
            str(d / "run_gen.jsonl"),
            out_scores=str(d / "run_scores.jsonl"),
            base_scores=str(d / "base_scores_marked.jsonl"),
            **val,
        ),
        common,
        threads=1,
    )
    assert (
        run["retention"]["items"] == 3 and run["retention"]["measured_on"] == "items the base model answers correctly"
    )
    assert {r["id"] for r in read_jsonl(d / "run_scores.jsonl") if r["split"] == "retention"} == {
        "ret-en-arithmetic-000",
        "ret-en-units-000",
        "ret-zh-facts-000",
    }
    assert json.loads((d / "run.json").read_text())["val"]["eval_loss"] == pytest.approx(
        read_json(d / "base.json")["val"]["eval_loss"]
    )


def test_retention_parts_are_disjoint_deterministic_and_about_half():
    from hypothesis import given, settings
    from hypothesis import strategies as hs

    from loraflow.evaluate.retention import PARTS, retention_part

    items = build_items()
    parts = {i["id"]: retention_part(i["id"]) for i in items}
    val = {i for i, p in parts.items() if p == "val"}
    test = {i for i, p in parts.items() if p == "test"}
    assert val.isdisjoint(test) and val | test == set(parts) and set(parts.values()) == set(PARTS)
    assert 0.4 < len(val) / len(items) < 0.6
    for n in (24, 64, 200):  # the first N items asked stay split about half and half
        assert 0.3 < sum(parts[i["id"]] == "val" for i in load_items(n)) / n < 0.7
    # by id alone: the same in any order, for any number of items asked, in every process
    assert {i["id"]: retention_part(i["id"]) for i in reversed(load_items(100))} == {
        i["id"]: parts[i["id"]] for i in load_items(100)
    }
    assert retention_part("ret-en-arithmetic-000") == retention_part("ret-en-arithmetic-000")

    @settings(max_examples=200, deadline=None)
    @given(hs.text(min_size=1, max_size=40))
    def any_id_has_one_part(item_id):
        assert retention_part(item_id) in PARTS and retention_part(item_id) == retention_part(str(item_id))

    any_id_has_one_part()
