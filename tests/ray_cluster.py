"""A throw-away two-node Ray cluster on 127.0.0.1 for the tests (a head and a worker, one CPU each).

Why a launcher process: the cluster is started by ``python tests/ray_cluster.py DIR``, a
child of the test process that owns every Ray process of the cluster (``ray.cluster_utils``,
Ray's own multi-node-on-one-machine helper). It prints the cluster address, then waits
for its stdin to close: the fixture closes it at teardown, and if the test process dies
the pipe closes all the same, so the cluster never outlives the tests. The launcher
leads its own process group, which holds every Ray process of the cluster; what a
graceful shutdown leaves is killed by that group. Nothing here stops Ray by name
(``ray stop`` would stop other people's clusters too).

Why loopback takes care: Ray replaces ``127.0.0.1`` by the address of the machine's
default route ("remotely reachable") unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, and
its servers (GCS, raylets, agents) listen on every interface unless the node's address
is literally ``127.0.0.1``. So the launcher sets that variable and gives each node
``node_ip_address="127.0.0.1"``, and the test driver sets the same switch before it
connects; :func:`listening_addresses` lets a test check that nothing of the cluster
listens beyond loopback. ``RAY_TMPDIR`` keeps every Ray file, including the
"current cluster" address file, inside the cluster's own directory.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
PROJECT = Path(__file__).resolve().parent.parent
#: generous: two Ray nodes take 10-20 s on a loaded 2-core machine.
START_DEADLINE_S = 180.0


def cluster_env(directory: Path) -> dict[str, str]:
    """Environment of every process of the test cluster (and of its driver)."""
    env = dict(os.environ)
    env.update({"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_TMPDIR": str(directory),
                "RAY_USAGE_STATS_ENABLED": "0"})
    # Ray workers import fedacq by name: this checkout's, whatever the working directory
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class LocalRayCluster:
    """A running launcher: ``address`` for ``ray.init``; ``close()`` stops every node.

    The launcher leads its own process group, and every Ray process of the cluster
    stays in it: that group, and nothing else, is what :meth:`pids` reports and what
    :meth:`close` kills if a graceful shutdown does not finish.
    """

    address: str
    directory: Path
    process: subprocess.Popen

    def pids(self) -> set[int]:
        """The launcher and every process of its group (Ray's servers and workers)."""
        found = {self.process.pid}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended meanwhile
                continue
            if int(fields[2]) == self.process.pid:  # field 5 of stat: the process group
                found.add(int(stat.parent.name))
        return found

    def close(self, deadline_s: float = 60.0) -> None:
        """Ask the launcher to shut the cluster down; then kill whatever is left in its group."""
        if self.process.poll() is None and self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=deadline_s)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is empty: the graceful shutdown did it all
            pass
        self.process.wait()


def listening_addresses(pids: set[int]) -> list[str]:
    """``host:port`` of every TCP socket in LISTEN state held by ``pids`` (from /proc)."""
    inodes: set[str] = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:  # the process ended meanwhile
            continue
    out = []
    for table, width in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            host_hex, port_hex = local.split(":")
            raw = bytes.fromhex(host_hex)
            # /proc prints each 32-bit word in host (little-endian) order
            host = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            if width == 4:
                addr = ".".join(str(b) for b in host)
            else:
                import ipaddress
                addr = str(ipaddress.IPv6Address(host))
            out.append(f"{addr}:{int(port_hex, 16)}")
    return out


def start_cluster(directory: Path, attempts: int = 3) -> LocalRayCluster:
    """Start the launcher and wait (with a deadline, no sleeps) for the cluster's address.

    Ray gives a starting node 30 s to register, a limit a heavily loaded machine can
    miss; a launcher that fails is cleaned up and started again, up to ``attempts``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + START_DEADLINE_S
    logs = []
    for attempt in range(attempts):
        log_path = directory / f"launcher-{attempt}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, __file__, str(directory)], env=cluster_env(directory),
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True,
                                    start_new_session=True)
        line = ""
        while time.monotonic() < deadline and proc.poll() is None:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                break
        cluster = LocalRayCluster(address="", directory=directory, process=proc)
        if line.startswith("address "):
            cluster.address = line.split(" ", 1)[1].strip()
            return cluster
        cluster.close()
        logs.append(log_path.read_text(errors="replace")[-3000:])
        if time.monotonic() >= deadline:
            break
    raise RuntimeError(f"the test Ray cluster did not start ({len(logs)} attempt(s), deadline "
                       f"{START_DEADLINE_S:.0f} s); last launcher log:\n{logs[-1]}")


def _serve(directory: str) -> None:
    """Launcher body: head and worker on 127.0.0.1, address on stdout, stop when stdin closes."""
    from ray.cluster_utils import Cluster

    common = {"node_ip_address": LOOPBACK, "num_cpus": 1, "temp_dir": os.path.join(directory, "ray"),
              "object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        **common, "include_dashboard": False, "ray_client_server_port": None})
    try:
        cluster.add_node(**common)
        cluster.wait_for_nodes()
        print("address", cluster.address, flush=True)
        sys.stdin.read()  # returns at EOF: the fixture's teardown, or the test process gone
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    _serve(sys.argv[1])
