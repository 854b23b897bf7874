"""``[console]`` in ``party.toml``: where the node serves its console, and how it is protected.

::

    [console]
    listen = "127.0.0.1:8700"      # default; one port per node on a shared machine
    # bound anywhere but loopback, the console needs all three of:
    tls_cert = "../certs/lender.pem"
    tls_key = "../certs/lender.key"
    token_file = "console.token"   # one line, at least 32 characters, mode 0600 (e.g. `openssl rand -hex 32`)
    boost_tables = "../boost-tables"   # the boost service's table root (the platform's `fedacq boost-serve --tables`)
    campaigns = "state/campaigns"      # the campaign state directory (default: <state_dir>/campaigns)
    enabled = true                 # false: keep the section, serve nothing

Why a bind outside loopback is refused without TLS and a token: the console shows what the
party's jobs did, its model quality and what it sent to the peer. On loopback only the
machine's own users reach it (and the server also refuses requests whose ``Host`` is not a
loopback name, so a web page cannot reach it by DNS rebinding); anywhere else the token
proves the reader is the party's own, and TLS keeps the token and the pages off the wire.
A token, when given, is required on loopback too.
"""

from __future__ import annotations

import ipaddress
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

DEFAULT_LISTEN = "127.0.0.1:8700"
#: the shortest token accepted (hex of 16 random bytes).
MIN_TOKEN_CHARS = 32
LOOPBACK_NAMES = ("localhost",)
#: what a token may hold: it travels in a header and a cookie, so no separators or spaces.
TOKEN = re.compile(r"^[A-Za-z0-9._~+/=-]+$")


@dataclass(frozen=True)
class ConsoleSettings:
    listen: str = DEFAULT_LISTEN
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None
    boost_tables: Path | None = None
    campaigns: Path | None = None

    @property
    def host(self) -> str:
        return split_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return split_listen(self.listen)[1]

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None


def split_listen(listen: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port`` -> (host, port); ValueError naming the value."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ValueError(f"console listen {listen!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_console(table: Any, source: str, resolve: Callable[[str], Path]) -> ConsoleSettings | None:
    """The checked ``[console]`` table (None when absent or ``enabled = false``); errors name ``source``."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [console] must be a table")
    known = {"listen", "tls_cert", "tls_key", "token_file", "boost_tables", "campaigns", "enabled"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ValueError(f"{source}: [console] has unknown key(s) {unknown} (known: {sorted(known)})")
    enabled = table.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ValueError(f"{source}: [console] enabled must be true or false")
    if not enabled:
        return None
    paths = {}
    for key in ("tls_cert", "tls_key", "token_file", "boost_tables", "campaigns"):
        value = table.get(key)
        if value is not None and (not isinstance(value, str) or not value):
            raise ValueError(f"{source}: [console] {key} must be a path")
        paths[key] = resolve(value) if value else None
    listen = table.get("listen", DEFAULT_LISTEN)
    if not isinstance(listen, str):
        raise ValueError(f"{source}: [console] listen must be \"HOST:PORT\"")
    try:
        host, _ = split_listen(listen)
    except ValueError as exc:
        raise ValueError(f"{source}: [console] {exc}") from None
    if (paths["tls_cert"] is None) != (paths["tls_key"] is None):
        raise ValueError(f"{source}: [console] tls_cert and tls_key go together")
    if not is_loopback(host) and (paths["tls_cert"] is None or paths["token_file"] is None):
        raise ValueError(f"{source}: [console] listen {listen!r} is not a loopback address: the console is served "
                         "there only with TLS (tls_cert, tls_key) and a token (token_file)")
    return ConsoleSettings(listen=listen, **paths)


def read_token(path: Path) -> str:
    """The token in ``path``: its first line, at least :data:`MIN_TOKEN_CHARS` characters, in a
    file only its owner can read or write (like ssh's private keys)."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FileNotFoundError(f"cannot read the console token file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ValueError(f"console token file {path} is readable or writable by others "
                         f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it")
    token = text.splitlines()[0].strip() if text.strip() else ""
    if len(token) < MIN_TOKEN_CHARS or not TOKEN.match(token):
        raise ValueError(f"console token file {path}: the token must be one line of at least {MIN_TOKEN_CHARS} "
                         "letters, digits or '-._~+/=' (e.g. `openssl rand -hex 32`)")
    return token

