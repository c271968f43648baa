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
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass
from html.parser import HTMLParser

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
# Mojibake (ftfy)
# --------------------------------------------------------------------------------------------------


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
            unescape_html=False, remove_terminal_escapes=False, fix_encoding=True, restore_byte_a0=True,
            replace_lossy_sequences=True, decode_inconsistent_utf8=True, fix_c1_controls=False,
            fix_latin_ligatures=False, fix_character_width=False, uncurl_quotes=False, fix_line_breaks=False,
            fix_surrogates=False, remove_control_chars=False, normalization=None, explain=True,
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
# HTML
# --------------------------------------------------------------------------------------------------

HTML_TAGS = frozenset("""
a abbr address area article aside audio b base bdi bdo big blockquote body br button canvas caption center cite
code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure font footer
form h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend li link main mark menu
meta meter nav noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp script
section select small source span strike strong style sub summary sup table tbody td template textarea tfoot th
thead time title tr track tt u ul var video wbr
""".split())
VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())
# Elements whose end tag HTML lets you leave out: stripped when the text is HTML for other reasons.
OPTIONAL_END = frozenset("p li dt dd tr td th option thead tbody tfoot colgroup rp rt".split())
BLOCK_TAGS = frozenset("""
address article aside blockquote br center dd div dl dt fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6
header hr li main nav ol p pre section table tbody tfoot thead tr ul
""".split())
# A tag with the attribute grammar of HTML (quoted values may hold '>').
_TAG = re.compile(
    r"<(/?)([A-Za-z][A-Za-z0-9]*)((?:\s+[^\s\"'>/=]+(?:\s*=\s*(?:\"[^\"]*\"|'[^']*'|[^\s\"'=<>`]+))?)*)\s*(/?)>"
)
_ENTITY = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_SCRIPT_STYLE = re.compile(r"(?is)<(script|style)\b[^>]*>.*?</\1\s*>")
_COMMENT = re.compile(r"(?s)<!--.*?-->")


class _TagCollector(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=False)
        self.starts: set[str] = set()
        self.ends: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.starts.add(tag)

    def handle_startendtag(self, tag, attrs):
        self.starts.add(tag)
        self.ends.add(tag)

    def handle_endtag(self, tag):
        self.ends.add(tag)


def markup_tags(text: str) -> set[str]:
    """Names of the known HTML tags that the stdlib HTML parser finds outside code, counted only as
    real markup: void elements (<br>, <img ...>) and elements that are both opened and closed.
    Empty for `Map<String, List<Integer>>`, `#include <iostream>`, `x<y and y>z`, `?a=1&copy=2`."""
    parser = _TagCollector()
    try:
        for code, piece in segments(text):
            if not code and "<" in piece:
                parser.feed(piece)
                parser.feed("\n")  # keep an unclosed tag from swallowing the next piece
        parser.close()
    except Exception:  # the parser is lenient, but never let odd text stop the clean stage
        return set()
    found = {t for t in parser.starts | parser.ends if t in HTML_TAGS}
    real = {t for t in found if t in VOID_TAGS or (t in parser.starts and t in parser.ends)}
    if real:
        real |= {t for t in found if t in OPTIONAL_END}
    return real


def looks_like_html(text: str) -> bool:
    return "<" in text and bool(markup_tags(text))


def strip_html(text: str) -> str:
    """Text of an HTML fragment: known tags removed (block tags become line breaks), script/style
    elements and comments dropped, terminated entities decoded (&nbsp; -> space). Text without
    markup, and code spans/fenced code, come back unchanged."""
    tags = markup_tags(text) if "<" in text else set()
    if not tags:
        return text

    def tag(m: re.Match) -> str:
        name = m.group(2).lower()
        if name not in tags:
            return m.group(0)
        if name == "br" or (m.group(1) and name in BLOCK_TAGS) or name == "hr":
            return "\n"
        return ""

    def entity(m: re.Match) -> str:
        decoded = html.unescape(m.group(0))
        return " " if decoded == "\xa0" else decoded

    def piece(s: str) -> str:
        s = _COMMENT.sub("", s)
        if "script" in tags or "style" in tags:
            s = _SCRIPT_STYLE.sub("", s)
        s = _ENTITY.sub(entity, _TAG.sub(tag, s))
        return re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", s))

    parts = [(code, s if code else piece(s)) for code, s in segments(text)]
    if parts and not parts[0][0]:
        parts[0] = (False, parts[0][1].lstrip())
    if parts and not parts[-1][0]:
        parts[-1] = (False, parts[-1][1].rstrip())
    return "".join(p for _, p in parts)


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


# --------------------------------------------------------------------------------------------------
# The pipeline
# --------------------------------------------------------------------------------------------------

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
    "line_endings": fix_line_endings, "control_chars": remove_controls, "html": strip_html, "nfc": nfc, "nfkc": nfkc,
    "zero_width": remove_zero_width, "symbol_run": collapse_symbol_runs, "whitespace": collapse_whitespace, "trim": trim,
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
            if option is None or (option == "mojibake" and self.mojibake == "repair") or (option != "mojibake" and getattr(self, option)):
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
                raise TextProblem("mojibake", f"looks like UTF-8 decoded as Latin-1/cp1252 ({how}; clean.mojibake: repair "
                                              f"would fix it): {text[:60]!r}")
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


# --------------------------------------------------------------------------------------------------
# Duplicate keys
# --------------------------------------------------------------------------------------------------

_WS = re.compile(r"\s+")


def exact_key(messages: list[dict]) -> str:
    """Conversations that are the same after NFC and trimming each turn's whitespace."""
    return "\x1f".join(m["role"] + ":" + nfc(m["content"]).strip() for m in messages)


def _fold_width(text: str) -> str:
    """Full-width ASCII variants (U+FF01-U+FF5E) and the ideographic space -> ASCII; nothing else."""
    return "".join(chr(ord(ch) - 0xFEE0) if "\uff01" <= ch <= "\uff5e" else " " if ch == "\u3000" else ch for ch in text)


def near_text(text: str) -> str:
    """Text under the near-duplicate key: NFC, full-width ASCII folded, case folded, whitespace runs
    collapsed and trailing punctuation/whitespace removed. Letters, digits, combining marks and
    symbols (operators) all stay, so texts that differ in one of them never collide."""
    t = _WS.sub(" ", nfc(_fold_width(nfc(text))).casefold()).strip()
    end = len(t)
    while end and (t[end - 1].isspace() or unicodedata.category(t[end - 1]).startswith("P")):
        end -= 1
    return t[:end]


def near_key(messages: list[dict]) -> str:
    """Conversations equal up to case, full-width forms, spacing and trailing punctuation."""
    return "\x1f".join(m["role"] + ":" + near_text(m["content"]) for m in messages)
