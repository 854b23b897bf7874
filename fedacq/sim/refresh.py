"""Does refreshing the model matter? A campaign schedule with a local stand-in model.

The campaign loop retrains the joint model on the lender's matured labels and
publishes a new boost table. Before the federated models are wired into it, this
module plays the loop with a **stand-in**: plain local XGBoost on the joined
simulated data (the lender's table as known on the day, :meth:`DayCampaign.lender_table`,
joined on ``user_id`` with the platform's features as of the day,
:meth:`fedacq.sim.world.World.platform_users`), trained on the rows whose label has
matured. It is an oracle only in that it holds the lender's labels and the platform's
features in one place (what the federated prospect model learns from, without pooling
them); it sees no truth.

:func:`run_schedule` runs a :class:`fedacq.sim.days.DayCampaign` for ``days`` days,
rescoring the platform's users and publishing a tiered boost table every
``rescore_days`` with the live model, and retraining on ``retrain_days``. A model
*frozen after week 1* is ``retrain_days=(0, 7)``; *retrained weekly* is
``range(0, days, 7)``. Both rescore weekly, so the comparison isolates a stale model
from a stale score table (a user who arrives in week 5 is scored by either).
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pandas as pd
import xgboost as xgb

from fedacq.sim.days import DayCampaign
from fedacq.sim.market import PLATFORM_FEATURES
from fedacq.sim.world import World

#: the stand-in's XGBoost parameters (small data: a few thousand labelled rows).
STANDIN_PARAMS = {"n_estimators": 80, "max_depth": 3, "learning_rate": 0.1, "min_child_weight": 5.0,
                  "subsample": 0.8, "tree_method": "hist", "n_jobs": 1, "random_state": 0}
#: the demo's tiers: score-rank cuts and the boost of each tier (lowest first).
TIER_CUTS = (0.2, 0.5, 0.8)
TIER_BOOSTS = (0.3, 1.0, 1.6, 3.0)


def training_table(campaign: DayCampaign, day: int, label: str) -> tuple[pd.DataFrame, np.ndarray]:
    """Platform features and the matured ``label`` of the lender's rows known at the start of
    ``day`` that are on the platform that day (what a joint model trained on ``day`` sees)."""
    lender = campaign.lender_table(day)
    if label not in lender.columns:
        raise ValueError(f"label {label!r} is not a column of the lender's table")
    lender = lender.loc[lender[label].notna(), ["user_id", label]]
    joined = campaign.world.platform_users(day).merge(lender, on="user_id", how="inner")
    return joined[list(PLATFORM_FEATURES)], joined[label].to_numpy(float)


def fit_local(campaign: DayCampaign, day: int, label: str = "credit_granted",
              params: dict | None = None) -> xgb.XGBClassifier:
    """The stand-in model trained at the start of ``day`` (see the module docstring)."""
    x, y = training_table(campaign, day, label)
    if len(np.unique(y)) < 2:
        raise ValueError(f"day {day}: the matured {label!r} labels have a single class ({len(y)} rows)")
    return xgb.XGBClassifier(**{**STANDIN_PARAMS, **(params or {})}).fit(x, y)


def score_users(world: World, model: xgb.XGBClassifier, day: int) -> pd.DataFrame:
    """(``user_id``, ``score``) of every platform user on ``day``, from that day's features."""
    users = world.platform_users(day)
    return pd.DataFrame({"user_id": users["user_id"],
                         "score": model.predict_proba(users[list(PLATFORM_FEATURES)])[:, 1]})


def tiered_boost_table(campaign: DayCampaign, scores: pd.DataFrame, version: str,
                       cuts: tuple[float, ...] = TIER_CUTS, boosts: tuple[float, ...] = TIER_BOOSTS) -> pd.DataFrame:
    """A boost table (:data:`fedacq.sim.campaign.BOOST_COLUMNS`) by score rank: users above
    cut ``i`` get ``boosts[i + 1]``; bucket and arm are the campaign's experiment's."""
    if len(boosts) != len(cuts) + 1:
        raise ValueError(f"{len(cuts)} cuts need {len(cuts) + 1} boosts, got {len(boosts)}")
    rank = scores["score"].rank(pct=True).to_numpy()
    pos = campaign.world.index_of(scores["user_id"])
    if (pos < 0).any():
        raise ValueError("scores: user ids that are not in the world")
    return pd.DataFrame({"user_id": scores["user_id"].to_numpy(),
                         "boost": np.asarray(boosts, dtype=float)[np.searchsorted(cuts, rank, side="left")],
                         "bucket": campaign.bucket[pos], "arm": campaign.arm[pos], "layer": campaign.layer,
                         "table_version": version})


def run_schedule(world: World, retrain_days: Collection[int], days: int | None = None, *,
                 rescore_days: int = 7, label: str = "credit_granted", params: dict | None = None,
                 on_day: Callable[[int, str], None] | None = None, **campaign_kw) -> DayCampaign:
    """A campaign of ``days`` days (default: the world's horizon) on ``world`` with the stand-in
    model retrained on ``retrain_days`` (must include 0) and a new boost table every
    ``rescore_days`` (see the module docstring). ``campaign_kw`` go to :class:`DayCampaign`;
    ``on_day(day, table_version)`` is called after each day (progress)."""
    days = world.horizon_days if days is None else days
    if 0 not in retrain_days:
        raise ValueError("retrain_days must include day 0 (the campaign starts with a model)")
    campaign = DayCampaign(world, **campaign_kw)
    model, table, n_model = None, None, 0
    for day in range(days):
        if day in retrain_days:
            model, n_model = fit_local(campaign, day, label, params), n_model + 1
        if day % rescore_days == 0:
            table = tiered_boost_table(campaign, score_users(world, model, day), f"m{n_model}-d{day}")
        campaign.step(table)
        if on_day is not None:
            on_day(day, str(table["table_version"].iloc[0]))
    return campaign
