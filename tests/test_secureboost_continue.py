"""Adding trees to a live model (XGBoost's ``xgb_model``), in the protocol and through the ``run`` job.

The standard is tests/test_secureboost_exact.py's: the continued model's trees
(split features and cut points) and predictions equal XGBoost's
``xgb.train(params, xgboost.DMatrix(X, label=y), k, xgb_model=booster)`` on the
joined data. (With a ``QuantileDMatrix`` XGBoost evaluates the live trees on the
new matrix's bin cuts, not on the raw values, so its starting margins differ
slightly; a ``DMatrix`` starts from the live model's exact margins, as fedacq does.)

The run jobs run as a node runs them (each party's role function on its own
thread, its outputs in ``<state>/jobs/<id>/work``, a job record in its own
:class:`~fedacq.node.jobs.JobStore`), over memory links that end together when
one side fails, as a node's do. Keys are 512 bits with the explicit test-only
flag and test-mode policies: speed only, the arithmetic is that of 2048-bit keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xgboost

from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.link.memory import memory_pair, run_parties
from test_checkpoint_run import Cut, CutLink
from test_secureboost_exact import splits_of_dump, splits_of_fedacq, synthetic

PARTIES = ("lender", "platform")
POLICY = {"test_mode": True, "min_key_bits": 512, "min_intersection": 50}
XGB = {"tree_method": "hist", "max_bin": 32, "max_depth": 3, "eta": 0.3}


# -- in the protocol ---------------------------------------------------------------------

def fit(n_estimators, Xl, Xp, y, live=None, eval_set=None, **params):
    """Both parties' models after one fit (``live``: the (lender, platform) parts to continue;
    ``eval_set``: (lender features, platform features, labels) of the validation rows)."""
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(n_estimators=n_estimators, max_depth=3, learning_rate=0.3, max_bin=32,
                               key_bits=512, insecure_test_key=True, n_jobs=1, **params)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=512)
    lkw = {} if live is None else {"xgb_model": live[0]}
    pkw = {} if live is None else {"xgb_model": live[1]}
    lender_eval = None if eval_set is None else (eval_set[0], eval_set[2])
    platform_eval = None if eval_set is None else eval_set[1]
    run_parties((lambda *a: lender.fit(*a, eval_set=lender_eval, **lkw), la, Xl, y),
                (lambda *a: platform.fit(*a, eval_X=platform_eval, **pkw), pa, Xp), timeout=600)
    return lender, platform


def joint_predict(lender, platform, Xl, Xp):
    la, pa = memory_pair("lender", "platform")
    proba, _ = run_parties((lender.predict, la, Xl), (platform.serve_predict, pa, Xp), timeout=600)
    return proba


def assert_trees_equal(booster, lender, platform, d_l):
    dumps = booster.get_dump()
    assert len(dumps) == len(lender.trees_) == len(platform.trees_)
    for t, dump in enumerate(dumps):
        got = splits_of_fedacq(lender.trees_[t], lender, platform.trees_[t], d_l)
        want = splits_of_dump(dump)
        assert [(i, f) for i, f, _ in got] == [(i, f) for i, f, _ in want], f"tree {t}"
        np.testing.assert_allclose([c for *_, c in got], [c for *_, c in want], rtol=1e-6)


def test_added_trees_equal_xgboosts_continuation_on_new_rows():
    """Live model on one sample, two rounds added on another: XGBoost's xgb_model, tree for tree."""
    Xl, Xp, y = synthetic(n=500, seed=1)
    Xl2, Xp2, y2 = synthetic(n=400, seed=2)
    live = fit(3, Xl, Xp, y)
    lender, platform = fit(2, Xl2, Xp2, y2, live=live)
    first = xgboost.train({**XGB, "objective": "binary:logistic"}, xgboost.DMatrix(np.hstack([Xl, Xp]), label=y), 3)
    joined2 = np.hstack([Xl2, Xp2])
    booster = xgboost.train({**XGB, "objective": "binary:logistic"}, xgboost.DMatrix(joined2, label=y2), 2,
                            xgb_model=first)
    np.testing.assert_allclose(joint_predict(lender, platform, Xl2, Xp2),
                               booster.predict(xgboost.DMatrix(joined2)), rtol=0, atol=2e-6)
    assert_trees_equal(booster, lender, platform, Xl.shape[1])
    assert lender.trees_[:3] == live[0].trees_ and len(lender.history_) == 2


