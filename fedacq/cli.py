"""The ``fedacq`` command line.

Each sub-command's argument parsing lives in a ``commands`` module next to the
code it drives, which exposes ``add_parser(subparsers)`` (or another function
named after ``:`` in :data:`COMMANDS`, for a module with several commands): it
registers the sub-command and sets ``func``. An optional extra (torch) is
imported only by the command that uses it.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: sub-command name -> ``module`` defining ``add_parser``, or ``module:function``.
COMMANDS: dict[str, str] = {
    "demo": "fedacq.demo_commands",
    "certs": "fedacq.crypto.commands",
    "node": "fedacq.node.commands:add_node_parser",
    "job": "fedacq.node.commands:add_job_parser",
    "run": "fedacq.learn.commands",
    "score": "fedacq.activate.commands:add_score_parser",
    "boosts": "fedacq.activate.boost_commands",
    "boost-serve": "fedacq.activate.commands:add_serve_parser",
    "bench-crypto": "fedacq.crypto.commands:add_bench_parser",
    "sim": "fedacq.sim.commands",
    "psi": "fedacq.psi.commands",
    "measure": "fedacq.measure.commands",
    "experiments": "fedacq.experiments.commands",
    "audit": "fedacq.link.commands",
    "console": "fedacq.console.commands",
    "campaign": "fedacq.campaign.commands",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedacq", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for target in COMMANDS.values():
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function or "add_parser")(sub)
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
