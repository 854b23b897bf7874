"""The ``measure`` node protocol: parameters against each node's policy, both sides' outputs, refusals.

Keys are 1024-bit test keys on nodes in test mode (the protocol does not depend on the key
size, and a 2048-bit key would dominate the run time); the policy tests check that only a
test node takes them.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedacq.measure.node_protocol import PROTOCOL, resolve
from fedacq.measure.report import measure
from fedacq.measure.synthetic import constructed_experiment
from fedacq.node.policy import Policy, PolicyError
from fedacq.pipeline import InProcessParties, one_operator_policy

TEST_POLICY = one_operator_policy(1024, True, min_intersection=100)
KEY = {"key_bits": 1024, "insecure_test_key": True}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, dict[str, Path]]:
    """A constructed experiment (layer ``boost``, 3 buckets per arm), each party's share as files."""
    funnel, events, spend = constructed_experiment(200, seed=5, n_buckets=3)
    root = tmp_path_factory.mktemp("measure")
    shares = {"lender": {"funnel": funnel, "events": events}, "platform": {"events": events, "spend": spend}}
    out: dict[str, dict[str, Path]] = {}
    for party, tables in shares.items():
        for name, frame in tables.items():
            path = root / party / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
            out.setdefault(party, {})[f"{name}-boost"] = path
    return out


def _job(job_id: str, **params) -> dict:
    return {"job": {"protocol": "measure", "id": job_id},
            "datasets": {"lender": {"funnel": "funnel-boost", "events": "events-boost"},
                         "platform": {"events": "events-boost", "spend": "spend-boost"}},
            "params": {"layer": "boost", "min_bucket_size": 20, **KEY, **params}}


# -- parameters against the policy --------------------------------------------------------

def test_resolve_fills_safe_defaults():
    params = resolve({"layer": "boost"}, Policy(party="lender"))
    assert params["min_cohort"] == Policy().measure_min_cohort and params["epsilon"] == 1.0
    assert params["key_bits"] == 2048 and params["insecure_test_key"] is False
    assert params["value_bounds"] == {"drawdown_amount": 20000.0}
    assert resolve(dict(params), Policy(party="platform")) == params  # complete: the peer changes nothing


@pytest.mark.parametrize("params, message", [
    ({"layer": "boost", "rounds": 3}, "unknown parameter"),
    ({"layer": "../boost"}, "not a valid name"),
    ({"layer": "boost", "min_cohort": Policy().measure_min_cohort - 1}, "policy measure_min_cohort"),
    ({"layer": "boost", "key_bits": 1024}, "policy min_key_bits"),
    ({"layer": "boost", "key_bits": 1024, "insecure_test_key": True}, "policy test_mode"),
    ({"layer": "boost", "scheme": "ou"}, "policy schemes"),
    ({"layer": "boost", "outcomes": ["credit_granted", "phone"]}, "outcomes must be"),
    ({"layer": "boost", "epsilon": -1}, "epsilon must be"),
    ({"layer": "boost", "outcomes": ["fees"], "epsilon": 0.5}, "needs its clipping bound"),
    ({"layer": "boost", "value_bounds": {"drawdown_amount": 0}}, "value_bounds"),
    ({"layer": "boost", "min_bucket_size": 1}, "min_bucket_size"),
])
def test_resolve_refuses_what_the_policy_does_not_allow(params, message):
    with pytest.raises(PolicyError, match=message):
        resolve(params, Policy(party="lender"))


def test_an_epsilon_cap_in_the_policy_requires_noise_within_it():
    """``measure_max_epsilon``: no noise, or weaker noise, is refused."""
    policy = Policy(party="lender", measure_max_epsilon=0.5)
    assert resolve({"layer": "boost"}, policy)["epsilon"] == 0.5
    for epsilon in (0, 2.0):
        with pytest.raises(PolicyError, match="policy measure_max_epsilon"):
            resolve({"layer": "boost", "epsilon": epsilon}, policy)


# -- both sides' outputs ------------------------------------------------------------------

