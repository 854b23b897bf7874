"""A ``run`` job that trains on a finished ``psi`` job (``psi_job``) instead of aligning again.

The psi jobs run as :class:`fedacq.pipeline.parties.InProcessParties` runs them (each
party's job record and outputs in its own ``state/jobs/<id>``, its PSI cache or set copy
in its own ``keys/``), unbalanced and incremental as a campaign cycle runs them. The run
jobs run each party's role function on its own thread as a node does, with its own
record, over memory links that end together when one side fails (so a refusal at one
side ends the other's wait at once), and each side may be handed its own parameters:
that is how a peer naming another psi job than this node is played.

Keys are 512 bits with the explicit test-only flag and test-mode policies: speed only;
what is checked is which rows each side trains on, and the key size changes none of it.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.pipeline.parties import InProcessParties
from test_secureboost_continue import joint_predict, run_sides
from test_secureboost_exact import synthetic

PARTIES = ("lender", "platform")
POLICY = {"test_mode": True, "min_key_bits": 512, "min_intersection": 50}
MODEL = {"n_estimators": 2, "max_depth": 2, "learning_rate": 0.3, "max_bin": 16}


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """The lender's customers (ids 0-399) and the platform's users (ids 100-599, shuffled), and a
    second platform table (ids 300-599) and a lender table with one more customer."""
    d = tmp_path_factory.mktemp("psi_job_tables")
    Xl, Xp, y = synthetic(n=600, seed=5)
    ids = np.array([f"u{i:04d}" for i in range(600)])
    lender = pd.DataFrame({"id": ids, "y": y, **{f"l{j}": Xl[:, j] for j in range(Xl.shape[1])}})
    platform = pd.DataFrame({"id": ids, **{f"p{j}": Xp[:, j] for j in range(Xp.shape[1])}})
    out = {name: d / f"{name}.csv" for name in ("customers", "customers-more", "users", "users-late")}
    lender.iloc[:400].to_csv(out["customers"], index=False)
    lender.iloc[:401].to_csv(out["customers-more"], index=False)
    platform.iloc[100:].sample(frac=1.0, random_state=2).to_csv(out["users"], index=False)
    platform.iloc[300:].to_csv(out["users-late"], index=False)
    return out


class Nodes:
    """Both parties' node state under ``root``: psi jobs as in-process parties, run jobs as
    role functions on threads (see the module docstring)."""

    def __init__(self, root: Path, files: dict[str, Path]) -> None:
        from fedacq.node.jobs import JobStore
        from fedacq.node.policy import load_policy

        self.root = root
        self.registry = {"lender": {n: files[n] for n in ("customers", "customers-more")},
                         "platform": {n: files[n] for n in ("users", "users-late")}}
        self.parties = InProcessParties(root, self.registry, {p: POLICY for p in PARTIES})
        self.stores = {p: JobStore(root / p / "state") for p in PARTIES}
        self.policies = {p: load_policy(POLICY, f"{p} policy", p) for p in PARTIES}

    def psi(self, job_id: str, lender: str = "customers", platform: str = "users", **params) -> dict:
        job = {"job": {"protocol": "psi", "id": job_id},
               "datasets": {"lender": {"ids": lender}, "platform": {"ids": platform}},
               "params": {"id_columns": ["id"], "min_intersection": 50, "mode": "unbalanced",
                          "incremental": True, **params}}
        return self.parties.run(job)

    def run(self, job_id: str, lender: str = "customers", platform: str = "users", *,
            own: dict[str, dict] | None = None, cut_at: int | None = None, resume: bool = False,
            **params) -> dict[str, object]:
        """Run job ``job_id`` (``own[party]``: parameters only that side is handed); each party's
        result, or the exception its side raised."""
        from fedacq.learn.run_node import PROTOCOL

        proposal = {"id_column": "id", "label_column": "y", "key_bits": 512, "insecure_test_key": True,
                    "min_intersection": 50, "validation_fraction": 0.0, "seed": 3,
                    "model_params": dict(MODEL), **params}
        names = {"lender": lender, "platform": platform}
        resolved = {p: PROTOCOL.resolve({**proposal, **(own or {}).get(p, {})}, self.policies[p]) for p in PARTIES}
        return run_sides(self.root, self.stores, self.policies, job_id, names,
                         {p: self.registry[p][names[p]] for p in PARTIES}, resolved, cut_at, resume)

    def model(self, job_id: str) -> tuple[SecureBoostLender, SecureBoostPlatform]:
        return (SecureBoostLender.load(self.stores["lender"].dir(job_id) / "work" / "lender" / "model"),
                SecureBoostPlatform.load(self.stores["platform"].dir(job_id) / "work" / "platform" / "model"))


def succeeded(results: dict[str, object]) -> None:
    assert all(isinstance(r, dict) for r in results.values()), results


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def model_files(nodes: Nodes, job_id: str) -> dict[str, bytes]:
    return {f"{p}/{f.name}": f.read_bytes() for p in PARTIES
            for f in sorted((nodes.stores[p].dir(job_id) / "work" / p / "model").glob("*"))}


@pytest.fixture(scope="module")
def nodes(files, tmp_path_factory) -> Nodes:
    """Both nodes after psi job ``psi-1`` (unbalanced, incremental: a campaign cycle's)."""
    nodes = Nodes(tmp_path_factory.mktemp("nodes"), files)
    aligned = nodes.psi("psi-1")
    assert aligned["lender"]["intersection"] == aligned["platform"]["intersection"] == 300
    assert aligned["lender"]["order_digest"] == aligned["platform"]["order_digest"]
    return nodes


@pytest.fixture(scope="module")
def on_psi(nodes) -> dict[str, object]:
    """Run job ``run-on-psi``: trained on psi-1."""
    results = nodes.run("run-on-psi", psi_job="psi-1")
    succeeded(results)
    return results


def test_a_run_job_on_a_psi_job_trains_the_model_of_a_run_job_that_aligns_itself(nodes, on_psi, files):
    inline = nodes.run("run-inline")
    succeeded(inline)
    for party in PARTIES:
        assert on_psi[party]["psi_job"] == "psi-1" and inline[party]["psi_job"] is None
        assert on_psi[party]["intersection_size"] == inline[party]["intersection_size"] == 300
        # no PSI in the job: one run.psi_job message each way instead of the whole exchange
        assert on_psi[party]["bytes"]["psi"]["messages_sent"] == 1
        assert inline[party]["bytes"]["psi"]["messages_sent"] > 2
    # each side trained on its rows of psi-1, in psi-1's shared order
    for party in PARTIES:
        rows = pd.read_parquet(nodes.stores[party].dir("psi-1") / "work" / "intersection.parquet")["row"]
        assert len(rows) == 300
    # the same model: both sets of trees score every customer the platform knows alike (the row order
    # of the two alignments differs; without a validation split or sampling the sums do not)
    lender = pd.read_csv(files["customers"])
    users = pd.read_csv(files["users"]).set_index("id")
    common = lender[lender["id"].isin(users.index)]
    Xl, Xp = common.drop(columns=["id", "y"]).to_numpy(), users.loc[common["id"]].to_numpy()
    np.testing.assert_allclose(joint_predict(*nodes.model("run-on-psi"), Xl, Xp),
                               joint_predict(*nodes.model("run-inline"), Xl, Xp), rtol=0, atol=1e-9)
    assert on_psi["lender"]["train"]["auc"] == pytest.approx(inline["lender"]["train"]["auc"], abs=1e-12)


def test_a_run_job_on_a_psi_job_cut_mid_training_resumes_to_the_same_model(nodes, on_psi):
    for at in (1, 9):  # in the psi_job exchange (nothing held in common: exchanged again), then mid-training
        job = f"resume-cut-{at}"
        cut = nodes.run(job, psi_job="psi-1", cut_at=at)
        assert all(isinstance(r, Exception) for r in cut.values()), cut
        done = nodes.run(job, psi_job="psi-1", resume=True)
        succeeded(done)
        assert model_files(nodes, job) == model_files(nodes, "run-on-psi")
        assert done["lender"]["validation_rows"] == 0 and done["lender"]["intersection_size"] == 300


def _refused(nodes: Nodes, results: dict[str, object], job_id: str, refusing: tuple[str, ...], error: str,
             before: dict[str, dict[str, str]]) -> None:
    """Both sides failed, each refusing side with ``error`` in its job record, nothing written."""
    assert all(isinstance(r, Exception) for r in results.values()), results
    for party in refusing:
        assert error in str(results[party]) and "psi_job" in str(results[party])
        record = nodes.stores[party].get(job_id)
        assert record["status"] == "failed" and error in record["error"]
    for party in PARTIES:
        work = nodes.stores[party].dir(job_id) / "work"
        assert not [f for f in work.rglob("*") if f.is_file()], f"{party} wrote {list(work.rglob('*'))}"
        assert digest(nodes.root / party / "keys") == before[party]["keys"]
        assert digest(nodes.stores[party].dir("psi-1")) == before[party]["psi-1"]


def _state(nodes: Nodes) -> dict[str, dict[str, dict[str, str]]]:
    return {p: {"keys": digest(nodes.root / p / "keys"), "psi-1": digest(nodes.stores[p].dir("psi-1"))}
            for p in PARTIES}


@pytest.mark.parametrize("case, refusing, error", [
    ("no such job", ("lender", "platform"), "has no such job"),
    ("only the peer's", ("platform",), "platform has no such job"),
    ("a run job", ("lender", "platform"), "it is a 'run' job that succeeded, not a psi job"),
    ("another data set", ("platform",), "it aligned data set 'users-late', this job trains on 'users'"),
    ("revealed to the lender only", ("lender", "platform"), "revealed the intersection to 'lender'"),
])
def test_a_psi_job_this_node_cannot_train_on_is_refused_and_changes_nothing(nodes, on_psi, case, refusing, error):
    job_id = "refused-" + case.replace(" ", "-").replace("'", "")
    psi_job = {"no such job": "psi-none", "a run job": "run-on-psi", "only the peer's": "psi-elsewhere",
               "another data set": "psi-late", "revealed to the lender only": "psi-lender-only"}[case]
    if case == "only the peer's":  # a psi job the lender holds (with another platform, say); the platform none
        shutil.copytree(nodes.stores["lender"].dir("psi-1"), nodes.stores["lender"].dir(psi_job))
    if case == "another data set":  # both aligned on other tables than this run job names
        nodes.psi(psi_job, platform="users-late")
    if case == "revealed to the lender only":
        nodes.psi(psi_job, reveal_to="lender")
    before = _state(nodes)
    results = nodes.run(job_id, psi_job=psi_job)
    _refused(nodes, results, job_id, refusing, error, before)


def test_a_psi_job_older_than_the_nodes_policy_is_refused(nodes):
    nodes.psi("psi-old")
    finished = nodes.stores["lender"].get("psi-old")["finished"]
    nodes.stores["lender"].update("psi-old", finished=finished - 2 * 86400)  # as if it ran two days ago
    before = _state(nodes)
    results = nodes.run("refused-old", psi_job="psi-old")
    _refused(nodes, results, "refused-old", ("lender",), "policy psi_job_max_age_days: proposed "
             "psi_job='psi-old', finished 2.00 days before this run job, lender allows <= 1.0 days", before)


def test_a_psi_job_on_a_table_that_changed_since_is_refused(files, tmp_path):
    """Same registered name, but a customer came since the psi job: its intersection is stale."""
    nodes = Nodes(tmp_path, files)
    nodes.registry["lender"]["customers"] = tmp_path / "customers.csv"
    shutil.copyfile(files["customers"], tmp_path / "customers.csv")
    nodes.parties.datasets["lender"]["customers"] = tmp_path / "customers.csv"
    nodes.psi("psi-1")
    shutil.copyfile(files["customers-more"], tmp_path / "customers.csv")
    before = _state(nodes)
    results = nodes.run("refused-changed", psi_job="psi-1")
    _refused(nodes, results, "refused-changed", ("lender",),
             "lender's data set 'customers' changed since that psi job", before)


def test_two_sides_naming_different_psi_jobs_are_refused_at_both(nodes):
    """The peer names another psi job than this node (another id, or another PSI run kept under the
    same id): both sides' own checks pass, and the exchange of what each holds stops both."""
    nodes.psi("psi-2", mode="balanced", incremental=False)  # the same tables, aligned again: another order
    before = _state(nodes)
    results = nodes.run("refused-other-id", own={"platform": {"psi_job": "psi-2"}}, psi_job="psi-1")
    _refused(nodes, results, "refused-other-id", ("lender", "platform"), "holds another alignment", before)

    shutil.copytree(nodes.stores["lender"].dir("psi-1"), nodes.stores["lender"].dir("psi-3"))
    shutil.copytree(nodes.stores["platform"].dir("psi-2"), nodes.stores["platform"].dir("psi-3"))
    before = _state(nodes)
    results = nodes.run("refused-other-run", psi_job="psi-3")
    _refused(nodes, results, "refused-other-run", ("lender", "platform"), "holds another alignment", before)
    assert "order digest" in str(results["lender"])


@pytest.mark.parametrize("psi_job", ["../psi-1", "psi 1", 7])
def test_the_parameter_is_a_job_id(psi_job):
    from fedacq.learn.run_node import PARAMS, PROTOCOL
    from fedacq.node.policy import Policy, PolicyError

    assert "psi_job" in PARAMS
    with pytest.raises(PolicyError, match="psi_job"):
        PROTOCOL.resolve({"id_column": "id", "label_column": "y", "psi_job": psi_job}, Policy())


def test_two_node_processes_train_on_their_psi_job(files, tmp_path):
    """gRPC between two real nodes (mutual TLS): a psi job, then a run job naming it; each node
    reads its own result, and the run.psi_job schema is known to both before any traffic."""
    from fedacq.node.local import start_local_pair

    datasets = {"lender": {"customers": files["customers"]}, "platform": {"users": files["users"]}}
    with start_local_pair(tmp_path, datasets=datasets, allow=["psi", "run"],
                          policy={party: POLICY for party in PARTIES}) as pair:
        psi = pair.submit({"job": {"protocol": "psi", "id": "grpc-psi"},
                           "datasets": {"lender": {"ids": "customers"}, "platform": {"ids": "users"}},
                           "params": {"id_columns": ["id"], "min_intersection": 50, "mode": "unbalanced",
                                      "incremental": True}}, party="lender")
        assert psi["status"] == "succeeded", psi.get("error")
        run = pair.submit({"job": {"protocol": "run", "id": "grpc-run"},
                           "datasets": {"lender": {"table": "customers"}, "platform": {"table": "users"}},
                           "params": {"id_column": "id", "label_column": "y", "key_bits": 512,
                                      "insecure_test_key": True, "min_intersection": 50, "psi_job": "grpc-psi",
                                      "model_params": {**MODEL, "n_estimators": 1}}}, party="lender")
        assert run["status"] == "succeeded", run.get("error")
        platform = pair.status("platform", "grpc-run")
    for result in (run["result"], platform["result"]):
        assert result["psi_job"] == "grpc-psi" and result["intersection_size"] == 300
        assert result["bytes"]["psi"]["messages_sent"] == 1
