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

#: each new in-process MLflow store starts as a copy of a migrated empty one (tests/conftest.py says why)
pytestmark = pytest.mark.usefixtures("mlflow_stores_from_template")

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


@pytest.fixture(scope="module")
def mlruns(tmp_path_factory) -> Path:
    """The folder of each party's MLflow store for the checkpoint tests' attempts."""
    return tmp_path_factory.mktemp("measure_mlruns")


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


def test_the_proposer_fills_the_scheme_from_its_policy_and_the_peer_checks_its_own():
    ou_first = Policy(party="lender", schemes=("ou", "paillier"))
    params = resolve({"layer": "boost"}, ou_first)
    assert params["scheme"] == "ou" and resolve({"layer": "boost"}, Policy(party="lender"))["scheme"] == "paillier"
    with pytest.raises(PolicyError, match=r"policy schemes: proposed scheme='ou', platform allows one of \['paillier'\]"):
        resolve(dict(params), Policy(party="platform"))


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
    """A lender that plans another layer than the job's is refused before the platform touches its events."""
    from fedacq.link.memory import memory_pair
    from fedacq.link.message import Message
    from fedacq.measure.private import recv_spend
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
    lender_link.send(Message("measure.plan", {"layer": "other", "outcomes": params["outcomes"],
                                              "epsilon": [0.0] * len(params["outcomes"])}))
    thread.join(timeout=120)
    assert not thread.is_alive() and "asks for layer='other', the job agreed 'boost'" in str(outcome.get("error"))
    assert not (work / "platform_view.parquet").exists()


# -- checkpoints and resumption, in one process -------------------------------------------
# Both roles run in threads over memory links with a checkpoint folder each (as a node gives them); a
# cut ends both links at the N-th message of the pair, as a killed node ends its peer's
# (test_checkpoint_run.py's cut links). Real nodes and SIGKILL: test_kill_resume_measure.py.

class RecordedLink:
    """Factory of cut links that also record every message delivered to the peer (what crossed)."""

    def __init__(self, crossed: list) -> None:
        self.crossed = crossed

    def __call__(self, link, cut):
        from test_checkpoint_run import CutLink

        crossed = self.crossed

        class Recording(CutLink):
            def _transmit(self, seq, msg):
                super()._transmit(seq, msg)
                crossed.append(msg)

        return Recording(link, cut)


def attempt(files, mlruns: Path, root: Path, job_id: str, number: int, crossed: list, cut_at: int | None = None,
            **params) -> tuple[dict, dict]:
    """Attempt ``number`` of the job at both parties: (results, errors) by party.

    Each party logs to its store under ``mlruns``, shared by every attempt in this file as a node's one
    store is by all its jobs (a new SQLite store costs MLflow's schema migrations, seconds each)."""
    from fedacq.link.memory import memory_pair
    from fedacq.node.checkpoint import Checkpoints
    from fedacq.node.policy import load_policy
    from fedacq.node.protocols import JobContext
    from test_checkpoint_run import Cut

    job = _job(job_id, **params)
    cut = Cut(cut_at)
    links = dict(zip(("lender", "platform"),
                     (RecordedLink(crossed)(link, cut) for link in memory_pair("lender", "platform", job=job_id))))
    results: dict = {}
    errors: dict = {}
    steps: dict = {"lender": [], "platform": []}

    def side(party: str) -> None:
        policy = load_policy(TEST_POLICY, "test", party)
        work = root / party / "work" / str(number)
        work.mkdir(parents=True)
        names = job["datasets"][party]
        ctx = JobContext(party=party, role=party, peer="platform" if party == "lender" else "lender", job_id=job_id,
                         link=links[party], datasets={k: files[party][v] for k, v in names.items()},
                         params=resolve(dict(job["params"]), policy), work_dir=work, keys_dir=root / party / "keys",
                         mlflow_store=str(mlruns / party), policy=policy, registered=dict(names),
                         checkpoints=Checkpoints(root / party / "checkpoints"), resume=number > 0,
                         progress=lambda step, done, total=None: steps[party].append((step, done, total)))
        try:
            results[party] = PROTOCOL.roles[party](ctx)
        except Exception as exc:  # noqa: BLE001 - a cut ends both sides with whatever their step raises
            errors[party] = exc
            cut.event.set()

    threads = [threading.Thread(target=side, args=(p,), daemon=True) for p in ("lender", "platform")]
    for t in threads:
        t.start()
    for t in threads:  # both sides end before the next attempt touches their checkpoints
        t.join(timeout=120)
        assert not t.is_alive(), "a party never ended"
    if cut_at is not None:
        assert errors and cut.sent >= cut_at, "the cut did not end the attempt"
    results["steps"] = steps
    return results, errors


