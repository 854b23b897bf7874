"""Two real `fedacq node` processes on 127.0.0.1 with mutual TLS."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
import pytest

from fedacq.crypto.tls import init_certs, issue_cert
from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link.grpc_link import PeerClient
from fedacq.node.local import LocalPair, start_local_pair


@pytest.fixture(scope="module")
def pair():
    # a short root keeps the control sockets under the AF_UNIX path limit
    root = Path(tempfile.mkdtemp(prefix="fqn-"))
    data = root / "users.csv"
    data.write_text("id\n1\n")
    with start_local_pair(root / "run", datasets={"platform": {"users": data}, "lender": {"outcomes": data}},
                          allow=["echo"]) as p:
        yield p


def job_dirs(pair: LocalPair) -> dict[str, list[str]]:
    return {party: sorted(d.name for d in (n.config.parent / "state" / "jobs").glob("*"))
            for party, n in pair.nodes.items()}


def test_echo_job_runs_both_ways(pair: LocalPair) -> None:
    record = pair.submit({"job": {"protocol": "echo", "id": "echo-ok"},
                          "datasets": {"platform": {"features": "users"}, "lender": {"labels": "outcomes"}},
                          "params": {"rounds": 2, "n_rows": 500}}, timeout=60)
    assert record["status"] == "succeeded", record
    result = record["result"]
    assert result["matched"] and result["peer"] == "platform" and result["messages_received"] == 3
    peer_side = pair.status("platform", "echo-ok")
    assert peer_side["status"] == "succeeded" and peer_side["result"]["datasets"] == ["features"]
    ledger = pair.nodes["platform"].config.parent / "state" / "egress.jsonl"
    sent = [json.loads(line) for line in ledger.read_text().splitlines()]
    assert [e["type"] for e in sent if e["job"] == "echo-ok"] == ["echo.hello", "echo.reply", "echo.reply"]
    assert "round 2 of 2 echoed" in pair.client("lender").logs("echo-ok")


@pytest.mark.parametrize("job, reason", [
    ({"job": {"protocol": "echo", "id": "bad-ds"}, "datasets": {"platform": {"features": "secret_table"}}},
     "platform refused job 'bad-ds': platform has no registered data set 'secret_table'"),
    ({"job": {"protocol": "echo", "id": "bad-own-ds"}, "datasets": {"lender": {"labels": "nope"}}},
     "lender has no registered data set 'nope'"),
    ({"job": {"protocol": "psi-or-anything", "id": "bad-proto"}}, "lender does not allow protocol"),
])
def test_refused_jobs_leave_no_state(pair: LocalPair, job: dict, reason: str) -> None:
    before = job_dirs(pair)
    with pytest.raises(ValueError, match=reason):
        pair.submit(job)
    assert job_dirs(pair) == before


def test_node_refuses_a_peer_with_the_wrong_certificate(pair: LocalPair) -> None:
    before = job_dirs(pair)
    mallory_certs = init_certs(["mallory"], pair.root / "mallory-ca")
    same_ca = init_certs(["lender", "mallory"], pair.root / "other")  # right name, wrong CA
    port = int(pair.nodes["platform"].config.read_text().split("127.0.0.1:")[1].split('"')[0])
    doc = json.dumps({"id": "evil", "protocol": "echo", "initiator": "lender", "datasets": {}, "params": {}})
    for files, name, code in ((mallory_certs["mallory"], "mallory", grpc.StatusCode.UNAVAILABLE),
                              (same_ca["lender"], "lender", grpc.StatusCode.UNAVAILABLE),
                              (init_certs(["x"], pair.root / "x")["x"], "x", grpc.StatusCode.UNAVAILABLE)):
        client = PeerClient(name, "platform", f"127.0.0.1:{port}", files)
        with pytest.raises(grpc.RpcError) as err:
            client.stub.ProposeJob(pb.JobDocument(json=doc), timeout=5)
        assert err.value.code() == code
        client.close()
    # a certificate from the nodes' own CA, but not naming the configured peer
    mallory = issue_cert(pair.certs, "mallory", pair.root / "mallory-same-ca")
    client = PeerClient("mallory", "platform", f"127.0.0.1:{port}", mallory)
    with pytest.raises(grpc.RpcError) as err:
        client.stub.ProposeJob(pb.JobDocument(json=doc), timeout=5)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'mallory'" in err.value.details()
    client.close()
    assert job_dirs(pair) == before


def test_cli_submit_status_logs(pair: LocalPair, tmp_path: Path) -> None:
    job = tmp_path / "echo.toml"
    job.write_text('[job]\nprotocol = "echo"\nid = "cli-echo"\n\n[params]\nrounds = 1\n')
    cfg = str(pair.nodes["lender"].config)
    run = subprocess.run([sys.executable, "-m", "fedacq.cli", "job", "--config", cfg, "submit", str(job), "--wait"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert '"status": "succeeded"' in run.stdout
    status = subprocess.run([sys.executable, "-m", "fedacq.cli", "job", "--config", cfg, "status", "nope"],
                            capture_output=True, text=True, timeout=60)
    assert status.returncode == 2 and "no job 'nope'" in status.stderr


def test_killed_peer_fails_the_job_clearly_and_a_restarted_node_takes_new_jobs(pair: LocalPair) -> None:
    record = pair.submit({"job": {"protocol": "echo", "id": "long-echo"},
                          "params": {"rounds": 100000, "n_rows": 20000, "width": 8}}, wait=False)
    client = pair.client("lender")
    deadline = time.monotonic() + 60
    while pair.status("platform", record["id"])["status"] != "running":  # both sides are under way
        assert time.monotonic() < deadline, "the echo job never started at the platform"
        time.sleep(0.1)
    pair.nodes["platform"].kill()
    failed = client.wait(record["id"], timeout=120)
    assert failed["status"] == "failed" and "platform" in failed["error"], failed
    assert any(w in failed["error"] for w in ("unreachable", "went away", "UNAVAILABLE")), failed["error"]

    pair.nodes["platform"].start(timeout=60)
    stale = pair.status("platform", "long-echo")
    assert stale["status"] == "interrupted" and "node stopped" in stale["error"]
    again = pair.submit({"job": {"protocol": "echo", "id": "after-restart"}, "params": {"rounds": 1}}, timeout=60)
    assert again["status"] == "succeeded"
    # job state survives a restart of the submitting node too
    pair.restart("lender", timeout=60)
    assert pair.status("lender", "after-restart")["status"] == "succeeded"


def test_an_interrupted_job_resumes_as_its_next_attempt_at_both_nodes(pair: LocalPair) -> None:
    record = pair.submit({"job": {"protocol": "echo", "id": "resumable"},
                          "params": {"rounds": 100000, "n_rows": 2000, "width": 8}}, wait=False)
    deadline = time.monotonic() + 60
    while pair.status("platform", record["id"])["status"] != "running":
        assert time.monotonic() < deadline, "the echo job never started at the platform"
        time.sleep(0.1)
    pair.nodes["platform"].kill()
    assert pair.client("lender").wait(record["id"], timeout=120)["status"] == "failed"
    pair.nodes["platform"].start(timeout=60)
    assert pair.status("platform", "resumable")["status"] == "interrupted"

    with pytest.raises(ValueError, match="submitted by lender; resume it there"):
        pair.client("platform").resume("resumable")
    client = pair.client("lender")
    resumed = client.resume("resumable")
    assert resumed["spec"]["attempt"] == 1
    assert pair.status("platform", "resumable")["spec"]["attempt"] == 1  # the platform agreed to attempt 1
    client.close()
    # a resumed job is the same job: its parameters cannot change, and a running one cannot resume again
    with pytest.raises(ValueError, match="is running at lender"):
        pair.client("lender").resume("resumable")
