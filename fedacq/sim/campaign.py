"""A lender's acquisition campaign on the platform, day by day, with a boost experiment.

Serving
-------
Every eligible platform user has an experiment ``layer``, ``bucket`` (0..999)
and ``arm``: from the boost table when the user is in it, otherwise from
``bucket_of(user_ids)`` (default :func:`salted_buckets`). The platform serves
``boost`` to users in the *treatment* arm and 1.0 to everyone else (a control
row's boost column is ignored), so one table can carry both arms.

The experiment is budget-split: each arm gets the share of ``budget_per_day``
equal to its share of eligible users and is paced on its own, so the arms
compare at equal budget per user and one arm cannot starve the other.
Existing lender customers are suppressed (an acquisition campaign targets new
customers) and a user who has applied sees no more of the campaign.

A day
-----
1. Each eligible user opens the app with probability ``days_active_30d / 30``
   and brings ``min(frequency_cap, 1 + Poisson(daily_minutes / 45))`` ad
   opportunities at uniform times of day.
2. Each opportunity is a second-price auction (:mod:`fedacq.sim.auction`): the
   lender bids ``target_cpa * pcvr * boost * alpha`` against competing bidders.
3. An impression is clicked with the user's ``p_click``; a click turns into an
   application with ``p_apply`` (first application per user counts); the
   application then runs through the credit funnel (:mod:`fedacq.sim.funnel`).

Outputs (:class:`CampaignResult`)
---------------------------------
- ``events``: clicks and conversions (conversion = application) in the
  :data:`fedacq.activate.events.EVENT_COLUMNS` record, what the platform reports;
- ``spend_by_bucket``: the platform's per-bucket aggregates (bucket, arm,
  impressions, clicks, spend);
- ``lender_funnel``: what the lender knows of campaign applicants (user_id, day,
  applied, credit_granted, first_day_drawdown, drawdown_amount, fees, repaid);
- ``summary``: ground-truth KPIs per arm (no party can compute all of it alone;
  it is what the measurement protocol should recover);
- ``daily``: spend, impressions, clicks, applications and mean pacing per arm and day.

KPIs in ``summary``: ``cost_per_credit_user`` = spend / users granted credit;
``drawdown_per_credit_user`` = first-day drawdown / users granted credit;
``drawdown_per_applicant`` = first-day drawdown / applicants; ``credit_rate`` =
credit users / applicants; ``first_day_usage_rate`` = first-day drawers /
credit users; ``fee_rate`` = fees / drawdown. The ``expected_*`` columns are the
same KPIs in expectation over the impressions won: each impression contributes
``p_click * p_apply`` applications, ``p_click * p_apply * p_grant`` credit users
and ``p_click * p_apply * expected_value`` drawdown. They carry no click or
funnel noise (only which impressions were won), so small simulations can
compare arms; they ignore that a user applies at most once, alike in both arms.

What to expect
--------------
With tiers by the true ``expected_value`` (top 20% x3.0, next 30% x1.6, next
30% x1.0, bottom 20% x0.3) the treatment arm's expected cost per credit user
is about 16% lower and its expected drawdown per applicant about 40% higher
than control's at equal budget; drawdown per *credit user* moves much less
(+5..10%), because creditworthy users tend to need credit less. A randomly
permuted boost of the same shape buys nothing and costs ~6% efficiency (a
noisy bid multiplier overpays in a second-price auction). Realised KPIs carry
funnel noise: with 500 000 users and 14 days an arm has ~700 credit users
(realised cost per credit user -7%, too noisy to call); with 1 000 000 users
and 28 days ~3 000 (realised -11%, drawdown per applicant +32%, drawdown per
credit user only +4%). Size the market for the KPI an experiment must show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from fedacq.activate.events import ARMS, EVENT_COLUMNS, validate_events
from fedacq.sim import auction, funnel, ids
from fedacq.sim.market import Market

#: columns a boost table must have.
BOOST_COLUMNS = ("user_id", "boost", "bucket", "arm", "layer", "table_version")
N_BUCKETS = 1000
BucketFn = Callable[[pd.Series], "tuple[np.ndarray, np.ndarray]"]


@dataclass
class CampaignResult:
    events: pd.DataFrame
    spend_by_bucket: pd.DataFrame
    lender_funnel: pd.DataFrame
    summary: pd.DataFrame
    daily: pd.DataFrame


def salted_buckets(salt: str = "fedacq-sim", treatment_share: float = 0.5) -> BucketFn:
    """A bucket function: ``bucket = hash(salt, user_id) mod 1000``; treatment = the lowest buckets.

    ``treatment_share`` of the 1000 buckets (rounded) are treatment.
    """
    if not 0.0 <= treatment_share <= 1.0:
        raise ValueError(f"treatment_share must be in [0, 1], got {treatment_share}")
    salt_int = np.uint64(int.from_bytes(salt.encode()[:8].ljust(8, b"\0"), "big"))
    salt_mix = ids.splitmix64(np.array([salt_int ^ np.uint64(len(salt))]))[0]
    cut = round(treatment_share * N_BUCKETS)

    def bucket_of(user_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        h = ids.splitmix64(ids.hex64_to_uint(np.asarray(user_ids, dtype=str)) ^ salt_mix)
        bucket = (h % np.uint64(N_BUCKETS)).astype(np.int16)
        return bucket, np.where(bucket < cut, "treatment", "control")

    return bucket_of


def _check_boost_table(table: pd.DataFrame) -> pd.DataFrame:
    missing = [c for c in BOOST_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"boost table: missing column(s) {missing}")
    boost = pd.to_numeric(table["boost"], errors="coerce").to_numpy(float)
    if not np.isfinite(boost).all() or (boost <= 0).any():
        raise ValueError("boost table: column 'boost' must be finite and > 0")
    if not table["arm"].isin(ARMS).all():
        raise ValueError(f"boost table: column 'arm' has values outside {ARMS}")
    bucket = pd.to_numeric(table["bucket"], errors="coerce")
    if bucket.isna().any() or ((bucket < 0) | (bucket >= N_BUCKETS)).any():
        raise ValueError(f"boost table: column 'bucket' must be in 0..{N_BUCKETS - 1}")
    if table["user_id"].duplicated().any():
        raise ValueError(f"boost table: duplicate user_id {table.loc[table['user_id'].duplicated(), 'user_id'].iloc[0]!r}")
    return table


def _serving(market: Market, boost_table: pd.DataFrame | None, bucket_of: BucketFn | None,
             layer: str) -> pd.DataFrame:
    """Per platform user: served boost, bucket, arm, layer and table version."""
    users = market.platform_users["user_id"]
    n = len(users)
    boost = np.ones(n)
    bucket = np.zeros(n, dtype=np.int16)
    arm = np.empty(n, dtype=object)
    lay = np.full(n, layer, dtype=object)
    version = np.full(n, "none", dtype=object)
    pos = np.full(n, -1)
    if boost_table is not None:
        table = _check_boost_table(boost_table)
        pos = pd.Index(table["user_id"].astype(str)).get_indexer(users.astype(str))
        hit = pos >= 0
        rows = table.iloc[pos[hit]]
        bucket[hit] = rows["bucket"].to_numpy(np.int16)
        arm[hit] = rows["arm"].to_numpy(object)
        lay[hit] = rows["layer"].astype(str).to_numpy(object)
        version[hit] = rows["table_version"].astype(str).to_numpy(object)
        boost[hit] = np.where(arm[hit] == "treatment", rows["boost"].to_numpy(float), 1.0)
        if table["layer"].nunique() == 1:
            lay[~hit] = str(table["layer"].iloc[0])
        if table["table_version"].nunique() == 1:
            version[~hit] = str(table["table_version"].iloc[0])
    rest = pos < 0
    if rest.any():
        b, a = (bucket_of or salted_buckets())(users[rest])
        b, a = np.asarray(b), np.asarray(a, dtype=object)
        if len(b) != rest.sum() or len(a) != rest.sum():
            raise ValueError("bucket_of must return one bucket and one arm per user")
        if ((b < 0) | (b >= N_BUCKETS)).any() or not np.isin(a, ARMS).all():
            raise ValueError(f"bucket_of returned buckets outside 0..{N_BUCKETS - 1} or arms outside {ARMS}")
        bucket[rest], arm[rest] = b, a
    return pd.DataFrame({"user_id": users.to_numpy(), "boost": boost, "bucket": bucket, "arm": arm,
                         "layer": lay, "table_version": version})


def simulate_campaign(market: Market, boost_table: pd.DataFrame | None = None,
                      bucket_of: BucketFn | None = None, *, days: int = 14,
                      budget_per_day: float | None = None, target_cpa: float = 120.0, seed: int = 0,
                      campaign: str = "lender-acq", layer: str = "credit_boost",
                      frequency_cap: int = 3, reserve_price: float = 0.005,
                      exclude_existing_customers: bool = True, start_ts: int = 1_767_225_600,
                      progress: bool = False) -> CampaignResult:
    """Run the campaign for ``days`` days (see the module docstring).

    ``budget_per_day`` defaults to 0.02 per platform user per day (4000 for
    200 000 users), which binds: the pacer has to throttle. ``target_cpa`` is
    the lender's target cost per application. ``start_ts`` (epoch seconds) is
    midnight of day 0 (default 2026-01-01 UTC).
    """
    if days < 1:
        raise ValueError(f"days must be positive, got {days}")
    if target_cpa <= 0:
        raise ValueError(f"target_cpa must be positive, got {target_cpa}")
    users = market.platform_users
    n = len(users)
    truth = market.truth.iloc[:n]
    if not np.array_equal(truth["user_id"].to_numpy(), users["user_id"].to_numpy()):
        raise ValueError("market.truth is not aligned with market.platform_users (first rows must match)")
    budget = (0.02 * n) if budget_per_day is None else float(budget_per_day)
    if budget <= 0:
        raise ValueError(f"budget_per_day must be positive, got {budget}")
    rng = np.random.default_rng(seed)

    serve = _serving(market, boost_table, bucket_of, layer)
    arm_code = np.where(serve["arm"].to_numpy() == "treatment", 0, 1)
    eligible = np.ones(n, dtype=bool)
    if exclude_existing_customers:
        eligible &= ~truth["lender_customer"].to_numpy()
    share = np.array([np.mean(arm_code[eligible] == a) for a in (0, 1)])
    pacers = [auction.Pacer(), auction.Pacer()]

    p_open = users["days_active_30d"].to_numpy(float) / 30.0
    lam = users["daily_minutes"].to_numpy(float) / 45.0
    traits = np.column_stack([truth["need"], truth["worth"], truth["wealth"], truth["activity"],
                              truth["age_band"].to_numpy() == 0]).astype(float)
    base_bid_user = target_cpa * truth["pcvr"].to_numpy() * serve["boost"].to_numpy()
    p_click = truth["p_click"].to_numpy()
    p_apply = truth["p_apply"].to_numpy()

    applied = np.zeros(n, dtype=bool)
    imp_user, imp_price, imp_ts = [], [], []
    app_user, app_day, app_ts = [], [], []
    click_user, click_ts = [], []
    daily = []
    for day in tqdm(range(days), desc="campaign days", disable=not progress):
        active = np.flatnonzero(eligible & ~applied & (rng.random(n) < p_open))
        k = np.minimum(frequency_cap, 1 + rng.poisson(lam[active]))
        opp = np.repeat(active, k)
        t = rng.random(len(opp)) * 86_400.0
        order = np.argsort(t, kind="stable")
        opp, t = opp[order], t[order]
        slot = (t * pacers[0].n_slots / 86_400.0).astype(np.int64)
        competing = auction.competing_bids(traits[opp], rng)
        day_users, day_prices, day_ts = [], [], []
        alphas = []
        for a in (0, 1):
            m = arm_code[opp] == a
            won, price, alpha = auction.run_day(base_bid_user[opp[m]], competing[m], slot[m],
                                                budget * share[a], pacers[a], reserve_price)
            day_users.append(opp[m][won])
            day_prices.append(price)
            day_ts.append(t[m][won])
            alphas.append(alpha)
        u, p_, ts = (np.concatenate(x) for x in (day_users, day_prices, day_ts))
        clicked = rng.random(len(u)) < p_click[u]
        cu, cts = u[clicked], ts[clicked] + rng.uniform(1.0, 30.0, clicked.sum())
        applies = rng.random(len(cu)) < p_apply[cu]
        au, ats = cu[applies], cts[applies] + rng.uniform(60.0, 1800.0, applies.sum())
        first = np.argsort(ats, kind="stable")
        au, ats = au[first], ats[first]
        au, keep = np.unique(au, return_index=True)  # first application of each user counts
        ats = ats[keep]
        applied[au] = True
        base = start_ts + day * 86_400
        imp_user.append(u); imp_price.append(p_); imp_ts.append(base + ts)
        click_user.append(cu); click_ts.append(base + cts)
        app_user.append(au); app_day.append(np.full(len(au), day)); app_ts.append(base + ats)
        for a in (0, 1):
            daily.append({"day": day, "arm": ARMS[a], "budget": budget * share[a],
                          "spend": float(day_prices[a].sum()), "impressions": len(day_users[a]),
                          "clicks": int(np.sum(arm_code[cu] == a)), "applications": int(np.sum(arm_code[au] == a)),
                          "mean_alpha": alphas[a]})

    imp_user, imp_price = np.concatenate(imp_user), np.concatenate(imp_price)
    click_user, click_ts = np.concatenate(click_user), np.concatenate(click_ts)
    app_user, app_day, app_ts = np.concatenate(app_user), np.concatenate(app_day), np.concatenate(app_ts)

    props = truth.iloc[app_user][["p_grant", "credit_limit", "p_first_day_drawdown",
                                  "drawdown_share", "p_repay"]].reset_index(drop=True)
    out = funnel.draw_outcomes(props, rng)
    lender_funnel = pd.DataFrame({
        "user_id": users["user_id"].to_numpy()[app_user], "day": app_day.astype(np.int32),
        "applied": np.ones(len(app_user), dtype=bool), "credit_granted": out.credit_granted,
        "first_day_drawdown": out.first_day_drawdown, "drawdown_amount": out.drawdown_amount,
        "fees": out.fees, "repaid": out.repaid,
    })
    events = _events(serve, campaign, click_user, click_ts, app_user, app_ts)
    spend = _spend_by_bucket(serve, eligible, imp_user, imp_price, click_user)
    summary = _summary(serve, arm_code, eligible, budget * share * days, imp_user, imp_price, click_user,
                       app_user, out, truth, market.params.get("high_value_min_drawdown", 1000.0),
                       pd.DataFrame(daily))
    return CampaignResult(events=events, spend_by_bucket=spend, lender_funnel=lender_funnel,
                          summary=summary, daily=pd.DataFrame(daily))


def _events(serve: pd.DataFrame, campaign: str, click_user: np.ndarray, click_ts: np.ndarray,
            app_user: np.ndarray, app_ts: np.ndarray) -> pd.DataFrame:
    kinds = np.concatenate([np.full(len(click_user), "click", dtype=object),
                            np.full(len(app_user), "conversion", dtype=object)])
    who = np.concatenate([click_user, app_user])
    ts = np.concatenate([click_ts, app_ts])
    order = np.argsort(ts, kind="stable")
    who, ts, kinds = who[order], ts[order], kinds[order]
    rows = serve.iloc[who]
    df = pd.DataFrame({
        "event_id": [f"{campaign}-{i:09d}" for i in range(len(who))],
        "ts": ts.astype(np.int64), "campaign": campaign, "user_id": rows["user_id"].to_numpy(),
        "event_type": kinds, "layer": rows["layer"].to_numpy(), "bucket": rows["bucket"].to_numpy(),
        "arm": rows["arm"].to_numpy(), "table_version": rows["table_version"].to_numpy(),
    }, columns=list(EVENT_COLUMNS))
    return validate_events(df, source="simulated events")


def _spend_by_bucket(serve: pd.DataFrame, eligible: np.ndarray, imp_user: np.ndarray,
                     imp_price: np.ndarray, click_user: np.ndarray) -> pd.DataFrame:
    arm_t = (serve["arm"].to_numpy() == "control").astype(np.int64)
    key = arm_t * N_BUCKETS + serve["bucket"].to_numpy(np.int64)
    size = 2 * N_BUCKETS
    present = np.bincount(key[eligible], minlength=size) > 0
    imps = np.bincount(key[imp_user], minlength=size)
    clicks = np.bincount(key[click_user], minlength=size)
    spend = np.bincount(key[imp_user], weights=imp_price, minlength=size)
    k = np.flatnonzero(present)
    return pd.DataFrame({"bucket": (k % N_BUCKETS).astype(np.int16),
                         "arm": np.where(k >= N_BUCKETS, "control", "treatment"),
                         "impressions": imps[k], "clicks": clicks[k], "spend": spend[k]})


def _summary(serve: pd.DataFrame, arm_code: np.ndarray, eligible: np.ndarray, budget: np.ndarray,
             imp_user: np.ndarray, imp_price: np.ndarray, click_user: np.ndarray, app_user: np.ndarray,
             out: funnel.Outcomes, truth: pd.DataFrame, min_drawdown: float,
             daily: pd.DataFrame) -> pd.DataFrame:
    ev = truth["expected_value"].to_numpy()
    p_grant = truth["p_grant"].to_numpy()
    p_app = truth["p_click"].to_numpy() * truth["p_apply"].to_numpy()
    high = out.credit_granted & out.first_day_drawdown & out.repaid & (out.drawdown_amount >= min_drawdown)
    rows = []
    for a, name in enumerate(ARMS):
        im, cl, ap = arm_code[imp_user] == a, arm_code[click_user] == a, arm_code[app_user] == a
        spend = float(imp_price[im].sum())
        credit = int(out.credit_granted[ap].sum())
        drawn = float(out.drawdown_amount[ap].sum())
        n_app = int(ap.sum())
        u = imp_user[im]
        exp_app = float(p_app[u].sum())
        exp_credit = float((p_app[u] * p_grant[u]).sum())
        exp_drawn = float((p_app[u] * ev[u]).sum())
        rows.append({
            "arm": name, "users": int(np.sum(eligible & (arm_code == a))), "budget": float(budget[a]),
            "spend": spend, "impressions": int(im.sum()), "clicks": int(cl.sum()), "applications": n_app,
            "credit_users": credit, "first_day_users": int(out.first_day_drawdown[ap].sum()),
            "high_value_users": int(high[ap].sum()), "drawdown": drawn, "fees": float(out.fees[ap].sum()),
            "ctr": cl.sum() / max(im.sum(), 1),
            "cost_per_application": spend / n_app if n_app else np.nan,
            "cost_per_credit_user": spend / credit if credit else np.nan,
            "credit_rate": credit / n_app if n_app else np.nan,
            "first_day_usage_rate": out.first_day_drawdown[ap].sum() / credit if credit else np.nan,
            "drawdown_per_applicant": drawn / n_app if n_app else np.nan,
            "drawdown_per_credit_user": drawn / credit if credit else np.nan,
            "fee_rate": float(out.fees[ap].sum()) / drawn if drawn else np.nan,
            "mean_boost_served": float(serve["boost"].to_numpy()[imp_user[im]].mean()) if im.any() else np.nan,
            "expected_value_per_impression": float(ev[imp_user[im]].mean()) if im.any() else np.nan,
            "mean_alpha": float(daily.loc[daily["arm"] == name, "mean_alpha"].mean()),
            "expected_applications": exp_app,
            "expected_credit_users": exp_credit,
            "expected_cost_per_credit_user": spend / exp_credit if exp_credit else np.nan,
            "expected_drawdown_per_credit_user": exp_drawn / exp_credit if exp_credit else np.nan,
            "expected_drawdown_per_applicant": exp_drawn / exp_app if exp_app else np.nan,
        })
    return pd.DataFrame(rows).set_index("arm")
