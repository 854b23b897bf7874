"""Boost service access control over real gRPC on 127.0.0.1 with mutual TLS: who may call
what (allowlist of certificate names and roles), Reload only by a name under the served root,
versions only forward, and the admin rollback as the only, logged, way back."""

from __future__ import annotations

import datetime as dt
import logging
import os

import grpc
import numpy as np
import pandas as pd
import pytest

from fedacq.activate.service import BoostClient, BoostRegistry, BoostServer, parse_allow
from fedacq.activate.table import ExperimentConfig, build_boost_table
from fedacq.crypto.tls import init_party, issue_cert

NOW = dt.datetime.now(dt.timezone.utc)
ALLOW = ["bidder=lookup", "ops=admin"]


def _write(root, version: str, created: dt.datetime, campaign: str = "camp", n: int = 200):
    scores = pd.DataFrame({"user_id": [f"u{i}" for i in range(n)], "score": np.random.default_rng(0).random(n)})
    t = build_boost_table(scores, campaign, experiment=ExperimentConfig(layer="acq", salt="s"), version=version,
                          expiry=dt.timedelta(hours=2), now=created)
    return t.write(root / campaign / version)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    """The platform's own CA signs the service and its clients; 'lender' stands for any certificate
    the CA signed for someone the service does not list (as with the shared dev CA)."""
    d = tmp_path_factory.mktemp("certs")
    init_party("platform", d / "platform")
    for name in ("bidder", "ops", "lender"):
        issue_cert(d / "platform", name, out=d / name)
    return d


@pytest.fixture
def service(tmp_path, certs):
    root = tmp_path / "tables"
    _write(root, "v1", NOW)
    registry = BoostRegistry(root)
    registry.load(root / "camp" / "v1")
    server = BoostServer(registry, tls_dir=certs / "platform", allow=parse_allow(ALLOW)).start()
    clients: list[BoostClient] = []

    def client(name: str) -> BoostClient:
        c = BoostClient(f"127.0.0.1:{server.port}", tls_dir=certs / name, tls_name=name)
        clients.append(c)
        return c

    yield root, registry, client, server
    for c in clients:
        c.close()
    server.stop(None)


def _denied(call) -> str:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
    return err.value.details()


def test_a_certificate_not_on_the_allowlist_is_denied_every_rpc(service) -> None:
    root, registry, client, _ = service
    _write(root, "v0", NOW - dt.timedelta(hours=1))
    _write(root, "v2", NOW + dt.timedelta(seconds=5))
    lender = client("lender")  # a valid certificate from the service's CA, but not listed
    for call in (lambda: lender.lookup("camp", ["u1"]), lambda: lender.status(), lambda: lender.reload("camp/v2"),
                 lambda: lender.rollback("v0")):
        assert "'lender' is not allowed" in _denied(call)
    assert registry.get("camp").version == "v1"


def test_lookup_role_looks_up_but_cannot_reload_or_roll_back(service) -> None:
    root, registry, client, _ = service
    _write(root, "v2", NOW + dt.timedelta(seconds=5))
    bidder = client("bidder")
    assert bidder.lookup("camp", ["u1"]).table_version == "v1"
    assert bidder.status().tables[0].table_version == "v1"
    assert "needs admin" in _denied(lambda: bidder.reload("camp/v2"))
    assert "needs admin" in _denied(lambda: bidder.rollback("v1"))
    assert registry.get("camp").version == "v1"


def test_admin_reloads_by_name_but_does_not_look_up(service) -> None:
    _root, registry, client, _ = service
    _write(_root, "v2", NOW + dt.timedelta(seconds=5))
    ops = client("ops")
    rep = ops.reload("camp/v2")
    assert (rep.campaign, rep.table_version, rep.rows) == ("camp", "v2", 200)
    assert registry.get("camp").version == "v2"
    assert "needs lookup" in _denied(lambda: ops.lookup("camp", ["u1"]))


@pytest.mark.parametrize("name", ["../outside/v9", "/etc", "camp/../../outside/v9", ".hidden", "", "camp//v1",
                                  "a/" * 9 + "v"])
def test_reload_takes_only_a_name_under_the_root(service, tmp_path, name) -> None:
    _root, registry, client, _ = service
    _write(tmp_path / "outside", "v9", NOW + dt.timedelta(seconds=9))
    with pytest.raises(grpc.RpcError) as err:
        client("ops").reload(name)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "table name" in err.value.details()
    assert registry.get("camp").version == "v1"


def test_a_symlink_out_of_the_root_is_refused(service, tmp_path) -> None:
    root, registry, client, _ = service
    outside = _write(tmp_path / "outside", "v9", NOW + dt.timedelta(seconds=9))
    os.symlink(outside, root / "camp" / "v9")
    with pytest.raises(grpc.RpcError) as err:
        client("ops").reload("camp/v9")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "outside the served root" in err.value.details()
    assert registry.get("camp").version == "v1"


