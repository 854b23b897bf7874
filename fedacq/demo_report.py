"""The one-page HTML report of ``fedacq demo``.

It answers, in order, what a lender and a platform would ask of the run: did the
boost pay (headline lifts against control, for conversion targeting, value
targeting and a label-free baseline), did targeting value beat targeting
conversion (head to head, with a placebo), what did each party learn from the
other, how good are the models, and what did the platform see of the lender's outcomes. Built from
the reusable pieces of :mod:`fedacq.measure.html`, with the figures the parties' jobs drew.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from pathlib import Path
from typing import Any

from fedacq.measure.html import page, paragraph, table_html

#: what each party learns in the demo's pipeline, step by step (the protocol modules say why).
LEARNED = [
    {"step": "PSI (ECDH, X25519)",
     "lender learns": "the intersection size and which of its customers are platform users",
     "platform learns": "the intersection size and which of its users are in it",
     "neither learns": "the other side's identifiers outside the intersection"},
    {"step": "prospect SecureBoost",
     "lender learns": "per split candidate only (party, feature index, bin index) and the "
                      "decrypted gradient sums per bin of the platform's histograms",
     "platform learns": "Paillier ciphertexts of gradients, which of its (feature, bin) won, the row "
                        "assignment to nodes, and at the end the released leaf values",
     "neither learns": "labels or gradients in plaintext (platform); platform feature values or "
                       "thresholds (lender)"},
    {"step": "value stages (prospect SecureBoost, one job per stage)",
     "lender learns": "as for the prospect model, per stage",
     "platform learns": "as for the prospect model, per stage, and the stage's label column name and objective; "
                        "a conditional stage (E[drawdown | credit]) runs on the same intersection with zero "
                        "gradients outside the stage, so every row still carries a ciphertext",
     "neither learns": "which customers are in a conditional stage (platform)"},
    {"step": "score, boost, buckets",
     "lender learns": "nothing (runs at the platform)",
     "platform learns": "its own users' scores, tiers and buckets",
     "neither learns": "-"},
    {"step": "campaign events",
     "lender learns": "click and conversion events of users who clicked its ad, with bucket and arm",
     "platform learns": "its own auctions, impressions and clicks",
     "neither learns": "per-user spend (the platform sends spend per bucket only)"},
    {"step": "measurement",
     "lender learns": "its own funnel per bucket and arm; the platform's per-bucket spend",
     "platform learns": "per bucket only: Laplace-noised sums of credit granted and drawdown over its "
                        "users in the lender's funnel, buckets under the minimum cohort suppressed; from its "
                        "own side of the matching, how many of its users per bucket matched",
     "neither learns": "any per-user lender outcome (platform)"},
]


def png_img_tag(path: str | Path, alt: str) -> str:
    """A PNG file inlined as an ``<img>`` tag, so the report stays one self-contained file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _interval(lift: dict[str, Any] | None, kind: str) -> tuple[str, bool | None]:
    """Text of one lift with its interval, and whether the interval excludes zero."""
    part = (lift or {}).get(kind)
    if not isinstance(part, dict) or "value" not in part:
        return "not enough data", None
    low, high = part["ci_low"], part["ci_high"]
    fmt = "{:+.1%}" if kind == "relative" else "{:+,.2f}"
    text = f"{fmt.format(part['value'])} [{fmt.format(low)}, {fmt.format(high)}]"
    return text, bool(low > 0 or high < 0)


def _headline_rows(results: dict[str, Any], column: str) -> list[dict[str, Any]]:
    """One row per (result, headline KPI): the lift with its intervals."""
    rows = []
    for res in results.values():
        for kpi, lift in res["headline"].items():
            rel, excludes = _interval(lift, "relative")
            absolute, _ = _interval(lift, "absolute")
            rows.append({column: res["label"], "KPI": kpi.replace("_", " "),
                         "relative lift [95% CI]": rel, "absolute lift [95% CI]": absolute,
                         "interval excludes 0": "n/a" if excludes is None else ("yes" if excludes else "no")})
    return rows


