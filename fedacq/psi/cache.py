"""Unbalanced PSI: the platform's blinded set, computed once and kept up to date.

The platform's user base is 10-100x the lender's, and blinding it is the expensive
part of PSI. :class:`PlatformCache` blinds every platform id once with a long-lived
platform key ``b`` and a cache salt, and stores on the platform's disk:

* ``meta.json`` — key fingerprint, salt, columns, kinds, duplicate policy, sizes,
  creation time, the digest of the table it serves, its increments and their set digests;
* ``key.bin`` — the platform's secret scalar (file mode 0600; never sent);
* ``points_<c>.npy`` / ``tokens_<c>.npy`` — ``H(y)^b`` per id column sorted by *token*
  (a random relabelling of platform rows, so the lender can tell that two columns'
  points belong to one row without learning the row);
* ``ids_<c>_offsets.npy`` / ``ids_<c>_data.npy`` — the normalised id each point blinds
  (the platform's own data, never sent: it lets an update find which ids are new);
* ``rows_by_token.npy`` — token -> platform row number, ``-1`` for a token whose row
  left (never sent); ``row_keys.npy`` — per token, a 64-bit hash of the row's raw id
  values, so a row that stays keeps its token across updates;
* ``delta_<i>.npz`` — the (column, token) entries that update ``i`` removed and added.

**Updating in place** (:meth:`PlatformCache.update`): the platform's table changes a
little every day (arrivals, churn). The update keeps ``b``, the salt and the tokens of
rows that stay, reuses the point of every id already blinded, blinds only the ids that
are new to a column and gives new rows fresh tokens; the set it serves is exactly what
:meth:`build` with the same key would give over the new table, up to the token labels.
The lender, keeping its copy from earlier jobs, then needs only the entries that
changed (:meth:`delta_since`).

**Why updates are bounded** (:meth:`PlatformCache.serve`): the tokens and ``H(y)^b``
points live as long as ``b``. Across jobs the lender sees which tokens disappear and
which appear, i.e. how many of the platform's users came and went each day, and can
follow a user's token from job to job. A full rebuild (fresh key, salt and tokens:
:meth:`rotate`) cuts that thread; it happens when the operator asks for it, when the
job does not ask for an incremental run, or when the cache is older than
``max_age_days`` or has had ``max_increments`` updates — this node's policy, not the
lender's.

Every write goes to a sibling folder first and is swapped in by renames, so a crash
mid-update leaves the old cache usable (:meth:`load` finishes an interrupted swap).
Files are plain ``.npy``/``.npz`` arrays loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc
from tqdm import tqdm

from fedacq import compute
from fedacq.crypto import dp_noise
from fedacq.crypto.ecdh import POINT_BYTES, BlindingKey
from fedacq.node.policy import Policy
from fedacq.psi.ids import IdArray, PreparedIds, prepare_ids

CHUNK_IDS = 65536
#: cache format; a cache written by another format is rebuilt rather than read.
CACHE_FORMAT = 2


def column_domain(index: int, kind: str) -> bytes:
    """Domain tag of the ``index``-th id column (priority order) of kind ``kind``."""
    return f"fedacq/psi/col{index}/{kind}".encode()


def table_digest(prepared: PreparedIds, duplicates: str) -> str:
    """SHA-256 over exactly what a cache serves of a table: per column its kind, and the
    (row, normalised id) pairs kept by the duplicate policy, in row order."""
    h = hashlib.sha256(f"fedacq/psi/table/v1/{prepared.n_rows}/{duplicates}".encode())
    for col in prepared.columns:
        h.update(f"|{col.column}|{col.kind}|{len(col.rows)}|".encode())
        for arr in (col.rows.astype("<i8"), col.values.offsets.astype("<i8") - col.values.offsets[0],
                    col.values.data[col.values.offsets[0]:col.values.offsets[-1]]):
            h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def set_digest(points: list[np.ndarray], tokens: list[np.ndarray]) -> str:
    """SHA-256 over a platform set (per column: tokens ascending and their points).

    Both parties compute it over their copy, so the lender can tell that the copy it
    patched with a delta is the platform's set, byte for byte."""
    h = hashlib.sha256(b"fedacq/psi/set/v1")
    for c, (pts, toks) in enumerate(zip(points, tokens)):
        order = np.argsort(toks, kind="stable")
        h.update(f"|{c}|{len(toks)}|".encode())
        h.update(np.ascontiguousarray(toks[order].astype("<i8")).tobytes())
        h.update(np.ascontiguousarray(pts[order]).tobytes())
    return h.hexdigest()


