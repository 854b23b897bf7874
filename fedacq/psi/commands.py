"""``fedacq psi``: run both PSI parties locally over the real protocol.

Both sides run in two threads connected by an in-memory link (the same protocol
code the node daemons run over gRPC). Each side's intersection file holds, in the
shared order, that side's row numbers and original id values; the stats JSON has
sizes, time per phase and bytes each way. Useful to check alignment on real files
before wiring up two nodes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _read(path: Path, id_columns: list[str]):
    import pandas as pd

    if not path.exists():
        raise FileNotFoundError(f"input file {path} does not exist")
    if path.suffix.lower() in (".parquet", ".pq"):
        table = pd.read_parquet(path)
    else:
        table = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
    missing = [c for c in id_columns if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: id column(s) {missing} not found (columns: {list(table.columns)})")
    return table


def _write(table, path: Path) -> None:
    """Write ``table`` as CSV or Parquet atomically: a reader sees the old file or the whole new one."""
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".pq", ".csv"):
        raise ValueError(f"{path}: output must end in .csv or .parquet")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if suffix == ".csv":
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _intersection_table(table, rows, id_columns: list[str], matched_on):
    import pandas as pd

    out = pd.DataFrame({"row": rows})
    for col in id_columns:
        out[col] = table[col].to_numpy()[rows]
    if matched_on is not None:
        out["matched_on"] = [id_columns[int(c)] for c in matched_on]
    return out


def run(args: argparse.Namespace) -> int:
    from fedacq.link.ledger import PartyLedger
    from fedacq.link.memory import memory_pair, run_parties
    from fedacq.psi import LenderSetStore, PlatformCache, psi_lender, psi_platform

    out = Path(args.out)
    lender_cols = args.id_column
    platform_cols = args.platform_id_column or lender_cols
    if len(platform_cols) != len(lender_cols):
        raise ValueError("give as many --platform-id-column as --id-column")
    lender = _read(Path(args.lender), lender_cols)
    platform = _read(Path(args.platform), platform_cols)
    out.mkdir(parents=True, exist_ok=True)
    job = f"psi-{int(time.time())}"
    ledgers = {p: PartyLedger(out / f"{p}_ledger", p) for p in ("lender", "platform")}
    link_l, link_p = memory_pair("lender", "platform", job=job, ledgers=ledgers)
    platform_kw: dict = {"min_intersection": args.min_intersection, "workers": args.workers,
                         "progress": True, "duplicates": args.duplicates}
    lender_kw: dict = {"min_intersection": args.min_intersection, "reveal_to": args.reveal_to,
                       "workers": args.workers, "progress": True, "duplicates": args.duplicates}
    offline = None
    if args.cache:
        cache_dir = Path(args.cache)
        t0 = time.perf_counter()
        cache, _ = PlatformCache.serve(cache_dir, platform, platform_cols, duplicates=args.duplicates,
                                       incremental=args.incremental, rotate=args.rotate,
                                       workers=args.workers, progress=True)
        offline = time.perf_counter() - t0
        platform_kw["cache"] = cache
        lender_kw.update(mode="unbalanced", set_store=LenderSetStore(out / "lender_platform_sets"),
                         incremental=args.incremental)
    t0 = time.perf_counter()
    res_l, res_p = run_parties((lambda: psi_lender(link_l, lender, lender_cols, **lender_kw),),
                               (lambda: psi_platform(link_p, platform, platform_cols, **platform_kw),))
    wall = time.perf_counter() - t0
    lender_out = Path(args.lender_out) if args.lender_out else out / "lender_intersection.csv"
    platform_out = Path(args.platform_out) if args.platform_out else out / "platform_intersection.csv"
    _write(_intersection_table(lender, res_l.rows, lender_cols, res_l.matched_on), lender_out)
    if len(res_p.rows) or args.reveal_to == "both":
        _write(_intersection_table(platform, res_p.rows, platform_cols, res_p.matched_on), platform_out)
    stats = {"job": job, "intersection": res_l.size, "wall_seconds": wall,
             "cache_build_seconds": offline, "lender": res_l.stats, "platform": res_p.stats}
    tmp = out / ".psi_stats.json.tmp"
    tmp.write_text(json.dumps(stats, indent=2, default=str))
    os.replace(tmp, out / "psi_stats.json")
    print(f"intersection {res_l.size} of {len(lender)} lender x {len(platform)} platform rows "
          f"in {wall:.1f} s -> {out}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("psi", help="run ECDH-PSI between two local files (both parties)",
                              description=__doc__)
    p.add_argument("--lender", required=True, help="lender CSV or Parquet")
    p.add_argument("--platform", required=True, help="platform CSV or Parquet")
    p.add_argument("--id-column", action="append", required=True,
                   help="id column, repeat in priority order (e.g. phone then device_id)")
    p.add_argument("--platform-id-column", action="append",
                   help="platform's names for the id columns if they differ (same order)")
    p.add_argument("--out", required=True, help="output folder (stats, each party's ledger, default outputs)")
    p.add_argument("--lender-out", help="lender intersection file (.csv or .parquet)")
    p.add_argument("--platform-out", help="platform intersection file (.csv or .parquet)")
    p.add_argument("--reveal-to", choices=("both", "lender"), default="both")
    p.add_argument("--min-intersection", type=int, default=1)
    p.add_argument("--duplicates", choices=("first", "drop", "error"), default="first")
    p.add_argument("--cache", help="unbalanced mode: platform cache folder (built if absent)")
    p.add_argument("--rotate", action="store_true", help="rebuild the cache with a new key")
    p.add_argument("--incremental", action="store_true",
                   help="with --cache: update the cache in place when the platform table changed and send "
                        "the lender only the change (bounded: see fedacq.psi.cache)")
    p.add_argument("--workers", type=int, default=None, help="processes per party (default: all cores)")
    p.set_defaults(func=run)
