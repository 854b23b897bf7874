"""One party's checkpoints of one job: what it needs to continue after its node was killed.

A long protocol saves its own state at natural boundaries (a tree, an epoch, a
PSI phase) under a name of its choosing, for example ``"tree-0007"``. Each
checkpoint is a small JSON document and, optionally, named numpy arrays,
written to ``<job dir>/checkpoints/<name>/`` atomically (temporary folder,
fsync, rename), so a kill at any instant leaves either the whole checkpoint or
none of it. Files are the party's alone (the node runs under umask 0077) and
hold only this party's own state: a party never stores what it could not see
in the first place.

Arrays are ``.npy`` files read with ``allow_pickle=False``; the JSON is plain
data. Resuming, each side tells the other which checkpoints it holds and both
continue from the last one they have in common, so a protocol keeps at least
the previous checkpoint until the next one is written on both sides.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from fedacq.paths import check_name, fsync_dir, under

_META = "meta.json"


class Checkpoints:
    """The checkpoints of one job at one party, in ``directory``."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)

    def save(self, name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        """Write checkpoint ``name`` whole, replacing an older one of the same name."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = under(self.directory, name)
        tmp = under(self.directory, f"{name}.tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        for key, array in (arrays or {}).items():
            with open(tmp / f"{check_name(key, 'checkpoint array')}.npy", "wb") as fh:
                np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
                _sync(fh)
        with open(tmp / _META, "w", encoding="utf-8") as fh:
            json.dump(meta, fh, allow_nan=False, sort_keys=True)
            _sync(fh)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        fsync_dir(self.directory)

    def load(self, name: str) -> tuple[dict[str, Any], dict[str, np.ndarray]] | None:
        """Checkpoint ``name`` as (meta, arrays), or None if it was never completed."""
        folder = under(self.directory, name)
        if not (folder / _META).is_file():
            return None
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        arrays = {p.stem: np.load(p, allow_pickle=False) for p in sorted(folder.glob("*.npy"))}
        return meta, arrays

    def names(self) -> list[str]:
        """Completed checkpoints, sorted by name."""
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir()
                      if not p.name.endswith(".tmp") and (p / _META).is_file())

    def drop(self, name: str) -> None:
        """Remove checkpoint ``name`` (one no longer needed to agree with the peer)."""
        folder = under(self.directory, name)
        if folder.exists():
            shutil.rmtree(folder)


def _sync(fh: Any) -> None:
    fh.flush()
    os.fsync(fh.fileno())
