"""The always-on fixers on legitimate text (property tests) and on the text they exist for."""

import unicodedata

import ftfy  # noqa: F401  (registers the sloppy-windows-1252 codec that real mojibake comes from)
import pytest
from ftfy.badness import is_bad
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from loraflow.data.clean import has_content
from loraflow.data.fixers import remove_controls
from loraflow.data.textfix import FixOptions, TextProblem, fix_text

PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])

# Legitimate text: every script, emoji sequences, code and operators, tabs and newlines; no control
# characters, surrogates or unassigned code points, already in NFC (the fixers' always-on part).
CHARS = st.characters(blacklist_categories=("Cc", "Cs", "Co", "Cn"))
PIECES = st.sampled_from(
    [
        "&&",
        "::",
        "<>",
        "...",
        "->",
        "!=",
        "`x`",
        "\t",
        "\n",
        " ",
        "«",
        "»",
        "’",
        "“",
        "”",
        "é",
        "Â",
        "Ã",
        "👩‍👩‍👧",
        "🇯🇵",
        "ใกล้",
        "काम",
        "بِسْمِ",
        "洛摩",
        "Ærø",
        "½",
        "²",
        "，",
    ]
)
LEGIT = st.lists(st.one_of(CHARS, PIECES), max_size=40).map(lambda parts: unicodedata.normalize("NFC", "".join(parts)))


@PROPERTY
@given(LEGIT)
@example("The letters Â and Ã are used in Portuguese: Ã is a nasal A.")
@example("« Café », l’été — naïve “quotes”")
def test_lossless_defaults_keep_legitimate_text(text):
    if is_bad(text):  # ftfy's own measure of mojibake markers: such text is the mojibake tests' business
        return
    assert fix_text(text, FixOptions()) == (text, [])


# Text that discusses the letters Â and Ã (and their neighbours in the mojibake alphabet).
LETTER_TALK = st.lists(
    st.sampled_from(["Â", "Ã", "Ê", "Å", "a", "nasal", "the letter", " ", " ", ", ", ".", ":", "(", ")", "'"]),
    max_size=30,
).map("".join)


@PROPERTY
@given(LETTER_TALK)
@example("Ã and Â")
@example("the Ã key")
@example("Â Ã")
def test_text_about_the_letters_a_circumflex_and_a_tilde_is_kept(text):
    assert fix_text(text, FixOptions()) == (text, [])


# Legitimate text with at least one character outside ASCII, and the mojibake made of it.
NON_ASCII = st.sampled_from(
    [
        "é",
        "ü",
        "ß",
        "ñ",
        "ç",
        "à",
        "ø",
        "Ł",
        "洛",
        "摩",
        "家",
        "居",
        "п",
        "р",
        "и",
        "😀",
        "👍",
        "“",
        "”",
        "’",
        "—",
        "«",
        "»",
        "€",
        "™",
    ]
)
ASCII_WORDS = st.sampled_from(["the", " ", "kettle", "2 years", ".", ",", "x", "Lumora", "’s", " "])
MOJIBAKE_SOURCE = st.tuples(NON_ASCII, st.lists(st.one_of(NON_ASCII, ASCII_WORDS), max_size=20)).map(
    lambda t: t[0] + "".join(t[1])
)


@PROPERTY
@given(MOJIBAKE_SOURCE, st.sampled_from(["latin-1", "sloppy-windows-1252"]))
@example("café’s «très» chic", "sloppy-windows-1252")
@example("l’été à Noël", "latin-1")
def test_mojibake_is_repaired_back_exactly(text, codec):
    # Legitimate text that ftfy itself calls bad ('»é' reads as MacRoman mojibake of 'Ȏ') cannot be told
    # from mojibake, and mojibake too short for ftfy to see ('æ´›' for one '洛') is kept as it is.
    broken = text.encode("utf-8").decode(codec)
    assume(not is_bad(text) and is_bad(broken))
    fixed, changes = fix_text(broken, FixOptions())
    assert fixed == text
    assert changes[0].fixer == "mojibake" and "decode utf-8" in changes[0].detail


def test_a_repair_next_to_a_curly_quote_or_guillemet_is_not_partial():
    for legit in ("café’s menu", "«été»", "l’été à Noël", "naïve “quote”"):
        broken = legit.encode("utf-8").decode("sloppy-windows-1252")
        assert fix_text(broken, FixOptions())[0] == legit


def test_partial_or_lossy_mojibake_is_still_rejected():
    with pytest.raises(TextProblem, match="only partly"):  # the last character's bytes are cut off
        fix_text("洛摩家居".encode("utf-8")[:-1].decode("latin-1"), FixOptions())
    with pytest.raises(TextProblem, match="only partly"):  # one piece repaired, 'Ã©' left
        fix_text("Ã©tÃ© 洛摩 «Ã©»", FixOptions())


# --------------------------------------------------------------------------------------------------
# Control characters
# --------------------------------------------------------------------------------------------------

WORDS = st.lists(st.text(alphabet="abcxyz", min_size=1, max_size=5), min_size=2, max_size=6)
SGR = st.lists(st.integers(0, 107), max_size=3).map(lambda ps: "\x1b[" + ";".join(map(str, ps)) + "m")


@PROPERTY
@given(WORDS, st.sampled_from(["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85"]))
def test_line_break_controls_keep_words_apart(words, control):
    fixed, _ = fix_text(control.join(words), FixOptions())
    assert fixed == "\n".join(words)


@PROPERTY
@given(WORDS, st.lists(SGR, min_size=1, max_size=4))
def test_terminal_colour_codes_are_removed_whole(words, codes):
    text = "".join(code + word + " " for code, word in zip(codes * len(words), words))
    fixed, changes = fix_text(text, FixOptions())
    assert fixed == "".join(word + " " for word in words)
    assert "[" not in fixed and [c.fixer for c in changes] == ["control_chars"]


def test_nel_among_cp1252_quotes_is_the_cp1252_ellipsis():
    # C1 quotes show the text is cp1252 read as Latin-1: there U+0085 is the ellipsis cp1252 puts at 0x85
    assert fix_text("C1 quotes \x93like this\x94 and\x85", FixOptions())[0] == "C1 quotes “like this” and…"
    assert remove_controls("a\x00b\x1bc\x85d\x7fe") == "abc\nde"


# --------------------------------------------------------------------------------------------------
# Symbol-only turns
# --------------------------------------------------------------------------------------------------

OPERATOR_CHARS = "&:<>.|=!-+*/%^~?#@$\\;,"


@PROPERTY
@given(st.text(alphabet=OPERATOR_CHARS + " ", min_size=1, max_size=8))
@example("&&")
@example("::")
@example("<>")
@example("...")
@example("~~~~")
def test_operator_answers_are_content_unless_one_repeated_symbol(text):
    marks = text.replace(" ", "")
    one_run = len(set(marks)) == 1 and len(marks) >= 4
    assert has_content(text) == (bool(marks) and not one_run)
    assert not has_content(text, "any")


def test_letters_digits_emoji_and_maths_symbols_are_always_content():
    for text in ("C", "是", "5", "😌", "∞", "x²"):
        assert has_content(text) and has_content(text, "any")
