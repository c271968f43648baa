"""The clean stage's report page, "what the cleaner changed": counts and examples per fixer and per
rejection reason, shown by `snakemake --report` (data/clean_report.html) and readable on its own.
"""

from __future__ import annotations

import html
import unicodedata
from collections import defaultdict

EXAMPLES_PER_FIXER = 5
EXAMPLES_PER_REASON = 3
CONTEXT = 80

WHAT_IT_DOES = {
    "mojibake": "UTF-8 text that had been decoded as Latin-1/cp1252, repaired by ftfy",
    "line_endings": "CRLF and lone CR turned into LF",
    "control_chars": "C0/C1 control characters removed (tab and newline kept)",
    "html": "HTML markup turned into text (clean.strip_html)",
    "nfc": "Unicode NFC: decomposed characters composed (the same text, one encoding of it)",
    "nfkc": "NFKC compatibility folding (clean.nfkc)",
    "zero_width": "zero-width spaces, word joiners, BOMs and soft hyphens removed (clean.remove_zero_width)",
    "symbol_run": "runs of 4+ identical symbols collapsed (clean.collapse_symbol_runs)",
    "whitespace": "whitespace collapsed and lines stripped (clean.collapse_whitespace)",
    "trim": "leading/trailing whitespace of fields removed (clean.trim)",
    "truncate": (
        "answer cut at tokenize.max_length tokens for training (tokenize.overlong: truncate); the test reference "
        "keeps all of it"
    ),
}


def visible(text: str) -> str:
    """Escape for HTML, with invisible and control characters shown as ⟨U+XXXX⟩."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\n":
            out.append("↵\n")
        elif ch == "\t":
            out.append("→\t")
        elif cat in ("Cc", "Cf", "Zl", "Zp") or (cat == "Zs" and ch != " "):
            out.append(f"<span class='cp'>⟨U+{ord(ch):04X}⟩</span>")
        else:
            out.append(html.escape(ch))
    return "".join(out)


def _window(before: str, after: str) -> tuple[str, str]:
    """The part of before/after around their first difference (long fields shortened)."""
    i = 0
    while i < min(len(before), len(after)) and before[i] == after[i]:
        i += 1
    j = 0
    while j < min(len(before), len(after)) - i and before[-1 - j] == after[-1 - j]:
        j += 1
    start = max(0, i - CONTEXT)

    def cut(s: str) -> str:
        end = min(len(s), len(s) - j + CONTEXT)
        return ("…" if start else "") + s[start:end] + ("…" if end < len(s) else "")

    return cut(before), cut(after)


def clean_report_html(stats: dict, changes: list[dict], rejected: list[dict]) -> str:
    by_fixer = defaultdict(list)
    for c in changes:
        by_fixer[c["fixer"]].append(c)
    by_reason = defaultdict(list)
    for r in rejected:
        by_reason[r["reason"]].append(r)
    e = html.escape
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>What the cleaner changed</title><style>",
        "body{font-family:sans-serif;margin:1.5em;max-width:70em} table{border-collapse:collapse} "
        "td,th{border:1px solid #ccc;"
        "padding:.3em .6em;vertical-align:top} pre{white-space:pre-wrap;margin:0;font-size:90%} "
        ".cp{color:#b00;font-size:80%}"
        " .before{background:#fee} .after{background:#efe}",
        "</style></head><body>",
        "<h1>What the cleaner changed</h1>",
        f"<p>Input <code>{e(str(stats.get('input')))}</code>: {stats['rows_in']} rows in, {stats['clean']} clean, "
        f"{stats['rejected']} rejected (every source record in exactly one of clean and rejected, checked by content: "
        f"{'yes' if stats.get('conserved') else 'NO'}). ",
    ]
    file_info = stats.get("file", {})
    if file_info:
        parts.append(
            "Read as "
            + ", ".join(f"{e(k)} <code>{e(str(v))}</code>" for k, v in file_info.items() if k != "notes")
            + ". "
        )
    if stats.get("row_formats"):
        parts.append("Row formats: " + ", ".join(f"{e(k)} {v}" for k, v in stats["row_formats"].items()) + ". ")
    parts.append(
        f"Fixers switched on: {e(', '.join(stats.get('fixers_enabled', [])))}. "
        f"Duplicates: {e(str(stats.get('dedup')))}.</p>"
    )
    for note in file_info.get("notes", []):
        parts.append(f"<p>Note: {e(note)}</p>")
    if stats.get("html_left_as_is"):
        parts.append(
            f"<p>{stats['html_left_as_is']} clean rows contain HTML markup, kept as is "
            "(<code>clean.strip_html: true</code> would turn it into text).</p>"
        )
    if "overlong" in stats:
        o = stats["overlong"]
        parts.append(
            f"<p>Longer than <code>tokenize.max_length</code> = {o['max_length']} tokens: {o['over_max_length']} of "
            f"{o['rows_measured']} rows ({100 * o['share']:.1f} %); policy <code>{e(o['policy'])}</code>: "
            f"{o['truncated']} truncated, {o['prompt_too_long']} with a prompt that alone does not fit.</p>"
        )
        if o.get("warning"):
            parts.append(f"<p><b>Warning:</b> {e(o['warning'])}</p>")

    parts.append(
        "<h2>Changes per fixer</h2><table><tr><th>fixer</th><th>rows</th><th>fields</th><th>what it does</th></tr>"
    )
    for fixer, counts in stats.get("changes", {}).items():
        parts.append(
            f"<tr><td>{e(fixer)}</td><td>{counts['rows']}</td><td>{counts['fields']}</td>"
            f"<td>{e(WHAT_IT_DOES.get(fixer, ''))}</td></tr>"
        )
    if not stats.get("changes"):
        parts.append("<tr><td colspan='4'>no field was changed</td></tr>")
    parts.append(
        "</table><p>Every change is one line of <code>data/changes.jsonl</code> (line, field, fixer, before, "
        "after).</p>"
    )
    for fixer, items in by_fixer.items():
        parts.append(
            f"<h3>{e(fixer)}: {len(items)} "
            "fields</h3><table><tr><th>line</th><th>field</th><th>before</th><th>after</th></tr>"
        )
        for c in items[:EXAMPLES_PER_FIXER]:
            before, after = _window(c["before"], c["after"])
            parts.append(
                f"<tr><td>{c['line']}</td><td>{e(c['field'])}</td><td class='before'><pre>{visible(before)}</pre></td>"
                f"<td class='after'><pre>{visible(after)}</pre></td></tr>"
            )
        parts.append("</table>")

    parts.append(
        "<h2>Rejected rows per reason</h2><table><tr><th>reason</th><th>rows</th><th>examples (line: detail)</th></tr>"
    )
    for reason, items in sorted(by_reason.items()):
        examples = "<br>".join(f"{r['line']}: {e(str(r['detail'])[:300])}" for r in items[:EXAMPLES_PER_REASON])
        parts.append(f"<tr><td>{e(reason)}</td><td>{len(items)}</td><td>{examples}</td></tr>")
    if not by_reason:
        parts.append("<tr><td colspan='3'>no row was rejected</td></tr>")
    parts.append(
        "</table><p>Every rejected row is in <code>data/rejected.jsonl</code> with its reason and "
        "detail.</p></body></html>\n"
    )
    return "".join(parts)
