"""Bad input to ``fedacq run``: a clear error naming party, file, column and row, before any work."""

import json

import numpy as np
import pandas as pd
import pytest

from fedacq.learn import run as run_mod
from fedacq.learn.run_config import RunConfig
from fedacq.learn.run_report import FAILED_FILE


def write(tmp_path, n_lender=200, n_platform=300, n_common=150, seed=0):
    rng = np.random.default_rng(seed)
    ids = [f"u{i}" for i in range(n_lender + n_platform - n_common)]
    lender = pd.DataFrame({"id": ids[:n_lender], "y": rng.integers(0, 2, n_lender), "a": rng.normal(size=n_lender)})
    platform = pd.DataFrame({"id": ids[n_lender - n_common:], "b": rng.normal(size=n_platform)})
    lender.to_csv(tmp_path / "lender.csv", index=False)
    platform.to_csv(tmp_path / "platform.csv", index=False)
    return tmp_path / "lender.csv", tmp_path / "platform.csv"


def config(lender, platform, out, **kw):
    return RunConfig(lender, platform, "id", "y", out, progress=False, key_bits=512,
                             insecure_test_key=True, params={"n_estimators": 1}, **kw)  # small key: speed only


def test_header_only_and_empty_files(tmp_path):
    lender, platform = write(tmp_path)
    (tmp_path / "header.csv").write_text("id,b\n")
    with pytest.raises(ValueError, match=r"platform's file .*header.csv: no rows, only a header"):
        run_mod.run(config(lender, tmp_path / "header.csv", tmp_path / "out"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(ValueError, match=r"lender's file .*empty.csv: the file is empty"):
        run_mod.run(config(tmp_path / "empty.csv", platform, tmp_path / "out"))
    assert not (tmp_path / "out").exists()  # refused before any work: nothing written


def test_an_infinite_value_names_party_file_column_and_row(tmp_path):
    lender, platform = write(tmp_path)
    frame = pd.read_csv(platform)
    frame.loc[41, "b"] = np.inf
    frame.to_csv(platform, index=False)
    with pytest.raises(ValueError) as err:
        run_mod.run(config(lender, platform, tmp_path / "out"))
    assert "platform's file" in str(err.value) and "platform.csv" in str(err.value)
    assert "'b' holds an infinite value (row 43 of the file" in str(err.value)
    assert not (tmp_path / "out").exists()


def test_a_file_smaller_than_the_minimum_intersection_is_refused_before_psi(tmp_path):
    lender, platform = write(tmp_path, n_lender=1, n_common=1)
    with pytest.raises(ValueError, match=r"lender's file .*: 1 rows, fewer than the minimum intersection of 100"):
        run_mod.run(config(lender, platform, tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_an_intersection_too_small_to_evaluate_stops_before_training(tmp_path, monkeypatch):
    lender, platform = write(tmp_path, n_common=40)
    trained = []
    from fedacq.learn import secureboost_roles

    monkeypatch.setattr(secureboost_roles, "lender_role", lambda *a: trained.append(1))
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="validation split of the intersection has 8 rows"):
        run_mod.run(config(lender, platform, out, min_intersection=40))
    assert trained == []
    failed = json.loads((out / FAILED_FILE).read_text())
    assert "8 rows" in failed["error"] and not (out / "metrics.json").exists()
