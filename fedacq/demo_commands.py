"""``fedacq demo``: its command-line arguments; :mod:`fedacq.demo` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedacq.campaign.demo import CampaignDemoConfig, run_campaign_demo
from fedacq.demo import DemoConfig, run_demo

#: ``--value`` choices besides the value models: no value targeting.
NO_VALUE = "none"


def add_parser(subparsers: Any) -> None:
    from fedacq.activate.value import VALUE_MODELS

    p = subparsers.add_parser("demo", help="the whole pipeline, both parties, on a simulated market",
                              description="The whole loop on one machine, both parties, on a simulated market: "
                                          "conversion targeting, value targeting and an activity baseline, each "
                                          "measured against its control.")
    d = DemoConfig()
    c = CampaignDemoConfig()
    p.add_argument("--campaign", action="store_true",
                   help="run the eight-week campaign autopilot instead: weekly cycles (PSI, model update, gates, "
                        "boost table publication), measurement, rollback, a frozen-model comparison, and both "
                        "parties' consoles' data left behind (fedacq.campaign.demo)")
    p.add_argument("--out", type=Path, default=None,
                   help=f"output folder (default: {d.out_dir}; with --campaign {c.out_dir})")
    p.add_argument("--users", type=int, default=None,
                   help=f"platform users in the market (default: {d.n_users}; with --campaign {c.n_users})")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--days", type=int, default=None,
                   help=f"bidding days per campaign (default: {d.days}; with --campaign {c.days})")
    p.add_argument("--n-estimators", type=int, default=None,
                   help=f"trees per model (default: {d.n_estimators}; with --campaign {c.n_estimators})")
    p.add_argument("--max-depth", type=int, default=d.max_depth)
    p.add_argument("--value", choices=(*VALUE_MODELS, NO_VALUE), default=d.value,
                   help="value targeting's business value: " + "; ".join(
                       f"{name}: {m.description}" for name, m in VALUE_MODELS.items())
                   + f"; {NO_VALUE}: conversion targeting and the baseline only (default: %(default)s)")
    p.add_argument("--key-bits", type=int, default=d.key_bits)
    p.add_argument("--insecure-test-key", action="store_true",
                   help="allow a key under 2048 bits (tests only: the result is not a result)")
    p.add_argument("--transport", choices=("grpc", "inproc"), default=d.transport,
                   help="grpc: two real node processes with mutual TLS (default); inproc: threads")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cli)


def _cli(args: Any) -> int:
    if args.campaign:
        c = CampaignDemoConfig()
        run_campaign_demo(CampaignDemoConfig(
            out_dir=args.out or c.out_dir, n_users=args.users or c.n_users, days=args.days or c.days, seed=args.seed,
            n_estimators=args.n_estimators or c.n_estimators, max_depth=args.max_depth, key_bits=args.key_bits,
            insecure_test_key=args.insecure_test_key, transport=args.transport, progress=not args.quiet))
        return 0
    d = DemoConfig()
    cfg = DemoConfig(out_dir=args.out or d.out_dir, n_users=args.users or d.n_users, seed=args.seed,
                     days=args.days or d.days, n_estimators=args.n_estimators or d.n_estimators,
                     max_depth=args.max_depth,
                     value=None if args.value == NO_VALUE else args.value, key_bits=args.key_bits,
                     insecure_test_key=args.insecure_test_key, transport=args.transport,
                     progress=not args.quiet)
    run_demo(cfg)
    return 0
