"""Job documents, job state persistence and node config errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedacq.node.config import load_config
from fedacq.node.jobs import JobStore, parse_job, spec_from_json


@pytest.mark.parametrize("doc, reason", [
    ({"job": {}}, "protocol is required"),
    ({"job": {"protocol": "echo", "id": "../../etc"}}, "job id"),
    ({"job": {"protocol": "echo"}, "params": {"x": float("nan")}}, "JSON-able"),
    ({"job": {"protocol": "echo"}, "datasets": {"lender": ["a"]}}, "datasets"),
])
def test_bad_job_documents_are_refused(doc: dict, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_job(doc, "JOB.toml")


def test_job_json_round_trip_keeps_initiator() -> None:
    spec = parse_job({"job": {"protocol": "echo", "id": "a1"}, "datasets": {"platform": {"f": "users"}},
                      "params": {"rounds": 2}}, "JOB.toml", initiator="lender")
    assert spec_from_json(spec.to_json(), "peer") == spec


def test_job_state_survives_a_restart(tmp_path: Path) -> None:
    store = JobStore(tmp_path)
    spec = parse_job({"job": {"protocol": "echo", "id": "j1"}}, "x")
    store.create(spec)
    store.update("j1", status="running")
    store.create(parse_job({"job": {"protocol": "echo", "id": "j2"}}, "x"))
    store.update("j2", status="succeeded", result={"ok": True})
    restarted = JobStore(tmp_path)
    assert restarted.recover() == ["j1"]
    assert restarted.get("j1")["status"] == "interrupted" and "fedacq job resume j1" in restarted.get("j1")["error"]
    assert restarted.get("j2")["result"] == {"ok": True}
    with pytest.raises(ValueError, match="already exists"):
        restarted.create(spec)


def test_config_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "party.toml"
    path.write_text('[node]\nparty = "lender"\nlisten = "127.0.0.1:1"\n[peer]\nname = "platform"\n')
    with pytest.raises(ValueError, match=r"party\.toml: missing \[peer\] address"):
        load_config(path)
    path.write_text("[node\n")
    with pytest.raises(ValueError, match="not valid TOML"):
        load_config(path)
