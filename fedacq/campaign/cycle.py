"""One campaign cycle, each step at the node that owns it.

1. **align** (both; a ``psi`` node job): the lender's table with the labels matured so far and
   the platform's users; the ``min_intersection`` gate at both.
2. **update** (both; a ``run`` node job): a prospect model of the campaign's label (and, with
   ``[model] value``, one job per value stage), the lender's evaluation on held-out rows.
   ``update = "retrain"`` trains afresh on today's labels; ``"add_trees"`` passes the live model
   to the run job (:data:`fedacq.campaign.config.ADD_TREES_PARAM`) so trees are added to it.
3. **gates**: the lender's validation metric; then the platform scores its whole user base with
   the new version and with the live one, and computes the score PSI between them on its own
   users. Either side stops a version that fails its gate: the cycle is ``refused`` with the gate
   values, and nothing is published.
4. **publish** (platform): a new boost-table version (:func:`fedacq.pipeline.activate`), the same
   experiment layer and salt, so no user changes bucket or arm and the experiment runs on; written
   under the boost service's root and loaded by its ``Reload`` (hot reload).

Each node records its own view of the cycle (:class:`fedacq.campaign.state.CampaignState`):
the lender its gates and metrics; the platform its own gates, the lender's verdict (not its
metric) and the version's scores of a reference sample of its users (``scores.npy``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fedacq import pipeline
from fedacq.campaign import gates
from fedacq.campaign.config import ADD_TREES_PARAM, Campaign
from fedacq.campaign.state import CampaignState
from fedacq.pipeline import LENDER, PLATFORM, Parties

#: share of the platform's users (by a salted hash of the id) kept as the drift reference sample.
REFERENCE_BUCKETS = 50  # of 1000: 5%


@dataclass
class PlatformSide:
    """What the platform's steps use: its whole user base (the registered ``platform_scoring``
    file), its boost service's table root and an admin client of that service, and a work folder."""

    scoring: Path
    table_root: Path
    boosts: Any  # fedacq.activate.service.BoostClient
    work: Path
    store: str | None = None


@dataclass
class CampaignRun:
    """A running campaign: its file, the parties' jobs, each node's state and the platform's side."""

    campaign: Campaign
    parties: Parties
    states: dict[str, CampaignState]
    platform: PlatformSide
    progress: bool = False
    say: Callable[[str], None] = field(default=lambda text: None)

    @property
    def name(self) -> str:
        return self.campaign.name

    def job_id(self, n: int, step: str) -> str:
        return f"{self.name}-c{n:04d}-{step}"

    def record(self, n: int, lender: dict[str, Any], platform: dict[str, Any] | None = None) -> None:
        """Write cycle ``n`` at both nodes (``platform`` defaults to the fields both share)."""
        self.states[LENDER].write_cycle(n, **lender)
        self.states[PLATFORM].write_cycle(n, **(lender if platform is None else platform))


def live(run: CampaignRun) -> tuple[str | None, str | None]:
    """(live model version, live table version), as the platform recorded them."""
    record = run.states[PLATFORM].read()
    return record.get("live_version"), record.get("live_table")


def reference_mask(user_ids: pd.Series, campaign: Campaign) -> np.ndarray:
    """The platform's drift reference sample: users whose salted hash falls in the first
    :data:`REFERENCE_BUCKETS` of 1000 (stable across days for the users who stay)."""
    from fedacq.activate.buckets import bucket_of

    return bucket_of(user_ids.astype(str).tolist(), "drift-reference", campaign.salt) < REFERENCE_BUCKETS


