"""The campaign's data source on the simulator: each party's files day by day, from a drifting world.

:class:`SimulatedMarket` plays what each party's own systems would do on a real campaign:

* ``refresh(day)``: the lender's customer table with the labels matured by ``day`` and the
  platform's users with that day's features (:meth:`fedacq.sim.days.DayCampaign.market_on`),
  written as each party's registered files (:func:`fedacq.pipeline.write_party_files`); the
  fault ``shuffled_labels`` permutes the lender's label column (the demo's injected bad cycle:
  a broken label join, whose model has no signal and must be refused by the validation gate);
* ``deliver(first, day)``: the campaign files a ``measure`` job reads (the lender's applicants'
  funnel, the click events reported to it, the platform's ad log and per-bucket spend) for days
  ``first..day-1``; the fault ``lost_treatment_clicks`` drops the click reports of
  :data:`LOST_SHARE` of the treatment arm's clicking users on their way to the lender (the demo's
  constructed negative lift: the lender attributes fewer credit users to the treatment's spend);
* ``step(day, version)``: the day's auctions with the boost table the service serves (read from
  the service's table root by version).

It also runs the **frozen** counterfactual on the same world and experiment: a campaign whose
model is frozen at the first published version, rescored every ``cycle_days`` on the day's users
(so it differs from the refreshed campaign only by its model), for
:func:`fedacq.sim.days.compare` over the last weeks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedacq import pipeline
from fedacq.campaign.config import Campaign
from fedacq.pipeline import LENDER, PLATFORM

#: the share of the treatment arm's clicking users whose reports the ``lost_treatment_clicks`` fault drops.
LOST_SHARE = 0.6


def registered(root: Path, c: Campaign) -> dict[str, dict[str, Path]]:
    """Each party's registry for the campaign's data sets (the files :meth:`SimulatedMarket.refresh`
    and :meth:`SimulatedMarket.deliver` write)."""
    out = {LENDER: {c.datasets["lender"]: root / LENDER / "data" / "customers.csv"},
           PLATFORM: {c.datasets["platform"]: root / PLATFORM / "data" / "users.csv",
                      c.datasets["platform_scoring"]: root / PLATFORM / "data" / "users.parquet"}}
    for party, names in pipeline.campaign_files(root, c.layer).items():
        out[party].update(names)
    return out


class SimulatedMarket:
    """See the module docstring. ``world``: a :class:`fedacq.sim.world.World`; ``root``: the run's
    folder (each party's files under ``root/<party>``); ``budget_per_day``: the lender's daily budget."""

    def __init__(self, world: Any, root: Path, campaign: Campaign, budget_per_day: float, seed: int = 0,
                 frozen: bool = True) -> None:
        from fedacq.activate.buckets import bucket_of
        from fedacq.sim.days import DayCampaign

        self.world, self.root, self.c, self.seed = world, Path(root), campaign, seed
        exp = pipeline.experiment_config(campaign.layer, campaign.salt, campaign.treatment_share)
        mask = exp.treatment_mask()

        def assign(user_ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
            b = bucket_of([str(u) for u in user_ids], exp.layer, exp.salt)
            return b, np.where(mask[b], "treatment", "control")

        kw = {"layer": campaign.layer, "campaign": f"lender-acq-{campaign.layer}", "budget_per_day": budget_per_day}
        self.live = DayCampaign(world, assign, **kw)
        self.frozen = DayCampaign(world, assign, **kw) if frozen else None
        self._frames: dict[str, pd.DataFrame] = {}
        self._frozen_model: Path | None = None
        self._frozen_frame: pd.DataFrame | None = None
        self.paths = registered(self.root, campaign)

    # -- the parties' data ---------------------------------------------------------------------
    def refresh(self, day: int, fault: str | None = None) -> None:
        market = self.live.market_on(day, self.c.label)
        if fault == "shuffled_labels":
            rng = np.random.default_rng([self.seed, day])  # the simulator's fault, not a party's randomness
            labels = market.lender_customers[self.c.label].to_numpy()
            market.lender_customers[self.c.label] = labels[rng.permutation(len(labels))]
        elif fault is not None:
            raise ValueError(f"unknown data fault {fault!r}")
        stages = ()
        if self.c.value is not None:
            from fedacq.activate.value import VALUE_MODELS

            stages = VALUE_MODELS[self.c.value].stages
        pipeline.write_party_files(market, self.root, stages)

    def deliver(self, first_day: int, day: int, fault: str | None = None) -> None:
        events = reported = self.live.events(first_day, day - 1)
        if fault == "lost_treatment_clicks":
            reported = self._lose_treatment_clicks(events, day)
        elif fault is not None:
            raise ValueError(f"unknown measurement fault {fault!r}")
        shares = {LENDER: {"funnel": self.live.lender_funnel(day, first_day), "events": reported},
                  PLATFORM: {"events": events,
                             "spend": self.live.spend_by_bucket(first_day, day - 1)}}
        files = pipeline.campaign_files(self.root, self.c.layer)
        for party, names in pipeline.campaign_datasets(self.c.layer).items():
            for logical, name in names.items():
                files[party][name].parent.mkdir(parents=True, exist_ok=True)
                shares[party][logical].to_parquet(files[party][name], index=False)

    def _lose_treatment_clicks(self, events: pd.DataFrame, day: int) -> pd.DataFrame:
        """The demo's constructed negative lift: the click reports of :data:`LOST_SHARE` of the
        treatment arm's clicking users never reach the lender (a broken event pipeline for the
        new version's traffic), so the lender attributes fewer credit users to the treatment's
        spend. Documented as injected; the simulator draws who is lost."""
        rng = np.random.default_rng([self.seed, day, 1])
        users = events.loc[events["arm"] == "treatment", "user_id"].unique()
        lost = users[rng.random(len(users)) < LOST_SHARE]
        return events.loc[~events["user_id"].isin(lost)].reset_index(drop=True)

    # -- bidding -------------------------------------------------------------------------------
    def serving(self, version: str | None) -> pd.DataFrame | None:
        """The boost table ``version`` from the service's root, as bidding gets it."""
        if version is None:
            return None
        if version not in self._frames:
            from fedacq.activate.table import BoostTable

            table = BoostTable.load(self.root / PLATFORM / "boost_tables" / self.c.layer / version)
            self._frames[version] = table.serving_frame()
        return self._frames[version]

    def published(self, cycle: int, version: str) -> None:
        """The frozen counterfactual keeps the first published version's (released) model: the
        world reads it where the platform's node recorded it (no party is told of it)."""
        from fedacq.campaign.state import CampaignState

        if self._frozen_model is not None:
            return
        state = CampaignState(self.root / PLATFORM / "state" / "campaigns", self.c.name)
        model_files = state.read().get("models", {}).get(version, {})
        if "model" in model_files:
            self._frozen_model = Path(model_files["model"])

    def step(self, day: int, table_version: str | None) -> None:
        self.live.step(self.serving(table_version))
        if self.frozen is None:
            return
        if self._frozen_model is not None and (self._frozen_frame is None or day % self.c.cycle_days == 0):
            self._frozen_frame = self._frozen_table(day)
        self.frozen.step(self._frozen_frame)

    def _frozen_table(self, day: int) -> pd.DataFrame:
        from fedacq.activate import build_boost_table

        scores = pipeline.score(self._frozen_model, self.paths[PLATFORM][self.c.datasets["platform_scoring"]],
                                self.root / PLATFORM / "frozen" / f"scores-d{day:04d}.parquet")
        exp = pipeline.experiment_config(self.c.layer, self.c.salt, self.c.treatment_share)
        table = build_boost_table(scores, campaign=f"lender-acq-{self.c.layer}",
                                  tiers=pipeline.tier_config(self.c.cuts, self.c.boosts), experiment=exp,
                                  model_version="frozen", version=f"frozen-d{day:04d}")
        return table.serving_frame()

    # -- evaluation (the simulator's truth; no party sees it) ----------------------------------
    def compare(self, first_day: int, last_day: int, kpi: str = "cost_per_credit_user") -> dict[str, Any]:
        """Refreshed over frozen on ``kpi`` over days ``first_day..last_day``, treatment arms, with the
        paired bucket interval; and the control arms (a placebo: identical by construction)."""
        from fedacq.sim.days import compare, window_kpis

        if self.frozen is None:
            raise ValueError("no frozen counterfactual in this run")
        out = {"window": [first_day, last_day], "kpi": kpi,
               "treatment": compare(self.live.daily, self.frozen.daily, first_day, last_day, kpi=kpi),
               "control": compare(self.live.daily, self.frozen.daily, first_day, last_day, kpi=kpi, arm="control")}
        out["arms"] = {name: window_kpis(d.daily, first_day, last_day)[[kpi, "spend", "credit_users"]]
                       .to_dict(orient="index") for name, d in (("refreshed", self.live), ("frozen", self.frozen))}
        return out
