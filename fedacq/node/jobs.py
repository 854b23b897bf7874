"""Jobs: the JOB.toml document both nodes agree on, and the job state each keeps.

A job file names a protocol, the data sets each party contributes (by the names
each party registered in its own ``[datasets]``, never by path) and the
protocol's parameters::

    [job]
    protocol = "echo"
    id = "echo-001"                # optional; generated when absent

    [datasets.lender]              # logical name = registered name at the lender
    outcomes = "outcomes"

    [datasets.platform]
    features = "user_features"

    [params]
    rounds = 3

State lives in ``<state_dir>/jobs/<id>/``: ``job.json`` (spec with the effective
parameters, the node's policy when it accepted the job, status, result or error,
progress, times; rewritten atomically), ``job.log`` and ``checkpoints/`` (the
protocol's own, :mod:`fedacq.node.checkpoint`). Job ids, party names, logical
and registered data-set names all match :data:`fedacq.paths.NAME`, since a job
may come from the peer. A job moves submitted -> running -> succeeded | failed;
a node that restarts marks the jobs it was running as interrupted, so
``fedacq job status`` always tells the truth, and ``fedacq job resume ID``
runs an interrupted or failed job again as its next *attempt*, from the last
checkpoint both parties hold.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from fedacq.link.message import MessageError, parse_header
from fedacq.paths import check_name, under

STATUSES = ("submitted", "running", "succeeded", "failed", "interrupted")
#: a job in one of these states runs no more (``interrupted`` and ``failed`` ones can be resumed).
FINAL = ("succeeded", "failed", "interrupted")
#: resumptions of one job a node takes part in.
MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class JobSpec:
    id: str
    protocol: str
    datasets: dict[str, dict[str, str]] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    initiator: str = ""
    attempt: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @property
    def link_name(self) -> str:
        """The job's name on the link: a resumed attempt is a new conversation (fresh sequence
        numbers, its own ledger lines) of the same job."""
        return self.id if self.attempt == 0 else f"{self.id}#{self.attempt}"


def new_job_id(protocol: str) -> str:
    return f"{protocol}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def parse_job(doc: dict[str, Any], source: str, initiator: str = "") -> JobSpec:
    """Check a job document (from TOML or a peer's JSON); errors name ``source``."""
    job = doc.get("job")
    if not isinstance(job, dict) or not isinstance(job.get("protocol"), str):
        raise ValueError(f"{source}: [job] protocol is required")
    protocol = job["protocol"]
    job_id = job.get("id") or new_job_id(protocol)
    check_name(job_id, f"{source}: job id")
    datasets = doc.get("datasets", {})
    if not isinstance(datasets, dict) or not all(
            isinstance(v, dict) and all(isinstance(k2, str) and isinstance(v2, str) for k2, v2 in v.items())
            for v in datasets.values()):
        raise ValueError(f"{source}: [datasets.<party>] must map logical names to registered data set names")
    for party, names in datasets.items():
        check_name(party, f"{source}: [datasets] party")
        for logical, registered in names.items():
            check_name(logical, f"{source}: [datasets.{party}] logical name")
            check_name(registered, f"{source}: [datasets.{party}] {logical} =")
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"{source}: [params] must be a table")
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{source}: [params] must be JSON-able (no dates, NaN or infinity): {exc}") from None
    attempt = job.get("attempt", 0)
    if not isinstance(attempt, int) or isinstance(attempt, bool) or not 0 <= attempt <= MAX_ATTEMPTS:
        raise ValueError(f"{source}: job attempt must be an integer from 0 to {MAX_ATTEMPTS}, got {attempt!r}")
    return JobSpec(id=job_id, protocol=protocol, datasets=datasets, params=params,
                   initiator=job.get("initiator", initiator), attempt=attempt)


def load_job_file(path: str | Path) -> JobSpec:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileNotFoundError(f"cannot read job file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    return parse_job(doc, str(path))


def spec_from_json(text: str, source: str) -> JobSpec:
    """A job as JSON text (from the operator or the peer), parsed within the same caps as a
    message header: bounded size and nesting, int64 integers, finite floats, no repeated keys."""
    try:
        doc = parse_header(text.encode("utf-8", "surrogatepass"), source, "job")
    except MessageError as exc:
        raise ValueError(str(exc)) from None
    return parse_job({"job": {"id": doc.get("id"), "protocol": doc.get("protocol"),
                              "initiator": doc.get("initiator", ""), "attempt": doc.get("attempt", 0)},
                      "datasets": doc.get("datasets", {}), "params": doc.get("params", {})}, source)


class JobStore:
    """Job records under ``<state_dir>/jobs``; one writer (the node), atomic rewrites."""

    def __init__(self, state_dir: Path) -> None:
        self.root = Path(state_dir) / "jobs"
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def dir(self, job_id: str) -> Path:
        return under(self.root, check_name(job_id, "job id"))

    def exists(self, job_id: str) -> bool:
        return (self.dir(job_id) / "job.json").exists()

    def create(self, spec: JobSpec, policy: dict[str, Any] | None = None) -> dict[str, Any]:
        with self._lock:
            if self.exists(spec.id):
                raise ValueError(f"job {spec.id!r} already exists")
            (self.dir(spec.id) / "work").mkdir(parents=True)
            record = {"id": spec.id, "spec": json.loads(spec.to_json()), "policy": policy, "status": "submitted",
                      "submitted": time.time(), "started": None, "finished": None,
                      "result": None, "error": None}
            self._write(record)
            return record

    def update(self, job_id: str, **changes: Any) -> dict[str, Any]:
        with self._lock:
            record = self.get(job_id)
            record.update(changes)
            self._write(record)
            return record

    def get(self, job_id: str) -> dict[str, Any]:
        path = self.dir(job_id) / "job.json"
        if not path.exists():
            raise ValueError(f"no job {job_id!r} at this node")
        return json.loads(path.read_text(encoding="utf-8"))

    def log_path(self, job_id: str) -> Path:
        return self.dir(job_id) / "job.log"

    def checkpoint_dir(self, job_id: str) -> Path:
        return self.dir(job_id) / "checkpoints"

    def _write(self, record: dict[str, Any]) -> None:
        path = self.dir(record["id"]) / "job.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True, default=str), encoding="utf-8")
        os.replace(tmp, path)

    def recover(self) -> list[str]:
        """Mark jobs left submitted/running by a previous process as interrupted; return their ids."""
        stale = []
        for path in sorted(self.root.glob("*/job.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            if record["status"] in ("submitted", "running"):
                self.update(record["id"], status="interrupted", finished=time.time(),
                            error=f"the node stopped while the job was running; `fedacq job resume "
                                  f"{record['id']}` at the node that submitted it continues it")
                stale.append(record["id"])
        return stale
