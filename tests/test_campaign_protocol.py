"""The campaign's node protocols: the digests agreed over the link, the platform's steps at the
platform's node under its own policy, rollback through the platform's node.

Jobs run in process over memory links (:class:`fedacq.pipeline.InProcessParties`: the same role
functions, parameter resolution and job-store layout as two nodes). No cryptography runs here:
the platform's "run jobs" are records of succeeded prospect jobs in its own job store, each with
a small XGBoost model in the job's own folder, so these tests are about who decides what, not
about training. A real boost service on 127.0.0.1, started and stopped by the test.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import xgboost as xgb

from fedacq import pipeline
from fedacq.activate.service import BoostClient, BoostRegistry, BoostServer
from fedacq.campaign.config import CampaignPolicy, load_campaign
from fedacq.campaign.cycle import CampaignRun, publish
from fedacq.campaign.demo import CampaignDemoConfig, campaign_text
from fedacq.campaign.loop import measure_live, request_rollback, served_table
from fedacq.campaign.protocol import register_campaign
from fedacq.campaign.state import CampaignState
from fedacq.node.jobs import JobStore, parse_job
from fedacq.pipeline import LENDER, PLATFORM


def _campaign(path: Path, **edits: str) -> Any:
    text = campaign_text(CampaignDemoConfig(days=28, cycle_days=7, key_bits=1024, insecure_test_key=True,
                                            n_estimators=3))
    for old, new in edits.items():
        text = text.replace(old, new)
    path.write_text(text)
    return load_campaign(path)


@pytest.fixture
def site(tmp_path: Path):
    """Both parties' folders, the platform's users, a boost service, in-process parties."""
    rng = np.random.default_rng(0)
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(600)], "f0": rng.normal(size=600),
                          "f1": rng.normal(size=600)})
    scoring = tmp_path / PLATFORM / "data" / "users.parquet"
    scoring.parent.mkdir(parents=True)
    users.to_parquet(scoring, index=False)
    table_root = tmp_path / PLATFORM / "boost_tables"
    table_root.mkdir(parents=True)
    server = BoostServer(BoostRegistry(table_root), "127.0.0.1:0").start()
    client = BoostClient(server.address)
    policy = pipeline.one_operator_policy(1024, True, min_intersection=100)
    with pipeline.start_parties("inproc", tmp_path, {PLATFORM: {"users-scoring": scoring}},
                                {LENDER: policy, PLATFORM: policy}) as parties:
        yield {"root": tmp_path, "users": users, "table_root": table_root, "client": client, "parties": parties,
               "address": server.address}
    client.close()
    server.stop()


def _register(site: dict[str, Any], lender_file: Any, platform_file: Any | None = None,
              platform_psi: float = 0.25) -> dict[str, CampaignState]:
    """Each operator's ``fedacq campaign start``: its own copy, its own limits and boost service."""
    root = site["root"]
    out = {}
    for party, c in ((LENDER, lender_file), (PLATFORM, platform_file or lender_file)):
        limits = CampaignPolicy(max_score_psi=platform_psi, boost_service=site["address"]) if party == PLATFORM \
            else CampaignPolicy()
        register_campaign(root / party / "state", c, party=party, campaigns_dir=root / party / "state" / "campaigns",
                          limits=limits, table_root=site["table_root"] if party == PLATFORM else None)
        out[party] = CampaignState(root / party / "state" / "campaigns", c.name)
    return out


def _platform_run_job(site: dict[str, Any], job_id: str, flip: bool = False, campaign: str = "acq-demo",
                      table: str = "users", intersection: int = 600) -> str:
    """A succeeded prospect run job of ``campaign`` on data set ``table`` in the PLATFORM's own
    store, its model in the job's folder."""
    users = site["users"]
    store = JobStore(site["root"] / PLATFORM / "state")
    store.create(parse_job({"job": {"protocol": "run", "id": job_id}, "datasets": {PLATFORM: {"table": table}},
                            "params": {"mode": "prospect", "experiment": f"campaign-{campaign}"}}, "job"))
    label = (users["f0"] > 0) != flip
    booster = xgb.train({"max_depth": 2, "objective": "binary:logistic"},
                        xgb.DMatrix(users[["f0", "f1"]], label=label.astype(int)), num_boost_round=3)
    model = store.dir(job_id) / "work" / "prospect_xgboost.json"
    booster.save_model(model)
    store.update(job_id, status="succeeded", result={"files": [str(model)], "intersection_size": intersection})
    return job_id


