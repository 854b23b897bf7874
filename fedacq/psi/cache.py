"""Unbalanced PSI: the platform's blinded set, computed once and reused until rotated.

The platform's user base is 10-100x the lender's, and blinding it is the expensive
part of PSI. :class:`PlatformCache` blinds every platform id once with a long-lived
platform key ``b`` and a cache salt, and stores on the platform's disk:

* ``meta.json`` — key fingerprint, salt, columns, sizes, creation time;
* ``key.bin`` — the platform's secret scalar (file mode 0600; never sent);
* ``points_<c>.npy`` / ``tokens_<c>.npy`` — ``H(y)^b`` per id column in a random
  order, and for each point a *token* (a random relabelling of platform rows, so the
  lender can tell that two columns' points belong to one row without learning the row);
* ``rows_by_token.npy`` — token -> platform row number (never sent).

The lender keeps the transferred set in a :class:`LenderSetStore`, keyed by the key
fingerprint, and only receives it again after the platform rotates its key
(:meth:`PlatformCache.rotate`: new key, new salt, new tokens; old lender copies become
useless because no online answer under the new key matches them).

The cache describes the platform table it was built from; when that table changes,
rebuild it (``fedacq psi`` and the node do this on a row-count or column mismatch).
Files are plain ``.npy`` arrays loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from fedacq import compute
from fedacq.crypto import dp_noise
from fedacq.crypto.ecdh import POINT_BYTES, BlindingKey
from fedacq.paths import under
from fedacq.psi.ids import prepare_ids

CHUNK_IDS = 65536


def column_domain(index: int, kind: str) -> bytes:
    """Domain tag of the ``index``-th id column (priority order) of kind ``kind``."""
    return f"fedacq/psi/col{index}/{kind}".encode()


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

    @property
    def fingerprint(self) -> str:
        return self.key.fingerprint

    @classmethod
    def build(cls, directory: str | Path, table: pd.DataFrame, id_columns: list[str], *,
              kinds: dict[str, str] | None = None, duplicates: str = "first",
              key: BlindingKey | None = None, salt: bytes | None = None,
              workers: int | None = None, engine: compute.Engine | None = None,
              progress: bool = False) -> "PlatformCache":
        """Blind every id of ``table`` once and write the cache to ``directory``.

        Blinding runs on ``engine`` (default: the party's active engine, or a local one
        with ``workers`` processes): the whole user base, so this is where a cluster pays.
        """
        engine = compute.choose(engine, workers)
        directory = Path(directory)
        key = key or BlindingKey.generate()
        salt = salt or os.urandom(32)
        prepared = prepare_ids(table, id_columns, kinds=kinds, duplicates=duplicates,
                               source="platform table")
        rows_by_token = dp_noise.permutation(len(table))
        token_of_row = np.empty_like(rows_by_token)
        token_of_row[rows_by_token] = np.arange(len(table), dtype=np.int64)
        points, tokens = [], []
        total = sum(len(c.rows) for c in prepared.columns)
        bar = tqdm(total=total, desc="psi cache: blind platform ids", unit="id", disable=not progress)
        for c, col in enumerate(prepared.columns):
            toks = token_of_row[col.rows]
            order = np.argsort(toks, kind="stable")
            values = col.values.take(order)
            out = np.empty((len(values), POINT_BYTES), dtype=np.uint8)
            for start in range(0, len(values), CHUNK_IDS):
                chunk = values[start:start + CHUNK_IDS]
                out[start:start + len(chunk)] = engine.blind_ids(key, chunk, salt, column_domain(c, col.kind))
                bar.update(len(chunk))
            points.append(out)
            tokens.append(toks[order])
        bar.close()
        cache = cls(directory, key, salt, list(id_columns), [c.kind for c in prepared.columns],
                    len(table), points, tokens, rows_by_token, time.time())
        cache.save()
        return cache

    def save(self) -> None:
        tmp = self.directory.with_name(self.directory.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        key_path = tmp / "key.bin"
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(self.key.to_bytes())
        for c, (pts, toks) in enumerate(zip(self.points, self.tokens)):
            np.save(tmp / f"points_{c}.npy", pts)
            np.save(tmp / f"tokens_{c}.npy", toks)
        np.save(tmp / "rows_by_token.npy", self.rows_by_token)
        meta = {"fingerprint": self.fingerprint, "salt": self.salt.hex(), "columns": self.columns,
                "kinds": self.kinds, "n_rows": self.n_rows, "created": self.created}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        if self.directory.exists():
            shutil.rmtree(self.directory)
        tmp.rename(self.directory)

    @classmethod
    def load(cls, directory: str | Path) -> "PlatformCache":
        directory = Path(directory)
        meta_path = directory / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"no PSI cache at {directory} (missing meta.json)")
        meta = json.loads(meta_path.read_text())
        key = BlindingKey((directory / "key.bin").read_bytes())
        if key.fingerprint != meta["fingerprint"]:
            raise ValueError(f"{directory}: key.bin does not match the fingerprint in meta.json")
        n = len(meta["columns"])
        load = lambda name: np.load(directory / name, allow_pickle=False)  # noqa: E731
        return cls(directory, key, bytes.fromhex(meta["salt"]), meta["columns"], meta["kinds"],
                   meta["n_rows"], [load(f"points_{c}.npy") for c in range(n)],
                   [load(f"tokens_{c}.npy") for c in range(n)], load("rows_by_token.npy"),
                   meta["created"])

    def rotate(self, table: pd.DataFrame, **build_options: object) -> "PlatformCache":
        """A fresh key, salt and tokens over ``table``; replaces this cache on disk."""
        kinds = dict(zip(self.columns, self.kinds))
        return PlatformCache.build(self.directory, table, self.columns, kinds=kinds,
                                   **build_options)  # type: ignore[arg-type]

    def age_days(self) -> float:
        return (time.time() - self.created) / 86400.0

    def check_table(self, table: pd.DataFrame, id_columns: list[str]) -> None:
        if list(id_columns) != self.columns or len(table) != self.n_rows:
            raise ValueError(
                f"PSI cache {self.directory} was built for columns {self.columns} over "
                f"{self.n_rows} rows, not {list(id_columns)} over {len(table)}: rebuild it")


#: a platform key fingerprint as :attr:`BlindingKey.fingerprint` writes it. It arrives from the
#: platform and names a folder, so nothing else is accepted.
FINGERPRINT = re.compile(r"^[0-9a-f]{16}$")


class LenderSetStore:
    """The lender's copy of platform blinded sets, one folder per platform key fingerprint."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def _folder(self, fingerprint: str) -> Path:
        if not isinstance(fingerprint, str) or not FINGERPRINT.match(fingerprint):
            raise ValueError(f"platform key fingerprint {fingerprint!r} is not 16 hex digits")
        return under(self.directory, fingerprint)

    def get(self, fingerprint: str) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
        folder = self._folder(fingerprint)
        meta = folder / "meta.json"
        if not meta.exists():
            return None
        n = json.loads(meta.read_text())["n_columns"]
        load = lambda name: np.load(folder / name, allow_pickle=False)  # noqa: E731
        return ([load(f"points_{c}.npy") for c in range(n)], [load(f"tokens_{c}.npy") for c in range(n)])

    def put(self, fingerprint: str, points: list[np.ndarray], tokens: list[np.ndarray]) -> None:
        """Store a set and drop the copies under older (rotated) keys."""
        folder = self._folder(fingerprint)
        if self.directory.exists():
            for old in self.directory.iterdir():
                if old.is_dir() and old.name != fingerprint:
                    shutil.rmtree(old)
        folder.mkdir(parents=True, exist_ok=True)
        for c, (pts, toks) in enumerate(zip(points, tokens)):
            np.save(folder / f"points_{c}.npy", pts)
            np.save(folder / f"tokens_{c}.npy", toks)
        (folder / "meta.json").write_text(json.dumps({"n_columns": len(points), "stored": time.time()}))

    def fingerprints(self) -> list[str]:
        if not self.directory.exists():
            return []
        return sorted(p.name for p in self.directory.iterdir()
                      if FINGERPRINT.match(p.name) and (p / "meta.json").exists())


__all__ = ["PlatformCache", "LenderSetStore", "column_domain"]
