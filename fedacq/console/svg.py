"""Plots as inline SVG, drawn on the server: the console loads nothing from anywhere else.

Two kinds cover every page: :func:`line_chart` (curves, with optional markers, error bars
and a diagonal reference line) and :func:`bar_chart` (grouped bars over categories). Each
returns one ``<svg>`` element with ``role="img"``, a ``<title>`` and the ``class="plot"``
the tests look for. Every piece of text is escaped; colours and sizes are attributes
(no ``style``), so the console's Content-Security-Policy needs no inline-style exception.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Callable, Sequence

WIDTH, HEIGHT = 560, 320
MARGIN = {"left": 64, "right": 16, "top": 34, "bottom": 62}
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Series:
    """One curve: points (xs[i], ys[i]); with ``lows``/``highs``, an error bar at each point."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float]
    lows: Sequence[float] | None = None
    highs: Sequence[float] | None = None
    markers: bool = False
    dashed: bool = False
    color: str | None = None
    labels: Sequence[str] = field(default_factory=tuple)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return [0.0]
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / max(n, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    ticks = [math.floor(lo / step) * step]
    while ticks[-1] < hi - step * 1e-9:
        ticks.append(ticks[-1] + step)
    ticks = [round(t, 12) for t in ticks]
    return ticks


def whole(v: float) -> str:
    """A tick label for a count axis (rounds, versions): whole numbers only."""
    return str(int(v)) if float(v).is_integer() else ""


def fmt(v: float) -> str:
    """A short tick label."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6 or a < 1e-3:
        return f"{v:.2g}"
    return f"{v:.4g}"


def _frame(title: str, x_label: str, y_label: str, width: int, height: int) -> list[str]:
    return [f'<svg class="plot" role="img" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            f"<title>{escape(title)}</title>",
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
            f'<text x="{width / 2:.1f}" y="18" text-anchor="middle" font-size="13" font-weight="bold">'
            f"{escape(title)}</text>",
            f'<text x="{width / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(x_label)}</text>',
            f'<text x="14" y="{height / 2:.1f}" text-anchor="middle" transform="rotate(-90 14 {height / 2:.1f})">'
            f"{escape(y_label)}</text>"]


def _legend(names: list[tuple[str, str, bool]], width: int, height: int) -> list[str]:
    out, x = [], MARGIN["left"]
    y = height - 30
    for name, color, dashed in names:
        dash = ' stroke-dasharray="5 3"' if dashed else ""
        out.append(f'<line x1="{x}" y1="{y}" x2="{x + 18}" y2="{y}" stroke="{color}" stroke-width="2"{dash}/>')
        out.append(f'<text x="{x + 22}" y="{y + 4}">{escape(name)}</text>')
        x += 34 + 7 * len(name)
    return out


def line_chart(series: Sequence[Series], *, title: str, x_label: str, y_label: str,
               diagonal: bool = False, zero_line: bool = False, x_range: tuple[float, float] | None = None,
               y_range: tuple[float, float] | None = None, x_format: Callable[[float], str] = fmt,
               y_format: Callable[[float], str] = fmt, width: int = WIDTH, height: int = HEIGHT) -> str:
    """Curves on shared axes; ``diagonal`` draws y = x (ROC, gains), ``zero_line`` y = 0 (lift)."""
    xs = [float(x) for s in series for x in s.xs]
    ys = [float(y) for s in series for y in s.ys]
    ys += [float(v) for s in series for v in (s.lows or ())] + [float(v) for s in series for v in (s.highs or ())]
    if zero_line:
        ys.append(0.0)
    x0, x1 = x_range or ((min(xs), max(xs)) if xs else (0.0, 1.0))
    if x1 <= x0:
        x0, x1 = x0 - 0.5, x1 + 0.5
    if x_range is None:  # a margin, so that points and error bars at the ends are not cut in half
        x0, x1 = x0 - 0.03 * (x1 - x0), x1 + 0.03 * (x1 - x0)
    xt = nice_ticks(x0, x1)
    yt = nice_ticks(*(y_range or ((min(ys), max(ys)) if ys else (0.0, 1.0))))
    y0, y1 = y_range or (yt[0], yt[-1])
    left, right = MARGIN["left"], width - MARGIN["right"]
    top, bottom = MARGIN["top"], height - MARGIN["bottom"]

    def px(x: float) -> float:
        return left + (x - x0) / ((x1 - x0) or 1.0) * (right - left)

    def py(y: float) -> float:
        return bottom - (y - y0) / ((y1 - y0) or 1.0) * (bottom - top)
    out = _frame(title, x_label, y_label, width, height)
    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
               'stroke="#999999"/>')
    for t in yt:
        if y0 - 1e-12 <= t <= y1 + 1e-12:
            out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{right}" y2="{py(t):.1f}" stroke="#eeeeee"/>')
            out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{escape(y_format(t))}</text>')
    for t in xt:
        if x0 - 1e-12 <= t <= x1 + 1e-12:
            out.append(f'<text x="{px(t):.1f}" y="{bottom + 16}" text-anchor="middle">{escape(x_format(t))}</text>')
    if diagonal:
        lo, hi = max(x0, y0), min(x1, y1)
        out.append(f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}" '
                   'stroke="#999999" stroke-dasharray="4 4"/>')
    if zero_line and y0 <= 0 <= y1:
        out.append(f'<line x1="{left}" y1="{py(0):.1f}" x2="{right}" y2="{py(0):.1f}" stroke="#555555"/>')
    legend = []
    for i, s in enumerate(series):
        color = s.color or PALETTE[i % len(PALETTE)]
        dash = ' stroke-dasharray="5 3"' if s.dashed else ""
        points = [(px(float(x)), py(float(y))) for x, y in zip(s.xs, s.ys)]
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
            out.append(f'<polyline class="series" points="{path}" fill="none" stroke="{color}" '
                       f'stroke-width="2"{dash}/>')
        if s.lows is not None and s.highs is not None:
            for (x, _), lo, hi in zip(points, s.lows, s.highs):
                out.append(f'<line class="interval" x1="{x:.1f}" y1="{py(float(lo)):.1f}" x2="{x:.1f}" '
                           f'y2="{py(float(hi)):.1f}" stroke="{color}" stroke-width="1.5"/>')
                for yy in (py(float(lo)), py(float(hi))):
                    out.append(f'<line x1="{x - 4:.1f}" y1="{yy:.1f}" x2="{x + 4:.1f}" y2="{yy:.1f}" '
                               f'stroke="{color}"/>')
        if s.markers or len(points) == 1:
            for j, (x, y) in enumerate(points):
                tip = f"<title>{escape(s.labels[j])}</title>" if j < len(s.labels) else ""
                out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}">{tip}</circle>')
        legend.append((s.name, color, s.dashed))
    out += _legend(legend, width, height)
    out.append("</svg>")
    return "\n".join(out)


def bar_chart(categories: Sequence[str], groups: dict[str, Sequence[float]], *, title: str, x_label: str,
              y_label: str, y_format: Callable[[float], str] = fmt, width: int = WIDTH,
              height: int = HEIGHT) -> str:
    """Grouped bars: for each category one bar per group (e.g. two versions' score shares)."""
    values = [float(v) for g in groups.values() for v in g]
    yt = nice_ticks(min(0.0, *values) if values else 0.0, max(values) if values else 1.0)
    y0, y1 = yt[0], yt[-1]
    left, right = MARGIN["left"], width - MARGIN["right"]
    top, bottom = MARGIN["top"], height - MARGIN["bottom"]

    def py(y: float) -> float:
        return bottom - (y - y0) / ((y1 - y0) or 1.0) * (bottom - top)
    out = _frame(title, x_label, y_label, width, height)
    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" '
               'stroke="#999999"/>')
    for t in yt:
        out.append(f'<line x1="{left}" y1="{py(t):.1f}" x2="{right}" y2="{py(t):.1f}" stroke="#eeeeee"/>')
        out.append(f'<text x="{left - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{escape(y_format(t))}</text>')
    n, k = max(len(categories), 1), max(len(groups), 1)
    slot = (right - left) / n
    bar = slot * 0.8 / k
    legend = []
    for gi, (name, vals) in enumerate(groups.items()):
        color = PALETTE[gi % len(PALETTE)]
        for ci, v in enumerate(vals):
            x = left + ci * slot + slot * 0.1 + gi * bar
            y_top, y_base = py(max(float(v), 0.0)), py(min(float(v), 0.0))
            out.append(f'<rect class="bar" x="{x:.1f}" y="{y_top:.1f}" width="{bar:.1f}" '
                       f'height="{max(y_base - y_top, 0.5):.1f}" fill="{color}">'
                       f"<title>{escape(name)}: {escape(categories[ci] if ci < len(categories) else '')} "
                       f"{escape(y_format(float(v)))}</title></rect>")
        legend.append((name, color, False))
    every = max(1, math.ceil(n / 12))
    for ci, c in enumerate(categories):
        if ci % every == 0:
            out.append(f'<text x="{left + (ci + 0.5) * slot:.1f}" y="{bottom + 16}" text-anchor="middle">'
                       f"{escape(c)}</text>")
    out += _legend(legend, width, height)
    out.append("</svg>")
    return "\n".join(out)