def _final(store: JobStore, job_id: str, deadline: float = 60.0) -> dict[str, Any]:
    """The job's record once it is final (polled with a deadline)."""
    end = time.monotonic() + deadline
    while (record := store.get(job_id))["status"] in ("submitted", "running") and time.monotonic() < end:
        time.sleep(0.05)
    return record


def _run(site: dict[str, Any], c: Any, states: dict[str, CampaignState]) -> CampaignRun:
    client = site["client"]

    def served() -> str | None:
        return next((t.table_version or None for t in client.status().tables if t.layer == c.layer), None)

    return CampaignRun(c, site["parties"], states[LENDER], served=served)


def test_a_different_campaign_at_the_peer_is_refused_over_the_link_at_both(site, tmp_path: Path) -> None:
    c = _campaign(tmp_path / "lender.toml")
    other = _campaign(tmp_path / "platform.toml", **{"boosts = [0.3, 1.0, 1.6, 3.0]": "boosts = [0.3, 1.0, 1.6, 2.5]"})
    assert c.name == other.name and c.digest != other.digest
    states = _register(site, c, other)
    job = {"job": {"protocol": "campaign", "id": "agree-1"}, "params": {"campaign": c.name}}
    with pytest.raises(RuntimeError, match="digest .* differs from the"):
        site["parties"].run(job)
    for party in (LENDER, PLATFORM):  # both sides fail with the reason (the other thread may finish later)
        record = _final(JobStore(tmp_path / party / "state"), "agree-1")
        assert record["status"] == "failed" and "differs" in record["error"]
    _platform_run_job(site, "v1")
    with pytest.raises(RuntimeError, match="differs"):
        publish(_run(site, c, states), 1, 0, {"model": "v1"}, True, "")
    assert states[PLATFORM].cycles() == [] and served_table(_run(site, c, states)) is None
    # a campaign the peer never registered: refused the same way
    with pytest.raises(RuntimeError, match="no such campaign registered"):
        site["parties"].run({"job": {"protocol": "campaign", "id": "agree-2"}, "params": {"campaign": "other"}})


def test_the_platform_gates_with_its_own_stricter_psi_and_publishes_nothing_that_fails(site, tmp_path) -> None:
    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c, platform_psi=0.01)  # the platform's own [campaigns] max_score_psi, stricter
    run = _run(site, c, states)
    first = publish(run, 1, 0, {"model": _platform_run_job(site, "v1")}, True, "")
    assert first["outcome"] == "published" and served_table(run) == first["table"]
    second = publish(run, 2, 7, {"model": _platform_run_job(site, "v2", flip=True)}, True, "")
    psi = next(g for g in second["gates"] if g["name"] == "max_score_psi")
    assert second["outcome"] == "refused" and not psi["passed"] and psi["threshold"] == 0.01
    assert 0.01 < psi["value"] and "max_score_psi" in second["reason"]
    assert served_table(run) == first["table"]  # never published
    assert sorted(p.name for p in (site["table_root"] / c.layer).iterdir()) == [first["table"]]
    cycle = states[PLATFORM].read_cycle(2)
    assert cycle["outcome"] == "refused" and cycle["boost_table"] is None and not cycle["gates"][-1]["passed"]
    assert states[PLATFORM].read()["live_table"] == first["table"]
    assert set(second) == {"outcome", "gates", "table", "version", "reason"}  # nothing about a user
    # the lender's own verdict: the platform records the refusal and scores nothing
    third = publish(run, 3, 14, {"model": _platform_run_job(site, "v3")}, False, "gate failed: auc")
    assert third["outcome"] == "refused" and states[PLATFORM].read_cycle(3)["reason"].startswith("the lender refused")
    assert not (states[PLATFORM].cycle_dir(3) / "scores.npy").exists()


