"""One campaign cycle, each step at the node that owns it.

1. **align** (both; a ``psi`` node job, unbalanced and incremental: the platform's cache of its
   blinded users is updated in place and only what changed crosses): the lender's table with the
   labels matured so far and the platform's users; the ``min_intersection`` gate at both.
2. **update** (both; a ``run`` node job): a prospect model of the campaign's label, trained on the
   align step's result (the run job's ``psi_job``: each node takes its rows from its own result of
   that psi job and both check they hold the same alignment, :mod:`fedacq.learn.run_node`; no
   second PSI), and the lender's evaluation on held-out rows. With ``[model] value``, one job per
   value stage, each on the stage's own lender table, which the psi job did not align: those
   jobs align inside themselves.
   ``update = "retrain"`` trains afresh on today's labels; ``"add_trees"`` passes the live model
   to the run job (:data:`fedacq.campaign.config.ADD_TREES_PARAM`) so trees are added to it.
3. **gates**: the lender's validation metric, here at the lender.
4. **the platform's steps** (a ``campaign_publish`` node job, :mod:`fedacq.campaign.protocol`):
   at its own node, under its own policy, the platform scores its whole user base with the new
   version and with the live one, computes the score PSI between them, and only if the lender's
   verdict and its own gate pass builds a new boost-table version (the same experiment layer and
   salt, so no user changes bucket or arm) and loads it into its boost service (``Reload``). A
   version failing either side's gate is never published (``refused``, with the gate values).

Each node records its own view of the cycle (:class:`fedacq.campaign.state.CampaignState`): the
lender here, its gates and metrics and the platform's answer; the platform in its node job, its
own gates, the lender's verdict (not its metric) and the version's scores of a reference sample
of its users (``scores.npy``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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
class CampaignRun:
    """A running campaign at the lender: its file, the jobs it submits to its own node and its
    own campaign state. ``served`` (the simulator only) tells which table version the platform's
    boost service serves, for the simulated bidding."""

    campaign: Campaign
    parties: Parties
    state: CampaignState
    served: Callable[[], str | None] | None = None
    progress: bool = False
    say: Callable[[str], None] = field(default=lambda text: None)

    @property
    def name(self) -> str:
        return self.campaign.name

    def job_id(self, n: int, step: str) -> str:
        return f"{self.name}-c{n:04d}-{step}"


def live(run: CampaignRun) -> tuple[str | None, str | None]:
    """(live model version, live table version), as the lender recorded the platform's answers."""
    record = run.state.read()
    return record.get("live_version"), record.get("live_table")


def reference_mask(user_ids: pd.Series, campaign: Campaign) -> np.ndarray:
    """The platform's drift reference sample: users whose salted hash falls in the first
    :data:`REFERENCE_BUCKETS` of 1000 (stable across days for the users who stay)."""
    from fedacq.activate.buckets import bucket_of

    return bucket_of(user_ids.astype(str).tolist(), "drift-reference", campaign.salt) < REFERENCE_BUCKETS


