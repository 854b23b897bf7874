"""The campaign's schedule: cycles every ``cycle_days``, measurement every ``measure_days``,
automatic rollback, pause and resume — day by day.

On each day ``d`` of the campaign (simulated days with :class:`fedacq.campaign.simulated.SimulatedMarket`):

1. if a measurement is due (``d > 0`` and ``d % measure_days == 0``) and a version is live: the
   campaign files of the days since that version went live are delivered to each party, and a
   ``measure`` node job measures them (:func:`fedacq.pipeline.measure`). The lender records the
   lift of the rollback KPI on the live version's cycle. If its interval lies entirely on the bad
   side (:func:`fedacq.campaign.gates.significantly_bad`), a ``campaign_rollback`` job has the
   platform's node roll the live version back to the previous published, not rolled-back table
   with its boost service's ``Rollback``; the cycle's outcome becomes ``rolled_back`` with the
   measured lift as the reason (each node records it);
2. if a cycle is due (``d % cycle_days == 0``) and the campaign is not paused: the parties' data
   sets are refreshed as of ``d`` (the lender's matured labels, the platform's users) and
   :func:`fedacq.campaign.cycle.run_cycle` runs;
   If no cycle is due but the latest cycle's publication failed (the platform's boost service
   was down or refused the table, the link was lost: the ``campaign_publish`` job failed), it is
   published again (:func:`retry_publish`): the same cycle and version, a new job, a new table
   version at the platform; each node records every attempt and its reason (``attempts``);
3. the day's bidding runs with the table the boost service serves (the simulator's world).

The loop runs at the lender (``fedacq campaign run``) and submits every job to its own node.
``fedacq campaign pause`` / ``resume`` / ``stop`` change the status in a node's
``campaign.json``: the lender's loop reads its own before each day (a paused campaign keeps
bidding with its live table, publishes nothing and is not measured; a stopped one ends); the
platform's node refuses to publish for a campaign that is not running in its own record. The
lender's changes, and ``finished`` when its schedule ends, reach the platform's record through a
``campaign`` job (:func:`set_status`), which the platform checks against its own record.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, Protocol

from fedacq import pipeline
from fedacq.campaign import gates
from fedacq.campaign.cycle import CampaignRun, live, publish_cycle, run_cycle
from fedacq.campaign.protocol import PUBLISH_FAULTS
from fedacq.pipeline import LENDER, PLATFORM

#: faults the demo can inject, by cycle (``faults[n]``: one or more, joined by ``+``): where each
#: acts (:data:`fedacq.campaign.protocol.PUBLISH_FAULTS` by the platform's operator, at its node).
DATA_FAULTS = ("shuffled_labels",)
MEASURE_FAULTS = ("lost_treatment_clicks",)


class DataSource(Protocol):
    """Where the parties' data sets come from, day by day (the simulator, or each party's own ETL)."""

    def refresh(self, day: int, fault: str | None = None) -> None:
        """Write each party's registered training and scoring data as known at the start of ``day``."""

    def deliver(self, first_day: int, day: int, fault: str | None = None) -> None:
        """Write each party's campaign files (funnel, events, spend) of days ``first_day..day-1``."""

    def step(self, day: int, table_version: str | None) -> None:
        """Run ``day``'s bidding with ``table_version`` live (None: no boost)."""

    def published(self, cycle: int, version: str) -> None:
        """Cycle ``cycle`` published model ``version`` (its run job's id)."""


def status(run: CampaignRun) -> str:
    """The campaign's status as the lender's node records it."""
    return run.state.read()["status"]


def served_table(run: CampaignRun) -> str | None:
    """The table version the platform's boost service serves (the simulator's view; None without one)."""
    return run.served() if run.served is not None else None


def live_cycle(states: dict[str, Any]) -> int | None:
    """The cycle whose table is live, by one node's record (``{party: CampaignState}``, one party)."""
    (state,) = states.values()
    table = state.read().get("live_table")
    return state.cycle_of_table(table) if table else None


def measure_live(run: CampaignRun, source: DataSource, day: int, first_day: int,
                 faults: dict[int, str] | None = None) -> bool:
    """Measure the live version over days ``first_day..day-1`` (recorded on its cycle); roll it
    back if its lift is significantly bad. Returns whether it was rolled back. ``faults``: the
    demo's injected faults by cycle (a :data:`MEASURE_FAULTS` one acts on the delivered files)."""
    c, n = run.campaign, live_cycle({LENDER: run.state})
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
    history = run.state.read_cycle(n).get("measurements", [])
    latest = {"measurement": record} if relative else {}
    run.state.write_cycle(n, measurements=[*history, record], **latest)
    if relative is not None and gates.significantly_bad(relative, c.rollback_better):
        reason = (f"{c.rollback_kpi} lift {relative['value']:+.1%} [{relative['ci_low']:+.1%}, "
                  f"{relative['ci_high']:+.1%}] over days {first_day}..{day - 1} (measure job {job}) is "
                  f"significantly {c.bad_side} than control")
        request_rollback(run, n, reason, day, record)
        return True
    return False


