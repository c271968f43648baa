"""The clean stage's text fixers, one function each (the pipeline that runs them, loraflow.data.textfix,
says which are always on and which each clean.* option switches on). The HTML fixer is in
loraflow.data.markup, the mojibake repair in loraflow.data.mojibake.
"""

from __future__ import annotations

import re
import unicodedata

# --------------------------------------------------------------------------------------------------
# Code spans: never touched by the HTML, symbol-run and whitespace fixers
# --------------------------------------------------------------------------------------------------

_FENCE = re.compile(r"(?ms)^[ \t]{0,3}(`{3,}|~{3,})[^\n]*\n.*?(?:^[ \t]{0,3}\1[ \t]*$|\Z)")
_INLINE_CODE = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.S)


def segments(text: str, inline: bool = True) -> list[tuple[bool, str]]:
    """[(is_code, piece)] covering `text` in order: fenced code blocks and (if `inline`) `code spans`."""
    out: list[tuple[bool, str]] = []
    pos = 0
    for m in _FENCE.finditer(text):
        out += _inline_segments(text[pos : m.start()], inline)
        out.append((True, m.group(0)))
        pos = m.end()
    out += _inline_segments(text[pos:], inline)
    return [s for s in out if s[1]]


def _inline_segments(text: str, inline: bool) -> list[tuple[bool, str]]:
    if not inline:
        return [(False, text)]
    out, pos = [], 0
    for m in _INLINE_CODE.finditer(text):
        out += [(False, text[pos : m.start()]), (True, m.group(0))]
        pos = m.end()
    out.append((False, text[pos:]))
    return out


def outside_code(fn, text: str, inline: bool = True) -> str:
    return "".join(piece if code else fn(piece) for code, piece in segments(text, inline))


# --------------------------------------------------------------------------------------------------
# Default fixers
# --------------------------------------------------------------------------------------------------


def fix_line_endings(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # Unicode category Cc without tab (09) and newline (0a)
# The controls that end a line (str.splitlines' boundaries: VT, FF, FS, GS, RS, NEL): removing them
# would glue the words on either side together.
_LINE_BREAK_CONTROLS = re.compile("[\x0b\x0c\x1c-\x1e\x85]")
# A terminal escape sequence (ECMA-48 CSI: ESC [ parameters intermediates final), e.g. the colour code
# ESC[31m: removed whole, so no '[31m' is left behind. ftfy's own pattern knows only digits and ';'.
_CSI = re.compile("\x1b\\[[0-?]*[ -/]*[@-~]")


def remove_controls(text: str) -> str:
    """Terminal escape sequences removed whole; vertical tab, form feed, FS/GS/RS and NEL (U+0085)
    become a newline; every other C0 (U+0000-U+001F, U+007F) and C1 (U+0080-U+009F) control is
    removed, except tab and newline."""
    if "\x1b" in text:
        text = _CSI.sub("", text)
    return _CONTROLS.sub("", _LINE_BREAK_CONTROLS.sub("\n", text))


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def nfkc(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


# --------------------------------------------------------------------------------------------------
# Other optional fixers
# --------------------------------------------------------------------------------------------------

ZERO_WIDTH = {"\u200b", "\u2060", "\ufeff", "\u00ad", "\u180e"}
_SYMBOL_RUN = re.compile(r"([^\w\s])\1{3,}")
_SPACES = re.compile(r"[ \t\u3000]+")
_NEWLINES = re.compile(r"\n{3,}")


def remove_zero_width(text: str) -> str:
    return "".join(ch for ch in text if ch not in ZERO_WIDTH)


def collapse_symbol_runs(text: str) -> str:
    return outside_code(lambda s: _SYMBOL_RUN.sub(lambda m: "..." if m.group(1) == "." else m.group(1), s), text)


def collapse_whitespace(text: str) -> str:
    def piece(s: str) -> str:
        s = _SPACES.sub(" ", s)
        s = "\n".join(line.strip() for line in s.split("\n"))
        return _NEWLINES.sub("\n\n", s)

    return outside_code(piece, text, inline=False).strip()


def trim(text: str) -> str:
    return text.strip()
