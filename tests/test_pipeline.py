"""The pipeline's steps between two node processes: every crossing step is a job both nodes ran.

A small market and a 1024-bit test key on nodes in test mode keep it quick (the protocols do
not depend on the key size; the demo's default is 2048 bits). The in-process transport runs the
same measure job on the same files and must give the same report and the same release.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fedacq import pipeline
from fedacq.pipeline import LENDER, PLATFORM
from fedacq.sim import generate_market

#: each new in-process MLflow store starts as a copy of a migrated empty one (tests/conftest.py says why)
pytestmark = pytest.mark.usefixtures("mlflow_stores_from_template")

#: the lender has 424 customers among them, 360 in the intersection: above the policy's minimum of 100.
N_USERS = 12_000
KEY = {"key_bits": 1024, "insecure_test_key": True}
POLICY = pipeline.one_operator_policy(1024, True, min_intersection=100)
MEASURE = {"min_cohort": 10, "epsilon": 0.0, "value_bounds": {"drawdown_amount": 20_000.0}, "min_bucket_size": 20}


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    """align, train, score, activate, campaign and measure with two ``fedacq node`` processes."""
    root = tmp_path_factory.mktemp("pipeline")
    market = generate_market(N_USERS, seed=3)
    paths = pipeline.write_party_files(market, root)
    datasets = pipeline.registry(paths, root, ("prospect",))
    out: dict = {"root": root, "datasets": datasets}
    with pipeline.start_parties("grpc", root, datasets, {LENDER: POLICY, PLATFORM: POLICY}) as parties:
        assert isinstance(parties, pipeline.NodeParties)
        out["align"] = pipeline.align(parties, job_id="p-align")
        out["train"] = pipeline.train(parties, job_id="p-run", label_column=market.label_column,
                                      model_params={"n_estimators": 2, "max_depth": 2}, **KEY)
        scores = pipeline.score(pipeline.prospect_model_path(out["train"]), paths["platform_parquet"],
                                root / PLATFORM / "scores.parquet")
        table = pipeline.activate(scores, layer="prospect", tiers=pipeline.tier_config((0.5,), (1.0, 2.0)),
                                  experiment=pipeline.experiment_config("prospect", "salt", 0.5),
                                  model_version="p-run", table_root=root / PLATFORM / "boost_tables",
                                  store=parties.store(PLATFORM), job_id="p-activate")
        out["campaign"] = pipeline.campaign(market, table, layer="prospect", days=5, budget_per_day=600.0,
                                            seed=3, deliver_to=root)
        out["measure"] = pipeline.measure(parties, job_id="p-measure", layer="prospect", **MEASURE, **KEY)
        # a data set neither node registered: refused before any job exists
        with pytest.raises(ValueError, match="lender has no registered data set 'events-baseline'"):
            pipeline.measure(parties, job_id="p-refused", layer="baseline", **MEASURE, **KEY)
        # a job that fails while running: the error names the side and the cause
        bad = {"job": {"protocol": "measure", "id": "p-bad"}, "datasets": pipeline.campaign_datasets("prospect"),
               "params": {"layer": "baseline", **MEASURE, **KEY}}
        with pytest.raises(RuntimeError, match="the lender's side failed.*no rows of layer 'baseline'"):
            parties.run(bad)
        out["scores"] = scores
    return out


def _record(root: Path, party: str, job_id: str) -> dict:
    return json.loads((root / party / "state" / "jobs" / job_id / "job.json").read_text())


def test_every_crossing_step_is_a_job_both_nodes_ran(loop):
    root = loop["root"]
    for job_id, protocol in (("p-align", "psi"), ("p-run", "run"), ("p-measure", "measure")):
        for party in (LENDER, PLATFORM):
            record = _record(root, party, job_id)
            assert record["status"] == "succeeded" and record["spec"]["protocol"] == protocol
            assert record["spec"]["initiator"] == LENDER
    # the message types each job sent, from each node's own egress ledger
    sent = {p: {json.loads(line)["job"] + ":" + json.loads(line)["type"]
                for line in (root / p / "state" / "egress.jsonl").read_text().splitlines()} for p in (LENDER, PLATFORM)}
    assert {"p-align:psi.hello", "p-run:psi.hello", "p-measure:measure.plan"} <= sent[LENDER]
    assert {"p-measure:measure.spend"} <= sent[PLATFORM]
    for party in (LENDER, PLATFORM):
        assert _record(root, party, "p-bad")["status"] == "failed"
        assert not (root / party / "state" / "jobs" / "p-refused").exists()


def test_steps_hand_on_what_the_next_step_needs(loop):
    align, metrics = loop["align"], loop["train"]
    assert align[LENDER]["intersection"] == align[PLATFORM]["intersection"] == metrics["intersection_size"] > 100
    assert metrics["transport"] == "grpc" and 0.5 < metrics["validation"]["auc"] <= 1
    assert len(loop["scores"]) == N_USERS
    report = loop["measure"].report
    assert set(report["layers"]) == {"prospect"}
    view = loop["measure"].platform_view
    assert view.layer == "prospect" and len(view.buckets) > 0


def test_in_process_measure_gives_the_same_report_and_release(loop, tmp_path):
    """The inproc transport runs the same job on the same files (exact release: no noise)."""
    with pipeline.start_parties("inproc", tmp_path, loop["datasets"], {LENDER: POLICY, PLATFORM: POLICY}) as parties:
        again = pipeline.measure(parties, job_id="p-measure", layer="prospect", **MEASURE, **KEY)
    assert again.report == loop["measure"].report
    pd.testing.assert_frame_equal(again.platform_view.buckets, loop["measure"].platform_view.buckets)
