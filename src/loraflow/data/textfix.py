"""Text fixers of the clean stage: each one changes text only where it can show the text was broken,
or where the user switched it on; every change is returned so that it can be recorded.

Always on (lossless for legitimate text):
  - mojibake       UTF-8 that was decoded as Latin-1/cp1252, repaired with ftfy (`clean.mojibake`)
  - line_endings   CRLF and lone CR -> LF
  - control_chars  terminal escape sequences removed whole, VT/FF/FS/GS/RS/NEL -> newline, other C0/C1
                   control characters removed (tab and newline kept)
  - nfc            Unicode NFC (canonical composition: the same characters, one encoding of them)

Off unless switched on (each destroys something; see docs/data.md):
  - html           clean.strip_html: known HTML tags removed, terminated entities decoded, only in
                   text a real parser finds markup in, never inside code spans or fenced code
  - nfkc           clean.nfkc: compatibility folding (full-width punctuation -> ASCII, ² -> 2, ﬁ -> fi)
  - zero_width     clean.remove_zero_width: U+200B, U+2060, U+FEFF, U+00AD, U+180E removed
                   (never ZWJ/ZWNJ, which emoji sequences and Persian/Indic scripts need)
  - symbol_run     clean.collapse_symbol_runs: 4+ repeats of one punctuation/symbol -> one ('...' for dots)
  - whitespace     clean.collapse_whitespace: runs of spaces/tabs -> one space, lines stripped,
                   3+ newlines -> 2 (fenced code kept)
  - trim           clean.trim: leading/trailing whitespace of each field removed

This module runs them in that order (fix_text); the fixers themselves are in loraflow.data.fixers,
loraflow.data.markup (html) and loraflow.data.mojibake.
"""

from __future__ import annotations

from dataclasses import dataclass

from loraflow.data.fixers import (
    collapse_symbol_runs,
    collapse_whitespace,
    fix_line_endings,
    nfc,
    nfkc,
    remove_controls,
    remove_zero_width,
    trim,
)
from loraflow.data.markup import strip_html
from loraflow.data.mojibake import Unrepairable, repair_mojibake

#: Fixer names in the order they run, with the clean.* option that switches each on (None: always on).
FIXERS = (
    ("mojibake", "mojibake"),
    ("line_endings", None),
    ("control_chars", None),
    ("html", "strip_html"),
    ("nfc", None),
    ("nfkc", "nfkc"),
    ("zero_width", "remove_zero_width"),
    ("symbol_run", "collapse_symbol_runs"),
    ("whitespace", "collapse_whitespace"),
    ("trim", "trim"),
)
_FUNCTIONS = {
    "line_endings": fix_line_endings,
    "control_chars": remove_controls,
    "html": strip_html,
    "nfc": nfc,
    "nfkc": nfkc,
    "zero_width": remove_zero_width,
    "symbol_run": collapse_symbol_runs,
    "whitespace": collapse_whitespace,
    "trim": trim,
}


@dataclass(frozen=True)
class FixOptions:
    mojibake: str = "repair"  # repair | reject | keep
    strip_html: bool = False
    nfkc: bool = False
    remove_zero_width: bool = False
    collapse_symbol_runs: bool = False
    collapse_whitespace: bool = False
    trim: bool = False
    symbol_only: str = "runs"  # runs | any: which turns of only punctuation/symbols are rejected (clean.has_content)

    def settings(self) -> dict:
        """Every option by its clean.* name, for the one-line log of the effective settings."""
        return dict(vars(self))

    def enabled(self) -> list[str]:
        out = []
        for name, option in FIXERS:
            if (
                option is None
                or (option == "mojibake" and self.mojibake == "repair")
                or (option != "mojibake" and getattr(self, option))
            ):
                out.append(name)
        return out


@dataclass
class Change:
    fixer: str
    before: str
    after: str
    detail: str = ""


class TextProblem(ValueError):
    """A field that cannot be used: `reason` is the rejection reason."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def has_lone_surrogate(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def fix_text(text: str, options: FixOptions) -> tuple[str, list[Change]]:
    """Run the enabled fixers in order; (fixed text, the change each fixer made)."""
    if has_lone_surrogate(text):
        raise TextProblem("bad_encoding", "holds a lone UTF-16 surrogate (a broken \\ud800-\\udfff escape)")
    changes: list[Change] = []
    if options.mojibake != "keep":
        try:
            fixed, how = repair_mojibake(text)
        except Unrepairable as err:
            raise TextProblem("mojibake", f"{err}: {text[:60]!r}") from None
        if fixed != text:
            if options.mojibake == "reject":
                raise TextProblem(
                    "mojibake",
                    f"looks like UTF-8 decoded as Latin-1/cp1252 ({how}; clean.mojibake: repair "
                    f"would fix it): {text[:60]!r}",
                )
            changes.append(Change("mojibake", text, fixed, how))
            text = fixed
    for name in options.enabled():
        if name == "mojibake":
            continue
        fixed = _FUNCTIONS[name](text)
        if fixed != text:
            changes.append(Change(name, text, fixed))
            text = fixed
    return text, changes
