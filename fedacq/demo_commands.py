"""``fedacq demo``: its command-line arguments; :mod:`fedacq.demo` runs it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    p.add_argument("--out", type=Path, default=d.out_dir, help="output folder (default: %(default)s)")
    p.add_argument("--users", type=int, default=d.n_users, help="platform users in the market (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--days", type=int, default=d.days, help="bidding days per campaign (default: %(default)s)")
    p.add_argument("--n-estimators", type=int, default=d.n_estimators)
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
    cfg = DemoConfig(out_dir=args.out, n_users=args.users, seed=args.seed, days=args.days,
                     n_estimators=args.n_estimators, max_depth=args.max_depth,
                     value=None if args.value == NO_VALUE else args.value, key_bits=args.key_bits,
                     insecure_test_key=args.insecure_test_key, transport=args.transport,
                     progress=not args.quiet)
    run_demo(cfg)
    return 0
