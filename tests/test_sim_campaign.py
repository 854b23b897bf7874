"""The simulated campaign: outputs consistent with each other, boost-table semantics, and the economics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedacq.activate.events import validate_events
from fedacq.cli import main
from fedacq.sim.campaign import CampaignResult, salted_buckets, simulate_campaign
from fedacq.sim.market import Market, generate_market


@pytest.fixture(scope="module")
def small() -> Market:
    return generate_market(20_000, seed=11)


@pytest.fixture(scope="module")
def big() -> Market:
    return generate_market(150_000, seed=1)


def tiered_boosts(market: Market, score: np.ndarray, bucket_of=None) -> pd.DataFrame:
    """Tiers by score rank: top 20% x3.0, next 30% x1.6, next 30% x1.0, bottom 20% x0.3."""
    users = market.platform_users["user_id"]
    bucket, arm = (bucket_of or salted_buckets())(users)
    r = pd.Series(score).rank(pct=True).to_numpy()
    boost = np.select([r > 0.8, r > 0.5, r > 0.2], [3.0, 1.6, 1.0], 0.3)
    return pd.DataFrame({"user_id": users, "boost": boost, "bucket": bucket, "arm": arm,
                         "layer": "credit_boost", "table_version": "v1"})


def test_outputs_agree_with_each_other(small: Market):
    r = simulate_campaign(small, days=4, seed=2)
    ev = validate_events(r.events)
    conv = ev[ev["event_type"] == "conversion"]
    clicks = ev[ev["event_type"] == "click"]
    assert len(clicks) > 0 and len(conv) > 0
    assert conv["user_id"].is_unique and set(conv["user_id"]) <= set(clicks["user_id"])
    assert sorted(conv["user_id"]) == sorted(r.lender_funnel["user_id"])
    assert r.lender_funnel["applied"].all()
    assert set(r.spend_by_bucket.columns) == {"bucket", "arm", "impressions", "clicks", "spend"}
    for arm in ("treatment", "control"):
        sb = r.spend_by_bucket[r.spend_by_bucket["arm"] == arm]
        assert sb["spend"].sum() == pytest.approx(r.summary.loc[arm, "spend"], rel=1e-6)
        assert sb["clicks"].sum() == (clicks["arm"] == arm).sum()
        assert r.summary.loc[arm, "credit_users"] == r.lender_funnel.merge(
            conv[conv["arm"] == arm], on="user_id")["credit_granted"].sum()
    daily = r.daily
    assert (daily["spend"] <= daily["budget"] * (1 + 1e-9)).all()
    assert (daily["spend"] > 0.5 * daily["budget"]).all()  # the default budget binds
    customers = set(small.lender_customers["user_id"])
    assert not customers & set(ev["user_id"])  # existing customers are suppressed


def test_same_seed_same_campaign(small: Market):
    a, b = simulate_campaign(small, days=2, seed=5), simulate_campaign(small, days=2, seed=5)
    pd.testing.assert_frame_equal(a.events, b.events)
    pd.testing.assert_frame_equal(a.summary, b.summary)
    c = simulate_campaign(small, days=2, seed=6)
    assert not a.events["user_id"].equals(c.events["user_id"])


def test_boost_table_rows_win_and_control_is_served_one(small: Market):
    table = tiered_boosts(small, small.truth["expected_value"].to_numpy()[:small.n_users])
    table = table.iloc[: small.n_users // 2].copy()
    table["bucket"], table["arm"] = 7, "control"  # listed users: all control, whatever their boost
    r = simulate_campaign(small, table, salted_buckets("s", treatment_share=1.0), days=2, seed=1)
    assert r.summary.loc["control", "mean_boost_served"] == 1.0
    ev = r.events.set_index("user_id")
    listed = ev.index.isin(table["user_id"])
    assert (ev.loc[listed, "bucket"] == 7).all() and (ev.loc[listed, "arm"] == "control").all()
    assert (ev.loc[~listed, "arm"] == "treatment").all()
    assert (ev["table_version"] == "v1").all() and (ev["layer"] == "credit_boost").all()


def test_salted_buckets_share_and_salt():
    users = pd.Series([f"{i:016x}" for i in range(20_000)])
    b1, a1 = salted_buckets("x", 0.3)(users)
    b2, _ = salted_buckets("y", 0.3)(users)
    assert ((b1 >= 0) & (b1 < 1000)).all()
    assert abs((a1 == "treatment").mean() - 0.3) < 0.02
    assert (a1 == np.where(b1 < 300, "treatment", "control")).all()
    assert (b1 != b2).mean() > 0.9
    assert (salted_buckets("x", 0.3)(users)[0] == b1).all()


def test_bad_boost_tables_are_named(small: Market):
    table = tiered_boosts(small, np.ones(small.n_users))
    with pytest.raises(ValueError, match="missing column"):
        simulate_campaign(small, table.drop(columns="layer"), days=1)
    bad = table.copy()
    bad.loc[0, "boost"] = -1.0
    with pytest.raises(ValueError, match="'boost'"):
        simulate_campaign(small, bad, days=1)
    bad = table.copy()
    bad.loc[0, "arm"] = "treat"
    with pytest.raises(ValueError, match="'arm'"):
        simulate_campaign(small, bad, days=1)
    with pytest.raises(ValueError, match="duplicate user_id"):
        simulate_campaign(small, pd.concat([table, table.iloc[:1]]), days=1)


def _rel(r: CampaignResult, col: str) -> float:
    return r.summary.loc["treatment", col] / r.summary.loc["control", col] - 1.0


def test_oracle_boost_beats_control_and_random_boost_does_not(big: Market):
    value = big.truth["expected_value"].to_numpy()[:big.n_users]
    oracle = simulate_campaign(big, tiered_boosts(big, value), days=8, seed=3)
    shuffled = np.random.default_rng(0).permutation(value)
    random = simulate_campaign(big, tiered_boosts(big, shuffled), days=8, seed=3)
    for r in (oracle, random):  # equal budget per user in both arms, and it is spent
        s = r.summary
        assert s.loc["treatment", "spend"] / s.loc["treatment", "users"] == pytest.approx(
            s.loc["control", "spend"] / s.loc["control", "users"], rel=0.03)
    # the expected_* KPIs carry no click or funnel noise, so a small market separates the arms
    # (realised KPIs need the demo's market size for that)
    assert _rel(oracle, "expected_cost_per_credit_user") < -0.1
    assert _rel(oracle, "expected_drawdown_per_applicant") > 0.25
    assert _rel(oracle, "expected_value_per_impression") > 0.25
    # a useless boost buys nothing; scattering bids at random even costs a little efficiency
    assert 0.0 < _rel(random, "expected_cost_per_credit_user") < 0.1
    assert abs(_rel(random, "expected_drawdown_per_applicant")) < 0.05
    assert abs(_rel(random, "expected_value_per_impression")) < 0.08

def test_cli_writes_market_and_campaign(tmp_path, capsys):
    assert main(["sim", "market", "--n-users", "3000", "--seed", "2", "--out", str(tmp_path / "m")]) == 0
    assert main(["sim", "campaign", "--market", str(tmp_path / "m"), "--days", "2",
                 "--format", "csv", "--out", str(tmp_path / "c")]) == 0
    validate_events(pd.read_csv(tmp_path / "c" / "events.csv", dtype={"user_id": str}))
    assert (tmp_path / "m" / "platform_users.parquet").exists()
    assert main(["sim", "campaign", "--market", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "market.json" in capsys.readouterr().err
