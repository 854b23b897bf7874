"""A sweep's results as CSV (every number), Markdown and HTML (read by people), and JSON.

The CSV has one row per point and, per KPI, the treatment and control values
and the relative lift with its 95% interval. The Markdown and HTML tables show
the same lifts as ``+x% [low, high]`` text, headline KPIs first, and the HTML
page adds one plot: relative lift of the headline KPIs against the swept value,
one panel per sweep, with the intervals as error bars.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from fedacq.pipeline import HEADLINE_KPIS
from fedacq.measure.kpis import KPIS

OTHER_KPIS = tuple(k.name for k in KPIS if k.name not in HEADLINE_KPIS)
_KPI_LABELS = {k.name: k.label for k in KPIS}


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def lift_text(row: dict[str, Any], kpi: str) -> str:
    """``+x.x% [low, high]`` of one KPI's relative lift; ``*`` when the interval excludes 0."""
    value = row.get(f"{kpi}_lift")
    if _missing(value):
        return "n/a" if row.get("targeting") == "joint" else "not enough data"
    low, high = row[f"{kpi}_lift_ci_low"], row[f"{kpi}_lift_ci_high"]
    star = "*" if low > 0 or high < 0 else ""
    return f"{value:+.1%} [{low:+.1%}, {high:+.1%}]{star}"


def auc_text(row: dict[str, Any], prefix: str) -> str:
    value = row.get(f"{prefix}_auc")
    if _missing(value):
        return "n/a"
    return f"{value:.3f} [{row[f'{prefix}_auc_ci_low']:.3f}, {row[f'{prefix}_auc_ci_high']:.3f}]"


def display_rows(rows: list[dict[str, Any]], kpis: tuple[str, ...], with_quality: bool) -> list[dict[str, str]]:
    """Rows of text for the Markdown and HTML tables."""
    out = []
    for row in rows:
        shown = {"sweep": row["sweep"], "value": str(row["label"]), "targeting": row["targeting"]}
        if with_quality:
            shown["valid AUC [95% CI]"] = auc_text(row, "valid")
            shown["valid KS"] = "n/a" if _missing(row.get("valid_ks")) else f"{row['valid_ks']:.3f}"
            shown["holdout AUC [95% CI]"] = auc_text(row, "holdout")
        for kpi in kpis:
            shown[f"{_KPI_LABELS[kpi]} lift [95% CI]"] = lift_text(row, kpi)
        out.append(shown)
    return out


def markdown_table(rows: list[dict[str, str]]) -> str:
    if not rows:
        return ""
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c].replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


NOTES = ("Lift is treatment over control (relative, 95% delta-method interval, log scale), measured by the "
         "lender on its own funnel; `*` marks an interval that excludes 0. Lower cost per credit user and "
         "higher drawdown per user are better. Valid AUC: the lender's model on the run's validation split of "
         "the intersection (for a noised prospect model this is the un-noised lender copy). Holdout AUC: the "
         "scores the platform actually targets with (released, possibly noised, model; or activity) on lender "
         "customers held out of training. A joint model has no campaign: prospects lack the lender's features.")


def lift_figure(rows: list[dict[str, Any]]) -> Any:
    """Relative lift of the headline KPIs against the swept value, one panel per sweep."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    sweeps = list(dict.fromkeys(r["sweep"] for r in rows))
    fig = Figure(figsize=(4.2 * len(sweeps), 3.8))
    FigureCanvasAgg(fig)
    for i, sweep in enumerate(sweeps):
        ax = fig.add_subplot(1, len(sweeps), i + 1)
        points = [r for r in rows if r["sweep"] == sweep]
        x = range(len(points))
        for j, kpi in enumerate(HEADLINE_KPIS):
            offset = (j - (len(HEADLINE_KPIS) - 1) / 2) * 0.12
            xs, ys, err = [], [], [[], []]
            for k, r in zip(x, points):
                if _missing(r.get(f"{kpi}_lift")):
                    continue
                xs.append(k + offset)
                ys.append(100 * r[f"{kpi}_lift"])
                err[0].append(100 * (r[f"{kpi}_lift"] - r[f"{kpi}_lift_ci_low"]))
                err[1].append(100 * (r[f"{kpi}_lift_ci_high"] - r[f"{kpi}_lift"]))
            ax.errorbar(xs, ys, yerr=err, fmt="o", capsize=4, label=_KPI_LABELS[kpi])
        ax.axhline(0, color="#888", lw=0.8)
        ax.set_xticks(list(x), [str(r["label"]) for r in points])
        ax.set_xlim(-0.5, len(points) - 0.5)
        ax.set_xlabel(points[0]["setting"])
        ax.set_title(sweep)
        if i == 0:
            ax.set_ylabel("relative lift, % (95% CI)")
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def results_html(summary: dict[str, Any]) -> str:
    from fedacq.measure.html import figure_to_img_tag, page, paragraph, table_html

    rows = summary["rows"]
    base = {k: (json.dumps(v) if isinstance(v, (dict, list, tuple)) else v) for k, v in summary["base"].items()}
    sections = [
        ("Lift against the swept value", [paragraph(NOTES), figure_to_img_tag(lift_figure(rows), "lift per sweep")]),
        ("Headline KPIs and model quality",
         [table_html(display_rows(rows, HEADLINE_KPIS, with_quality=True))]),
        ("Other KPIs", [table_html(display_rows(rows, OTHER_KPIS, with_quality=False))]),
        ("Base settings", [table_html([{"setting": k, "value": str(v)} for k, v in base.items()]),
                           paragraph(f"{summary['models_trained']} model(s) trained, "
                                     f"{summary['campaigns_simulated']} campaign(s) simulated, "
                                     f"{summary['seconds']:.0f} s in all ({summary['timings']}).", note=True)]),
    ]
    return page(f"fedacq experiments: {summary['title']}", sections)


def write_results(summary: dict[str, Any], out: Path) -> list[Path]:
    """``results.csv``, ``results.md``, ``results.html`` and ``results.json`` under ``out``."""
    rows = summary["rows"]
    paths = [out / f"results.{ext}" for ext in ("csv", "md", "html", "json")]
    pd.DataFrame(rows).to_csv(paths[0], index=False)
    md = [f"# {summary['title']}", "", NOTES, "", "## Headline KPIs and model quality", "",
          markdown_table(display_rows(rows, HEADLINE_KPIS, with_quality=True)), "", "## Other KPIs", "",
          markdown_table(display_rows(rows, OTHER_KPIS, with_quality=False)), "",
          f"Config `{summary['config']}`; {summary['models_trained']} model(s) trained, "
          f"{summary['campaigns_simulated']} campaign(s) simulated, {summary['seconds']:.0f} s.", ""]
    paths[1].write_text("\n".join(md), encoding="utf-8")
    paths[2].write_text(results_html(summary), encoding="utf-8")
    paths[3].write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    return paths