def row_keys(table: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """A 64-bit hash of each row's raw id values: the same row keeps its token across updates.

    A collision only costs a token change or a resent entry (the set is always rebuilt
    from the ids themselves), never a wrong result."""
    return pd.util.hash_pandas_object(table[columns], index=False).to_numpy().astype(np.uint64)


def _occurrence(keys: np.ndarray) -> np.ndarray:
    """For each key, how many equal keys come before it (0 for the first): pairs repeats in order."""
    order = np.argsort(keys, kind="stable")
    s = keys[order]
    start = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1] if len(s) else np.empty(0, dtype=np.int64)
    first = np.repeat(start, np.diff(np.r_[start, len(s)]))
    out = np.empty(len(keys), dtype=np.int64)
    out[order] = np.arange(len(s)) - first
    return out


def _entries(tokens: list[np.ndarray]) -> np.ndarray:
    """The (column, token) entries of a set as one int64 each: ``token * n_columns + column``."""
    n = len(tokens)
    return np.concatenate([t.astype(np.int64) * n + c for c, t in enumerate(tokens)]) if n else \
        np.empty(0, dtype=np.int64)


@dataclass
class PlatformCache:
    directory: Path
    key: BlindingKey
    salt: bytes
    columns: list[str]
    kinds: list[str]
    n_rows: int
    points: list[np.ndarray]
    tokens: list[np.ndarray]
    rows_by_token: np.ndarray
    created: float
    duplicates: str = "first"
    ids: list[IdArray] = field(default_factory=list)
    row_keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.uint64))
    table_digest: str = ""
    #: ``[{"increment": i, "set_digest": d}, ...]``, increment 0 being the build.
    log: list[dict] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    @property
    def increments(self) -> int:
        return len(self.log) - 1

    @property
    def set_digest(self) -> str:
        return self.log[-1]["set_digest"]

    @classmethod
    def build(cls, directory: str | Path, table: pd.DataFrame, id_columns: list[str], *,
              kinds: dict[str, str] | None = None, duplicates: str = "first",
              key: BlindingKey | None = None, salt: bytes | None = None,
              workers: int | None = None, engine: compute.Engine | None = None,
              progress: bool = False, prepared: PreparedIds | None = None) -> "PlatformCache":
        """Blind every id of ``table`` once and write the cache to ``directory``.

        Blinding runs on ``engine`` (default: the party's active engine, or a local one
        with ``workers`` processes): the whole user base, so this is where a cluster pays.
        """
        engine = compute.choose(engine, workers)
        directory = Path(directory)
        key = key or BlindingKey.generate()
        salt = salt or os.urandom(32)
        prepared = prepared or prepare_ids(table, id_columns, kinds=kinds, duplicates=duplicates,
                                           source="platform table")
        rows_by_token = dp_noise.permutation(len(table))
        token_of_row = np.empty_like(rows_by_token)
        token_of_row[rows_by_token] = np.arange(len(table), dtype=np.int64)
        cache = cls(directory, key, salt, list(id_columns), [c.kind for c in prepared.columns],
                    len(table), [], [], rows_by_token, time.time(), duplicates,
                    row_keys=row_keys(table, list(id_columns))[rows_by_token],
                    table_digest=table_digest(prepared, duplicates))
        cache._fill(prepared, token_of_row, engine, progress)
        cache.log = [{"increment": 0, "set_digest": set_digest(cache.points, cache.tokens)}]
        cache.save()
        return cache

    def _fill(self, prepared: PreparedIds, token_of_row: np.ndarray, engine: compute.Engine,
              progress: bool, old: "PlatformCache | None" = None) -> int:
        """Set points/tokens/ids from ``prepared``, reusing ``old``'s point of every id it has.

        Returns how many ids were blinded."""
        todo = []
        for c, col in enumerate(prepared.columns):
            toks = token_of_row[col.rows]
            order = np.argsort(toks, kind="stable")
            values = col.values.take(order)
            out = np.empty((len(values), POINT_BYTES), dtype=np.uint8)
            new = np.arange(len(values))
            if old is not None and len(values) and len(old.ids[c]):
                found = pc.index_in(values.to_arrow(), value_set=old.ids[c].to_arrow())
                hit = found.is_valid().to_numpy(zero_copy_only=False)
                out[hit] = old.points[c][found.drop_null().to_numpy().astype(np.int64)]
                new = np.flatnonzero(~hit)
            todo.append((c, col.kind, values, out, new))
            self.points.append(out)
            self.tokens.append(toks[order])
            self.ids.append(values)
        total = sum(len(t[4]) for t in todo)
        bar = tqdm(total=total, desc="psi cache: blind platform ids", unit="id", disable=not progress)
        for c, kind, values, out, new in todo:
            for start in range(0, len(new), CHUNK_IDS):
                idx = new[start:start + CHUNK_IDS]
                out[idx] = self._blind(engine, values.take(idx), column_domain(c, kind))
                bar.update(len(idx))
        bar.close()
        return total

    def _blind(self, engine: compute.Engine, values: IdArray, domain: bytes) -> np.ndarray:
        return engine.blind_ids(self.key, values, self.salt, domain)

    def update(self, table: pd.DataFrame, *, prepared: PreparedIds | None = None,
               workers: int | None = None, engine: compute.Engine | None = None,
               progress: bool = False) -> int:
        """Make this cache serve ``table`` under the same key and salt; returns the ids blinded.

        Rows whose raw id values are unchanged keep their tokens (repeats paired in order),
        new rows get fresh tokens (never used before in this generation, in random order),
        and only ids new to a column are blinded. The entries removed and added are logged
        as increment ``i`` with the new set digest, and the whole cache is swapped in on
        disk at once."""
        engine = compute.choose(engine, workers)
        prepared = prepared or prepare_ids(table, self.columns, kinds=dict(zip(self.columns, self.kinds)),
                                           duplicates=self.duplicates, source="platform table")
        if [c.kind for c in prepared.columns] != self.kinds:
            raise ValueError(f"PSI cache {self.directory}: id kinds changed; rebuild it")
        keys = row_keys(table, self.columns)
        live = np.flatnonzero(self.rows_by_token >= 0)
        old = pd.DataFrame({"key": self.row_keys[live], "n": _occurrence(self.row_keys[live]), "token": live})
        new = pd.DataFrame({"key": keys, "n": _occurrence(keys), "row": np.arange(len(keys))})
        kept = new.merge(old, on=["key", "n"], how="inner")
        token_of_row = np.full(len(keys), -1, dtype=np.int64)
        token_of_row[kept["row"].to_numpy()] = kept["token"].to_numpy()
        fresh = np.flatnonzero(token_of_row < 0)
        next_token = len(self.rows_by_token)
        token_of_row[fresh] = next_token + dp_noise.permutation(len(fresh))
        rows_by_token = np.full(next_token + len(fresh), -1, dtype=np.int64)
        rows_by_token[token_of_row] = np.arange(len(keys), dtype=np.int64)
        key_by_token = np.zeros(len(rows_by_token), dtype=np.uint64)
        key_by_token[:next_token] = self.row_keys
        key_by_token[token_of_row] = keys
        before = PlatformCache(self.directory, self.key, self.salt, self.columns, self.kinds, self.n_rows,
                               self.points, self.tokens, self.rows_by_token, self.created, self.duplicates,
                               self.ids)
        self.points, self.tokens, self.ids = [], [], []
        blinded = self._fill(prepared, token_of_row, engine, progress, old=before)
        old_entries, new_entries = _entries(before.tokens), _entries(self.tokens)
        removed = old_entries[~np.isin(old_entries, new_entries)]
        added = new_entries[~np.isin(new_entries, old_entries)]
        # an entry on both sides is (column, same token): the same row's id, so the same point,
        # unless two rows' raw values collided in row_keys; then resend it
        common = new_entries[np.isin(new_entries, old_entries)]
        changed = common[~self._same_points(before, common)]
        self.n_rows, self.rows_by_token, self.row_keys = len(table), rows_by_token, key_by_token
        self.table_digest = table_digest(prepared, self.duplicates)
        increment = len(self.log)
        self.log.append({"increment": increment, "set_digest": set_digest(self.points, self.tokens)})
        self.save({f"delta_{increment}.npz": {"removed": np.concatenate([removed, changed]),
                                               "added": np.concatenate([added, changed])}})
        return blinded

    def _same_points(self, before: "PlatformCache", entries: np.ndarray) -> np.ndarray:
        n = len(self.columns)
        same = np.ones(len(entries), dtype=bool)
        for c in range(n):
            sel = np.flatnonzero(entries % n == c)
            toks = entries[sel] // n
            a = self.points[c][np.searchsorted(self.tokens[c], toks)]
            b = before.points[c][np.searchsorted(before.tokens[c], toks)]
            same[sel] = (a == b).all(axis=1)
        return same

    def delta_since(self, digest: str) -> tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] | None:
        """What turns the set this cache served with ``digest`` into the current one.

        ``(removed tokens, added points, added tokens)`` per column, or None when no
        increment of this generation had that digest. The net change over several
        increments: an entry whose first logged event after that increment is a removal
        was in the lender's copy (it is removed, and sent again if it is back); one whose
        first event is an addition was not (it is sent if it is still here)."""
        at = [e["increment"] for e in self.log if e["set_digest"] == digest]
        if not at:
            return None
        events, removal = [], []
        for i in range(at[-1] + 1, len(self.log)):
            with np.load(self.directory / f"delta_{i}.npz", allow_pickle=False) as d:
                events += [d["removed"], d["added"]]
                removal += [np.ones(len(d["removed"]), bool), np.zeros(len(d["added"]), bool)]
        n = len(self.columns)
        if events:
            keys, first = np.unique(np.concatenate(events), return_index=True)
            first_removal = np.concatenate(removal)[first]
        else:
            keys, first_removal = np.empty(0, dtype=np.int64), np.empty(0, dtype=bool)
        removed_keys = keys[first_removal]
        current = _entries(self.tokens)
        added_keys = keys[np.isin(keys, current)]
        removed, points, tokens = [], [], []
        for c in range(n):
            removed.append(np.sort(removed_keys[removed_keys % n == c] // n))
            toks = np.sort(added_keys[added_keys % n == c] // n)
            points.append(self.points[c][np.searchsorted(self.tokens[c], toks)])
            tokens.append(toks)
        return removed, points, tokens

    def save(self, extra: dict[str, dict[str, np.ndarray]] | None = None) -> None:
        """Write the whole cache to a sibling folder, then swap it in by renames.

        The logged deltas of this generation are carried over; ``extra`` adds ``.npz`` files."""
        tmp = self.directory.with_name(self.directory.name + ".tmp")
        old = self.directory.with_name(self.directory.name + ".old")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        key_path = tmp / "key.bin"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.key.to_bytes())
        for c, (pts, toks, ids) in enumerate(zip(self.points, self.tokens, self.ids)):
            np.save(tmp / f"points_{c}.npy", pts)
            np.save(tmp / f"tokens_{c}.npy", toks)
            np.save(tmp / f"ids_{c}_offsets.npy", ids.offsets - ids.offsets[0])
            np.save(tmp / f"ids_{c}_data.npy", ids.data[ids.offsets[0]:ids.offsets[-1]])
        np.save(tmp / "rows_by_token.npy", self.rows_by_token)
        np.save(tmp / "row_keys.npy", self.row_keys)
        for entry in self.log[1:]:
            name = f"delta_{entry['increment']}.npz"
            if extra and name in extra:
                np.savez(tmp / name, **extra[name])
            else:
                shutil.copyfile(self.directory / name, tmp / name)
        meta = {"format": CACHE_FORMAT, "fingerprint": self.fingerprint, "salt": self.salt.hex(),
                "columns": self.columns, "kinds": self.kinds, "duplicates": self.duplicates,
                "n_rows": self.n_rows, "created": self.created, "table_digest": self.table_digest,
                "log": self.log}
        with open(tmp / "meta.json", "w") as fh:
            fh.write(json.dumps(meta, indent=2))
            fh.flush()
            os.fsync(fh.fileno())
        if old.exists():
            shutil.rmtree(old)
        if self.directory.exists():
            self.directory.rename(old)
        tmp.rename(self.directory)
        if old.exists():
            shutil.rmtree(old)

    @classmethod
    def load(cls, directory: str | Path) -> "PlatformCache":
        directory = Path(directory)
        old = directory.with_name(directory.name + ".old")
        if not directory.exists() and (old / "meta.json").exists():
            old.rename(directory)  # a save stopped between its two renames: the old cache stands
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no PSI cache at {directory} (missing meta.json)")
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            raise ValueError(f"{directory}: PSI cache format {meta.get('format')!r}, "
                             f"this version reads {CACHE_FORMAT}: rebuild it")
        key = BlindingKey((directory / "key.bin").read_bytes())
        if key.fingerprint != meta["fingerprint"]:
            raise ValueError(f"{directory}: key.bin does not match the fingerprint in meta.json")
        n = len(meta["columns"])
        load = lambda name: np.load(directory / name, allow_pickle=False)  # noqa: E731
        return cls(directory, key, bytes.fromhex(meta["salt"]), meta["columns"], meta["kinds"],
                   meta["n_rows"], [load(f"points_{c}.npy") for c in range(n)],
                   [load(f"tokens_{c}.npy") for c in range(n)], load("rows_by_token.npy"),
                   meta["created"], meta["duplicates"],
                   [IdArray(load(f"ids_{c}_offsets.npy"), load(f"ids_{c}_data.npy")) for c in range(n)],
                   load("row_keys.npy"), meta["table_digest"], meta["log"])

    def rotate(self, table: pd.DataFrame, **build_options: object) -> "PlatformCache":
        """A fresh key, salt and tokens over ``table``; replaces this cache on disk."""
        kinds = dict(zip(self.columns, self.kinds))
        return PlatformCache.build(self.directory, table, self.columns, kinds=kinds,
                                   duplicates=self.duplicates, **build_options)  # type: ignore[arg-type]

    def age_days(self) -> float:
        return (time.time() - self.created) / 86400.0

    def check_table(self, table: pd.DataFrame, id_columns: list[str]) -> None:
        if list(id_columns) != self.columns or len(table) != self.n_rows:
            raise ValueError(
                f"PSI cache {self.directory} was built for columns {self.columns} over "
                f"{self.n_rows} rows, not {list(id_columns)} over {len(table)}: rebuild it")

    @classmethod
    def serve(cls, directory: str | Path, table: pd.DataFrame, id_columns: list[str], *,
              duplicates: str = "first", incremental: bool = False, rotate: bool = False,
              max_increments: int = Policy.psi_cache_max_increments,
              max_age_days: float = Policy.psi_cache_max_age_days,
              workers: int | None = None, engine: compute.Engine | None = None,
              progress: bool = False) -> tuple["PlatformCache", dict]:
        """The cache that serves ``table`` now, by this node's policy (module docstring).

        ``action`` in the returned report: ``kept`` (the cache already serves exactly this
        table, checked by :func:`table_digest`), ``updated`` (in place, same key),
        ``rebuilt`` (fresh key) or ``built`` (no usable cache). ``ids_blinded`` counts the
        ids this call blinded."""
        directory = Path(directory)
        prepared = prepare_ids(table, id_columns, duplicates=duplicates, source="platform table")
        cache, why = None, "no cache"
        if (directory / "meta.json").exists() or (directory.with_name(directory.name + ".old")).exists():
            try:
                cache = cls.load(directory)
            except (ValueError, KeyError, OSError) as exc:
                why = f"unreadable: {exc}"
        blinded, action = 0, "kept"
        if cache is not None and (cache.columns != list(id_columns) or cache.duplicates != duplicates
                                  or cache.kinds != [c.kind for c in prepared.columns]):
            cache, why = None, "columns, kinds or duplicate policy changed"
        if cache is not None and rotate:
            cache, why = None, "the operator asked for a new key"
        if cache is not None and cache.table_digest != table_digest(prepared, duplicates):
            if not incremental:
                cache, why = None, "table changed and the job is not incremental"
            elif cache.increments >= max_increments:
                cache, why = None, f"{cache.increments} updates under this key (max {max_increments})"
            elif cache.age_days() >= max_age_days:
                cache, why = None, f"key is {cache.age_days():.1f} days old (max {max_age_days})"
            else:
                blinded, action = cache.update(table, prepared=prepared, workers=workers, engine=engine,
                                               progress=progress), "updated"
        if cache is None:
            action = "rebuilt" if why != "no cache" else "built"
            cache = cls.build(directory, table, id_columns, duplicates=duplicates, workers=workers,
                              engine=engine, progress=progress, prepared=prepared)
            blinded = sum(len(c.rows) for c in prepared.columns)
        report = {"action": action, "generation": cache.fingerprint, "increments": cache.increments,
                  "ids_blinded": blinded}
        if action == "rebuilt":
            report["reason"] = why
        return cache, report


#: a platform key fingerprint as :attr:`BlindingKey.fingerprint` writes it (checked when it arrives).
FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")


class LenderSetStore:
    """The lender's copy of one platform blinded set (the platform's current key generation).

    The folder and file names are the lender's own (``current/``); the platform key
    fingerprint the copy belongs to and its digest are recorded in ``current/meta.json``,
    never used as a path. A set under a new key replaces the old one: the old copy is
    useless once the platform rotated its key."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    @property
    def _folder(self) -> Path:
        return self.directory / "current"

    def _meta(self) -> dict:
        old = self._folder.with_name("current.old")
        if not self._folder.exists() and (old / "meta.json").exists():
            old.rename(self._folder)  # a put stopped between its two renames: the old copy stands
        path = self._folder / "meta.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def get(self, fingerprint: str) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        """The stored set if it is under ``fingerprint``, else None; also None when the files
        are unreadable or not what was stored (its digest is checked against the recorded one)."""
        meta = self._meta()
        if meta.get("fingerprint") != fingerprint:
            return None
        load = lambda name: np.load(self._folder / name, allow_pickle=False)  # noqa: E731
        try:
            points = [load(f"points_{c}.npy") for c in range(meta["n_columns"])]
            tokens = [load(f"tokens_{c}.npy") for c in range(meta["n_columns"])]
        except (OSError, ValueError, EOFError):
            return None  # damaged: the platform's full set replaces it
        if set_digest(points, tokens) != meta.get("digest"):
            return None
        return points, tokens

    def digest(self, fingerprint: str) -> str:
        """The recorded digest of the set stored under ``fingerprint`` ("" if none)."""
        meta = self._meta()
        return meta.get("digest", "") if meta.get("fingerprint") == fingerprint else ""

    def put(self, fingerprint: str, points: list[np.ndarray], tokens: list[np.ndarray]) -> str:
        """Store a set (sorted by token) in place of the previous one; returns its digest.

        Written to a sibling folder and swapped in, so a crash leaves the previous copy
        (which the platform then patches or replaces)."""
        if not isinstance(fingerprint, str) or not FINGERPRINT.match(fingerprint):
            raise ValueError(f"platform key fingerprint {fingerprint!r} is not 16 hex digits")
        folder = self._folder
        tmp, old = folder.with_name("current.tmp"), folder.with_name("current.old")
        for leftover in (tmp, old):
            if leftover.exists():
                shutil.rmtree(leftover)
        tmp.mkdir(parents=True)
        for c, (pts, toks) in enumerate(zip(points, tokens)):
            order = np.argsort(toks, kind="stable")
            np.save(tmp / f"points_{c}.npy", pts[order])
            np.save(tmp / f"tokens_{c}.npy", toks[order])
        digest = set_digest(points, tokens)
        (tmp / "meta.json").write_text(json.dumps({"fingerprint": fingerprint, "n_columns": len(points),
                                                   "stored": time.time(), "digest": digest}))
        if folder.exists():
            folder.rename(old)
        tmp.rename(folder)
        if old.exists():
            shutil.rmtree(old)
        return digest

    def fingerprints(self) -> list[str]:
        """The platform key fingerprint of the stored set (none or one)."""
        fingerprint = self._meta().get("fingerprint")
        return [fingerprint] if fingerprint else []


__all__ = ["PlatformCache", "LenderSetStore", "column_domain", "set_digest", "table_digest"]
