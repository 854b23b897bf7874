"""Two real node processes on 127.0.0.1, for tests, benchmarks and ``fedacq demo``.

:func:`start_local_pair` makes a dev CA and certificates, writes a party.toml
per party with free ports, starts ``fedacq node`` for each as a subprocess,
waits until both answer on their control sockets, and returns a
:class:`LocalPair` to submit jobs, kill or restart a node, and stop both::

    with start_local_pair(tmp_dir, datasets={"platform": {"users": path}}) as pair:
        record = pair.submit({"job": {"protocol": "echo"}, "params": {"rounds": 2}})
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fedacq.crypto.tls import init_certs
from fedacq.node.control import ControlClient
from fedacq.node.daemon import MAX_SOCKET_PATH
from fedacq.node.jobs import JobSpec, load_job_file, parse_job
from fedacq.node.protocols import PROTOCOLS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toml_str(value: str | Path) -> str:
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def _toml_value(value: Any) -> str:
    """A TOML value for a bool, number, string or list of those (JSON spells them the same way,
    except that TOML's booleans are lower-case too)."""
    return json.dumps(value)


def write_party_config(path: Path, party: str, peer: str, port: int, peer_port: int, certs: Path,
                       allow: list[str], datasets: dict[str, str | Path], mlflow: str | Path,
                       control_socket: Path | None = None, policy: dict[str, Any] | None = None,
                       sections: dict[str, dict[str, Any]] | None = None) -> Path:
    """A party.toml; ``sections`` adds tables such as ``[console]`` or ``[campaigns]`` (name -> keys)."""
    lines = ["[node]", f"party = {_toml_str(party)}", f'listen = "127.0.0.1:{port}"',
             'state_dir = "state"', f"mlflow = {_toml_str(mlflow)}", 'keys_dir = "keys"']
    if control_socket is not None:
        lines.append(f"control_socket = {_toml_str(control_socket)}")
    lines += ["", "[tls]", f"ca = {_toml_str(certs / 'ca.pem')}", f"cert = {_toml_str(certs / f'{party}.pem')}",
              f"key = {_toml_str(certs / f'{party}.key')}", "", "[peer]", f"name = {_toml_str(peer)}",
              f'address = "127.0.0.1:{peer_port}"', "", "[protocols]",
              f"allow = [{', '.join(_toml_str(a) for a in allow)}]", "", "[datasets]"]
    lines += [f"{name} = {_toml_str(p)}" for name, p in datasets.items()]
    if policy:
        lines += ["", "[policy]"] + [f"{key} = {_toml_value(value)}" for key, value in policy.items()]
    for section, table in (sections or {}).items():
        lines += ["", f"[{section}]"] + [f"{key} = {_toml_value(value)}" for key, value in table.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


class LocalNode:
    """One ``fedacq node`` subprocess and where its config and output live."""

    def __init__(self, party: str, config: Path, socket_path: Path) -> None:
        self.party, self.config, self.socket_path = party, config, socket_path
        self.output = config.parent / "node.out"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float) -> None:
        self.launch()
        self.wait_ready(timeout)

    def launch(self) -> None:
        out = self.output.open("ab")
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        # a session (process group) of its own: kill() takes the node's worker processes with it, as a
        # crashing machine or container would (multiprocessing's forkserver and pool workers outlive a
        # SIGKILLed parent otherwise)
        self.process = subprocess.Popen([sys.executable, "-m", "fedacq.cli", "node", "--config", str(self.config)],
                                        stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        out.close()

    def wait_ready(self, timeout: float) -> None:
        if self.process is None:
            raise RuntimeError(f"node {self.party}: launch() before wait_ready()")
        end = time.monotonic() + timeout
        client = ControlClient(self.socket_path, timeout=2.0)
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(f"node {self.party} exited with {self.process.returncode}:\n{self.tail()}")
                try:
                    if client.health() == self.party:
                        return
                except (RuntimeError, ValueError):
                    pass
                if time.monotonic() > end:
                    raise RuntimeError(f"node {self.party} not ready within {timeout} s:\n{self.tail()}")
                time.sleep(0.1)
        finally:
            client.close()

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.output.read_text(errors="replace").splitlines()[-lines:]) if self.output.exists() else ""

    def kill(self) -> None:
        """SIGKILL to the node's process group: neither the node nor its workers get a chance to say goodbye (a crash)."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()


class LocalPair:
    """Two running nodes; ``nodes[party]``. Use as a context manager to stop both."""

    def __init__(self, root: Path, certs: Path, nodes: dict[str, LocalNode], socket_dir: Path | None) -> None:
        self.root, self.certs, self.nodes = root, certs, nodes
        self._socket_dir = socket_dir

    def client(self, party: str) -> ControlClient:
        return ControlClient(self.nodes[party].socket_path)

    def submit(self, job: JobSpec | dict[str, Any] | str | Path, party: str | None = None,
               wait: bool = True, timeout: float = 600.0) -> dict[str, Any]:
        """Submit at ``party``'s node (default: the first party); wait for the result."""
        party = party or next(iter(self.nodes))
        spec = job if isinstance(job, JobSpec) else \
            parse_job(job, "job") if isinstance(job, dict) else load_job_file(job)
        client = self.client(party)
        try:
            record = client.submit(spec)
            return client.wait(record["id"], timeout) if wait else record
        finally:
            client.close()

    def status(self, party: str, job_id: str) -> dict[str, Any]:
        client = self.client(party)
        try:
            return client.status(job_id)
        finally:
            client.close()

    def restart(self, party: str, timeout: float = 30.0) -> None:
        self.nodes[party].stop()
        self.nodes[party].start(timeout)

    def stop(self) -> None:
        for node in self.nodes.values():
            node.stop()
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)

    def __enter__(self) -> "LocalPair":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_local_pair(root: str | Path, parties: tuple[str, str] = ("lender", "platform"),
                     datasets: dict[str, dict[str, str | Path]] | None = None,
                     allow: list[str] | None = None, mlflow: str | None = None,
                     timeout: float = 60.0, policy: dict[str, dict[str, Any]] | None = None,
                     sections: dict[str, dict[str, dict[str, Any]]] | None = None) -> LocalPair:
    """Certificates, configs with free ports, and two started nodes under ``root``.

    ``datasets[party]`` registers data sets (name -> path) at that party;
    ``allow`` defaults to every protocol in the registry; ``mlflow`` defaults to
    a store directory per party; ``policy[party]`` is that party's ``[policy]``
    table (default: the safe defaults of :mod:`fedacq.node.policy`); ``sections[party]`` more
    tables of its party.toml (e.g. ``{"console": {"listen": "127.0.0.1:8701"}}``).
    """
    root = Path(root).resolve()
    certs = root / "certs"
    init_certs(list(parties), certs)
    ports = {p: free_port() for p in parties}
    allow = list(allow if allow is not None else PROTOCOLS)
    socket_dir = None
    nodes: dict[str, LocalNode] = {}
    for party, peer in (parties, parties[::-1]):
        config = root / party / "party.toml"
        socket_path = config.parent / "state" / "control.sock"
        override = None
        if len(str(socket_path)) > MAX_SOCKET_PATH:
            socket_dir = socket_dir or Path(tempfile.mkdtemp(prefix="fq-"))
            socket_path = override = socket_dir / f"{party}.sock"
        write_party_config(config, party, peer, ports[party], ports[peer], certs, allow,
                           (datasets or {}).get(party, {}), mlflow or root / party / "mlruns", override,
                           (policy or {}).get(party), (sections or {}).get(party))
        nodes[party] = LocalNode(party, config, socket_path)
    pair = LocalPair(root, certs, nodes, socket_dir)
    try:
        for node in nodes.values():
            node.launch()
        for node in nodes.values():
            node.wait_ready(timeout)
    except BaseException:
        pair.stop()
        raise
    return pair
