"""The report's building blocks and their two renderings, Markdown and self-contained HTML.

Model outputs are untrusted text: in HTML every string is escaped (html.escape), in Markdown it is
escaped too (renderers such as GitHub's accept raw HTML) and table cells lose their pipes and
newlines. Images are PNG bytes: Markdown links to plots/<file>, HTML embeds a base64 data URI, so
report.html needs no other file and no network.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Image:
    filename: str
    png: bytes
    alt: str


@dataclass
class Code:
    text: str


@dataclass
class Browser:
    """Every row of a table, searchable and filterable by one column in report.html (a small inline
    script; `#filter=VALUE` in the address opens it filtered, scrolled to it). Markdown gets `markdown` instead:
    thousands of rows would swamp it."""

    header: list[str]
    rows: list[list[str]]
    filter_column: int
    markdown: str


Block = Heading | Para | Table | Image | Code | Browser

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #222; line-height: 1.45; }
h1 { border-bottom: 2px solid #1565c0; padding-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 2em; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .3em .6em; vertical-align: top; text-align: left; }
th { background: #f0f4f8; }
td { white-space: pre-wrap; }
tr:nth-child(even) td { background: #fafafa; }
img { max-width: 100%; display: block; margin: .8em 0; }
pre { background: #f6f8fa; padding: .8em; overflow-x: auto; font-size: .85em; }
.browser-controls { position: sticky; top: 0; background: #fff; padding: .4em 0; }
.browser-controls input { width: 20em; }
"""

# Filters every Browser table on the page; no network, no library.
BROWSER_JS = """
document.querySelectorAll(".browser").forEach(function (box) {
  var search = box.querySelector("input"), choice = box.querySelector("select"), count = box.querySelector(".count");
  var rows = Array.prototype.slice.call(box.querySelectorAll("tbody tr"));
  function apply() {
    var q = search.value.toLowerCase(), v = choice.value, shown = 0;
    rows.forEach(function (r) {
      var ok = (v === "" || r.dataset.filter === v) && (q === "" || r.textContent.toLowerCase().indexOf(q) >= 0);
      r.hidden = !ok;
      if (ok) shown++;
    });
    count.textContent = shown + " of " + rows.length + " shown";
  }
  search.addEventListener("input", apply);
  choice.addEventListener("change", apply);
  var m = /filter=([^&]*)/.exec(location.hash);
  apply();
  if (m) { choice.value = decodeURIComponent(m[1]); apply(); box.scrollIntoView(); }
});
"""


def _md_text(text: str) -> str:
    return html.escape(text, quote=False)


def _md_cell(text: str) -> str:
    return _md_text(text).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def to_markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append(f"{'#' * b.level} {_md_text(b.text)}")
        elif isinstance(b, Para):
            out.append(_md_text(b.text))
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(_md_cell(h) for h in b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows]
            out.append("\n".join(lines))
        elif isinstance(b, Image):
            out.append(f"![{_md_text(b.alt)}](plots/{b.filename})")
        elif isinstance(b, Browser):
            out.append(_md_text(b.markdown))
        elif isinstance(b, Code):
            fence = "```"
            while fence in b.text:
                fence += "`"
            out.append(f"{fence}\n{b.text.rstrip()}\n{fence}")
    return "\n\n".join(out) + "\n"


def to_html(title: str, blocks: list[Block]) -> str:
    e = html.escape
    body: list[str] = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{e(b.text)}</p>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{e(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Image):
            data = base64.b64encode(b.png).decode("ascii")
            body.append(f'<img alt="{e(b.alt)}" src="data:image/png;base64,{data}">')
        elif isinstance(b, Code):
            body.append(f"<pre>{e(b.text)}</pre>")
        elif isinstance(b, Browser):
            body.append(_browser_html(b))
    script = f"<script>{BROWSER_JS}</script>\n" if any(isinstance(b, Browser) for b in blocks) else ""
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{e(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + f"\n{script}</body>\n</html>\n"
    )


def _browser_html(b: Browser) -> str:
    e = html.escape
    values: dict[str, int] = {}
    for row in b.rows:
        values[row[b.filter_column]] = values.get(row[b.filter_column], 0) + 1
    options = f'<option value="">every {e(b.header[b.filter_column])} ({len(b.rows)})</option>' + "".join(
        f'<option value="{e(v)}">{e(v)} ({n})</option>' for v, n in sorted(values.items()))
    head = "".join(f"<th>{e(h)}</th>" for h in b.header)
    rows = "".join(f'<tr data-filter="{e(row[b.filter_column])}">' + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>"
                   for row in b.rows)
    return (f'<div class="browser"><div class="browser-controls"><input type="search" placeholder="search text"> '
            f'<select>{options}</select> <span class="count"></span></div>'
            f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div>")