def test_exact_release_matches_the_truth_and_the_lenders_own_report(files, tmp_path):
    parties = InProcessParties(tmp_path, files, {"lender": TEST_POLICY, "platform": TEST_POLICY})
    try:
        results = parties.run(_job("m-exact", epsilon=0, min_cohort=10))
    finally:
        parties.close()
    lender, platform = results["lender"], results["platform"]

    funnel, events, spend = (pd.read_parquet(files[p][n]) for p, n in
                             (("lender", "funnel-boost"), ("lender", "events-boost"), ("platform", "spend-boost")))
    report = json.loads(Path(lender["report"]).read_text())
    assert report == json.loads(json.dumps(measure(funnel, events, spend, min_bucket_size=20)))
    assert Path(lender["html"]).exists() and all(Path(f).exists() for f in lender["figures"])

    view = pd.read_parquet(platform["view"]).set_index("bucket")
    clicks = events[events["event_type"] == "click"].drop_duplicates("user_id").merge(funnel, on="user_id")
    truth = clicks.groupby("bucket").agg(applicants=("user_id", "size"), credit=("credit_granted", "sum"))
    assert not view["suppressed"].any() and platform["buckets_released"] == lender["buckets_released"] == 6
    np.testing.assert_array_equal(view.loc[truth.index, "applicants"], truth["applicants"])
    np.testing.assert_array_equal(view.loc[truth.index, "credit_granted_sum"], truth["credit"])
    assert platform["epsilon"] == [0.0, 0.0, 0.0]

    # each party logged its own run of the job, and each ledger holds what that party sent
    egress = {p: (tmp_path / p / "state" / "egress.jsonl").read_text() for p in ("lender", "platform")}
    assert '"measure.plan"' in egress["lender"] and '"isum.hello"' in egress["lender"]
    assert '"measure.spend"' in egress["platform"] and '"measure.plan"' not in egress["platform"]
    assert list((tmp_path / "lender" / "mlruns").iterdir()) and list((tmp_path / "platform" / "mlruns").iterdir())


def test_noise_and_the_minimum_cohort_reach_the_platforms_view(files, tmp_path):
    parties = InProcessParties(tmp_path, files, {"lender": TEST_POLICY, "platform": TEST_POLICY})
    try:
        results = parties.run(_job("m-noisy", epsilon=1.0, min_cohort=10_000))
    finally:
        parties.close()
    view = pd.read_parquet(results["platform"]["view"])
    assert view["suppressed"].all() and view["applicants"].isna().all()   # nothing under the cohort is released
    assert results["platform"]["epsilon"] == [1.0, 1.0, 1.0]


def test_a_missing_layer_fails_naming_the_data_set(files, tmp_path):
    parties = InProcessParties(tmp_path, files, {"lender": TEST_POLICY, "platform": TEST_POLICY})
    try:
        job = _job("m-layer")
        job["params"]["layer"] = "other"
        with pytest.raises(RuntimeError, match="events.*no rows of layer 'other'"):
            parties.run(job)
    finally:
        parties.close()


def test_the_platform_refuses_a_plan_for_another_layer(files, tmp_path):
    """A lender that plans another layer than the job's finds none of the platform's users, and is refused."""
    from fedacq.crypto.paillier import generate_keypair
    from fedacq.link.memory import memory_pair
    from fedacq.measure.private import recv_spend, share_outcomes_lender
    from fedacq.node.policy import load_policy
    from fedacq.node.protocols import JobContext

    params = resolve(_job("x", epsilon=0, min_cohort=10)["params"], load_policy(TEST_POLICY, "test", "platform"))
    lender_link, platform_link = memory_pair("lender", "platform", job="m-deviant")
    work = tmp_path / "platform"
    work.mkdir()
    ctx = JobContext(party="platform", role="platform", peer="lender", job_id="m-deviant", link=platform_link,
                     datasets={"events": files["platform"]["events-boost"], "spend": files["platform"]["spend-boost"]},
                     params=params, work_dir=work, keys_dir=tmp_path / "keys", mlflow_store=str(tmp_path / "mlruns"),
                     policy=load_policy(TEST_POLICY, "test", "platform"))
    outcome: dict[str, BaseException] = {}

    def platform() -> None:
        try:
            PROTOCOL.roles["platform"](ctx)
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcome["error"] = exc

    thread = threading.Thread(target=platform, daemon=True)
    thread.start()
    recv_spend(lender_link)
    funnel = pd.read_parquet(files["lender"]["funnel-boost"])
    _, key = generate_keypair(1024, insecure_test_key=True)
    deviant = share_outcomes_lender(lender_link, funnel, private_key=key, layer="other", min_group_size=10)
    thread.join(timeout=120)
    assert not deviant.groups  # the platform's users of the job's layer never entered the run
    assert not thread.is_alive() and "plan (layer 'other'" in str(outcome.get("error"))
    assert not (work / "platform_view.parquet").exists()