def test_versions_only_move_forward(service) -> None:
    root, registry, client, _ = service
    _write(root, "v0", NOW - dt.timedelta(hours=1))
    ops = client("ops")
    for old in ("camp/v0", "camp/v1"):  # older, and the one being served
        with pytest.raises(grpc.RpcError) as err:
            ops.reload(old)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "versions only move forward" in err.value.details() and "rollback --to" in err.value.details()
    assert registry.get("camp").version == "v1"
    assert "not newer than v1" in ops.status().errors[-1]


def test_rollback_is_admin_only_explicit_and_logged(service, caplog) -> None:
    root, registry, client, _ = service
    _write(root, "v2", NOW + dt.timedelta(seconds=5))
    ops, bidder = client("ops"), client("bidder")
    ops.reload("camp/v2")
    with caplog.at_level(logging.WARNING, logger="fedacq.activate.service"):
        rep = ops.rollback("v1")
    assert rep.table_version == "v1" and bidder.lookup("camp", ["u1"]).table_version == "v1"
    (line,) = [r.getMessage() for r in caplog.records if "ROLLBACK" in r.getMessage()]
    assert "from v2 to v1" in line and "'ops'" in line
    for version, reason in (("v2", "not older than v1"), ("v7", "no table with version 'v7'"), ("", "version of 1")):
        with pytest.raises(grpc.RpcError) as err:
            ops.rollback(version)
        assert reason in err.value.details()
    assert registry.get("camp").version == "v1"
    assert ops.reload("camp/v2").table_version == "v2"  # forward again by reload


def test_cli_reload_and_rollback_with_certificates(service, certs, capsys) -> None:
    from fedacq.cli import main

    root, registry, _client, server = service
    _write(root, "v2", NOW + dt.timedelta(seconds=5))
    common = ["--address", f"127.0.0.1:{server.port}", "--tls-dir", str(certs / "ops"), "--tls-name", "ops"]
    assert main(["boosts", "reload", "--table", "camp/v2", *common]) == 0
    assert "serving v2" in capsys.readouterr().out
    assert main(["boosts", "rollback", "--to", "v1", *common]) == 0
    assert "rolled back: serving v1" in capsys.readouterr().out
    assert main(["boosts", "rollback", "--to", "v1", "--address", f"127.0.0.1:{server.port}",
                 "--tls-dir", str(certs / "bidder"), "--tls-name", "bidder"]) == 2
    assert "PERMISSION_DENIED" in capsys.readouterr().err
    assert registry.get("camp").version == "v1"


def test_allowlist_configuration_is_checked() -> None:
    assert parse_allow(["bidder=lookup", "ops=admin", "ops=lookup"]) == {
        "bidder": frozenset({"lookup"}), "ops": frozenset({"admin", "lookup"})}
    for bad in (["bidder"], ["bidder=root"], ["=lookup"], ["bid der=lookup"]):
        with pytest.raises(ValueError, match="--allow"):
            parse_allow(bad)
    with pytest.raises(ValueError, match="needs an allowlist"):
        BoostServer(BoostRegistry(), tls_dir="/nonexistent")
    with pytest.raises(ValueError, match="every caller is 'loopback'"):
        BoostServer(BoostRegistry(), allow=parse_allow(["bidder=lookup"]))


def test_plaintext_loopback_roles_are_configurable(tmp_path) -> None:
    root = tmp_path / "tables"
    _write(root, "v1", NOW)
    _write(root, "v2", NOW + dt.timedelta(seconds=5))
    registry = BoostRegistry(root)
    registry.load(root / "camp" / "v1")
    server = BoostServer(registry, allow=parse_allow(["loopback=lookup"])).start()
    client = BoostClient(server.address)
    try:
        assert client.lookup("camp", ["u1"]).table_version == "v1"
        assert "'loopback' has role(s) ['lookup']" in _denied(lambda: client.reload("camp/v2"))
    finally:
        client.close()
        server.stop(None)


def test_boost_serve_with_tls_refuses_to_start_without_an_allowlist(tmp_path, certs, capsys) -> None:
    from fedacq.cli import main

    (tmp_path / "tables").mkdir()
    argv = ["boost-serve", "--tables", str(tmp_path / "tables"), "--tls-dir", str(certs / "platform"),
            "--address", "127.0.0.1:0"]
    assert main(argv) == 2
    assert "needs an allowlist" in capsys.readouterr().err
    assert main([*argv, "--allow", "bidder=superuser"]) == 2
    assert "unknown role(s) ['superuser']" in capsys.readouterr().err