def request_rollback(run: CampaignRun, n: int, reason: str, day: int | None = None,
                     measurement: dict[str, Any] | None = None) -> str:
    """The ``campaign_rollback`` job: the platform's node rolls cycle ``n`` back through its boost
    service and records ``reason``; the lender records the platform's answer. The table now served."""
    c = run.campaign
    job = {"job": {"protocol": "campaign_rollback", "id": f"{c.name}-c{n:04d}-rollback" +
                   (f"-d{day:04d}" if day is not None else "")},
           "params": {"campaign": c.name, "cycle": n, "reason": reason[:2000]}}
    answer = run.parties.run(job, run.progress)[LENDER]
    run.state.write_cycle(n, outcome="rolled_back", reason=answer["reason"],
                          **({"measurement": measurement} if measurement else {}))
    run.state.update(live_version=answer["version"] or None, live_table=answer["table"] or None)
    run.say(f"ROLLBACK: cycle {n}: {answer['reason']}")
    return answer["table"]


def rollback(state: Any, boosts: Any, reason: str, to: str | None = None) -> str:
    """At the platform: its boost service (``boosts``, an admin
    :class:`~fedacq.activate.service.BoostClient`) serves the previous published table that was
    not rolled back (or ``to``); the live cycle becomes ``rolled_back`` with ``reason`` in the
    platform's ``state`` (:class:`~fedacq.campaign.state.CampaignState`). Used by the
    ``campaign_rollback`` job and ``fedacq campaign rollback``. Returns the table now served."""
    name = state.name
    n = live_cycle({PLATFORM: state})
    if n is None:
        raise ValueError(f"campaign {name}: no live version to roll back")
    earlier = [p for p in state.read().get("published", [])
               if p["cycle"] < n and state.read_cycle(p["cycle"])["outcome"] == "published"]
    target = next((p for p in reversed(earlier) if to is None or p["table"] == to), None)
    if target is None:
        raise ValueError(f"campaign {name}: no earlier published table {('= ' + to) if to else ''} "
                         f"to roll back to from cycle {n}")
    boosts.rollback(target["table"])
    text = f"{reason}; rolled back to {target['table']} (cycle {target['cycle']})"
    state.write_cycle(n, outcome="rolled_back", reason=text)
    state.update(live_version=target["version"], live_table=target["table"])
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
    known = DATA_FAULTS + PUBLISH_FAULTS + MEASURE_FAULTS  # publication's act at the platform (its registration)
    for n in faults:
        for fault in _faults(faults, n):
            if fault not in known:
                raise ValueError(f"cycle {n}: unknown fault {fault!r}; known: {known}")
    n = max(run.state.cycles(), default=0)
    since = 0
    for day in range(c.days):
        state = status(run)
        if state in ("stopped", "finished"):
            break
        if state == "running" and day > 0 and day % c.measure_days == 0 and live(run)[1] is not None:
            if measure_live(run, source, day, since, faults):
                since = day  # the restored table is measured from the rollback on
        record = None
        if state == "running" and day % c.cycle_days == 0:
            n += 1
            injected = _faults(faults, n)
            source.refresh(day, next((f for f in injected if f in DATA_FAULTS), None))
            record = run_cycle(run, n, day, fault=faults.get(n))
        elif state == "running" and n and publication_failed(run.state.read_cycle(n)):
            run.say(f"day {day}: cycle {n}'s publication failed ({run.state.read_cycle(n)['reason']}); "
                    "publish it again")
            record = retry_publish(run, n)
        if record is not None and record["outcome"] == "published":
            since = day
            source.published(n, record["version"])
        source.step(day, served_table(run))
        if on_day is not None:
            on_day(day, served_table(run))
    if status(run) == "running":
        set_status(run.parties, run.state, "finished")


def publication_failed(record: dict[str, Any]) -> bool:
    """Whether a lender's cycle record is one whose ``campaign_publish`` job failed (not a gate)."""
    return record["outcome"] == "failed" and bool(record.get("attempts"))


