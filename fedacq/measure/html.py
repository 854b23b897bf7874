"""A tiny builder for self-contained HTML reports (no scripts, no external files).

Reports are read on machines without network access and mailed around as one
file, so figures are embedded as base64 PNG and the style sheet is inline.
There is deliberately no JavaScript: nothing can fail to load or run. The
demo report reuses these functions: :func:`figure_to_img_tag`,
:func:`table_html`, :func:`page`.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any, Iterable, Mapping, Sequence

STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; border-bottom: 2px solid #2a6fb0; padding-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 1.8em; color: #2a6fb0; }
table { border-collapse: collapse; margin: .8em 0; font-size: .9em; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #ccd; padding: .3em .6em; text-align: right; }
th { background: #eef3f9; }
td.text, th.text { text-align: left; }
td.missing { color: #a33; font-style: italic; text-align: left; }
img { max-width: 100%; height: auto; display: block; margin: .8em 0; }
p.note { color: #555; font-size: .9em; }
"""


def figure_to_img_tag(figure: Any, alt: str, dpi: int = 110) -> str:
    """A matplotlib figure as an ``<img>`` tag with the PNG inlined (base64)."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def format_cell(value: Any, digits: int = 4) -> str:
    """Numbers with ``digits`` significant figures, missing values as an empty cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if abs(value) >= 10 ** (digits - 1):
            return f"{value:,.0f}"
        return f"{value:.{digits}g}"
    return str(value)


def table_html(rows: Iterable[Mapping[str, Any]] | Any, columns: Sequence[str] | None = None,
               caption: str = "", headers: Mapping[str, str] | None = None) -> str:
    """An HTML table from dicts (or a pandas DataFrame); text is escaped.

    A cell whose value is a dict with a ``"status"`` (e.g. "not enough data")
    is shown as that status, so a suppressed group never shows a number.
    """
    if hasattr(rows, "to_dict"):
        rows = rows.to_dict("records")
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    headers = headers or {}
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{html.escape(caption)}</caption>")
    out.append("<tr>" + "".join(f'<th class="text">{html.escape(headers.get(c, c))}</th>' for c in columns) + "</tr>")
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            if isinstance(value, Mapping) and "status" in value:
                cells.append(f'<td class="missing">{html.escape(str(value["status"]))}</td>')
            elif isinstance(value, str):
                cells.append(f'<td class="text">{html.escape(value)}</td>')
            else:
                cells.append(f"<td>{html.escape(format_cell(value))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def paragraph(text: str, note: bool = False) -> str:
    """Escaped text as a paragraph (``note=True``: small grey print)."""
    cls = ' class="note"' if note else ""
    return f"<p{cls}>{html.escape(text)}</p>"


def page(title: str, sections: Sequence[tuple[str, str | Sequence[str]]]) -> str:
    """A whole HTML document: a title and (heading, body HTML or list of HTML) sections."""
    body = [f"<h1>{html.escape(title)}</h1>"]
    for heading, content in sections:
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(content if isinstance(content, str) else "\n".join(content))
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
