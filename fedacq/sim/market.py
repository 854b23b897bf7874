"""A seeded synthetic credit market: platform users, the lender's customers, and the truth.

Model
-----
Each person gets an age band, a region (31 regions in four city tiers) and four
latent traits on a standard-normal scale:

- ``need``: wants credit now (younger people more); drives applying;
- ``worth``: creditworthiness (older people more); drives approval and repayment;
- ``wealth``: income and spending power (tier-1 cities and ages 35-54 more);
- ``activity``: how much the person uses the app (independent of the rest).

``need``, ``worth`` and ``wealth`` are correlated (need-worth -0.3,
need-wealth -0.1, worth-wealth +0.5): people who want credit most are on
average less creditworthy. :mod:`fedacq.sim.funnel` turns the traits into
funnel propensities; ``truth["expected_value"]`` (expected first-day drawdown
per application) is the latent credit value of a person.

What each party sees
--------------------
The platform has *every* user and sees the traits only through behaviour,
noisily (:data:`PLATFORM_FEATURES`): finance-content watching, e-commerce
spend/orders/instalment share (missing for people who never shop), live-stream
tipping, local-life orders (missing where a region has no local-life service),
job-search days, daily minutes, days active, device price tier, region, age band.

The lender has its existing customers: ``lender_share`` of the platform's user
count, drawn with probability proportional to ``p_apply`` (customers are people
who applied before), plus ``lender_outside_share`` of them who are not platform
users at all (so PSI finds a true subset). It knows their funnel outcomes from
its own books and sees ``worth``/``wealth`` better than the platform does
through its own features (:data:`LENDER_FEATURES`: bureau-like score, income
band, past loans, past delinquencies, months on book).

Label
-----
``high_value`` = credit granted AND drew down on the first day AND repaid AND
the drawdown amount >= ``high_value_min_drawdown`` (default 1000). It is the
event the lender makes money on; rejected or dormant applicants are not it.

Identifiers
-----------
``user_id`` (16 hex digits, a stable hash of the phone number) is the same on
both sides; ``phone`` is the raw string each side stores, with its own
formatting noise (:mod:`fedacq.sim.ids`).

Rows of ``truth`` are in the order of ``platform_users`` for the first
``n_users`` rows, followed by the lender's off-platform customers.
Generation is vectorised: a million users take a few seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

from fedacq.sim import funnel, ids

AGE_BANDS = ("18-24", "25-34", "35-44", "45-54", "55+")
_AGE_P = np.array([0.20, 0.31, 0.25, 0.15, 0.09])
_AGE_NEED = np.array([0.35, 0.15, 0.0, -0.2, -0.45])
_AGE_WORTH = np.array([-0.45, -0.1, 0.15, 0.25, 0.2])
_AGE_WEALTH = np.array([-0.5, 0.0, 0.3, 0.25, -0.1])
#: region code -> city tier (1 = largest cities); region names are ``R00``..``R30``.
REGION_TIER = np.array([1] * 4 + [2] * 8 + [3] * 10 + [4] * 9)
REGIONS = tuple(f"R{i:02d}" for i in range(len(REGION_TIER)))
_TIER_WEALTH = {1: 0.55, 2: 0.2, 3: -0.15, 4: -0.45}
_LATENT_CORR = np.array([[1.0, -0.3, -0.1],
                         [-0.3, 1.0, 0.5],
                         [-0.1, 0.5, 1.0]])

#: platform feature columns, in order. ``region`` is nominal (integer code into
#: :data:`REGIONS`), ``age_band`` ordinal (code into :data:`AGE_BANDS`).
PLATFORM_FEATURES = (
    "finance_watch_min_7d", "ecom_spend_30d", "ecom_orders_30d", "ecom_installment_share",
    "live_tip_30d", "local_life_orders_30d", "job_search_days_30d", "daily_minutes",
    "days_active_30d", "device_price_tier", "region", "age_band",
)
CATEGORICAL_FEATURES = ("region",)
#: platform features whose linear predictor :func:`_platform_features` can shift (drift).
SHIFTABLE_FEATURES = ("finance_watch_min_7d", "ecom_spend_30d", "ecom_installment_share", "live_tip_30d",
                      "job_search_days_30d", "device_price_tier")
LENDER_FEATURES = ("bureau_score", "income_band", "past_loans", "past_delinquencies", "months_on_book")
OUTCOME_COLUMNS = ("credit_granted", "first_day_drawdown", "drawdown_amount", "fees", "repaid")
LABEL = "high_value"


@dataclass
class Market:
    """A generated market. ``truth`` is for evaluation and the simulator only: no party has it."""

    platform_users: pd.DataFrame
    lender_customers: pd.DataFrame
    truth: pd.DataFrame
    platform_feature_columns: list[str]
    lender_feature_columns: list[str]
    label_column: str = LABEL
    categorical_columns: list[str] = field(default_factory=lambda: list(CATEGORICAL_FEATURES))
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_users(self) -> int:
        return len(self.platform_users)

    def save(self, directory: str | Path, fmt: str = "parquet") -> list[Path]:
        """Write the three tables and ``market.json`` (columns, params) to ``directory``."""
        if fmt not in ("parquet", "csv"):
            raise ValueError(f"format must be 'parquet' or 'csv', got {fmt!r}")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name, df in self.tables().items():
            path = out / f"{name}.{fmt}"
            if fmt == "parquet":
                df.to_parquet(path, index=False)
            else:
                df.to_csv(path, index=False)
            written.append(path)
        meta = {"format": fmt, "platform_feature_columns": self.platform_feature_columns,
                "lender_feature_columns": self.lender_feature_columns,
                "label_column": self.label_column, "categorical_columns": self.categorical_columns,
                "params": self.params, "regions": list(REGIONS), "age_bands": list(AGE_BANDS)}
        (out / "market.json").write_text(json.dumps(meta, indent=2))
        return [*written, out / "market.json"]

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"platform_users": self.platform_users, "lender_customers": self.lender_customers,
                "truth": self.truth}

    @classmethod
    def load(cls, directory: str | Path) -> "Market":
        """Read a market written by :meth:`save`."""
        src = Path(directory)
        meta_path = src / "market.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{meta_path}: not a saved market (market.json missing)")
        meta = json.loads(meta_path.read_text())
        fmt = meta["format"]
        tables = {}
        for name in ("platform_users", "lender_customers", "truth"):
            path = src / f"{name}.{fmt}"
            if not path.exists():
                raise FileNotFoundError(f"{path}: missing table of the saved market")
            if fmt == "parquet":
                tables[name] = pd.read_parquet(path)
            else:
                tables[name] = pd.read_csv(path, dtype={"user_id": str, "phone": str},
                                           keep_default_na=True)
        return cls(platform_users=tables["platform_users"], lender_customers=tables["lender_customers"],
                   truth=tables["truth"], platform_feature_columns=meta["platform_feature_columns"],
                   lender_feature_columns=meta["lender_feature_columns"],
                   label_column=meta["label_column"], categorical_columns=meta["categorical_columns"],
                   params=meta["params"])


def _people(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Demographics and latent traits of ``n`` people."""
    age = rng.choice(len(AGE_BANDS), size=n, p=_AGE_P).astype(np.int8)
    region_w = 1.0 / np.arange(1, len(REGION_TIER) + 1) ** 0.6  # a few big provinces, a long tail
    region = rng.choice(len(REGION_TIER), size=n, p=region_w / region_w.sum()).astype(np.int16)
    tier = REGION_TIER[region]
    z = rng.standard_normal((n, 3)) @ np.linalg.cholesky(_LATENT_CORR).T
    tier_wealth = np.array([0.0] + [_TIER_WEALTH[t] for t in (1, 2, 3, 4)])[tier]
    return {
        "age_band": age, "region": region, "tier": tier,
        "need": z[:, 0] + _AGE_NEED[age],
        "worth": z[:, 1] + _AGE_WORTH[age],
        "wealth": z[:, 2] + _AGE_WEALTH[age] + tier_wealth,
        "activity": rng.standard_normal(n),
    }


