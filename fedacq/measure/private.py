"""What crosses between the parties for measurement: spend to the lender, outcome aggregates to the platform.

Two small protocols, both over a :class:`~fedacq.link.link.Link`:

**Spend** (platform -> lender, one message ``measure.spend``): the platform's
per-bucket ad-delivery aggregate (bucket, arm, impressions, clicks, spend) for one
layer. The lender learns what the platform paid per bucket, which it needs for
cost per credit user and loan fee rate; no user appears in it.

**Outcome aggregates** (lender -> platform), so the platform can see what its
boost did without seeing any borrower:

1. lender -> platform ``measure.plan``: the layer and the list of outcome
   columns (e.g. ``credit_granted``, ``drawdown_amount``) it will share, and the
   Laplace ``epsilon`` of each column (0 = no noise);
2. one run of private intersection-sum (:mod:`fedacq.psi.intersection_sum`) for
   all outcomes at once: the platform's ids are its exposed (clicked) users
   labelled by bucket, the lender's ids are its funnel users with the outcomes
   as value columns (ids blinded and matched once, each user's outcomes packed in
   one Paillier plaintext).

What each side learns: the platform learns, per bucket, the number of its
exposed users who are in the lender's funnel (applicants; exactly, from its own
matching, see :mod:`fedacq.psi.intersection_sum`) and the sum of each
outcome over them — after the lender has suppressed buckets under the minimum
size *on the noisy count* and, if asked, added Laplace noise (each outcome's sum spends half its
``epsilon``, the shared count the other halves: the total budget is the sum of
the epsilons, as for one run per outcome). The lender learns the number of
buckets and the platform's per-bucket exposed counts (it learns those anyway
from the click events) and its own exact per-bucket sums. Neither side learns
which lender user matched which bucket, and no per-user value crosses in the
clear (values cross Paillier-encrypted under the lender's key, ids blinded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from fedacq.activate.events import validate_events
from fedacq.crypto.paillier import MIN_KEY_BITS
from fedacq.crypto.scheme import AdditivePrivateKey
from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, PartSpec, register
from fedacq.measure.kpis import validate_funnel, validate_spend
from fedacq.psi.intersection_sum import (GroupAggregate, IntersectionSumResult, intersection_sum_lender,
                                         intersection_sum_platform)

#: outcomes shared with the platform by default: deep conversion, early usage, volume.
DEFAULT_OUTCOMES: tuple[str, ...] = ("credit_granted", "first_day_drawdown", "drawdown_amount")
_SHAREABLE = ("applied", "credit_granted", "first_day_drawdown", "drawdown_amount", "fees", "repaid")
_MAX_BUCKETS = 1000  # buckets are 0..999

register(
    MessageSpec("measure.spend", header={"layer": str},
                parts={"bucket": PartSpec(dtypes=("int16",), ndim=1, max_bytes=2 * _MAX_BUCKETS),
                       "treatment": PartSpec(dtypes=("bool",), ndim=1, max_bytes=_MAX_BUCKETS),
                       "impressions": PartSpec(dtypes=("int64",), ndim=1, max_bytes=8 * _MAX_BUCKETS),
                       "clicks": PartSpec(dtypes=("int64",), ndim=1, max_bytes=8 * _MAX_BUCKETS),
                       "spend": PartSpec(dtypes=("float64",), ndim=1, max_bytes=8 * _MAX_BUCKETS)}),
    MessageSpec("measure.plan", header={"layer": str, "outcomes": list, "epsilon": list}),
)


# -- spend: platform -> lender ---------------------------------------------------------------
def send_spend(link: Link, spend: pd.DataFrame, layer: str) -> None:
    """Platform: send one layer's per-bucket spend aggregate to the lender."""
    spend = validate_spend(spend)
    if "layer" in spend.columns:
        spend = spend[spend["layer"] == layer]
    link.send(Message("measure.spend", {"layer": layer}, spend_parts(spend), step="measure/spend"))


def recv_spend(link: Link, timeout: float = 600.0) -> pd.DataFrame:
    """Lender: receive the spend aggregate as a table for :func:`fedacq.measure.report.measure`."""
    msg = link.recv("measure.spend", timeout=timeout)
    return spend_table(msg.header["layer"], msg.parts, "message 'measure.spend'")


def spend_parts(spend: pd.DataFrame) -> dict[str, np.ndarray]:
    """A checked spend table as the parts of ``measure.spend`` (and of the lender's checkpoint of it)."""
    return {"bucket": spend["bucket"].to_numpy(np.int16),
            "treatment": (spend["arm"] == "treatment").to_numpy(bool),
            "impressions": spend["impressions"].to_numpy(np.int64),
            "clicks": spend["clicks"].to_numpy(np.int64),
            "spend": spend["spend"].to_numpy(np.float64)}


