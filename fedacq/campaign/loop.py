"""The campaign's schedule: cycles every ``cycle_days``, measurement every ``measure_days``,
automatic rollback, pause and resume — day by day.

On each day ``d`` of the campaign (simulated days with :class:`fedacq.campaign.simulated.SimulatedMarket`):

1. if a measurement is due (``d > 0`` and ``d % measure_days == 0``) and a version is live: the
   campaign files of the days since that version went live are delivered to each party, and a
   ``measure`` node job measures them (:func:`fedacq.pipeline.measure`). The lender records the
   lift of the rollback KPI on the live version's cycle. If its interval lies entirely on the bad
   side (:func:`fedacq.campaign.gates.significantly_bad`), the live version is **rolled back**
   to the previous published, not rolled-back table with the boost service's ``Rollback``, and the
   cycle's outcome becomes ``rolled_back`` with the measured lift as the reason (at both nodes);
2. if a cycle is due (``d % cycle_days == 0``) and the campaign is not paused: the parties' data
   sets are refreshed as of ``d`` (the lender's matured labels, the platform's users) and
   :func:`fedacq.campaign.cycle.run_cycle` runs;
3. the day's bidding runs with the table the boost service serves.

``fedacq campaign pause`` / ``resume`` / ``stop`` change the status in either node's
``campaign.json``; the loop reads both before each cycle: a paused campaign keeps bidding with
its live table, publishes nothing and is not measured; a stopped one ends.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from fedacq import pipeline
from fedacq.campaign import gates
from fedacq.campaign.cycle import CampaignRun, live, run_cycle
from fedacq.pipeline import LENDER, PLATFORM

#: faults the demo can inject, by cycle (``faults[n]``: one or more, joined by ``+``): where each acts.
DATA_FAULTS = ("shuffled_labels",)
PUBLISH_FAULTS = ("inverted_boosts",)
MEASURE_FAULTS = ("lost_treatment_clicks",)


class DataSource(Protocol):
    """Where the parties' data sets come from, day by day (the simulator, or each party's own ETL)."""

    def refresh(self, day: int, fault: str | None = None) -> None:
        """Write each party's registered training and scoring data as known at the start of ``day``."""

    def deliver(self, first_day: int, day: int, fault: str | None = None) -> None:
        """Write each party's campaign files (funnel, events, spend) of days ``first_day..day-1``."""

    def step(self, day: int, table_version: str | None) -> None:
        """Run ``day``'s bidding with ``table_version`` live (None: no boost)."""

    def published(self, cycle: int, model_files: dict[str, str]) -> None:
        """Cycle ``cycle`` published a version whose released model files are ``model_files``."""


def status(run: CampaignRun) -> str:
    """The campaign's status: ``stopped`` or ``paused`` at either node wins over ``running``."""
    found = {run.states[p].read()["status"] for p in (LENDER, PLATFORM)}
    for s in ("stopped", "finished", "paused"):
        if s in found:
            return s
    return "running"


def served_table(run: CampaignRun) -> str | None:
    """The table version the boost service serves for the campaign's layer (its ``Status``)."""
    for table in run.platform.boosts.status().tables:
        if table.layer == run.campaign.layer:
            return table.table_version or None
    return None


def live_cycle(states: dict[str, Any]) -> int | None:
    """The cycle whose table is live, by the platform's record."""
    table = states[PLATFORM].read().get("live_table")
    return states[PLATFORM].cycle_of_table(table) if table else None


def measure_live(run: CampaignRun, source: DataSource, day: int, first_day: int,
                 faults: dict[int, str] | None = None) -> bool:
    """Measure the live version over days ``first_day..day-1`` (recorded on its cycle); roll it
    back if its lift is significantly bad. Returns whether it was rolled back. ``faults``: the
    demo's injected faults by cycle (a :data:`MEASURE_FAULTS` one acts on the delivered files)."""
    c, n = run.campaign, live_cycle(run.states)
    if n is None or first_day >= day:
        return False
    fault = next((f for f in _faults(faults or {}, n) if f in MEASURE_FAULTS), None)
    source.deliver(first_day, day, fault)
    job = f"{c.name}-d{day:04d}-measure"
    run.say(f"day {day}: measure the live version of cycle {n} (days {first_day}..{day - 1}, measure job)")
    measured = pipeline.measure(run.parties, job_id=job, layer=c.layer, min_cohort=c.min_cohort, epsilon=c.epsilon,
                                value_bounds={"drawdown_amount": c.drawdown_bound},
                                min_bucket_size=c.min_bucket_size, key_bits=c.key_bits,
                                insecure_test_key=c.insecure_test_key, experiment=f"campaign-{c.name}",
                                progress=run.progress)
    lift = measured.report["layers"][c.layer]["lift"].get(c.rollback_kpi) or {}
    relative = lift.get("relative") if isinstance(lift.get("relative"), dict) else None
    if not (relative and all(isinstance(relative.get(k), (int, float)) for k in ("value", "ci_low", "ci_high"))):
        relative = None  # an arm had not enough data for the KPI: recorded, not plotted
    record = {"time": time.time(), "kpi": c.rollback_kpi, "layer": c.layer, "job": job, "confidence": 0.95,
              "first_day": first_day, "last_day": day - 1, "sim_day": day,
              "relative": {k: relative[k] for k in ("value", "ci_low", "ci_high")} if relative else None}
    history = run.states[LENDER].read_cycle(n).get("measurements", [])
    latest = {"measurement": record} if relative else {}
    run.states[LENDER].write_cycle(n, measurements=[*history, record], **latest)
    # the platform keeps the job it answered; the lift is the lender's, told only with a rollback
    platform_history = run.states[PLATFORM].read_cycle(n).get("measure_jobs", [])
    run.states[PLATFORM].write_cycle(n, measure_jobs=[*platform_history, job])
    if relative is not None and gates.significantly_bad(relative, c.rollback_better):
        reason = (f"{c.rollback_kpi} lift {relative['value']:+.1%} [{relative['ci_low']:+.1%}, "
                  f"{relative['ci_high']:+.1%}] over days {first_day}..{day - 1} (measure job {job}) is "
                  f"significantly {c.bad_side} than control")
        rollback(run.states, run.platform.boosts, reason, measurement=record, say=run.say)
        return True
    return False