def _platform_features(pp: dict[str, np.ndarray], rng: np.random.Generator,
                       shift: Mapping[str, np.ndarray] | None = None) -> pd.DataFrame:
    """Behavioural features: each a noisy, partial view of the latent traits.

    ``shift`` (feature name -> array or number) is added to that feature's linear
    predictor (:data:`SHIFTABLE_FEATURES`): how :mod:`fedacq.sim.drift` changes what
    a behaviour says about a person over the weeks. Without it the market is the static one.
    """
    n = len(pp["need"])
    unknown = set(shift or ()) - set(SHIFTABLE_FEATURES)
    if unknown:
        raise ValueError(f"shift: features {sorted(unknown)} have no linear predictor to shift")
    sh = lambda name: (shift or {}).get(name, 0.0)  # noqa: E731 - 0.0 leaves the static market as it was
    need, worth, wealth, act = pp["need"], pp["worth"], pp["wealth"], pp["activity"]
    young = (pp["age_band"] == 0).astype(float)
    old = (pp["age_band"] == 4).astype(float)
    e = lambda: rng.standard_normal(n)  # noqa: E731 - fresh noise per feature

    watches = rng.random(n) < funnel.sigmoid(-0.6 + 0.5 * need + 0.3 * wealth + 0.2 * act
                                            + sh("finance_watch_min_7d"))
    finance = np.where(watches, np.round(np.exp(2.0 + 0.35 * need + 0.25 * wealth + 0.8 * e()), 1), 0.0)

    shops = rng.random(n) < funnel.sigmoid(0.7 + 0.5 * wealth + 0.2 * act - 0.8 * old)
    log_spend = 5.3 + 0.6 * wealth + 0.15 * worth + 0.15 * need + 0.9 * e() + sh("ecom_spend_30d")
    spend = np.where(shops, np.round(np.exp(log_spend), 2), np.nan)
    orders = np.where(shops, rng.poisson(np.exp(0.9 + 0.35 * wealth + 0.15 * need + 0.1 * act)), np.nan)
    inst = funnel.sigmoid(-1.6 + 0.6 * need - 0.45 * worth + 0.7 * e()
                          + sh("ecom_installment_share"))
    installment = np.where(shops & (orders > 0), np.round(inst, 3), np.nan)

    tips = rng.random(n) < funnel.sigmoid(-2.4 + 0.4 * need - 0.25 * worth + 0.5 * young + 0.4 * act
                                            + sh("live_tip_30d"))
    tip = np.where(tips, np.round(np.exp(3.2 + 0.5 * wealth + 1.1 * e()), 2), 0.0)

    has_local = pp["tier"] <= 3
    local = np.where(has_local, rng.poisson(np.exp(0.2 + 0.45 * wealth - 0.3 * (pp["tier"] - 1) + 0.4 * e())), np.nan)

    job = rng.binomial(30, funnel.sigmoid(-3.4 + 0.55 * need - 0.55 * worth - 0.3 * wealth + sh("job_search_days_30d")))

    minutes = np.round(np.exp(3.7 + 0.55 * act + 0.1 * need + 0.15 * young + 0.4 * e()), 1)
    days = np.maximum(1, rng.binomial(30, funnel.sigmoid(1.2 + 1.3 * act)))
    device = np.digitize(0.8 * wealth + 0.6 * e() + sh("device_price_tier"), [-1.2, -0.4, 0.4, 1.2]) + 1

    return pd.DataFrame({
        "finance_watch_min_7d": finance, "ecom_spend_30d": spend, "ecom_orders_30d": orders,
        "ecom_installment_share": installment, "live_tip_30d": tip, "local_life_orders_30d": local,
        "job_search_days_30d": job.astype(np.int16), "daily_minutes": minutes,
        "days_active_30d": days.astype(np.int16), "device_price_tier": device.astype(np.int8),
        "region": pp["region"], "age_band": pp["age_band"],
    })


