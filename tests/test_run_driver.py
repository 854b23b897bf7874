"""The ``fedacq run`` driver on its own: input checks, the shared split, the model registry contract.

The registry test plugs in a tiny model that keeps the lender's data at the
lender (a local logistic regression on its own columns) and a stand-in for PSI,
so the driver's bookkeeping (metrics.json, plots, model parts, MLflow runs,
bytes, failures) is tested without Paillier or the real PSI; the real pipeline
is tested end to end in ``test_run_secureboost.py``.
"""

from __future__ import annotations

import json
import sys
import types

import numpy as np
import pandas as pd
import pytest

from fedacq.cli import main
from fedacq.learn import run as run_mod
from fedacq.learn.run_config import MODELS, RunConfig
from fedacq.learn.run_roles import RoleResult
from fedacq.learn.run_tables import load_table
from fedacq.link.message import MessageSpec, PartSpec, register

GUEST = "/work/shared/datasets/fate/default_credit_hetero_guest.csv"
HOST = "/work/shared/datasets/fate/default_credit_hetero_host.csv"

register(MessageSpec("test_run.row_count", header={"rows": int},
                     parts={"echo": PartSpec(dtypes=("int64",), ndim=1)}))


@pytest.fixture(scope="module")
def small_files(tmp_path_factory):
    """600 lender rows and 500 shuffled platform rows of default_credit, 400 ids in common."""
    d = tmp_path_factory.mktemp("run_inputs")
    guest = pd.read_csv(GUEST, nrows=1000)
    host = pd.read_csv(HOST, nrows=1000)
    lender = guest.iloc[:600]
    platform = host.iloc[200:700].sample(frac=1.0, random_state=1)
    lender.to_csv(d / "lender.csv", index=False)
    platform.to_csv(d / "platform.csv", index=False)
    return d / "lender.csv", d / "platform.csv", 400


# -- input checks ------------------------------------------------------------------------

