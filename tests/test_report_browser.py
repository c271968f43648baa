"""`snakemake --report` opened in a real browser (headless Chromium): every image on the first page and
in the Comparison category loads from the report file alone, and the comparison table is a sortable table.
The pages the report embeds (loraflow.report.pages) are checked without a browser too."""

import base64
import json
import math
import re
import subprocess
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import snakemake
from loraflow.report.pages import embedded_image_rst, sortable_table_html

CHROMIUM = Path("/usr/bin/chromium")
in_browser = pytest.mark.skipif(not CHROMIUM.exists(), reason="no browser: /usr/bin/chromium is not installed")

# Appended to a copy of the report: once the page has loaded, record every <img> of the first page, then open
# the Comparison category (as the first page's link does) and show each of its images (as its view button
# does), and write what loaded into <pre id="probe"> for --dump-dom. No image waits on anything but the file.
PROBE = """<script>
(function () {
  const pre = document.createElement("pre");
  pre.id = "probe";
  const out = {landing: [], results: {}, done: false, error: null};
  const wait = (ms) => new Promise((r) => setTimeout(r, ms));
  const images = (keep) => Array.from(document.querySelectorAll("img")).filter(keep).map((i) => (
    {alt: i.alt, cls: i.className, src: (i.getAttribute("src") || "").slice(0, 40), complete: i.complete,
     width: i.naturalWidth}));
  window.addEventListener("load", async function () {
    document.body.appendChild(pre);
    try {
      await wait(500);
      out.landing = images(() => true);
      app.showCategory("Comparison");
      await wait(300);
      for (const paths of Object.values(categories["Comparison"])) {
        for (const path of paths) {
          const res = results[path];
          out.results[path] = {mime: res.mime_type, shown: []};
          if (res.mime_type.startsWith("image/")) {
            app.setView({content: "img", contentPath: res.data_uri, resultPath: path});
            await wait(300);
            out.results[path].shown = images((i) => i.getAttribute("src") === res.data_uri);
          }
        }
      }
      out.done = true;
    } catch (e) { out.error = String(e); }
    pre.textContent = JSON.stringify(out);
  });
})();
</script>"""

# Appended to the comparison page: its columns and rows, then sorted by column `r` (click) and the other way (again).
SORT_PROBE = """<script>
window.addEventListener("load", function () {
  const th = Array.from(document.querySelectorAll("th")).find((h) => h.textContent === "r");
  const col = Array.from(th.parentNode.children).indexOf(th);
  const column = () => Array.from(document.querySelector("tbody").rows).map((tr) => tr.cells[col].textContent);
  const out = {tables: document.querySelectorAll("table").length};
  out.columns = Array.from(document.querySelectorAll("thead th")).map((h) => h.textContent);
  out.runs = Array.from(document.querySelector("tbody").rows).map((tr) => tr.cells[0].textContent);
  th.click(); out.up = column();
  th.click(); out.down = column();
  const pre = document.createElement("pre");
  pre.id = "probe";
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def browse(page: Path, probe: str, tmp: Path) -> dict:
    """Open `page` with `probe` appended in headless Chromium; the probe's JSON from the rendered DOM."""
    html = page.read_text(encoding="utf-8")
    end = html.rindex("</body>")
    probed = tmp / f"probed_{page.name}"
    probed.write_text(html[:end] + probe + html[end:], encoding="utf-8")
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--disable-sync",
        f"--user-data-dir={tmp / 'chromium'}",
        "--virtual-time-budget=20000",
        "--dump-dom",
        probed.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=180).stdout
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, f"the probe did not run in {page.name}"
    return json.loads(unescape(found.group(1)))


def report_data(report: Path, name: str):
    """The JSON object of Snakemake's report page in `<script id="<name>">var <name> = ...;</script>`."""
    found = re.search(
        rf'<script id="{name}">\s*var {name} = (.*?);\s*</script>', report.read_text(encoding="utf-8"), re.S
    )
    return json.loads(found.group(1))


@pytest.fixture(scope="module")
def report(finished_run, tmp_path_factory) -> Path:
    """The finished tiny run's report, alone in a folder: nothing next to it that a path could point at."""
    workdir, _ = finished_run
    out = tmp_path_factory.mktemp("report") / "report.html"
    snakemake(workdir, "--report", str(out))
    return out


