"""The TLS a node's server negotiates: TLS 1.3, or TLS 1.2 with an ECDHE + AEAD suite; TLS 1.2
offering only CBC suites, and TLS 1.1, are refused. Probed with Python's ``ssl`` module as the
client against a real ``fedacq node`` process on 127.0.0.1 (see ``fedacq/crypto/tls.py``)."""

from __future__ import annotations

import shutil
import socket
import ssl
import tempfile
import threading
import warnings
from pathlib import Path

import pytest

from fedacq.crypto.tls import CIPHER_ENV, TlsFiles, init_certs
from fedacq.link.grpc_link import PeerClient
from fedacq.node.local import LocalNode, free_port, write_party_config

V = ssl.TLSVersion
CBC_ONLY = "ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA"


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    """The platform's node, started without GRPC_SSL_CIPHER_SUITES in its environment: fedacq sets it."""
    root = tmp_path_factory.mktemp("policy")
    certs = init_certs(["lender", "platform"], root / "certs")
    port = free_port()
    sock_dir = Path(tempfile.mkdtemp(prefix="fq-"))
    config = write_party_config(root / "platform" / "party.toml", "platform", "lender", port, free_port(),
                                root / "certs", allow=["echo"], datasets={}, mlflow=root / "mlruns",
                                control_socket=sock_dir / "platform.sock")
    node = LocalNode("platform", config, sock_dir / "platform.sock")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(CIPHER_ENV, raising=False)
        node.launch()
    try:
        node.wait_ready(60)
        yield port, certs
    finally:
        node.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def _client_context(files: TlsFiles, version: V, ciphers: str | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(files.ca)
    ctx.load_cert_chain(files.cert, files.key)
    ctx.check_hostname = False
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    if ciphers:
        ctx.set_ciphers(ciphers + ":@SECLEVEL=0")  # let OpenSSL 3 offer what it would refuse by default
    ctx.set_alpn_protocols(["h2"])
    return ctx


def _handshake(ctx: ssl.SSLContext, port: int) -> tuple[str, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="platform") as s:
            return s.version(), s.cipher()[0]


def _control_server(files: TlsFiles, version: V, ciphers: str) -> tuple[int, threading.Thread, list]:
    """A permissive Python TLS server taking one handshake: shows the client really offers
    ``version``/``ciphers``, so a refusal by the node is the node's doing."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(files.cert, files.key)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx.minimum_version = ctx.maximum_version = version
    ctx.set_ciphers(ciphers + ":@SECLEVEL=0")
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list = []

    def serve() -> None:
        with listener:
            conn, _ = listener.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    pass
            except (ssl.SSLError, OSError) as exc:
                errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener.getsockname()[1], thread, errors


def _offerable(files: TlsFiles, version: V, ciphers: str) -> bool:
    port, thread, errors = _control_server(files, version, ciphers)
    try:
        _handshake(_client_context(files, version, ciphers), port)
    except (ssl.SSLError, OSError):
        return False
    finally:
        thread.join(10)
    return not errors


def test_tls13_and_aead_tls12_connect(node) -> None:
    port, certs = node
    lender = certs["lender"]
    assert _handshake(_client_context(lender, V.TLSv1_3), port)[0] == "TLSv1.3"
    assert _handshake(_client_context(lender, V.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256"), port) == (
        "TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")
    # ChaCha20-Poly1305 is in fedacq's list but not in gRPC's built-in one: fedacq's list is in force
    assert _handshake(_client_context(lender, V.TLSv1_2, "ECDHE-ECDSA-CHACHA20-POLY1305"), port) == (
        "TLSv1.2", "ECDHE-ECDSA-CHACHA20-POLY1305")


def test_the_node_answers_a_normal_grpc_client(node) -> None:
    port, certs = node
    client = PeerClient("lender", "platform", f"127.0.0.1:{port}", certs["lender"])
    try:
        assert client.ping("", timeout=10).party == "platform"
    finally:
        client.close()


@pytest.mark.parametrize("version, ciphers", [(V.TLSv1_2, CBC_ONLY), (V.TLSv1_1, "DEFAULT")],
                         ids=["tls1.2-cbc-only", "tls1.1"])
def test_weak_offers_are_refused(node, version, ciphers) -> None:
    port, certs = node
    lender = certs["lender"]
    if not _offerable(lender, version, ciphers):
        pytest.skip(f"this Python's OpenSSL cannot offer {version.name} with {ciphers}")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        _handshake(_client_context(lender, version, ciphers), port)
