"""``fedacq score`` (score the platform's users with a prospect model) and ``fedacq boost-serve``
(serve boost tables over gRPC).

Only argument parsing and console output live here; the work is
:mod:`fedacq.activate.scoring` (through the chosen :mod:`fedacq.compute` engine: this
machine, or a Ray cluster with ``--engine ray``) and :func:`fedacq.activate.service.serve`.
``fedacq boosts`` has its own module, :mod:`fedacq.activate.boost_commands`.
"""

from __future__ import annotations

import argparse

from fedacq import compute
from fedacq.activate import scoring, service


# -- fedacq score ------------------------------------------------------------------

def add_score_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("score", help="score a Parquet file of users with an XGBoost model",
                              description=scoring.__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="XGBoost model (JSON) with feature names")
    p.add_argument("--users", required=True, help="Parquet file: id column + the model's feature columns")
    p.add_argument("--out", required=True, help="output Parquet file (user_id, score)")
    p.add_argument("--id-column", default="user_id")
    p.add_argument("--batch-size", type=int, default=262_144, help="rows per record batch (bounds memory)")
    p.add_argument("--n-jobs", type=int, default=None, help="XGBoost threads (default: all cores; --engine local)")
    p.add_argument("--engine", choices=compute.ENGINES, default="local",
                   help="local (this machine) or ray (one task per Parquet row group on a Ray cluster; --users "
                        "must be at the same path on every Ray node)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster for --engine ray (what `ray start --head` prints)")
    p.set_defaults(func=_cmd_score)


def _cmd_score(args: argparse.Namespace) -> int:
    if args.batch_size <= 0:
        raise ValueError("--batch-size must be positive")
    engine = compute.make_engine(compute.ComputeConfig(engine=args.engine, address=args.ray_address,
                                                       workers=args.n_jobs))
    with compute.using(engine):
        rep = compute.active().score_parquet(args.model, args.users, args.out, id_column=args.id_column,
                                             batch_size=args.batch_size)
    print(f"scored {rep.rows:,} users in {rep.seconds:.1f} s ({rep.rows_per_s:,.0f} rows/s) -> {rep.out}")
    return 0


# -- fedacq boost-serve ------------------------------------------------------------

def add_serve_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("boost-serve", help="serve boost tables over gRPC (hot reload, loopback by default)",
                              description=service.__doc__.splitlines()[0])
    p.add_argument("--tables", required=True, help="directory tree of boost tables (watched for new versions)")
    p.add_argument("--address", default="127.0.0.1:50071", help="host:port to bind (default loopback)")
    p.add_argument("--watch-interval", type=float, default=2.0, help="seconds between directory scans; 0 disables")
    p.add_argument("--workers", type=int, default=2,
                   help="gRPC worker threads (look-ups hold the GIL: 2 serve more than 8 on 2 cores)")
    p.add_argument("--tls-dir", help="mutual TLS: directory with ca.pem (the CA client certificates must chain "
                                     "to) and <tls-name>.pem/.key")
    p.add_argument("--tls-name", default="platform", help="certificate name of this server")
    p.add_argument("--allow", action="append", default=None, metavar="NAME=ROLE[,ROLE]",
                   help="who may call, by client certificate name, and as what: lookup (bidding) or admin "
                        "(reload, rollback); repeat per name. Required with --tls-dir; without TLS every "
                        f"caller is {service.LOOPBACK!r} (default {service.LOOPBACK}=lookup,admin)")
    p.add_argument("--port-file", help="write the bound port here once serving (for scripts using port 0)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args: argparse.Namespace) -> int:
    allow = service.parse_allow(args.allow) if args.allow else None
    return service.serve(args.tables, args.address, args.workers, args.watch_interval, args.tls_dir,
                         args.tls_name, allow, args.port_file)
