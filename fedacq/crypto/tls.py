"""Certificates for the party link: per-party CAs (or a shared dev CA), party certificates,
gRPC credentials, and the TLS versions and cipher suites gRPC may negotiate.

Each node proves who it is with a certificate whose common name *and* DNS
subject-alternative name are the party name (plus ``localhost`` and
``127.0.0.1`` so that nodes on one machine can reach each other). Identity is
checked on both ends of every connection:

* the client pins the server's name by connecting with
  ``grpc.ssl_target_name_override = <peer name>``, so a certificate issued to any
  other name fails the TLS hostname check;
* the server requires a client certificate that chains to its trust anchor and
  then compares its common name with the one peer it is configured for
  (:func:`peer_common_name`).

**Who signs what.** In production each party makes its own CA and key
(:func:`init_party`, ``fedacq certs init-party``), keeps the CA key to itself
and sends the other party only its CA *certificate*, which the other installs
as ``<peer>-ca.pem`` (:func:`trust_peer`, ``fedacq certs trust-peer``). A node's
trust anchor (``[tls] ca``) is then exactly the peer's CA: it accepts no
certificate its own CA or any third CA issued, and neither party can mint a
certificate the other accepts for a third name. :func:`init_certs` (``fedacq
certs init``) still makes one dev CA for both parties, for trying it out on one
machine; ``--per-party`` makes the production layout instead.

**Transport policy** (what is enforced, and how). grpcio's Python credentials take
no TLS version or cipher options (as of grpcio 1.85), so:

* cipher suites: importing this module sets ``GRPC_SSL_CIPHER_SUITES`` to
  :data:`TLS12_CIPHER_SUITES` (ECDHE key exchange, AEAD ciphers only), which gRPC
  core reads once, when ``grpc`` is imported. fedacq's command line imports this
  module before anything imports ``grpc``; a process that imported ``grpc`` first
  keeps gRPC's built-in list (also AEAD-only in grpcio 1.85) and gets a warning
  when it makes credentials (:func:`cipher_policy_applied`). TLS 1.3's suites are
  all AEAD; BoringSSL does not let them be configured.
* versions: gRPC core's own floor, TLS 1.2 (TLS 1.0/1.1 are refused), ceiling
  TLS 1.3, which two fedacq nodes negotiate. A TLS-1.3-only setting is not
  reachable from Python: a suite list without TLS 1.2 suites makes gRPC refuse to
  create the server credentials.

``tests/test_tls_policy.py`` checks both against a running node: TLS 1.3 and
TLS 1.2 with an AEAD suite connect (including ChaCha20-Poly1305, which gRPC's
built-in list lacks, so the test sees fedacq's list in force); TLS 1.2 offering only
CBC suites, and TLS 1.1, are refused.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

PARTY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")

#: The TLS 1.2 cipher suites gRPC may negotiate, as client and as server: ECDHE (forward
#: secrecy) with an AEAD cipher. CBC, RSA key exchange, 3DES and RC4 are left out.
TLS12_CIPHER_SUITES = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305",
))
CIPHER_ENV = "GRPC_SSL_CIPHER_SUITES"


def _set_cipher_policy() -> bool:
    """Set gRPC core's cipher list for this process (and its children); True if gRPC will use
    it, i.e. ``grpc`` was not imported yet or the list was already in the environment."""
    preset = os.environ.get(CIPHER_ENV) == TLS12_CIPHER_SUITES
    os.environ[CIPHER_ENV] = TLS12_CIPHER_SUITES
    return preset or "grpc" not in sys.modules


_CIPHER_POLICY_APPLIED = _set_cipher_policy()
_warned_late = False


def cipher_policy_applied() -> bool:
    """Whether gRPC in this process negotiates TLS 1.2 with :data:`TLS12_CIPHER_SUITES` only."""
    return _CIPHER_POLICY_APPLIED


def _check_policy() -> None:
    global _warned_late
    if not _CIPHER_POLICY_APPLIED and not _warned_late:
        _warned_late = True
        log.warning("grpc was imported before fedacq.crypto.tls: gRPC's built-in TLS 1.2 cipher list applies "
                    "in this process, not fedacq's (%s); import fedacq first or export %s", CIPHER_ENV, CIPHER_ENV)


@dataclass(frozen=True)
class TlsFiles:
    """One party's TLS files: the CA certificate it trusts for its peer (the peer's CA; with
    the shared dev CA, that CA), its own certificate and its private key."""

    ca: Path
    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes, bytes]:
        out = []
        for label, path in (("CA certificate", self.ca), ("certificate", self.cert), ("private key", self.key)):
            try:
                out.append(Path(path).read_bytes())
            except OSError as exc:
                raise FileNotFoundError(f"cannot read TLS {label} {path}: {exc.strerror}") from None
        return out[0], out[1], out[2]


def check_party_name(name: str) -> str:
    if not PARTY_NAME.match(name):
        raise ValueError(f"party name {name!r} must be lower-case letters, digits, '-' or '_' "
                         "and start with a letter")
    return name


def _write_private(path: Path, data: bytes) -> None:
    """Write a private key readable by its owner only (0600 from creation, no window)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _make_ca(out: Path, common_name: str, days: int) -> tuple[Any, Any]:
    """Write ``ca.pem`` and ``ca.key`` (0600) into ``out``; return (key, certificate)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    out.mkdir(parents=True, exist_ok=True)
    (out / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    _write_private(out / "ca.key", ca_key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
    return ca_key, ca_cert


def init_certs(parties: list[str], out: str | Path, days: int = 825,
               keep_existing: bool = False) -> dict[str, TlsFiles]:
    """The shared dev CA: ``ca.pem`` and ``<party>.pem``/``<party>.key`` for each party in ``out``.

    Refuses to overwrite an existing CA so a rerun cannot silently invalidate
    certificates the other party already holds; with ``keep_existing`` an
    existing CA is kept and only missing party certificates are issued (so
    ``docker compose up`` can run it every time).
    """
    for p in parties:
        check_party_name(p)
    if len(set(parties)) != len(parties) or not parties:
        raise ValueError(f"--parties needs distinct party names, got {parties}")
    out = Path(out)
    if (out / "ca.pem").exists():
        if not keep_existing:
            raise ValueError(f"{out / 'ca.pem'} already exists; use a new --out directory or --keep-existing")
        return {p: TlsFiles(out / "ca.pem", out / f"{p}.pem", out / f"{p}.key")
                if (out / f"{p}.pem").exists() else issue_cert(out, p, days=days) for p in parties}
    ca_key, ca_cert = _make_ca(out, "fedacq dev CA", days)
    return {party: _issue(ca_key, ca_cert, party, out, days) for party in parties}


def init_party(party: str, out: str | Path, days: int = 825, keep_existing: bool = False) -> TlsFiles:
    """One party's own CA and certificate in ``out``: ``ca.pem``, ``ca.key`` (0600),
    ``<party>.pem``, ``<party>.key`` (0600).

    Returns the party's files with ``ca`` = its *own* CA certificate: the one file to send
    to the peer. The node itself trusts the peer's CA (:func:`party_tls_files`).
    """
    check_party_name(party)
    out = Path(out)
    if (out / "ca.pem").exists():
        if not keep_existing:
            raise ValueError(f"{out / 'ca.pem'} already exists; use a new --out directory or --keep-existing")
        if (out / f"{party}.pem").exists():
            return TlsFiles(out / "ca.pem", out / f"{party}.pem", out / f"{party}.key")
        return issue_cert(out, party, days=days)
    ca_key, ca_cert = _make_ca(out, f"fedacq {party} CA", days)
    return _issue(ca_key, ca_cert, party, out, days)


def party_tls_files(directory: str | Path, party: str, peer: str) -> TlsFiles:
    """A node's TLS files in the per-party layout: trust ``<peer>-ca.pem``, present ``<party>.pem``."""
    d = Path(directory)
    return TlsFiles(d / f"{check_party_name(peer)}-ca.pem", d / f"{check_party_name(party)}.pem",
                    d / f"{party}.key")


