"""Campaign cycles on simulated days: gates, publication, measurement, rollback, pause — and the
console reads what both nodes recorded.

The cycle test runs the real node jobs (psi, run, campaign_publish, measure) in process over
memory links on a small world with a 1024-bit test key (both nodes in test mode: the key size is
for the test's speed only), and a real boost service on 127.0.0.1. Rollback through the
platform's node is tested in tests/test_campaign_protocol.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from fedacq import pipeline
from fedacq.activate.service import BoostClient, BoostRegistry, BoostServer
from fedacq.campaign import gates
from fedacq.campaign.config import CampaignPolicy, load_campaign
from fedacq.campaign.cycle import CampaignRun
from fedacq.campaign.demo import CampaignDemoConfig, campaign_text
from fedacq.campaign.loop import drive, run_campaign
from fedacq.campaign.protocol import register_campaign
from fedacq.campaign.simulated import SimulatedMarket
from fedacq.campaign.state import CampaignState
from fedacq.console.data import NodeState, Sources
from fedacq.pipeline import LENDER, PLATFORM


def _campaign(tmp_path: Path, days: int, **edits: str):
    text = campaign_text(CampaignDemoConfig(days=days, key_bits=1024, insecure_test_key=True, n_estimators=3))
    for old, new in edits.items():
        assert old in text
        text = text.replace(old, new)
    (tmp_path / "campaign.toml").write_text(text)
    return load_campaign(tmp_path / "campaign.toml")


def _states(root: Path, c: Any) -> dict[str, CampaignState]:
    states = {p: CampaignState(root / p / "state" / "campaigns", c.name) for p in (LENDER, PLATFORM)}
    for party, state in states.items():
        state.create(party=party, digest=c.digest, description=c.description, settings=c.settings())
    return states


def _register(root: Path, c: Any, boost_service: Any) -> dict[str, CampaignState]:
    """Each operator's ``fedacq campaign start``; the platform's with its own boost service."""
    table_root, client = boost_service
    for party in (LENDER, PLATFORM):
        limits = CampaignPolicy(boost_service=client.address) if party == PLATFORM else CampaignPolicy()
        register_campaign(root / party / "state", c, party=party, campaigns_dir=root / party / "state" / "campaigns",
                          limits=limits, table_root=table_root if party == PLATFORM else None)
    return {p: CampaignState(root / p / "state" / "campaigns", c.name) for p in (LENDER, PLATFORM)}


def _served(c: Any, client: Any) -> Any:
    return lambda: next((t.table_version or None for t in client.status().tables if t.layer == c.layer), None)


@pytest.fixture
def boost_service(tmp_path: Path):
    root = tmp_path / PLATFORM / "boost_tables"
    root.mkdir(parents=True)
    server = BoostServer(BoostRegistry(root), "127.0.0.1:0").start()
    client = BoostClient(server.address)
    yield root, client
    client.close()
    server.stop()


def test_cycles_publish_refuse_and_both_consoles_read_them(tmp_path: Path, boost_service) -> None:
    from fedacq.sim.world import World

    table_root, client = boost_service
    c = _campaign(tmp_path, days=8, **{"min_intersection = 500": "min_intersection = 200",
                                       "cycle_days = 10\nmeasure_days = 10": "cycle_days = 7\nmeasure_days = 7"})
    world = World(12_000, horizon_days=c.days, seed=3)
    source = SimulatedMarket(world, tmp_path, c, budget_per_day=240.0, seed=3)
    policy = pipeline.one_operator_policy(1024, True, min_intersection=100)
    with pipeline.start_parties("inproc", tmp_path, source.paths, {LENDER: policy, PLATFORM: policy}) as parties:
        states = _register(tmp_path, c, boost_service)
        run = CampaignRun(c, parties, states[LENDER], served=_served(c, client))
        served: list[str | None] = []
        drive(run, source, {2: "shuffled_labels"}, on_day=lambda day, version: served.append(version))

    lender = [states[LENDER].read_cycle(n) for n in states[LENDER].cycles()]
    platform = [states[PLATFORM].read_cycle(n) for n in states[PLATFORM].cycles()]
    assert [x["sim_day"] for x in lender] == [0, 7]
    first, shuffled = lender[0], lender[1]
    assert first["outcome"] == "published" and all(g["passed"] for g in first["gates"])
    assert [g["name"] for g in first["gates"]] == ["min_intersection", "min_validation_auc", "max_score_psi"]
    # the injected fault: trained on permuted labels; on this small world (a hundred validation rows)
    # chance can lift its AUC over the lender's gate, but then its scores fail the platform's
    assert shuffled["fault"] == "shuffled_labels" and shuffled["outcome"] == "refused"
    assert shuffled["boost_table"] is None and shuffled["reason"].startswith(("lender: gate failed",
                                                                               "platform: gate failed"))
    assert platform[1]["outcome"] == "refused" and not gates.passed(shuffled["gates"])
    # the platform never holds the lender's metric; it keeps its own gates and its users' scores
    assert all(g["name"] != "min_validation_auc" for x in platform for g in x["gates"])
    assert "validation" not in platform[0] and "validation" in first
    assert (states[PLATFORM].cycle_dir(1) / "scores.npy").is_file()
    assert not (states[LENDER].cycle_dir(1) / "scores.npy").exists()
    # bidding served what the service served: the first version from day 0; one table per publication
    published = [x for x in lender if x["outcome"] == "published"]
    assert served[0] == first["boost_table"] and served[-1] == published[-1]["boost_table"]
    assert len(list((table_root / c.layer).iterdir())) == len(published)
    # the schedule's end reached the platform's record through a campaign job, not only the lender's
    assert states[LENDER].read()["status"] == states[PLATFORM].read()["status"] == "finished"
    assert states[PLATFORM].read()["status_by"] == LENDER
    # a measurement of the live version on day 7, recorded with the console's keys
    m = first["measurements"][0]
    assert m["kpi"] == "cost_per_credit_user" and m["job"] == f"{c.name}-d0007-measure"
    assert m["relative"] is None or set(m["relative"]) == {"value", "ci_low", "ci_high"}
    # both consoles read their node's view without an error entry
    for party in (LENDER, PLATFORM):
        view = NodeState(Sources(party, "peer", tmp_path / party / "state", boost_tables=table_root))
        listing = view.campaigns()
        assert not listing["errors"], listing["errors"]
        assert [x for x in view.campaign(c.name)["cycles"] if "error" in x] == []
        assert [x["outcome"] for x in view.campaign(c.name)["cycles"]] == [x["outcome"] for x in lender]
    comparison = source.compare(0, 7)
    assert comparison["control"]["relative"] == pytest.approx(0.0)  # control arms are identical by construction


def test_the_rollback_rule_looks_at_the_whole_interval() -> None:
    assert gates.significantly_bad({"value": 0.2, "ci_low": 0.01, "ci_high": 0.4}, "lower")
    assert not gates.significantly_bad({"value": 0.2, "ci_low": -0.01, "ci_high": 0.4}, "lower")
    assert gates.significantly_bad({"value": -0.2, "ci_low": -0.4, "ci_high": -0.01}, "higher")
    assert not gates.significantly_bad({"value": None, "ci_low": None, "ci_high": None}, "lower")
    g = gates.score_psi_gate(np.linspace(0, 1, 1000), np.linspace(0, 1, 1000) ** 3, 0.25)
    assert g["name"] == "max_score_psi" and not g["passed"] and g["value"] > 0.25
    assert "max_score_psi = " in gates.failures([g])
    assert gates.score_psi_gate(np.arange(10.0), None, 0.25)["passed"]  # nothing live yet
    assert not gates.validation_gate({"validation": {}}, "auc", 0.6)["passed"]  # not measured fails


class _Counting:
    def __init__(self) -> None:
        self.steps: list[str | None] = []

    def refresh(self, day: int, fault: str | None = None) -> None:
        raise AssertionError("a paused campaign refreshes nothing")

    def deliver(self, first_day: int, day: int, fault: str | None = None) -> None:
        raise AssertionError("a paused campaign measures nothing")

    def step(self, day: int, table_version: str | None) -> None:
        self.steps.append(table_version)

    def published(self, cycle: int, version: str) -> None:
        raise AssertionError("a paused campaign publishes nothing")


def test_a_paused_campaign_keeps_bidding_and_runs_no_cycle(tmp_path: Path, boost_service) -> None:
    table_root, client = boost_service
    c = _campaign(tmp_path, days=10)
    states = _states(tmp_path, c)
    states[LENDER].set_status("paused", by=LENDER)  # the lender's driver reads its own node's status
    run = CampaignRun(c, None, states[LENDER], served=_served(c, client))  # type: ignore[arg-type]
    source = _Counting()
    run_campaign(run, source)  # type: ignore[arg-type]
    assert source.steps == [None] * 10 and states[LENDER].cycles() == []
    assert states[LENDER].read()["status"] == "paused"
    states[LENDER].set_status("stopped", by=LENDER)
    source.steps.clear()
    run_campaign(run, source)  # type: ignore[arg-type]
    assert source.steps == []


def test_the_operators_rollback_command_acts_on_the_platforms_view(tmp_path: Path, boost_service) -> None:
    import argparse

    from fedacq.campaign import commands
    from fedacq.node.local import write_party_config

    table_root, client = boost_service
    c = _campaign(tmp_path, days=14)
    party = write_party_config(tmp_path / PLATFORM / "party.toml", PLATFORM, LENDER, 1, 2, tmp_path, ["psi"], {},
                               tmp_path / "mlruns")
    states = {p: CampaignState(tmp_path / p / "state" / "campaigns", c.name) for p in (LENDER, PLATFORM)}
    for p, state in states.items():
        state.create(party=p, digest=c.digest, description="", settings={})
    users = pd.DataFrame({"user_id": [f"u{i}" for i in range(400)]})
    tables = []
    for n in (1, 2):  # two versions the platform published (as its campaign_publish jobs do)
        scores = users.assign(score=np.linspace(0, 1, len(users))[::(1 if n == 1 else -1)])
        table = pipeline.activate(scores, layer=c.layer, tiers=pipeline.tier_config(c.cuts, c.boosts),
                                  experiment=pipeline.experiment_config(c.layer, c.salt, c.treatment_share),
                                  model_version=f"v{n}", table_root=table_root, store=None, job_id=f"v{n}",
                                  tracking="t", versioned=True).version
        client.reload(f"{c.layer}/{table}")
        tables.append(table)
        for state in states.values():
            state.write_cycle(n, outcome="published", boost_table=table, version=f"v{n}")
            state.update(live_version=f"v{n}", live_table=table,
                         published=[*state.read()["published"], {"cycle": n, "table": table, "version": f"v{n}"}])
    first = tables[0]
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(["campaign", "rollback", c.name, "--config", str(party), "--boost-service",
                              client.address, "--reason", "bids look wrong"])
    assert args.func(args) == 0
    assert _served(c, client)() == first
    cycle = states[PLATFORM].read_cycle(2)
    assert cycle["outcome"] == "rolled_back" and cycle["reason"].startswith("bids look wrong; rolled back to")
    assert states[LENDER].read_cycle(2)["outcome"] == "published"  # the lender's view is the lender's to write


def test_add_trees_continues_the_live_version_through_the_run_job(tmp_path: Path, boost_service) -> None:
    from fedacq.sim.world import World

    table_root, client = boost_service
    c = _campaign(tmp_path, days=8, **{"min_intersection = 500": "min_intersection = 200",
                                       'update = "retrain"': 'update = "add_trees"',
                                       "cycle_days = 10\nmeasure_days = 10": "cycle_days = 7\nmeasure_days = 7"})
    world = World(10_000, horizon_days=c.days, seed=5)
    source = SimulatedMarket(world, tmp_path, c, budget_per_day=200.0, seed=5, frozen=False)
    policy = pipeline.one_operator_policy(1024, True, min_intersection=100)
    with pipeline.start_parties("inproc", tmp_path, source.paths, {LENDER: policy, PLATFORM: policy}) as parties:
        states = _register(tmp_path, c, boost_service)
        drive(CampaignRun(c, parties, states[LENDER], served=_served(c, client)), source)
    first, second = (states[LENDER].read_cycle(n) for n in (1, 2))
    assert first["outcome"] == "published" and second["update"] == "add_trees"
    job = json.loads((tmp_path / LENDER / "state" / "jobs" / second["model_job"] / "job.json").read_text())

    def count(version: str) -> int:  # the platform's part of the version, from its own run job (gates aside)
        record = json.loads((tmp_path / PLATFORM / "state" / "jobs" / version / "job.json").read_text())
        model = next(f for f in record["result"]["files"] if f.endswith("prospect_xgboost.json"))
        return len(json.loads(Path(model).read_text())["learner"]["gradient_booster"]["model"]["trees"])

    trees = [count(x["version"]) for x in (first, second)]
    assert trees == [3, 6], trees  # the live version's trees, then three more
    assert job["spec"]["params"]["xgb_model"] == first["version"] and job["status"] == "succeeded"
    # the run job trained on the cycle's incremental psi job: no PSI of its own
    assert job["spec"]["params"]["psi_job"] == f"{c.name}-c0002-psi" == job["result"]["psi_job"]
    assert job["result"]["bytes"]["psi"]["messages_sent"] == 1
    # the added trees may or may not pass the gates on this small world; the lender's come first either way
    assert second["outcome"] in ("published", "refused")
    assert [g["name"] for g in second["gates"]][:2] == ["min_intersection", "min_validation_auc"]


def test_the_demos_summary_reports_each_nodes_own_status(tmp_path: Path) -> None:
    from fedacq.campaign.demo import _summary

    c = _campaign(tmp_path, days=14)
    states = _states(tmp_path, c)
    states[LENDER].set_status("finished", by=LENDER)
    summary = _summary(CampaignDemoConfig(out_dir=tmp_path), tmp_path, states, {}, 1.0)
    assert summary["status"] == {LENDER: "finished", PLATFORM: "running"}  # a platform not told stays running
