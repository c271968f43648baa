"""Dirty rows for the built-in data set: each maker turns a clean row into one the clean stage must fix or reject."""

from __future__ import annotations

import random

from loraflow.data.builtin.catalogue import BRAND_EN, BRAND_ZH

#: Dirty kinds in the order the dirty budget is handed out.
DIRTY_KINDS = (
    "mojibake",
    "html",
    "control",
    "symbol_run",
    "symbol_only",
    "empty",
    "exact_dup",
    "near_dup",
    "overlong",
    "too_short",
)
#: Kinds that copy an existing clean row instead of a fresh question.
DUP_KINDS = ("exact_dup", "near_dup")
_MIN_ROWS_FOR_ALL_KINDS = 200


# ---------------------------------------------------------------------------
# Dirty-row vocabulary
# ---------------------------------------------------------------------------

# Controls that mean nothing inside a word (no line-break controls such as VT/FF, which the clean stage
# turns into line breaks): the clean stage removes them, so each dirty row cleans back to its original.
_CONTROL_CHARS = (
    "\x00",
    "\x01",
    "\x02",
    "\x03",
    "\x04",
    "\x05",
    "\x06",
    "\x07",
    "\x08",
    "\x0e",
    "\x1b",
    "\u200b",
    "\ufeff",
)
_SYMBOL_RUNS = ("!!!!!!!!!!", "~~~~~~~~", "？？？？？？", "########", "！！！！！！！", "........", "~~~~~~~~~~~~")
_SYMBOL_ONLY = ("??????", "……", "----", "!!!!", "。。。。", "***", "？？？", "~~~~~", "——", "#####", "?!?!", "......")
_EMPTY = ("", "   ", "\n\t", " \n ")
_TOO_SHORT = {"en": ("a", "Y", "k", "x"), "zh": ("是", "好", "嗯", "对")}
_OVERLONG_CHARS = 6000


# ---------------------------------------------------------------------------
# Dirty-row makers: maker(clean row, rng, i) -> new dirty row; i is a running
# index that cycles the maker through its variants.
# ---------------------------------------------------------------------------


def make_row(lang: str, question: str, answer: str) -> dict:
    return {"lang": lang, "question": question, "answer": answer}


def _sloppy_cp1252(data: bytes) -> str:
    """Decode bytes as Windows-1252, falling back to Latin-1 for its 5 undefined bytes."""
    out = []
    for b in data:
        try:
            out.append(bytes([b]).decode("cp1252"))
        except UnicodeDecodeError:
            out.append(chr(b))
    return "".join(out)


def _typographic_en(text: str) -> str:
    """Give an ASCII English answer some non-ASCII: curly quotes and a ™ sign."""
    return "“" + text[:-1].replace(BRAND_EN, BRAND_EN + "™", 1) + "”" + text[-1:]


def _latin1_mojibake(text: str) -> str:
    """UTF-8 bytes read back as Latin-1 ('洛' -> 'æ´\x9b')."""
    return text.encode("utf-8").decode("latin-1")


def make_mojibake(row: dict, rng: random.Random, i: int) -> dict:
    """UTF-8 text wrongly decoded: Latin-1 for Chinese (every other row: question too), cp1252 for English."""
    if row["lang"] == "zh":
        question = _latin1_mojibake(row["question"]) if i % 2 else row["question"]
        return make_row("zh", question, _latin1_mojibake(row["answer"]))
    answer = _sloppy_cp1252(_typographic_en(row["answer"]).encode("utf-8"))
    return make_row("en", row["question"], answer)


def _html_variants(answer: str, lang: str) -> list[str]:
    """Several HTML-polluted versions of an answer."""
    brand = BRAND_ZH if lang == "zh" else BRAND_EN
    comma = "，" if lang == "zh" else ", "
    head, sep, tail = answer.partition(comma)
    return [
        f"<p>{answer}</p>",
        f"<p>{head}{sep}<br/>{tail}</p>" if sep else f"<p>{answer}<br/></p>",
        answer.replace(brand, f"<b>{brand}</b>", 1),
        "<p>" + answer.replace(" ", "&nbsp;", 2) + "</p>",
        f"<b>{answer}</b>&nbsp;",
    ]


def make_html(row: dict, rng: random.Random, i: int) -> dict:
    """Answer wrapped in or sprinkled with tags and entities; 'and'/'和' becomes '&amp;'."""
    variants = _html_variants(row["answer"], row["lang"])
    answer = variants[i % len(variants)]
    joiner = "和" if row["lang"] == "zh" else " and "
    return make_row(row["lang"], row["question"], answer.replace(joiner, " &amp; ", 1))


