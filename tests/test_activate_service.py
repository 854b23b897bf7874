"""Boost service: look-ups over gRPC, hot reload without failed requests, bad tables refused."""

from __future__ import annotations

import datetime as dt
import json
import threading

import grpc
import numpy as np
import pandas as pd
import pytest

from fedacq.activate.buckets import bucket_of
from fedacq.activate.service import BoostClient, BoostRegistry, BoostServer, TableWatcher
from fedacq.activate.table import MANIFEST_FILE, ExperimentConfig, build_boost_table
from fedacq.activate.tiers import TierConfig

EXP = ExperimentConfig(layer="acq", salt="svc")
TIERS = TierConfig(cuts=(0.5,), boosts=(1.0, 1.5))


def _table(n: int, version: str, seed: int, created: dt.datetime | None = None):
    rng = np.random.default_rng(seed)
    scores = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "score": rng.random(n)})
    return build_boost_table(scores, "camp", TIERS, EXP, default_boost=1.2, version=version,
                             expiry=dt.timedelta(hours=1), now=created)


@pytest.fixture
def served(tmp_path):
    t1 = _table(5000, "v1", 1)
    t1.write(tmp_path / "tables" / "camp" / "v1")
    registry = BoostRegistry(tmp_path / "tables")
    registry.load(tmp_path / "tables" / "camp" / "v1")
    server = BoostServer(registry).start()
    client = BoostClient(server.address)
    client.wait_ready()
    yield tmp_path, t1, registry, client
    client.close()
    server.stop(None)


def test_lookup_known_and_unknown_users(served):
    _, t1, _, client = served
    ids = ["u3", "u4999", "nobody-1", "nobody-2", "nobody-3"]
    r = client.lookup("camp", ids)
    assert r.table_version == "v1" and r.layer == "acq" and not r.expired
    assert list(r.known) == [True, True, False, False, False]
    np.testing.assert_allclose(r.boosts[:2], t1.data["boost"].iloc[[3, 4999]])
    assert list(r.buckets) == bucket_of(ids, "acq", "svc").tolist()
    treat = EXP.treatment_mask()[np.array(r.buckets)]
    assert list(r.treatment) == treat.tolist()
    unknown_boost = np.where(treat[2:], 1.2, 1.0)
    np.testing.assert_allclose(r.boosts[2:], unknown_boost, rtol=1e-6)
    with pytest.raises(grpc.RpcError) as err:
        client.lookup("other-campaign", ["u1"])
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_hot_reload_mid_traffic_fails_no_request(served):
    tmp_path, _, _, client = served
    _table(50_000, "v2", 2).write(tmp_path / "tables" / "camp" / "v2")
    ids = [f"u{i}" for i in range(100)]
    stop, failures, versions = threading.Event(), [], set()

    def traffic():
        while not stop.is_set():
            try:
                versions.add(client.lookup("camp", ids).table_version)
            except grpc.RpcError as exc:  # any failure is a test failure
                failures.append(exc)

    threads = [threading.Thread(target=traffic) for _ in range(3)]
    for t in threads:
        t.start()
    try:
        rep = client.reload("camp/v2")
        assert rep.table_version == "v2" and rep.rows == 50_000
        for _ in range(20):
            versions.add(client.lookup("camp", ids).table_version)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not failures
    assert versions == {"v1", "v2"}
    assert client.lookup("camp", ids).table_version == "v2"


@pytest.mark.parametrize("fault,msg", [("expired", "expired"), ("checksum", "checksum mismatch"),
                                       ("duplicates", "duplicate")])
def test_bad_table_refused_and_last_good_kept(served, fault, msg):
    tmp_path, _, registry, client = served
    bad = tmp_path / "tables" / "camp" / "bad"
    t = _table(1000, "bad", 3)
    if fault == "duplicates":
        t.data = pd.concat([t.data, t.data.iloc[[0]]], ignore_index=True)
    t.write(bad)
    m = json.loads((bad / MANIFEST_FILE).read_text())
    if fault == "expired":
        m["expires_at"] = "2021-01-01T00:00:00Z"
    elif fault == "checksum":
        m["sha256"] = "0" * 64
    (bad / MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(grpc.RpcError) as err:
        client.reload("camp/bad")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert msg in err.value.details() and "still serving" in err.value.details()
    assert client.lookup("camp", ["u1"]).table_version == "v1"
    assert msg in client.status().errors[-1]


def test_watcher_loads_newest_valid_version(served):
    tmp_path, _, registry, client = served
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=5)
    _table(800, "v3", 4, created=later).write(tmp_path / "tables" / "camp" / "v3")
    broken = tmp_path / "tables" / "camp" / "v4"
    _table(800, "v4", 5, created=later + dt.timedelta(seconds=5)).write(broken)
    (broken / "boosts.parquet").write_bytes(b"not parquet")
    watcher = TableWatcher(registry)
    assert watcher.scan() == ["v3"]  # v4 is newer but corrupt; v1 is older than what is served
    assert client.lookup("camp", ["u1"]).table_version == "v3"
    assert watcher.scan() == []  # nothing new
    assert any("v4" in e and "checksum" in e for e in client.status().errors)
    st = client.status().tables[0]
    assert (st.campaign, st.table_version, st.rows) == ("camp", "v3", 800)


