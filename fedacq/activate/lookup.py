"""In-memory look-up of (boost, bucket, arm) for batches of user ids, built from a boost table.

Why a sorted array of fixed-width byte strings and ``np.searchsorted`` rather than a dict:
a bidding request carries ~100 ids and must be answered in a few milliseconds, and a new
table version must be indexed inside the serving process without stalling it. The index is
the table's user ids, UTF-8, NUL-padded to the longest id, sorted (``S<width>`` numpy
array) plus the row of each. A look-up encodes the batch once and runs one vectorised
binary search: 70-100 us per 100 ids (10 % unknown; busy 2-core machine), against ~300 us
for per-id dict probes (cache misses over millions of keys). Building it uses Arrow kernels (sort, pad, take), which release
the GIL, instead of millions of Python objects: a CPython dict of 1 M ids took 0.7 s
holding the GIL in stretches of up to 80 ms while it rehashed, which is what request
threads of a serving process would have waited. Memory is ``width`` bytes + 8 per user
(~240 MB for 10 M ids of 16 bytes), not ~150 bytes per user.

Only ids missing from the table pay for hashing their bucket. The object is immutable once
built, so a service can build the next version off to the side and swap one reference
(see ``service.py``); readers holding the old one finish on it.

Ids are compared as bytes without trailing NULs; tables refuse ids that contain NUL.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fedacq.activate.buckets import bucket_of
from fedacq.activate.table import BoostTable, parse_time

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


class BoostLookup:
    """Answer look-ups for one table version. Unknown users get their bucket and the default
    boost if their bucket is in treatment, 1.0 if in control (control is never boosted)."""

    def __init__(self, table: BoostTable) -> None:
        exp = table.experiment
        self.version: str = table.version
        self.campaign: str = table.campaign
        self.layer: str = exp.layer
        self.expires_at: dt.datetime = table.expires_at
        self._expires_ts = self.expires_at.timestamp()
        self.created_at: dt.datetime = parse_time(table.manifest["created_at"])
        self._salt = exp.salt
        self._treat_mask = exp.treatment_mask()
        self._default = np.float32(table.manifest["default_boost"])
        data = table.data
        self.rows = len(data)
        ids = pa.Table.from_pandas(data[["user_id"]], preserve_index=False).column(0)
        ids = ids.combine_chunks().cast(pa.string()) if self.rows else pa.array([], pa.string())
        order = pc.sort_indices(ids)
        self._keys = _fixed_width(ids.take(order)) if self.rows else np.zeros(0, dtype="S1")
        self._width = self._keys.dtype.itemsize
        self._row = order.to_numpy().astype(np.int64)
        if self.rows > 1 and (self._keys[1:] == self._keys[:-1]).any():
            raise ValueError(f"boost table {self.version}: duplicate user ids")
        self._boost = data["boost"].to_numpy(dtype=np.float32)
        self._bucket = data["bucket"].to_numpy(dtype=np.int16)

    def lookup(self, user_ids: list[str]) -> LookupResult:
        n = len(user_ids)
        encoded = [u.encode() for u in user_ids]
        if self.rows:
            query = np.array(encoded, dtype=self._keys.dtype)  # longer ids are truncated here...
            fits = np.fromiter(map(len, encoded), dtype=np.int64, count=n) <= self._width
            pos = np.minimum(np.searchsorted(self._keys, query), self.rows - 1)
            known = (self._keys[pos] == query) & fits  # ...so they can never match
            rows = self._row[pos]
            bucket = np.where(known, self._bucket[rows], np.int16(0))
            boost = np.where(known, self._boost[rows], np.float32(1.0))
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