def test_continuation_keeps_the_live_intercept_and_evaluates_from_the_live_margins():
    """A regression continued with a validation set: the validation metric per added round is XGBoost's."""
    Xl, Xp, y = synthetic(n=400, seed=5)
    Xl2, Xp2, y2 = synthetic(n=300, seed=6)
    Xl_v, Xp_v, y_v = synthetic(n=150, seed=7)
    y, y2, y_v = (v * 3 + np.nan_to_num(p[:, 0]) for v, p in ((y, Xp), (y2, Xp2), (y_v, Xp_v)))
    params = {**XGB, "objective": "reg:squarederror"}
    live = fit(2, Xl, Xp, y, objective="reg:squarederror")
    lender, platform = fit(3, Xl2, Xp2, y2, live=live, eval_set=(Xl_v, Xp_v, y_v), objective="reg:squarederror")
    first = xgboost.train(params, xgboost.DMatrix(np.hstack([Xl, Xp]), label=y), 2)
    evals: dict = {}
    booster = xgboost.train(params, xgboost.DMatrix(np.hstack([Xl2, Xp2]), label=y2), 3, xgb_model=first,
                            evals=[(xgboost.DMatrix(np.hstack([Xl_v, Xp_v]), label=y_v), "valid")],
                            evals_result=evals)
    np.testing.assert_array_equal(lender.base_margin_, live[0].base_margin_)  # the live intercept, not y2's mean
    assert_trees_equal(booster, lender, platform, Xl.shape[1])
    np.testing.assert_allclose([h["valid_rmse"] for h in lender.history_], evals["valid"]["rmse"], rtol=1e-5)


def test_a_lender_continuing_a_model_the_platform_does_not_hold_is_refused():
    """A platform not continuing a model answers no ``sb.predict``: it refuses the lender's first message.

    (Both continuing, ``sb.hello`` also carries the live model's tree count, checked against the platform's own part.)
    """
    Xl, Xp, y = synthetic(n=300, seed=1)
    live = fit(2, Xl, Xp, y)
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(n_estimators=1, key_bits=512, insecure_test_key=True, n_jobs=1)
    lender_error: list = []

    def lender_side():
        try:
            lender.fit(la, Xl, y, xgb_model=live[0])
        except Exception as exc:  # noqa: BLE001 - the platform's refusal ends the lender's link wait
            lender_error.append(exc)
    thread = threading.Thread(target=lender_side, daemon=True)
    thread.start()
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=512)
    with pytest.raises(Exception, match="expected \\['sb.hello'\\] from lender, got 'sb.predict'"):
        platform.fit(pa, Xp)
    assert platform.trees_ == []


# -- through the run job -----------------------------------------------------------------

@pytest.fixture(scope="module")
def tables(tmp_path_factory) -> dict[str, Path]:
    """Each party's registered CSVs: samples A (ids 0-499) and B (ids 250-749) of one market, and a
    platform table B with other feature columns."""
    d = tmp_path_factory.mktemp("continue_tables")
    Xl, Xp, y = synthetic(n=750, seed=11)
    ids = np.array([f"u{i:04d}" for i in range(750)])
    lender = pd.DataFrame({"id": ids, "y": y, **{f"l{j}": Xl[:, j] for j in range(Xl.shape[1])}})
    platform = pd.DataFrame({"id": ids, **{f"p{j}": Xp[:, j] for j in range(Xp.shape[1])}})
    out = {}
    for name, rows in (("a", slice(0, 500)), ("b", slice(250, 750))):
        out[f"lender-{name}"] = d / f"lender-{name}.csv"
        lender.iloc[rows].to_csv(out[f"lender-{name}"], index=False)
        out[f"platform-{name}"] = d / f"platform-{name}.csv"
        platform.iloc[rows].sample(frac=1.0, random_state=3).to_csv(out[f"platform-{name}"], index=False)
    out["platform-renamed"] = d / "platform-renamed.csv"
    platform.iloc[250:750].rename(columns={"p2": "p2_v2"}).to_csv(out["platform-renamed"], index=False)
    return out