def test_expired_while_serving_returns_unit_boosts(served, monkeypatch):
    _, _, registry, client = served
    lookup = registry.get("camp")
    monkeypatch.setattr(lookup, "_expires_ts", 0.0)
    r = client.lookup("camp", ["u1", "u2", "x"])
    assert r.expired and list(r.boosts) == [1.0, 1.0, 1.0]


def test_mutual_tls(tmp_path):
    from fedacq.crypto.tls import init_certs

    init_certs(["platform", "bidder"], tmp_path / "certs")
    _table(100, "v1", 1).write(tmp_path / "t" / "v1")
    registry = BoostRegistry(tmp_path / "t")
    registry.load(tmp_path / "t" / "v1")
    server = BoostServer(registry, tls_dir=tmp_path / "certs", allow={"bidder": frozenset({"lookup"})}).start()
    try:
        client = BoostClient(f"127.0.0.1:{server.port}", tls_dir=tmp_path / "certs")
        assert client.lookup("camp", ["u1"]).table_version == "v1"
        client.close()
        plain = BoostClient(f"127.0.0.1:{server.port}")
        with pytest.raises(grpc.RpcError):
            plain.lookup("camp", ["u1"], timeout=2)
        plain.close()
    finally:
        server.stop(None)


def test_boost_serve_cli_watches_directory(tmp_path):
    import subprocess
    import sys
    import time

    tables = tmp_path / "tables"
    _table(300, "v1", 1).write(tables / "camp" / "v1")
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "fedacq.cli", "boost-serve", "--tables", str(tables),
                             "--address", "127.0.0.1:0", "--port-file", str(port_file), "--watch-interval", "0.2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "boost-serve did not start"
            time.sleep(0.05)
        client = BoostClient(f"127.0.0.1:{port_file.read_text()}")
        assert client.lookup("camp", ["u1"]).table_version == "v1"
        later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=1)
        _table(300, "v2", 2, created=later).write(tables / "camp" / "v2")
        while client.lookup("camp", ["u1"]).table_version != "v2":
            assert time.monotonic() < deadline, "new version not picked up by the watcher"
            time.sleep(0.1)
        client.close()
    finally:
        proc.terminate()
        proc.wait(10)


def test_watcher_orders_versions_built_within_one_second(tmp_path):
    for version in ("a", "b", "c"):  # built back to back: same second, increasing microseconds
        _table(50, version, 1).write(tmp_path / "camp" / version)
    registry = BoostRegistry(tmp_path)
    assert TableWatcher(registry).scan() == ["c"]


def test_cli_lookup_and_reload_against_a_service(served, capsys):
    from fedacq.cli import main

    tmp_path, _, _, client = served
    address = client.address
    assert main(["boosts", "lookup", "--address", address, "--campaign", "camp", "u1", "stranger"]) == 0
    out = capsys.readouterr().out
    assert "table v1" in out and "u1\tboost=" in out and "unknown" in out
    _table(100, "v9", 9).write(tmp_path / "tables" / "camp" / "v9")
    assert main(["boosts", "reload", "--address", address, "--table", "camp/v9"]) == 0
    assert "serving v9" in capsys.readouterr().out
    assert main(["boosts", "lookup", "--address", address, "--campaign", "nope", "u1"]) == 2
    assert "NOT_FOUND" in capsys.readouterr().err


def test_plaintext_only_on_loopback(tmp_path) -> None:
    """Look-ups carry user ids: without TLS the service refuses to listen beyond loopback."""
    from fedacq.activate.service import BoostRegistry, BoostServer

    with pytest.raises(ValueError, match="not a loopback address"):
        BoostServer(BoostRegistry(), address="0.0.0.0:0")
