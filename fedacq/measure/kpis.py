"""The lender's per-bucket KPIs: definitions, inputs, and point estimates with standard errors.

The lender joins its own funnel table (one row per user it saw apply) with the
click events the platform reported (which carry the experiment layer, bucket
and arm). The unit of analysis is the *exposed user*: a distinct user with at
least one click event on the lender's ad in a layer. Users are randomised to
buckets (and so to arms) by the platform's salted hash, so a per-user mean or a
ratio of per-user sums is an unbiased (or consistent) estimate per arm.

Every KPI is a ratio ``sum(numerator) / sum(denominator)`` over the exposed
users of a group (a bucket or an arm); see :data:`KPIS` for each definition.
Two KPIs take their numerator from the platform's per-bucket spend aggregate
instead of from users: spend is a cost that the platform *measured*, so their
intervals are conditional on it (only the lender-side denominator is random).

Standard errors come from the delta method (linearisation of a ratio of
means): for ``R = sum(y) / sum(x)`` over ``n`` users,
``Var(R) ~= Var(y - R x) / (n * mean(x)**2)``; a mean is the case ``x = 1``.
Why not the bootstrap: every KPI here is a smooth function of per-user sums,
for which the delta method is accurate at the sizes we report (see
``min_events``), costs one pass over the data instead of a thousand, and gives
the same interval every time it is run on the same data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedacq.activate.events import validate_events

#: column -> dtype of the lender's funnel table (one row per user).
FUNNEL_COLUMNS: dict[str, str] = {
    "user_id": "string",              # same identifier as on the platform's events
    "applied": "int8",                # 1 if the user submitted a credit application
    "credit_granted": "int8",         # 1 if a credit line was granted
    "first_day_drawdown": "int8",     # 1 if the user drew on the line on the day it was granted
    "drawdown_amount": "float64",     # total amount drawn in the observation window
    "fees": "float64",                # interest and fees the lender earned from the user
    "repaid": "int8",                 # 1 if every due instalment was repaid
}

#: column -> dtype of the platform's per-bucket spend aggregate (``layer`` is optional).
SPEND_COLUMNS: dict[str, str] = {
    "bucket": "int16",
    "arm": "string",
    "impressions": "int64",
    "clicks": "int64",
    "spend": "float64",
}

_FLAGS = ("applied", "credit_granted", "first_day_drawdown", "repaid")
_AMOUNTS = ("drawdown_amount", "fees")

#: per-user outcome columns that KPIs are built from; ``exposed`` is 1 for every exposed user.
OUTCOMES = ("exposed", "applied", "credit_granted", "first_day_drawdown", "drawdown_amount", "fees")


@dataclass(frozen=True)
class KPI:
    """One KPI: ``sum(numerator) / sum(denominator)`` over a group's exposed users.

    ``numerator == "spend"`` means the numerator is the group's spend aggregate
    from the platform, not a per-user column.
    """

    name: str
    label: str
    numerator: str
    denominator: str
    definition: str
    unit: str = ""
    is_rate: bool = False


#: The KPIs, in report order.
KPIS: tuple[KPI, ...] = (
    KPI("application_rate", "Application rate", "applied", "exposed",
        "users who applied / exposed users", is_rate=True),
    KPI("deep_conversion_rate", "Deep conversion rate", "credit_granted", "exposed",
        "users granted credit / exposed users", is_rate=True),
    KPI("credit_rate", "Credit rate", "credit_granted", "applied",
        "users granted credit / users who applied", is_rate=True),
    KPI("first_day_usage_rate", "First-day usage rate", "first_day_drawdown", "credit_granted",
        "credit users who drew on the day of the grant / credit users", is_rate=True),
    KPI("drawdown_per_user", "Drawdown per credit user", "drawdown_amount", "credit_granted",
        "total drawdown amount / credit users", unit="currency"),
    KPI("value_per_converted_user", "Value per converted user", "fees", "credit_granted",
        "total interest and fees earned / credit users", unit="currency"),
    KPI("cost_per_credit_user", "Cost per credit user", "spend", "credit_granted",
        "platform spend / credit users (interval conditional on spend)", unit="currency"),
    KPI("loan_fee_rate", "Loan fee rate", "spend", "drawdown_amount",
        "platform spend / total drawdown amount (interval conditional on spend)", is_rate=True),
)
KPI_BY_NAME = {k.name: k for k in KPIS}


@dataclass(frozen=True)
class Estimate:
    """A KPI point estimate and its delta-method standard error."""

    value: float
    se: float

    def interval(self, z: float) -> tuple[float, float]:
        return self.value - z * self.se, self.value + z * self.se


class NotEnoughData(ValueError):
    """A group or KPI is below the minimum size: it is reported as such, never as numbers."""


def ratio_estimate(y: np.ndarray, x: np.ndarray) -> Estimate:
    """``sum(y)/sum(x)`` over users, with the delta-method standard error.

    ``Var(R) ~= Var(y - R x) / (n * mean(x)^2)`` with the sample variance
    (ddof=1). For ``x == 1`` this is the usual standard error of a mean.
    """
    n = len(y)
    sx = float(x.sum())
    if n < 2 or sx <= 0:
        raise NotEnoughData("no users in the denominator")
    r = float(y.sum()) / sx
    resid = y - r * x
    var = float(resid.var(ddof=1)) * n / (sx * sx)
    return Estimate(r, math.sqrt(max(var, 0.0)))


def spend_ratio_estimate(spend: float, x: np.ndarray) -> Estimate:
    """``spend/sum(x)``, spend fixed: ``Var(R) ~= R^2 * n * Var(x) / sum(x)^2``."""
    n = len(x)
    sx = float(x.sum())
    if n < 2 or sx <= 0:
        raise NotEnoughData("no users in the denominator")
    r = spend / sx
    return Estimate(r, abs(r) * math.sqrt(n * float(x.var(ddof=1))) / sx)


def estimate_kpi(kpi: KPI, users: pd.DataFrame, spend: float | None, min_events: int) -> Estimate:
    """Estimate one KPI over ``users`` (rows of :func:`exposed_outcomes`) of one group.

    Raises :class:`NotEnoughData` when fewer than ``min_events`` users contribute
    to the numerator or the denominator: below that the normal approximation
    behind the interval is not trustworthy (the usual np >= 10 rule).
    """
    x = users[kpi.denominator].to_numpy(dtype=float)
    n_den = int(np.count_nonzero(x))
    if n_den < min_events:
        raise NotEnoughData(f"fewer than {min_events} users with {kpi.denominator}")
    if kpi.numerator == "spend":
        if spend is None:
            raise NotEnoughData("no spend aggregate for this group")
        return spend_ratio_estimate(spend, x)
    y = users[kpi.numerator].to_numpy(dtype=float)
    if np.count_nonzero(y) < min_events:
        raise NotEnoughData(f"fewer than {min_events} users with {kpi.numerator}")
    return ratio_estimate(y, x)


def validate_funnel(df: pd.DataFrame, source: str = "funnel") -> pd.DataFrame:
    """Return the funnel table in its dtypes; raise naming the file, column and a bad user."""
    missing = [c for c in FUNNEL_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")
    df = df[list(FUNNEL_COLUMNS)]
    for col in FUNNEL_COLUMNS:
        if df[col].isna().any():
            user = df.loc[df[col].isna(), "user_id"].iloc[0]
            raise ValueError(f"{source}: column {col!r} is empty for user {user!r}")
    for col in _FLAGS:
        bad = ~df[col].isin([0, 1, True, False])
        if bad.any():
            raise ValueError(f"{source}: column {col!r} must be 0/1, user {df.loc[bad, 'user_id'].iloc[0]!r} "
                             f"has {df.loc[bad, col].iloc[0]!r}")
    out = df.astype(FUNNEL_COLUMNS)
    for col in _AMOUNTS:
        bad = ~np.isfinite(out[col]) | (out[col] < 0)
        if bad.any():
            raise ValueError(f"{source}: column {col!r} must be a non-negative number, "
                             f"user {out.loc[bad, 'user_id'].iloc[0]!r} has {out.loc[bad, col].iloc[0]!r}")
    if out["user_id"].duplicated().any():
        raise ValueError(f"{source}: duplicate user_id {out.loc[out['user_id'].duplicated(), 'user_id'].iloc[0]!r}")
    # The funnel is ordered: a later step without the earlier one is a data error, not a conversion.
    for later, earlier in (("credit_granted", "applied"), ("first_day_drawdown", "credit_granted")):
        bad = (out[later] == 1) & (out[earlier] == 0)
        if bad.any():
            raise ValueError(f"{source}: user {out.loc[bad, 'user_id'].iloc[0]!r} has {later}=1 but {earlier}=0")
    bad = (out["drawdown_amount"] > 0) & (out["credit_granted"] == 0)
    if bad.any():
        raise ValueError(f"{source}: user {out.loc[bad, 'user_id'].iloc[0]!r} has a drawdown but no credit")
    return out


def validate_spend(df: pd.DataFrame, source: str = "spend") -> pd.DataFrame:
    """Return the spend aggregate in its dtypes (``layer`` kept if present); raise on bad rows."""
    missing = [c for c in SPEND_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")
    cols = (["layer"] if "layer" in df.columns else []) + list(SPEND_COLUMNS)
    out = df[cols].astype({**SPEND_COLUMNS, **({"layer": "string"} if "layer" in df.columns else {})})
    for col in ("impressions", "clicks", "spend"):
        if (out[col] < 0).any() or out[col].isna().any():
            raise ValueError(f"{source}: column {col!r} must be non-negative numbers")
    if not out["arm"].isin(["treatment", "control"]).all():
        raise ValueError(f"{source}: column 'arm' must be 'treatment' or 'control'")
    key = ["layer", "bucket"] if "layer" in out.columns else ["bucket"]
    if out.duplicated(key).any():
        raise ValueError(f"{source}: more than one row per {'/'.join(key)}")
    return out


@dataclass
class Exposure:
    """Per-user outcomes of exposed users, and what was set aside while joining."""

    users: pd.DataFrame             # layer, bucket, arm, user_id and OUTCOMES columns
    conflicting_users: int          # users seen in more than one bucket of a layer (excluded)
    funnel_users_not_exposed: int   # funnel rows without a click: not attributable to the experiment


def exposed_outcomes(funnel: pd.DataFrame, events: pd.DataFrame) -> Exposure:
    """Join clicks with the funnel: one row per (layer, exposed user) with its outcomes.

    An exposed user without a funnel row did not apply: all outcomes are 0. A
    user whose clicks in one layer carry more than one bucket or arm cannot be
    attributed (the assignment should be a pure function of the user): such
    users are excluded and counted, so the caller can report how many.
    """
    funnel = validate_funnel(funnel)
    events = validate_events(events)
    clicks = events.loc[events["event_type"] == "click", ["layer", "user_id", "bucket", "arm"]]
    assign = clicks.drop_duplicates()
    per_user = assign.groupby(["layer", "user_id"], observed=True).size()
    conflicting = per_user[per_user > 1]
    if len(conflicting):
        assign = assign.set_index(["layer", "user_id"]).drop(conflicting.index).reset_index()
    users = assign.merge(funnel, on="user_id", how="left")
    for col in FUNNEL_COLUMNS:
        if col != "user_id":
            users[col] = users[col].fillna(0)
    users["exposed"] = 1
    clicked = pd.Index(clicks["user_id"].to_numpy(dtype=object))
    not_exposed = int((~pd.Index(funnel["user_id"].to_numpy(dtype=object)).isin(clicked)).sum())
    return Exposure(users[["layer", "bucket", "arm", "user_id", *OUTCOMES]].reset_index(drop=True),
                    int(len(conflicting)), not_exposed)