def test_a_publish_job_naming_a_run_job_the_platform_lacks_is_refused_and_changes_nothing(site, tmp_path) -> None:
    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c)
    run = _run(site, c, states)
    before = states[PLATFORM].read()
    with pytest.raises(RuntimeError, match="'v9': the platform has no such job"):
        publish(run, 1, 0, {"model": "v9"}, True, "")
    assert states[PLATFORM].cycles() == [] and states[PLATFORM].read() == before
    assert served_table(run) is None and not (site["table_root"] / c.layer).exists()
    # a job of another protocol is no model either; a path is no job id
    store = JobStore(tmp_path / PLATFORM / "state")
    store.create(parse_job({"job": {"protocol": "psi", "id": "p1"}}, "job"))
    store.update("p1", status="succeeded", result={})
    with pytest.raises(RuntimeError, match="not a run job that succeeded"):
        publish(run, 2, 0, {"model": "p1"}, True, "")
    with pytest.raises(ValueError, match="run job id"):
        publish(run, 3, 0, {"model": "../lender/state/jobs/x"}, True, "")
    assert states[PLATFORM].cycles() == []


class _MeasureStandIn:
    """The real parties, except a ``measure`` job returns a prepared lender report whose lift is
    significantly bad (the measurement itself is tested elsewhere)."""

    transport = "inproc"

    def __init__(self, parties: Any, root: Path, layer: str, relative: dict[str, float]) -> None:
        self.parties, self.root, self.layer, self.relative = parties, root, layer, relative

    def run(self, job: dict[str, Any], progress: bool = False) -> dict[str, dict[str, Any]]:
        if job["job"]["protocol"] != "measure":
            return self.parties.run(job, progress)
        report = self.root / f"{job['job']['id']}.json"
        report.write_text(json.dumps({"layers": {self.layer: {"lift": {
            "cost_per_credit_user": {"relative": self.relative}}}}}))
        return {LENDER: {"report": str(report)}}


class _Delivered:
    def deliver(self, first_day: int, day: int, fault: str | None = None) -> None:
        pass


def test_a_significantly_bad_lift_rolls_back_through_the_platforms_node(site, tmp_path: Path) -> None:
    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c)
    bad = {"value": 0.4, "ci_low": 0.1, "ci_high": 0.8}
    run = _run(site, c, states)
    run = dataclasses.replace(run, parties=_MeasureStandIn(site["parties"], tmp_path, c.layer, bad))
    tables = []
    for n in (1, 2):
        answer = publish(run, n, 7 * (n - 1), {"model": _platform_run_job(site, f"v{n}")}, True, "")
        assert answer["outcome"] == "published"
        states[LENDER].write_cycle(n, outcome="published", boost_table=answer["table"], version=f"v{n}")
        states[LENDER].update(live_version=f"v{n}", live_table=answer["table"],  # as run_cycle records it
                              published=[*states[LENDER].read()["published"],
                                         {"cycle": n, "table": answer["table"], "version": f"v{n}"}])
        tables.append(answer["table"])
    assert served_table(run) == tables[1]
    assert measure_live(run, _Delivered(), day=14, first_day=7)  # type: ignore[arg-type]
    assert served_table(run) == tables[0]  # the platform's boost service's Rollback
    for party, state in states.items():
        cycle = state.read_cycle(2)
        assert cycle["outcome"] == "rolled_back" and "+40.0% [+10.0%, +80.0%]" in cycle["reason"]
        assert tables[0] in cycle["reason"] and state.read()["live_table"] == tables[0]
    assert states[LENDER].read_cycle(2)["measurement"]["relative"] == bad
    assert states[PLATFORM].read_cycle(2)["measurement"] is None  # the lift is the lender's
    # the platform checks the cycle is its live one: cycle 2 is rolled back already, 7 never ran
    for n in (2, 7):
        with pytest.raises(RuntimeError, match="not live|has no cycle"):
            request_rollback(run, n, "again")
    assert served_table(run) == tables[0]


def test_the_lenders_status_changes_reach_the_platforms_record_which_checks_them(site, tmp_path: Path) -> None:
    from fedacq.campaign.loop import set_status
    from fedacq.console.data import NodeState, Sources

    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c)
    parties = site["parties"]
    for new in ("paused", "running"):
        answer = set_status(parties, states[LENDER], new)
        assert answer["outcome"] == "recorded" and new in answer["reason"]
        assert states[LENDER].read()["status"] == states[PLATFORM].read()["status"] == new
        assert states[PLATFORM].read()["status_by"] == LENDER
    # the platform's own operator pauses: the lender cannot resume it over the link
    states[PLATFORM].set_status("paused", by=PLATFORM)
    set_status(parties, states[LENDER], "paused")  # the same status: nothing changes at the platform
    with pytest.raises(RuntimeError, match="paused by the platform's own operator: only it resumes it"):
        set_status(parties, states[LENDER], "running")
    assert states[PLATFORM].read()["status"] == "paused" and states[PLATFORM].read()["status_by"] == PLATFORM
    states[PLATFORM].set_status("running", by=PLATFORM)
    # stop reaches the platform; it then publishes nothing, and the console shows it stopped
    set_status(parties, states[LENDER], "stopped")
    assert states[PLATFORM].read()["status"] == "stopped"
    view = NodeState(Sources(PLATFORM, LENDER, tmp_path / PLATFORM / "state", boost_tables=site["table_root"]))
    assert [(x["name"], x["status"], x["status_by"]) for x in view.campaigns()["campaigns"]] == \
        [(c.name, "stopped", LENDER)]
    answer = publish(_run(site, c, states), 1, 0, {"model": _platform_run_job(site, "v1")}, True, "")
    assert answer["outcome"] == "refused" and "stopped" in answer["reason"]


