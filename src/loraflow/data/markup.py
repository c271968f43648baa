"""The HTML fixer (clean.strip_html): known tags removed and entities decoded, only in text a real
parser finds markup in, never inside code spans or fenced code."""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from loraflow.data.fixers import segments

HTML_TAGS = frozenset(
    """
a abbr address area article aside audio b base bdi bdo big blockquote body br button canvas caption center cite
code col colgroup data datalist dd del details dfn dialog div dl dt em embed fieldset figcaption figure font footer
form h1 h2 h3 h4 h5 h6 head header hgroup hr html i iframe img input ins kbd label legend li link main mark menu
meta meter nav noscript object ol optgroup option output p param picture pre progress q rp rt ruby s samp script
section select small source span strike strong style sub summary sup table tbody td template textarea tfoot th
thead time title tr track tt u ul var video wbr
""".split()
)
VOID_TAGS = frozenset("area base br col embed hr img input link meta param source track wbr".split())
# Elements whose end tag HTML lets you leave out: stripped when the text is HTML for other reasons.
OPTIONAL_END = frozenset("p li dt dd tr td th option thead tbody tfoot colgroup rp rt".split())
BLOCK_TAGS = frozenset(
    """
address article aside blockquote br center dd div dl dt fieldset figcaption figure footer form h1 h2 h3 h4 h5 h6
header hr li main nav ol p pre section table tbody tfoot thead tr ul
""".split()
)
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
