"""A node's configuration: ``parties/<party>/party.toml``.

Relative paths are resolved against the directory of the TOML file, so a party
folder can be moved (or mounted into a container) as a whole. Example::

    [node]
    party = "lender"               # our name; our certificate must carry it
    role = "lender"                # protocol role we play (default: the party name)
    listen = "0.0.0.0:7001"        # the peer link (mutual TLS)
    state_dir = "state"            # job state, logs, egress ledger, control socket
    mlflow = "mlruns"              # store dir or http(s):// server; default $MLFLOW_TRACKING_URI or "mlruns"
    keys_dir = "keys"              # the party's key store (e.g. the Paillier private key)

    [tls]
    ca = "../certs/ca.pem"
    cert = "../certs/lender.pem"
    key = "../certs/lender.key"

    [peer]
    name = "platform"              # the only identity this node accepts
    address = "localhost:7002"

    [protocols]
    allow = ["echo", "psi"]        # protocols this node agrees to run

    [datasets]                     # the only files a job may name, by registered name
    outcomes = "data/outcomes.csv"

    [policy]                       # the weakest job this node takes part in: fedacq.node.policy
    min_intersection = 1000

    [compute]                      # where this node's heavy work runs: fedacq.compute
    engine = "ray"                 # "local" (default: this machine's cores) or "ray"
    address = "10.0.0.5:6379"      # this party's OWN Ray cluster; the peer never learns of it

    [console]                      # the node's read-only web console: fedacq.console.settings
    listen = "127.0.0.1:8701"      # loopback by default; elsewhere only with tls_cert, tls_key, token_file

Registered data-set names follow :data:`fedacq.paths.NAME` (they may name a
cache folder of this node's own).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedacq.compute.engine import ComputeConfig, load_compute
from fedacq.console.settings import ConsoleSettings, load_console
from fedacq.crypto.tls import TlsFiles, check_party_name
from fedacq.node.policy import Policy, load_policy
from fedacq.paths import check_name


@dataclass(frozen=True)
class NodeConfig:
    path: Path
    party: str
    role: str
    peer: str
    peer_address: str
    listen: str
    tls: TlsFiles
    state_dir: Path
    mlflow: str
    keys_dir: Path
    allow: tuple[str, ...]
    datasets: dict[str, Path] = field(default_factory=dict)
    control_socket: Path | None = None
    policy: Policy = field(default_factory=Policy)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    console: ConsoleSettings | None = None

    @property
    def socket_path(self) -> Path:
        return self.control_socket or self.state_dir / "control.sock"


def _get(doc: dict[str, Any], path: Path, section: str, key: str, default: Any = None) -> Any:
    table = doc.get(section, {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [{section}] must be a table")
    value = table.get(key, default)
    if value is None:
        raise ValueError(f"{path}: missing [{section}] {key}")
    return value


def load_config(path: str | Path) -> NodeConfig:
    """Read and check a party TOML file; every error names the file and the key."""
    path = Path(path).resolve()
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileNotFoundError(f"cannot read node config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{path}: not valid TOML ({exc})") from None
    base = path.parent

    def resolve(value: str) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else (base / p).resolve()

    party = check_party_name(str(_get(doc, path, "node", "party")))
    peer = check_party_name(str(_get(doc, path, "peer", "name")))
    if peer == party:
        raise ValueError(f"{path}: [peer] name must differ from [node] party {party!r}")
    mlflow = str(_get(doc, path, "node", "mlflow", os.environ.get("MLFLOW_TRACKING_URI", "mlruns")))
    if "://" not in mlflow:
        mlflow = str(resolve(mlflow))
    allow = _get(doc, path, "protocols", "allow", [])
    if not isinstance(allow, list) or not all(isinstance(a, str) for a in allow):
        raise ValueError(f"{path}: [protocols] allow must be a list of protocol names")
    datasets = doc.get("datasets", {})
    if not isinstance(datasets, dict) or not all(isinstance(v, str) for v in datasets.values()):
        raise ValueError(f"{path}: [datasets] must map names to file paths")
    for name in datasets:
        check_name(name, f"{path}: [datasets] name")
    socket = doc.get("node", {}).get("control_socket")
    return NodeConfig(
        path=path, party=party, role=str(_get(doc, path, "node", "role", party)),
        peer=peer, peer_address=str(_get(doc, path, "peer", "address")),
        listen=str(_get(doc, path, "node", "listen")),
        tls=TlsFiles(resolve(_get(doc, path, "tls", "ca")), resolve(_get(doc, path, "tls", "cert")),
                     resolve(_get(doc, path, "tls", "key"))),
        state_dir=resolve(str(_get(doc, path, "node", "state_dir", "state"))),
        mlflow=mlflow, keys_dir=resolve(str(_get(doc, path, "node", "keys_dir", "keys"))),
        allow=tuple(allow), datasets={k: resolve(v) for k, v in datasets.items()},
        control_socket=resolve(socket) if socket else None,
        policy=load_policy(doc.get("policy"), str(path), party),
        compute=load_compute(doc.get("compute"), str(path)),
        console=load_console(doc.get("console"), str(path), resolve),
    )