def test_a_peers_status_change_the_platforms_record_does_not_allow_changes_nothing(site, tmp_path: Path) -> None:
    """A misbehaving lender node sends status jobs directly: revive a stopped campaign, an unknown
    status, a campaign the platform does not hold. Each is refused and the platform's record stays."""
    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c)
    states[PLATFORM].set_status("stopped", by=PLATFORM)
    before = states[PLATFORM].read()

    def job(i: int, **params: Any) -> dict[str, Any]:
        return {"job": {"protocol": "campaign", "id": f"status-{i}"}, "params": {"campaign": c.name, **params}}

    with pytest.raises(RuntimeError, match="is stopped: it cannot become running"):
        site["parties"].run(job(1, status="running"))  # the lender's own record is running: only the relay runs
    with pytest.raises(ValueError, match="status must be one of"):
        site["parties"].run(job(2, status="../../deleted"))
    with pytest.raises(RuntimeError, match="no such campaign registered"):
        site["parties"].run(job(3, campaign="other", status="paused"))
    assert states[PLATFORM].read() == before
    record = _final(JobStore(tmp_path / PLATFORM / "state"), "status-1")
    assert record["status"] == "failed" and "cannot become running" in record["error"]


def _publish_job(c: Any, n: int, day: int, models: dict[str, str], job_id: str) -> dict[str, Any]:
    """A ``campaign_publish`` job as the lender's node would send it (here: any id and values)."""
    return {"job": {"protocol": "campaign_publish", "id": job_id},
            "datasets": {PLATFORM: {"scoring": c.datasets["platform_scoring"]}},
            "params": {"campaign": c.name, "cycle": n, "day": day, "models": models, "lender_passed": True,
                       "lender_reason": ""}}


def test_a_failed_publication_is_recorded_and_the_same_cycle_publishes_on_retry(site, tmp_path: Path) -> None:
    from fedacq.node.local import free_port

    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c)
    # the platform's boost service is down: its operator registered an address nothing listens on
    down = f"127.0.0.1:{free_port()}"
    register_campaign(tmp_path / PLATFORM / "state", c, party=PLATFORM,
                      campaigns_dir=tmp_path / PLATFORM / "state" / "campaigns",
                      limits=CampaignPolicy(boost_service=down), table_root=site["table_root"])
    models = {"model": _platform_run_job(site, "v1")}
    with pytest.raises(RuntimeError, match="publication failed"):
        site["parties"].run(_publish_job(c, 1, 0, models, "c1-publish"))
    failed = states[PLATFORM].read_cycle(1)
    assert failed["outcome"] == "failed" and failed["reason"].startswith("publication failed")
    withdrawn = failed["attempts"][0]["table"]
    assert [a["outcome"] for a in failed["attempts"]] == ["failed"] and withdrawn
    assert not (site["table_root"] / c.layer / withdrawn).exists()  # never half-published: no watcher loads it
    assert states[PLATFORM].read()["live_table"] is None
    # the operator starts the service; the same cycle, same version, is published by a new job
    server = BoostServer(BoostRegistry(site["table_root"]), down).start()
    try:
        answer = site["parties"].run(_publish_job(c, 1, 0, models, "c1-publish2"))[LENDER]
        assert answer["outcome"] == "published" and answer["table"] != withdrawn
        cycle = states[PLATFORM].read_cycle(1)
        assert cycle["outcome"] == "published" and cycle["reason"] is None and cycle["boost_table"] == answer["table"]
        assert [(a["job"], a["outcome"]) for a in cycle["attempts"]] == [("c1-publish", "failed"),
                                                                          ("c1-publish2", "published")]
        assert "publication failed" in cycle["attempts"][0]["reason"]
        assert states[PLATFORM].read()["live_table"] == answer["table"]
        assert [p.name for p in (site["table_root"] / c.layer).iterdir()] == [answer["table"]]
        # the lender lost that answer and asks again: the same answer, nothing built or loaded again
        again = site["parties"].run(_publish_job(c, 1, 0, models, "c1-publish3"))[LENDER]
        assert (again["outcome"], again["table"]) == ("published", answer["table"])
        assert states[PLATFORM].read_cycle(1)["attempts"] == cycle["attempts"]
        assert [p.name for p in (site["table_root"] / c.layer).iterdir()] == [answer["table"]]
    finally:
        server.stop()