def rollback(states: dict[str, Any], boosts: Any, reason: str, measurement: dict[str, Any] | None = None,
             to: str | None = None, say: Any = None) -> str:
    """Withdraw the live version: the boost service (``boosts``, an admin
    :class:`~fedacq.activate.service.BoostClient`) serves the previous published table that was
    not rolled back (or ``to``); the live cycle becomes ``rolled_back`` with ``reason`` in each
    of ``states`` (``{party: CampaignState}``: both nodes in the demo, the platform's own for
    ``fedacq campaign rollback``). Returns the table now served."""
    platform = states[PLATFORM]
    name = platform.name
    n = live_cycle(states)
    if n is None:
        raise ValueError(f"campaign {name}: no live version to roll back")
    earlier = [p for p in platform.read().get("published", [])
               if p["cycle"] < n and platform.read_cycle(p["cycle"])["outcome"] == "published"]
    target = next((p for p in reversed(earlier) if to is None or p["table"] == to), None)
    if target is None:
        raise ValueError(f"campaign {name}: no earlier published table {('= ' + to) if to else ''} "
                         f"to roll back to from cycle {n}")
    boosts.rollback(target["table"])
    text = f"{reason}; rolled back to {target['table']} (cycle {target['cycle']})"
    for party, state in states.items():
        extra = {"measurement": measurement} if measurement and party == LENDER else {}
        state.write_cycle(n, outcome="rolled_back", reason=text, **extra)
        state.update(live_version=target["version"], live_table=target["table"])
    if say is not None:
        say(f"ROLLBACK: cycle {n}: {text}")
    return target["table"]


def _faults(faults: dict[int, str], n: int) -> list[str]:
    return [f for f in faults.get(n, "").split("+") if f]


def run_campaign(run: CampaignRun, source: DataSource, faults: dict[int, str] | None = None,
                 on_day: Any = None) -> None:
    """The whole schedule (module docstring); ``faults[cycle]`` injects demo faults
    (:data:`DATA_FAULTS` at the data refresh, :data:`PUBLISH_FAULTS` at publication,
    :data:`MEASURE_FAULTS` in the files its measurements read);
    ``on_day(day, table_version)`` is called after each day's bidding."""
    c, faults = run.campaign, dict(faults or {})
    known = DATA_FAULTS + PUBLISH_FAULTS + MEASURE_FAULTS
    for n in faults:
        for fault in _faults(faults, n):
            if fault not in known:
                raise ValueError(f"cycle {n}: unknown fault {fault!r}; known: {known}")
    n = max(run.states[LENDER].cycles(), default=0)
    since = 0
    for day in range(c.days):
        state = status(run)
        if state in ("stopped", "finished"):
            break
        if state == "running" and day > 0 and day % c.measure_days == 0 and live(run)[1] is not None:
            if measure_live(run, source, day, since, faults):
                since = day  # the restored table is measured from the rollback on
        if state == "running" and day % c.cycle_days == 0:
            n += 1
            injected = _faults(faults, n)
            source.refresh(day, next((f for f in injected if f in DATA_FAULTS), None))
            record = run_cycle(run, n, day, invert_boosts="inverted_boosts" in injected, fault=faults.get(n))
            if record["outcome"] == "published":
                since = day
                source.published(n, run.states[PLATFORM].read()["models"][record["version"]])
        source.step(day, served_table(run))
        if on_day is not None:
            on_day(day, served_table(run))
    if status(run) == "running":
        for party in (LENDER, PLATFORM):
            run.states[party].update(status="finished")