def outputs(results: dict) -> tuple[dict, pd.DataFrame]:
    return (json.loads(Path(results["lender"]["report"]).read_text()),
            pd.read_parquet(results["platform"]["view"]))


def held(root: Path) -> dict[str, list[str]]:
    from fedacq.node.checkpoint import Checkpoints

    return {p: Checkpoints(root / p / "checkpoints").names() for p in ("lender", "platform")}


def releases(crossed: list) -> list[dict[str, np.ndarray]]:
    return [m.parts for m in crossed if m.type == "isum.release"]


def test_measurement_cut_at_any_step_resumes_to_the_uninterrupted_outputs(files, mlruns, tmp_path):
    """Noise off: the lender's report and the platform's view equal an uninterrupted run's exactly."""
    crossed: list = []
    full, errors = attempt(files, mlruns, tmp_path / "full", "m-full", 0, crossed, epsilon=0, min_cohort=10)
    assert not errors and full["steps"]["lender"][-1] == full["steps"]["platform"][-1] == ("measure", 3, 3)
    assert held(tmp_path / "full") == {"lender": ["release", "spend"], "platform": ["release", "spend"]}
    expected = outputs(full)
    types = [m.type for m in crossed]
    release_at = types.index("isum.release") + 1
    assert types[0] == "measure.spend" and release_at == len(types)

    # (cuts, what each party holds after them, messages of the attempt that completes)
    cases = [([1], {"lender": [], "platform": []}, len(types) + 2),
             ([4], {"lender": ["spend"], "platform": ["spend"]}, len(types) + 1),
             ([release_at], {"lender": ["release", "spend"], "platform": ["spend"]}, 3),
             ([5, 1, 2 + release_at - 1], {"lender": ["release", "spend"], "platform": ["spend"]}, 3)]
    for i, (cuts, after, last) in enumerate(cases):
        root = tmp_path / f"case{i}"
        for number, at in enumerate(cuts):
            attempt(files, mlruns, root, f"m-{i}", number, [], cut_at=at, epsilon=0, min_cohort=10)
        assert held(root) == after, cuts
        seen: list = []
        done, errors = attempt(files, mlruns, root, f"m-{i}", len(cuts), seen, epsilon=0, min_cohort=10)
        assert not errors, (cuts, errors)
        assert len(seen) == last, (cuts, [m.type for m in seen])
        report, view = outputs(done)
        assert report == expected[0], cuts
        pd.testing.assert_frame_equal(view, expected[1])
        assert done["steps"]["lender"][-1] == ("measure", 3, 3)


