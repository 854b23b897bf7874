"""The simulated world over time: a drifting market whose days a campaign steps through.

:class:`World` holds everyone who is or will be on the platform during a campaign of
``horizon_days`` days (the *pool*: a :func:`fedacq.sim.generate_market` market of the
initial users plus the arrivals) and answers, for any day of the campaign:

- who is on the platform (:meth:`World.present`) and the platform's user table with
  the features as of that day (:meth:`World.platform_users`): features are refreshed
  every ``snapshot_days`` (7: a week's behaviour), from the traits of that week and
  with that week's drift (:mod:`fedacq.sim.drift`) and fresh behavioural noise;
- the day's ad traffic (:meth:`World.traffic`): which users open the app, their ad
  opportunities and times, the best competing bid of each, and the uniforms that
  decide clicks and applications;
- what happens if a person applies on a day (:meth:`World.outcomes`) and when the
  lender learns each outcome (:meth:`World.event_days`, :mod:`fedacq.sim.maturation`);
- the lender's customers from before the campaign (:meth:`World.lender_customers`),
  whose outcomes are all known.

Why the world draws everything a campaign does not choose: two campaigns on the same
world (a frozen model and a refreshed one; or the same boost table twice) meet the
same users on the same days with the same opportunities, competing bids, click and
application luck, and the same funnel luck per person (its uniforms and delays are
drawn once), so they differ only by what their bids win. That is common random
numbers: a comparison of two boost strategies needs far fewer simulated users.

Everything is a function of ``seed``: the simulated world's seed, which no party holds.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from scipy.special import betaincinv

from fedacq.sim import auction, funnel, ids
from fedacq.sim.drift import Drift
from fedacq.sim.market import PLATFORM_FEATURES, REGION_TIER, Market, _lender_features, _platform_features, \
    _weighted_sample, generate_market
from fedacq.sim.maturation import DAY_COLUMNS, Maturation

#: stream numbers of the world's random generators (``default_rng([seed, stream, ...])``).
_PEOPLE, _FEATURES, _TRAFFIC = 1, 2, 3


@dataclass(frozen=True)
class Traffic:
    """One day's ad opportunities, sorted by time. ``user`` indexes the pool; ``t`` is seconds
    into the day, ``slot`` its pacing slot; ``competing`` the best other bid; ``u_click`` and
    ``u_apply`` decide a click and an application (click if ``u_click < p_click``);
    ``click_delay``/``apply_delay`` are the seconds from impression to click and click to application."""

    user: np.ndarray
    t: np.ndarray
    slot: np.ndarray
    competing: np.ndarray
    u_click: np.ndarray
    u_apply: np.ndarray
    click_delay: np.ndarray
    apply_delay: np.ndarray


@dataclass(frozen=True)
class _Snapshot:
    """The world in one feature period: the platform's features and each person's propensities."""

    features: pd.DataFrame
    props: pd.DataFrame
    pcvr: np.ndarray
    traits: np.ndarray  # need, worth, wealth, activity, young: what competitors bid on


class World:
    """A drifting market for a campaign of ``horizon_days`` days (see the module docstring).

    Parameters
    ----------
    n_users: platform users on day 0; ``drift.arrival_rate * n_users * horizon_days`` more
        arrive during the campaign.
    horizon_days: the last day a campaign can run is ``horizon_days - 1``.
    seed: the simulated world's seed.
    drift: :class:`fedacq.sim.drift.Drift` (``NO_DRIFT`` for a market that stands still).
    maturation: :class:`fedacq.sim.maturation.Maturation`, the outcome delays.
    lender_share, lender_outside_share, high_value_min_drawdown: as in
        :func:`fedacq.sim.generate_market`, of the whole pool.
    snapshot_days: days between refreshes of the platform's features and the people's traits.
    """

    def __init__(self, n_users: int = 200_000, horizon_days: int = 56, *, seed: int = 0,
                 drift: Drift | None = None, maturation: Maturation | None = None,
                 lender_share: float = 0.03, lender_outside_share: float = 0.15,
                 high_value_min_drawdown: float = 1000.0, snapshot_days: int = 7) -> None:
        if horizon_days < 1:
            raise ValueError(f"horizon_days must be positive, got {horizon_days}")
        if snapshot_days < 1:
            raise ValueError(f"snapshot_days must be positive, got {snapshot_days}")
        self.drift = drift if drift is not None else Drift()
        self.maturation = maturation if maturation is not None else Maturation()
        self.n_users, self.horizon_days, self.seed = n_users, horizon_days, seed
        self.snapshot_days = snapshot_days
        n_arrivals = round(self.drift.arrival_rate * n_users * horizon_days)
        self.pool: Market = generate_market(n_users + n_arrivals, seed=seed, lender_share=lender_share,
                                            lender_outside_share=lender_outside_share,
                                            high_value_min_drawdown=high_value_min_drawdown)
        self.high_value_min_drawdown = high_value_min_drawdown
        n = self.n_pool = n_users + n_arrivals
        truth = self.pool.truth.iloc[:n]
        self.user_ids = truth["user_id"].to_numpy()
        self._index = pd.Index(self.user_ids)
        rng = np.random.default_rng([seed, _PEOPLE])

        # who is on the platform when: arrivals lean towards need; geometric lifetimes
        self.arrive_day = np.zeros(n, dtype=np.int32)
        late = _weighted_sample(np.exp(self.drift.arrival_need_tilt * truth["need"].to_numpy()), n_arrivals, rng)
        self.arrive_day[late] = rng.integers(1, max(2, horizon_days), size=len(late))
        life = rng.geometric(self.drift.churn_rate, size=n) if self.drift.churn_rate > 0 else np.full(n, 1 << 30)
        self.leave_day = self.arrive_day + np.minimum(life, 1 << 30).astype(np.int64)

        # the people: base traits, a weekly mean-reverting walk of need, a rising activity
        self._pp = {k: truth[k].to_numpy() for k in ("age_band", "region", "need", "worth", "wealth", "activity")}
        self._pp["tier"] = REGION_TIER[self._pp["region"]]
        n_snap = math.ceil(horizon_days / snapshot_days)
        step = snapshot_days / 7.0
        dev = np.zeros((n_snap, n))
        for k in range(1, n_snap):
            keep = (1.0 - self.drift.need_reversion) ** step
            dev[k] = keep * dev[k - 1] + self.drift.need_volatility * math.sqrt(step) * rng.standard_normal(n)
        self._need_dev = dev
        self._pcvr_noise = np.exp(0.3 * rng.standard_normal(n) - 0.045)

        # each person's funnel luck and outcome delays, fixed once
        self._u = {k: rng.random(n) for k in ("grant", "draw", "share", "repay")}
        self._decision_delay, self._activation_delay = self.maturation.draw_delays(n, rng)

        # the lender's view of anyone who might apply: its own features, its own phone formatting
        lender_pp = {k: self._pp[k] for k in ("need", "worth", "wealth")}
        self._lender_features = _lender_features(lender_pp, rng)
        self._lender_features["months_on_book"] = np.int16(0)
        self._lender_phone = ids.raw_phones(_canonical_phones(self.pool.platform_users["phone"]), rng,
                                            self.pool.params["lender_phone_noise"], (1, 1, 3, 2, 1))
        self._snapshots: OrderedDict[int, _Snapshot] = OrderedDict()

    # -- time ----------------------------------------------------------------------------

    def check_day(self, day: int) -> int:
        if not 0 <= day < self.horizon_days:
            raise ValueError(f"day {day} is outside the world's horizon 0..{self.horizon_days - 1}")
        return int(day)

    def week(self, day: int) -> float:
        """The snapshot's time in weeks (features and traits change once per snapshot)."""
        return (day // self.snapshot_days) * self.snapshot_days / 7.0

    def present(self, day: int) -> np.ndarray:
        """Pool rows on the platform on ``day`` (bool)."""
        day = self.check_day(day)
        return (self.arrive_day <= day) & (day < self.leave_day)

    # -- what each party has ---------------------------------------------------------------

    def platform_users(self, day: int) -> pd.DataFrame:
        """The platform's user table on ``day``: ``user_id``, ``phone`` and the platform
        features as of that day (:data:`fedacq.sim.market.PLATFORM_FEATURES`), present users only."""
        rows = np.flatnonzero(self.present(day))
        snap = self._snapshot(day)
        out = snap.features.iloc[rows].reset_index(drop=True)
        out.insert(0, "phone", self.pool.platform_users["phone"].to_numpy()[rows])
        out.insert(0, "user_id", self.user_ids[rows])
        return out

    def lender_customers(self) -> pd.DataFrame:
        """The lender's customers from before the campaign (all outcomes known), with the
        campaign-day columns of :mod:`fedacq.sim.maturation` empty and ``applied_day`` empty."""
        out = self.pool.lender_customers.copy()
        out["applied_day"] = np.nan
        for col in DAY_COLUMNS:
            out[col] = np.nan
        return out

    def application_rows(self, idx: np.ndarray, day: int) -> pd.DataFrame:
        """The lender's rows for pool persons ``idx`` who applied on ``day``: its features,
        their outcomes (:meth:`outcomes`) and the days they become known (:meth:`event_days`)."""
        out = self.outcomes(idx, day)
        table = pd.DataFrame({"user_id": self.user_ids[idx], "phone": self._lender_phone[idx]})
        table = pd.concat([table, self._lender_features.iloc[idx].reset_index(drop=True)], axis=1)
        for col in ("credit_granted", "first_day_drawdown", "drawdown_amount", "fees", "repaid"):
            table[col] = getattr(out, col)
        table[self.pool.label_column] = out.credit_granted & out.first_day_drawdown & out.repaid & \
            (out.drawdown_amount >= self.high_value_min_drawdown)
        table["applied_day"] = float(day)
        for col, days in self.event_days(idx, day, out).items():
            table[col] = days.astype(np.float64)
        return table

    # -- the simulator's side ---------------------------------------------------------------

    def truth(self, day: int) -> pd.DataFrame:
        """Each pool person's traits, propensities, ``expected_value`` and ``pcvr`` as of ``day``
        (evaluation only: no party has it), with ``present`` and ``lender_customer`` (from before the campaign)."""
        snap = self._snapshot(day)
        out = pd.DataFrame({"user_id": self.user_ids, "present": self.present(day),
                            "lender_customer": self.pool.truth["lender_customer"].to_numpy()[:self.n_pool],
                            "need": snap.traits[:, 0], "worth": snap.traits[:, 1], "wealth": snap.traits[:, 2],
                            "activity": snap.traits[:, 3]})
        out = pd.concat([out, snap.props], axis=1)
        out["expected_value"] = funnel.expected_value(snap.props)
        out["pcvr"] = snap.pcvr
        return out

    def traffic(self, day: int, frequency_cap: int = 3) -> Traffic:
        """The day's ad opportunities (see :class:`Traffic`): every present user opens the app
        with probability ``days_active_30d / 30`` and brings ``min(frequency_cap, 1 +
        Poisson(daily_minutes / 45))`` opportunities, as in :func:`fedacq.sim.simulate_campaign`.
        The same for every campaign on this world; a campaign drops the users it does not target."""
        snap = self._snapshot(day)
        rng = np.random.default_rng([self.seed, _TRAFFIC, day, frequency_cap])
        p_open = snap.features["days_active_30d"].to_numpy(float) / 30.0
        lam = snap.features["daily_minutes"].to_numpy(float) / 45.0
        active = np.flatnonzero(self.present(day) & (rng.random(self.n_pool) < p_open))
        user = np.repeat(active, np.minimum(frequency_cap, 1 + rng.poisson(lam[active])))
        t = rng.random(len(user)) * 86_400.0
        order = np.argsort(t, kind="stable")
        user, t = user[order], t[order]
        competing = auction.competing_bids(snap.traits[user], rng, self.drift.competitors(self.week(day)))
        m = len(user)
        return Traffic(user=user, t=t, slot=(t * 24 / 86_400.0).astype(np.int64), competing=competing,
                       u_click=rng.random(m), u_apply=rng.random(m), click_delay=rng.uniform(1.0, 30.0, m),
                       apply_delay=rng.uniform(60.0, 1800.0, m))

    def propensities(self, day: int) -> pd.DataFrame:
        """Funnel propensities of every pool person as of ``day`` (:func:`fedacq.sim.funnel.propensities`)."""
        return self._snapshot(day).props

    def pcvr(self, day: int) -> np.ndarray:
        """The platform's predicted conversion (click and apply) per impression, as of ``day``."""
        return self._snapshot(day).pcvr

    def outcomes(self, idx: np.ndarray, day: int) -> funnel.Outcomes:
        """What happens when pool persons ``idx`` apply on ``day``: their propensities that week
        and their own fixed draws (:func:`fedacq.sim.funnel.outcomes_from_draws`)."""
        p = self._snapshot(day).props.iloc[idx].reset_index(drop=True)
        m = p["drawdown_share"].to_numpy()
        k = funnel.DRAW_CONCENTRATION
        share = betaincinv(k * m, k * (1.0 - m), self._u["share"][idx])
        return funnel.outcomes_from_draws(p, self._u["grant"][idx], self._u["draw"][idx], share,
                                          self._u["repay"][idx])

    def event_days(self, idx: np.ndarray, day: int, out: funnel.Outcomes) -> dict[str, np.ndarray]:
        """When the lender learns each outcome of applications by ``idx`` on ``day``."""
        return self.maturation.event_days(np.full(len(idx), day, dtype=np.int64), out,
                                          self._decision_delay[idx], self._activation_delay[idx],
                                          self.high_value_min_drawdown)

    def index_of(self, user_ids: pd.Series | np.ndarray) -> np.ndarray:
        """Pool row of each user id (-1 for ids not in the pool)."""
        return self._index.get_indexer(user_ids if isinstance(user_ids, pd.Series) else pd.Index(user_ids))

    def _snapshot(self, day: int) -> _Snapshot:
        k = self.check_day(day) // self.snapshot_days
        if k in self._snapshots:
            self._snapshots.move_to_end(k)
            return self._snapshots[k]
        week = self.week(day)
        pp = dict(self._pp)
        pp["need"] = self._pp["need"] + self._need_dev[k]
        pp["activity"] = self._pp["activity"] + self.drift.activity_trend * week
        shift = self.drift.feature_shift(week, pp["need"], pp["worth"], pp["wealth"], pp["activity"])
        features = _platform_features(pp, np.random.default_rng([self.seed, _FEATURES, k]), shift)
        props = funnel.propensities(pp["need"], pp["worth"], pp["wealth"], pp["activity"])
        pcvr = props["p_click"].to_numpy() * props["p_apply"].to_numpy() * self._pcvr_noise
        traits = np.column_stack([pp["need"], pp["worth"], pp["wealth"], pp["activity"],
                                  pp["age_band"] == 0]).astype(float)
        snap = _Snapshot(features=features[list(PLATFORM_FEATURES)], props=props, pcvr=pcvr, traits=traits)
        self._snapshots[k] = snap
        while len(self._snapshots) > 2:  # a campaign walks forward: the current and the last period
            self._snapshots.popitem(last=False)
        return snap


def _canonical_phones(raw: pd.Series) -> np.ndarray:
    """11-digit phone numbers from raw strings (see :mod:`fedacq.sim.ids`: digits only, the last 11)."""
    digits = pc.replace_substring_regex(pa.array(raw.astype(str).to_numpy(dtype=object)), r"\D", "")
    return pc.cast(pc.utf8_slice_codeunits(digits, -11), pa.int64()).to_numpy()
