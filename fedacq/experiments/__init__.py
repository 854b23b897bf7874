"""Sweeps a lender would ask for, over the demo's whole loop: ``fedacq experiments run CONFIG.toml``.

A config (:mod:`fedacq.experiments.config`) names a base setting and sweeps
that vary one setting at a time: boost strength, share of traffic in
treatment, targeting (prospect model, joint model, label-free activity
baseline) and the DP noise on the released leaves. The runner
(:mod:`fedacq.experiments.runner`) trains each distinct model once, simulates
each distinct campaign once, and the tables (:mod:`fedacq.experiments.tables`)
put every point's lifts with 95% intervals and its model AUC/KS in
``results.csv``, ``results.md`` and ``results.html``. Configs live in the
repository's ``experiments/`` folder; the command is :mod:`fedacq.experiments.commands`.
"""

from __future__ import annotations

from fedacq.experiments.config import Point, PointSettings, SweepConfig, load_config
from fedacq.experiments.runner import run_sweep

__all__ = ["Point", "PointSettings", "SweepConfig", "load_config", "run_sweep"]
