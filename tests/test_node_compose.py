"""docker-compose.yml and the example configs agree with the CLI and the node config loader."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from fedacq.cli import build_parser
from fedacq.node.config import load_config
from fedacq.node.jobs import load_job_file
from fedacq.node.protocols import PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"


def compose_commands() -> list[list[str]]:
    """Every `fedacq ...` command the compose file runs or tells the operator to run."""
    doc = yaml.safe_load(COMPOSE.read_text())
    commands = []
    for service in doc["services"].values():
        command = service.get("command")
        if command is None:
            continue
        argv = shlex.split(command) if isinstance(command, str) else [str(c) for c in command]
        if argv[0] == "fedacq":
            commands.append(argv)
    for match in re.finditer(r"docker compose exec \w+ (fedacq [^\n]+)", COMPOSE.read_text()):
        commands.append(shlex.split(match.group(1)))
    return commands


def test_compose_runs_both_nodes_and_mlflow() -> None:
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    assert {"lender", "platform", "mlflow"} <= set(services)
    assert len(compose_commands()) >= 5


@pytest.mark.parametrize("argv", compose_commands(), ids=lambda a: " ".join(a[:3]))
def test_every_compose_command_exists_in_the_cli(argv: list[str]) -> None:
    args = build_parser().parse_args(argv[1:])  # argparse exits (fails the test) on anything unknown
    assert callable(args.func)
    for value in vars(args).values():
        if isinstance(value, str) and value.startswith("parties/") and value.endswith(".toml"):
            assert (ROOT / value).exists(), f"{value} named in docker-compose.yml does not exist"


@pytest.mark.parametrize("party, peer", [("lender", "platform"), ("platform", "lender")])
def test_example_party_configs_load(party: str, peer: str) -> None:
    cfg = load_config(ROOT / "parties" / party / "party.toml")
    assert (cfg.party, cfg.peer) == (party, peer)
    assert cfg.peer_address.startswith(f"{peer}:")  # the compose service name = certificate DNS name
    assert "echo" in cfg.allow


def test_example_job_names_a_registered_protocol() -> None:
    assert load_job_file(ROOT / "parties" / "jobs" / "echo.toml").protocol in PROTOCOLS


PARTIES = [("lender", "platform"), ("platform", "lender")]


def _host_mounts(service: str) -> list[Path]:
    """Host paths bind-mounted into ``service`` (short syntax ``SRC:DST[:MODE]``, SRC a path)."""
    volumes = yaml.safe_load(COMPOSE.read_text())["services"][service].get("volumes", [])
    out = []
    for v in volumes:
        src = (v.get("source", "") if isinstance(v, dict) else v.split(":", 1)[0])
        if src.startswith((".", "/")):
            out.append((ROOT / src).resolve())
    return out


def _exposes(mount: Path, path: Path) -> bool:
    return path.resolve() == mount or path.resolve().is_relative_to(mount)


def test_the_certs_service_makes_a_ca_per_party() -> None:
    command = yaml.safe_load(COMPOSE.read_text())["services"]["certs"]["command"]
    args = build_parser().parse_args(command[1:])
    assert args.certs_command == "init" and args.per_party and set(args.parties) == {"lender", "platform"}


@pytest.mark.parametrize("party, other", PARTIES)
def test_no_container_mounts_the_other_partys_keys(party: str, other: str) -> None:
    certs = ROOT / "certs"
    own_key, own_peer_ca = certs / party / f"{party}.key", certs / party / f"{other}-ca.pem"
    for mount in _host_mounts(party):
        for secret in (certs / other / f"{other}.key", certs / other / "ca.key"):
            assert not _exposes(mount, secret), f"{party}'s container mounts {mount}, which holds {secret}"
    assert any(_exposes(m, own_key) for m in _host_mounts(party)), f"{party}'s own key is not mounted"
    assert any(_exposes(m, own_peer_ca) for m in _host_mounts(party)), f"{other}'s CA certificate is not mounted"


@pytest.mark.parametrize("party, other", PARTIES)
def test_each_party_config_names_tls_files_its_container_mounts(party: str, other: str) -> None:
    tls = load_config(ROOT / "parties" / party / "party.toml").tls
    assert tls.ca.resolve() == (ROOT / "certs" / party / f"{other}-ca.pem").resolve()
    for path in (tls.ca, tls.cert, tls.key):
        assert any(_exposes(m, path) for m in _host_mounts(party)), f"{path} is not mounted into {party}"