def run_sides(root: Path, stores: dict, policies: dict, job_id: str, names: dict[str, str],
              tables: dict[str, Path], resolved: dict[str, dict], cut_at: int | None = None,
              resume: bool = False) -> dict[str, object]:
    """Run job ``job_id`` as two nodes run it (each party's store, policy and its own resolved
    parameters), over memory links cut after ``cut_at`` messages; each party's result, or the
    exception its side raised."""
    from fedacq.learn.run_node import PROTOCOL
    from fedacq.node.checkpoint import Checkpoints
    from fedacq.node.jobs import JobSpec
    from fedacq.node.protocols import JobContext

    cut = Cut(cut_at)
    links = dict(zip(PARTIES, (CutLink(link, cut) for link in memory_pair(*PARTIES, job=job_id))))
    results: dict[str, object] = {}

    def side(party: str) -> None:
        store = stores[party]
        if not resume:
            store.create(JobSpec(id=job_id, protocol="run", datasets={p: {"table": n} for p, n in names.items()},
                                 params=resolved[party]))
        store.update(job_id, status="running", started=time.time())
        ctx = JobContext(party=party, role=party, peer=PARTIES[1 - PARTIES.index(party)], job_id=job_id,
                         link=links[party], datasets={"table": tables[party]}, params=dict(resolved[party]),
                         work_dir=store.dir(job_id) / "work", keys_dir=root / party / "keys",
                         mlflow_store=str(root / party / "mlruns"), policy=policies[party],
                         registered={"table": names[party]}, checkpoints=Checkpoints(store.checkpoint_dir(job_id)),
                         resume=resume)
        try:
            results[party] = PROTOCOL.roles[party](ctx)
        except Exception as exc:  # noqa: BLE001 - the job fails, as at a node; the peer's link ends
            results[party] = exc
            store.update(job_id, status="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}")
            cut.event.set()
        else:
            store.update(job_id, status="succeeded", finished=time.time(), result=results[party])

    run_both(side)
    return results


