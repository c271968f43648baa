"""Self-contained pages for `snakemake --report`: the comparison table as a sortable HTML table, the
headline figure as reStructuredText that carries its image (a data URI), for the report's first page,
and the best run's answers next to the base model's (`samples.html`).

The report embeds only the files declared with report() and shows a CSV only as a download; a page that
points at a file by its path shows a broken image once the report is opened anywhere else.
"""

from __future__ import annotations

import base64
import html
import math
import numbers

import numpy as np
import pandas as pd

from loraflow.io import read_jsonl

# Click a header to sort by that column (again: the other way); numbers sort as numbers, empty cells last.
_SORT_JS = """
document.querySelectorAll("th").forEach(function (th, col) {
  th.addEventListener("click", function () {
    var body = th.closest("table").tBodies[0], up = th.getAttribute("aria-sort") !== "ascending";
    document.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", up ? "ascending" : "descending");
    var key = function (tr) { var c = tr.cells[col]; return c.dataset.v === undefined ? c.textContent : c.dataset.v; };
    var rows = Array.from(body.rows).sort(function (a, b) {
      var x = key(a), y = key(b), nx = parseFloat(x), ny = parseFloat(y);
      if (x === "" || y === "") return (x === "") - (y === "");
      var d = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return up ? d : -d;
    });
    rows.forEach(function (tr) { body.appendChild(tr); });
  });
});
"""

_STYLE = (
    "body{font:13px sans-serif;margin:8px}table{border-collapse:collapse}"
    "th,td{border:1px solid #ccc;padding:3px 6px;white-space:nowrap}td.n{text-align:right}"
    "th{background:#eee;cursor:pointer;position:sticky;top:0}th[aria-sort=ascending]::after{content:' \\25B2'}"
    "th[aria-sort=descending]::after{content:' \\25BC'}tr.best td{background:#fdecea}tr.tied td{background:#fef5e7}"
)


def _cell(value) -> str:
    """A table cell: numbers shown to 4 significant digits and sorted by their full value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "<td></td>"
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        number = int(value) if isinstance(value, numbers.Integral) else float(value)
        return f"<td class='n' data-v='{number!r}'>{number:.4g}</td>"
    return f"<td>{html.escape(str(value))}</td>"


def sortable_table_html(table: pd.DataFrame, title: str) -> str:
    """The whole table as one HTML page; the best run's row and the tied-for-best rows are shaded."""
    head = "".join(f"<th scope='col'>{html.escape(str(c))}</th>" for c in table.columns)
    rows = []
    for rec in table.astype(object).where(table.notna(), None).to_dict("records"):
        best, tied = str(rec.get("best") or ""), str(rec.get("tied") or "")
        shade = " class='best'" if best.startswith("best") else " class='tied'" if tied == "tied for best" else ""
        rows.append(f"<tr{shade}>" + "".join(_cell(v) for v in rec.values()) + "</tr>")
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><h3>{html.escape(title)}</h3><p>Click a column header to sort.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"<script>{_SORT_JS}</script></body></html>"
    )


def embedded_image_rst(png: bytes, alt: str, css_class: str) -> str:
    """An rst image directive whose image travels inside it (no path for a report to lose); `css_class`
    lets the page that includes it style it."""
    uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    lines = "\n   ".join(uri[i : i + 76] for i in range(0, len(uri), 76))  # rst: short lines, joined again
    return f".. image:: {lines}\n   :alt: {alt}\n   :width: 100%\n   :class: {css_class}\n"


def _question(prompt: str) -> str:
    """The last user turn of a rendered ChatML prompt (for display)."""
    part = prompt.rsplit("<|im_start|>user\n", 1)[-1]
    return part.split("<|im_end|>", 1)[0].strip()


def samples_html(samples_path: str, run: str, n: int) -> str:
    rows = read_jsonl(samples_path)[:n]
    cells = "".join(
        "<tr>"
        + "".join(
            f"<td>{html.escape(str(v))}</td>"
            for v in (_question(r["prompt"]), r["reference"], r["base_answer"], r["tuned_answer"])
        )
        + "</tr>"
        for r in rows
    )
    return (
        f"<html><head><meta charset='utf-8'><style>table{{border-collapse:collapse;font:13px sans-serif}}"
        f"td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top}}th{{background:#eee}}</style></head><body>"
        f"<h3>Before / after: {html.escape(run)} (best run), first {len(rows)} test prompts</h3>"
        "<table><tr><th>question</th><th>reference</th><th>base model</th>"
        f"<th>tuned ({html.escape(run)})</th></tr>{cells}</table></body></html>"
    )
