"""Quality gates a model version must pass before its boost table is published, and the rollback rule.

Each gate is checked at the node that holds what it measures:

* ``min_intersection`` — both (each learns the intersection size of the PSI job);
* ``min_validation_<metric>`` — the lender (its evaluation of the run job on held-out rows);
* ``max_score_psi`` — the platform: the population stability index
  (:func:`fedacq.console.stability.population_stability_index`) of the new version's scores
  against the live version's, both on the platform's users of today. A large shift means the new
  model would move the platform's bids a lot at once; the platform refuses to publish it,
  whatever the lender says, since its own bidding pays for a bad table the same day.

A gate is the console's dict: ``name``, ``value`` (None: not measured), ``op``, ``threshold``, ``passed``.

Rollback: a live version's measured lift of the campaign's KPI is *significantly bad* when its
whole interval lies on the bad side of zero (``ci_low > 0`` for a KPI where lower is better, e.g.
cost per credit user; ``ci_high < 0`` where higher is better).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedacq.console.stability import population_stability_index


def gate(name: str, value: float | None, op: str, threshold: float) -> dict[str, Any]:
    """One gate's record; a value that was not measured (None, NaN) fails."""
    if op not in (">=", "<="):
        raise ValueError(f"gate {name}: op must be '>=' or '<=', got {op!r}")
    measured = value is not None and math.isfinite(value)
    passed = measured and (value >= threshold if op == ">=" else value <= threshold)
    return {"name": name, "value": float(value) if measured else None, "op": op, "threshold": float(threshold),
            "passed": bool(passed)}


def intersection_gate(size: int, minimum: int) -> dict[str, Any]:
    return gate("min_intersection", float(size), ">=", minimum)


def validation_gate(metrics: dict[str, Any], metric: str, minimum: float) -> dict[str, Any]:
    """The lender's validation ``metric`` of a run job's metrics (:func:`fedacq.pipeline.train`)."""
    value = (metrics.get("validation") or {}).get(metric)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return gate(f"min_validation_{metric}", float(value) if ok else None, ">=", minimum)


def score_psi_gate(new: np.ndarray, live: np.ndarray | None, maximum: float) -> dict[str, Any]:
    """PSI of ``new`` against ``live`` (the same users, scored by each version); with no live
    version yet there is nothing to shift from, so the gate passes at 0."""
    value = 0.0 if live is None else population_stability_index(live, new)
    return gate("max_score_psi", value, "<=", maximum)


def passed(gates: list[dict[str, Any]]) -> bool:
    return all(g["passed"] for g in gates)


def failures(gates: list[dict[str, Any]]) -> str:
    """The reason of a refusal: each failed gate with its value and threshold."""
    parts = []
    for g in gates:
        if not g["passed"]:
            value = "not measured" if g["value"] is None else f"{g['value']:.4g}"
            parts.append(f"{g['name']} = {value}, needs {g['op']} {g['threshold']:g}")
    return "gate failed: " + "; ".join(parts)


def significantly_bad(relative: dict[str, Any] | None, better: str) -> bool:
    """Whether a relative lift ``{value, ci_low, ci_high}`` lies entirely on the bad side of 0."""
    if not isinstance(relative, dict) or not all(isinstance(relative.get(k), (int, float))
                                                 for k in ("ci_low", "ci_high")):
        return False
    return relative["ci_low"] > 0 if better == "lower" else relative["ci_high"] < 0
