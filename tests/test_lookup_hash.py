"""BoostLookup's hash index: hashes only place ids, so collisions, NULs, long ids and empty
batches or tables can never turn an unknown id into a known one (checked against a dict)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

import fedacq.activate.lookup as lookup_module
from fedacq.activate.buckets import bucket_of
from fedacq.activate.lookup import BoostLookup
from fedacq.activate.table import ExperimentConfig, build_boost_table

EXP = ExperimentConfig(layer="L", salt="k")


def _table(ids: list[str]):
    rng = np.random.default_rng(5)
    return build_boost_table(pd.DataFrame({"user_id": ids, "score": rng.random(len(ids))}), "c",
                             experiment=EXP, default_boost=1.0, expiry=dt.timedelta(hours=1))


def _check(lookup: BoostLookup, table, queries: list[str]) -> None:
    res = lookup.lookup(queries)
    row = {u: i for i, u in enumerate(table.data["user_id"].astype(str))}
    np.testing.assert_array_equal(res.known, [q in row for q in queries])
    np.testing.assert_array_equal(res.bucket, bucket_of(queries, "L", "k"))
    want = [table.data["boost"].iloc[row[q]] if q in row else 1.0 for q in queries]
    np.testing.assert_array_equal(res.boost, np.array(want, dtype=np.float32))
    np.testing.assert_array_equal(res.treatment, EXP.treatment_mask()[res.bucket])


IDS = [f"id-{i}" for i in range(300)] + ["a", "ab", "abcdefgh", "abcdefghi", "ü-1"]
QUERIES = ["id-0", "id-299", "id-300", "a", "ab", "abc", "abcdefgh", "abcdefghi", "abcdefghij", "", "ü-1",
           "ü", "a\x00", "id-1\x00", "x" * 40]


@pytest.mark.parametrize("weak", ["every id collides", "eight hash values"])
def test_colliding_hashes_are_told_apart_by_the_ids(monkeypatch, weak):
    real = lookup_module._hash_words
    if weak == "every id collides":
        monkeypatch.setattr(lookup_module, "_hash_words", lambda keys, m: np.zeros(len(keys), dtype=np.uint64))
    else:
        monkeypatch.setattr(lookup_module, "_hash_words", lambda keys, m: real(keys, m) % np.uint64(8))
    t = _table(IDS)
    _check(BoostLookup(t), t, QUERIES)


def test_each_index_draws_its_own_hash_key_so_colliding_ids_cannot_be_chosen_in_advance():
    t = _table(IDS)
    first, second = BoostLookup(t), BoostLookup(t)
    assert not np.array_equal(first._muls, second._muls)  # 2^-64 per word of being equal by chance
    assert np.all(first._muls & np.uint64(1) == 1)  # odd: each multiplier is invertible mod 2^64
    _check(first, t, QUERIES)
    _check(second, t, QUERIES)


def test_duplicates_are_refused_even_when_their_hashes_collide_with_others(monkeypatch):
    monkeypatch.setattr(lookup_module, "_hash_words", lambda keys, m: np.zeros(len(keys), dtype=np.uint64))
    t = _table(["a", "b", "c"])
    t.data.loc[2, "user_id"] = "a"  # built by something other than build_boost_table
    with pytest.raises(ValueError, match="duplicate"):
        BoostLookup(t)


def test_nul_long_and_empty_queries_are_unknown_and_empty_batches_and_tables_answer():
    t = _table(IDS)
    lk = BoostLookup(t)
    _check(lk, t, QUERIES)
    assert len(lk.lookup([]).known) == 0
    empty = _table(["z"])
    empty.data = empty.data.iloc[:0]
    _check(BoostLookup(empty), empty, QUERIES)