def run_both(side) -> None:
    """``side(party)`` for both parties at once, each in a thread; both must end."""
    threads = [threading.Thread(target=side, args=(p,), daemon=True) for p in PARTIES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a party never ended"


class Nodes:
    """Two parties' node state under ``root``: a job store each, and the role functions of a job run as a node runs them."""

    def __init__(self, root: Path, tables: dict[str, Path]) -> None:
        from fedacq.node.jobs import JobStore
        from fedacq.node.policy import load_policy

        self.root, self.tables = root, tables
        self.stores = {p: JobStore(root / p / "state") for p in PARTIES}
        self.policies = {p: load_policy(POLICY, f"{p} policy", p) for p in PARTIES}

    def run(self, job_id: str, lender_table: str, platform_table: str, **params) -> dict[str, object]:
        """Run job ``job_id``; each party's result, or the exception its side raised."""
        from fedacq.learn.run_node import PROTOCOL

        proposal = {"id_column": "id", "label_column": "y", "key_bits": 512, "insecure_test_key": True,
                    "min_intersection": 50, "validation_fraction": 0.0, "seed": 3, **params}
        resolved = PROTOCOL.resolve(dict(proposal), self.policies["lender"])
        assert PROTOCOL.resolve(dict(resolved), self.policies["platform"]) == resolved
        names = {"lender": lender_table, "platform": platform_table}
        return run_sides(self.root, self.stores, self.policies, job_id, names,
                         {p: self.tables[names[p]] for p in PARTIES}, {p: resolved for p in PARTIES})

    def model_dir(self, party: str, job_id: str) -> Path:
        return self.stores[party].dir(job_id) / "work" / party / "model"


def joined(tables: dict[str, Path], sample: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lender features, platform features, labels, ids) of a sample, rows aligned by id."""
    lender = pd.read_csv(tables[f"lender-{sample}"])
    platform = pd.read_csv(tables[f"platform-{sample}"]).set_index("id").loc[lender["id"]]
    return (lender.drop(columns=["id", "y"]).to_numpy(), platform.to_numpy(), lender["y"].to_numpy(float),
            lender["id"].to_numpy())


def digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


MODEL = {"max_depth": 3, "learning_rate": 0.3, "max_bin": 32}


@pytest.fixture(scope="module")
def nodes(tables, tmp_path_factory) -> Nodes:
    """Both nodes after job ``live-1``: a joint model of 3 rounds on sample A."""
    nodes = Nodes(tmp_path_factory.mktemp("nodes"), tables)
    first = nodes.run("live-1", "lender-a", "platform-a", model_params={**MODEL, "n_estimators": 3})
    assert all(isinstance(r, dict) for r in first.values()), first
    return nodes


def test_a_run_job_adds_trees_to_a_joint_model_as_xgboost_does(tables, nodes):
    added = nodes.run("added-1", "lender-b", "platform-b", model_params={**MODEL, "n_estimators": 2},
                      xgb_model="live-1")
    assert all(isinstance(r, dict) for r in added.values()), added
    for party in PARTIES:
        assert added[party]["info"]["xgb_model"] == "live-1" and added[party]["info"]["n_trees"] == 5

    Xl, Xp, y, _ = joined(tables, "a")
    Xl2, Xp2, y2, _ = joined(tables, "b")
    params = {**XGB, "objective": "binary:logistic"}
    live = xgboost.train(params, xgboost.DMatrix(np.hstack([Xl, Xp]), label=y), 3)
    booster = xgboost.train(params, xgboost.DMatrix(np.hstack([Xl2, Xp2]), label=y2), 2, xgb_model=live)
    lender = SecureBoostLender.load(nodes.model_dir("lender", "added-1"))
    platform = SecureBoostPlatform.load(nodes.model_dir("platform", "added-1"))
    assert_trees_equal(booster, lender, platform, Xl.shape[1])
    np.testing.assert_allclose(joint_predict(lender, platform, Xl2, Xp2),
                               booster.predict(xgboost.DMatrix(np.hstack([Xl2, Xp2]))), rtol=0, atol=2e-6)
    assert len(added["lender"]["history"]) == 2  # the added rounds (XGBoost's evals_result of the call)


def test_a_continued_prospect_model_exports_old_and_new_trees(tables, tmp_path):
    nodes = Nodes(tmp_path, tables)
    common = {"mode": "prospect"}
    first = nodes.run("live-p", "lender-a", "platform-a", model_params={**MODEL, "n_estimators": 2}, **common)
    assert all(isinstance(r, dict) for r in first.values()), first
    added = nodes.run("added-p", "lender-b", "platform-b", model_params={**MODEL, "n_estimators": 2},
                      xgb_model="live-p", **common)
    assert all(isinstance(r, dict) for r in added.values()), added

    _, Xp, y, _ = joined(tables, "a")
    _, Xp2, y2, _ = joined(tables, "b")
    params = {**XGB, "objective": "binary:logistic"}
    live = xgboost.train(params, xgboost.DMatrix(Xp, label=y), 2)
    booster = xgboost.train(params, xgboost.DMatrix(Xp2, label=y2), 2, xgb_model=live)
    exported = xgboost.Booster(model_file=added["platform"]["info"]["xgboost_json"])
    assert exported.num_boosted_rounds() == 4
    platform_b = pd.read_csv(tables["platform-b"]).drop(columns=["id"])
    np.testing.assert_allclose(exported.predict(xgboost.DMatrix(platform_b)),
                               booster.predict(xgboost.DMatrix(platform_b.to_numpy())), rtol=0, atol=2e-6)


@pytest.mark.parametrize("case, error", [
    ("unknown id", "platform has no such job"),
    ("objective", "this job trains a joint reg:squarederror model"),
    ("features", "trained on the platform's features ['p0', 'p1', 'p2']; this job's table has ['p0', 'p1', 'p2_v2']"),
    ("mode", "it trained mode 'joint', this job 'prospect'"),
])
def test_a_platform_refuses_to_continue_a_model_it_cannot_and_changes_nothing(nodes, case, error):
    job_id = "refused-" + case.replace(" ", "-")
    model_params, job = {**MODEL, "n_estimators": 1}, {"xgb_model": "live-1"}
    platform_table = "platform-b"
    if case == "unknown id":  # the lender holds a job of that id, the platform none
        import shutil

        shutil.copytree(nodes.stores["lender"].dir("live-1"), nodes.stores["lender"].dir("elsewhere"))
        job["xgb_model"] = "elsewhere"
    elif case == "objective":
        model_params["objective"] = "reg:squarederror"
    elif case == "features":
        platform_table = "platform-renamed"
    else:
        job["mode"] = "prospect"
    before = {p: digest(nodes.stores[p].dir("live-1")) for p in PARTIES}
    results = nodes.run(job_id, "lender-b", platform_table, model_params=model_params, **job)
    assert isinstance(results["platform"], Exception) and error in str(results["platform"])
    assert isinstance(results["lender"], Exception)
    record = nodes.stores["platform"].get(job_id)
    assert record["status"] == "failed" and error in record["error"]
    for party in PARTIES:  # the live job untouched; the refused job wrote no model
        assert digest(nodes.stores[party].dir("live-1")) == before[party]
        assert not [f for f in nodes.model_dir(party, job_id).parent.rglob("*") if f.is_file()]
    assert not nodes.model_dir("platform", job_id).exists()  # refused before it made anything


@pytest.mark.parametrize("params, error", [
    ({"xgb_model": "../live"}, "xgb_model"),
    ({"xgb_model": "live", "model": "hetero_lr"}, "cannot continue a model"),
])
def test_the_job_parameter_is_a_job_id_of_a_model_that_can_continue(params, error):
    from fedacq.learn.run_node import PARAMS, PROTOCOL
    from fedacq.node.policy import Policy, PolicyError

    assert "xgb_model" in PARAMS
    base = {"id_column": "id", "label_column": "y"}
    assert set(PROTOCOL.resolve(dict(base), Policy())) == set(PARAMS)
    with pytest.raises(PolicyError, match=error):
        PROTOCOL.resolve({**base, **params}, Policy())


def test_fedacq_run_continues_an_earlier_runs_folder_and_refuses_a_mismatch_before_any_output(tables, tmp_path):
    from fedacq.cli import main
    from fedacq.learn import run as run_mod
    from fedacq.learn.run_config import RunConfig

    def argv(out, lender, platform, *extra):
        return ["run", "--lender", str(tables[lender]), "--platform", str(tables[platform]), "--id-column", "id",
                "--label-column", "y", "--n-estimators", "1", "--max-depth", "2", "--key-bits", "512",
                "--insecure-test-key", "--min-intersection", "50", "--validation-fraction", "0.2",
                "--out", str(out), "--quiet", *extra]
    assert main(argv(tmp_path / "first", "lender-a", "platform-a")) == 0
    assert main(argv(tmp_path / "more", "lender-b", "platform-b", "--xgb-model", str(tmp_path / "first"))) == 0
    m = __import__("json").loads((tmp_path / "more" / "metrics.json").read_text())
    assert m["model_info"]["lender"]["n_trees"] == m["model_info"]["platform"]["n_trees"] == 2
    assert len(m["history"]) == 1
    cfg = RunConfig(tables["lender-b"], tables["platform-renamed"], "id", "y", tmp_path / "refused",
                    params={"n_estimators": 1}, key_bits=512, insecure_test_key=True, min_intersection=50,
                    progress=False, xgb_model=tmp_path / "first")
    with pytest.raises(ValueError, match="trained on the platform's features"):
        run_mod.run(cfg)
    assert not (tmp_path / "refused").exists()
    with pytest.raises(ValueError, match="starts two fresh nodes"):
        run_mod.run(dataclasses.replace(cfg, transport="grpc"))


def test_two_node_processes_add_trees_to_their_live_model(tables, tmp_path):
    """gRPC between two real nodes (mutual TLS): the second job continues the first by id at each node."""
    from fedacq.node.local import start_local_pair

    datasets = {party: {name: tables[f"{party}-{name}"] for name in ("a", "b")} for party in PARTIES}

    def job(job_id, sample, **params):
        return {"job": {"protocol": "run", "id": job_id},
                "datasets": {party: {"table": sample} for party in PARTIES},
                "params": {"id_column": "id", "label_column": "y", "key_bits": 512, "insecure_test_key": True,
                           "min_intersection": 50, "validation_fraction": 0.2, "mode": "prospect",
                           "model_params": {**MODEL, "n_estimators": 1}, **params}}
    with start_local_pair(tmp_path, datasets=datasets, allow=["run"],
                          policy={party: POLICY for party in PARTIES}) as pair:
        first = pair.submit(job("grpc-live", "a"), party="lender")
        assert first["status"] == "succeeded", first.get("error")
        added = pair.submit(job("grpc-added", "b", xgb_model="grpc-live"), party="lender")
        assert added["status"] == "succeeded", added.get("error")
        platform = pair.status("platform", "grpc-added")
    assert platform["status"] == "succeeded" and platform["result"]["info"]["n_trees"] == 2
    exported = xgboost.Booster(model_file=platform["result"]["info"]["xgboost_json"])
    assert exported.num_boosted_rounds() == 2


def test_a_continuation_cut_mid_training_resumes_to_xgboosts_trees(tables, tmp_path):
    """A continued job killed after some added trees resumes from both parties' checkpoints: the live
    prediction is exchanged again, the margins come from the checkpoint, and the trees are still XGBoost's."""
    from fedacq.learn import run as run_mod
    from fedacq.learn.run_config import RunConfig, model_module, objective_of
    from fedacq.learn.run_tables import load_table
    from fedacq.node.checkpoint import Checkpoints

    first = RunConfig(tables["lender-a"], tables["platform-a"], "id", "y", tmp_path / "first",
                      params={**MODEL, "n_estimators": 2}, key_bits=512, insecure_test_key=True,
                      min_intersection=50, validation_fraction=0.0, progress=False)
    run_mod.run(first)
    cfg = dataclasses.replace(first, lender_path=tables["lender-b"], platform_path=tables["platform-b"],
                              params={**MODEL, "n_estimators": 3}, xgb_model=tmp_path / "first",
                              out_dir=tmp_path / "added")
    params = model_module("secureboost").resolve_params(dict(cfg.params))
    party_tables = {"lender": load_table(cfg.lender_path, "id", "y", party="lender", objective=objective_of(params),
                                         empty_labels=True),
                    "platform": load_table(cfg.platform_path, "id", party="platform")}

    def attempt(resume: bool, cut_at: int | None = None) -> tuple[dict, Cut]:
        cut = Cut(cut_at)
        links = dict(zip(PARTIES, (CutLink(link, cut) for link in memory_pair(*PARTIES, job="j"))))
        results: dict = {}

        def side(party: str) -> None:
            try:
                results[party] = run_mod.party_job(party, links[party], party_tables[party], cfg, params, None,
                                                   Checkpoints(tmp_path / "checkpoints" / party), resume)
            except Exception as exc:  # noqa: BLE001 - a cut ends both sides
                results[party] = exc
                cut.event.set()
        run_both(side)
        return results, cut

    # PSI (6 messages), the live prediction (2 x 2), hello (2), then 2 + 2 x max_depth per tree: cut in tree 3
    cut_results, cut = attempt(False, cut_at=6 + 4 + 2 + 2 * 8 + 4)
    assert all(isinstance(r, Exception) for r in cut_results.values())
    held = sorted(p.name for p in (tmp_path / "checkpoints" / "lender").iterdir())
    assert any("tree-0001" in name for name in held) and not any("tree-0002" in name for name in held), held
    resumed, _ = attempt(True)
    assert all(isinstance(r, dict) for r in resumed.values()), resumed
    assert resumed["lender"]["info"]["n_trees"] == 5

    Xl, Xp, y, _ = joined(tables, "a")
    Xl2, Xp2, y2, _ = joined(tables, "b")
    xparams = {**XGB, "objective": "binary:logistic"}
    live = xgboost.train(xparams, xgboost.DMatrix(np.hstack([Xl, Xp]), label=y), 2)
    booster = xgboost.train(xparams, xgboost.DMatrix(np.hstack([Xl2, Xp2]), label=y2), 3, xgb_model=live)
    lender = SecureBoostLender.load(tmp_path / "added" / "lender" / "model")
    platform = SecureBoostPlatform.load(tmp_path / "added" / "platform" / "model")
    assert_trees_equal(booster, lender, platform, Xl.shape[1])
