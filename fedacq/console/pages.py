"""The console's HTML: one function per page, from the views of :mod:`fedacq.console.data`.

Everything that comes from disk (job ids, names, reasons, errors, metric names) is escaped
by :func:`esc` on its way into the page; only :class:`Html` (markup this module or
:mod:`fedacq.console.svg` built) goes in as is. The style sheet and the one script are
constants, so the server's Content-Security-Policy allows exactly them by hash
(:data:`STYLE_HASH`, :data:`SCRIPT_HASH`) and nothing else: no inline handlers, no other
origin. The script only polls ``/api/jobs`` and writes text into the job rows (never HTML).
Every page says plainly when there is nothing to show yet.
"""

from __future__ import annotations

import base64
import hashlib
import math
from html import escape
from typing import Any, Iterable
from urllib.parse import quote, urlencode

from fedacq.console import svg
from fedacq.console.data import utc
from fedacq.console.stability import THRESHOLDS


class Html(str):
    """Markup built here (already escaped where needed)."""


def esc(value: Any) -> Html:
    return value if isinstance(value, Html) else Html(escape("" if value is None else str(value), quote=True))


def _csp_hash(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


STYLE = """
body{font-family:sans-serif;margin:0;color:#222;background:#f7f7f7}
header{background:#243447;color:#fff;padding:10px 18px}
header h1{margin:0;font-size:18px}
header .who{font-size:12px;opacity:.8}
nav{background:#fff;border-bottom:1px solid #ddd;padding:6px 18px}
nav a{margin-right:14px;color:#243447;text-decoration:none}
nav a.active{font-weight:bold;border-bottom:2px solid #243447}
main{padding:14px 18px}
table{border-collapse:collapse;background:#fff;margin:8px 0 16px}
th,td{border:1px solid #ddd;padding:4px 8px;text-align:left;font-size:13px;vertical-align:top}
th{background:#eef1f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.empty{background:#fff;border:1px dashed #bbb;padding:14px;color:#555}
.error{background:#fdecea;border:1px solid #e0a8a2;padding:8px;color:#7a1c12;margin:6px 0}
.ok{color:#1b6e20;font-weight:bold}.bad{color:#a01b12;font-weight:bold}
.live{background:#e6f4ea;font-weight:bold}
.plots{display:flex;flex-wrap:wrap;gap:12px}
.plots svg{border:1px solid #ddd}
progress{width:140px}
.muted{color:#777;font-size:12px}
"""

SCRIPT = """
(function(){
  var rows=document.querySelectorAll('[data-job-id]');
  if(!rows.length){return;}
  function txt(el,v){if(el){el.textContent=v;}}
  function poll(){
    fetch('/api/jobs',{credentials:'same-origin',cache:'no-store'})
    .then(function(r){return r.json();}).then(function(d){
      var byId={};d.jobs.forEach(function(j){byId[j.id]=j;});
      rows.forEach(function(row){
        var j=byId[row.getAttribute('data-job-id')];if(!j){return;}
        txt(row.querySelector('[data-field=status]'),j.status);
        txt(row.querySelector('[data-field=step]'),j.progress?j.progress.step:'');
        var p=row.querySelector('progress');
        if(p&&j.progress&&j.progress.fraction!==null){p.value=j.progress.fraction;}
        var eta=j.progress&&j.progress.eta_seconds!==null?j.progress.eta_seconds+' s':'';
        txt(row.querySelector('[data-field=eta]'),eta);
      });
      document.body.setAttribute('data-polled',String(Date.now()));
    }).catch(function(){}).then(function(){setTimeout(poll,2000);});
  }
  poll();
})();
"""

STYLE_HASH = _csp_hash(STYLE)
SCRIPT_HASH = _csp_hash(SCRIPT)

NAV = (("/", "Overview"), ("/campaigns", "Campaigns"), ("/jobs", "Jobs"), ("/models", "Models"),
       ("/drift", "Score drift"), ("/boosts", "Boost tables"), ("/lift", "Lift"), ("/egress", "Egress ledger"))


def page(title: str, active: str, party: str, peer: str, body: Iterable[str]) -> str:
    current = ' class="active"'
    nav = "".join(f'<a href="{href}"{current if href == active else ""}>{esc(name)}</a>' for href, name in NAV)
    return ("<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><link rel=\"icon\" href=\"data:,\">"
            f"<title>{esc(title)} — fedacq {esc(party)}</title><style>{STYLE}</style></head><body>"
            f"<header><h1>fedacq console: {esc(party)}</h1>"
            f"<div class=\"who\">this node's own view (read-only) · peer: {esc(peer)}</div></header>"
            f"<nav>{nav}</nav><main><h2>{esc(title)}</h2>{''.join(body)}</main>"
            f"<script>{SCRIPT}</script></body></html>")


def empty(text: str) -> Html:
    return Html(f'<div class="empty">{esc(text)}</div>')


def errors(messages: Iterable[str]) -> Html:
    return Html("".join(f'<div class="error">{esc(m)}</div>' for m in messages))


def table(headers: list[str] | None, rows: Iterable[list[Any]], cls: str = "",
          row_attrs: Iterable[str] | None = None) -> Html:
    """A table of ``rows``; ``headers`` None for a key-value table (no header row)."""
    attrs = list(row_attrs) if row_attrs is not None else None
    head = "<thead><tr>" + "".join(f"<th>{esc(h)}</th>" for h in headers) + "</tr></thead>" if headers else ""
    body = []
    for i, row in enumerate(rows):
        cells = "".join(f'<td class="num">{esc(_num(c))}</td>' if _is_num(c) else f"<td>{esc(c)}</td>" for c in row)
        body.append(f"<tr{attrs[i] if attrs else ''}>{cells}</tr>")
    return Html(f'<table class="{esc(cls)}">{head}<tbody>{"".join(body)}</tbody></table>')


def link(href: str, text: Any) -> Html:
    return Html(f'<a href="{esc(href)}">{esc(text)}</a>')


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _num(v: float) -> str:
    if isinstance(v, int):
        return f"{v:,}"
    return "" if not math.isfinite(v) else f"{v:.4g}"


def human_bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def job_href(job_id: str) -> str:
    return "/jobs/" + quote(job_id, safe="")


def _progress_cells(job: dict[str, Any]) -> list[Any]:
    p = job.get("progress") or {}
    fraction = p.get("fraction")
    if fraction is not None:
        bar = Html(f'<progress max="1" value="{fraction:.4f}"></progress>')
    elif job["status"] in ("submitted", "running"):
        bar = Html('<progress max="1"></progress>')  # running, no measure of how far yet
    else:
        bar = Html("")
    eta = f"{p['eta_seconds']:g} s" if p.get("eta_seconds") is not None else ""
    return [Html(f'<span data-field="step">{esc(p.get("step", ""))}</span>'), bar,
            Html(f'<span data-field="eta">{esc(eta)}</span>')]


def _job_rows(jobs: list[dict[str, Any]]) -> Html:
    rows = [[link(job_href(j["id"]), j["id"]), j["protocol"],
             Html(f'<span data-field="status">{esc(j["status"])}</span>'), *_progress_cells(j),
             utc(j["submitted"]), utc(j.get("finished")), j.get("error") or ""] for j in jobs]
    return table(["job", "protocol", "status", "step", "progress", "ETA", "submitted", "finished", "error"], rows,
                 cls="jobs", row_attrs=[f' data-job-id="{esc(j["id"])}"' for j in jobs])


# -- pages ------------------------------------------------------------------------------------

def overview(ov: dict[str, Any]) -> list[str]:
    status = ", ".join(f"{k}: {v}" for k, v in sorted(ov["by_status"].items())) or "none"
    facts = table(None, [["party", ov["party"]], ["peer", ov["peer"]], ["jobs", f"{ov['jobs']} ({status})"],
                             ["model versions (evaluated here)", ov["model_versions"]],
                             ["boost table versions", ov["boost_tables"]],
                             ["live boost tables", ", ".join(f"{t['campaign']} {t['version']}" for t in ov["live"])
                              or "none"],
                             ["campaigns", len(ov["campaigns"])],
                             ["messages sent to the peer", ov["egress_messages"]],
                             ["bytes sent to the peer", human_bytes(ov["egress_bytes"])]], cls="overview")
    out = [facts, "<h3>Running jobs</h3>", _job_rows(ov["running"]) if ov["running"] else empty("No job is running.")]
    out.append("<h3>Campaigns</h3>")
    out.append(_campaign_table(ov["campaigns"]) if ov["campaigns"] else empty("No campaign yet."))
    if not ov["jobs"] and not ov["campaigns"]:
        out.insert(0, empty("Nothing yet: this node has run no job and no campaign."))
    return out


def jobs(items: list[dict[str, Any]]) -> list[str]:
    if not items:
        return [empty("No jobs yet. Submit one with `fedacq job submit JOB.toml`.")]
    return ['<p class="muted">Status and progress refresh every 2 s.</p>', _job_rows(items)]


def job(record: dict[str, Any], summary: dict[str, Any] | None, training: dict[str, Any],
        quality: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if summary is not None:
        out.append(_job_rows([summary]))
    if record.get("status") == "unreadable":
        return out + [errors([record.get("error", "")])]
    spec = record.get("spec") if isinstance(record.get("spec"), dict) else {}
    params = spec.get("params") if isinstance(spec.get("params"), dict) else {}
    datasets = spec.get("datasets") if isinstance(spec.get("datasets"), dict) else {}
    out.append("<h3>Job</h3>")
    out.append(table(None, [["protocol", spec.get("protocol", "")], ["initiator", spec.get("initiator", "")],
                                ["attempt", spec.get("attempt", 0)],
                                ["data sets", "; ".join(f"{p}: {', '.join(f'{k}={v}' for k, v in d.items())}"
                                                        for p, d in datasets.items() if isinstance(d, dict))],
                                ["started", utc(record.get("started"))], ["finished", utc(record.get("finished"))]]))
    if params:
        out.append("<details><summary>parameters</summary>")
        out.append(table(["parameter", "value"], [[k, _short(v)] for k, v in sorted(params.items())]))
        out.append("</details>")
    if spec.get("protocol") != "run":
        return out
    out.append("<h3>Training curves</h3>")
    if not training["curves"]:
        out.append(empty("No training history at this node (the lender evaluates; the platform holds no labels), "
                         "or the job has not finished."))
    else:
        out.append('<div class="plots">')
        for metric, splits in sorted(training["curves"].items()):
            series = [svg.Series(name=split, xs=[p[0] for p in pts], ys=[p[1] for p in pts],
                                 markers=len(pts) <= 30)
                      for split, pts in sorted(splits.items(), key=lambda kv: kv[0] != "train")]
            out.append(svg.line_chart(series, title=f"{metric} per round", x_label="round (tree / epoch)",
                                      y_label=metric, x_format=svg.whole))
        out.append("</div>")
    out.append("<h3>Model quality</h3>")
    out += _quality(quality)
    return out


def _short(v: Any) -> str:
    text = str(v)
    return text if len(text) <= 200 else text[:200] + "…"


def _quality(q: dict[str, Any]) -> list[str]:
    if q["kind"] == "binary":
        out = []
        splits = q["splits"]
        good = {n: s for n, s in splits.items() if "error" not in s}
        out.append(errors(s["error"] for s in splits.values() if "error" in s))
        if not good:
            return out
        out.append(table(["split", "rows", "positives", "AUC", "KS", "KS at decile cuts"],
                         [[n, s["rows"], s["positives"], s["auc"], s["ks"], s["ks_at_cuts"]] for n, s in good.items()]))
        out.append('<div class="plots">')
        out.append(svg.line_chart([svg.Series(n, s["fpr"], s["tpr"], markers=True) for n, s in good.items()],
                                  title="ROC (at decile cuts)", x_label="false positive rate",
                                  y_label="true positive rate", diagonal=True, x_range=(0, 1), y_range=(0, 1)))
        main = good.get("validation") or good["train"]
        out.append(svg.line_chart([svg.Series("positives (TPR)", main["share"], main["tpr"], markers=True),
                                   svg.Series("negatives (FPR)", main["share"], main["fpr"], markers=True)],
                                  title=f"KS: {main['ks']:.3f} ({'validation' if 'validation' in good else 'train'})"
                                  if isinstance(main["ks"], (int, float)) else "KS",
                                  x_label="share of rows, best scores first", y_label="cumulative share",
                                  x_range=(0, 1), y_range=(0, 1)))
        out.append(svg.line_chart([svg.Series(n, s["share"], s["tpr"], markers=True) for n, s in good.items()],
                                  title="Gains", x_label="share of rows, best scores first",
                                  y_label="share of positives captured", diagonal=True, x_range=(0, 1),
                                  y_range=(0, 1)))
        out.append("</div>")
        return out
    if q["kind"] == "regression":
        out = ['<div class="plots">']
        series = [svg.Series(n, [d["mean_prediction"] for d in s["deciles"]], [d["mean_actual"] for d in s["deciles"]],
                             markers=True) for n, s in q["splits"].items()]
        out.append(svg.line_chart(series, title="Predicted vs actual (mean per decile)", x_label="mean predicted",
                                  y_label="mean actual", diagonal=True))
        for n, s in q["splits"].items():
            cats = [str(d["decile"]) for d in s["deciles"]]
            out.append(svg.bar_chart(cats, {"actual": [d["mean_actual"] for d in s["deciles"]],
                                            "predicted": [d["mean_prediction"] for d in s["deciles"]]},
                                     title=f"Value by decile ({n})", x_label="decile of the prediction (1 = highest)",
                                     y_label="mean value"))
        out.append("</div>")
        return out
    if q["kind"] == "multiclass":
        return [empty("A multi-class model: its confusion matrix is in the job's result and MLflow run.")]
    return [empty("No evaluation at this node for this job.")]


def models(versions: list[dict[str, Any]]) -> list[str]:
    if not versions:
        return [empty("No model versions yet: a model version is a succeeded `run` job this node evaluated "
                      "(the lender's node).")]
    names = sorted({k for v in versions for k in v["metrics"]})
    rows = [[link(job_href(v["id"]), v["id"]), utc(v["finished"]), v["objective"], v["evaluated_on"],
             v["intersection_size"], *[v["metrics"].get(n, "") for n in names]] for v in versions]
    out = [table(["version (job)", "finished", "objective", "split", "intersection", *names], rows, cls="models")]
    plotted = [n for n in ("auc", "ks", "rmse") if n in names]
    if plotted:
        xs = list(range(1, len(versions) + 1))
        out.append('<div class="plots">')
        out.append(svg.line_chart([svg.Series(n, [x for x, v in zip(xs, versions) if n in v["metrics"]],
                                              [v["metrics"][n] for v in versions if n in v["metrics"]], markers=True,
                                              labels=[v["id"] for v in versions if n in v["metrics"]])
                                   for n in plotted],
                                  title="Quality per model version", x_label="model version (oldest = 1)",
                                  y_label="metric", x_range=(0.5, len(versions) + 0.5), x_format=svg.whole))
        out.append("</div>")
    return out


def drift(d: dict[str, Any]) -> list[str]:
    sets = d["sets"]
    if len(sets) < 2:
        return [empty("Score drift needs two score distributions (boost table versions, or campaign cycles "
                      f"with scores); this node has {len(sets)}.")]
    options = []
    for name, chosen in (("a", d.get("reference")), ("b", d.get("other"))):
        opts = "".join(f'<option value="{esc(s["id"])}"{" selected" if s["id"] == chosen else ""}>{esc(s["label"])}'
                       "</option>" for s in sets)
        options.append(f'<label>{"reference" if name == "a" else "compared"} <select name="{name}">{opts}</select>'
                       "</label> ")
    out = [f'<form method="get" action="/drift">{"".join(options)}<button type="submit">compare</button></form>']
    if "error" in d:
        return out + [errors([d["error"]])]
    bounds = ", ".join(f"< {b}: {n}" for b, n in THRESHOLDS)
    out.append(table(["reference", "compared", "PSI", "reading", "rows"],
                     [[d["reference_label"], d["other_label"], d["psi"], d["verdict"],
                       f"{d['rows'][0]:,} / {d['rows'][1]:,}"]], cls="psi"))
    out.append(f'<p class="muted">PSI = Σ (a−e)·ln(a/e) over the reference\'s score deciles ({esc(bounds)}; '
               "above: significant shift).</p>")
    cuts = d["cuts"]
    cats = [f"≤{svg.fmt(c)}" for c in cuts] + [f">{svg.fmt(cuts[-1])}"] if cuts else ["all"]
    out.append('<div class="plots">')
    out.append(svg.bar_chart(cats, {"reference": [100 * s for s in d["reference_shares"]],
                                    "compared": [100 * s for s in d["other_shares"]]},
                             title=f"Score histogram (PSI {d['psi']:.4f})", x_label="score group (reference deciles)",
                             y_label="% of rows"))
    out.append("</div>")
    return out


def boosts(bt: dict[str, Any]) -> list[str]:
    if not bt["configured"]:
        return [empty("No boost table root configured for this node ([console] boost_tables in party.toml: "
                      "the platform's `fedacq boost-serve --tables` folder).")]
    out = [errors(bt["errors"])]
    if not bt["tables"]:
        return out + [empty(f"No boost table versions yet under {bt['root']}.")]
    rows = [[t["campaign"], t["version"], "LIVE" if t.get("live") else "", t["model_version"], t["created_at"],
             t["expires_at"] + (" (expired)" if t["expired"] else ""), t["rows"], t["layer"], t["tiers"],
             t["live_by"]] for t in bt["tables"]]
    out.append(table(["campaign", "version", "live", "model version", "created", "expires", "users", "layer",
                      "tier boosts", "why live"], rows, cls="boosts",
                     row_attrs=[' class="live"' if t.get("live") else "" for t in bt["tables"]]))
    return out


def lift(lf: dict[str, Any]) -> list[str]:
    out = [errors(lf["errors"])]
    if not lf["series"]:
        return out + [empty("No measurements yet: lift appears after a `measure` job at the lender's node, or a "
                            "campaign cycle that measured.")]
    conf = lf.get("confidence")
    out.append(f'<p class="muted">Relative lift of treatment over control (T/C − 1), with '
               f'{esc(f"{conf:.0%}" if isinstance(conf, (int, float)) else "")} intervals.</p>')
    out.append('<div class="plots">')
    for s in lf["series"]:
        curves, x_label, x_range, x_format = lift_curves(s)
        out.append(svg.line_chart(curves, title=f"{s['label']} — {s['source']} {s['scope']}",
                                  x_label=x_label, y_label="relative lift, %", zero_line=True,
                                  x_range=x_range, x_format=x_format))
    out.append("</div>")
    rows = [[s["source"], s["scope"], s["label"], utc(p["time"]), _window(p), p.get("version") or "",
             100 * p["value"], 100 * p["ci_low"], 100 * p["ci_high"],
             link(job_href(p["job"]), p["job"]) if p.get("job") else ""]
            for s in lf["series"] for p in s["points"]]
    out.append(table(["source", "layer / campaign", "KPI", "time", "days measured", "version", "lift %", "low %",
                      "high %", "job"], rows, cls="lift"))
    return out


def _window(p: dict[str, Any]) -> str:
    """The days a measurement covers and the day it was taken, when a campaign recorded them."""
    if p.get("first_day") is None or p.get("last_day") is None:
        return ""
    return f"{p['first_day']}..{p['last_day']} (taken day {p['sim_day']})"


def lift_curves(s: dict[str, Any]) -> tuple[list[svg.Series], str, tuple[float, float] | None, Any]:
    """One lift series as curves: each measurement at the day it was taken (its interval as an
    error bar), one curve per model version that was live (a campaign's), else one curve.
    Returns (curves, x label, x range, x tick format)."""
    pts = s["points"]
    xs, x_label, x_range, x_format = _time_axis(pts)
    groups: dict[str, list[int]] = {}
    for i, p in enumerate(pts):
        name = (p["version"] or "(no version)") if "version" in p else s["label"]
        groups.setdefault(name, []).append(i)
    curves = []
    for name, idx in groups.items():
        mine = [pts[i] for i in idx]
        labels = [f"{_when(p)}: {100 * p['value']:.1f}% [{100 * p['ci_low']:.1f}%, {100 * p['ci_high']:.1f}%]"
                  for p in mine]
        curves.append(svg.Series(name, [xs[i] for i in idx], [100 * p["value"] for p in mine],
                                 lows=[100 * p["ci_low"] for p in mine], highs=[100 * p["ci_high"] for p in mine],
                                 markers=True, labels=labels))
    return curves, x_label, x_range, x_format


def _when(p: dict[str, Any]) -> str:
    window = _window(p)
    return f"days {window}" if window else utc(p["time"])


def _time_axis(pts: list[dict[str, Any]]) -> tuple[list[float], str, tuple[float, float] | None, Any]:
    """Where measurements go on the x axis: the simulated day each was taken when a campaign
    recorded it, else days since the first measurement, else (no usable times) their order."""
    days = [p.get("sim_day") for p in pts]
    if all(isinstance(d, int) for d in days):
        return [float(d) for d in days], "simulated day", None, svg.fmt
    times = [p.get("time") for p in pts]
    if all(_is_num(t) for t in times) and len(set(times)) == len(times):
        # the unit follows the span: measurements minutes apart (a simulated campaign's) in minutes, not 0.0005 days
        span = max(times) - times[0]
        seconds, unit = next((u for u in ((86400, "days"), (3600, "hours"), (60, "minutes")) if span >= 2 * u[0]),
                             (60, "minutes"))
        return [(t - times[0]) / seconds for t in times], f"{unit} since {utc(times[0])}", None, svg.fmt
    return list(range(1, len(pts) + 1)), "measurement (oldest = 1)", (0.5, len(pts) + 0.5), svg.whole


def egress(out_ledger: dict[str, Any], in_ledger: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for title, led, what in (("Sent (egress: what left the premises)", out_ledger, "sent"),
                             ("Received (ingress)", in_ledger, "received")):
        out.append(f"<h3>{esc(title)}</h3>")
        if not led["present"] or not led["messages"]:
            out.append(empty(f"No message {what} yet."))
            out.append(errors(led.get("errors", [])))
            continue
        out.append(f'<p class="muted">{led["messages"]:,} messages, {esc(human_bytes(led["bytes"]))}, '
                   f'{esc(utc(led["first"]))} to {esc(utc(led["last"]))}. Shapes and sizes only, never content.</p>')
        out.append(errors(led["errors"]))
        out.append(table(["message type", "peer", "count", "bytes", "size"],
                         [[r["type"], r["peer"], r["count"], r["bytes"], human_bytes(r["bytes"])]
                          for r in led["by_type"]], cls=f"ledger-{what}"))
        if what == "sent":
            top = led["by_type"][:12]
            out.append('<div class="plots">')
            out.append(svg.bar_chart([r["type"].split(".")[-1] for r in top], {"bytes sent": [r["bytes"] for r in top]},
                                     title="Bytes sent per message type (largest 12)", x_label="message type",
                                     y_label="bytes", y_format=lambda v: human_bytes(int(v))))
            out.append("</div>")
            out.append(table(["job", "messages", "bytes"],
                             [[link(job_href(r["job"].split("#")[0]), r["job"]), r["count"], r["bytes"]]
                              for r in led["by_job"]]))
    return out


def _campaign_table(items: list[dict[str, Any]]) -> Html:
    rows = [[link("/campaigns/" + quote(c["name"], safe=""), c["name"]), c["status"], c["live_version"] or "",
             c["cycles"], c["outcomes"]["published"], c["outcomes"]["refused"], c["outcomes"]["rolled_back"],
             c["outcomes"]["failed"], utc(c["updated"])] for c in items]
    return table(["campaign", "status", "live version", "cycles", "published", "refused", "rolled back", "failed",
                  "updated"], rows, cls="campaigns")


def campaigns(cs: dict[str, Any]) -> list[str]:
    out = [errors(cs["errors"])]
    if not cs["campaigns"]:
        return out + [empty(f"No campaign yet (campaign state is read from {cs['dir']}).")]
    return out + [_campaign_table(cs["campaigns"])]


def campaign(c: dict[str, Any], lift_series: list[dict[str, Any]]) -> list[str]:
    if "error" in c:
        return [errors([c["error"]])]
    status = c["status"] + (f" (set by the {c['status_by']})" if c.get("status_by") else "")
    out = [table(None, [["status", status], ["live model version", c["live_version"] or "none"],
                            ["live boost table", c["live_table"] or "none"], ["started", utc(c["created"])],
                            ["updated", utc(c["updated"])], ["description", c["description"]]])]
    if c["settings"]:
        out.append(table(["setting", "value"], [[k, v] for k, v in sorted(c["settings"].items())]))
    cycles = c["cycles"]
    out.append("<h3>Cycles</h3>")
    if not cycles:
        return out + [empty("No cycle yet.")]
    rows, attrs = [], []
    for cy in cycles:
        if "error" in cy:
            rows.append([cy["cycle"], "", "", "unreadable", cy["error"], "", ""])
            attrs.append(' class="unreadable"')
            continue
        gates = Html("<br>".join(
            f'<span class="{"ok" if g["passed"] else "bad"}">{"✓" if g["passed"] else "✗"}</span> '
            f'{esc(g["name"])} {esc(svg.fmt(g["value"]) if g["value"] is not None else "n/a")} {esc(g["op"])} '
            f'{esc(svg.fmt(g["threshold"]))}' for g in cy["gates"]))
        outcome = Html(f'<span class="{"bad" if cy["outcome"] in ("refused", "rolled_back", "failed") else "ok"}">'
                       f'{esc(cy["outcome"].replace("_", " "))}</span>')
        model = link(job_href(cy["model_job"]), cy["version"] or cy["model_job"]) if cy["model_job"] else \
            (cy["version"] or "")
        m = cy["measurement"]
        lift_cell = (f"{m['kpi']}: {100 * m['relative']['value']:.1f}% "
                     f"[{100 * m['relative']['ci_low']:.1f}%, {100 * m['relative']['ci_high']:.1f}%]") if m else ""
        day = f" (day {cy['sim_day']})" if cy["sim_day"] is not None else ""
        rows.append([cy["cycle"], utc(cy["started"]) + day, model, outcome, _reason(cy), gates, lift_cell])
        attrs.append(f' class="outcome-{esc(cy["outcome"])}"')
    out.append(table(["cycle", "started", "model version", "outcome", "reason", "gates", "lift"], rows,
                     cls="cycles", row_attrs=attrs))
    mine = [s for s in lift_series if s["source"] == "campaign" and s["scope"] == c["name"]]
    if mine:
        out.append("<h3>Lift while each version was live</h3>")
        out += lift({"series": mine, "errors": [], "confidence": None})[1:]
    scored = [cy for cy in cycles if cy.get("scores_path") is not None]
    if len(scored) >= 2:
        a, b = scored[-2], scored[-1]
        q = urlencode({"a": f"cycle:{c['name']}/{a['cycle']}", "b": f"cycle:{c['name']}/{b['cycle']}"})
        out.append(f'<p>{link("/drift?" + q, "Score drift between the last two scored cycles")}</p>')
    return out


def _reason(cy: dict[str, Any]) -> str:
    """The cycle's reason, and the publications that failed before its outcome (each retried)."""
    earlier = cy["attempts"][:-1] if cy["outcome"] == "failed" else cy["attempts"]  # the last: the reason
    failed = [f"publication attempt {i} failed: {a['reason'] or 'no reason recorded'}"
              for i, a in enumerate(earlier, start=1) if a["outcome"] == "failed"]
    return "; ".join(x for x in [cy["reason"] or "", *failed] if x)


def login(failed: bool) -> list[str]:
    out = [errors(["That token is not this console's."])] if failed else []
    return out + ['<form method="post" action="/login"><label>Console token '
                  '<input type="password" name="token" autocomplete="current-password"></label> '
                  '<button type="submit">open</button></form>']


def message(text: str) -> list[str]:
    return [empty(text)]
