"""A node knows every message schema of the protocols it allows before any traffic arrives.

The platform is the bigger side: after PSI its work is slower than the lender's, so the
lender's first SecureBoost message reaches the platform's node before the platform's own
job code gets to training (and, before this was fixed, before that code had imported the
module declaring ``sb.hello``: the job died with "unknown message type"). Here the
platform's job is held between PSI and training until the lender's node has *sent*
``sb.hello`` — its egress ledger records a message only once the receiving node has
checked and acknowledged it — and the job must still succeed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fedacq.crypto.tls import init_certs
from fedacq.node.control import ControlClient
from fedacq.node.local import LocalNode, free_port, write_party_config

#: run in the platform's node process: hold the job after PSI until the test releases it.
HOLD = """
import sys, time
from pathlib import Path
import fedacq.learn.run as run
release, config = Path(sys.argv[1]), sys.argv[2]
check = run.check_evaluable
def held(party, data):
    deadline = time.monotonic() + 300
    while not release.exists():
        if time.monotonic() > deadline:
            raise RuntimeError("the test never released the platform's job")
        time.sleep(0.05)
    check(party, data)
run.check_evaluable = held
from fedacq.cli import main
sys.exit(main(["node", "--config", config]))
"""


class HeldNode(LocalNode):
    """The platform's node, its job held after PSI until ``release`` exists."""

    def __init__(self, party: str, config: Path, socket_path: Path, release: Path) -> None:
        super().__init__(party, config, socket_path)
        self.release = release

    def launch(self) -> None:
        out = self.output.open("ab")
        self.process = subprocess.Popen([sys.executable, "-c", HOLD, str(self.release), str(self.config)],
                                        stdout=out, stderr=subprocess.STDOUT, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                        start_new_session=True)  # a process group of its own, as LocalNode.launch gives a node
        out.close()


def write_tables(root: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    n = 400
    ids = [f"u{i}" for i in range(n)]
    x = rng.normal(size=(n, 2))
    y = (x[:, 0] + rng.normal(scale=0.5, size=n) > 0).astype(int)
    paths = {"lender": root / "lender.csv", "platform": root / "platform.csv"}
    pd.DataFrame({"id": ids, "y": y, "a": x[:, 1]}).to_csv(paths["lender"], index=False)
    pd.DataFrame({"id": ids, "b": x[:, 0]}).to_csv(paths["platform"], index=False)
    return paths


def test_a_platform_slower_than_the_lender_still_gets_every_message(tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    init_certs(["lender", "platform"], certs)
    tables = write_tables(tmp_path)
    ports = {"lender": free_port(), "platform": free_port()}
    release = tmp_path / "release"
    policy = {"test_mode": True, "min_key_bits": 512}  # a small test key keeps the job short; nothing else
    nodes = {}
    for party, peer in (("lender", "platform"), ("platform", "lender")):
        config = write_party_config(tmp_path / party / "party.toml", party, peer, ports[party], ports[peer], certs,
                                    ["run"], {"table": tables[party]}, tmp_path / party / "mlruns", policy=policy)
        socket = config.parent / "state" / "control.sock"
        nodes[party] = HeldNode(party, config, socket, release) if party == "platform" else \
            LocalNode(party, config, socket)
    try:
        for node in nodes.values():
            node.start(timeout=120)
        client = ControlClient(nodes["lender"].socket_path)
        job = {"id": "slow-platform", "protocol": "run", "initiator": "",
               "datasets": {"lender": {"table": "table"}, "platform": {"table": "table"}},
               "params": {"id_column": "id", "label_column": "y", "model": "secureboost", "key_bits": 512,
                          "insecure_test_key": True, "min_intersection": 100,
                          "model_params": {"n_estimators": 2, "max_depth": 2}}}
        from fedacq.node.jobs import spec_from_json

        client.submit(spec_from_json(json.dumps(job), "test job"))
        egress = tmp_path / "lender" / "state" / "egress.jsonl"
        deadline = time.monotonic() + 300
        while not (egress.exists() and any(json.loads(line)["type"] == "sb.hello"
                                           for line in egress.read_text().splitlines())):
            status = client.status("slow-platform")
            assert status["status"] in ("submitted", "running"), status
            assert time.monotonic() < deadline, "the lender never sent sb.hello"
            time.sleep(0.1)
        held = ControlClient(nodes["platform"].socket_path).status("slow-platform")
        assert held["status"] == "running"  # still held after PSI, yet sb.hello was accepted
        release.touch()
        done = client.wait("slow-platform", timeout=600)
        assert done["status"] == "succeeded", done
        assert ControlClient(nodes["platform"].socket_path).wait("slow-platform", timeout=120)["status"] == "succeeded"
    finally:
        for node in nodes.values():
            node.stop()
