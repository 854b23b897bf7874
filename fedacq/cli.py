"""The ``fedacq`` command line.

Each sub-command lives next to the code it drives and exposes
``add_parser(subparsers)``, which registers the sub-command and sets ``func``.
They are imported lazily so that ``fedacq --help`` stays fast and an optional
extra (torch) is only needed by the command that uses it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command name -> module that defines ``add_parser``.
COMMANDS: dict[str, str] = {
    "demo": "fedacq.demo",
    "certs": "fedacq.crypto.commands",
    "node": "fedacq.node.daemon",
    "job": "fedacq.node.control",
    "run": "fedacq.learn.commands",
    "score": "fedacq.activate.scoring",
    "boosts": "fedacq.activate.boost_commands",
    "boost-serve": "fedacq.activate.service",
    "bench-crypto": "fedacq.crypto.bench",
    "sim": "fedacq.sim.commands",
    "psi": "fedacq.psi.commands",
    "measure": "fedacq.measure.commands",
    "experiments": "fedacq.experiments",
    "audit": "fedacq.link.commands",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedacq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"fedacq {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
