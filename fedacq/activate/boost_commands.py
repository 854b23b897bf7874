"""``fedacq boosts build|export|show|lookup|reload|rollback``: make, export, inspect boost tables; ask a service.

Tier and experiment settings come from flags or from a JSON config file
(``{"tiers": {...TierConfig...}, "experiment": {...ExperimentConfig...}}``); flags win,
so a campaign's config file can be reused with one value changed.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path


def _floats(s: str) -> list[float]:
    try:
        return [float(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"expected comma-separated numbers, got {s!r}") from None


def _ranges(s: str) -> list[list[int]]:
    """'0-499,700-799' -> [[0, 499], [700, 799]]."""
    out = []
    for part in s.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not sep or not lo.isdigit() or not hi.isdigit():
            raise ValueError(f"expected bucket ranges like 0-499,700-799, got {s!r}")
        out.append([int(lo), int(hi)])
    return out


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("boosts", help="build, export or inspect versioned boost tables",
                              description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="boosts_command", required=True, metavar="ACTION")

    b = sub.add_parser("build", help="scores -> tiers -> boost table directory (data + manifest)")
    b.add_argument("--scores", required=True, help="Parquet with user id and score columns (fedacq score output)")
    b.add_argument("--campaign", required=True)
    b.add_argument("--out", required=True, help="table directory to create (e.g. tables/CAMPAIGN/VERSION)")
    b.add_argument("--config", help="JSON file with 'tiers' and/or 'experiment' objects")
    b.add_argument("--model-version", default="")
    b.add_argument("--id-column", default="user_id")
    b.add_argument("--score-column", default="score")
    b.add_argument("--method", choices=("quantile", "threshold"))
    b.add_argument("--cuts", type=_floats, help="cut points, e.g. 0.5,0.8,0.95")
    b.add_argument("--boosts", type=_floats, help="one multiplier per tier, e.g. 1,1.1,1.3,1.6")
    b.add_argument("--floor", type=float)
    b.add_argument("--cap", type=float)
    b.add_argument("--layer")
    b.add_argument("--salt")
    b.add_argument("--treatment", type=_ranges, help="treatment bucket ranges, e.g. 0-499")
    b.add_argument("--control", type=_ranges, help="control bucket ranges, e.g. 500-999")
    b.add_argument("--default-boost", type=float, default=1.0, help="boost for unknown users in treatment")
    g = b.add_mutually_exclusive_group()
    g.add_argument("--expiry-hours", type=float, default=168.0, help="lifetime from now (default 7 days)")
    g.add_argument("--expires-at", help="absolute expiry, ISO 8601 (UTC if no zone)")
    b.add_argument("--version", help="table version (default: CAMPAIGN-<created time>)")
    b.set_defaults(func=_cmd_build)

    e = sub.add_parser("export", help="write the push file (CSV or Parquet) of a table")
    e.add_argument("--table", required=True, help="table directory")
    e.add_argument("--out", required=True, help="output .csv or .parquet")
    e.add_argument("--format", choices=("csv", "parquet"))
    e.set_defaults(func=_cmd_export)

    s = sub.add_parser("show", help="validate a table and print its manifest")
    s.add_argument("--table", required=True)
    s.set_defaults(func=_cmd_show)

    q = sub.add_parser("lookup", help="ask a running boost service for some users (ops check)")
    q.add_argument("--campaign", required=True)
    q.add_argument("user_ids", nargs="+")
    _client_args(q)
    q.set_defaults(func=_cmd_lookup)

    r = sub.add_parser("reload", help="ask a running boost service to load a newer table version now (admin)")
    r.add_argument("--table", required=True,
                   help="table name: its directory relative to the service's --tables root, e.g. CAMPAIGN/VERSION")
    _client_args(r)
    r.set_defaults(func=_cmd_reload)

    b = sub.add_parser("rollback", help="ask a running boost service to serve an older version again (admin)")
    b.add_argument("--to", required=True, metavar="VERSION", help="the table version (manifest 'version') to serve")
    _client_args(b)
    b.set_defaults(func=_cmd_rollback)


def _client_args(p) -> None:
    p.add_argument("--address", default="127.0.0.1:50071")
    p.add_argument("--tls-dir", help="mutual TLS: directory with ca.pem (the CA of the server's certificate) "
                                     "and <tls-name>.pem/.key (fedacq certs issue)")
    p.add_argument("--tls-name", default="bidder", help="client certificate name (the service's --allow names it)")
    p.add_argument("--server-name", default="platform", help="name the server certificate must carry")


def _client(args):
    from fedacq.activate.service import BoostClient

    return BoostClient(args.address, args.tls_dir, args.tls_name, args.server_name)


def _rpc_error(exc) -> RuntimeError:
    return RuntimeError(f"boost service: {exc.code().name}: {exc.details()}")


def _cmd_lookup(args) -> int:
    import grpc

    client = _client(args)
    try:
        r = client.lookup(args.campaign, args.user_ids, timeout=10.0)
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None
    finally:
        client.close()
    print(f"table {r.table_version}, layer {r.layer}" + (" (EXPIRED: boosts 1.0)" if r.expired else ""))
    for uid, boost, bucket, treat, known in zip(args.user_ids, r.boosts, r.buckets, r.treatment, r.known):
        print(f"{uid}\tboost={boost:.4g}\tbucket={bucket}\tarm={'treatment' if treat else 'control'}"
              f"\t{'known' if known else 'unknown'}")
    return 0


def _cmd_reload(args) -> int:
    import grpc

    client = _client(args)
    try:
        r = client.reload(args.table)
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None
    finally:
        client.close()
    print(f"serving {r.table_version} for campaign {r.campaign} ({r.rows:,} users)")
    return 0


def _cmd_rollback(args) -> int:
    import grpc

    client = _client(args)
    try:
        r = client.rollback(args.to)
    except grpc.RpcError as exc:
        raise _rpc_error(exc) from None
    finally:
        client.close()
    print(f"rolled back: serving {r.table_version} for campaign {r.campaign} ({r.rows:,} users)")
    return 0


def _configs(args) -> tuple[dict, dict]:
    cfg = {}
    if args.config:
        path = Path(args.config)
        try:
            cfg = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"config {path}: no such file") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"config {path}: not valid JSON ({exc})") from None
        unknown = set(cfg) - {"tiers", "experiment"}
        if unknown:
            raise ValueError(f"config {path}: unknown key(s) {sorted(unknown)}")
    tiers = dict(cfg.get("tiers", {}))
    for key in ("method", "cuts", "boosts", "floor", "cap"):
        if getattr(args, key) is not None:
            tiers[key] = getattr(args, key)
    experiment = dict(cfg.get("experiment", {}))
    for key in ("layer", "salt", "treatment", "control"):
        if getattr(args, key) is not None:
            experiment[key] = getattr(args, key)
    return tiers, experiment


def _cmd_build(args) -> int:
    import pyarrow.parquet as pq

    from fedacq.activate.table import ExperimentConfig, build_boost_table, parse_time

    tiers, experiment = _configs(args)
    if experiment and not {"layer", "salt"} <= set(experiment):
        defaults = ExperimentConfig()
        experiment = {"layer": defaults.layer, "salt": defaults.salt, **experiment}
    path = Path(args.scores)
    if not path.exists():
        raise FileNotFoundError(f"scores {path}: no such file")
    names = pq.ParquetFile(path).schema_arrow.names
    missing = [c for c in (args.id_column, args.score_column) if c not in names]
    if missing:
        raise ValueError(f"scores {path}: missing column(s) {missing} (have {names[:20]})")
    scores = pq.read_table(path, columns=[args.id_column, args.score_column]).to_pandas()
    expiry = parse_time(args.expires_at) if args.expires_at else dt.timedelta(hours=args.expiry_hours)
    table = build_boost_table(scores, args.campaign, tiers or None, experiment or None,
                              model_version=args.model_version, expiry=expiry,
                              default_boost=args.default_boost, id_column=args.id_column,
                              score_column=args.score_column, version=args.version, progress=True)
    out = table.write(args.out)
    m = table.manifest
    print(f"boost table {m['version']}: {m['rows']:,} users, tiers {m['tiers']['tier_boosts']}, "
          f"expires {m['expires_at']} -> {out}")
    return 0


def _cmd_export(args) -> int:
    from fedacq.activate.export import export_table
    from fedacq.activate.table import BoostTable

    table = BoostTable.load(args.table)
    out = export_table(table, args.out, args.format)
    print(f"exported {len(table.data):,} rows of {table.version} -> {out}")
    return 0


def _cmd_show(args) -> int:
    from fedacq.activate.table import BoostTable

    table = BoostTable.load(args.table)
    counts = table.data.groupby(["arm", "tier"]).size().rename("users").reset_index()
    print(json.dumps(table.manifest, indent=2, sort_keys=True))
    print(counts.to_string(index=False))
    return 0