def retry_publish(run: CampaignRun, n: int) -> dict[str, Any]:
    """Publish cycle ``n`` again after its publication failed: the version, models and lender's
    gates it recorded, on its own day, in a new ``campaign_publish`` job
    (:func:`fedacq.campaign.cycle.publish_cycle`); the platform accepts it only for a cycle its
    own record shows failed or unfinished, with the same version. The lender's cycle record."""
    record = run.state.read_cycle(n)
    if not publication_failed(record):
        raise ValueError(f"campaign {run.name}: cycle {n} is {record['outcome']}, not a failed publication")
    return publish_cycle(run, n, record["sim_day"], record["gates"], attempt=len(record["attempts"]) + 1)


def set_status(parties: Any, state: Any, new: str) -> dict[str, Any]:
    """At the lender: ``state`` (its :class:`~fedacq.campaign.state.CampaignState`) becomes ``new``
    (its operator decides: this stands even if the peer is unreachable), then a ``campaign`` job
    relays it to the platform's record (:mod:`fedacq.campaign.protocol`): the platform's answer.
    A RuntimeError names what the platform's node refused or that it could not be reached."""
    from fedacq.node.jobs import new_job_id

    state.set_status(new, by=LENDER)
    job = {"job": {"protocol": "campaign", "id": new_job_id("campaign")},
           "params": {"campaign": state.name, "status": new}}
    try:
        return parties.run(job)[LENDER]
    except RuntimeError as exc:
        raise RuntimeError(f"campaign {state.name}: {new} at the lender, but the platform's record did not "
                           f"change: {exc}") from None


#: a real day, in seconds.
DAY = 24 * 3600.0


class RealTime:
    """Real days (``fedacq campaign run`` without a simulator): each party's own feeds keep its
    registered data sets and campaign files current, the platform bids with what its boost
    service serves, and the loop waits for the start of each next day."""

    def __init__(self, start: float | None = None) -> None:
        self.start = time.time() if start is None else start

    def refresh(self, day: int, fault: str | None = None) -> None:
        """Nothing to write: the lender's labels and the platform's users are their own feeds."""

    def deliver(self, first_day: int, day: int, fault: str | None = None) -> None:
        """Nothing to write: the campaign files are each party's own feeds."""

    def published(self, cycle: int, version: str) -> None:
        """Nothing to keep: no counterfactual outside the simulator."""

    def step(self, day: int, table_version: str | None) -> None:
        time.sleep(max(0.0, self.start + (day + 1) * DAY - time.time()))


def run_at_node(party_toml: str | Path, name: str, source: DataSource | None = None, *,
                faults: dict[int, str] | None = None, on_day: Any = None,
                served: Callable[[], str | None] | None = None, progress: bool = False,
                say: Callable[[str], None] = lambda text: None) -> CampaignRun:
    """``fedacq campaign run``: drive campaign ``name`` from the lender's node (``party_toml``),
    every step a job submitted to that node alone (:class:`fedacq.pipeline.SiteParties`): first
    the ``campaign`` job (both nodes' registered digests must match), then the schedule
    (:func:`run_campaign`) on ``source`` (default :class:`RealTime`). The campaign is the one
    this node's operator registered (``fedacq campaign start``), by name."""
    from fedacq.campaign.config import CampaignError
    from fedacq.campaign.protocol import registered, registration_path
    from fedacq.campaign.state import CampaignState

    parties = pipeline.SiteParties(party_toml)
    if parties.party != LENDER:
        raise CampaignError(f"{parties.config.path}: a campaign is driven from the lender's node "
                            f"(this node is the {parties.party}'s)")
    reg = registered(parties.config.state_dir, name)
    if reg is None:
        raise CampaignError(f"campaign {name!r} is not registered at this node (fedacq campaign start)")
    campaign = reg.campaign(str(registration_path(parties.config.state_dir, name)))
    run = CampaignRun(campaign, parties, CampaignState(Path(reg.campaigns_dir), name), served=served,
                      progress=progress, say=say)
    drive(run, source or RealTime(), faults, on_day)
    return run


def drive(run: CampaignRun, source: DataSource, faults: dict[int, str] | None = None, on_day: Any = None) -> None:
    """The ``campaign`` job (both nodes hold the same campaign by digest, or nothing runs), then
    the schedule (:func:`run_campaign`)."""
    from fedacq.node.jobs import new_job_id

    agreed = run.parties.run({"job": {"protocol": "campaign", "id": new_job_id("campaign")},
                              "params": {"campaign": run.name}})[LENDER]
    run.say(f"campaign {run.name}: both nodes hold digest {agreed['digest'][:16]}...")
    run_campaign(run, source, faults, on_day)