def _sprinkle(text: str, rng: random.Random, chars: tuple[str, ...], k: int) -> str:
    """Insert `k` characters drawn from `chars` at random positions."""
    for _ in range(k):
        pos = rng.randint(0, len(text))
        text = text[:pos] + rng.choice(chars) + text[pos:]
    return text


def make_control(row: dict, rng: random.Random, i: int) -> dict:
    """Control and zero-width characters inside the text (every third row: question too)."""
    answer = _sprinkle(row["answer"], rng, _CONTROL_CHARS, rng.randint(1, 3))
    question = _sprinkle(row["question"], rng, _CONTROL_CHARS, 1) if i % 3 == 2 else row["question"]
    return make_row(row["lang"], question, answer)


def make_symbol_run(row: dict, rng: random.Random, i: int) -> dict:
    """A run of one repeated symbol: in place of the final mark, or before a middle space."""
    answer, run = row["answer"], _SYMBOL_RUNS[i % len(_SYMBOL_RUNS)]
    spaces = [k for k, c in enumerate(answer) if c == " "]
    if i % 2 or not spaces:
        return make_row(row["lang"], row["question"], answer[:-1] + run)
    mid = spaces[len(spaces) // 2]
    return make_row(row["lang"], row["question"], answer[:mid] + run + answer[mid:])


def make_symbol_only(row: dict, rng: random.Random, i: int) -> dict:
    """Answer made only of punctuation."""
    return make_row(row["lang"], row["question"], _SYMBOL_ONLY[i % len(_SYMBOL_ONLY)])


def make_empty(row: dict, rng: random.Random, i: int) -> dict:
    """Empty or whitespace-only answer."""
    return make_row(row["lang"], row["question"], _EMPTY[i % len(_EMPTY)])


def make_overlong(row: dict, rng: random.Random, i: int) -> dict:
    """Answer repeated until it is longer than 6000 characters."""
    sep = "" if row["lang"] == "zh" else " "
    reps = _OVERLONG_CHARS // (len(row["answer"]) + len(sep)) + 2
    return make_row(row["lang"], row["question"], sep.join([row["answer"]] * reps))


def make_too_short(row: dict, rng: random.Random, i: int) -> dict:
    """A one-character answer."""
    choices = _TOO_SHORT[row["lang"]]
    return make_row(row["lang"], row["question"], choices[i % len(choices)])


def make_exact_dup(row: dict, rng: random.Random, i: int) -> dict:
    """An exact copy of a clean row."""
    return make_row(row["lang"], row["question"], row["answer"])


def _fullwidth(text: str) -> str:
    """ASCII -> full-width forms (NFKC maps them back)."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in text)


def _fullwidth_digits(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if c.isdigit() else c for c in text)


def _loose_spaces(text: str) -> str:
    return "  " + text.replace(" ", "   ") + " \t"


_NEAR_DUP_TWEAKS = (str.upper, _fullwidth, _fullwidth_digits, _loose_spaces)


def _extra_trailing_punct(text: str, rng: random.Random) -> str:
    """Swap the final punctuation mark for a different (or repeated) one."""
    endings = ("。。", "！", "。 ", "…") if text.endswith("。") else ("...", "!", ". ", ".!")
    return text[:-1] + rng.choice(endings)


def make_near_dup(row: dict, rng: random.Random, i: int) -> dict:
    """A copy equal to the source only after NFKC, casefold, whitespace and trailing-punctuation normalisation."""
    tweak = _NEAR_DUP_TWEAKS[i % len(_NEAR_DUP_TWEAKS)]
    answer = tweak(_extra_trailing_punct(row["answer"], rng))
    return make_row(row["lang"], tweak(row["question"]), answer)


MAKERS = {
    "mojibake": make_mojibake,
    "html": make_html,
    "control": make_control,
    "symbol_run": make_symbol_run,
    "symbol_only": make_symbol_only,
    "empty": make_empty,
    "exact_dup": make_exact_dup,
    "near_dup": make_near_dup,
    "overlong": make_overlong,
    "too_short": make_too_short,
}


# ---------------------------------------------------------------------------
# Assembly and writing
# ---------------------------------------------------------------------------


def dirty_counts(n_rows: int, dirty_fraction: float) -> dict[str, int]:
    """How many rows of each dirty kind; every kind at least once from 200 rows on."""
    n_dirty = int(n_rows * dirty_fraction + 0.5)
    if dirty_fraction > 0 and n_rows >= _MIN_ROWS_FOR_ALL_KINDS:
        n_dirty = max(n_dirty, len(DIRTY_KINDS))
    n_dirty = min(n_dirty, n_rows // 2)
    base, extra = divmod(n_dirty, len(DIRTY_KINDS))
    return {kind: base + (1 if k < extra else 0) for k, kind in enumerate(DIRTY_KINDS)}
