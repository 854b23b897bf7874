"""Benchmark the lender's measurement (delta method) against a bootstrap peer, same data, same run.

What is measured (wall-clock seconds, best of ``--repeat``) on a constructed
experiment (:func:`fedacq.measure.synthetic.constructed_experiment`, 20 buckets
per arm, ``--n-per-arm`` exposed users per arm):

- ``fedacq_measure``: :func:`fedacq.measure.report.measure` — validation, the
  join of clicks with the funnel, all 8 KPIs per arm and per bucket with
  intervals, and the lift of each KPI;
- peer ``scipy_bootstrap``: ``scipy.stats.bootstrap`` (1000 resamples, percentile
  interval, arms resampled independently) of the relative lift of *one* KPI,
  drawdown per credit user, computed from the same joined per-user table (the
  join is not timed for the peer).

Printed ratios: ``time_ratio`` = fedacq time (all KPIs, buckets included) /
scipy time (one KPI); ``width_ratio`` = delta-method interval width / bootstrap
interval width for that KPI (close to 1 means the closed form agrees).

    python benchmarks/measure.py --json results/measure.json            # full: 200k users per arm
    python benchmarks/measure.py --json /tmp/measure_quick.json --quick  # smoke: 10k users per arm
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
from scipy import stats

from fedacq.measure.kpis import KPIS, exposed_outcomes
from fedacq.measure.report import measure
from fedacq.measure.synthetic import constructed_experiment


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bootstrap_relative_lift(users, numerator: str, denominator: str, seed: int) -> tuple[float, float]:
    """Percentile bootstrap interval of T/C - 1 for ``sum(numerator)/sum(denominator)``."""
    arms = {arm: (users.loc[users["arm"] == arm, numerator].to_numpy(float),
                  users.loc[users["arm"] == arm, denominator].to_numpy(float)) for arm in ("treatment", "control")}
    (yt, xt), (yc, xc) = arms["treatment"], arms["control"]

    def statistic(it, ic, axis=-1):
        it, ic = it.astype(np.int64), ic.astype(np.int64)
        return (yt[it].sum(axis) / xt[it].sum(axis)) / (yc[ic].sum(axis) / xc[ic].sum(axis)) - 1

    res = stats.bootstrap((np.arange(len(yt), dtype=float), np.arange(len(yc), dtype=float)), statistic,
                          n_resamples=1000, method="percentile", vectorized=True, batch=50,
                          random_state=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script works")
    parser.add_argument("--n-per-arm", type=int, default=None, help="default 200000 (10000 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="default 3 (1 with --quick)")
    args = parser.parse_args()
    n = args.n_per_arm or (10_000 if args.quick else 200_000)
    repeat = args.repeat or (1 if args.quick else 3)

    funnel, events, spend = constructed_experiment(n, seed=0, n_buckets=20)
    t_ours, report = best_of(repeat, lambda: measure(funnel, events, spend))
    users = exposed_outcomes(funnel, events).users
    t_peer, (low, high) = best_of(repeat, lambda: bootstrap_relative_lift(
        users, "drawdown_amount", "credit_granted", seed=0))
    ours = report["layers"]["boost"]["lift"]["drawdown_per_user"]["relative"]
    result = {
        "benchmark": "measure", "quick": args.quick, "n_per_arm": n, "n_buckets": 40, "repeat": repeat,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "fedacq_measure_s": t_ours, "scipy_bootstrap_one_kpi_s": t_peer,
        "time_ratio": t_ours / t_peer,
        "drawdown_per_user_relative_lift": {"delta": [ours["ci_low"], ours["ci_high"]], "bootstrap": [low, high]},
        "width_ratio": (ours["ci_high"] - ours["ci_low"]) / (high - low),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2))
    print(f"n_per_arm={n}: fedacq measure ({len(KPIS)} KPIs, {result['n_buckets']} buckets) {t_ours:.3f} s; "
          f"scipy.stats.bootstrap (1 KPI, 1000 resamples) {t_peer:.3f} s; time_ratio {result['time_ratio']:.4f}")
    print(f"drawdown per user, relative lift 95% CI: delta [{ours['ci_low']:.4f}, {ours['ci_high']:.4f}] "
          f"bootstrap [{low:.4f}, {high:.4f}]; width_ratio {result['width_ratio']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
