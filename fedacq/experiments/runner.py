"""Run a sweep: each point's model quality and campaign lift, each model trained once.

Per point (see :mod:`fedacq.experiments.config` for the settings):

1. **market** - :func:`fedacq.sim.generate_market` once per ``(n_users, seed)``.
   A seeded 20% of the lender's existing customers is held out of the
   lender's training file (``holdout``): the released prospect models and the
   activity ranking are scored on it, so the DP noise on the leaves shows in
   model quality (the run's own validation AUC is the lender's *un-noised*
   model) and the label-free baseline gets an AUC on the same rows.
2. **model** - :func:`fedacq.pipeline.train` (a ``run`` job: PSI +
   SecureBoost, the demo's code path, over the point's transport) once per
   distinct model setting; the platform scores its whole user base with a
   prospect model (:func:`fedacq.pipeline.score`).
3. **campaign** - :func:`fedacq.pipeline.activate` (boost table, buckets) and
   :func:`fedacq.pipeline.campaign` (simulated bidding) once per distinct
   campaign setting, then the lender's :func:`fedacq.measure.report.measure` on
   its funnel, the events and the spend (the sweep compares lifts; the platform's
   private view, a ``measure`` job in the demo, adds nothing to it). All campaigns use
   the same bucket salt (from the seed) and simulator seed, so points differ only in what the
   sweep changes (common random numbers: differences between points are not
   drowned by bucket or auction noise).

Model modes, and why *joint* has no campaign KPIs
-------------------------------------------------
``prospect`` trains on the platform's features only, so the platform can score
every user; ``activity`` ranks by activity with no lender input at all (the
demo's baseline); ``joint`` trains on both parties' features. A joint model
needs the lender's features, which the lender holds only for its existing
customers, and those are exactly the users an acquisition campaign excludes.
Scoring prospects with the lender's features missing would route every
prospect down the default branch of every lender split: a different model
from the one evaluated, and its lift would be the prospect model's lift
mislabelled. So a joint point reports model quality only (AUC/KS on the run's
validation split of the intersection, with the prospect model's on the same
kind of split beside it) and its campaign columns stay empty, on purpose.

What the platform learns is what the demo's steps say (the protocol modules);
the sweep adds no message. The holdout AUC is the simulator's evaluation (it
joins released scores with held-out labels), not a protocol step.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedacq.experiments.config import Point, PointSettings, SweepConfig
from fedacq.measure.kpis import KPIS

#: share of the lender's customers kept out of training to score released models on.
HOLDOUT_FRACTION = 0.2


@dataclass
class _MarketEntry:
    market: Any
    paths: dict[str, Path]
    holdout: pd.DataFrame  # user_id, label: held-out lender customers


def hanley_mcneil_interval(auc: float, positives: int, negatives: int, z: float = 1.959964) -> tuple[float, float]:
    """Normal interval for an AUC (Hanley & McNeil 1982): enough to see whether two AUCs differ."""
    if positives < 1 or negatives < 1:
        return float("nan"), float("nan")
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc)
           + (negatives - 1) * (q2 - auc * auc)) / (positives * negatives)
    se = math.sqrt(max(var, 0.0))
    return max(0.0, auc - z * se), min(1.0, auc + z * se)


def _quality(prefix: str, y: np.ndarray, score: np.ndarray) -> dict[str, Any]:
    from fedacq.learn import metrics

    m = metrics.evaluate(y, score)
    low, high = hanley_mcneil_interval(m["auc"], m["positives"], m["rows"] - m["positives"])
    return {f"{prefix}_auc": m["auc"], f"{prefix}_auc_ci_low": low, f"{prefix}_auc_ci_high": high,
            f"{prefix}_ks": m["ks"], f"{prefix}_rows": m["rows"]}


class SweepRunner:
    """Runs a :class:`SweepConfig` under ``out_dir``, caching markets, models and campaigns."""

    def __init__(self, cfg: SweepConfig, out_dir: Path, progress: bool = True) -> None:
        self.cfg = cfg
        self.out = Path(out_dir)
        self.progress = progress
        self.sweep_id = f"sweep-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"
        self._markets: dict[tuple[int, int], _MarketEntry] = {}
        self._models: dict[Any, dict[str, Any]] = {}
        self._campaigns: dict[Any, dict[str, Any]] = {}
        self.timings: dict[str, float] = {"train": 0.0, "score": 0.0, "campaign": 0.0, "measure": 0.0}

    @property
    def models_trained(self) -> int:
        return len(self._models)

    @property
    def campaigns_simulated(self) -> int:
        return len(self._campaigns)

    def _say(self, text: str) -> None:
        if self.progress:
            print(f"[fedacq experiments] {text}", flush=True)

    def _timed(self, phase: str, fn: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn()
        finally:
            self.timings[phase] += time.perf_counter() - start

    def market(self, s: PointSettings) -> _MarketEntry:
        """The market of ``(n_users, seed)``, with the parties' files and the lender's holdout."""
        from fedacq.pipeline import write_party_files
        from fedacq.sim import generate_market

        key = (s.n_users, s.seed)
        if key not in self._markets:
            self._say(f"market: {s.n_users:,} users, seed {s.seed}")
            market = generate_market(s.n_users, seed=s.seed)
            customers = market.lender_customers
            held = np.random.default_rng(s.seed).random(len(customers)) < HOLDOUT_FRACTION
            paths = write_party_files(replace(market, lender_customers=customers[~held].reset_index(drop=True)),
                                      self.out / "data" / f"market-{s.n_users}-{s.seed}")
            holdout = pd.DataFrame({"user_id": customers.loc[held, "user_id"].to_numpy(),
                                    "label": customers.loc[held, market.label_column].to_numpy(np.float64)})
            self._markets[key] = _MarketEntry(market, paths, holdout)
        return self._markets[key]

    def model(self, s: PointSettings) -> dict[str, Any]:
        """Train (or reuse) the point's model: its run metrics, and the platform's scores if prospect."""
        from fedacq import pipeline

        key = s.model_key()
        if key not in self._models:
            entry = self.market(s)
            model_id = f"model{len(self._models) + 1}-{s.targeting}" + (
                f"-eps{s.leaf_epsilon:g}" if s.leaf_epsilon is not None else "")
            model_dir = self.out / "models" / model_id
            self._say(f"train {model_id} ({s.key_bits}-bit Paillier, {s.transport})")
            metrics = self._timed("train", lambda: self._train(entry, s, model_dir, f"{self.sweep_id}-{model_id}"))
            result: dict[str, Any] = {"model_id": model_id, "metrics": metrics, "scores": None}
            if s.targeting == "prospect":
                result["scores"] = self._timed("score", lambda: pipeline.score(
                    pipeline.prospect_model_path(metrics), entry.paths["platform_parquet"],
                    model_dir / "platform" / "scores.parquet", self.progress))
            self._models[key] = result
        return self._models[key]

    def _train(self, entry: _MarketEntry, s: PointSettings, model_dir: Path, job_id: str) -> dict[str, Any]:
        """One ``run`` job between the point's two parties, started for it under ``model_dir``."""
        from fedacq import pipeline

        datasets = pipeline.registry(entry.paths, model_dir)
        policy = pipeline.one_operator_policy(s.key_bits, s.insecure_test_key, min_intersection=100)
        with pipeline.start_parties(s.transport, model_dir, datasets, {p: policy for p in datasets}) as parties:
            return pipeline.train(parties, job_id=job_id, label_column=entry.market.label_column, mode=s.targeting,
                                  model_params=s.model_params, key_bits=s.key_bits,
                                  insecure_test_key=s.insecure_test_key, seed=s.seed,
                                  experiment="fedacq-experiments", progress=self.progress)

    def scores(self, s: PointSettings) -> tuple[pd.DataFrame, str]:
        """Scores over the platform's whole user base and a model id, for prospect or activity targeting."""
        from fedacq.pipeline import activity_scores

        if s.targeting == "activity":
            return activity_scores(self.market(s).market.platform_users), "activity"
        model = self.model(s)
        return model["scores"], model["model_id"]

    def holdout_quality(self, s: PointSettings) -> dict[str, Any]:
        """AUC/KS of the scores the platform would target with, on the held-out lender customers."""
        scores, _ = self.scores(s)
        holdout = self.market(s).holdout
        joined = holdout.merge(scores, on="user_id", how="inner")
        if joined["label"].nunique() < 2:
            return {}
        return _quality("holdout", joined["label"].to_numpy(), joined["score"].to_numpy(np.float64))

    def campaign(self, s: PointSettings) -> dict[str, Any]:
        """Simulate (or reuse) the point's campaign and measure it at the lender."""
        from fedacq import pipeline
        from fedacq.measure.report import measure

        key = s.campaign_key()
        if key not in self._campaigns:
            entry = self.market(s)
            scores, model_id = self.scores(s)
            campaign_id = f"campaign{len(self._campaigns) + 1}"
            layer = "prospect" if s.targeting == "prospect" else "activity"
            self._say(f"{campaign_id}: {model_id}, boosts {[round(b, 3) for b in s.boosts]}, "
                      f"treatment {s.treatment_share:.0%}, {s.days} days")
            def simulate() -> Any:
                table = pipeline.activate(
                    scores, layer=layer, tiers=pipeline.tier_config(s.tier_cuts, s.boosts),
                    experiment=pipeline.experiment_config(layer, f"fedacq-sweep-{s.seed}", s.treatment_share),
                    model_version=model_id, table_root=self.out / "campaigns" / campaign_id / "boost_tables")
                return pipeline.campaign(entry.market, table, layer=layer, days=s.days,
                                         budget_per_day=s.budget_per_user_day * s.n_users, seed=s.seed,
                                         progress=self.progress)

            camp = self._timed("campaign", simulate)
            report = self._timed("measure", lambda: measure(camp.lender_funnel, camp.events, camp.spend_by_bucket,
                                                              min_bucket_size=s.min_bucket_size))
            folder = self.out / "campaigns" / campaign_id
            (folder / "report.json").write_text(json.dumps(report, indent=2, default=str))
            camp.summary.to_csv(folder / "truth_by_arm.csv")
            self._campaigns[key] = {"campaign_id": campaign_id, "layer": layer, "report": report,
                                    "headline": pipeline.headline(report, layer), "truth": camp.summary}
        return self._campaigns[key]

    def point_row(self, point: Point) -> dict[str, Any]:
        """One results row: the point, its model quality, and its campaign's lift per KPI."""
        s = point.settings
        row: dict[str, Any] = {"sweep": point.sweep, "setting": point.setting, "value": point.value,
                               "label": point.label, "targeting": s.targeting,
                               "leaf_epsilon": s.leaf_epsilon, "boost_strength": s.boost_strength,
                               "treatment_share": s.treatment_share,
                               "boosts": " ".join(f"{b:.3g}" for b in s.boosts)}
        if s.targeting != "activity":
            model = self.model(s)
            row["model_id"] = model["model_id"]
            row.update(_validation_quality(model["metrics"]))
        if s.targeting != "joint":
            row.update(self.holdout_quality(s))
            camp = self.campaign(s)
            row["campaign_id"] = camp["campaign_id"]
            row.update(_lift_columns(camp["report"], camp["layer"]))
        return row

    def run(self) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        rows = []
        bar = tqdm(self.cfg.points, desc="sweep points", unit="point", disable=not self.progress)
        for point in bar:
            bar.set_postfix_str(f"{point.sweep}={point.label}")
            rows.append(self.point_row(point))
        return rows


