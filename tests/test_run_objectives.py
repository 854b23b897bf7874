"""``fedacq run --objective``: XGBoost's objectives through the driver, with their own metrics and plots,
and bad labels refused before any work with the file, column and row named.

The model here is a stand-in registered like ``test_run_driver``'s (a local
scikit-learn model on the lender's own columns, one message each way) and PSI
is replaced by the known intersection, so these tests cover the driver's
label checks, evaluation and reports per objective without Paillier; the real
models' exactness against XGBoost is tested with the models.
"""

from __future__ import annotations

import json
import re
import sys
import types

import numpy as np
import pandas as pd
import pytest

from fedacq.cli import main
from fedacq.learn import run as run_mod
from fedacq.learn.run_config import MODELS, RunConfig
from fedacq.learn.run_roles import RoleResult
from fedacq.link.message import Message, MessageSpec, register

#: each new in-process MLflow store starts as a copy of a migrated empty one (tests/conftest.py says why)
pytestmark = pytest.mark.usefixtures("mlflow_stores_from_template")

register(MessageSpec("test_objectives.rows", header={"rows": int}))

N_COMMON = 300


def _labels(objective: str, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    signal = x[:, 0] - 0.5 * x[:, 1]
    if objective == "multi:softprob":
        return np.digitize(signal + rng.normal(scale=0.5, size=len(x)), [-0.7, 0.7]).astype(float)
    if objective == "binary:logistic":
        return (signal + rng.normal(size=len(x)) > 0).astype(float)
    if objective == "count:poisson":
        return rng.poisson(np.exp(0.5 * signal)).astype(float)
    if objective == "reg:tweedie":  # zero-inflated amounts: most rows draw nothing
        return np.where(rng.random(len(x)) < 0.35, rng.gamma(2.0, np.exp(signal)), 0.0)
    return 3.0 * signal + rng.normal(size=len(x))


def write_files(directory, objective: str, seed: int = 0):
    """A lender CSV (id, y, a, b) of 360 rows and a platform CSV (id, c) of 340 rows, 300 ids in common."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"u{i:04d}" for i in range(400)])
    x = rng.normal(size=(400, 2))
    lender = pd.DataFrame({"id": ids[:360], "y": _labels(objective, x, rng)[:360], "a": x[:360, 0],
                           "b": x[:360, 1]})
    platform = pd.DataFrame({"id": ids[60:], "c": rng.normal(size=340)}).sample(frac=1.0, random_state=seed)
    lender.to_csv(directory / "lender.csv", index=False)
    platform.to_csv(directory / "platform.csv", index=False)
    return directory / "lender.csv", directory / "platform.csv"


def _toy_module(empty_labels: bool = False) -> types.ModuleType:
    """A registry entry whose lender fits the objective on its own columns (labelled rows only)."""
    from sklearn.linear_model import LinearRegression, LogisticRegression, PoissonRegressor

    mod = types.ModuleType("toy_objective_roles")
    mod.MODES = ("joint",)
    mod.ITERATION = None
    mod.EMPTY_LABELS = empty_labels
    mod.resolve_params = lambda p: {"objective": "binary:logistic", **p}

    def lender_role(link, data, ctx):
        objective = ctx.params["objective"]
        keep = ~np.isnan(data.y_train)
        X, y = data.X_train[keep], data.y_train[keep]
        if objective in ("multi:softprob", "binary:logistic"):
            predict = LogisticRegression(max_iter=200).fit(X, y).predict_proba
            if objective == "binary:logistic":
                predict = (lambda f: lambda Z: f(Z)[:, 1])(predict)
        elif objective in ("reg:tweedie", "count:poisson"):
            predict = PoissonRegressor().fit(X, y).predict
        else:
            predict = LinearRegression().fit(X, y).predict
        link.send(Message("test_objectives.rows", {"rows": len(data.X_train)}))
        assert link.recv("test_objectives.rows").header["rows"] == len(data.X_train)
        ctx.on_iteration(0, {"train_metric": 1.0})
        path = ctx.model_dir / "toy.json"
        path.write_text("{}")
        return RoleResult(files=[path], train_score=predict(data.X_train), valid_score=predict(data.X_valid),
                          history=[{"train_metric": 1.0}])

    def platform_role(link, data, ctx):
        msg = link.recv("test_objectives.rows")
        link.send(Message("test_objectives.rows", {"rows": len(data.X_train)}))
        assert msg.header["rows"] == len(data.X_train)
        path = ctx.model_dir / "nothing.json"
        path.write_text("{}")
        return RoleResult(files=[path])

    mod.lender_role, mod.platform_role = lender_role, platform_role
    return mod


@pytest.fixture
def toy(monkeypatch):
    """Register the stand-in model as ``toy`` and PSI as the known intersection; returns the module."""
    def known_psi(party, link, table, id_column, min_intersection):
        common = sorted(set(table.ids) & {f"u{i:04d}" for i in range(60, 360)})
        position = {v: i for i, v in enumerate(table.ids)}
        return np.array([position[v] for v in common], dtype=np.int64)

    module = _toy_module()
    monkeypatch.setitem(sys.modules, "toy_objective_roles", module)
    monkeypatch.setitem(MODELS, "toy", "toy_objective_roles")
    monkeypatch.setattr(run_mod, "_psi", known_psi)
    return module


def _cli(lender, platform, out, *extra):
    return main(["run", "--lender", str(lender), "--platform", str(platform), "--id-column", "id",
                 "--label-column", "y", "--model", "toy", "--min-intersection", "50", "--out", str(out),
                 "--quiet", *extra])


def _mlflow_metrics(out):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'lender' / 'mlruns' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("fedacq-run").experiment_id])
    return run.data.metrics


def test_tweedie_run_reports_xgboost_metric_value_deciles_and_regression_plots(toy, tmp_path, capsys):
    lender, platform = write_files(tmp_path, "reg:tweedie")
    out = tmp_path / "out"
    assert _cli(lender, platform, out, "--objective", "reg:tweedie", "--tweedie-variance-power", "1.3") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m = json.loads((out / "metrics.json").read_text())
    assert (m["objective"], m["objective_params"]) == ("reg:tweedie", {"tweedie_variance_power": pytest.approx(1.3)})
    assert m["intersection_size"] == N_COMMON and m["train_labelled_rows"] == m["train_rows"] == 240
    for split in ("train", "validation"):
        values = m[split]
        assert np.isfinite(values["tweedie-nloglik@1.3"]) and "auc" not in values
        deciles = values["value_by_decile"]
        assert len(deciles) == 10 and deciles[-1]["cum_value_share"] == pytest.approx(1.0)
        assert values["mean_label"] > 0
    assert summary["validation_tweedie-nloglik_1.3"] == pytest.approx(m["validation"]["tweedie-nloglik@1.3"], abs=1e-4)
    assert m["lift_by_decile"] is None
    assert sorted(p.rsplit("/", 1)[1] for p in m["files"]["plots"]) == ["predicted_vs_actual.png", "value_by_decile.png"]
    for name in ("predicted_vs_actual.png", "value_by_decile.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "roc.png").exists()
    logged = _mlflow_metrics(out)
    assert logged["validation_tweedie-nloglik_1.3"] == pytest.approx(m["validation"]["tweedie-nloglik@1.3"])


def test_multiclass_run_reports_mlogloss_merror_and_a_confusion_matrix(toy, tmp_path):
    lender, platform = write_files(tmp_path, "multi:softprob")
    m = run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "out", model="toy",
                              params={"objective": "multi:softprob", "num_class": 3}, min_intersection=50,
                              progress=False))
    assert m["objective_params"] == {"num_class": 3}
    valid = m["validation"]
    assert 0 < valid["mlogloss"] < np.log(3) + 1 and 0 <= valid["merror"] < 2 / 3
    assert np.sum(valid["confusion"]) == m["validation_rows"] and np.shape(valid["confusion"]) == (3, 3)
    assert (tmp_path / "out" / "confusion.png").is_file()


@pytest.mark.parametrize("objective, labels, extra, message", [
    ("reg:squarederror", {5: "high"}, [], r"label column 'y' must hold numbers for reg:squarederror, found 'high' \(row 7\)"),
    ("reg:tweedie", {9: -2.5}, [], r"label column 'y': reg:tweedie cannot train on -2.5 \(row 11\)"),
    ("count:poisson", {3: -1}, [], r"label column 'y': count:poisson cannot train on -1 \(row 5\)"),
    ("multi:softprob", {4: 3}, ["--num-class", "3"],
     r"label column 'y': multi:softprob cannot train on 3 \(row 6\).*encode the classes as 0\.\.2"),
    ("multi:softprob", {}, [], r"multi:softprob needs num_class"),
    ("binary:logistic", {2: 0.5}, [], r"label column 'y': binary:logistic cannot train on 0.5 \(row 4\)"),
    ("reg:squarederror", {8: None}, [], r"label column 'y' has an empty cell \(row 10\)"),
])
def test_bad_labels_are_refused_before_any_work(toy, tmp_path, capsys, objective, labels, extra, message):
    lender, platform = write_files(tmp_path, objective)
    frame = pd.read_csv(lender).astype({"y": object})
    for row, value in labels.items():
        frame.loc[row, "y"] = value
    frame.to_csv(lender, index=False)
    out = tmp_path / "out"
    assert _cli(lender, platform, out, "--objective", objective, *extra) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    if labels:
        assert str(lender) in err
    assert not out.exists()  # refused before any work


def test_every_tweedie_label_zero_is_refused_before_any_work(toy, tmp_path):
    lender, platform = write_files(tmp_path, "reg:tweedie")
    frame = pd.read_csv(lender)
    frame["y"] = 0.0
    frame.to_csv(lender, index=False)
    with pytest.raises(ValueError, match=r"lender\.csv: label column 'y': reg:tweedie: every label is 0"):
        run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "out", model="toy",
                              params={"objective": "reg:tweedie"}, min_intersection=50, progress=False))
    assert not (tmp_path / "out").exists()


def test_a_model_that_trains_on_labelled_rows_is_evaluated_on_them_only(toy, tmp_path, monkeypatch):
    """An empty label means "not in this stage" for a model that says so (``EMPTY_LABELS``)."""
    monkeypatch.setattr(toy, "EMPTY_LABELS", True)
    lender, platform = write_files(tmp_path, "reg:squarederror")
    frame = pd.read_csv(lender)
    frame.loc[::3, "y"] = np.nan
    frame.to_csv(lender, index=False)
    m = run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "out", model="toy",
                              params={"objective": "reg:squarederror"}, min_intersection=50, progress=False))
    labelled = pd.read_csv(lender).set_index("id")["y"].notna()
    common = [f"u{i:04d}" for i in range(60, 360)]
    assert m["train_labelled_rows"] + m["validation_labelled_rows"] == int(labelled[common].sum())
    assert m["train_labelled_rows"] < m["train_rows"]
    assert m["validation"]["rows"] == m["validation_labelled_rows"]
    assert np.isfinite(m["validation"]["rmse"]) and np.isfinite(m["train"]["mean_label"])


def test_secureboost_tweedie_as_a_node_job(tmp_path):
    """The real model over two node processes (mutual TLS): the ``run`` job takes the objective, the lender's
    node checks the labels for it, and the evaluation agrees with the model's own last-round metric.
    1024-bit keys with the explicit test-only flag: this checks wiring, a 2048-bit key only costs CI time."""
    rng = np.random.default_rng(5)
    n = 500
    ids = np.array([f"u{i:04d}" for i in range(n)])
    x = rng.normal(size=(n, 3))
    y = np.where(rng.random(n) < 0.4, rng.gamma(2.0, np.exp(0.8 * x[:, 0] + 0.5 * x[:, 2])), 0.0)
    pd.DataFrame({"id": ids, "y": y, "a": x[:, 0], "b": x[:, 1]}).to_csv(tmp_path / "lender.csv", index=False)
    pd.DataFrame({"id": ids, "c": x[:, 2], "d": rng.normal(size=n)}).sample(frac=1.0, random_state=1).to_csv(
        tmp_path / "platform.csv", index=False)
    out = tmp_path / "out"
    m = run_mod.run(RunConfig(tmp_path / "lender.csv", tmp_path / "platform.csv", "id", "y", out,
                              params={"objective": "reg:tweedie", "tweedie_variance_power": 1.3,
                                      "n_estimators": 2, "max_depth": 2},
                              key_bits=1024, insecure_test_key=True, transport="grpc", progress=False))
    assert m["objective"] == "reg:tweedie" and m["intersection_size"] == n
    assert m["history"][-1]["train_tweedie-nloglik_1.3"] == pytest.approx(m["train"]["tweedie-nloglik@1.3"],
                                                                          rel=1e-4)
    assert (out / "value_by_decile.png").is_file() and (out / "predicted_vs_actual.png").is_file()


def test_secureboost_on_ou_trains_what_paillier_trains(tmp_path, monkeypatch):
    """``fedacq run --scheme ou`` (in process, the real SecureBoost) gives the Paillier run's model, and a
    hetero LR run on OU is refused before any work, with the reason. PSI is the known intersection in id
    order (the real one's shared order changes with its keys, and with it the split). 1024-bit test keys
    (``--insecure-test-key``): OU's smallest whose plaintext space holds the packed entries of these rows;
    this checks the wiring, tests/test_secureboost_ou.py the scheme."""
    rng = np.random.default_rng(11)
    n = 300
    ids = np.array([f"u{i:04d}" for i in range(n)])
    x = rng.normal(size=(n, 3))
    y = (x[:, 0] - x[:, 2] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    pd.DataFrame({"id": ids, "y": y, "a": x[:, 0], "b": x[:, 1]}).to_csv(tmp_path / "lender.csv", index=False)
    pd.DataFrame({"id": ids, "c": x[:, 2]}).to_csv(tmp_path / "platform.csv", index=False)
    monkeypatch.setattr(run_mod, "_psi", lambda party, link, table, *_: np.argsort(table.ids, kind="stable"))

    def cli(out, *extra):
        return main(["run", "--lender", str(tmp_path / "lender.csv"), "--platform", str(tmp_path / "platform.csv"),
                     "--id-column", "id", "--label-column", "y", "--min-intersection", "50", "--out", str(out),
                     "--n-estimators", "2", "--max-depth", "2", "--key-bits", "1024", "--insecure-test-key",
                     "--quiet", *extra])

    assert cli(tmp_path / "ou", "--scheme", "ou") == 0
    assert cli(tmp_path / "paillier") == 0
    ou, paillier = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("ou", "paillier"))
    for m in (ou, paillier):
        for h in m["history"]:
            h.pop("seconds")
    assert ou["history"] == paillier["history"] and ou["train"]["auc"] > 0.8
    with pytest.raises(ValueError, match="model 'hetero_lr' runs on scheme\\(s\\) \\['paillier'\\], not 'ou'"):
        run_mod.run(RunConfig(tmp_path / "lender.csv", tmp_path / "platform.csv", "id", "y", tmp_path / "lr",
                              model="hetero_lr", scheme="ou", key_bits=1024, insecure_test_key=True,
                              min_intersection=50, progress=False))
    with pytest.raises(SystemExit):  # argparse: invalid choice
        main(["run", "--lender", "l.csv", "--platform", "p.csv", "--id-column", "id", "--label-column", "y",
              "--out", str(tmp_path / "x"), "--scheme", "rsa"])
    with pytest.raises(ValueError, match="unknown scheme 'rsa'"):
        RunConfig(tmp_path / "lender.csv", tmp_path / "platform.csv", "id", "y", tmp_path / "x", scheme="rsa")
