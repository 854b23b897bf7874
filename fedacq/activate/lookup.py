"""In-memory look-up of (boost, bucket, arm) for batches of user ids, built from a boost table.

Why dicts from user id to row plus numpy columns: a bidding request carries ~100 ids and
must be answered in a few milliseconds; a dict probe costs well under a microsecond per id
(mostly a cache miss), the numpy gathers are one call per batch, and only ids missing from
the table pay for hashing their bucket.
The object is immutable once built, so a service can build the next version off to the side
and swap one reference (see ``service.py``); readers holding the old one finish on it.
Memory is about 150 bytes per user (CPython str + dict slot + row int), i.e. ~1.5 GB for 10 M users,
twice that while a new version is being built next to the old one.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass

import numpy as np

from fedacq.activate.buckets import bucket_of
from fedacq.activate.table import BoostTable, parse_time


_CHUNK = 5_000
_SHARDS = 256
_SHARD_MASK = _SHARDS - 1


@dataclass(frozen=True)
class LookupResult:
    boost: np.ndarray      # float32 multiplier per id
    bucket: np.ndarray     # int16 0..999 per id
    treatment: np.ndarray  # bool per id: True = treatment arm
    known: np.ndarray      # bool per id: True = the id is in the table


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
        # user id -> row, in _SHARDS dicts picked by the id's (cached) str hash. One dict of
        # millions of ids would be rehashed in one C call each time it grows (~80 ms per
        # million ids holding the GIL, stalling every request thread of a serving
        # process); shards stay small, and the build loop yields the GIL after every chunk.
        shards: list[dict[str, int]] = [{} for _ in range(_SHARDS)]
        ids = data["user_id"]
        for start in range(0, len(data), _CHUNK):
            for row, uid in enumerate(ids.iloc[start:start + _CHUNK].tolist(), start):
                shards[hash(uid) & _SHARD_MASK][uid] = row
            time.sleep(0)  # hand the GIL to waiting request threads after each ~1 ms chunk
        if sum(len(s) for s in shards) != len(data):
            raise ValueError(f"boost table {self.version}: duplicate user ids")
        self._shards = shards
        self._boost = data["boost"].to_numpy(dtype=np.float32)
        self._bucket = data["bucket"].to_numpy(dtype=np.int16)
        self.rows = len(data)

    def lookup(self, user_ids: list[str]) -> LookupResult:
        shards = self._shards
        rows = np.array([shards[hash(u) & _SHARD_MASK].get(u, -1) for u in user_ids], dtype=np.int64)
        known = rows >= 0
        safe = np.where(known, rows, 0)
        bucket = self._bucket[safe] if self.rows else np.zeros(len(rows), dtype=np.int16)
        boost = self._boost[safe] if self.rows else np.ones(len(rows), dtype=np.float32)
        if not known.all():
            unknown = np.flatnonzero(~known)
            ub = bucket_of([user_ids[i] for i in unknown], self.layer, self._salt)
            bucket[unknown] = ub
            boost[unknown] = np.where(self._treat_mask[ub], self._default, np.float32(1.0))
        return LookupResult(boost=boost, bucket=bucket, treatment=self._treat_mask[bucket], known=known)

    def expired(self, now: float | None = None) -> bool:
        """Past the table's expiry (``now`` in epoch seconds; a float compare per request)."""
        return (time.time() if now is None else now) >= self._expires_ts