def test_a_noisy_release_crosses_once_whatever_the_platform_lost(files, mlruns, tmp_path):
    """Noise on: the lender saves its release before sending it and never draws noise again, so every
    ``isum.release`` the platform ever received holds the same values, and its view is the same."""
    from fedacq.node.checkpoint import Checkpoints

    # the platform received the release, then lost its view (killed before its checkpoint)
    crossed: list = []
    root = tmp_path / "received"
    first, errors = attempt(files, mlruns, root, "m-received", 0, crossed, epsilon=1.0, min_cohort=10)
    assert not errors
    n = len(crossed)
    Checkpoints(root / "platform" / "checkpoints").drop("release")
    again, errors = attempt(files, mlruns, root, "m-received", 1, crossed, epsilon=1.0, min_cohort=10)
    assert not errors and len(crossed) == n + 3  # the handshake and the release, nothing else
    assert outputs(again)[0] == outputs(first)[0]
    pd.testing.assert_frame_equal(outputs(again)[1], outputs(first)[1])
    sent = releases(crossed)
    assert len(sent) == 2
    for part in ("count", "sum", "suppressed"):
        np.testing.assert_array_equal(sent[0][part], sent[1][part])

    # the lender saved its release and the cut took it before the platform had it
    cut_root = tmp_path / "cut"
    cut_crossed: list = []
    attempt(files, mlruns, cut_root, "m-cut", 0, cut_crossed, cut_at=n, epsilon=1.0, min_cohort=10)
    assert held(cut_root) == {"lender": ["release", "spend"], "platform": ["spend"]}
    assert not releases(cut_crossed)
    done, errors = attempt(files, mlruns, cut_root, "m-cut", 1, cut_crossed, epsilon=1.0, min_cohort=10)
    assert not errors and len(releases(cut_crossed)) == 1
    view = outputs(done)[1].set_index("bucket")
    saved = Checkpoints(cut_root / "lender" / "checkpoints").load("release")[1]
    assert "exact_count" not in saved  # cut at the send: the exact sums come once the run returns
    exact = Checkpoints(root / "lender" / "checkpoints").load("release")[1]
    assert exact["exact_count"].shape == exact["count"].shape and exact["exact_sum"].shape == exact["sum"].shape
    released = ~saved["suppressed"]
    assert released.any()
    labels = sorted(view.index.tolist(), key=str)  # the intersection-sum's group order
    np.testing.assert_array_equal(view.loc[labels, "applicants"].to_numpy()[released], saved["count"][released])
    np.testing.assert_array_equal(releases(cut_crossed)[0]["count"], saved["count"])


def test_a_platform_holding_a_release_the_lender_never_saved_is_refused(files, mlruns, tmp_path):
    """The lender would have to draw new noise: it refuses, and nothing is released again."""
    from fedacq.node.checkpoint import Checkpoints

    root = tmp_path / "lost"
    _, errors = attempt(files, mlruns, root, "m-lost", 0, [], epsilon=1.0, min_cohort=10)
    assert not errors
    Checkpoints(root / "lender" / "checkpoints").drop("release")
    crossed: list = []
    _, errors = attempt(files, mlruns, root, "m-lost", 1, crossed, epsilon=1.0, min_cohort=10)
    assert "refusing to release" in str(errors["lender"]) and "would not release again" in str(errors["platform"])
    assert [m.type for m in crossed] == ["measure.checkpoints"] * 2


def test_an_ou_measurement_releases_the_exact_aggregates(files, tmp_path):
    """Both nodes list OU: the job runs under it and the platform's view holds the true per-bucket sums
    (equality with Paillier's release: tests/test_psi_intersection_sum.py)."""
    ou_policy = {**TEST_POLICY, "schemes": ["paillier", "ou"]}
    parties = InProcessParties(tmp_path, files, {"lender": ou_policy, "platform": ou_policy})
    try:
        results = parties.run(_job("m-ou", epsilon=0, min_cohort=10, scheme="ou"))
    finally:
        parties.close()
    view = pd.read_parquet(results["platform"]["view"]).set_index("bucket")
    funnel, events = (pd.read_parquet(files["lender"][n]) for n in ("funnel-boost", "events-boost"))
    clicks = events[events["event_type"] == "click"].drop_duplicates("user_id").merge(funnel, on="user_id")
    truth = clicks.groupby("bucket").agg(applicants=("user_id", "size"), credit=("credit_granted", "sum"),
                                         drawdown=("drawdown_amount", "sum"))
    assert not view["suppressed"].any()
    np.testing.assert_array_equal(view.loc[truth.index, "applicants"], truth["applicants"])
    np.testing.assert_array_equal(view.loc[truth.index, "credit_granted_sum"], truth["credit"])
    np.testing.assert_allclose(view.loc[truth.index, "drawdown_amount_sum"], truth["drawdown"], atol=1e-3)
