"""Per-row correctness checks for short answers: does the answer state the right value or entity?

BLEU and ROUGE reward the shape of an answer; a fluent answer with the wrong price scores well. These
checks score one row 0 or 100 (percent, like the other metrics):

- `states_facts(answer, facts)`: every fact is stated. A fact that reads as a number ("129", "3.5")
  must be one of the numbers in the answer (compared as numbers, full-width digits and thousands
  separators allowed; digits glued to letters, as in a model code "X2", are not numbers); any other
  fact ("Midnight Black", "卡德港", "400-123-4567") must occur in the answer after NFKC and casefold.
  A degenerate answer states nothing: `is_loop` (a stretch of three or more characters, not all the
  same, said three or more times back to back, as in "年 2018 年 12 年 2018 年 12 年 2018 年 12 ")
  scores 0 whatever numbers and names the loop happens to contain. So does an answer that lists more
  distinct numbers than twice its row's numeric facts plus one ("5 升, 4 升, 3 升, 2 升, 1 升" for a
  fact of 3): one of several guesses is no stated fact. Every built-in reference passes both rules.
- `check_answer(mode, answer, reference, pattern)`: `evaluate.answer_check` for users' data with short
  references: `exact` (equal after normalisation), `contains` (the reference occurs in the answer),
  `numeric` (every number of the reference is stated in the answer), `regex` (the first match of
  `pattern` in the answer, its first group if it has one, equals the reference after normalisation).

An LLM judge would plug in at the same place (one score per row, written to scores.jsonl by the
evaluate stage), so the table stage bootstraps it like any other per-row metric; none ships here
because it needs a judge model or an API.
"""

from __future__ import annotations

import re
import unicodedata

from loraflow.evaluate.metrics import normalize_answer

ANSWER_CHECKS = ("none", "exact", "contains", "numeric", "regex")
# A number not glued to a letter or digit: 129, 3.5, 1,299, -4 (a model code such as X2 or S7 is not a number).
_NUMBER = re.compile(r"(?<![^\W\d_])(?<![\d.])-?\d+(?:,\d{3})*(?:\.\d+)?(?![^\W\d_])")
# A unit of 3+ characters (not starting or ending in a space) said 3+ times in a row, spaces between
# allowed; the shortest such unit at each position.
_REPEATED = re.compile(r"(\S.+?\S)(?:\s*\1){2,}", re.S)


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def numbers_in(text: str) -> list[float]:
    """The numbers a text states, in order ("$1,299 and 3.5 L" -> [1299.0, 3.5])."""
    return [float(m.group().replace(",", "")) for m in _NUMBER.finditer(unicodedata.normalize("NFKC", text))]


def as_number(fact: str) -> float | None:
    """The value of a fact that is a bare number, else None."""
    text = unicodedata.normalize("NFKC", str(fact)).strip()
    m = _NUMBER.fullmatch(text)
    return float(m.group().replace(",", "")) if m else None


def states_number(answer: str, value: float) -> bool:
    return any(abs(x - value) <= 1e-9 * max(1.0, abs(value)) for x in numbers_in(answer))


def states_text(answer: str, text: str) -> bool:
    """`text` occurs in `answer` (NFKC, casefold, whitespace collapsed); Latin words match whole words."""
    needle, hay = _norm(text), _norm(answer)
    if not needle:
        return False
    if needle[0].isascii() and needle[0].isalnum() and needle[-1].isascii() and needle[-1].isalnum():
        return re.search(rf"(?<![^\W_]){re.escape(needle)}(?![^\W_])", hay) is not None
    return needle in hay


def states_fact(answer: str, fact) -> bool:
    value = as_number(str(fact))
    return states_number(answer, value) if value is not None else states_text(answer, str(fact))


def is_loop(answer: str) -> bool:
    """Whether the answer repeats itself: a unit of three or more characters, holding a letter or
    digit and not one character over and over ("!!!", "———" and "哈哈哈" are emphasis, not a loop),
    said three or more times back to back."""
    return any(
        len(set(m.group(1))) > 1 and any(c.isalnum() for c in m.group(1)) for m in _REPEATED.finditer(_norm(answer))
    )


def is_guess_list(answer: str, facts: list) -> bool:
    """Whether the answer offers more numbers than its numeric facts can explain (2 per fact, plus 1)."""
    numeric = sum(as_number(str(f)) is not None for f in facts)
    return numeric > 0 and len(set(numbers_in(answer))) > 2 * numeric + 1


def states_facts(answer: str, facts: list) -> float:
    """100.0 when the answer states every fact, neither looping nor listing guesses, else 0.0."""
    if not facts or is_loop(answer) or is_guess_list(answer, facts):
        return 0.0
    return 100.0 if all(states_fact(answer, f) for f in facts) else 0.0


def check_answer(mode: str, answer: str, reference: str, pattern: str | None = None) -> float:
    """100.0 if `answer` is correct for the short `reference` under `mode`, else 0.0."""
    if mode == "exact":
        ok = normalize_answer(answer) == normalize_answer(reference)
    elif mode == "contains":
        ok = states_text(answer, reference)
    elif mode == "numeric":
        values = numbers_in(reference)
        ok = bool(values) and all(states_number(answer, v) for v in values)
    elif mode == "regex":
        if not pattern:
            raise ValueError("evaluate.answer_check regex needs evaluate.answer_pattern")
        m = re.search(pattern, answer)
        found = (m.group(1) if m and m.groups() else m.group(0)) if m else None
        ok = found is not None and normalize_answer(found) == normalize_answer(reference)
    else:
        raise ValueError(f"unknown evaluate.answer_check {mode!r} (use one of {', '.join(ANSWER_CHECKS)})")
    return 100.0 if ok else 0.0


def row_facts(row: dict) -> list | None:
    """The facts a split row carries (`facts`, or `meta.facts` once the data stages keep extra fields
    as metadata); None when it has none."""
    facts = row.get("facts")
    if facts is None and isinstance(row.get("meta"), dict):
        facts = row["meta"].get("facts")
    if isinstance(facts, str):
        facts = [facts]
    return list(facts) if facts else None
