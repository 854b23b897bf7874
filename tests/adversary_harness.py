"""Helpers of the adversarial-peer suite: the honest node, the adversary process, snapshots.

* :class:`HonestNode` — one real ``fedacq node`` subprocess (:class:`fedacq.node.local.LocalNode`)
  for one party, with its own certificate, state, keys and data folders and a
  ``[policy]``; its peer address is the adversary's port.
* :class:`AdversaryProcess` — ``tests/adversary_peer.py`` holding the other party's
  certificate, started once per honest node in serve mode; :meth:`~AdversaryProcess.run`
  sends it one scenario and returns its result.
* :func:`snapshot` / :func:`changes` — every file (sha256) and directory under the
  honest party's folders, and what differs between two snapshots apart from logs
  and ledgers.

Everything waits on readiness or on a result line with a deadline; nothing sleeps
and hopes.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import stat
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedacq.node.control import ControlClient
from fedacq.node.local import LocalNode, free_port, write_party_config
from fedacq.node.policy import Policy
from fedacq.node.protocols import load_protocol

ADVERSARY = Path(__file__).with_name("adversary_peer.py")
PEER = {"lender": "platform", "platform": "lender"}
#: what a node may write while refusing: its logs and its ledgers (never content).
LOGS = ("node.out", "node.log", "egress.jsonl", "ingress.jsonl", "job.log")


def write_data(root: Path, seed: int = 7) -> dict[str, Path]:
    """Synthetic CSVs: 300 platform users (5 features); lender outcomes for 150 of them (labels
    related to a platform feature) and for 115 (labels independent of every platform feature, so
    that the platform can learn them only by solving the gradients it receives)."""
    rng = np.random.default_rng(seed)
    n = 300
    ids = [f"u{i:04d}" for i in range(n)]
    feats = rng.normal(size=(n, 5))
    users = pd.DataFrame({"id": ids, **{f"f{j}": feats[:, j] for j in range(5)}})
    x = rng.normal(size=(n, 2))
    label = ((feats[:, 0] + x[:, 0] + rng.normal(scale=0.5, size=n)) > 0).astype(int)
    outcomes = pd.DataFrame({"id": ids, "label": label, "x0": x[:, 0], "x1": x[:, 1]})
    root.mkdir(parents=True, exist_ok=True)
    paths = {"users": root / "users.csv", "outcomes": root / "outcomes.csv",
             "outcomes115": root / "outcomes115.csv"}
    users.to_csv(paths["users"], index=False)
    outcomes.iloc[:150].to_csv(paths["outcomes"], index=False)
    own = pd.DataFrame({"id": ids, "label": ((x[:, 0] + x[:, 1]) > 0).astype(int), "x0": x[:, 0], "x1": x[:, 1]})
    own.iloc[:115].to_csv(paths["outcomes115"], index=False)
    return paths


def complete(protocol: str, params: dict[str, Any], **policy: Any) -> dict[str, Any]:
    """A protocol's complete parameters as a permissive proposer would send them."""
    return load_protocol(protocol).resolve(dict(params), Policy(party="adversary", **policy))


@dataclass
class HonestNode:
    """One honest ``fedacq node`` whose peer is the adversary."""

    party: str
    root: Path
    certs: Path
    datasets: dict[str, Path]
    policy: dict[str, Any]
    allow: list[str]
    port: int = field(default_factory=free_port)
    adversary_port: int = field(default_factory=free_port)
    node: LocalNode | None = None

    @property
    def dir(self) -> Path:
        return self.root / self.party

    @property
    def state(self) -> Path:
        return self.dir / "state"

    @property
    def keys(self) -> Path:
        return self.dir / "keys"

    def start(self, timeout: float = 90.0) -> "HonestNode":
        config = write_party_config(self.dir / "party.toml", self.party, PEER[self.party], self.port,
                                    self.adversary_port, self.certs, self.allow, self.datasets,
                                    self.dir / "mlruns", policy=self.policy)
        self.node = LocalNode(self.party, config, self.state / "control.sock")
        self.node.start(timeout)
        return self

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()

    def client(self) -> ControlClient:
        return ControlClient(self.state / "control.sock")

    def health(self) -> str:
        client = self.client()
        try:
            return client.health()
        finally:
            client.close()

    def job(self, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """The job's final record at this node (waits until it succeeded or failed)."""
        client = self.client()
        try:
            return client.wait(job_id, timeout)
        finally:
            client.close()

    def submit(self, doc: dict[str, Any]) -> dict[str, Any]:
        from fedacq.node.jobs import parse_job

        client = self.client()
        try:
            return client.submit(parse_job(doc, "test job"))
        finally:
            client.close()

    def ledger(self, job_id: str, name: str = "egress.jsonl") -> list[dict[str, Any]]:
        path = self.state / name
        if not path.exists():
            return []
        return [e for e in (json.loads(line) for line in path.read_text().splitlines() if line.strip())
                if e["job"] == job_id]

    def peak_memory_kib(self) -> int:
        """The node process's peak resident memory (VmHWM), in KiB."""
        status = Path(f"/proc/{self.node.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")))


