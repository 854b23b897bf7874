"""Lift of treatment over control per KPI, with confidence intervals.

The arms are independent random samples of users (bucketed by salted hash), so
the variance of a difference is the sum of the arms' variances:

* absolute lift ``T - C``: normal interval ``(T - C) +- z * sqrt(se_T^2 + se_C^2)``;
* relative lift ``T / C - 1``: the interval is built on the log scale,
  ``log(T/C) +- z * sqrt((se_T/T)^2 + (se_C/C)^2)`` (delta method), and mapped
  back. A ratio's sampling distribution is skewed; on the log scale it is close
  to normal, so the interval has closer to nominal coverage and can never go
  below -100%.

Each result is a plain dict, ready for JSON: ``{"value", "ci_low", "ci_high", "se"}``
or ``{"status": "not enough data", "reason": ...}`` — never numbers for a group
below its minimum size.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from fedacq.measure.kpis import Estimate

NOT_ENOUGH = "not enough data"


def z_value(confidence: float) -> float:
    """Two-sided normal quantile, e.g. 1.96 for 0.95."""
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def not_enough(reason: str) -> dict[str, Any]:
    return {"status": NOT_ENOUGH, "reason": reason}


def is_reported(result: dict[str, Any]) -> bool:
    """True when ``result`` carries numbers (not a 'not enough data' marker)."""
    return "value" in result


def interval_dict(est: Estimate, z: float) -> dict[str, float]:
    low, high = est.interval(z)
    return {"value": est.value, "se": est.se, "ci_low": low, "ci_high": high}


def absolute_lift(treatment: Estimate, control: Estimate, z: float) -> dict[str, float]:
    se = math.hypot(treatment.se, control.se)
    return interval_dict(Estimate(treatment.value - control.value, se), z)


def relative_lift(treatment: Estimate, control: Estimate, z: float) -> dict[str, Any]:
    """``T/C - 1`` with a log-scale delta-method interval (needs both arms > 0)."""
    if treatment.value <= 0 or control.value <= 0:
        return not_enough("relative lift needs a positive value in both arms")
    log_ratio = math.log(treatment.value / control.value)
    se_log = math.hypot(treatment.se / treatment.value, control.se / control.value)
    return {"value": math.exp(log_ratio) - 1, "se": se_log * math.exp(log_ratio),
            "ci_low": math.expm1(log_ratio - z * se_log), "ci_high": math.expm1(log_ratio + z * se_log)}


def lift(treatment: Estimate | None, control: Estimate | None, z: float,
         reason: str = "") -> dict[str, Any]:
    """Absolute and relative lift, or a 'not enough data' marker if an arm has no estimate."""
    if treatment is None or control is None:
        return not_enough(reason or "an arm has not enough data for this KPI")
    return {"absolute": absolute_lift(treatment, control, z),
            "relative": relative_lift(treatment, control, z)}