def _validation_quality(metrics: dict[str, Any]) -> dict[str, Any]:
    """The run's own evaluation (the lender's model on the intersection's validation split)."""
    v = metrics.get("validation") or {}
    if "auc" not in v:
        return {}
    low, high = hanley_mcneil_interval(v["auc"], v["positives"], v["rows"] - v["positives"])
    return {"valid_auc": v["auc"], "valid_auc_ci_low": low, "valid_auc_ci_high": high, "valid_ks": v["ks"],
            "valid_rows": v["rows"]}


def _lift_columns(report: dict[str, Any], layer: str) -> dict[str, Any]:
    """Per KPI: treatment and control values, and relative lift with its 95% interval."""
    layer_report = report["layers"][layer]
    out: dict[str, Any] = {}
    for arm in ("treatment", "control"):
        arm_report = layer_report["arms"].get(arm, {})
        out[f"{arm}_exposed_users"] = arm_report.get("exposed_users")
        out[f"{arm}_credit_users"] = arm_report.get("credit_users")
    for kpi in KPIS:
        for arm in ("treatment", "control"):
            value = layer_report["arms"].get(arm, {}).get("kpis", {}).get(kpi.name, {})
            out[f"{kpi.name}_{arm}"] = value.get("value")
        rel = (layer_report["lift"].get(kpi.name) or {}).get("relative")
        rel = rel if isinstance(rel, dict) and "value" in rel else {}
        out[f"{kpi.name}_lift"] = rel.get("value")
        out[f"{kpi.name}_lift_ci_low"] = rel.get("ci_low")
        out[f"{kpi.name}_lift_ci_high"] = rel.get("ci_high")
    return out


def run_sweep(cfg: SweepConfig, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Run every point of ``cfg`` and write ``results.csv``, ``results.md``, ``results.html``, ``results.json``."""
    from fedacq.experiments.tables import write_results

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runner = SweepRunner(cfg, out, progress=progress)
    start = time.perf_counter()
    rows = runner.run()
    summary = {"sweep_id": runner.sweep_id, "config": str(cfg.path), "title": cfg.title,
               "base": cfg.base.describe(), "holdout_fraction": HOLDOUT_FRACTION,
               "models_trained": runner.models_trained, "campaigns_simulated": runner.campaigns_simulated,
               "seconds": round(time.perf_counter() - start, 1),
               "timings": {k: round(v, 1) for k, v in runner.timings.items()}, "rows": rows}
    files = write_results(summary, out)
    summary["files"] = [str(p) for p in files]
    if progress:
        print(f"[fedacq experiments] {len(rows)} points, {summary['models_trained']} model(s), "
              f"{summary['campaigns_simulated']} campaign(s) in {summary['seconds']:.0f} s; "
              f"table: {out / 'results.md'}", flush=True)
    return summary
