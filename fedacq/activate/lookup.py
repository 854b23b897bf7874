"""In-memory look-up of (boost, bucket, arm) for batches of user ids, built from a boost table.

Why sorted arrays and ``np.searchsorted`` rather than a dict: a bidding request carries ~100
ids and must be answered in a few milliseconds, and a new table version must be indexed
without stalling the service. The index (:func:`index_arrays`) is the table's user ids,
UTF-8, NUL-padded to a multiple of 8 bytes (``S<8k>`` numpy array), ordered by a seeded
64-bit hash of the id, with the sorted hashes and each id's boost and bucket beside them. A
look-up encodes the batch once, hashes it with a few vectorised word operations, runs one
binary search over 8-byte integers and confirms each hit by comparing the id: ~40 us of
search per 100 ids over 1 M users on a busy 2-core machine where searching the padded
strings themselves took ~160 us, and a per-id dict probe ~300 us (cache misses over
millions of keys). Building it uses Arrow kernels (sort, pad, take), which release the GIL,
and numpy, instead of millions of Python objects: a CPython dict of 1 M ids took 0.7 s
holding the GIL in stretches of up to 80 ms while it rehashed. Memory is the padded width +
8 + 6 bytes per user (~300 MB for 10 M ids of 16 bytes), not ~150 bytes per user. The
boost service builds it in a loader process and memory-maps it (:func:`write_index`,
:func:`read_index`).

Only ids missing from the table pay for hashing their bucket. The object is immutable once
built, so a service can build the next version off to the side and swap one reference
(see ``service.py``); readers holding the old one finish on it.

Ids are compared as bytes without trailing NULs; tables refuse ids that contain NUL.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedacq.activate.buckets import bucket_of
from fedacq.activate.table import BoostTable, ExperimentConfig, parse_time

_PAD_CHUNK = 2_000  # rows per GIL-holding numpy step of the non-ASCII padding path


@dataclass(frozen=True)
class LookupResult:
    boost: np.ndarray      # float32 multiplier per id
    bucket: np.ndarray     # int16 0..999 per id
    treatment: np.ndarray  # bool per id: True = treatment arm
    known: np.ndarray      # bool per id: True = the id is in the table


def _fixed_width(ids: pa.Array) -> np.ndarray:
    """``S<width>`` array of the ids, NUL-padded to the longest UTF-8 encoding."""
    width = max(int(pc.max(pc.binary_length(ids)).as_py() or 0), 1)
    n = len(ids)
    if pc.all(pc.string_is_ascii(ids)).as_py() is not False:
        # ASCII: characters are bytes, so Arrow's padding kernel yields exactly `width`
        # bytes per id, contiguous in one buffer: a zero-copy view.
        padded = pc.utf8_rpad(ids, width=width, padding="\0")
        padded = padded.combine_chunks() if isinstance(padded, pa.ChunkedArray) else padded
        offsets = np.frombuffer(padded.buffers()[1], dtype=np.int32)[padded.offset:padded.offset + n + 1]
        data = np.frombuffer(padded.buffers()[2], dtype=np.uint8)[offsets[0]:offsets[-1]]
        return data.view(f"S{width}").copy()
    # non-ASCII: scatter bytes into a zeroed matrix, in small steps that yield the GIL
    arr = ids.cast(pa.binary())
    arr = arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset:arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    out = np.zeros((n, width), dtype=np.uint8)
    for start in range(0, n, _PAD_CHUNK):
        o = offsets[start:start + _PAD_CHUNK + 1]
        lens = np.diff(o)
        rows = np.repeat(np.arange(start, start + len(lens)), lens)
        cols = np.arange(o[-1] - o[0]) - np.repeat(o[:-1] - o[0], lens)
        out[rows, cols] = data[o[0]:o[-1]]
        time.sleep(0)
    return out.view(f"S{width}").ravel()


#: multipliers of the 64-bit key hash (splitmix64 / MurmurHash3's finaliser constants).
_MUL = (np.uint64(0x9E3779B97F4A7C15), np.uint64(0xFF51AFD7ED558CCD), np.uint64(0xC4CEB9FE1A85EC53))
_HASH_TRIES = 8


def _hash_keys(keys: np.ndarray, seed: np.uint64) -> np.ndarray:
    """A 64-bit hash of each ``S<8k>`` key, vectorised over its 8-byte words (a few numpy ops per word)."""
    words = keys.view(np.uint64).reshape(len(keys), -1)
    h = np.full(len(keys), seed, dtype=np.uint64)
    s33 = np.uint64(33)
    for j in range(words.shape[1]):
        h ^= words[:, j]
        h *= _MUL[0]
        h ^= h >> s33
    h *= _MUL[1]
    h ^= h >> s33
    h *= _MUL[2]
    h ^= h >> s33
    return h


def index_arrays(table: BoostTable) -> dict[str, np.ndarray]:
    """The look-up index of ``table``: ids, boosts and buckets ordered by a 64-bit hash of the id.

    ``keys`` are the UTF-8 ids NUL-padded to a multiple of 8 bytes (``S<8k>``), ``hashes`` their
    hashes (sorted, all distinct: a collision between two ids of the table, ~n^2/2^65, draws a
    new random ``seed``), ``boost`` and ``bucket`` in the same order. A look-up hashes its ids,
    binary-searches ``hashes`` (8-byte integer compares, several times faster than comparing
    strings) and confirms each hit by comparing the id itself, so a query whose hash collides
    with a table id is still unknown. Duplicate ids raise.
    """
    data = table.data
    rows = len(data)
    if not rows:
        return {"keys": np.zeros(0, dtype="S8"), "hashes": np.zeros(0, dtype=np.uint64),
                "boost": np.zeros(0, dtype=np.float32), "bucket": np.zeros(0, dtype=np.int16),
                "seed": np.zeros(1, dtype=np.uint64)}
    ids = pa.Table.from_pandas(data[["user_id"]], preserve_index=False).column(0)
    ids = ids.combine_chunks().cast(pa.string())
    order = pc.sort_indices(ids)
    keys = _fixed_width(ids.take(order))
    if rows > 1 and (keys[1:] == keys[:-1]).any():
        raise ValueError(f"boost table {table.version}: duplicate user ids")
    keys = keys.astype(f"S{-(-keys.dtype.itemsize // 8) * 8}")
    for _ in range(_HASH_TRIES):
        seed = np.frombuffer(os.urandom(8), dtype=np.uint64)
        hashes = _hash_keys(keys, seed[0])
        by_hash = np.argsort(hashes, kind="stable")
        hashes = hashes[by_hash]
        if not (hashes[1:] == hashes[:-1]).any():
            break
    else:
        raise ValueError(f"boost table {table.version}: {_HASH_TRIES} key hashes in a row collided")
    pos = order.to_numpy()[by_hash]
    return {"keys": keys[by_hash], "hashes": hashes, "boost": data["boost"].to_numpy(dtype=np.float32)[pos],
            "bucket": data["bucket"].to_numpy(dtype=np.int16)[pos], "seed": seed}


class BoostLookup:
    """Answer look-ups for one table version. Unknown users get their bucket and the default
    boost if their bucket is in treatment, 1.0 if in control (control is never boosted).

    Built from a loaded table, or (:meth:`from_index`) from a manifest and the arrays of
    :func:`index_arrays` made elsewhere, e.g. in a loader process (``service.py``).
    """

    def __init__(self, table: BoostTable) -> None:
        self._init(table.manifest, index_arrays(table))

    @classmethod
    def from_index(cls, manifest: dict, arrays: dict[str, np.ndarray]) -> "BoostLookup":
        """The look-up for a table whose manifest and :func:`index_arrays` were computed by the caller."""
        rows = manifest["rows"]
        keys = arrays["keys"]
        if not (len(keys) == len(arrays["hashes"]) == len(arrays["boost"]) == len(arrays["bucket"]) == rows) \
                or keys.dtype.kind != "S" or keys.dtype.itemsize % 8 or arrays["seed"].shape != (1,):
            raise ValueError(f"boost table {manifest.get('version')!r}: index arrays do not match its manifest")
        obj = cls.__new__(cls)
        obj._init(manifest, arrays)
        return obj

    def _init(self, manifest: dict, arrays: dict[str, np.ndarray]) -> None:
        exp = ExperimentConfig.from_dict(manifest["experiment"])
        self.version: str = manifest["version"]
        self.campaign: str = manifest["campaign"]
        self.layer: str = exp.layer
        self.expires_at: dt.datetime = parse_time(manifest["expires_at"])
        self._expires_ts = self.expires_at.timestamp()
        self.created_at: dt.datetime = parse_time(manifest["created_at"])
        self._salt = exp.salt
        self._treat_mask = exp.treatment_mask()
        self._default = np.float32(manifest["default_boost"])
        self._keys, self._hashes = arrays["keys"], arrays["hashes"]
        self._boost, self._bucket = arrays["boost"], arrays["bucket"]
        self._seed = np.uint64(arrays["seed"][0])
        self.rows = len(self._keys)
        self._width = self._keys.dtype.itemsize

    def lookup(self, user_ids: list[str]) -> LookupResult:
        n = len(user_ids)
        encoded = [u.encode() for u in user_ids]
        if self.rows:
            query = np.array(encoded, dtype=self._keys.dtype)  # longer ids are truncated here...
            fits = np.fromiter(map(len, encoded), dtype=np.int64, count=n) <= self._width
            pos = np.minimum(np.searchsorted(self._hashes, _hash_keys(query, self._seed)), self.rows - 1)
            known = (self._keys[pos] == query) & fits  # ...so they can never match
            bucket = np.where(known, self._bucket[pos], np.int16(0))
            boost = np.where(known, self._boost[pos], np.float32(1.0))
        else:
            known = np.zeros(n, dtype=bool)
            bucket = np.zeros(n, dtype=np.int16)
            boost = np.ones(n, dtype=np.float32)
        if not known.all():
            unknown = np.flatnonzero(~known)
            ub = bucket_of([user_ids[i] for i in unknown], self.layer, self._salt)
            bucket[unknown] = ub
            boost[unknown] = np.where(self._treat_mask[ub], self._default, np.float32(1.0))
        return LookupResult(boost=boost, bucket=bucket, treatment=self._treat_mask[bucket], known=known)

    def expired(self, now: float | None = None) -> bool:
        """Past the table's expiry (``now`` in epoch seconds; a float compare per request)."""
        return (time.time() if now is None else now) >= self._expires_ts


_INDEX_FILES = ("keys", "hashes", "boost", "bucket", "seed")


def write_index(table_dir: str, out_dir: str) -> dict:
    """Load and validate the table in ``table_dir`` and write its :func:`index_arrays` into
    ``out_dir`` (``.npy`` files); returns its manifest. Runs in the service's loader process."""
    table = BoostTable.load(table_dir)
    arrays = index_arrays(table)
    for name in _INDEX_FILES:
        np.save(Path(out_dir) / f"{name}.npy", arrays[name], allow_pickle=False)
    return table.manifest


def read_index(manifest: dict, out_dir: str) -> BoostLookup:
    """The look-up over the arrays :func:`write_index` left in ``out_dir``, memory-mapped, not copied:
    the serving process does no work proportional to the table (the caller may then delete the files)."""
    arrays = {name: np.load(Path(out_dir) / f"{name}.npy", mmap_mode="r", allow_pickle=False).view(np.ndarray)
              for name in _INDEX_FILES}
    return BoostLookup.from_index(manifest, arrays)
