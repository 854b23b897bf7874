"""BoostLookup: the sorted fixed-width index agrees with a plain dict on awkward ids."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from fedacq.activate.buckets import bucket_of
from fedacq.activate.lookup import BoostLookup
from fedacq.activate.table import ExperimentConfig, build_boost_table

EXP = ExperimentConfig(layer="L", salt="k")


def _check_against_dict(table_ids: list[str], queries: list[str]) -> None:
    rng = np.random.default_rng(7)
    t = build_boost_table(pd.DataFrame({"user_id": table_ids, "score": rng.random(len(table_ids))}),
                          "c", experiment=EXP, default_boost=1.0, expiry=dt.timedelta(hours=1))
    res = BoostLookup(t).lookup(queries)
    row = {u: i for i, u in enumerate(table_ids)}
    want_known = np.array([q in row for q in queries])
    np.testing.assert_array_equal(res.known, want_known)
    np.testing.assert_array_equal(res.bucket, bucket_of(queries, "L", "k"))
    want_boost = np.array([t.data["boost"].iloc[row[q]] if q in row else 1.0 for q in queries], dtype=np.float32)
    np.testing.assert_array_equal(res.boost, want_boost)


@pytest.mark.parametrize("ascii_only", [True, False])
def test_prefixes_lengths_and_unicode(ascii_only):
    ids = ["u1", "u10", "u100", "a", "zz", "U1", "u1 ", "user-0042"] + [f"x{i}" for i in range(500)]
    if not ascii_only:
        ids += ["用户-1", "usér", "ü"]
    queries = ["u1", "u10", "u1000", "u", "", "A", "u1 ", "user-00420", "zz", "zzz", "x499", "x500",
               "a-very-long-id-that-is-longer-than-every-table-id", "用户-1", "usér", "use", "ü", "üü"]
    _check_against_dict(ids, queries)


def test_random_ids_against_dict():
    rng = np.random.default_rng(3)
    ids = [f"{v:x}" for v in rng.integers(0, 1 << 48, size=20_000)]
    ids = list(dict.fromkeys(ids))
    queries = [ids[i] for i in rng.integers(0, len(ids), 300)] + [f"{v:x}" for v in rng.integers(0, 1 << 48, 100)]
    _check_against_dict(ids, queries)


def test_nul_in_ids_refused(tmp_path):
    from fedacq.activate.table import BoostTable, BoostTableError

    frame = pd.DataFrame({"user_id": ["a\x00", "b"], "score": [0.1, 0.2]})
    with pytest.raises(ValueError, match="NUL"):
        build_boost_table(frame, "c", experiment=EXP)
    t = build_boost_table(frame.assign(user_id=["a", "b"]), "c", experiment=EXP, expiry=dt.timedelta(hours=1))
    t.data.loc[0, "user_id"] = "a\x00"  # written by something other than build_boost_table
    t.write(tmp_path / "t")
    with pytest.raises(BoostTableError, match="NUL"):
        BoostTable.load(tmp_path / "t")