def test_missing_id_column_names_file_and_column(small_files, tmp_path, capsys):
    lender, platform, _ = small_files
    code = main(["run", "--lender", str(lender), "--platform", str(platform), "--id-column", "uid",
                 "--label-column", "y", "--out", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert str(lender) in err and "'uid'" in err and "id column" in err


def test_missing_label_column_names_file_and_column(small_files, tmp_path):
    lender, platform, _ = small_files
    with pytest.raises(ValueError, match=r"lender\.csv: label column 'target' not found"):
        run_mod.run(RunConfig(lender, platform, "id", "target", tmp_path / "out", progress=False))


def test_bad_inputs_are_refused_with_file_and_column(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,y,x0\n1,0,0.5\n2,2,0.1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: label column 'y': binary:logistic cannot train on 2 \(row 3\): "
                                         r".*needs labels 0/1"):
        load_table(bad, "id", "y")
    bad.write_text("id,x0,x1\n1,0.5,a\n2,0.1,b\n")
    with pytest.raises(ValueError, match=r"bad\.csv: feature column 'x1' is not numeric"):
        load_table(bad, "id")
    bad.write_text("id,x0\n1,0.5\n1,0.1\n")
    with pytest.raises(ValueError, match=r"bad\.csv: id column 'id' has duplicates"):
        load_table(bad, "id")
    with pytest.raises(FileNotFoundError, match="nope.csv"):
        load_table(tmp_path / "nope.csv", "id")


def test_ids_are_strings_and_missing_features_kept(tmp_path):
    f = tmp_path / "p.csv"
    f.write_text("id,x0\n007,0.5\n7,\n")
    t = load_table(f, "id")
    assert t.ids.tolist() == ["007", "7"]
    assert np.isnan(t.X[1, 0])


def test_run_config_checks(small_files, tmp_path):
    lender, platform, _ = small_files
    cfg = lambda **kw: RunConfig(lender, platform, "id", "y", tmp_path / "o", progress=False, **kw)
    with pytest.raises(ValueError, match="unknown model 'forest'"):
        run_mod.run(cfg(model="forest"))
    with pytest.raises(ValueError, match="below the 2048-bit minimum"):
        run_mod.run(cfg(key_bits=1024))
    with pytest.raises(ValueError, match="validation fraction"):
        run_mod.run(cfg(validation_fraction=1.0))
    with pytest.raises(ValueError, match="unknown parameter"):
        run_mod.run(cfg(params={"n_trees": 3}))
    with pytest.raises(ValueError, match="needs a validation set"):
        run_mod.run(cfg(params={"early_stopping_rounds": 3}, validation_fraction=0.0))


def test_split_is_shared_deterministic_and_disjoint():
    train, valid = run_mod.split_positions(1000, 0.25, seed=7)
    again = run_mod.split_positions(1000, 0.25, seed=7)
    other = run_mod.split_positions(1000, 0.25, seed=8)
    assert valid.size == 250 and train.size == 750
    assert np.array_equal(np.sort(np.r_[train, valid]), np.arange(1000))
    assert np.array_equal(valid, again[1]) and not np.array_equal(valid, other[1])
    assert (np.diff(train) > 0).all() and (np.diff(valid) > 0).all()
    assert run_mod.split_positions(10, 0.0, 0)[1].size == 0


# -- the registry contract, with a stand-in model and PSI -------------------------------

def _toy_module() -> types.ModuleType:
    """A registry entry whose lender trains on its own columns only; one message each way."""
    from sklearn.linear_model import LogisticRegression

    from fedacq.link.message import Message

    mod = types.ModuleType("toy_roles")
    mod.MODES = ("joint",)
    mod.ITERATION = ("max_iter", "epoch")
    mod.resolve_params = lambda p: {"max_iter": 50, **p}

    def lender_role(link, data, ctx):
        with ctx.phase("train"):
            m = LogisticRegression(max_iter=ctx.params["max_iter"]).fit(data.X_train, data.y_train)
            link.send(Message("test_run.row_count", {"rows": len(data.X_train)},
                              {"echo": np.zeros(3, dtype=np.int64)}))
            reply = link.recv("test_run.row_count")
            assert reply.header["rows"] == len(data.X_train)
            for i in range(2):
                ctx.on_iteration(i, {"train_loss": 1.0 / (i + 1)})
        with ctx.phase("predict"):
            train = m.predict_proba(data.X_train)[:, 1]
            valid = m.predict_proba(data.X_valid)[:, 1]
        path = ctx.model_dir / "coef.json"
        path.write_text(json.dumps(m.coef_.tolist()))
        return RoleResult(files=[path], train_score=train, valid_score=valid,
                                  history=[{"train_loss": 1.0}, {"train_loss": 0.5}])

    def platform_role(link, data, ctx):
        msg = link.recv("test_run.row_count")
        link.send(Message("test_run.row_count", {"rows": len(data.X_train)},
                          {"echo": np.zeros(3, dtype=np.int64)}))
        assert msg.header["rows"] == len(data.X_train)
        path = ctx.model_dir / "nothing.json"
        path.write_text("{}")
        return RoleResult(files=[path])

    mod.lender_role, mod.platform_role = lender_role, platform_role
    return mod


@pytest.fixture
def toy_registry(monkeypatch, small_files):
    lender, platform, _ = small_files
    ids = {"lender": pd.read_csv(lender)["id"].astype(str), "platform": pd.read_csv(platform)["id"].astype(str)}
    common = sorted(set(ids["lender"]) & set(ids["platform"]))

    def fake_psi(party, link, table, id_column, min_intersection):
        position = {v: i for i, v in enumerate(table.ids)}
        return np.array([position[v] for v in common], dtype=np.int64)

    monkeypatch.setitem(sys.modules, "toy_roles", _toy_module())
    monkeypatch.setitem(MODELS, "toy", "toy_roles")
    monkeypatch.setattr(run_mod, "_psi", fake_psi)


def test_registry_contract_writes_metrics_plots_parts_and_mlflow(toy_registry, small_files, tmp_path):
    lender, platform, n_common = small_files
    out = tmp_path / "out"
    code = main(["run", "--lender", str(lender), "--platform", str(platform), "--id-column", "id",
                 "--label-column", "y", "--model", "toy", "--param", "max_iter=80",
                 "--validation-fraction", "0.25", "--out", str(out), "--quiet"])
    assert code == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["intersection_size"] == n_common
    assert (m["train_rows"], m["validation_rows"]) == (300, 100)
    assert m["params"] == {"max_iter": 80} and m["model"] == "toy" and m["key_bits"] == 2048
    for split in ("train", "validation"):
        assert 0.5 < m[split]["auc"] <= 1.0 and 0.0 < m[split]["ks"] <= 1.0
        assert len(m[split]["lift_by_decile"]) == 10
    assert m["lift_by_decile"] == m["validation"]["lift_by_decile"]
    assert set(m["timings"]) >= {"psi", "train", "predict", "total"}
    assert m["bytes"]["lender_to_platform"] > 0 and m["bytes"]["platform_to_lender"] > 0
    assert m["bytes"]["messages"] == {"lender_to_platform": 1, "platform_to_lender": 1}
    assert (out / "lender" / "model" / "coef.json").is_file()
    assert (out / "platform" / "model" / "nothing.json").is_file()
    for name in ("roc.png", "ks.png", "gains.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    for party in ("lender", "platform"):
        assert (out / party / "mlruns" / "mlflow.db").is_file()
        assert len((out / party / "egress.jsonl").read_text().splitlines()) == 1

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'lender' / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fedacq-run").experiment_id])
    assert run.data.tags["fedacq.party"] == "lender" and run.data.tags["fedacq.job_id"] == m["job_id"]
    assert [h.step for h in client.get_metric_history(run.info.run_id, "train_loss")] == [0, 1]
    assert run.data.metrics["validation_auc"] == pytest.approx(m["validation"]["auc"])
    assert run.data.params["max_iter"] == "80"


def test_a_failing_party_fails_the_run_at_once(toy_registry, small_files, tmp_path, monkeypatch):
    lender, platform, _ = small_files

    def broken(link, data, ctx):
        raise RuntimeError("platform role broke")

    monkeypatch.setattr(sys.modules["toy_roles"], "platform_role", broken)
    with pytest.raises(RuntimeError, match="platform role broke"):
        run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "o", model="toy",
                                      progress=False))


def test_grpc_transport_refuses_a_shared_tracking_store(toy_registry, small_files, tmp_path):
    lender, platform, _ = small_files
    with pytest.raises(ValueError, match="tracking-dir is not used with --transport grpc"):
        run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "o", model="toy",
                                      transport="grpc", tracking_dir=str(tmp_path / "ml"), progress=False))


def test_engine_options_are_checked(toy_registry, small_files, tmp_path, capsys):
    from fedacq.compute import ComputeConfig

    lender, platform, _ = small_files
    code = main(["run", "--lender", str(lender), "--platform", str(platform), "--id-column", "id",
                 "--label-column", "y", "--model", "toy", "--engine", "ray", "--out", str(tmp_path / "o"), "--quiet"])
    assert code == 2 and "needs address" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--engine is for --transport inproc"):
        run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "o", model="toy", transport="grpc",
                              compute=ComputeConfig(engine="ray", address="127.0.0.1:6379"), progress=False))