def test_the_platform_checks_the_lenders_cycle_day_and_version_against_its_own_record(site, tmp_path) -> None:
    """A misbehaving lender names cycles, days and run jobs the platform's record does not allow;
    each job is refused with the reason and changes nothing at the platform."""
    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c)
    run = _run(site, c, states)
    v1, v2 = _platform_run_job(site, "v1"), _platform_run_job(site, "v2")
    assert publish(run, 2, 7, {"model": v1}, True, "")["outcome"] == "published"
    before = (states[PLATFORM].read(), states[PLATFORM].read_cycle(2), served_table(run))
    other_campaign = _platform_run_job(site, "x1", campaign="other")
    other_table = _platform_run_job(site, "x2", table="customers")
    refused = [
        (1, 14, {"model": v2}, "a new cycle comes after cycle 2"),       # an earlier cycle made up afterwards
        (9, 14, {"model": v2}, "at most 4 fit the schedule"),           # beyond the campaign's schedule
        (3, 14, {"model": v1}, "version 'v1' belongs to another cycle"),  # the published version again
        (3, 40, {"model": v2}, "day 40 of cycle 3 is outside"),          # a day past the campaign
        (3, 0, {"model": v2}, "day 0 of cycle 3 is outside"),            # days do not go back
        (3, 14, {"model": other_campaign}, "not a run job of campaign 'acq-demo'"),
        (3, 14, {"model": other_table}, "not a run job of campaign 'acq-demo'"),
        (3, 14, {"stage": v2}, r"models names \['stage'\]"),
        (2, 7, {"model": v2}, "cycle 2 of 'acq-demo' is already published"),
    ]
    for i, (n, day, models, reason) in enumerate(refused):
        with pytest.raises(RuntimeError, match=reason):
            site["parties"].run(_publish_job(c, n, day, models, f"bad-{i}"))
    assert (states[PLATFORM].read(), states[PLATFORM].read_cycle(2), served_table(run)) == before
    assert states[PLATFORM].cycles() == [2]
    # a lender that says its gates passed cannot publish a version trained on too small an intersection
    small = publish(run, 3, 14, {"model": _platform_run_job(site, "v3", intersection=50)}, True, "")
    assert small["outcome"] == "refused" and "min_intersection = 50" in small["reason"]
    assert served_table(run) == before[2] and states[PLATFORM].read_cycle(3)["boost_table"] is None


def test_the_lender_checks_the_platforms_answers_against_its_own_record(site, tmp_path: Path, monkeypatch) -> None:
    """A misbehaving platform node answers with another version than the lender asked to publish,
    and claims a rollback to a table the lender never recorded: each job fails at the lender and
    its record stays as it was."""
    from fedacq.campaign import protocol

    c = _campaign(tmp_path / "campaign.toml")
    states = _register(site, c)
    run = _run(site, c, states)
    monkeypatch.setattr(protocol, "_publish", lambda ctx, reg, c: protocol._answer(ctx, "published", table="t-1",
                                                                                   version="v9"))
    with pytest.raises(RuntimeError, match="version 'v1'.* with 'published' of version 'v9'"):
        publish(run, 1, 0, {"model": "v1"}, True, "")
    for n, table in ((1, "t-1"), (2, "t-2")):
        states[LENDER].write_cycle(n, outcome="published", boost_table=table, version=f"v{n}")
        states[LENDER].update(live_version=f"v{n}", live_table=table,
                              published=[*states[LENDER].read()["published"],
                                         {"cycle": n, "table": table, "version": f"v{n}"}])
    before = (states[LENDER].read(), states[LENDER].read_cycle(2))
    # a table it never published, an earlier table with another version, the very cycle being rolled back
    for day, (table, version) in enumerate((("evil", "v1"), ("t-1", "v0"), ("t-2", "v2"))):
        monkeypatch.setattr(protocol, "_rollback", lambda ctx, reg, c, t=table, v=version:
                            protocol._answer(ctx, "rolled_back", table=t, version=v, reason="done"))
        with pytest.raises(RuntimeError, match=f"to table '{table}' .* no earlier version the lender recorded"):
            request_rollback(run, 2, "bad lift", day)
        assert (states[LENDER].read(), states[LENDER].read_cycle(2)) == before


