"""A CA per party: each party makes its own CA and key, the two exchange only CA certificates,
and two link endpoints talk over mutual TLS trusting exactly the peer's CA; a certificate from
any other CA is refused in both directions."""

from __future__ import annotations

import stat

import grpc
import pytest

from fedacq.crypto.tls import TlsFiles, init_party, issue_cert, party_tls_files, trust_peer
from fedacq.link.grpc_link import PeerClient, PeerEndpoint
from fedacq.link.message import Message, MessageSpec, register

register(MessageSpec("test.party_ca", optional_header={"i": int}))


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    own = {p: init_party(p, d / p) for p in ("lender", "platform")}
    trust_peer(d / "lender", "platform", own["platform"].ca)  # only ca.pem crosses
    trust_peer(d / "platform", "lender", own["lender"].ca)
    return d


@pytest.fixture
def pair(certs):
    a = PeerEndpoint("lender", "platform", party_tls_files(certs / "lender", "lender", "platform"), "127.0.0.1:0",
                     liveness_interval=0.5, retry_for=1.0)
    b = PeerEndpoint("platform", "lender", party_tls_files(certs / "platform", "platform", "lender"), "127.0.0.1:0",
                     liveness_interval=0.5, retry_for=1.0)
    a.connect(f"127.0.0.1:{b.port}")
    b.connect(f"127.0.0.1:{a.port}")
    a.start(), b.start()
    yield a, b
    a.stop(), b.stop()


def test_each_party_holds_only_its_own_keys(certs) -> None:
    assert sorted(p.name for p in (certs / "lender").iterdir()) == [
        "ca.key", "ca.pem", "lender.key", "lender.pem", "platform-ca.pem"]
    for party in ("lender", "platform"):
        for key in ("ca.key", f"{party}.key"):
            assert stat.S_IMODE((certs / party / key).stat().st_mode) == 0o600
    assert (certs / "lender" / "platform-ca.pem").read_bytes() == (certs / "platform" / "ca.pem").read_bytes()
    assert (certs / "lender" / "ca.pem").read_bytes() != (certs / "platform" / "ca.pem").read_bytes()


def test_parties_with_their_own_cas_exchange_messages(pair) -> None:
    a, b = pair
    la, lb = a.link("j"), b.link("j")
    la.send(Message("test.party_ca", {"i": 1}))
    assert lb.recv("test.party_ca", timeout=10).header == {"i": 1}
    lb.send(Message("test.party_ca", {"i": 2}))
    assert la.recv("test.party_ca", timeout=10).header == {"i": 2}


def test_a_certificate_from_another_ca_is_refused_both_ways(pair, certs, tmp_path) -> None:
    a, b = pair
    b.link("j")
    # mallory's own CA issues a certificate named "lender", and mallory trusts the real platform
    fake = init_party("lender", tmp_path / "mallory")
    as_lender = TlsFiles(certs / "lender" / "platform-ca.pem", fake.cert, fake.key)
    client = PeerClient("lender", "platform", f"127.0.0.1:{b.port}", as_lender)
    with pytest.raises(grpc.RpcError) as err:
        client.ping("j")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the platform's server refused the handshake
    client.close()
    # the lender's own CA issues a certificate named "platform": the lender's client, which
    # trusts only the platform's CA, refuses a server presenting it
    fake_platform = init_party("platform", tmp_path / "mallory2")
    server = PeerEndpoint("platform", "lender", TlsFiles(certs / "platform" / "lender-ca.pem", fake_platform.cert,
                                                         fake_platform.key), "127.0.0.1:0").start()
    try:
        lender = PeerClient("lender", "platform", f"127.0.0.1:{server.port}",
                            party_tls_files(certs / "lender", "lender", "platform"))
        with pytest.raises(grpc.RpcError) as err:
            lender.ping("j")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        lender.close()
    finally:
        server.stop()


