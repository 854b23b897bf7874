"""``fedacq sim``: generate a synthetic market to files, and run a campaign on a saved one.

``fedacq sim market --n-users 200000 --seed 0 --out market/`` writes
``platform_users``, ``lender_customers`` and ``truth`` (Parquet or CSV) and
``market.json``; each party's node reads only its own table.

``fedacq sim campaign --market market/ [--boost-table boosts.parquet] --out run/``
simulates bidding days and writes ``events``, ``spend_by_bucket``,
``lender_funnel``, ``daily`` and ``summary`` next to each other.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("sim", help="synthetic credit market and ad campaign",
                                   description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="sim_command", required=True, metavar="SIM_COMMAND")

    mk = sub.add_parser("market", help="generate a market and write its tables")
    mk.add_argument("--n-users", type=int, default=200_000, help="platform users (default 200000)")
    mk.add_argument("--seed", type=int, default=0)
    mk.add_argument("--lender-share", type=float, default=0.03,
                    help="lender customers on the platform, as a share of users (default 0.03)")
    mk.add_argument("--lender-outside-share", type=float, default=0.15,
                    help="share of lender customers who are not platform users (default 0.15)")
    mk.add_argument("--high-value-min-drawdown", type=float, default=1000.0)
    mk.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    mk.add_argument("--out", type=Path, required=True, help="output directory")
    mk.set_defaults(func=_market)

    cp = sub.add_parser("campaign", help="simulate a campaign on a saved market")
    cp.add_argument("--market", type=Path, required=True, help="directory written by 'fedacq sim market'")
    cp.add_argument("--boost-table", type=Path, default=None,
                    help="Parquet or CSV with user_id, boost, bucket, arm, layer, table_version")
    cp.add_argument("--treatment-share", type=float, default=0.5,
                    help="share of buckets in treatment for users not in the boost table (default 0.5)")
    cp.add_argument("--salt", default="fedacq-sim", help="bucket salt for users not in the boost table")
    cp.add_argument("--days", type=int, default=14)
    cp.add_argument("--budget-per-day", type=float, default=None,
                    help="daily budget (default 0.02 per platform user)")
    cp.add_argument("--target-cpa", type=float, default=120.0)
    cp.add_argument("--seed", type=int, default=0)
    cp.add_argument("--campaign", default="lender-acq")
    cp.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    cp.add_argument("--out", type=Path, required=True, help="output directory")
    cp.set_defaults(func=_campaign)


def _market(args: argparse.Namespace) -> int:
    from fedacq.sim.market import generate_market

    market = generate_market(args.n_users, seed=args.seed, lender_share=args.lender_share,
                             lender_outside_share=args.lender_outside_share,
                             high_value_min_drawdown=args.high_value_min_drawdown)
    for path in market.save(args.out, fmt=args.format):
        print(path)
    label = market.lender_customers[market.label_column]
    print(f"{market.n_users} platform users, {len(label)} lender customers "
          f"({label.mean():.1%} {market.label_column})")
    return 0


def _read_table(path: Path):
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype={"user_id": str})
    raise ValueError(f"{path}: expected a .parquet or .csv file")


def _campaign(args: argparse.Namespace) -> int:
    from fedacq.sim.campaign import salted_buckets, simulate_campaign
    from fedacq.sim.market import Market

    market = Market.load(args.market)
    boosts = _read_table(args.boost_table) if args.boost_table else None
    result = simulate_campaign(market, boosts, salted_buckets(args.salt, args.treatment_share),
                               days=args.days, budget_per_day=args.budget_per_day,
                               target_cpa=args.target_cpa, seed=args.seed, campaign=args.campaign,
                               progress=True)
    args.out.mkdir(parents=True, exist_ok=True)
    tables = {"events": result.events, "spend_by_bucket": result.spend_by_bucket,
              "lender_funnel": result.lender_funnel, "daily": result.daily,
              "summary": result.summary.reset_index()}
    for name, df in tables.items():
        path = args.out / f"{name}.{args.format}"
        if args.format == "parquet":
            df.to_parquet(path, index=False)
        else:
            df.to_csv(path, index=False)
        print(path)
    print(result.summary[["spend", "applications", "credit_users", "cost_per_credit_user",
                          "drawdown_per_credit_user"]].round(2).to_string())
    return 0
