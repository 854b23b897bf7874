"""Scoring: batched Parquet scoring equals Booster.predict; clear errors on bad input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from fedacq.activate.scoring import load_booster, score_frame, score_parquet
from fedacq.cli import main


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(3000, 6)).astype(np.float32), columns=[f"f{i}" for i in range(6)])
    y = (X["f0"] + 0.5 * X["f3"] + rng.normal(size=3000) > 0).astype(int)
    booster = xgb.train({"max_depth": 4, "objective": "binary:logistic", "nthread": 1},
                        xgb.DMatrix(X, label=y), num_boost_round=30)
    path = tmp_path_factory.mktemp("model") / "prospect.json"
    booster.save_model(path)
    return path, booster


@pytest.fixture(scope="module")
def users(tmp_path_factory):
    rng = np.random.default_rng(1)
    n = 5000
    df = pd.DataFrame(rng.normal(size=(n, 7)), columns=[f"f{i}" for i in range(7)])
    df.loc[rng.random(n) < 0.05, "f2"] = np.nan  # missing values must be scored as missing
    df["f4"] = rng.integers(0, 5, size=n)        # an integer feature column
    df.insert(0, "user_id", [f"u{i}" for i in range(n)])
    path = tmp_path_factory.mktemp("users") / "users.parquet"
    df.to_parquet(path, row_group_size=1000)
    return path, df


def test_batched_scores_equal_booster_predict(model, users, tmp_path):
    model_path, booster = model
    users_path, df = users
    out = tmp_path / "scores.parquet"
    rep = score_parquet(load_booster(model_path, 1), users_path, out, batch_size=777, progress=False)
    assert rep.rows == len(df)
    got = pq.read_table(out).to_pandas()
    assert got["user_id"].tolist() == df["user_id"].tolist()
    expected = booster.predict(xgb.DMatrix(df[booster.feature_names].astype(np.float32)))
    np.testing.assert_allclose(got["score"].to_numpy(), expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(score_frame(booster, df), expected, rtol=0, atol=1e-7)


def test_missing_feature_column_is_named(model, tmp_path):
    model_path, _ = model
    df = pd.DataFrame({"user_id": ["a", "b"], **{f"f{i}": [0.0, 1.0] for i in range(6) if i != 3}})
    path = tmp_path / "users.parquet"
    df.to_parquet(path)
    with pytest.raises(ValueError, match=r"missing feature column\(s\).*'f3'"):
        score_parquet(load_booster(model_path, 1), path, tmp_path / "s.parquet", progress=False)
    assert not (tmp_path / "s.parquet").exists()


def test_missing_id_column_and_non_numeric_feature(model, tmp_path):
    model_path, booster = model
    df = pd.DataFrame({f"f{i}": [0.0, 1.0] for i in range(6)})
    df.to_parquet(tmp_path / "noid.parquet")
    with pytest.raises(ValueError, match="missing id column 'uid'"):
        score_parquet(booster, tmp_path / "noid.parquet", tmp_path / "s.parquet", id_column="uid", progress=False)
    df["user_id"] = ["a", "b"]
    df["f1"] = ["x", "y"]
    df.to_parquet(tmp_path / "str.parquet")
    with pytest.raises(ValueError, match="feature column 'f1' has non-numeric type"):
        score_parquet(booster, tmp_path / "str.parquet", tmp_path / "s.parquet", progress=False)
    with pytest.raises(ValueError, match=r"non-numeric feature column\(s\) \['f1'\]"):
        score_frame(booster, df)


def test_model_without_feature_names_is_refused(tmp_path):
    rng = np.random.default_rng(2)
    booster = xgb.train({"max_depth": 2}, xgb.DMatrix(rng.normal(size=(50, 3)), label=rng.random(50)), 2)
    booster.save_model(tmp_path / "m.json")
    with pytest.raises(ValueError, match="no feature names"):
        load_booster(tmp_path / "m.json")


def test_cli_score(model, users, tmp_path, capsys):
    model_path, booster = model
    users_path, df = users
    out = tmp_path / "cli.parquet"
    assert main(["score", "--model", str(model_path), "--users", str(users_path), "--out", str(out),
                 "--batch-size", "2048", "--n-jobs", "1"]) == 0
    assert "rows/s" in capsys.readouterr().out
    assert pq.read_metadata(out).num_rows == len(df)
    assert main(["score", "--model", str(tmp_path / "nope.json"), "--users", str(users_path),
                 "--out", str(out)]) == 2


def test_read_error_mid_file_propagates_and_leaves_no_output(model, users, tmp_path, monkeypatch):
    import fedacq.activate.scoring as scoring

    model_path, booster = model
    users_path, _ = users
    real = scoring._read_batches

    def failing(pf, columns, batch_size):
        it = real(pf, columns, batch_size)
        yield next(it)
        raise OSError("disk went away")

    monkeypatch.setattr(scoring, "_read_batches", failing)
    out = tmp_path / "scores.parquet"
    with pytest.raises(OSError, match="disk went away"):
        score_parquet(booster, users_path, out, batch_size=500, progress=False)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))