def spend_table(layer: str, p: dict[str, np.ndarray], source: str) -> pd.DataFrame:
    """The spend table of one layer from :func:`spend_parts`, checked; errors name ``source``."""
    if not len(p["bucket"]) == len(p["treatment"]) == len(p["impressions"]) == len(p["clicks"]) == len(p["spend"]):
        raise ValueError(f"{source}: parts have different lengths")
    table = pd.DataFrame({"layer": layer, "bucket": p["bucket"],
                          "arm": np.where(p["treatment"], "treatment", "control"),
                          "impressions": p["impressions"], "clicks": p["clicks"], "spend": p["spend"]})
    return validate_spend(table, source=source)


# -- outcome aggregates: lender -> platform ----------------------------------------------------
def share_outcomes_lender(link: Link, funnel: pd.DataFrame, *, private_key: AdditivePrivateKey, layer: str,
                          outcomes: Sequence[str] = DEFAULT_OUTCOMES, min_group_size: int = 100,
                          epsilon: float | None = None, value_bounds: dict[str, float] | None = None,
                          workers: int | None = None, progress: bool = False) -> IntersectionSumResult:
    """Lender: one private intersection-sum over all outcomes; returns the lender-side result.

    The result's sums are in the order of ``outcomes``. ``epsilon`` applies to
    each outcome (total budget: ``epsilon * len(outcomes)``); with noise, each
    outcome needs a clipping bound in ``value_bounds`` (0/1 flags default to 1).
    """
    funnel = validate_funnel(funnel)
    unknown = [o for o in outcomes if o not in _SHAREABLE]
    if unknown or not outcomes or len(set(outcomes)) != len(outcomes):
        raise ValueError(f"outcomes must be a non-empty subset of {_SHAREABLE} without repeats, "
                         f"got {list(outcomes)}")
    bounds = dict(value_bounds or {})
    for o in outcomes:
        if o not in ("drawdown_amount", "fees"):
            bounds.setdefault(o, 1.0)
    if epsilon is not None and any(o not in bounds for o in outcomes):
        raise ValueError("Laplace noise on an amount needs its bound in value_bounds, "
                         f"missing for {[o for o in outcomes if o not in bounds]}")
    link.send(Message("measure.plan", {"layer": layer, "outcomes": list(outcomes),
                                       "epsilon": [float(epsilon or 0.0)] * len(outcomes)},
                      step="measure/plan"))
    return intersection_sum_lender(
        link, funnel["user_id"].tolist(), funnel[list(outcomes)].to_numpy(np.float64),
        private_key=private_key, min_group_size=min_group_size, epsilon=epsilon,
        value_bound=[bounds[o] for o in outcomes] if epsilon is not None else None,
        workers=workers, progress=progress)


@dataclass
class PlatformView:
    """What the platform learned: one row per bucket; suppressed buckets have no numbers."""

    layer: str
    buckets: pd.DataFrame   # bucket, arm, exposed_users, suppressed, applicants, <outcome>_sum...
    epsilon: list[float]

    def by_arm(self) -> pd.DataFrame:
        """Per-arm totals over the *released* buckets, and the KPIs the platform can form from them.

        Suppressed buckets are left out of both numerator and denominator (the
        platform has no lender numbers for them), and counted in
        ``buckets_suppressed``. Ratios use the platform's own exposed users and
        spend with the lender's released sums (names as in :data:`fedacq.measure.kpis.KPIS`):
        ``deep_conversion_rate`` = credit_granted_sum / exposed_users, ``credit_rate`` =
        credit_granted_sum / applicants, ``cost_per_credit_user`` = spend /
        credit_granted_sum, ``drawdown_per_user`` = drawdown_amount_sum /
        credit_granted_sum (each where the columns were shared).
        """
        released = self.buckets[~self.buckets["suppressed"]]
        sums = [c for c in released.columns if c.endswith("_sum") or c in ("exposed_users", "applicants", "spend")]
        table = released.groupby("arm")[sums].sum()
        table["buckets_suppressed"] = self.buckets.groupby("arm")["suppressed"].sum()
        if "credit_granted_sum" in table:
            table["deep_conversion_rate"] = table["credit_granted_sum"] / table["exposed_users"]
            table["credit_rate"] = table["credit_granted_sum"] / table["applicants"]
            if "spend" in table:
                table["cost_per_credit_user"] = table["spend"] / table["credit_granted_sum"]
            if "drawdown_amount_sum" in table:
                table["drawdown_per_user"] = table["drawdown_amount_sum"] / table["credit_granted_sum"]
        return table


