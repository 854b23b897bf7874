"""Certificates for the party link: a dev CA, per-party certificates, gRPC credentials.

Each node proves who it is with a certificate whose common name *and* DNS
subject-alternative name are the party name (plus ``localhost`` and
``127.0.0.1`` so that nodes on one machine can reach each other). Identity is
checked on both ends of every connection:

* the client pins the server's name by connecting with
  ``grpc.ssl_target_name_override = <peer name>``, so a certificate issued to any
  other party by the same CA fails the TLS hostname check;
* the server requires a client certificate from the CA and then compares its
  common name with the one peer it is configured for (:func:`peer_common_name`).

``fedacq certs init`` makes a development CA. In production each party would
get its certificate from a CA both sides trust; only the file paths change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PARTY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class TlsFiles:
    """Where one party's CA bundle, certificate and private key live."""

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
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def init_certs(parties: list[str], out: str | Path, days: int = 825,
               keep_existing: bool = False) -> dict[str, TlsFiles]:
    """Create ``ca.pem`` and ``<party>.pem``/``<party>.key`` for each party in ``out``.

    Refuses to overwrite an existing CA so a rerun cannot silently invalidate
    certificates the other party already holds; with ``keep_existing`` an
    existing CA is kept and only missing party certificates are issued (so
    ``docker compose up`` can run it every time).
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    for p in parties:
        check_party_name(p)
    if len(set(parties)) != len(parties) or not parties:
        raise ValueError(f"--parties needs distinct party names, got {parties}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if (out / "ca.pem").exists():
        if not keep_existing:
            raise ValueError(f"{out / 'ca.pem'} already exists; use a new --out directory or --keep-existing")
        return {p: TlsFiles(out / "ca.pem", out / f"{p}.pem", out / f"{p}.key")
                if (out / f"{p}.pem").exists() else issue_cert(out, p, days=days) for p in parties}

    now = dt.datetime.now(dt.timezone.utc)
    pem = serialization.Encoding.PEM
    no_pw = serialization.NoEncryption()
    pkcs8 = serialization.PrivateFormat.PKCS8

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedacq dev CA")])
    ca_cert = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
               .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA256()))
    (out / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    _write_private(out / "ca.key", ca_key.private_bytes(pem, pkcs8, no_pw))

    return {party: _issue(ca_key, ca_cert, party, out, days) for party in parties}


def issue_cert(ca_dir: str | Path, party: str, out: str | Path | None = None, days: int = 825) -> TlsFiles:
    """Issue one more party certificate from the CA in ``ca_dir`` (e.g. a second data provider)."""
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
    """Server side of mutual TLS: our certificate, and client certificates required."""
    import grpc

    ca, cert, key = tls.read()
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=True)


def channel_credentials(tls: TlsFiles) -> Any:
    """Client side of mutual TLS: the CA to trust and our own certificate to present."""
    import grpc

    ca, cert, key = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def peer_common_name(context: Any) -> str | None:
    """Common name of the verified client certificate of a gRPC server call, if any."""
    values = context.auth_context().get("x509_common_name") or []
    return values[0].decode() if values else None


# -- CLI: fedacq certs init ----------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="make a development CA and per-party TLS certificates")
    certs_sub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")
    init = certs_sub.add_parser("init", help="create ca.pem and <party>.pem/.key for each party")
    init.add_argument("--parties", default="lender,platform",
                      help="comma-separated party names (default: lender,platform)")
    init.add_argument("--out", required=True, help="directory to write the certificates to")
    init.add_argument("--days", type=int, default=825, help="validity in days (default: 825)")
    init.add_argument("--keep-existing", action="store_true",
                      help="keep an existing CA in --out and issue only missing party certificates")
    init.set_defaults(func=_cmd_init)
    issue = certs_sub.add_parser("issue", help="issue one more party certificate from an existing CA")
    issue.add_argument("--ca", required=True, help="directory holding ca.pem and ca.key")
    issue.add_argument("--party", required=True, help="party name (certificate CN and DNS name)")
    issue.add_argument("--days", type=int, default=825, help="validity in days (default: 825)")
    issue.set_defaults(func=_cmd_issue)


def _cmd_init(args: argparse.Namespace) -> int:
    parties = [p.strip() for p in args.parties.split(",") if p.strip()]
    files = init_certs(parties, args.out, days=args.days, keep_existing=args.keep_existing)
    print(f"CA: {Path(args.out) / 'ca.pem'}")
    for party, f in files.items():
        print(f"{party}: {f.cert} {f.key}")
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    files = issue_cert(args.ca, args.party, days=args.days)
    print(f"{args.party}: {files.cert} {files.key}")
    return 0
