"""``fedacq console --config party.toml``: serve a party's console without its node.

For reading a node's state while the node is stopped (e.g. what ``fedacq demo`` left
behind). It serves the same read-only console as the node, on ``[console]`` of the
party.toml (or ``--listen``, which is checked by the same rules: loopback, or TLS and a
token from the config).
"""

from __future__ import annotations

import argparse
import dataclasses
import signal
import threading


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("console", help="serve this party's read-only console from its node's state (node stopped)")
    p.add_argument("--config", required=True, help="the party's TOML config, e.g. parties/lender/party.toml")
    p.add_argument("--listen", help="HOST:PORT (default: [console] listen, else 127.0.0.1:8700)")
    p.set_defaults(func=_cmd_console)


def _cmd_console(args: argparse.Namespace) -> int:
    from fedacq.console.server import console_for
    from fedacq.console.settings import ConsoleSettings, is_loopback, split_listen
    from fedacq.node.config import load_config

    cfg = load_config(args.config)
    settings = cfg.console or ConsoleSettings()
    if args.listen:
        host, _ = split_listen(args.listen)
        if not is_loopback(host) and (settings.tls_cert is None or settings.token_file is None):
            raise ValueError(f"--listen {args.listen}: not loopback; the console is served there only with TLS "
                             f"and a token ([console] tls_cert, tls_key, token_file in {cfg.path})")
        settings = dataclasses.replace(settings, listen=args.listen)
    console = console_for(cfg, settings).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print(f"fedacq console of {cfg.party}: {console.url}", flush=True)
    stop.wait()
    console.stop()
    return 0