def share_outcomes_platform(link: Link, events: pd.DataFrame, *, min_group_size: int = 100,
                            spend: pd.DataFrame | None = None, workers: int | None = None,
                            min_key_bits: int = MIN_KEY_BITS, schemes: Sequence[str] = ("paillier",),
                            expect: dict[str, Any] | None = None) -> PlatformView:
    """Platform: run the lender's plan over its exposed users grouped by bucket.

    ``min_key_bits`` is the platform's own floor for the lender's key and
    ``schemes`` the schemes it accepts (a node job: the one agreed); both are
    checked in ``isum.hello`` whatever the lender says. ``expect`` holds the
    ``layer``, ``outcomes`` and per-outcome ``epsilon`` the platform agreed to
    (a node's job): a ``measure.plan`` asking for anything else is refused before
    the platform touches its events.

    The platform's own numbers (exposed users, and spend if given) are joined to
    the released aggregates, so it can read e.g. credit users per exposed user
    or spend per credit user per bucket without any per-user lender data.
    """
    events = validate_events(events)
    plan = link.recv("measure.plan").header
    layer, outcomes = plan["layer"], [str(o) for o in plan["outcomes"]]
    if any(o not in _SHAREABLE for o in outcomes) or len(plan["epsilon"]) != len(outcomes):
        raise ValueError(f"message 'measure.plan': bad outcomes {outcomes}")
    for key, agreed in (expect or {}).items():
        if plan[key] != agreed:
            raise ValueError(f"message 'measure.plan': the lender asks for {key}={plan[key]!r}, "
                             f"the job agreed {agreed!r}")
    exposed = _exposed(events, layer)
    res = intersection_sum_platform(link, exposed["user_id"].tolist(), exposed["bucket"].astype(int).tolist(),
                                    min_group_size=min_group_size, workers=workers, min_key_bits=min_key_bits,
                                    schemes=schemes)
    if res.stats["columns"] != len(outcomes):
        raise ValueError(f"the lender summed {res.stats['columns']} columns, its plan named {len(outcomes)}")
    return _view(exposed, res.groups, layer, outcomes, [float(e) for e in plan["epsilon"]], spend)


def receive_release(link: Link, events: pd.DataFrame, *, layer: str, outcomes: Sequence[str],
                    epsilon: Sequence[float], spend: pd.DataFrame | None = None,
                    timeout: float = 600.0) -> PlatformView:
    """Platform: the view from an ``isum.release`` sent again on its own (a resumed measure job).

    The lender sends again, unchanged, the release it committed to before an
    interruption (the platform may or may not have received it then): the
    platform reads it exactly as at the end of the intersection-sum, against its
    own groups (its exposed users' buckets, in the order the intersection-sum
    numbers them) and the outcomes and epsilons the job agreed.
    """
    exposed = _exposed(validate_events(events), layer)
    # intersection_sum_platform numbers the groups in this order
    labels = sorted(set(exposed["bucket"].astype(int).tolist()), key=str)
    rel = link.recv("isum.release", timeout=timeout).parts
    k = len(outcomes)
    if not len(rel["count"]) == len(rel["sum"]) == len(rel["suppressed"]) == len(labels) \
            or rel["sum"].shape[1:] != (k,):
        raise ValueError(f"message 'isum.release': not one entry per bucket ({len(labels)}) with {k} sums each")
    groups = {label: GroupAggregate(None if rel["suppressed"][g] else float(rel["count"][g]),
                                    None if rel["suppressed"][g] else tuple(map(float, rel["sum"][g])),
                                    bool(rel["suppressed"][g]))
              for g, label in enumerate(labels)}
    return _view(exposed, groups, layer, list(outcomes), [float(e) for e in epsilon], spend)


def _exposed(events: pd.DataFrame, layer: str) -> pd.DataFrame:
    """The platform's exposed (clicked) users of ``layer``, one row each with its bucket and arm."""
    clicks = events[(events["event_type"] == "click") & (events["layer"] == layer)]
    exposed = clicks.drop_duplicates(["user_id", "bucket"])
    if exposed["user_id"].duplicated().any():
        raise ValueError(f"events: a user has clicks in more than one bucket of layer {layer!r}")
    return exposed


def _view(exposed: pd.DataFrame, groups: dict[Any, GroupAggregate], layer: str, outcomes: list[str],
          epsilon: list[float], spend: pd.DataFrame | None) -> PlatformView:
    """The platform's own per-bucket numbers beside the released aggregates (by bucket)."""
    table = exposed.groupby("bucket").agg(arm=("arm", "first"), exposed_users=("user_id", "size"))
    buckets = list(groups)
    sums = np.array([agg.sums if agg.sums is not None else [np.nan] * len(outcomes)
                     for agg in groups.values()], dtype=np.float64).reshape(len(buckets), len(outcomes))
    released = pd.DataFrame({"suppressed": [agg.suppressed for agg in groups.values()],
                             "applicants": [np.nan if agg.count is None else agg.count
                                            for agg in groups.values()],
                             **{f"{o}_sum": sums[:, j] for j, o in enumerate(outcomes)}},
                            index=pd.Index(buckets, name="bucket"))
    table = table.join(released)
    if spend is not None:
        spend = validate_spend(spend)
        if "layer" in spend.columns:
            spend = spend[spend["layer"] == layer]
        table = table.join(spend.set_index("bucket")[["spend"]], how="left")
    numeric = [c for c in table.columns if c not in ("arm", "suppressed", "exposed_users", "spend")]
    table.loc[table["suppressed"], numeric] = np.nan
    return PlatformView(layer, table.reset_index(), epsilon)
