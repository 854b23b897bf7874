"""A campaign stepped one day at a time on a drifting world, with a boost table per day.

:class:`DayCampaign` is :func:`fedacq.sim.simulate_campaign` for a campaign that
lives for weeks (:class:`fedacq.sim.world.World`): the caller runs one day with
:meth:`DayCampaign.step`, passing the boost table that is live that day, so a
campaign loop can publish a new version between any two days.

The experiment
--------------
The campaign's experiment (``layer`` and ``bucket_of``, e.g. a boost table's
:meth:`fedacq.activate.table.BoostTable.bucket_fn`) is fixed when the campaign
starts: every pool user's bucket and arm are computed once. A boost table's rows
must agree with them (same layer, same bucket and arm per user) or the day is
refused, naming the version: a new model version changes boosts, never who is in
which arm, so the experiment runs on across versions. Users a table does not list
(arrivals scored by no version yet) are served 1.0 in their arm.

A day
-----
The world's traffic of the day (:meth:`fedacq.sim.world.World.traffic`), minus the
users the campaign does not target (the lender's customers from before the campaign,
and anyone who has applied in it), goes through the auctions arm by arm, each arm
with the share of ``budget_per_day`` equal to its share of the day's experiment
population (present users who were not the lender's customers) and its own pacer
(carried over from day to day), so what one arm wins never moves the other arm's
budget; the lender bids
``target_cpa * pcvr * boost * alpha`` with that week's pCVR. A won impression is
clicked when its uniform is below ``p_click``, a click applies when its uniform is
below ``p_apply``; the first application of a user counts. Each applicant's outcomes
are the world's (:meth:`fedacq.sim.world.World.outcomes`), and they become known to
the lender on their own days (:mod:`fedacq.sim.maturation`).

Outputs
-------
- :attr:`DayCampaign.daily`: one row per (day, bucket, arm) with ``table_version``,
  ``users`` (the experiment population present that day), ``spend``, ``impressions``, ``clicks``,
  ``applications``, and the applications' eventual outcomes ``credit_users``,
  ``first_day_users``, ``high_value_users``, ``drawdown``, ``fees``; plus
  ``expected_applications``, ``expected_credit_users`` and ``expected_drawdown``
  (the same in expectation over the impressions won, without click or funnel noise).
  Outcomes are attributed to the day of the application (cohorts), whenever they mature:
  cost per credit user over days ``a..b`` is the spend of those days over the credit
  users their applications bring (:func:`window_kpis`).
- :meth:`DayCampaign.lender_table`: the lender's customer table as known on a day
  (the training view: unknown outcomes NaN); :meth:`DayCampaign.lender_funnel`: the
  measurement view of the campaign's applicants (what has not happened yet is 0),
  :meth:`DayCampaign.events` and :meth:`DayCampaign.spend_by_bucket` in the record
  formats :mod:`fedacq.measure` reads.
- :func:`compare`: cost per credit user (or another ratio KPI) of two campaigns on
  the same world over a window, with a paired bootstrap interval over buckets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedacq.activate.events import ARMS, EVENT_COLUMNS, validate_events
from fedacq.sim import auction
from fedacq.sim.campaign import N_BUCKETS, BucketFn, _check_boost_table, salted_buckets
from fedacq.sim.market import LENDER_FEATURES, PLATFORM_FEATURES, Market
from fedacq.sim.maturation import as_known, as_measured
from fedacq.sim.world import World

#: per-(day, bucket, arm) sums of :attr:`DayCampaign.daily`.
DAILY_SUMS = ("users", "spend", "impressions", "clicks", "applications", "credit_users", "first_day_users",
              "high_value_users", "drawdown", "fees", "expected_applications", "expected_credit_users",
              "expected_drawdown")
#: ratio KPIs of :func:`window_kpis`: name -> (numerator, denominator).
RATIOS = {
    "cost_per_application": ("spend", "applications"),
    "cost_per_credit_user": ("spend", "credit_users"),
    "credit_rate": ("credit_users", "applications"),
    "drawdown_per_credit_user": ("drawdown", "credit_users"),
    "drawdown_per_applicant": ("drawdown", "applications"),
    "expected_cost_per_credit_user": ("spend", "expected_credit_users"),
    "expected_drawdown_per_applicant": ("expected_drawdown", "expected_applications"),
}

_COUNTS = ("users", "impressions", "clicks", "applications", "credit_users", "first_day_users", "high_value_users")
_FLAGS = ("credit_granted", "first_day_drawdown", "repaid", "high_value")


@dataclass(frozen=True)
class _Serving:
    """What one boost-table version serves, per pool user."""

    version: str
    boost: np.ndarray


class DayCampaign:
    """A lender's campaign on ``world``, one day per :meth:`step` (see the module docstring).

    ``budget_per_day`` defaults to 0.02 per initial platform user (as
    :func:`fedacq.sim.simulate_campaign`); ``target_cpa`` is the target cost per
    application; ``start_ts`` (epoch seconds) is midnight of day 0.
    """

    def __init__(self, world: World, bucket_of: BucketFn | None = None, *, layer: str = "credit_boost",
                 campaign: str = "lender-acq", budget_per_day: float | None = None, target_cpa: float = 120.0,
                 frequency_cap: int = 3, reserve_price: float = 0.005, start_ts: int = 1_767_225_600) -> None:
        if target_cpa <= 0:
            raise ValueError(f"target_cpa must be positive, got {target_cpa}")
        self.world, self.layer, self.campaign = world, layer, campaign
        self.budget_per_day = 0.02 * world.n_users if budget_per_day is None else float(budget_per_day)
        if self.budget_per_day <= 0:
            raise ValueError(f"budget_per_day must be positive, got {self.budget_per_day}")
        self.target_cpa, self.frequency_cap, self.reserve_price = target_cpa, frequency_cap, reserve_price
        self.start_ts = start_ts
        self.day = 0  #: the next day :meth:`step` runs
        bucket, arm = (bucket_of or salted_buckets())(pd.Series(world.user_ids))
        self.bucket, self.arm = np.asarray(bucket, dtype=np.int16), np.asarray(arm, dtype=object)
        if len(self.bucket) != world.n_pool or ((self.bucket < 0) | (self.bucket >= N_BUCKETS)).any() \
                or not np.isin(self.arm, ARMS).all():
            raise ValueError(f"bucket_of must give one bucket in 0..{N_BUCKETS - 1} and one arm of {ARMS} per user")
        self._arm_code = np.where(self.arm == "treatment", 0, 1)
        self._customer = world.pool.truth["lender_customer"].to_numpy()[:world.n_pool]
        self._applied = np.zeros(world.n_pool, dtype=bool)
        self._pacers = [auction.Pacer(), auction.Pacer()]
        self._serving: _Serving | None = None
        self._served_table: pd.DataFrame | None = None
        self._daily: list[pd.DataFrame] = []
        self._applicants: list[pd.DataFrame] = []
        self._events: list[pd.DataFrame] = []

    # -- running -----------------------------------------------------------------------------

    def step(self, boost_table: pd.DataFrame | None = None) -> pd.DataFrame:
        """Run day :attr:`day` with ``boost_table`` live (``None``: everyone served 1.0, version
        ``"none"``) and return that day's rows of :attr:`daily`."""
        w, day = self.world, self.world.check_day(self.day)
        serve = self._serve(boost_table)
        traffic = w.traffic(day, self.frequency_cap)
        keep = ~self._customer[traffic.user] & ~self._applied[traffic.user]
        population = w.present(day) & ~self._customer
        code = self._arm_code
        share = np.array([np.sum(population & (code == a)) for a in (0, 1)], dtype=float)
        share /= max(share.sum(), 1.0)
        pcvr, props = w.pcvr(day), w.propensities(day)
        won_rows, won_price = [], []
        for a in (0, 1):
            rows = np.flatnonzero(keep & (code[traffic.user] == a))
            u = traffic.user[rows]
            won, price, _ = auction.run_day(self.target_cpa * pcvr[u] * serve.boost[u], traffic.competing[rows],
                                            traffic.slot[rows], self.budget_per_day * share[a], self._pacers[a],
                                            self.reserve_price)
            won_rows.append(rows[won])
            won_price.append(price)
        rows, price = np.concatenate(won_rows), np.concatenate(won_price)
        imp = traffic.user[rows]
        p_click, p_apply = props["p_click"].to_numpy(), props["p_apply"].to_numpy()
        clicked = traffic.u_click[rows] < p_click[imp]
        c_rows = rows[clicked]
        click_user, click_t = traffic.user[c_rows], traffic.t[c_rows] + traffic.click_delay[c_rows]
        applies = traffic.u_apply[c_rows] < p_apply[click_user]
        app_user, app_t = click_user[applies], click_t[applies] + traffic.apply_delay[c_rows][applies]
        order = np.argsort(app_t, kind="stable")
        app_user, first = np.unique(app_user[order], return_index=True)  # a user's first application counts
        app_t = app_t[order][first]
        self._applied[app_user] = True

        applicants = self._applicant_rows(app_user, day, app_t, serve.version)
        self._applicants.append(applicants)
        self._events.append(self._day_events(day, serve.version, click_user, click_t, app_user, app_t))
        daily = self._day_rows(day, serve, population, imp, price, click_user, app_user, applicants, props)
        self._daily.append(daily)
        self.day += 1
        return daily

    def run(self, days: int, boost_table: pd.DataFrame | None = None) -> pd.DataFrame:
        """:meth:`step` ``days`` times with the same table; returns those days' rows of :attr:`daily`."""
        return pd.concat([self.step(boost_table) for _ in range(days)], ignore_index=True)

    def _serve(self, table: pd.DataFrame | None) -> _Serving:
        """Per pool user, the boost ``table`` serves (checked against the experiment; the last
        table's serving is reused when the same table object comes again)."""
        if table is None:
            return _Serving("none", np.ones(self.world.n_pool))
        if table is self._served_table and self._serving is not None:
            return self._serving
        table = _check_boost_table(table)
        versions = table["table_version"].astype(str).unique()
        if len(versions) != 1:
            raise ValueError(f"boost table: one table_version per table, got {sorted(versions)[:3]}")
        version = str(versions[0])
        layers = set(table["layer"].astype(str))
        if layers != {self.layer}:
            raise ValueError(f"boost table {version}: layer {sorted(layers)}, the campaign's experiment layer "
                             f"is {self.layer!r}")
        pos = self.world.index_of(table["user_id"].astype(str))
        listed = pos >= 0
        pos = pos[listed]
        rows = table.loc[listed]
        moved = (rows["bucket"].to_numpy(np.int64) != self.bucket[pos]) | \
            (rows["arm"].astype(str).to_numpy(object) != self.arm[pos])
        if moved.any():
            raise ValueError(f"boost table {version}: user {rows['user_id'].iloc[int(np.argmax(moved))]!r} has "
                             f"another bucket or arm than the campaign's experiment gave it; a new version may "
                             f"change boosts, not the experiment's assignment")
        boost = np.ones(self.world.n_pool)
        boost[pos] = np.where(self.arm[pos] == "treatment", rows["boost"].to_numpy(float), 1.0)
        self._served_table, self._serving = table, _Serving(version, boost)
        return self._serving

    def _applicant_rows(self, idx: np.ndarray, day: int, t: np.ndarray, version: str) -> pd.DataFrame:
        """The world's applicant rows with the application's time and the experiment it was served in."""
        rows = self.world.application_rows(idx, day)
        rows.insert(1, "ts", (self.start_ts + day * 86_400 + t).astype(np.int64))
        rows.insert(2, "bucket", self.bucket[idx])
        rows.insert(3, "arm", self.arm[idx])
        rows.insert(4, "table_version", version)
        return rows

    def _day_events(self, day: int, version: str, click_user: np.ndarray, click_t: np.ndarray,
                    app_user: np.ndarray, app_t: np.ndarray) -> pd.DataFrame:
        who = np.concatenate([click_user, app_user])
        t = np.concatenate([click_t, app_t])
        kind = np.concatenate([np.full(len(click_user), "click", dtype=object),
                               np.full(len(app_user), "conversion", dtype=object)])
        order = np.argsort(t, kind="stable")
        who, t, kind = who[order], t[order], kind[order]
        return pd.DataFrame({"day": day, "event_id": [f"{self.campaign}-{day:04d}-{i:07d}" for i in range(len(who))],
                             "ts": (self.start_ts + day * 86_400 + t).astype(np.int64),
                             "user_id": self.world.user_ids[who], "event_type": kind,
                             "bucket": self.bucket[who], "arm": self.arm[who], "table_version": version})

    def _day_rows(self, day: int, serve: _Serving, population: np.ndarray, imp: np.ndarray, price: np.ndarray,
                  click_user: np.ndarray, app_user: np.ndarray, applicants: pd.DataFrame,
                  props: pd.DataFrame) -> pd.DataFrame:
        key = (self._arm_code.astype(np.int64) * N_BUCKETS + self.bucket)  # treatment buckets first
        size = 2 * N_BUCKETS
        count = lambda who, weights=None: np.bincount(key[who], weights=weights, minlength=size)  # noqa: E731
        p_app = props["p_click"].to_numpy()[imp] * props["p_apply"].to_numpy()[imp]
        ev = (props["p_grant"] * props["p_first_day_drawdown"] * props["credit_limit"]
              * props["drawdown_share"]).to_numpy()[imp]
        sums = {
            "users": count(np.flatnonzero(population)), "spend": count(imp, price), "impressions": count(imp),
            "clicks": count(click_user), "applications": count(app_user),
            "credit_users": count(app_user, applicants["credit_granted"].to_numpy(float)),
            "first_day_users": count(app_user, applicants["first_day_drawdown"].to_numpy(float)),
            "high_value_users": count(app_user, applicants["high_value"].to_numpy(float)),
            "drawdown": count(app_user, applicants["drawdown_amount"].to_numpy(float)),
            "fees": count(app_user, applicants["fees"].to_numpy(float)),
            "expected_applications": count(imp, p_app),
            "expected_credit_users": count(imp, p_app * props["p_grant"].to_numpy()[imp]),
            "expected_drawdown": count(imp, p_app * ev),
        }
        k = np.flatnonzero(sums["users"] > 0)
        out = pd.DataFrame({"day": np.full(len(k), day, dtype=np.int32), "bucket": (k % N_BUCKETS).astype(np.int16),
                            "arm": np.where(k >= N_BUCKETS, "control", "treatment"),
                            "table_version": serve.version})
        for name in DAILY_SUMS:
            out[name] = sums[name][k].astype(np.int64) if name in _COUNTS else sums[name][k]
        return out

    # -- what each party sees ----------------------------------------------------------------

    @property
    def daily(self) -> pd.DataFrame:
        """One row per (day, bucket, arm) run so far (see the module docstring)."""
        if not self._daily:
            return pd.DataFrame(columns=["day", "bucket", "arm", "table_version", *DAILY_SUMS])
        return pd.concat(self._daily, ignore_index=True)

    @property
    def applicants(self) -> pd.DataFrame:
        """Every application so far with its eventual outcomes and their days (the simulator's truth)."""
        if not self._applicants:
            return self._applicant_rows(np.empty(0, dtype=np.int64), 0, np.empty(0), "none")
        return pd.concat(self._applicants, ignore_index=True)

    def lender_table(self, day: int) -> pd.DataFrame:
        """The lender's customer table as known at the start of ``day``: its customers from
        before the campaign (all outcomes known) and the campaign's applicants of days before
        ``day``, outcomes not yet matured NaN (float columns), with ``applied_day`` and the
        maturation day columns (:func:`fedacq.sim.maturation.as_known`)."""
        apps = self.applicants
        apps = apps.loc[apps["applied_day"] < day].drop(columns=["ts", "bucket", "arm", "table_version"])
        return as_known(pd.concat([self.world.lender_customers(), apps], ignore_index=True), day)

    def market_on(self, day: int, label: str = "high_value") -> Market:
        """The market as the parties hold it at the start of ``day``, in the shape the pipeline
        reads (:func:`fedacq.pipeline.write_party_files`): the platform's users with that day's
        features; the lender's customers whose ``label`` has matured (:meth:`lender_table`; the
        other outcomes as known, NaN pending), ``label`` its label column; ``truth`` the present
        users' :meth:`fedacq.sim.world.World.truth` (evaluation only)."""
        lender = self.lender_table(day)
        if label not in lender.columns:
            raise ValueError(f"label {label!r} is not a column of the lender's table")
        lender = lender.loc[lender[label].notna()].reset_index(drop=True)
        if label in _FLAGS:
            lender[label] = lender[label].astype(bool)
        w = self.world
        return Market(platform_users=w.platform_users(day), lender_customers=lender,
                      truth=w.truth(day).loc[w.present(day)].reset_index(drop=True),
                      platform_feature_columns=list(PLATFORM_FEATURES), lender_feature_columns=list(LENDER_FEATURES),
                      label_column=label, params={**w.pool.params, "day": day, "world_seed": w.seed})

    def lender_funnel(self, day: int, first_day: int = 0) -> pd.DataFrame:
        """The measurement view at the start of ``day``: the campaign's applicants of days
        ``first_day..day-1`` as :data:`fedacq.measure.kpis.FUNNEL_COLUMNS` (what has not happened
        yet is 0) plus ``day`` (of the application)."""
        apps = self.applicants
        apps = apps.loc[(apps["applied_day"] >= first_day) & (apps["applied_day"] < day)]
        measured = as_measured(apps, day)
        return pd.DataFrame({"user_id": measured["user_id"].to_numpy(), "day": measured["applied_day"].astype(np.int32),
                             "applied": np.ones(len(measured), dtype=bool),
                             **{c: measured[c].to_numpy() for c in ("credit_granted", "first_day_drawdown",
                                                                     "drawdown_amount", "fees", "repaid")}})

    def events(self, first_day: int = 0, last_day: int | None = None) -> pd.DataFrame:
        """The clicks and conversions the platform reports for days ``first_day..last_day``
        (default: every day run), in :data:`fedacq.activate.events.EVENT_COLUMNS`; an event's
        ``event_id`` (``<campaign>-<day>-<n>``) is the same in every window."""
        last = self.day - 1 if last_day is None else last_day
        if not self._events:
            return validate_events(pd.DataFrame(columns=list(EVENT_COLUMNS)), source="simulated events")
        ev = pd.concat(self._events, ignore_index=True)
        ev = ev.loc[(ev["day"] >= first_day) & (ev["day"] <= last)].reset_index(drop=True)
        ev["campaign"], ev["layer"] = self.campaign, self.layer
        return validate_events(ev, source="simulated events")

    def spend_by_bucket(self, first_day: int = 0, last_day: int | None = None) -> pd.DataFrame:
        """The platform's per-bucket aggregates (bucket, arm, impressions, clicks, spend) over days
        ``first_day..last_day``, as :attr:`fedacq.sim.CampaignResult.spend_by_bucket`."""
        d = _window(self.daily, first_day, self.day - 1 if last_day is None else last_day)
        return (d.groupby(["bucket", "arm"], as_index=False, sort=True)[["impressions", "clicks", "spend"]].sum()
                .sort_values(["arm", "bucket"], ascending=[False, True], ignore_index=True))