def test_a_node_trusts_exactly_the_peer_ca_not_its_own(pair, certs, tmp_path) -> None:
    """The platform's server accepts no client certificate its own CA signed, even one named
    "lender": its trust anchor is the lender's CA only."""
    a, b = pair
    b.link("j")
    minted = issue_cert(certs / "platform", "lender", out=tmp_path / "minted")
    client = PeerClient("lender", "platform", f"127.0.0.1:{b.port}",
                        TlsFiles(certs / "platform" / "ca.pem", minted.cert, minted.key))
    with pytest.raises(grpc.RpcError) as err:
        client.ping("j")
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    client.close()


def test_trust_peer_installs_only_a_ca_certificate(certs, tmp_path) -> None:
    d = certs / "lender"
    with pytest.raises(ValueError, match="contains a private key"):
        trust_peer(d, "platform", certs / "platform" / "ca.key")
    with pytest.raises(ValueError, match="not a CA certificate"):
        trust_peer(d, "platform", certs / "platform" / "platform.pem")
    with pytest.raises(ValueError, match="own CA"):
        trust_peer(d, "other", d / "ca.pem")
    with pytest.raises(ValueError, match="not a PEM certificate|expected one certificate"):
        (tmp_path / "junk.pem").write_text("hello")
        trust_peer(d, "platform", tmp_path / "junk.pem")
    assert trust_peer(d, "platform", certs / "platform" / "ca.pem") == d / "platform-ca.pem"  # same: no change
    other = init_party("platform", tmp_path / "other-platform")
    with pytest.raises(ValueError, match="already holds a different CA certificate"):
        trust_peer(d, "platform", other.ca)
    with pytest.raises(ValueError, match="party name"):
        trust_peer(d, "../x", certs / "platform" / "ca.pem")


def test_init_party_keeps_an_existing_ca(tmp_path) -> None:
    first = init_party("lender", tmp_path / "l")
    with pytest.raises(ValueError, match="already exists"):
        init_party("lender", tmp_path / "l")
    ca = first.ca.read_bytes()
    assert init_party("lender", tmp_path / "l", keep_existing=True) == first
    assert first.ca.read_bytes() == ca


def test_certs_cli_per_party_and_exchange(tmp_path, capsys) -> None:
    from fedacq.cli import main

    out = tmp_path / "certs"
    assert main(["certs", "init", "--per-party", "--parties", "lender,platform", "--out", str(out)]) == 0
    assert main(["certs", "init", "--per-party", "--parties", "lender,platform", "--out", str(out),
                 "--keep-existing"]) == 0  # compose reruns it on every start
    for party, peer in (("lender", "platform"), ("platform", "lender")):
        assert (out / party / f"{peer}-ca.pem").read_bytes() == (out / peer / "ca.pem").read_bytes()
        assert not (out / party / f"{peer}.key").exists()
    assert main(["certs", "init-party", "--party", "lender", "--out", str(tmp_path / "l")]) == 0
    assert main(["certs", "init-party", "--party", "platform", "--out", str(tmp_path / "p")]) == 0
    assert main(["certs", "trust-peer", "--dir", str(tmp_path / "l"), "--peer", "platform",
                 "--ca", str(tmp_path / "p" / "ca.pem")]) == 0
    assert "send only" in capsys.readouterr().out
    assert main(["certs", "trust-peer", "--dir", str(tmp_path / "l"), "--peer", "platform",
                 "--ca", str(tmp_path / "p" / "platform.key")]) == 2
    assert "private key" in capsys.readouterr().err
    assert main(["certs", "issue", "--ca", str(tmp_path / "p"), "--party", "bidder",
                 "--out", str(tmp_path / "bidder")]) == 0
    assert (tmp_path / "bidder" / "ca.pem").read_bytes() == (tmp_path / "p" / "ca.pem").read_bytes()
    assert main(["certs", "init", "--parties", "lender,platform", "--out", str(tmp_path / "dev")]) == 0  # shared dev CA
    assert (tmp_path / "dev" / "lender.key").exists() and (tmp_path / "dev" / "platform.key").exists()
