"""The simulator's days: label maturation, the drifting world, the day-stepped campaign, and the
static simulator left as it was."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from fedacq.measure.kpis import validate_funnel, validate_spend
from fedacq.sim import NO_DRIFT, DayCampaign, Drift, Maturation, World, compare, funnel, window_kpis
from fedacq.sim.auction import COMPETITORS
from fedacq.sim.drift import RELATION_SHIFT
from fedacq.sim.market import SHIFTABLE_FEATURES, _platform_features, generate_market
from fedacq.sim.maturation import KNOWN_FROM, as_known


@pytest.fixture(scope="module")
def world() -> World:
    return World(20_000, 28, seed=5)


@pytest.fixture(scope="module")
def ran(world: World) -> DayCampaign:
    """Three weeks with no boosts, then a week with an all-treatment x2 table."""
    c = DayCampaign(world, layer="credit_boost")
    c.run(21)
    c.run(7, _table(c, 2.0, "v2"))
    return c


def _table(c: DayCampaign, boost: float, version: str, day: int = 21) -> pd.DataFrame:
    users = c.world.platform_users(day)["user_id"]
    pos = c.world.index_of(users)
    return pd.DataFrame({"user_id": users, "boost": boost, "bucket": c.bucket[pos], "arm": c.arm[pos],
                         "layer": c.layer, "table_version": version})


# -- the static simulator stays as it was ---------------------------------------------------------

def test_no_shift_is_the_static_feature_model():
    m = generate_market(2_000, seed=3)
    pp = {k: m.truth[k].to_numpy()[:2_000] for k in ("need", "worth", "wealth", "activity", "age_band", "region")}
    pp["tier"] = np.array([1, 2, 3, 4])[pp["region"] % 4]
    a = _platform_features(pp, np.random.default_rng(1))
    b = _platform_features(pp, np.random.default_rng(1), {})
    pd.testing.assert_frame_equal(a, b)
    shifted = _platform_features(pp, np.random.default_rng(1), {"device_price_tier": 5.0})
    assert (shifted["device_price_tier"] == 5).all() and shifted["age_band"].equals(a["age_band"])
    with pytest.raises(ValueError, match="no linear predictor"):
        _platform_features(pp, np.random.default_rng(1), {"region": 1.0})
    assert set(RELATION_SHIFT) <= set(SHIFTABLE_FEATURES)


def test_outcomes_from_draws_is_draw_outcomes():
    p = generate_market(3_000, seed=2).truth
    a = funnel.draw_outcomes(p, np.random.default_rng(4))
    rng = np.random.default_rng(4)
    u_grant, u_draw = rng.random(len(p)), rng.random(len(p))
    m = p["drawdown_share"].to_numpy()
    share = rng.beta(funnel.DRAW_CONCENTRATION * m, funnel.DRAW_CONCENTRATION * (1 - m))
    b = funnel.outcomes_from_draws(p, u_grant, u_draw, share, rng.random(len(p)))
    for col in ("credit_granted", "first_day_drawdown", "drawdown_amount", "repaid", "fees"):
        assert np.array_equal(getattr(a, col), getattr(b, col))


# -- label maturation -----------------------------------------------------------------------------

def test_lender_table_holds_only_matured_outcomes(ran: DayCampaign, world: World):
    apps = ran.applicants
    assert len(apps) > 300 and apps["user_id"].is_unique
    before = world.lender_customers()
    for day in (5, 12, 28):
        known = ran.lender_table(day)
        old, new = known.iloc[:len(before)], known.iloc[len(before):]
        assert old["user_id"].tolist() == before["user_id"].tolist()
        assert not old[list(KNOWN_FROM)].isna().any().any()  # the books from before the campaign are complete
        assert (new["applied_day"] < day).all() and len(new) == (apps["applied_day"] < day).sum()
        truth = apps.set_index("user_id").loc[new["user_id"]]
        for col, when in KNOWN_FROM.items():
            pending = truth[when].to_numpy() >= day
            assert new[col].isna().to_numpy().tolist() == pending.tolist(), col
            assert np.array_equal(new[col].to_numpy()[~pending], truth[col].astype(float).to_numpy()[~pending])
    # a decision takes days, a drawdown weeks after it, a repayment a loan term after that
    assert (apps["decided_day"] >= apps["applied_day"] + 1).all()
    assert (apps["used_day"] >= apps["decided_day"]).all()
    granted = apps["credit_granted"]
    assert (apps.loc[granted, "used_day"] - apps.loc[granted, "decided_day"]).mean() > 3
    drew = apps["first_day_drawdown"]
    assert (apps.loc[drew, "repaid_day"] == apps.loc[drew, "used_day"] + world.maturation.loan_term_days).all()
    # on the last day the newest decisions are pending, and pending is NaN, never "rejected"
    last = ran.lender_table(28).iloc[len(before):]
    assert last["credit_granted"].isna().any() and last["credit_granted"].notna().any()


def test_measurement_view_counts_what_has_happened(ran: DayCampaign):
    f = ran.lender_funnel(20)
    validate_funnel(f, source="simulated funnel")
    apps = ran.applicants.set_index("user_id").loc[f["user_id"]]
    assert (f["day"].to_numpy() < 20).all()
    assert f["credit_granted"].sum() == (apps["credit_granted"] & (apps["decided_day"] < 20)).sum()
    assert f["credit_granted"].sum() < apps["credit_granted"].sum()  # some decisions are still to come
    later = ran.lender_funnel(28, first_day=0)
    assert later["credit_granted"].sum() >= f["credit_granted"].sum()


def test_market_on_a_day_is_what_the_pipeline_reads(ran: DayCampaign, world: World, tmp_path):
    from fedacq.activate.value import VALUE_MODELS
    from fedacq.pipeline import write_party_files

    m = ran.market_on(26, label="credit_granted")
    assert m.lender_customers["credit_granted"].dtype == bool
    assert len(m.platform_users) == world.present(26).sum() == len(m.truth)
    assert (m.truth["user_id"] == m.platform_users["user_id"]).all()
    known = ran.lender_table(26)
    assert len(m.lender_customers) == known["credit_granted"].notna().sum() < len(known)
    paths = write_party_files(m, tmp_path, VALUE_MODELS["drawdown"].stages)
    drawdown = pd.read_csv(paths["customers-drawdown"])
    cust = m.lender_customers.set_index("user_id").loc[drawdown["user_id"]]
    pending = cust["credit_granted"].to_numpy() & cust["drawdown_amount"].isna().to_numpy()
    assert pending.any() and drawdown["drawdown_amount"].isna().to_numpy()[pending].all()
    with pytest.raises(ValueError, match="label 'nope'"):
        ran.market_on(26, label="nope")


def test_the_lender_measures_a_window_as_known(ran: DayCampaign):
    from fedacq.measure.report import measure

    report = measure(ran.lender_funnel(28, first_day=21), ran.events(21, 27), ran.spend_by_bucket(21, 27),
                     min_bucket_size=2, min_events=2)
    arms = report["layers"]["credit_boost"]["arms"]
    d = ran.daily.query("day >= 21")
    for arm in ("treatment", "control"):
        assert arms[arm]["spend"]["spend"] == pytest.approx(d.loc[d["arm"] == arm, "spend"].sum())
        assert 0 < arms[arm]["credit_users"] < arms[arm]["applications"] <= d.loc[d["arm"] == arm, "applications"].sum()
    assert ran.events(21, 27)["event_id"].isin(ran.events()["event_id"]).all()  # ids do not depend on the window


def test_maturation_parameters_are_checked():
    with pytest.raises(ValueError, match="decision_days_mean"):
        Maturation(decision_days_mean=0.5)
    d, a = Maturation(activation_days_max=10).draw_delays(5_000, np.random.default_rng(0))
    assert d.min() >= 1 and a.min() >= 0 and a.max() <= 10
    t = pd.DataFrame({"credit_granted": [True, False], "decided_day": [3.0, np.nan]})
    assert as_known(t, 3)["credit_granted"].isna().tolist() == [True, False]
    assert as_known(t, 4)["credit_granted"].tolist() == [1.0, 0.0]


# -- the drifting world ---------------------------------------------------------------------------

def test_users_arrive_and_leave_and_newcomers_need_credit_more(world: World):
    first, last = world.present(0), world.present(27)
    assert first.sum() == 20_000
    expected_arrivals = world.drift.arrival_rate * 20_000 * 28
    assert world.n_pool == 20_000 + round(expected_arrivals)
    arrived, left = (~first & last).sum(), (first & ~last).sum()
    assert 0.8 * expected_arrivals < arrived <= expected_arrivals
    assert 0.5 * 20_000 * 27 * world.drift.churn_rate < left < 1.5 * 20_000 * 27 * world.drift.churn_rate
    need = world.truth(0)["need"]
    assert need[world.arrive_day > 0].mean() > need[world.arrive_day == 0].mean() + 0.2
    users = world.platform_users(27)
    assert users["user_id"].tolist() == world.user_ids[last].tolist()


def test_behaviour_means_something_else_by_the_end():
    w = World(20_000, 56, seed=1)
    t0, t7 = w.truth(0), w.truth(49)
    u0, u7 = w.platform_users(0), w.platform_users(49)

    def rho(users: pd.DataFrame, truth: pd.DataFrame, col: str) -> float:
        worth = truth.set_index("user_id").loc[users["user_id"], "worth"].to_numpy()
        ok = users[col].notna().to_numpy()
        return spearmanr(users[col].to_numpy()[ok], worth[ok])[0]

    # instalment checkout went mainstream: from a mark of the less creditworthy to one of the creditworthy
    assert rho(u0, t0, "ecom_installment_share") < -0.1 < 0.1 < rho(u7, t7, "ecom_installment_share")
    assert rho(u0, t0, "job_search_days_30d") < rho(u7, t7, "job_search_days_30d") - 0.1
    assert u7["daily_minutes"].median() > u0["daily_minutes"].median() * 1.05  # a stickier app
    base, late = {c.name: c for c in COMPETITORS}, {c.name: c for c in w.drift.competitors(7.0)}
    assert late["other_lenders"].scale > 1.4 * base["other_lenders"].scale
    assert late["games"].scale < base["games"].scale
    assert late["other_lenders"].participation > base["other_lenders"].participation


def test_no_drift_stands_still():
    w = World(5_000, 21, seed=2, drift=NO_DRIFT)
    assert w.n_pool == 5_000 and w.present(20).all()
    assert np.allclose(w.truth(0)["expected_value"], w.truth(20)["expected_value"])
    assert w.drift.competitors(3.0) == COMPETITORS
    assert w.drift.feature_shift(3.0, *np.zeros((4, 3))) == {}


def test_same_seed_same_world():
    a, b, c = World(4_000, 21, seed=8), World(4_000, 21, seed=8), World(4_000, 21, seed=9)
    pd.testing.assert_frame_equal(a.platform_users(15), b.platform_users(15))
    assert np.array_equal(a.traffic(15).competing, b.traffic(15).competing)
    assert not a.platform_users(15)["user_id"].equals(c.platform_users(15)["user_id"])


def test_drift_parameters_are_checked():
    with pytest.raises(ValueError, match="churn_rate"):
        Drift(churn_rate=1.0)
    with pytest.raises(ValueError, match="unknown competitor"):
        Drift(competitor_bid_trend={"banks": 0.1})
    with pytest.raises(ValueError, match="horizon"):
        World(1_000, 7, seed=0).present(7)


# -- the day-stepped campaign ---------------------------------------------------------------------

def test_daily_outputs_agree_with_each_other(ran: DayCampaign, world: World):
    d = ran.daily
    assert d["day"].max() == 27 and ran.day == 28
    assert set(d.loc[d["day"] < 21, "table_version"]) == {"none"}
    assert set(d.loc[d["day"] >= 21, "table_version"]) == {"v2"}
    ev = ran.events()
    conv = ev[ev["event_type"] == "conversion"]
    assert sorted(conv["user_id"]) == sorted(ran.applicants["user_id"])
    assert (conv.groupby("arm").size() == d.groupby("arm")["applications"].sum()).all()
    assert ((ev["table_version"] == "v2") == (ev["ts"] >= ran.start_ts + 21 * 86_400)).all()
    spend = validate_spend(ran.spend_by_bucket(21, 27))
    assert spend["spend"].sum() == pytest.approx(d.loc[d["day"] >= 21, "spend"].sum())
    per_day = d.groupby("day")["spend"].sum()
    assert (per_day <= ran.budget_per_day * (1 + 1e-9)).all() and (per_day > 0.5 * ran.budget_per_day).all()
    customers = set(world.lender_customers()["user_id"])
    assert not customers & set(ev["user_id"])  # the lender's customers are not targeted
    # buckets are the experiment's, on every day and in every table version
    pos = world.index_of(ev["user_id"])
    assert (ev["bucket"].to_numpy() == ran.bucket[pos]).all() and (ev["arm"].to_numpy() == ran.arm[pos]).all()
    k = window_kpis(d, 21, 27)
    assert k.loc["treatment", "spend"] == pytest.approx(d.query("day >= 21 and arm == 'treatment'")["spend"].sum())
    assert k.loc["treatment", "cost_per_credit_user"] == pytest.approx(
        k.loc["treatment", "spend"] / k.loc["treatment", "credit_users"])


def test_same_world_same_days_and_only_bids_differ(world: World):
    a, b = DayCampaign(world), DayCampaign(world)
    pd.testing.assert_frame_equal(a.run(3), b.run(3))
    table = _table(a, 3.0, "v1", day=3)
    boosted, plain = a.run(4, table), b.run(4)
    # control is served 1.0 in both, on its own budget: the same users, traffic and luck give the same arm
    ctl = lambda d: d.loc[d["arm"] == "control"].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(ctl(boosted).drop(columns="table_version"),
                                  ctl(plain).drop(columns="table_version"))
    assert boosted.loc[boosted["arm"] == "treatment", "impressions"].sum() != \
        plain.loc[plain["arm"] == "treatment", "impressions"].sum()
    same = compare(plain, plain, 3, 6)
    assert same["relative"] == 0.0 and same["ci_low"] == 0.0 == same["ci_high"]


def test_a_table_may_change_boosts_but_not_the_experiment(world: World):
    c = DayCampaign(world, layer="credit_boost")
    table = _table(c, 1.5, "v1", day=0)
    moved = table.copy()
    moved.loc[0, "bucket"] = (moved.loc[0, "bucket"] + 1) % 1000
    with pytest.raises(ValueError, match="v1: user .* another bucket or arm"):
        c.step(moved)
    flipped = table.copy()
    flipped.loc[3, "arm"] = "control" if flipped.loc[3, "arm"] == "treatment" else "treatment"
    with pytest.raises(ValueError, match="another bucket or arm"):
        c.step(flipped)
    with pytest.raises(ValueError, match="experiment layer"):
        c.step(table.assign(layer="other"))
    with pytest.raises(ValueError, match="one table_version"):
        c.step(table.assign(table_version=["v1", "v2"] * (len(table) // 2) + ["v1"] * (len(table) % 2)))
    assert c.day == 0 and c.daily.empty  # a refused table runs no day
    c.step(table)
    assert c.day == 1 and set(c.daily["table_version"]) == {"v1"}


def test_boost_table_versions_from_activation_keep_their_experiment(world: World):
    """Tables built by fedacq.activate (two versions, one experiment) run on a DayCampaign; a table of
    another experiment (salt) is refused."""
    from fedacq.activate.table import ExperimentConfig, build_boost_table

    exp = ExperimentConfig(layer="value", salt="campaign-salt")
    p_grant = world.truth(0).loc[world.present(0), "p_grant"].to_numpy()
    scores = world.platform_users(0)[["user_id"]].assign(score=p_grant)
    v1 = build_boost_table(scores, "lender-acq", experiment=exp, version="v1")
    c = DayCampaign(world, v1.bucket_fn(), layer="value")
    c.step(v1.serving_frame())
    later = world.platform_users(1)[["user_id"]]
    later = later.assign(score=np.random.default_rng(0).random(len(later)))
    c.step(build_boost_table(later, "lender-acq", experiment=exp, version="v2").serving_frame())
    assert c.daily.groupby("day")["table_version"].first().tolist() == ["v1", "v2"]
    other = build_boost_table(scores, "lender-acq", experiment=ExperimentConfig(layer="value", salt="other"),
                              version="v3")
    with pytest.raises(ValueError, match="v3: user .* another bucket or arm"):
        c.step(other.serving_frame())


def test_refreshing_beats_a_model_frozen_after_week_one():
    """Eight weeks, local XGBoost stand-in: retrained weekly on matured labels vs frozen after week 1.

    The expected KPIs (no click or funnel noise; see fedacq.sim.campaign) over the last four weeks,
    with the paired bucket bootstrap interval; both arms share weeks 1-2 exactly."""
    from fedacq.sim.refresh import run_schedule

    w = World(40_000, 56, seed=0)
    frozen = run_schedule(w, (0, 7))
    weekly = run_schedule(w, range(0, 56, 7))
    early = lambda c: c.daily.loc[c.daily["day"] < 14].reset_index(drop=True)  # noqa: E731
    pd.testing.assert_frame_equal(early(frozen), early(weekly))
    assert weekly.daily["table_version"].nunique() == 8
    cmp = compare(weekly.daily, frozen.daily, 28, 55, kpi="expected_cost_per_credit_user")
    assert cmp["ci_high"] < -0.03, cmp
    placebo = compare(weekly.daily, frozen.daily, 28, 55, arm="control", kpi="cost_per_credit_user")
    assert placebo["relative"] == 0.0, placebo  # control is served 1.0 by both: the same arm