@pytest.mark.slow
@in_browser
def test_every_image_on_the_first_page_and_in_comparison_loads(report, tmp_path):
    seen = browse(report, PROBE, tmp_path)
    assert seen["done"], seen["error"]
    broken = [img for img in seen["landing"] if not (img["complete"] and img["width"] > 0)]
    assert not broken, f"first page: images that did not load: {broken}"
    assert any("loraflow-headline" in img["cls"] for img in seen["landing"]), "no headline figure on the first page"
    images = {path: res for path, res in seen["results"].items() if res["mime"].startswith("image/")}
    assert "results/plots/headline.png" in images and len(images) >= 5
    for path, res in images.items():
        assert res["shown"] and all(img["complete"] and img["width"] > 0 for img in res["shown"]), f"{path}: {res}"


@pytest.mark.slow
@in_browser
def test_the_comparison_table_is_a_sortable_table_of_every_row_and_column(report, finished_run, tmp_path):
    workdir, _ = finished_run
    csv = pd.read_csv(workdir / "results/comparison.csv")
    entries = report_data(report, "results")
    assert "results/plots/comparison.html" in report_data(report, "categories")["Comparison"]["Other"]
    page = tmp_path / "comparison.html"
    page.write_bytes(base64.b64decode(entries["results/plots/comparison.html"]["data_uri"].split("base64,", 1)[1]))
    order = browse(page, SORT_PROBE, tmp_path)
    assert order["tables"] == 1 and order["columns"] == list(csv.columns) and order["runs"] == csv["run"].tolist()
    r = sorted(int(v) for v in csv["r"].dropna())
    assert len(set(r)) >= 2 and csv["r"].isna().sum() == 1  # the grid's r values, and the base row without one
    assert order["up"] == [str(v) for v in r] + [""]  # numbers as numbers, the empty cell last
    assert order["down"] == [str(v) for v in reversed(r)] + [""]


class Cells(HTMLParser):
    """Header texts, and per body row its cells as (text, data-v) pairs."""

    def __init__(self):
        super().__init__()
        self.head, self.rows, self.cell = [], [], None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("th", "td"):
            self.cell = [tag, "", dict(attrs).get("data-v")]

    def handle_data(self, data):
        if self.cell is not None:
            self.cell[1] += data

    def handle_endtag(self, tag):
        if tag in ("th", "td") and self.cell is not None:
            kind, text, value = self.cell
            (self.head.append(text) if kind == "th" else self.rows[-1].append((text, value)))
            self.cell = None


cells = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=False, width=32),
    st.integers(-(10**6), 10**6),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.text(alphabet="abc_<&'\"", min_size=1, max_size=6), min_size=1, max_size=5, unique=True).flatmap(
        lambda cols: st.tuples(st.just(cols), st.lists(st.tuples(*[cells] * len(cols)), max_size=6))
    )
)
def test_the_sortable_table_holds_every_cell_and_sorts_numbers_by_their_value(spec):
    columns, rows = spec
    table = pd.DataFrame([list(r) for r in rows], columns=columns, dtype=object)
    parsed = Cells()
    parsed.feed(sortable_table_html(table, "t <&>"))
    assert parsed.head == columns and len(parsed.rows) == len(rows) + 1  # + the header row
    for row, got in zip(rows, parsed.rows[1:]):
        for value, (text, sort_key) in zip(row, got):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                assert (text, sort_key) == ("", None)
            elif isinstance(value, (int, float)):
                assert float(sort_key) == value and math.isclose(float(text), value, rel_tol=1e-3, abs_tol=1e-300)
            else:
                assert (text, sort_key) == (value, None)


@settings(max_examples=25, deadline=None)
@given(st.binary(min_size=1, max_size=30_000))
def test_the_headline_figure_travels_inside_the_page_that_shows_it(png):
    """docutils renders the rst to an <img> whose data URI holds the same bytes (no line too long for it)."""
    from docutils.core import publish_parts

    rst = embedded_image_rst(png, "the headline", "loraflow-headline")
    body = publish_parts(rst, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]
    src = re.search(r'<img [^>]*src="data:image/png;base64,([^"]+)"', body)
    assert src and 'class="loraflow-headline"' in body and 'alt="the headline"' in body
    assert base64.b64decode(src.group(1)) == png