def _train(run: CampaignRun, n: int, live_version: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run job(s) of cycle ``n``: (the first model's metrics, {stage or "model": metrics})."""
    c = run.campaign
    params = c.model_params()
    common = {"model_params": params, "key_bits": c.key_bits, "insecure_test_key": c.insecure_test_key,
              "min_intersection": c.min_intersection, "experiment": f"campaign-{c.name}", "progress": run.progress}
    if c.value is None and c.update == "add_trees" and live_version is not None:
        common[ADD_TREES_PARAM] = live_version  # a version is its run job's id; each node finds it in its own store
    if c.value is None:
        metrics = pipeline.train(run.parties, job_id=run.job_id(n, "run"), label_column=c.label, model=c.model,
                                 mode=c.mode, lender_table=c.datasets["lender"],
                                 platform_table=c.datasets["platform"], **common)
        return metrics, {"model": metrics}
    from fedacq.activate.value import VALUE_MODELS

    common["model_params"] = {k: v for k, v in params.items() if k != "objective"}
    stages = pipeline.train_stages(run.parties, VALUE_MODELS[c.value], job_id=run.job_id(n, "run"),
                                   lender_prefix=c.datasets["lender"], model=c.model,
                                   platform_table=c.datasets["platform"], **common)
    return next(iter(stages.values())), stages


def _validation(c: Campaign, models: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The lender's validation gate: the weakest of the models that report the metric."""
    reported = [gates.validation_gate(m, c.validation_metric, c.min_validation_metric) for m in models.values()]
    measured = [g for g in reported if g["value"] is not None]
    return min(measured, key=lambda g: g["value"]) if measured else reported[0]


def _scores(run: CampaignRun, n: int, stages: dict[str, dict[str, Any]], out: Path) -> pd.DataFrame:
    """The platform's scores of its whole user base with the version the run job(s) released."""
    c = run.campaign
    if c.value is None:
        return pipeline.score(pipeline.prospect_model_path(stages["model"]), run.platform.scoring,
                              out / "scores.parquet", run.progress)
    from fedacq.activate.value import VALUE_MODELS

    return pipeline.value_scores(VALUE_MODELS[c.value], stages, run.platform.scoring, out, run.progress)


def _rescore_live(run: CampaignRun, models: dict[str, str], out: Path) -> pd.DataFrame:
    """The live version's scores of today's users (its released model files, kept by the platform)."""
    c = run.campaign
    if c.value is None:
        return pipeline.score(Path(models["model"]), run.platform.scoring, out / "live-scores.parquet", run.progress)
    from fedacq.activate.value import VALUE_MODELS, combine

    value = VALUE_MODELS[c.value]
    scores = {name: pipeline.score(Path(path), run.platform.scoring, out / f"live-{name}.parquet", run.progress)
              for name, path in models.items()}
    return combine(value, scores)


def run_cycle(run: CampaignRun, n: int, day: int | None, *, invert_boosts: bool = False,
              fault: str | None = None) -> dict[str, Any]:
    """Cycle ``n`` (on simulated ``day``, or None): align, update, gates, publish. Returns the
    lender's cycle record. ``invert_boosts`` is the demo's injected fault at publication (the
    table is built from the negated scores: the lowest-scored users get the highest boost, as a
    sign error in an activation job would); ``fault`` names an injected fault for the record."""
    c = run.campaign
    base = {"sim_day": day, "update": c.update, **({"fault": fault} if fault else {})}
    run.record(n, base)
    live_version, live_table = live(run)
    try:
        run.say(f"cycle {n}: align (psi job)")
        aligned = pipeline.align(run.parties, job_id=run.job_id(n, "psi"), min_intersection=c.min_intersection,
                                 tables={LENDER: c.datasets["lender"], PLATFORM: c.datasets["platform"]},
                                 progress=run.progress)
        inter = gates.intersection_gate(int(aligned[LENDER]["intersection"]), c.min_intersection)
        run.say(f"cycle {n}: model update ({c.update}, run job)")
        metrics, models = _train(run, n, live_version)
    except RuntimeError as exc:
        run.record(n, {"outcome": "failed", "reason": str(exc)[:2000]})
        return run.states[LENDER].read_cycle(n)
    version = metrics["job_id"]
    lender_gates = [inter, _validation(c, models)]
    shared = {"version": version, "model_job": metrics["job_id"],
              "intersection_size": metrics["intersection_size"]}
    validation = {k: v for k, v in (metrics.get("validation") or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if not gates.passed(lender_gates):
        reason = gates.failures(lender_gates)
        run.record(n, {**shared, "gates": lender_gates, "validation": validation, "outcome": "refused",
                       "reason": f"lender: {reason}"},
                   {**shared, "gates": [inter], "outcome": "refused",
                    "reason": "the lender refused the version: its validation gate failed"})
        run.say(f"cycle {n}: refused by the lender ({reason})")
        return run.states[LENDER].read_cycle(n)

    # the platform: its own users, its own gate
    out = run.platform.work / f"cycle-{n:04d}"
    out.mkdir(parents=True, exist_ok=True)
    run.say(f"cycle {n}: the platform scores its users with {version}")
    scores = _scores(run, n, models, out)
    model_files = {name: str(pipeline.prospect_model_path(m)) for name, m in models.items()}
    platform_record = run.states[PLATFORM].read()
    live_models = platform_record.get("models", {}).get(live_version) if live_version else None
    live_scores = _rescore_live(run, live_models, out)["score"].to_numpy() if live_models else None
    psi = gates.score_psi_gate(scores["score"].to_numpy(), live_scores, c.max_score_psi)
    run.states[PLATFORM].write_scores(n, scores["score"].to_numpy()[reference_mask(scores["user_id"], c)])
    run.states[PLATFORM].update(models={**platform_record.get("models", {}), version: model_files})
    if not psi["passed"]:
        reason = f"platform: {gates.failures([psi])}"
        run.record(n, {**shared, "gates": [*lender_gates, psi], "validation": validation, "outcome": "refused",
                       "reason": reason},
                   {**shared, "gates": [inter, psi], "outcome": "refused", "reason": reason})
        run.say(f"cycle {n}: refused by the platform ({reason})")
        return run.states[LENDER].read_cycle(n)

    run.say(f"cycle {n}: publish a boost table of {version}")
    table = publish(run, scores.assign(score=-scores["score"]) if invert_boosts else scores, version)
    done = {**shared, "outcome": "published", "boost_table": table, "live_since_day": day}
    run.record(n, {**done, "gates": [*lender_gates, psi], "validation": validation},
               {**done, "gates": [inter, psi]})
    for party in (LENDER, PLATFORM):
        record = run.states[party].read()
        run.states[party].update(live_version=version, live_table=table,
                                 published=[*record.get("published", []), {"cycle": n, "table": table,
                                                                           "version": version}])
    return run.states[LENDER].read_cycle(n)


def publish(run: CampaignRun, scores: pd.DataFrame, version: str) -> str:
    """Build the version's boost table under the service's root and hot-reload it; its version."""
    c = run.campaign
    table = pipeline.activate(scores, layer=c.layer, tiers=pipeline.tier_config(c.cuts, c.boosts),
                              experiment=pipeline.experiment_config(c.layer, c.salt, c.treatment_share),
                              model_version=version, table_root=run.platform.table_root, store=run.platform.store,
                              job_id=version, tracking=f"campaign-{c.name}", versioned=True)
    run.platform.boosts.reload(f"{c.layer}/{table.version}")
    return table.version
