"""``fedacq measure``: the lender's experiment report from its funnel, the platform's events and spend.

Writes ``report.json`` (every number, with intervals), ``report.html`` (one
self-contained page with plots) and the figures as PNG into ``--out``, and logs
the run to the lender's MLflow store (``--tracking-dir``, default ``OUT/mlruns``).
"""

from __future__ import annotations

import argparse
import json
import uuid
from pathlib import Path
from typing import Any

import pandas as pd


def read_table(path: str | Path, what: str) -> pd.DataFrame:
    """A Parquet or CSV file by its suffix; errors name the file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix in (".parquet", ".pq"):
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt"):
            return pd.read_csv(path, dtype={"user_id": "string", "layer": "string"})
    except (OSError, ValueError) as exc:
        raise ValueError(f"{what}: cannot read {path}: {exc}") from exc
    raise ValueError(f"{what}: {path} must be .parquet or .csv")


def flat_metrics(report: dict[str, Any]) -> dict[str, float]:
    """MLflow metric names -> values for every reported number (never for a suppressed group)."""
    out: dict[str, float] = {}
    for layer_name, layer in report["layers"].items():
        for arm, res in layer["arms"].items():
            if "kpis" not in res:
                continue
            out[f"{layer_name}.{arm}.exposed_users"] = res["exposed_users"]
            for kpi, r in res["kpis"].items():
                if "value" in r:
                    out[f"{layer_name}.{arm}.{kpi}"] = r["value"]
        for kpi, res in layer["lift"].items():
            for kind in ("absolute", "relative"):
                r = res.get(kind, {})
                if "value" in r:
                    for key in ("value", "ci_low", "ci_high"):
                        out[f"{layer_name}.lift.{kpi}.{kind}.{key}"] = r[key]
    return out


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from fedacq.measure.render import figures, report_html
    from fedacq.measure.report import measure
    from fedacq.track import PartyRun

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    steps = tqdm(total=5, desc="measure", unit="step")
    funnel = read_table(args.funnel, "--funnel")
    events = read_table(args.events, "--events")
    spend = read_table(args.spend, "--spend") if args.spend else None
    steps.update()
    report = measure(funnel, events, spend, min_bucket_size=args.min_bucket_size,
                     min_events=args.min_events, confidence=args.confidence)
    report["inputs"] = {"funnel": str(args.funnel), "events": str(args.events),
                        "spend": str(args.spend) if args.spend else None}
    steps.update()
    figs = figures(report)
    for name, fig in figs.items():
        fig.savefig(out / name, dpi=110, bbox_inches="tight")
    steps.update()
    (out / "report.json").write_text(json.dumps(report, indent=2))
    (out / "report.html").write_text(report_html(report, figs), encoding="utf-8")
    steps.update()
    job_id = args.job_id or uuid.uuid4().hex[:12]
    with PartyRun(args.tracking_dir or out / "mlruns", "lender", args.experiment, "measure", job_id,
                  params={**report["settings"], **report["inputs"]}) as mlrun:
        mlrun.log_metrics(flat_metrics(report))
        mlrun.log_artifact(out / "report.json")
        mlrun.log_artifact(out / "report.html")
        for name in figs:
            mlrun.log_artifact(out / name, "figures")
    steps.update()
    steps.close()
    print(f"wrote {out / 'report.json'} and {out / 'report.html'} (MLflow run {mlrun.run_id})")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("measure", help="per-bucket lender KPIs and lift with intervals; JSON + HTML report",
                              description=__doc__)
    p.add_argument("--funnel", required=True, help="lender funnel table (.parquet or .csv)")
    p.add_argument("--events", required=True, help="platform click/conversion events with buckets (.parquet or .csv)")
    p.add_argument("--spend", help="platform per-bucket spend aggregate (.csv or .parquet)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--min-bucket-size", type=int, default=100,
                   help="buckets/arms with fewer exposed users are reported as 'not enough data' (default 100)")
    p.add_argument("--min-events", type=int, default=10,
                   help="a KPI needs this many users in its numerator and denominator (default 10)")
    p.add_argument("--confidence", type=float, default=0.95, help="interval confidence level (default 0.95)")
    p.add_argument("--tracking-dir", help="the lender's MLflow store (default OUT/mlruns)")
    p.add_argument("--experiment", default="fedacq-measure", help="MLflow experiment name")
    p.add_argument("--job-id", help="job id tag shared with the other runs of this job")
    p.set_defaults(func=run)
