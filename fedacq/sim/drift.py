"""How the simulated market changes over the weeks of a campaign: the drift parameters.

A campaign that runs for weeks meets a market that does not stand still. The
simulator (:mod:`fedacq.sim.world`) moves it in four explicit, seeded ways, each
with a parameter of :class:`Drift` (``NO_DRIFT`` switches them all off):

1. **Who is on the platform.** ``arrival_rate`` new users per day (a share of the
   initial base) join during the campaign, chosen with weight
   ``exp(arrival_need_tilt * need)``: newcomers want credit more than the base does.
   Every user leaves with probability ``churn_rate`` per day (a geometric lifetime).
2. **The people.** Each person's ``need`` follows a weekly mean-reverting random walk
   around its starting value (``need_volatility`` the weekly standard deviation,
   ``need_reversion`` the weekly pull back), so who wants credit now changes; and
   ``activity`` rises by ``activity_trend`` per week for everyone (the app gets
   stickier: more minutes, more active days, more ad opportunities).
3. **What behaviour says about a person.** The platform's features are noisy views of
   the traits (:func:`fedacq.sim.market._platform_features`); over the weeks their
   linear predictors move by :data:`RELATION_SHIFT` times ``relation_drift``, ramped
   linearly over ``relation_drift_weeks``. This is the drift a model cannot see in
   its inputs' distribution alone: the same feature value means another person,
   so a model trained in week 1 goes stale and one retrained on fresh labels does not.
4. **The competition.** Each competitor's bids are multiplied by
   ``exp(competitor_bid_trend[name] * week)`` and its participation moves by
   ``competitor_participation_trend[name] * week`` (kept in [0, 1]): a rival lender
   ramping up its campaign, a shopping festival, a game publisher cutting spend.

The story behind :data:`RELATION_SHIFT` (the weights are the model's parameters,
chosen so that the drift is felt by a model of credit approval within eight weeks):
instalment checkout goes mainstream and the creditworthy use it for big baskets;
graduation season makes job search common rather than a sign of hardship;
cheap phone instalments put flagship phones in the hands of people who need credit;
the platform pushes finance content into the main feed, so watching follows
activity rather than need; tipping stops marking the less creditworthy; and
e-commerce prices inflate a little.

Time is in days from the campaign's start; ``week = day / 7``. All randomness
comes from the world's seed (:class:`fedacq.sim.world.World`): it is the simulated
world's, not a party's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from fedacq.sim.auction import COMPETITORS, Competitor

#: at full relation drift: feature -> added (intercept, need, worth, wealth, activity) loadings of
#: its linear predictor (see the module docstring for the story of each).
RELATION_SHIFT: dict[str, tuple[float, float, float, float, float]] = {
    "ecom_installment_share": (0.3, -0.6, 0.9, 0.4, 0.0),
    "job_search_days_30d": (0.8, -0.3, 0.55, 0.3, 0.0),
    "device_price_tier": (0.2, 0.5, -0.4, -0.3, 0.0),
    "finance_watch_min_7d": (0.8, -0.4, 0.0, -0.3, 0.5),
    "live_tip_30d": (0.0, 0.0, 0.25, 0.0, 0.0),
    "ecom_spend_30d": (0.1, 0.0, 0.0, 0.0, 0.0),
}


@dataclass(frozen=True)
class Drift:
    """The drift parameters (see the module docstring); the defaults are the documented market."""

    arrival_rate: float = 0.004
    arrival_need_tilt: float = 0.5
    churn_rate: float = 0.003
    need_volatility: float = 0.15
    need_reversion: float = 0.1
    activity_trend: float = 0.04
    relation_drift: float = 1.0
    relation_drift_weeks: float = 6.0
    competitor_bid_trend: dict[str, float] = field(default_factory=lambda: {
        "other_lenders": 0.06, "ecommerce": 0.03, "games": -0.03})
    competitor_participation_trend: dict[str, float] = field(default_factory=lambda: {
        "other_lenders": 0.03})

    def __post_init__(self) -> None:
        for name in ("arrival_rate", "arrival_need_tilt", "churn_rate", "need_volatility", "relation_drift"):
            if not getattr(self, name) >= 0.0:
                raise ValueError(f"Drift.{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.churn_rate < 1.0:
            raise ValueError(f"Drift.churn_rate must be in [0, 1), got {self.churn_rate!r}")
        if not 0.0 <= self.need_reversion <= 1.0:
            raise ValueError(f"Drift.need_reversion must be in [0, 1], got {self.need_reversion!r}")
        if not self.relation_drift_weeks > 0.0:
            raise ValueError(f"Drift.relation_drift_weeks must be > 0, got {self.relation_drift_weeks!r}")
        known = {c.name for c in COMPETITORS}
        for name in ("competitor_bid_trend", "competitor_participation_trend"):
            unknown = set(getattr(self, name)) - known
            if unknown:
                raise ValueError(f"Drift.{name}: unknown competitor(s) {sorted(unknown)}; known: {sorted(known)}")

    def relation_weight(self, week: float) -> float:
        """How far behaviour has moved towards :data:`RELATION_SHIFT` in ``week`` (0 at the start)."""
        return self.relation_drift * min(1.0, max(0.0, week) / self.relation_drift_weeks)

    def feature_shift(self, week: float, need: np.ndarray, worth: np.ndarray, wealth: np.ndarray,
                      activity: np.ndarray) -> dict[str, np.ndarray]:
        """Per feature, what to add to its linear predictor in ``week`` (the ``shift`` of
        :func:`fedacq.sim.market._platform_features`); empty without relation drift."""
        s = self.relation_weight(week)
        if s == 0.0:
            return {}
        return {name: s * (c0 + c1 * need + c2 * worth + c3 * wealth + c4 * activity)
                for name, (c0, c1, c2, c3, c4) in RELATION_SHIFT.items()}

    def competitors(self, week: float) -> tuple[Competitor, ...]:
        """The competing advertisers in ``week``: bids and participation moved by their trends."""
        out = []
        for c in COMPETITORS:
            scale = c.scale * float(np.exp(self.competitor_bid_trend.get(c.name, 0.0) * week))
            part = float(np.clip(c.participation + self.competitor_participation_trend.get(c.name, 0.0) * week,
                                 0.0, 1.0))
            out.append(Competitor(c.name, part, scale, c.loadings, c.sigma))
        return tuple(out)


#: a market that stands still: no arrivals or churn, fixed people, behaviour and competition.
NO_DRIFT = Drift(arrival_rate=0.0, arrival_need_tilt=0.0, churn_rate=0.0, need_volatility=0.0,
                 need_reversion=0.0, activity_trend=0.0, relation_drift=0.0,
                 competitor_bid_trend={}, competitor_participation_trend={})
