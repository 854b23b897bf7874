"""What makes PSI fit 10M x 10M in memory: packed ids, chunked preparation, 8-byte-key matching.

Each compact path is checked against the plain one it replaces (Python lists and sets,
32-byte void intersection), including a peer whose points share 8-byte keys with ours.
"""

import pickle

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from fedacq.psi import ecdh_psi, ids
from fedacq.psi.ids import IdArray, normalize_value, prepare_ids

VALUES = [b"ab", b"", b"cde", "\u00e9t\u00e9".encode(), b"z" * 40]


def test_id_array_behaves_like_a_list_of_bytes():
    arr = IdArray.from_bytes(VALUES)
    assert list(arr) == VALUES and len(arr) == 5 and arr[-1] == VALUES[-1]
    assert list(arr[1:4]) == VALUES[1:4] and list(arr[::2]) == VALUES[::2]
    assert list(arr.take(np.array([4, 0, 0]))) == [VALUES[4], VALUES[0], VALUES[0]]
    assert list(pickle.loads(pickle.dumps(arr[2:]))) == VALUES[2:]
    assert list(IdArray.concat([arr[:2], arr[3:]])) == VALUES[:2] + VALUES[3:]
    sliced = pa.array([v.decode() for v in VALUES], type=pa.large_string()).slice(1, 3)
    assert list(IdArray.from_arrow(sliced)) == VALUES[1:4]
    assert len(IdArray.concat([])) == 0 and list(IdArray.from_bytes([])) == []
    with pytest.raises(ValueError, match="offsets"):
        IdArray(np.array([0, 3, 2]), np.zeros(2, dtype=np.uint8))


def _reference(values, kind, policy):
    """prepare_ids as it was: Python strings, pandas duplicated()."""
    norm = pd.Series([normalize_value(v, kind) for v in values], dtype=object)
    present = norm.notna().to_numpy()
    dup = np.zeros(len(norm), dtype=bool)
    dup[present] = norm[present].duplicated(keep=False if policy == "drop" else "first").to_numpy()
    keep = present & ~dup
    return np.flatnonzero(keep).tolist(), [v.encode() for v in norm[keep]], int(dup.sum())


@pytest.mark.parametrize("policy", ["first", "drop"])
@pytest.mark.parametrize("arrow", [False, True])
def test_chunked_preparation_equals_the_plain_one(monkeypatch, policy, arrow):
    monkeypatch.setattr(ids, "NORMALIZE_ROWS", 3)  # duplicates and gaps across chunk edges
    values = ["a", "A ", None, "b", "\u00c5x", "\u00e5x", " ", "c", "b", "d", "a", "e", None]
    column = pd.Series(values, dtype="string[pyarrow]" if arrow else object)
    col = prepare_ids(pd.DataFrame({"uid": column}), ["uid"], duplicates=policy).columns[0]
    rows, encoded, n_dup = _reference(values, "text", policy)
    assert col.rows.tolist() == rows and list(col.values) == encoded and col.duplicates == n_dup
    assert col.missing == 3


def test_duplicate_error_names_a_value_from_a_later_chunk(monkeypatch):
    monkeypatch.setattr(ids, "NORMALIZE_ROWS", 2)
    with pytest.raises(ValueError, match="has 1 duplicate id\\(s\\), e.g. 'x'"):
        prepare_ids(pd.DataFrame({"uid": ["w", "x", "y", "X"]}), ["uid"], duplicates="error")


def _void_intersection(a, b):
    va, vb = (np.ascontiguousarray(p).view("V32").ravel() for p in (a, b))
    _, ia, ib = np.intersect1d(va, vb, return_indices=True)
    return ia.tolist(), ib.tolist()


def test_key_matching_equals_the_32_byte_intersection():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (3000, 32), dtype=np.uint8)
    b = np.concatenate([a[rng.permutation(3000)[:1000]], rng.integers(0, 256, (2000, 32), dtype=np.uint8)])
    b = b[rng.permutation(len(b))]
    ia, ib = ecdh_psi._intersect_points(a, b)
    assert (ia.tolist(), ib.tolist()) == _void_intersection(a, b) and len(ia) == 1000


def test_a_peer_point_sharing_our_8_byte_key_is_not_a_match():
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    forged = a[:200].copy()
    forged[:, 8:] ^= 1  # same sort key, different point
    b = np.concatenate([forged, a[300:400]])
    ia, ib = ecdh_psi._intersect_points(a, b)
    assert sorted(ia.tolist()) == list(range(300, 400))
    assert (ia.tolist(), ib.tolist()) == _void_intersection(a, b)


def test_repeated_keys_on_one_side_fall_back_to_32_bytes():
    rng = np.random.default_rng(2)
    a = rng.integers(0, 256, (400, 32), dtype=np.uint8)
    a[1, :8] = a[0, :8]  # two of our points share a key: the key alone cannot pair them
    b = np.concatenate([a[[1, 5, 9]], rng.integers(0, 256, (50, 32), dtype=np.uint8)])
    ia, ib = ecdh_psi._intersect_points(a, b)
    assert sorted(ia.tolist()) == [1, 5, 9]
    assert (ia.tolist(), ib.tolist()) == _void_intersection(a, b)
    empty = np.empty((0, 32), dtype=np.uint8)
    assert all(len(x) == 0 for x in ecdh_psi._intersect_points(a, empty))


def test_a_peer_announcing_more_points_than_memory_holds_is_refused_before_any_receive():
    from fedacq.link.memory import memory_pair
    link, _ = memory_pair("lender", "platform")
    with pytest.raises(ecdh_psi.PsiError, match=r"announced \[4611686018427387904\] points"):
        ecdh_psi._recv_points(link, "platform_blinded", [2**62], with_tokens=True)