def trust_peer(directory: str | Path, peer: str, ca_file: str | Path, replace: bool = False) -> Path:
    """Install the peer's CA certificate as ``<directory>/<peer>-ca.pem`` after checking that
    it is one CA certificate, valid now, with no private key in the file, and not this
    party's own CA. Installing the same certificate again changes nothing; a different one
    needs ``replace``.
    """
    from cryptography import x509

    check_party_name(peer)
    src, d = Path(ca_file), Path(directory)
    try:
        data = src.read_bytes()
    except OSError as exc:
        raise FileNotFoundError(f"peer CA {src}: {exc.strerror}") from None
    if b"PRIVATE KEY" in data:
        raise ValueError(f"peer CA {src} contains a private key: the peer must send only its ca.pem")
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ValueError(f"peer CA {src}: not a PEM certificate ({exc})") from None
    if len(certs) != 1:
        raise ValueError(f"peer CA {src}: expected one certificate, found {len(certs)}")
    cert = certs[0]
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ValueError(f"peer CA {src}: {cert.subject.rfc4514_string()} is not a CA certificate "
                         "(the peer sends its ca.pem, not its own certificate)")
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now < cert.not_valid_after_utc:
        raise ValueError(f"peer CA {src}: not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d} "
                         f"to {cert.not_valid_after_utc:%Y-%m-%d})")
    own = d / "ca.pem"
    if own.exists() and x509.load_pem_x509_certificate(own.read_bytes()) == cert:
        raise ValueError(f"peer CA {src} is this party's own CA ({own}); install the peer's ca.pem")
    target = d / f"{peer}-ca.pem"
    if target.exists() and not replace:
        if target.read_bytes() == data:
            return target
        raise ValueError(f"{target} already holds a different CA certificate; pass --replace to change it")
    d.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def init_per_party(parties: list[str], out: str | Path, days: int = 825,
                   keep_existing: bool = False) -> dict[str, TlsFiles]:
    """Dev convenience for the production layout on one machine: ``out/<party>/`` per party
    (:func:`init_party`), then each party's folder gets the others' CA certificates
    (:func:`trust_peer`). Returns each party's own files."""
    for p in parties:
        check_party_name(p)
    if len(set(parties)) < 2 or len(set(parties)) != len(parties):
        raise ValueError(f"--parties needs at least two distinct party names, got {parties}")
    out = Path(out)
    files = {p: init_party(p, out / p, days, keep_existing) for p in parties}
    for p in parties:
        for peer in parties:
            if peer != p:
                trust_peer(out / p, peer, files[peer].ca)
    return files