class _Bidding:
    """The days' data source: no refresh or delivery (the cycle is prepared by the test); on
    ``start_on`` the platform's operator brings its boost service back (``start()``)."""

    def __init__(self, start_on: int, start: Any) -> None:
        self.start_on, self.start, self.days, self.published_cycles = start_on, start, [], []

    def refresh(self, day: int, fault: str | None = None) -> None:
        pass

    def deliver(self, first_day: int, day: int, fault: str | None = None) -> None:
        raise AssertionError("nothing is live to measure")

    def step(self, day: int, table_version: str | None) -> None:
        self.days.append((day, table_version))
        if day == self.start_on:
            self.start()

    def published(self, cycle: int, version: str) -> None:
        self.published_cycles.append((cycle, version))


def test_the_schedule_publishes_a_failed_cycle_again_until_the_service_takes_it(site, tmp_path: Path,
                                                                               monkeypatch) -> None:
    from fedacq.campaign import gates, loop
    from fedacq.campaign.cycle import publish_cycle
    from fedacq.node.local import free_port

    c = _campaign(tmp_path / "campaign.toml", **{"days = 28": "days = 7"})
    states = _register(site, c)
    down = f"127.0.0.1:{free_port()}"  # the platform's boost service, down until day 2
    register_campaign(tmp_path / PLATFORM / "state", c, party=PLATFORM,
                      campaigns_dir=tmp_path / PLATFORM / "state" / "campaigns",
                      limits=CampaignPolicy(boost_service=down), table_root=site["table_root"])
    model = _platform_run_job(site, "v1")
    passing = [gates.intersection_gate(600, c.min_intersection)]

    def cycle(run: CampaignRun, n: int, day: int, fault: Any = None) -> dict[str, Any]:
        """Cycle n as run_cycle leaves it once the lender's steps passed (they are tested elsewhere)."""
        run.state.write_cycle(n, sim_day=day, version=model, model_job=model, models={"model": model}, gates=passing)
        return publish_cycle(run, n, day, passing)

    monkeypatch.setattr(loop, "run_cycle", cycle)
    servers: list[Any] = []
    source = _Bidding(2, lambda: servers.append(BoostServer(BoostRegistry(site["table_root"]), down).start()))
    client = BoostClient(down)

    def served() -> str | None:  # what bidding is served: nothing while the service is down
        return next((t.table_version or None for t in client.status().tables if t.layer == c.layer), None) \
            if servers else None

    run = CampaignRun(c, site["parties"], states[LENDER], served=served)
    try:
        loop.run_campaign(run, source)  # type: ignore[arg-type]
    finally:
        client.close()
        for server in servers:
            server.stop()
    lender, platform = states[LENDER].read_cycle(1), states[PLATFORM].read_cycle(1)
    # day 0 and day 1 failed (service down), day 2 failed too (it starts after the day's bidding), day 3 published
    assert lender["outcome"] == "published" and lender["reason"] is None
    jobs = [f"{c.name}-c0001-publish"] + [f"{c.name}-c0001-publish{k}" for k in (2, 3, 4)]
    for record in (lender, platform):  # each node keeps every attempt with its reason
        assert [(a["job"], a["outcome"]) for a in record["attempts"]] == [*zip(jobs, ["failed"] * 3 + ["published"])]
        assert all("publication failed" in a["reason"] for a in record["attempts"][:3])
    table = lender["boost_table"]
    assert platform["boost_table"] == table and states[LENDER].read()["live_table"] == table
    assert source.published_cycles == [(1, model)]
    assert [t for _, t in source.days] == [None] * 3 + [table] * 4
    assert [p.name for p in (site["table_root"] / c.layer).iterdir()] == [table]  # failed tables withdrawn
    with pytest.raises(ValueError, match="cycle 1 is published, not a failed publication"):
        loop.retry_publish(run, 1)