def _train(run: CampaignRun, n: int, live_version: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run job(s) of cycle ``n``: (the first model's metrics, {stage or "model": metrics}).
    The campaign's model trains on the cycle's psi job (module docstring)."""
    c = run.campaign
    params = c.model_params()
    common = {"model_params": params, "key_bits": c.key_bits, "insecure_test_key": c.insecure_test_key,
              "min_intersection": c.min_intersection, "experiment": f"campaign-{c.name}", "progress": run.progress}
    if c.value is None and c.update == "add_trees" and live_version is not None:
        common[ADD_TREES_PARAM] = live_version  # a version is its run job's id; each node finds it in its own store
    if c.value is None:
        metrics = pipeline.train(run.parties, job_id=run.job_id(n, "run"), label_column=c.label, model=c.model,
                                 mode=c.mode, lender_table=c.datasets["lender"],
                                 platform_table=c.datasets["platform"], psi_job=run.job_id(n, "psi"), **common)
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


def run_cycle(run: CampaignRun, n: int, day: int | None, *, fault: str | None = None) -> dict[str, Any]:
    """Cycle ``n`` (on simulated ``day``, or None): align, update, the lender's gates, then the
    platform's ``campaign_publish`` job (:mod:`fedacq.campaign.protocol`). Returns the lender's
    cycle record; ``fault`` names an injected fault for the record."""
    c, state = run.campaign, run.state
    state.write_cycle(n, sim_day=day, update=c.update, **({"fault": fault} if fault else {}))
    live_version, _ = live(run)
    try:
        run.say(f"cycle {n}: align (psi job)")
        # unbalanced and incremental: the platform's cache of its users is updated in place each cycle
        aligned = pipeline.align(run.parties, job_id=run.job_id(n, "psi"), min_intersection=c.min_intersection,
                                 mode="unbalanced", incremental=True,
                                 tables={LENDER: c.datasets["lender"], PLATFORM: c.datasets["platform"]},
                                 progress=run.progress)
        inter = gates.intersection_gate(int(aligned[LENDER]["intersection"]), c.min_intersection)
        run.say(f"cycle {n}: model update ({c.update}, run job)")
        metrics, models = _train(run, n, live_version)
    except RuntimeError as exc:
        state.write_cycle(n, outcome="failed", reason=str(exc)[:2000])
        return state.read_cycle(n)
    version = metrics["job_id"]
    lender_gates = [inter, _validation(c, models)]
    validation = {k: v for k, v in (metrics.get("validation") or {}).items()
                  if isinstance(v, (int, float)) and not isinstance(v, bool)}
    state.write_cycle(n, version=version, model_job=version, intersection_size=metrics["intersection_size"],
                      validation=validation, models={name: m["job_id"] for name, m in models.items()},
                      gates=lender_gates)
    return publish_cycle(run, n, day, lender_gates)


def publish_cycle(run: CampaignRun, n: int, day: int | None, lender_gates: list[dict[str, Any]],
                  attempt: int = 1) -> dict[str, Any]:
    """The platform's steps of cycle ``n`` (a ``campaign_publish`` job of the version and models
    the cycle recorded) and the lender's record of the answer, with the attempt in ``attempts``
    (job, time, outcome, table, reason: as the platform records its own). A job that fails (the
    platform's boost service down or refusing the table, the link lost) leaves the cycle
    ``failed`` with the reason; version, models and the lender's gates stay recorded, so
    :func:`fedacq.campaign.loop.retry_publish` can publish the same cycle again (``attempt`` > 1).
    Returns the lender's cycle record."""
    state = run.state
    record = state.read_cycle(n)
    version, models = record["version"], record["models"]
    lender_passed = gates.passed(lender_gates)
    lender_reason = "" if lender_passed else gates.failures(lender_gates)
    run.say(f"cycle {n}: {'the platform gates and publishes' if lender_passed else 'refused by the lender'} "
            f"{version} (campaign_publish job{f', attempt {attempt}' if attempt > 1 else ''})"
            + (f": {lender_reason}" if lender_reason else ""))

    def attempted(outcome: str, reason: str | None, table: str | None = None) -> list[dict[str, Any]]:
        return [*record.get("attempts", []), {"job": publish_job_id(run, n, attempt), "time": time.time(),
                                              "outcome": outcome, "table": table, "reason": reason}]

    try:
        answer = publish(run, n, day, models, lender_passed, lender_reason, attempt)
    except RuntimeError as exc:
        reason = str(exc)[:2000]
        state.write_cycle(n, gates=lender_gates, outcome="failed", reason=reason, attempts=attempted("failed", reason))
        return state.read_cycle(n)
    platform_psi = [g for g in answer["gates"] if g["name"] == "max_score_psi"]
    if not lender_passed:
        reason = f"lender: {lender_reason}"
        state.write_cycle(n, gates=lender_gates, outcome="refused", reason=reason,
                          attempts=attempted("refused", reason))
    elif answer["outcome"] != "published":
        state.write_cycle(n, gates=[*lender_gates, *platform_psi], outcome="refused", reason=answer["reason"],
                          attempts=attempted("refused", answer["reason"]))
        run.say(f"cycle {n}: refused by the platform ({answer['reason']})")
    else:
        state.write_cycle(n, gates=[*lender_gates, *platform_psi], outcome="published", reason=None,
                          finished=None, boost_table=answer["table"], live_since_day=day,
                          attempts=attempted("published", None, answer["table"]))
        state.update(live_version=version, live_table=answer["table"],
                     published=[*state.read().get("published", []), {"cycle": n, "table": answer["table"],
                                                                      "version": version}])
    return state.read_cycle(n)


def publish_job_id(run: CampaignRun, n: int, attempt: int = 1) -> str:
    """The id of cycle ``n``'s ``attempt``-th ``campaign_publish`` job."""
    return run.job_id(n, "publish" if attempt == 1 else f"publish{attempt}")


def publish(run: CampaignRun, n: int, day: int | None, models: dict[str, str], lender_passed: bool,
            lender_reason: str, attempt: int = 1) -> dict[str, Any]:
    """The ``campaign_publish`` job of cycle ``n`` (its ``attempt``-th): the platform's answer
    (outcome, its gates, table)."""
    c = run.campaign
    job = {"job": {"protocol": "campaign_publish", "id": publish_job_id(run, n, attempt)},
           "datasets": {PLATFORM: {"scoring": c.datasets["platform_scoring"]}},
           "params": {"campaign": c.name, "cycle": n, "day": day, "models": models,
                      "lender_passed": lender_passed, "lender_reason": lender_reason[:2000]}}
    return run.parties.run(job, run.progress)[LENDER]