def _lender_features(pp: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """The lender's own view of its customers: closer to worth and wealth than the platform's."""
    n = len(pp["need"])
    score = np.clip(np.round(620 + 75 * pp["worth"] + 25 * rng.standard_normal(n)), 300, 850)
    income = np.digitize(0.9 * pp["wealth"] + 0.4 * rng.standard_normal(n), [-1.2, -0.5, 0.0, 0.5, 1.2]) + 1
    return pd.DataFrame({
        "bureau_score": score.astype(np.int16),
        "income_band": income.astype(np.int8),
        "past_loans": rng.poisson(np.exp(0.2 + 0.5 * pp["need"])).astype(np.int16),
        "past_delinquencies": rng.poisson(np.exp(-1.6 - 0.9 * pp["worth"])).astype(np.int16),
        "months_on_book": rng.integers(1, 61, size=n).astype(np.int16),
    })


def _weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """``k`` distinct indices drawn with probability proportional to ``weights`` (sorted)."""
    keys = np.log(rng.random(len(weights))) / weights  # Efraimidis-Spirakis: top-k keys
    return np.sort(np.argpartition(-keys, k - 1)[:k]) if k else np.empty(0, dtype=np.int64)


def generate_market(n_users: int = 200_000, seed: int = 0, lender_share: float = 0.03,
                    lender_outside_share: float = 0.15, high_value_min_drawdown: float = 1000.0,
                    platform_phone_noise: float = 0.1, lender_phone_noise: float = 0.3) -> Market:
    """Generate a market of ``n_users`` platform users (see the module docstring).

    Parameters
    ----------
    n_users: platform users (the platform holds all of them).
    seed: everything is a function of the seed.
    lender_share: lender customers who are platform users, as a share of ``n_users``.
    lender_outside_share: share of the lender's customers who are *not* platform users.
    high_value_min_drawdown: minimum first-day drawdown of a ``high_value`` customer.
    platform_phone_noise, lender_phone_noise: share of each side's raw phones that are
        not in the plain 11-digit format.
    """
    if n_users < 1:
        raise ValueError(f"n_users must be positive, got {n_users}")
    if not 0.0 < lender_share <= 1.0:
        raise ValueError(f"lender_share must be in (0, 1], got {lender_share}")
    if not 0.0 <= lender_outside_share < 1.0:
        raise ValueError(f"lender_outside_share must be in [0, 1), got {lender_outside_share}")
    rng = np.random.default_rng(seed)
    n_inside = max(1, round(lender_share * n_users))
    n_outside = round(n_inside * lender_outside_share / (1.0 - lender_outside_share))
    n_all = n_users + n_outside

    pp = _people(n_all, rng)
    prop = funnel.propensities(pp["need"], pp["worth"], pp["wealth"], pp["activity"])
    phone = ids.draw_phones(n_all, rng)
    user_id = ids.user_id_from_phone(phone)
    if len(np.unique(user_id)) != n_all:
        raise RuntimeError("user_id hash collision; use another seed")

    # the platform's pCVR for the lender's ad: a good model of who clicks and applies
    pcvr = prop["p_click"].to_numpy() * prop["p_apply"].to_numpy() * np.exp(0.3 * rng.standard_normal(n_all) - 0.045)

    on_platform = np.arange(n_all) < n_users
    platform = _platform_features({k: v[:n_users] for k, v in pp.items()}, rng)
    platform.insert(0, "phone", ids.raw_phones(phone[:n_users], rng, platform_phone_noise, (3, 1, 1, 0, 1)))
    platform.insert(0, "user_id", user_id[:n_users])

    inside = _weighted_sample(prop["p_apply"].to_numpy()[:n_users], n_inside, rng)
    cust = np.concatenate([inside, np.arange(n_users, n_all)])
    cust = cust[rng.permutation(len(cust))]
    lender = _lender_features({k: v[cust] for k, v in pp.items()}, rng)
    out = funnel.draw_outcomes(prop.iloc[cust].reset_index(drop=True), rng)
    for col in OUTCOME_COLUMNS:
        lender[col] = getattr(out, col)
    lender[LABEL] = out.credit_granted & out.first_day_drawdown & out.repaid & \
        (out.drawdown_amount >= high_value_min_drawdown)
    lender.insert(0, "phone", ids.raw_phones(phone[cust], rng, lender_phone_noise, (1, 1, 3, 2, 1)))
    lender.insert(0, "user_id", user_id[cust])

    truth = pd.DataFrame({"user_id": user_id, "on_platform": on_platform,
                          "lender_customer": np.isin(np.arange(n_all), cust),
                          "age_band": pp["age_band"], "region": pp["region"],
                          "need": pp["need"], "worth": pp["worth"], "wealth": pp["wealth"],
                          "activity": pp["activity"]})
    truth = pd.concat([truth, prop], axis=1)
    truth["expected_value"] = funnel.expected_value(prop)
    truth["pcvr"] = pcvr

    params = {"n_users": n_users, "seed": seed, "lender_share": lender_share,
              "lender_outside_share": lender_outside_share,
              "high_value_min_drawdown": high_value_min_drawdown,
              "platform_phone_noise": platform_phone_noise, "lender_phone_noise": lender_phone_noise}
    return Market(platform_users=platform, lender_customers=lender, truth=truth,
                  platform_feature_columns=list(PLATFORM_FEATURES),
                  lender_feature_columns=list(LENDER_FEATURES), params=params)