def _window(daily: pd.DataFrame, first_day: int, last_day: int) -> pd.DataFrame:
    if first_day > last_day:
        raise ValueError(f"empty window: days {first_day}..{last_day}")
    return daily.loc[(daily["day"] >= first_day) & (daily["day"] <= last_day)]


def window_kpis(daily: pd.DataFrame, first_day: int, last_day: int) -> pd.DataFrame:
    """Per arm over days ``first_day..last_day`` (inclusive) of :attr:`DayCampaign.daily`: the
    sums of :data:`DAILY_SUMS` and the ratio KPIs of :data:`RATIOS` (cohorts: the outcomes of the
    window's applications, whenever they mature)."""
    sums = _window(daily, first_day, last_day).groupby("arm")[list(DAILY_SUMS)].sum()
    sums["users"] = _window(daily, first_day, last_day).groupby(["arm", "day"])["users"].sum().groupby("arm").mean()
    for name, (num, den) in RATIOS.items():
        sums[name] = sums[num] / sums[den].where(sums[den] > 0)
    return sums.reindex([a for a in ARMS if a in sums.index])


def compare(a: pd.DataFrame, b: pd.DataFrame, first_day: int, last_day: int, *, arm: str = "treatment",
            kpi: str = "cost_per_credit_user", n_boot: int = 2000, confidence: float = 0.95,
            seed: int = 0) -> dict[str, float]:
    """``kpi`` of campaign ``a`` relative to campaign ``b`` in ``arm`` over days ``first_day..last_day``
    (``daily`` frames of two :class:`DayCampaign` on the same world and experiment), with a
    percentile bootstrap interval that resamples buckets *paired*: bucket ``k`` holds the same
    users in both campaigns, so their difference is measured on the same people.

    Returns ``a``, ``b``, ``relative`` (a / b - 1), ``ci_low``, ``ci_high`` and ``n_buckets``.
    The bootstrap seed is the simulator's (this is evaluation, not a party's noise).
    """
    if kpi not in RATIOS:
        raise ValueError(f"kpi must be one of {sorted(RATIOS)}, got {kpi!r}")
    num, den = RATIOS[kpi]
    per = []
    for d in (a, b):
        w = _window(d, first_day, last_day)
        per.append(w.loc[w["arm"] == arm].groupby("bucket")[[num, den]].sum())
    common = per[0].index.intersection(per[1].index)
    if len(common) < 2:
        raise ValueError(f"compare: fewer than 2 {arm} buckets in both campaigns over days {first_day}..{last_day}")
    x = np.stack([p.loc[common].to_numpy(float) for p in per])  # (campaign, bucket, [num, den])
    rng = np.random.default_rng(seed)
    pick = rng.integers(0, len(common), size=(n_boot, len(common)))
    tot = x[:, pick, :].sum(axis=2)  # (campaign, boot, [num, den])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = (tot[0, :, 0] / tot[0, :, 1]) / (tot[1, :, 0] / tot[1, :, 1]) - 1.0
    va, vb = (x[i, :, 0].sum() / x[i, :, 1].sum() for i in (0, 1))
    lo, hi = np.nanquantile(rel, [(1 - confidence) / 2, (1 + confidence) / 2])
    return {"a": float(va), "b": float(vb), "relative": float(va / vb - 1.0), "ci_low": float(lo),
            "ci_high": float(hi), "n_buckets": int(len(common))}
