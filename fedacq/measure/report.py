"""The lender's measurement report: KPIs per arm and per bucket, and lift, as one JSON-able dict.

:func:`measure` is the whole analysis: join the platform's click events with
the lender's funnel (:func:`fedacq.measure.kpis.exposed_outcomes`), then for
every experiment layer estimate each KPI per arm and per bucket and the lift of
treatment over control (:mod:`fedacq.measure.lift`). A bucket or arm with fewer
than ``min_bucket_size`` exposed users is reported only as "not enough data",
with no counts at all: small cohorts are where a number identifies people, and
where an estimate is noise.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from fedacq.activate.events import ARMS
from fedacq.measure.kpis import KPIS, Estimate, NotEnoughData, estimate_kpi, exposed_outcomes, validate_spend
from fedacq.measure.lift import interval_dict, is_reported, lift, not_enough, z_value

METHOD = ("delta method: per-user linearisation of each ratio KPI; absolute lift with a normal "
          "interval, relative lift with a log-ratio interval; spend KPIs conditional on spend")


def _group_kpis(users: pd.DataFrame, spend: float | None, min_events: int,
                z: float) -> tuple[dict[str, Any], dict[str, Estimate | None], dict[str, str]]:
    """KPI results for one group, and the raw estimates (None where not enough data)."""
    results: dict[str, Any] = {}
    estimates: dict[str, Estimate | None] = {}
    reasons: dict[str, str] = {}
    for kpi in KPIS:
        try:
            est = estimate_kpi(kpi, users, spend, min_events)
        except NotEnoughData as exc:
            results[kpi.name] = not_enough(str(exc))
            estimates[kpi.name] = None
            reasons[kpi.name] = str(exc)
        else:
            results[kpi.name] = interval_dict(est, z)
            estimates[kpi.name] = est
    return results, estimates, reasons


def _counts(users: pd.DataFrame) -> dict[str, int]:
    return {"exposed_users": int(len(users)), "applications": int(users["applied"].sum()),
            "credit_users": int(users["credit_granted"].sum())}


def _spend_totals(spend: pd.DataFrame | None) -> dict[str, float] | None:
    if spend is None:
        return None
    return {"impressions": int(spend["impressions"].sum()), "clicks": int(spend["clicks"].sum()),
            "spend": float(spend["spend"].sum())}


def _layer_spend(spend: pd.DataFrame | None, layer: str, n_layers: int) -> pd.DataFrame | None:
    if spend is None:
        return None
    if "layer" in spend.columns:
        return spend[spend["layer"] == layer]
    if n_layers > 1:
        raise ValueError("spend: events span several layers, so the spend table needs a 'layer' column")
    return spend


def measure_layer(users: pd.DataFrame, spend: pd.DataFrame | None, min_bucket_size: int,
                  min_events: int, z: float) -> dict[str, Any]:
    """Arms, lift and buckets of one experiment layer."""
    if spend is not None:
        seen = users.drop_duplicates("bucket").set_index("bucket")["arm"]
        both = spend[spend["bucket"].isin(seen.index)]
        clash = both[both["arm"].to_numpy() != seen.loc[both["bucket"]].to_numpy()]
        if len(clash):
            raise ValueError(f"spend: bucket {int(clash['bucket'].iloc[0])} is in arm "
                             f"{clash['arm'].iloc[0]!r} but the events put it in the other arm")
        # A bucket without spend would silently make its arm look cheaper.
        unpaid = sorted(set(seen.index.astype(int)) - set(spend["bucket"].astype(int)))
        if unpaid:
            raise ValueError(f"spend: no row for bucket(s) {unpaid[:5]}, which have exposed users")
    arms: dict[str, Any] = {}
    arm_estimates: dict[str, dict[str, Estimate | None]] = {}
    arm_reasons: dict[str, dict[str, str]] = {}
    for arm in ARMS:
        group = users[users["arm"] == arm]
        arm_spend = None if spend is None else spend[spend["arm"] == arm]
        if len(group) < min_bucket_size:
            arms[arm] = not_enough(f"fewer than {min_bucket_size} exposed users")
            arm_estimates[arm] = {k.name: None for k in KPIS}
            arm_reasons[arm] = {k.name: f"the {arm} arm has fewer than {min_bucket_size} exposed users"
                                for k in KPIS}
            continue
        total = None if arm_spend is None else float(arm_spend["spend"].sum())
        kpis, arm_estimates[arm], arm_reasons[arm] = _group_kpis(group, total, min_events, z)
        arms[arm] = {**_counts(group), "spend": _spend_totals(arm_spend), "kpis": kpis}
    lifts = {}
    for kpi in KPIS:
        t, c = arm_estimates["treatment"][kpi.name], arm_estimates["control"][kpi.name]
        reason = arm_reasons["treatment"].get(kpi.name) or arm_reasons["control"].get(kpi.name, "")
        lifts[kpi.name] = lift(t, c, z, reason)
    buckets = []
    spend_by_bucket = {} if spend is None else {int(b): g for b, g in spend.groupby("bucket")}
    users_by_bucket = {int(b): g for b, g in users.groupby("bucket")}
    empty = users.iloc[:0]
    for bucket in sorted(set(users_by_bucket) | set(spend_by_bucket)):
        group = users_by_bucket.get(bucket, empty)
        b_spend = spend_by_bucket.get(bucket)
        arm = str(group["arm"].iloc[0]) if len(group) else str(b_spend["arm"].iloc[0])
        if len(group) < min_bucket_size:
            buckets.append({"bucket": bucket, "arm": arm,
                            **not_enough(f"fewer than {min_bucket_size} exposed users")})
            continue
        total = None if b_spend is None else float(b_spend["spend"].sum())
        kpis, _, _ = _group_kpis(group, total, min_events, z)
        buckets.append({"bucket": bucket, "arm": arm, **_counts(group),
                        "spend": _spend_totals(b_spend), "kpis": kpis})
    return {"arms": arms, "lift": lifts, "buckets": buckets}


def compare_arms(report: dict[str, Any], layer: str, other: dict[str, Any], other_layer: str,
                 arm: str = "treatment") -> dict[str, Any]:
    """Lift of ``arm`` of one measured layer over the same arm of another, per KPI, with intervals.

    Two campaigns' arms are independent random samples of users (each layer has its own
    salt), so the arms' estimates combine like treatment and control (:func:`lift`). At equal
    budget per user this compares two targetings head to head; comparing the two *control*
    arms (both unboosted) is a placebo whose interval should contain zero. The interval is
    built from the reports' own estimates and standard errors; a KPI either report could not
    estimate is "not enough data".
    """
    z = z_value(report["settings"]["confidence"])
    if other["settings"]["confidence"] != report["settings"]["confidence"]:
        raise ValueError("compare_arms: the two reports use different confidence levels")
    groups = []
    for rep, name in ((report, layer), (other, other_layer)):
        if name not in rep["layers"]:
            raise ValueError(f"compare_arms: no layer {name!r} in the report (layers: {sorted(rep['layers'])})")
        groups.append(rep["layers"][name]["arms"][arm])
    out = {}
    for kpi in KPIS:
        found = [g.get("kpis", {}).get(kpi.name, {}) for g in groups]
        estimates = [Estimate(r["value"], r["se"]) if is_reported(r) else None for r in found]
        out[kpi.name] = lift(estimates[0], estimates[1], z, f"the {arm} arm of a layer has not enough data")
    return out


def measure(funnel: pd.DataFrame, events: pd.DataFrame, spend: pd.DataFrame | None = None, *,
            min_bucket_size: int = 100, min_events: int = 10, confidence: float = 0.95) -> dict[str, Any]:
    """The full report dict: settings, KPI definitions, per-layer arms/lift/buckets, diagnostics."""
    if min_bucket_size < 2 or min_events < 2:
        raise ValueError("min_bucket_size and min_events must be at least 2")
    z = z_value(confidence)
    exposure = exposed_outcomes(funnel, events)
    spend = None if spend is None else validate_spend(spend)
    users = exposure.users
    layers = sorted(users["layer"].unique())
    if not layers:
        raise ValueError("events: no click events, nothing to measure")
    return {
        "settings": {"min_bucket_size": min_bucket_size, "min_events": min_events,
                     "confidence": confidence, "method": METHOD},
        "kpis": {k.name: {"label": k.label, "definition": k.definition, "numerator": k.numerator,
                          "denominator": k.denominator, "unit": k.unit, "is_rate": k.is_rate}
                 for k in KPIS},
        "layers": {layer: measure_layer(users[users["layer"] == layer],
                                        _layer_spend(spend, layer, len(layers)),
                                        min_bucket_size, min_events, z)
                   for layer in layers},
        "diagnostics": {"conflicting_users_excluded": exposure.conflicting_users,
                        "funnel_users_not_exposed": exposure.funnel_users_not_exposed},
    }
