"""``fedacq experiments run CONFIG.toml``: sweeps over the demo's whole loop (:mod:`fedacq.experiments`).

Only argument parsing lives here; the sweep is :func:`fedacq.experiments.runner.run_sweep`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import fedacq.experiments


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("experiments", help="sweep boost strength, treatment share, model mode, DP noise",
                              description=fedacq.experiments.__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="experiments_command", required=True, metavar="ACTION")
    r = sub.add_parser("run", help="run every point of a sweep config and tabulate the lifts")
    r.add_argument("config", type=Path, help="sweep config (TOML), e.g. experiments/sweep_quick.toml")
    r.add_argument("--out", type=Path, required=True, help="output folder for models, campaigns and results.*")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from fedacq.experiments import load_config, run_sweep

    run_sweep(load_config(args.config), args.out, progress=not args.quiet)
    return 0
