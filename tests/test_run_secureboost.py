"""``fedacq run --model secureboost`` end to end: real PSI, real SecureBoost, both modes.

Keys here are 1024 bits with the explicit test-only flag: the point is the
driver's wiring and outputs, and a 2048-bit key would only make CI slower.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fedacq.cli import main
from fedacq.learn import run as run_mod
from fedacq.learn.run_config import RunConfig

GUEST = "/work/shared/datasets/fate/default_credit_hetero_guest.csv"
HOST = "/work/shared/datasets/fate/default_credit_hetero_host.csv"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """900 lender rows, 900 shuffled platform rows, 700 ids in common."""
    d = tmp_path_factory.mktemp("sb_inputs")
    guest = pd.read_csv(GUEST, nrows=1100)
    host = pd.read_csv(HOST, nrows=1100)
    guest.iloc[:900].to_csv(d / "lender.csv", index=False)
    host.iloc[200:].sample(frac=1.0, random_state=3).to_csv(d / "platform.csv", index=False)
    return d / "lender.csv", d / "platform.csv", 700


def test_joint_run_from_the_command_line(files, tmp_path, capsys):
    lender, platform, n_common = files
    out = tmp_path / "joint"
    code = main(["run", "--lender", str(lender), "--platform", str(platform), "--id-column", "id",
                 "--label-column", "y", "--model", "secureboost", "--n-estimators", "3",
                 "--max-depth", "3", "--max-bin", "32", "--learning-rate", "0.3",
                 "--key-bits", "1024", "--insecure-test-key",  # test-only key size, see module doc
                 "--validation-fraction", "0.3", "--seed", "5", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    m = json.loads((out / "metrics.json").read_text())
    assert summary["validation_auc"] == pytest.approx(m["validation"]["auc"], abs=1e-4)

    assert m["intersection_size"] == n_common
    assert m["train_rows"] + m["validation_rows"] == n_common and m["validation_rows"] == 210
    assert (m["model"], m["mode"], m["key_bits"], m["insecure_test_key"]) == ("secureboost", "joint", 1024, True)
    assert m["params"]["n_estimators"] == 3 and m["params"]["max_bin"] == 32
    # a real model on default_credit ranks well above chance even on 700 rows
    assert m["train"]["auc"] > 0.7 and m["validation"]["auc"] > 0.6
    assert 0 < m["validation"]["ks"] < 1 and len(m["lift_by_decile"]) == 10
    assert len(m["history"]) == 3
    assert m["history"][-1]["train_auc"] == pytest.approx(m["train"]["auc"], abs=2e-3)
    assert set(m["timings"]) >= {"psi", "train", "predict", "total"}
    by_phase = m["bytes"]["by_phase"]
    assert by_phase["psi"]["lender_to_platform"] > 0 and by_phase["model"]["platform_to_lender"] > 0
    assert m["bytes"]["lender_to_platform"] == sum(p["lender_to_platform"] for p in by_phase.values())
    assert (out / "lender" / "model" / "secureboost_lender.json").is_file()
    assert (out / "platform" / "model" / "secureboost_platform.json").is_file()
    assert all((out / n).is_file() for n in ("roc.png", "ks.png", "gains.png"))

    # each party's own MLflow store holds its run, with per-tree metrics at the lender
    from mlflow.tracking import MlflowClient

    for party in ("lender", "platform"):
        client = MlflowClient(tracking_uri=f"sqlite:///{out / party / 'mlruns' / 'mlflow.db'}")
        (run,) = client.search_runs([client.get_experiment_by_name("fedacq-run").experiment_id])
        assert run.data.tags["fedacq.party"] == party and run.info.status == "FINISHED"
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id, "model")]
        assert artifacts == [f"model/secureboost_{party}.json"]
        if party == "lender":
            steps = [h.step for h in client.get_metric_history(run.info.run_id, "valid_auc")]
            assert steps == [0, 1, 2]
        else:
            assert "valid_auc" not in run.data.metrics and "validation_auc" not in run.data.metrics


def test_prospect_run_exports_an_xgboost_model_the_platform_can_use(files, tmp_path):
    import xgboost as xgb

    lender, platform, n_common = files
    out = tmp_path / "prospect"
    cfg = RunConfig(lender, platform, "id", "y", out, params={"n_estimators": 2, "max_depth": 2},
                            mode="prospect", key_bits=1024, insecure_test_key=True,  # test-only key
                            validation_fraction=0.2, progress=False)
    m = run_mod.run(cfg)
    assert m["mode"] == "prospect" and m["intersection_size"] == n_common
    exported = out / "platform" / "model" / "prospect_xgboost.json"
    assert m["model_info"]["platform"]["xgboost_json"] == str(exported)
    # the platform scores its own rows alone; the lender's validation scores came from the same trees
    booster = xgb.Booster(model_file=str(exported))
    X_platform = pd.read_csv(platform).drop(columns=["id"])
    scores = booster.predict(xgb.DMatrix(X_platform))
    assert scores.shape == (900,) and np.all((scores > 0) & (scores < 1))
    assert m["validation"]["auc"] > 0.55


def test_grpc_nodes_give_the_same_model_as_the_in_process_link(files, tmp_path):
    """Two real node processes (mutual TLS) run the same job; the model must not depend on transport.

    PSI's shared order is pseudo-random per job, so a validation split (positions
    in that order) differs between jobs; with no validation split both train on
    the whole intersection and must agree.
    """
    lender, platform, n_common = files
    common = dict(params={"n_estimators": 2, "max_depth": 3}, key_bits=1024,
                  insecure_test_key=True,  # test-only key size, see module doc
                  validation_fraction=0.0, seed=11, progress=False)
    grpc = run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "grpc", transport="grpc", **common))
    inproc = run_mod.run(RunConfig(lender, platform, "id", "y", tmp_path / "inproc", **common))
    assert grpc["transport"] == "grpc" and grpc["intersection_size"] == n_common
    assert grpc["validation"] is None and grpc["evaluated_on"] == "train"
    assert grpc["train"]["auc"] == pytest.approx(inproc["train"]["auc"], abs=1e-9)
    assert grpc["train"]["ks"] == pytest.approx(inproc["train"]["ks"], abs=1e-9)
    for party in ("lender", "platform"):
        (part,) = grpc["files"][party]
        assert part.startswith(str(tmp_path / "grpc" / party)) and part.endswith(f"secureboost_{party}.json")
        assert (tmp_path / "grpc" / party / "mlruns").is_dir()
        assert (tmp_path / "grpc" / party / "state" / "egress.jsonl").is_file()
    assert all((tmp_path / "grpc" / n).is_file() for n in ("roc.png", "ks.png", "gains.png"))
