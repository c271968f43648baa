"""The mojibake fixer (clean.mojibake): UTF-8 that was decoded as Latin-1/cp1252, repaired with ftfy
only where ftfy's own badness measure shows the text was broken."""

from __future__ import annotations

import re

from loraflow.data.fixers import remove_controls


class Unrepairable(ValueError):
    pass


_FTFY_CONFIG = None
_A0_GUESS = None


def _ftfy_config():
    global _FTFY_CONFIG
    if _FTFY_CONFIG is None:
        from ftfy import TextFixerConfig

        # Only the encoding repair: no quote uncurling, width folding, HTML unescaping, ligature or
        # line-break changes (those would alter legitimate text).
        _FTFY_CONFIG = TextFixerConfig(
            unescape_html=False,
            remove_terminal_escapes=False,
            fix_encoding=True,
            restore_byte_a0=True,
            replace_lossy_sequences=True,
            decode_inconsistent_utf8=True,
            fix_c1_controls=False,
            fix_latin_ligatures=False,
            fix_character_width=False,
            uncurl_quotes=False,
            fix_line_breaks=False,
            fix_surrogates=False,
            remove_control_chars=False,
            normalization=None,
            explain=True,
        )
    return _FTFY_CONFIG


def _a0_guesses(text: str) -> str:
    """`text` without the spots where ftfy would guess a lost 0xA0 byte ('Ã ' read as 'à', 'Â ' as a
    no-break space): ftfy's own pattern (chardata.ALTERED_UTF8_RE), applied to the text's characters."""
    global _A0_GUESS
    if _A0_GUESS is None:
        from ftfy.chardata import ALTERED_UTF8_RE

        _A0_GUESS = re.compile(ALTERED_UTF8_RE.pattern.decode("latin-1"))
    return _A0_GUESS.sub("", text)


def repair_mojibake(text: str) -> tuple[str, str]:
    """(repaired text, ftfy's explanation) or (text, '') when there is nothing to repair.
    Raises Unrepairable when the text is mojibake that ftfy cannot repair without loss.

    Whether text is broken is ftfy's own badness measure (ftfy.badness.is_bad), before and after the
    repair (ftfy.fix_and_explain). Two readings of ftfy are not taken, because legitimate text looks
    exactly like them: a letter such as Â or Ã before a space (text about those letters; ftfy would
    read it as UTF-8 whose 0xA0 byte became a space), and a U+0085 that nothing else marks as cp1252
    (it is NEL, a line break; ftfy would read it as the cp1252 ellipsis)."""
    if text.isascii():
        return text, ""
    from ftfy import fix_and_explain
    from ftfy.badness import is_bad

    if not is_bad(text):  # ftfy's own first test: text without mojibake-like sequences is left alone
        return text, ""
    if not is_bad(_a0_guesses(text)):
        return text, ""
    fixed, plan = fix_and_explain(text, _ftfy_config())
    to_utf8 = any(step[0] == "apply" or (step[0] == "decode" and step[1].startswith("utf-8")) for step in plan or [])
    if not to_utf8 and {ch for ch in text if "\x80" <= ch <= "\x9f"} <= {"\x85"}:
        return text, ""  # a NEL that is no byte of a UTF-8 character and has no cp1252 neighbours
    if fixed != text and fixed.count("\ufffd") > text.count("\ufffd"):
        raise Unrepairable("ftfy could repair it only with loss (replacement characters)")
    # Stray C1 controls alone make ftfy call text bad; they are not mojibake (control_chars handles them).
    if is_bad(remove_controls(fixed)):
        if fixed == text:
            raise Unrepairable("looks like UTF-8 decoded as Latin-1/cp1252 and ftfy cannot repair it")
        raise Unrepairable(f"ftfy repaired it only partly ({fixed[:60]!r} still looks broken to ftfy)")
    if fixed == text:
        return text, ""
    cut = _cut_utf8_next_to_repair(text, fixed) if any(step[0] == "apply" for step in plan or []) else ""
    if cut:
        raise Unrepairable(f"ftfy repaired it only partly ({cut!r}, bytes of a cut UTF-8 character, is left)")
    return fixed, ", ".join(f"{step[0]} {step[1]}" for step in (plan or []))


def _cut_utf8_next_to_repair(text: str, fixed: str) -> str:
    """The kept characters right next to a piece ftfy repaired that are the bytes of a UTF-8 character
    cut short ('å±' after '洛摩家' whose last byte was lost), or ''. Only piecewise repairs
    (ftfy's decode_inconsistent_utf8) can leave such bytes behind; a whole-text repair cannot."""
    from difflib import SequenceMatcher

    ops = SequenceMatcher(None, text, fixed, autojunk=False).get_opcodes()
    for i, (tag, a0, a1, _, _) in enumerate(ops):
        if tag != "equal":
            continue
        kept = text[a0:a1]
        ends = []
        if i > 0:
            ends.append(_leading_non_ascii(kept))
        if i + 1 < len(ops):
            ends.append(_leading_non_ascii(kept[::-1])[::-1])
        for run in ends:
            raw = _single_bytes(run)
            if raw:
                try:
                    raw.decode("utf-8")
                except UnicodeDecodeError:
                    return run
    return ""


def _leading_non_ascii(text: str) -> str:
    end = 0
    while end < len(text) and not text[end].isascii():
        end += 1
    return text[:end]


def _single_bytes(text: str) -> bytes:
    """`text` as the Latin-1/cp1252 bytes it was decoded from, or b'' when it is not such text."""
    for codec in ("latin-1", "cp1252"):
        try:
            return text.encode(codec)
        except UnicodeEncodeError:
            pass
    return b""