class AdversaryProcess:
    """``tests/adversary_peer.py`` in serve mode: one scenario per call, results as JSON lines."""

    def __init__(self, party: str, honest: HonestNode, work: Path, timeout: float = 90.0) -> None:
        cfg = {"party": party, "peer": honest.party, "certs": str(honest.certs), "port": honest.adversary_port,
               "peer_address": f"127.0.0.1:{honest.port}", "work_dir": str(work), "serve": True}
        work.mkdir(parents=True, exist_ok=True)
        self.stderr = (work / "adversary.err").open("ab")
        self.process = subprocess.Popen([sys.executable, str(ADVERSARY), "--config", json.dumps(cfg)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.err_path = work / "adversary.err"
        self.lines: "queue.Queue[str | None]" = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._expect("event", timeout)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _expect(self, key: str, timeout: float) -> dict[str, Any]:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"adversary said nothing within {timeout} s:\n{self.tail()}") from None
        if line is None:
            raise RuntimeError(f"adversary exited ({self.process.poll()}):\n{self.tail()}")
        doc = json.loads(line)
        if key not in doc:
            raise RuntimeError(f"adversary sent {doc}, expected {key!r}")
        return doc

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.err_path.read_text(errors="replace").splitlines()[-n:])

    def start(self, scenario: str, timeout: float = 60.0, **args: Any) -> None:
        """Send a scenario and wait until the adversary has armed it."""
        self.process.stdin.write(json.dumps({"scenario": scenario, "args": args}) + "\n")
        self.process.stdin.flush()
        self._expect("event", timeout)

    def result(self, timeout: float = 180.0) -> dict[str, Any]:
        result = self._expect("result", timeout)["result"]
        if "traceback" in result and set(result) <= {"error", "traceback"}:
            raise RuntimeError(f"adversary scenario crashed: {result['error']}\n{result['traceback']}")
        return result

    def run(self, scenario: str, timeout: float = 180.0, **args: Any) -> dict[str, Any]:
        self.start(scenario, **args)
        return self.result(timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.stderr.close()


# -- snapshots ----------------------------------------------------------------------------------

def snapshot(*roots: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """``{path: sha256}`` of every regular file and ``{path: "dir"}`` of every directory under ``roots``
    (other file kinds, e.g. the control socket, as their kind); ``skip`` prunes folders."""
    out: dict[str, str] = {}
    skipped = {p.resolve() for p in skip}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            here = Path(dirpath)
            dirnames[:] = [d for d in dirnames if (here / d).resolve() not in skipped]
            out[str(here)] = "dir"
            for name in filenames:
                path = here / name
                mode = path.lstat().st_mode
                if stat.S_ISREG(mode):
                    out[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
                else:
                    out[str(path)] = "symlink" if stat.S_ISLNK(mode) else "special"
    return out


def changes(before: dict[str, str], after: dict[str, str], allow: tuple[Path, ...] = ()) -> list[str]:
    """Paths added, removed or changed, except logs and ledgers and anything under ``allow``."""
    allowed = [str(a) for a in allow]
    out = []
    for path in sorted(set(before) | set(after)):
        if before.get(path) == after.get(path) or Path(path).name in LOGS:
            continue
        if any(path == a or path.startswith(a + os.sep) for a in allowed):
            continue
        state = "added" if path not in before else "removed" if path not in after else "changed"
        out.append(f"{state}: {path}")
    return out
