"""Benchmark the synthetic market: generation and campaign speed, against a named peer.

What is measured (wall-clock seconds, best of ``--repeat``):

- ``generate_market``: ``fedacq.sim.generate_market(n_users)`` — latent traits,
  12 platform features with missing values, phones with formatting noise,
  user-ID hashes, lender customers with features and funnel labels;
- ``simulate_campaign``: ``--days`` days of second-price auctions with pacing,
  clicks, applications and funnel outcomes, with a tiered boost table;
- peer ``sklearn_make_classification``: ``sklearn.datasets.make_classification``
  with the same number of rows and 12 features — the usual tool for a
  synthetic tabular data set, here as a yardstick for "a table of this size".
  ``ratio_vs_sklearn`` = fedacq time / sklearn time.

Target (issue 7): one million users generated in seconds.

    python benchmarks/sim.py --json results/sim.json                 # full: 1M users, 14 days
    python benchmarks/sim.py --json /tmp/sim_quick.json --quick      # smoke: 100k users, 3 days

``--refresh``: the simulator's days (issue 14). One drifting world
(:class:`fedacq.sim.World`, default 200 000 users, 8 weeks), two campaigns on it with the
local XGBoost stand-in (:mod:`fedacq.sim.refresh`): a model *frozen after week 1*
(trained on days 0 and 7) and one *retrained weekly* on the labels matured by then;
both rescore the platform's users weekly. Measured: the wall time of the world and of
each eight-week campaign, and cost per credit user of the treatment arms over the last
four weeks (days 28-55), realised and expected, weekly over frozen with the paired bucket
bootstrap interval (:func:`fedacq.sim.compare`), week by week, and the control arms as
a placebo (served 1.0 by both: identical).

    python benchmarks/sim.py --refresh --json results/sim_refresh.json               # 200k users
    python benchmarks/sim.py --refresh --quick --json /tmp/sim_refresh_quick.json    # 30k users
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import make_classification

from fedacq.sim import World, compare, generate_market, salted_buckets, simulate_campaign, window_kpis


def best_of(repeat: int, fn) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, required=True, help="write results here")
    parser.add_argument("--quick", action="store_true", help="small sizes, to check the script works")
    parser.add_argument("--n-users", type=int, default=None, help="default 1000000 (100000 with --quick)")
    parser.add_argument("--days", type=int, default=None, help="default 14 (3 with --quick)")
    parser.add_argument("--repeat", type=int, default=None, help="default 3 (1 with --quick)")
    parser.add_argument("--refresh", action="store_true",
                        help="the eight-week refresh check instead (default 200000 users, 30000 with --quick)")
    args = parser.parse_args()
    if args.refresh:
        return refresh(args)
    n = args.n_users or (100_000 if args.quick else 1_000_000)
    days = args.days or (3 if args.quick else 14)
    repeat = args.repeat or (1 if args.quick else 3)

    t_market, market = best_of(repeat, lambda: generate_market(n, seed=0))
    t_peer, _ = best_of(repeat, lambda: make_classification(n_samples=n, n_features=12, n_informative=6,
                                                            random_state=0))
    users = market.platform_users["user_id"]
    bucket, arm = salted_buckets()(users)
    rank = pd.Series(market.truth["expected_value"].to_numpy()[:n]).rank(pct=True).to_numpy()
    table = pd.DataFrame({"user_id": users, "boost": np.select([rank > 0.8, rank > 0.5, rank > 0.2],
                                                               [3.0, 1.6, 1.0], 0.3),
                          "bucket": bucket, "arm": arm, "layer": "bench", "table_version": "v1"})
    t_campaign, result = best_of(1, lambda: simulate_campaign(market, table, days=days, seed=0))

    results = {
        "benchmark": "sim", "quick": args.quick, "n_users": n, "days": days, "repeat": repeat,
        "machine": {"python": platform.python_version(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count()},
        "generate_market_s": t_market, "sklearn_make_classification_s": t_peer,
        "ratio_vs_sklearn": t_market / t_peer,
        "simulate_campaign_s": t_campaign,
        "campaign_impressions": int(result.summary["impressions"].sum()),
        "campaign_impressions_per_s": float(result.summary["impressions"].sum() / t_campaign),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"generate_market({n}): {t_market:.2f} s; sklearn make_classification: {t_peer:.2f} s; "
          f"ratio {results['ratio_vs_sklearn']:.2f}")
    print(f"simulate_campaign({n} users, {days} days): {t_campaign:.2f} s, "
          f"{results['campaign_impressions_per_s']:.0f} impressions/s")
    return 0


def refresh(args: argparse.Namespace) -> int:
    """Frozen after week 1 vs retrained weekly, on one drifting world (see the module docstring)."""
    from tqdm.auto import tqdm

    from fedacq.sim.refresh import run_schedule

    n = args.n_users or (30_000 if args.quick else 200_000)
    days = 56
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    world = World(n, days, seed=0)
    t_world = time.perf_counter() - t0
    runs, seconds = {}, {}
    for name, retrain in (("frozen", (0, 7)), ("weekly", tuple(range(0, days, 7)))):
        with tqdm(total=days, desc=f"{name} campaign days") as bar:
            t0 = time.perf_counter()
            runs[name] = run_schedule(world, retrain, on_day=lambda day, version: bar.update())
            seconds[name] = time.perf_counter() - t0
    last = (28, days - 1)
    cmp = {kpi: compare(runs["weekly"].daily, runs["frozen"].daily, *last, kpi=kpi)
           for kpi in ("cost_per_credit_user", "expected_cost_per_credit_user")}
    placebo = compare(runs["weekly"].daily, runs["frozen"].daily, *last, arm="control")
    weeks = []
    for w in range(days // 7):
        k = {name: window_kpis(r.daily, 7 * w, 7 * w + 6) for name, r in runs.items()}
        weeks.append({"week": w + 1, **{f"{name}_treatment": float(k[name].loc["treatment",
                                                                               "expected_cost_per_credit_user"])
                                        for name in runs},
                      "control": float(k["frozen"].loc["control", "expected_cost_per_credit_user"])})
    kpis = {name: window_kpis(r.daily, *last).reset_index().to_dict(orient="records") for name, r in runs.items()}
    results = {
        "benchmark": "sim_refresh", "quick": args.quick, "n_users": n, "pool": world.n_pool, "days": days,
        "machine": {"python": platform.python_version(), "cpu_count": os.cpu_count(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "world_s": t_world, "campaign_s": seconds,
        "weekly_vs_frozen_last_4_weeks": cmp, "placebo_control": placebo,
        "expected_cost_per_credit_user_by_week": weeks, "kpis_last_4_weeks": kpis,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"world({n} users, {world.n_pool} over 8 weeks): {t_world:.1f} s; eight-week campaign: "
          f"frozen {seconds['frozen']:.1f} s, weekly {seconds['weekly']:.1f} s; "
          f"load {load_before} -> {os.getloadavg()}")
    for kpi, c in cmp.items():
        print(f"{kpi}, days 28-55, treatment: weekly {c['a']:.1f} vs frozen {c['b']:.1f}: "
              f"{c['relative']:+.1%} [{c['ci_low']:+.1%}, {c['ci_high']:+.1%}]")
    print(f"placebo (control arms): {placebo['relative']:+.2%}")
    for row in weeks:
        print(f"week {row['week']}: expected cost per credit user frozen {row['frozen_treatment']:.1f}, "
              f"weekly {row['weekly_treatment']:.1f}, control {row['control']:.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
