"""Boost tables: tiers, treatment/control boosts, manifest, refusal of bad tables, export, CLI."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from fedacq.activate.buckets import bucket_of
from fedacq.activate.export import EXPORT_COLUMNS, export_table
from fedacq.activate.table import (DATA_FILE, MANIFEST_FILE, BoostTable, BoostTableError,
                                   ExperimentConfig, build_boost_table)
from fedacq.activate.tiers import TierConfig, fit_tiers
from fedacq.cli import main

TIERS = TierConfig(cuts=(0.5, 0.9), boosts=(1.0, 1.2, 3.0), floor=1.0, cap=2.0)
EXP = ExperimentConfig(layer="acq", salt="s", treatment=((0, 299), (600, 999)), control=((300, 599),))


@pytest.fixture
def scores():
    rng = np.random.default_rng(3)
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(20_000)], "score": rng.random(20_000)})


def test_tiers_quantile_threshold_cap_and_floor():
    s = np.linspace(0, 1, 1001)
    t = fit_tiers(s, TIERS)
    np.testing.assert_allclose(t.thresholds, [0.5, 0.9])
    assert t.boosts.tolist() == [1.0, 1.2, 2.0]  # 3.0 capped at 2.0
    assert np.bincount(t.tier_of(s)).tolist() == [500, 400, 101]
    th = fit_tiers(s, TierConfig(method="threshold", cuts=(0.2,), boosts=(0.5, 1.5), floor=0.8, cap=2))
    assert th.boost_of(np.array([0.1, 0.2, 0.3])).tolist() == [pytest.approx(0.8), 1.5, 1.5]
    for bad, msg in [(dict(cuts=(0.5,), boosts=(1.0,)), "2 tiers"), (dict(cuts=(0.8, 0.5), boosts=(1, 1, 1)), "increasing"),
                     (dict(cuts=(1.5,), boosts=(1, 1)), r"\(0, 1\)"), (dict(floor=3.0, cap=2.0), "floor <= cap")]:
        with pytest.raises(ValueError, match=msg):
            TierConfig(**bad)


def test_experiment_ranges_must_partition_buckets():
    with pytest.raises(ValueError, match="overlap"):
        ExperimentConfig(treatment=((0, 500),), control=((500, 999),))
    with pytest.raises(ValueError, match="neither"):
        ExperimentConfig(treatment=((0, 100),), control=((500, 999),))


def test_build_assigns_tier_boosts_to_treatment_only(scores):
    t = build_boost_table(scores, "camp", TIERS, EXP, model_version="m1", expiry=dt.timedelta(days=1))
    d = t.data
    np.testing.assert_array_equal(d["bucket"], bucket_of(scores["user_id"], "acq", "s"))
    treated = EXP.treatment_mask()[d["bucket"]]
    assert (d["arm"] == np.where(treated, "treatment", "control")).all()
    assert (d.loc[~treated, "boost"] == 1.0).all()
    want = np.array([1.0, 1.2, 2.0], dtype=np.float32)[d["tier"][treated]]
    np.testing.assert_array_equal(d.loc[treated, "boost"], want)
    assert 0.68 < treated.mean() < 0.72  # 700 of 1000 buckets
    assert t.manifest["experiment"]["salt_id"] and t.manifest["model_version"] == "m1"


def test_duplicate_or_null_ids_are_refused(scores):
    dup = pd.concat([scores, scores.iloc[[5]]])
    with pytest.raises(ValueError, match=r"duplicate user id.*'u5'"):
        build_boost_table(dup, "camp", TIERS, EXP)
    with pytest.raises(ValueError, match="missing column 'score'"):
        build_boost_table(scores.rename(columns={"score": "p"}), "camp", TIERS, EXP)


def test_write_load_roundtrip_and_lookup(scores, tmp_path):
    t = build_boost_table(scores, "camp", TIERS, EXP, expiry=dt.timedelta(hours=1))
    t.write(tmp_path / "v1")
    m = json.loads((tmp_path / "v1" / MANIFEST_FILE).read_text())
    assert m["rows"] == len(scores) and len(m["sha256"]) == 64
    for key in ("campaign", "model_version", "created_at", "expires_at", "tiers", "experiment", "version"):
        assert key in m
    loaded = BoostTable.load(tmp_path / "v1")
    pd.testing.assert_frame_equal(loaded.data, t.data.astype(loaded.data.dtypes.to_dict()))
    res = loaded.lookup(["u1", "u2", "stranger-1", "stranger-2"])
    assert res["known"].tolist() == [True, True, False, False]
    assert res["boost"].iloc[0] == t.data["boost"].iloc[1]
    b = bucket_of(["stranger-1", "stranger-2"], "acq", "s")
    assert res["bucket"].iloc[2:].tolist() == b.tolist()
    assert (res.loc[~res["known"] & (res["arm"] == "control"), "boost"] == 1.0).all()


def _corrupt(tmp_path, scores, how):
    d = tmp_path / how
    t = build_boost_table(scores, "camp", TIERS, EXP, expiry=dt.timedelta(hours=1))
    t.write(d)
    m = json.loads((d / MANIFEST_FILE).read_text())
    if how == "checksum":
        raw = bytearray((d / DATA_FILE).read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        (d / DATA_FILE).write_bytes(bytes(raw))
    elif how in ("columns", "duplicates"):
        df = t.data.drop(columns=["bucket"]) if how == "columns" else pd.concat([t.data, t.data.iloc[[3]]])
        df.to_parquet(d / DATA_FILE)
        m["sha256"] = __import__("hashlib").sha256((d / DATA_FILE).read_bytes()).hexdigest()
        m["rows"] = len(df)
    elif how == "expired":
        m["expires_at"] = "2020-01-01T00:00:00Z"
    elif how == "manifest":
        del m["sha256"]
    elif how == "boost":
        df = t.data.copy()
        df.loc[df["arm"] == "treatment", "boost"] = 9.0
        df.to_parquet(d / DATA_FILE)
        m["sha256"] = __import__("hashlib").sha256((d / DATA_FILE).read_bytes()).hexdigest()
    (d / MANIFEST_FILE).write_text(json.dumps(m))
    return d


@pytest.mark.parametrize("how,msg", [("checksum", "checksum mismatch"), ("columns", r"lacks column\(s\) \['bucket'\]"),
                                     ("duplicates", "duplicate"), ("expired", "expired at 2020"),
                                     ("manifest", r"lacks key\(s\) \['sha256'\]"),
                                     ("boost", r"outside \[floor, cap\]")])
def test_bad_tables_are_refused_with_a_clear_error(tmp_path, scores, how, msg):
    d = _corrupt(tmp_path, scores, how)
    with pytest.raises(BoostTableError, match=msg) as err:
        BoostTable.load(d)
    assert str(d) in str(err.value)


def test_export_csv_and_parquet(scores, tmp_path):
    t = build_boost_table(scores, "camp", TIERS, EXP, expiry=dt.timedelta(hours=1))
    t.write(tmp_path / "v")
    loaded = BoostTable.load(tmp_path / "v")  # Arrow-backed id column, as the CLI exports it
    for name, t in (("push.csv", t), ("push.parquet", loaded)):
        out = export_table(t, tmp_path / name, chunk_rows=7000, progress=False)
        df = pd.read_csv(out) if name.endswith("csv") else pq.read_table(out).to_pandas()
        assert tuple(df.columns) == EXPORT_COLUMNS and len(df) == len(scores)
        assert (df["table_version"] == t.version).all() and (df["layer"] == "acq").all()
        np.testing.assert_allclose(df["boost"], t.data["boost"])
        assert df["bucket"].tolist() == t.data["bucket"].tolist()
    with pytest.raises(ValueError, match="format"):
        export_table(t, tmp_path / "push.txt")


def test_cli_build_show_export(scores, tmp_path, capsys):
    scores.to_parquet(tmp_path / "scores.parquet")
    (tmp_path / "cfg.json").write_text(json.dumps({"tiers": TIERS.to_dict(), "experiment": {"layer": "L", "salt": "x"}}))
    out = tmp_path / "tables" / "camp" / "v7"
    assert main(["boosts", "build", "--scores", str(tmp_path / "scores.parquet"), "--campaign", "camp",
                 "--out", str(out), "--config", str(tmp_path / "cfg.json"), "--cap", "1.5",
                 "--treatment", "0-99", "--control", "100-999", "--version", "v7", "--expiry-hours", "2"]) == 0
    t = BoostTable.load(out)
    assert t.version == "v7" and t.manifest["tiers"]["tier_boosts"] == [1.0, 1.2, 1.5]
    assert t.experiment.layer == "L" and t.experiment.treatment == ((0, 99),)
    assert main(["boosts", "show", "--table", str(out)]) == 0
    assert main(["boosts", "export", "--table", str(out), "--out", str(tmp_path / "p.csv")]) == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == len(scores)
    capsys.readouterr()
    dup = pd.concat([scores, scores.iloc[[0]]])
    dup.to_parquet(tmp_path / "dup.parquet")
    assert main(["boosts", "build", "--scores", str(tmp_path / "dup.parquet"), "--campaign", "c",
                 "--out", str(tmp_path / "x")]) == 2
    assert "duplicate user id" in capsys.readouterr().err


def test_serving_frame_and_bucket_fn_match_lookup(scores):
    t = build_boost_table(scores.iloc[:2000], "camp", TIERS, EXP, expiry=dt.timedelta(hours=1))
    frame = t.serving_frame()
    assert tuple(frame.columns) == EXPORT_COLUMNS and len(frame) == 2000
    ids = pd.Series(["u1", "u2", "stranger"])
    bucket, arm = t.bucket_fn()(ids)
    res = t.lookup(ids)
    assert bucket.tolist() == res["bucket"].tolist() and arm.tolist() == res["arm"].tolist()
    assert frame.loc[1, "bucket"] == bucket[0] and frame.loc[1, "arm"] == arm[0]
