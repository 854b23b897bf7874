"""A campaign's state at one node, in the layout its console reads (:mod:`fedacq.console.data`).

Each node writes its own view under its campaigns directory (``[console] campaigns``, by
default ``<state_dir>/campaigns``): ``<name>/campaign.json`` and ``<name>/cycles/NNNN/cycle.json``
(and, at the platform, ``scores.npy``: the version's scores of its reference sample, for drift).
The platform's view has no labels: it records the gates it can see (its own score PSI; the
validation metric only as the lender's pass or fail, which it learns when the lender stops or
continues the cycle) and no measurement beyond what the measure job released to it.

Every write replaces the file atomically (written beside it, then renamed), so a console
reading at any moment sees the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from fedacq.paths import check_name

STATUSES = ("running", "paused", "finished", "stopped")
#: the status changes a campaign allows (setting the status it has is a no-op): a stopped or
#: finished campaign stays so; a changed campaign is a new campaign with a new name.
TRANSITIONS = {"running": ("paused", "stopped", "finished"), "paused": ("running", "stopped", "finished"),
               "stopped": (), "finished": ()}


def campaigns_dir(config: Any) -> Path:
    """Where a node's campaigns live: ``[console] campaigns`` of its config, else ``<state_dir>/campaigns``."""
    console = getattr(config, "console", None)
    if console is not None and console.campaigns is not None:
        return Path(console.campaigns)
    return Path(config.state_dir) / "campaigns"


def write_json(path: Path, value: Any) -> None:
    """``value`` as JSON in ``path``, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(value, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


class CampaignState:
    """One campaign's directory at one node."""

    def __init__(self, root: Path, name: str) -> None:
        self.name = check_name(name, "campaign name")
        self.dir = Path(root) / self.name

    @property
    def campaign_file(self) -> Path:
        return self.dir / "campaign.json"

    def exists(self) -> bool:
        return self.campaign_file.is_file()

    def read(self) -> dict[str, Any]:
        if not self.exists():
            raise FileNotFoundError(f"no campaign {self.name!r} at {self.dir}")
        return json.loads(self.campaign_file.read_text(encoding="utf-8"))

    def create(self, *, party: str, digest: str, description: str, settings: dict[str, Any]) -> dict[str, Any]:
        """A new campaign record (status running); refused if the campaign exists with another digest."""
        if self.exists():
            current = self.read()
            if current.get("digest") != digest:
                raise ValueError(f"campaign {self.name!r} already exists at {self.dir} with digest "
                                 f"{str(current.get('digest'))[:16]}..., this file's is {digest[:16]}...; "
                                 "a changed campaign needs a new name")
            return current
        now = time.time()
        record = {"name": self.name, "status": "running", "created": now, "updated": now, "live_version": None,
                  "live_table": None, "description": description, "settings": settings, "party": party,
                  "digest": digest, "published": []}
        write_json(self.campaign_file, record)
        return record

    def update(self, **changes: Any) -> dict[str, Any]:
        """Change fields of the record; the status only through :meth:`set_status`."""
        if "status" in changes:
            raise ValueError("a campaign's status changes through set_status (its allowed transitions)")
        record = self.read()
        record.update(changes, updated=time.time())
        write_json(self.campaign_file, record)
        return record

    def set_status(self, status: str, by: str) -> dict[str, Any]:
        """Move the campaign to ``status`` as party ``by`` asked (recorded as ``status_by``); refused
        unless :data:`TRANSITIONS` allows it. Setting the current status again changes nothing."""
        record = self.read()
        current = record["status"]
        if status not in STATUSES:
            raise ValueError(f"campaign status must be one of {STATUSES}, got {status!r}")
        if status == current:
            return record
        if status not in TRANSITIONS[current]:
            raise ValueError(f"campaign {self.name!r} is {current}: it cannot become {status} "
                             f"(allowed: {', '.join(TRANSITIONS[current]) or 'none, it is over'})")
        record.update(status=status, status_by=by, updated=time.time())
        write_json(self.campaign_file, record)
        return record

    # -- cycles ------------------------------------------------------------------------------
    def cycle_dir(self, n: int) -> Path:
        return self.dir / "cycles" / f"{n:04d}"

    def cycles(self) -> list[int]:
        root = self.dir / "cycles"
        if not root.is_dir():
            return []
        return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and (p / "cycle.json").is_file())

    def read_cycle(self, n: int) -> dict[str, Any]:
        return json.loads((self.cycle_dir(n) / "cycle.json").read_text(encoding="utf-8"))

    def write_cycle(self, n: int, **fields: Any) -> dict[str, Any]:
        """Create or update cycle ``n``'s record with ``fields``."""
        path = self.cycle_dir(n) / "cycle.json"
        record = self.read_cycle(n) if path.is_file() else {
            "cycle": n, "started": time.time(), "outcome": "running", "reason": None, "finished": None,
            "sim_day": None, "version": None, "model_job": None, "update": None, "gates": [],
            "boost_table": None, "measurement": None}
        record.update(fields)
        if record["outcome"] != "running" and record.get("finished") is None:
            record["finished"] = time.time()
        write_json(path, record)
        return record

    def write_scores(self, n: int, scores: np.ndarray) -> None:
        path = self.cycle_dir(n) / "scores.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name("scores.tmp.npy")
        np.save(tmp, np.asarray(scores, dtype=np.float64), allow_pickle=False)
        os.replace(tmp, path)

    def cycle_of_table(self, table_version: str) -> int | None:
        for n in self.cycles():
            if self.read_cycle(n).get("boost_table") == table_version:
                return n
        return None
