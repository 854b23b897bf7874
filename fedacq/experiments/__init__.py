"""Sweeps a lender would ask for, over the demo's whole loop: ``fedacq experiments run CONFIG.toml``.

A config (:mod:`fedacq.experiments.config`) names a base setting and sweeps
that vary one setting at a time: boost strength, share of traffic in
treatment, targeting (prospect model, joint model, label-free activity
baseline) and the DP noise on the released leaves. The runner
(:mod:`fedacq.experiments.runner`) trains each distinct model once, simulates
each distinct campaign once, and the tables (:mod:`fedacq.experiments.tables`)
put every point's lifts with 95% intervals and its model AUC/KS in
``results.csv``, ``results.md`` and ``results.html``. Configs live in the
repository's ``experiments/`` folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedacq.experiments.config import Point, PointSettings, SweepConfig, load_config
from fedacq.experiments.runner import run_sweep

__all__ = ["Point", "PointSettings", "SweepConfig", "load_config", "run_sweep", "add_parser"]


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("experiments", help="sweep boost strength, treatment share, model mode, DP noise",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="experiments_command", required=True, metavar="ACTION")
    r = sub.add_parser("run", help="run every point of a sweep config and tabulate the lifts")
    r.add_argument("config", type=Path, help="sweep config (TOML), e.g. experiments/sweep_quick.toml")
    r.add_argument("--out", type=Path, required=True, help="output folder for models, campaigns and results.*")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.set_defaults(func=_run)


def _run(args: Any) -> int:
    run_sweep(load_config(args.config), args.out, progress=not args.quiet)
    return 0