def _model_rows(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """Each trained model's evaluation by the lender: the conversion model, then each value stage."""
    models = {"conversion (high_value, binary:logistic)": summary["model"]}
    for name, stage in summary.get("value", {}).get("stages", {}).items():
        given = f" | {stage['given']}" if stage["given"] else ""
        models[f"value stage {name} ({stage['label_column']}{given}, {stage['objective']})"] = stage
    return [{"model": label, "set": name, **model[name]} for label, model in models.items()
            for name in ("train", "validation") if model.get(name)]


def _egress_rows(out_dir: Path) -> list[dict[str, Any]]:
    """What each party's egress ledgers say it sent: message types, counts and bytes."""
    rows = []
    for ledger in sorted(out_dir.rglob("egress*.jsonl")):
        types: Counter[str] = Counter()
        nbytes: Counter[str] = Counter()
        for line in ledger.read_text(encoding="utf-8").splitlines():
            if line.strip():
                entry = json.loads(line)
                types[entry["type"]] += 1
                nbytes[entry["type"]] += entry["bytes"]
        party = json.loads(ledger.read_text(encoding="utf-8").splitlines()[0])["party"] if types else "?"
        for msg_type in sorted(types):
            rows.append({"ledger": str(ledger.relative_to(out_dir)), "party": party, "message type": msg_type,
                         "messages": types[msg_type], "bytes": nbytes[msg_type]})
    return rows


def demo_report_html(summary: dict[str, Any], metrics: dict[str, Any], arms: dict[str, Any]) -> str:
    """The page; ``arms[name]`` holds ``label``, ``layer``, ``campaign`` (the simulator's result)
    and ``measured`` (:class:`fedacq.pipeline.Measured`)."""
    out_dir = Path(summary["settings"]["out_dir"])
    model = summary["model"]
    sections: list[tuple[str, list[str]]] = [("Did the boost pay?", [
        paragraph("Treatment users were served the boost of their tier; control users were served 1.0, at equal "
                  "budget per user. Lift is treatment over control, measured by the lender on its own funnel "
                  "(delta-method 95% intervals). Lower cost per credit user, higher drawdown per credit user and "
                  "a lower loan fee rate (spend over drawdown) are better. Conversion targeting boosts by the "
                  "probability of a high-value conversion; value targeting by the expected value of the lender's "
                  "staged models; the baseline by platform activity alone, with no lender input."),
        table_html(_headline_rows(summary["results"], "targeting"), caption="Headline KPIs"),
    ])]
    if summary.get("comparisons"):
        value = summary["value"]
        sections.append(("Value or conversion targeting?", [
            paragraph(f"Value: {value['description']}. Each targeting ran its own campaign with its own random "
                      "split of users and the same budget per user, so their treatment arms compare head to head "
                      "(relative difference of the KPI, 95% interval from both arms' standard errors). The control "
                      "arms were served no boost in either campaign: their comparison is a placebo whose interval "
                      "should contain 0."),
            table_html(_headline_rows(summary["comparisons"], "comparison"),
                       caption="Value targeting over conversion targeting"),
        ]))
    sections.append(("What each party learned", [
        table_html(LEARNED, caption="Per step (see each protocol module's docstring for the exact messages)"),
        table_html(_egress_rows(out_dir), caption="Everything each party sent, from its egress ledgers "
                                                  "(types, counts, bytes; the ledgers never hold payloads)"),
    ]))
    quality = [table_html(_model_rows(summary),
                          caption=f"Prospect models on the intersection ({model['intersection_size']:,} users; "
                                  f"{summary['settings']['key_bits']}-bit Paillier); the lender's evaluation")]
    quality += [png_img_tag(p, Path(p).stem) for p in metrics["files"]["plots"]]
    sections.append(("Model quality", quality))  # the plots are the conversion model's
    for arm in arms.values():
        # the figures the lender's measure job drew for its report
        figs = {Path(f).name: f for f in arm["measured"].results["lender"]["figures"]}
        layer = arm["layer"]
        view = arm["measured"].platform_view
        sections.append((f"{arm['label']}: lift per KPI", [
            png_img_tag(figs[f"{layer}_lift.png"], f"lift per KPI, {layer}"),
            png_img_tag(figs[f"{layer}_kpi_by_arm.png"], f"KPIs per arm, {layer}"),
            table_html(view.by_arm().reset_index(),
                       caption="What the platform learned: per-arm totals of the released (noised) "
                               "per-bucket aggregates; suppressed buckets carry no numbers"),
            table_html(arm["campaign"].summary.reset_index(),
                       caption="Simulator ground truth per arm (no party sees this)"),
        ]))
    sections.append(("Timings (seconds)", [table_html([{"step": k, "seconds": v}
                                                        for k, v in summary["timings"].items()])]))
    return page("fedacq demo: jointly built prospect models, boosts and measured lift", sections)
