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

from fedacq.sim import generate_market, salted_buckets, simulate_campaign


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
    args = parser.parse_args()
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


if __name__ == "__main__":
    raise SystemExit(main())
