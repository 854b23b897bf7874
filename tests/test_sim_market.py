"""The synthetic market: determinism, sizes, identifiers, missingness, and who sees the latent value."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from fedacq.sim import ids
from fedacq.sim.market import (LENDER_FEATURES, PLATFORM_FEATURES, REGION_TIER, Market,
                               generate_market)


@pytest.fixture(scope="module")
def market() -> Market:
    return generate_market(60_000, seed=3, lender_share=0.1)


def test_same_seed_same_market_other_seed_other_market():
    a, b, c = generate_market(3_000, seed=7), generate_market(3_000, seed=7), generate_market(3_000, seed=8)
    for name in ("platform_users", "lender_customers", "truth"):
        pd.testing.assert_frame_equal(getattr(a, name), getattr(b, name))
    assert not a.platform_users["user_id"].equals(c.platform_users["user_id"])


def test_sizes_and_columns(market: Market):
    users, cust, truth = market.platform_users, market.lender_customers, market.truth
    assert len(users) == 60_000
    assert list(users.columns) == ["user_id", "phone", *PLATFORM_FEATURES]
    assert market.platform_feature_columns == list(PLATFORM_FEATURES)
    assert set(market.lender_feature_columns) == set(LENDER_FEATURES) <= set(cust.columns)
    inside = cust["user_id"].isin(users["user_id"])
    assert inside.sum() == 6_000
    assert (~inside).sum() == round(6_000 * 0.15 / 0.85)  # off-platform customers: PSI finds a strict subset
    assert len(truth) == len(users) + (~inside).sum()
    assert truth["user_id"].iloc[:len(users)].tolist() == users["user_id"].tolist()
    assert users["user_id"].is_unique and cust["user_id"].is_unique
    assert users["user_id"].str.fullmatch(r"[0-9a-f]{16}").all()
    label = cust[market.label_column]
    assert label.dtype == bool and 0.05 < label.mean() < 0.4


def test_label_is_the_documented_funnel_event(market: Market):
    c = market.lender_customers
    expected = c["credit_granted"] & c["first_day_drawdown"] & c["repaid"] & (c["drawdown_amount"] >= 1000)
    assert (c["high_value"] == expected).all()
    assert not (c["first_day_drawdown"] & ~c["credit_granted"]).any()
    assert (c.loc[~c["first_day_drawdown"], "drawdown_amount"] == 0).all()
    assert (c.loc[~c["repaid"], "fees"] == 0).all()


def _normalise(phone: str) -> int:
    """What a PSI party is expected to do with a raw phone string (see fedacq.sim.ids)."""
    digits = re.sub(r"\D", "", phone)
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and len(digits) == 11 + len(prefix):
            digits = digits[len(prefix):]
    return int(digits)


def test_raw_phones_are_noisy_but_normalise_to_the_user_id(market: Market):
    for table, min_noise in ((market.platform_users, 0.05), (market.lender_customers, 0.2)):
        raw = table["phone"].iloc[:3000]
        assert (~raw.str.fullmatch(r"1\d{10}")).mean() > min_noise
        phones = np.array([_normalise(p) for p in raw], dtype=np.int64)
        assert (ids.user_id_from_phone(phones) == table["user_id"].iloc[:3000].to_numpy()).all()


def test_missing_values_where_real_data_has_them(market: Market):
    u = market.platform_users
    assert 0.2 < u["ecom_spend_30d"].isna().mean() < 0.5  # people who never shop
    assert (u["ecom_spend_30d"].isna() == u["ecom_orders_30d"].isna()).all()
    no_local = REGION_TIER[u["region"].to_numpy()] == 4
    assert (u["local_life_orders_30d"].isna() == no_local).all()
    always = ["finance_watch_min_7d", "live_tip_30d", "job_search_days_30d", "daily_minutes",
              "days_active_30d", "device_price_tier", "region", "age_band"]
    assert not u[always].isna().any().any()
    assert u["days_active_30d"].between(1, 30).all()


def _auc(x: pd.DataFrame, y: pd.Series) -> float:
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.4, random_state=0, stratify=y)
    model = HistGradientBoostingClassifier(max_iter=60, max_depth=3, random_state=0).fit(xtr, ytr)
    return roc_auc_score(yte, model.predict_proba(xte)[:, 1])


def test_platform_sees_value_less_well_than_lender(market: Market):
    cust = market.lender_customers.merge(market.platform_users, on="user_id", suffixes=("", "_p"))
    y = cust[market.label_column]
    auc_platform = _auc(cust[market.platform_feature_columns], y)
    auc_lender = _auc(cust[market.lender_feature_columns], y)
    auc_both = _auc(cust[market.platform_feature_columns + market.lender_feature_columns], y)
    assert 0.58 < auc_platform < auc_lender <= auc_both + 0.01
    # and on the whole user base, platform behaviour tracks the latent value
    truth = market.truth.iloc[:market.n_users]
    rho = market.platform_users[["ecom_spend_30d", "device_price_tier", "job_search_days_30d"]].corrwith(
        truth["expected_value"], method="spearman")
    assert rho["ecom_spend_30d"] > 0.1 and rho["device_price_tier"] > 0.1 and rho["job_search_days_30d"] < -0.05


def test_lender_customers_are_biased_towards_applicants(market: Market):
    truth = market.truth.iloc[:market.n_users]
    is_cust = truth["lender_customer"].to_numpy()
    assert truth.loc[is_cust, "p_apply"].mean() > 1.3 * truth.loc[~is_cust, "p_apply"].mean()


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_save_and_load_round_trip(tmp_path, fmt):
    m = generate_market(2_000, seed=1)
    m.save(tmp_path, fmt=fmt)
    back = Market.load(tmp_path)
    pd.testing.assert_frame_equal(back.platform_users, m.platform_users, check_dtype=fmt == "parquet")
    pd.testing.assert_frame_equal(back.lender_customers, m.lender_customers, check_dtype=fmt == "parquet")
    assert back.params == m.params and back.label_column == m.label_column


def test_bad_parameters_and_paths_are_named(tmp_path):
    with pytest.raises(ValueError, match="lender_share"):
        generate_market(100, lender_share=0.0)
    with pytest.raises(ValueError, match="n_users"):
        generate_market(0)
    with pytest.raises(FileNotFoundError, match="market.json"):
        Market.load(tmp_path)
