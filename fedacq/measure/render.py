"""Plots and the HTML page of a measurement report (the dict from :func:`fedacq.measure.report.measure`).

A person judging an experiment looks at intervals, not digits: per layer there
is one plot of each KPI per arm with its interval, one of the relative lift per
KPI with its interval (a forest plot: an interval crossing zero is no evidence
of an effect), and one of per-bucket KPIs, followed by the same numbers as tables.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # reports are written by headless processes
import matplotlib.pyplot as plt  # noqa: E402

from fedacq.activate.events import ARMS  # noqa: E402
from fedacq.measure.html import figure_to_img_tag, format_cell, page, paragraph, table_html  # noqa: E402
from fedacq.measure.lift import NOT_ENOUGH, is_reported  # noqa: E402

if TYPE_CHECKING:
    from fedacq.measure.private import PlatformView

COLORS = {"control": "#8a8f98", "treatment": "#2a6fb0"}
BUCKET_KPIS = ("deep_conversion_rate", "cost_per_credit_user")


def _with_ci(result: dict[str, Any], scale: float = 1.0, suffix: str = "") -> str:
    if not is_reported(result):
        return NOT_ENOUGH
    v, lo, hi = (result[k] * scale for k in ("value", "ci_low", "ci_high"))
    return f"{format_cell(v)}{suffix} [{format_cell(lo)}, {format_cell(hi)}]"


def kpi_by_arm_figure(layer: dict[str, Any], kpis: dict[str, Any], title: str) -> plt.Figure:
    """One panel per KPI: each arm's value and interval."""
    names = list(kpis)
    cols = 4
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        ax.set_title(kpis[name]["label"], fontsize=9)
        for i, arm in enumerate(ARMS[::-1]):  # control left, treatment right
            res = layer["arms"][arm]
            res = res["kpis"][name] if "kpis" in res else res
            if is_reported(res):
                ax.errorbar([i], [res["value"]], yerr=[[res["value"] - res["ci_low"]], [res["ci_high"] - res["value"]]],
                            fmt="o", color=COLORS[arm], capsize=6, markersize=6)
            else:
                ax.text(i, 0.5, NOT_ENOUGH, ha="center", va="center", fontsize=7, color="#a33",
                        transform=ax.get_xaxis_transform())
        ax.set_xticks([0, 1], ARMS[::-1], fontsize=8)
        ax.set_xlim(-0.6, 1.6)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def lift_figure(layer: dict[str, Any], kpis: dict[str, Any], title: str) -> plt.Figure:
    """Relative lift (%) of treatment over control per KPI, with intervals, around zero."""
    names = list(kpis)
    fig, ax = plt.subplots(figsize=(7, 0.4 * len(names) + 1.2))
    for y, name in enumerate(names):
        res = layer["lift"][name]
        rel = res.get("relative", res)
        if is_reported(rel):
            v, lo, hi = 100 * rel["value"], 100 * rel["ci_low"], 100 * rel["ci_high"]
            color = COLORS["treatment"] if lo > 0 or hi < 0 else COLORS["control"]
            ax.errorbar([v], [y], xerr=[[v - lo], [hi - v]], fmt="o", color=color, capsize=5)
        else:
            ax.text(0, y, NOT_ENOUGH, va="center", ha="center", fontsize=8, color="#a33")
    ax.axvline(0, color="#333", lw=0.8)
    ax.set_yticks(range(len(names)), [kpis[n]["label"] for n in names], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("relative lift, treatment vs control (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def bucket_figure(layer: dict[str, Any], kpis: dict[str, Any], title: str) -> plt.Figure:
    """Selected KPIs per reported bucket with intervals, coloured by arm (small buckets left out)."""
    shown = [b for b in layer["buckets"] if "kpis" in b]
    fig, axes = plt.subplots(1, len(BUCKET_KPIS), figsize=(6 * len(BUCKET_KPIS), 3.2), squeeze=False)
    for ax, name in zip(axes.flat, BUCKET_KPIS):
        for x, b in enumerate(shown):
            res = b["kpis"][name]
            if is_reported(res):
                ax.errorbar([x], [res["value"]], yerr=[[res["value"] - res["ci_low"]], [res["ci_high"] - res["value"]]],
                            fmt="o", color=COLORS[b["arm"]], capsize=3, markersize=4)
        if not shown:
            ax.text(0.5, 0.5, "no bucket has enough data", ha="center", va="center", color="#a33",
                    transform=ax.transAxes)
        step = max(1, len(shown) // 25)
        ax.set_xticks(range(0, len(shown), step), [str(b["bucket"]) for b in shown][::step], fontsize=7,
                      rotation=90)
        ax.set_xlabel("bucket")
        ax.set_title(kpis[name]["label"], fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=a) for a, c in COLORS.items()]
    axes.flat[0].legend(handles=handles, fontsize=8)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def figures(report: dict[str, Any]) -> dict[str, plt.Figure]:
    """All figures of a report, keyed by a file name (``<layer>_<kind>.png``)."""
    out = {}
    for name, layer in report["layers"].items():
        out[f"{name}_kpi_by_arm.png"] = kpi_by_arm_figure(layer, report["kpis"], f"KPIs per arm — layer {name}")
        out[f"{name}_lift.png"] = lift_figure(layer, report["kpis"], f"Lift per KPI — layer {name}")
        out[f"{name}_buckets.png"] = bucket_figure(layer, report["kpis"], f"KPIs per bucket — layer {name}")
    return out


def _arm_rows(layer: dict[str, Any], kpis: dict[str, Any]) -> list[dict[str, Any]]:
    def cell(arm: str, key: str) -> Any:
        res = layer["arms"][arm]
        if "kpis" not in res:
            return res  # the "not enough data" marker
        if key == "spend":
            return res["spend"]["spend"] if res["spend"] else None
        if key in kpis:
            return _with_ci(res["kpis"][key])
        return res[key]

    labels = {"exposed_users": "Exposed users", "applications": "Applications",
              "credit_users": "Credit users", "spend": "Spend",
              **{name: meta["label"] for name, meta in kpis.items()}}
    return [{"KPI": label, **{arm: cell(arm, key) for arm in ARMS}} for key, label in labels.items()]


def _lift_rows(layer: dict[str, Any], kpis: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name, meta in kpis.items():
        res = layer["lift"][name]
        if "absolute" not in res:
            rows.append({"KPI": meta["label"], "absolute lift [95% CI]": NOT_ENOUGH,
                         "relative lift % [95% CI]": NOT_ENOUGH, "note": res.get("reason", "")})
            continue
        rows.append({"KPI": meta["label"], "absolute lift [95% CI]": _with_ci(res["absolute"]),
                     "relative lift % [95% CI]": _with_ci(res["relative"], 100.0, "%"),
                     "note": res["relative"].get("reason", "")})
    return rows


def _bucket_rows(layer: dict[str, Any], kpis: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of the buckets with enough data (the others are summarised by :func:`_small_buckets`)."""
    rows = []
    for b in layer["buckets"]:
        if "kpis" not in b:
            continue
        row: dict[str, Any] = {"bucket": b["bucket"], "arm": b["arm"], "exposed users": b["exposed_users"],
                               "applications": b["applications"], "credit users": b["credit_users"],
                               "spend": b["spend"]["spend"] if b["spend"] else None}
        for name in kpis:
            res = b["kpis"][name]
            row[kpis[name]["label"]] = res["value"] if is_reported(res) else res
        rows.append(row)
    return rows


def _small_buckets(layer: dict[str, Any], min_size: int) -> str:
    small = [b for b in layer["buckets"] if "kpis" not in b]
    if not small:
        return paragraph(f"Every bucket has at least {min_size} exposed users.", note=True)
    by_arm = {arm: [b["bucket"] for b in small if b["arm"] == arm] for arm in ARMS}
    listed = "; ".join(f"{arm}: {len(ids)} ({', '.join(map(str, ids[:20]))}{', ...' if len(ids) > 20 else ''})"
                       for arm, ids in by_arm.items() if ids)
    return paragraph(f"{len(small)} bucket(s) have fewer than {min_size} exposed users and are reported "
                     f"as \"{NOT_ENOUGH}\" — {listed}.", note=True)


def report_html(report: dict[str, Any], figs: dict[str, plt.Figure] | None = None,
                title: str = "fedacq measurement report") -> str:
    """The whole report page; pass ``figs`` to reuse figures already drawn."""
    figs = figs if figs is not None else figures(report)
    kpis = report["kpis"]
    settings = report["settings"]
    sections: list[tuple[str, list[str]]] = [("How to read this", [
        paragraph(f"Unit: an exposed user (a distinct user who clicked the lender's ad in a layer). "
                  f"Intervals are {settings['confidence']:.0%} confidence intervals by the {settings['method']}."),
        paragraph(f"A bucket or arm with fewer than {settings['min_bucket_size']} exposed users, or a KPI "
                  f"with fewer than {settings['min_events']} users in its numerator or denominator, "
                  f"is reported as \"{NOT_ENOUGH}\" and never as numbers.", note=True),
        table_html([{"KPI": m["label"], "definition": m["definition"]} for m in kpis.values()],
                   caption="KPI definitions"),
    ])]
    for name, layer in report["layers"].items():
        sections.append((f"Layer {name}: KPIs per arm", [
            figure_to_img_tag(figs[f"{name}_kpi_by_arm.png"], f"KPIs per arm, layer {name}"),
            table_html(_arm_rows(layer, kpis), ["KPI", *ARMS[::-1]], caption="Value [95% CI] per arm")]))
        sections.append((f"Layer {name}: lift of treatment over control", [
            figure_to_img_tag(figs[f"{name}_lift.png"], f"Lift per KPI, layer {name}"),
            table_html(_lift_rows(layer, kpis), caption="Lift per KPI")]))
        sections.append((f"Layer {name}: buckets", [
            figure_to_img_tag(figs[f"{name}_buckets.png"], f"KPIs per bucket, layer {name}"),
            _small_buckets(layer, settings["min_bucket_size"]),
            table_html(_bucket_rows(layer, kpis), caption="Per bucket with enough data (point estimates)")]))
    diag = report["diagnostics"]
    sections.append(("Data notes", [table_html([{"item": k.replace("_", " "), "value": v} for k, v in diag.items()])]))
    return page(title, sections)


def platform_view_sections(view: "PlatformView") -> list[tuple[str, list[str]]]:
    """Report sections for what the platform learned (per-bucket aggregates only)."""
    buckets = view.buckets.copy()
    buckets["suppressed"] = buckets["suppressed"].astype(bool)
    eps = sorted(set(view.epsilon))
    noise = "no noise" if not any(eps) else f"Laplace noise, epsilon {', '.join(map(str, eps))} per outcome"
    return [(f"Platform view, layer {view.layer}", [
        paragraph(f"Released by the lender through private intersection-sum ({noise}); suppressed "
                  "buckets carry no numbers. Exposed users and spend are the platform's own."),
        table_html(view.by_arm().reset_index(), caption="Per arm, over released buckets"),
        table_html(buckets, caption="Per bucket"),
    ])]