def issue_cert(ca_dir: str | Path, party: str, out: str | Path | None = None, days: int = 825) -> TlsFiles:
    """Issue one more certificate from the CA in ``ca_dir`` (a second data provider, or a
    client of the boost service such as the bidding engine); ``out`` gets a copy of the CA
    certificate, so the holder trusts the servers this CA certified."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    ca_dir = Path(ca_dir)
    try:
        ca_cert = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
        ca_key = serialization.load_pem_private_key((ca_dir / "ca.key").read_bytes(), password=None)
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the CA in {ca_dir}: {exc}") from None
    out = Path(out) if out is not None else ca_dir
    out.mkdir(parents=True, exist_ok=True)
    if (out / f"{party}.pem").exists():
        raise ValueError(f"{out / (party + '.pem')} already exists")
    files = _issue(ca_key, ca_cert, check_party_name(party), out, days)
    if out != ca_dir:
        (out / "ca.pem").write_bytes((ca_dir / "ca.pem").read_bytes())
        files = TlsFiles(out / "ca.pem", files.cert, files.key)
    return files


def _issue(ca_key: Any, ca_cert: Any, party: str, out: Path, days: int) -> TlsFiles:
    """A certificate for ``party``: CN and DNS name = party, plus localhost and 127.0.0.1."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.timezone.utc)
    key = ec.generate_private_key(ec.SECP256R1())
    san = x509.SubjectAlternativeName([x509.DNSName(party), x509.DNSName("localhost"),
                                       x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, party)]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(san, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (out / f"{party}.pem").write_bytes(cert.public_bytes(pem))
    _write_private(out / f"{party}.key", key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
    return TlsFiles(out / "ca.pem", out / f"{party}.pem", out / f"{party}.key")


def server_credentials(tls: TlsFiles) -> Any:
    """Server side of mutual TLS: our certificate; client certificates required, chaining to ``tls.ca``."""
    import grpc

    _check_policy()
    ca, cert, key = tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(tls: TlsFiles) -> Any:
    """Client side of mutual TLS: the CA to trust for the server and our own certificate to present."""
    import grpc

    _check_policy()
    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def peer_common_name(context: Any) -> str | None:
    """Common name of the verified client certificate of a gRPC server call, if any."""
    values = context.auth_context().get("x509_common_name") or []
    return values[0].decode() if values else None
