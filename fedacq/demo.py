"""``fedacq demo``: the whole loop on one machine, both parties, on an embedded default market.

Steps (each party touches only its own files; what crosses is in each step's module):

1. **market** - :func:`fedacq.sim.generate_market`: the platform's users with
   behavioural features, the lender's existing customers with labels and its own
   features; the latent truth stays with the simulator.
2. **align + train** - ``fedacq run`` with two real ``fedacq node`` processes on
   127.0.0.1 (mutual TLS): ECDH PSI on ``user_id``, then a *prospect* SecureBoost
   model (splits on platform features only, 2048-bit Paillier gradients); the
   lender releases the leaf values, so the platform holds a complete XGBoost model.
3. **score** - the platform scores its whole user base with that model.
4. **activate** - scores become tiers and boosts in a versioned boost table;
   users get experiment buckets (treatment gets the boost, control 1.0). A
   label-free *baseline* table targets by activity alone (what the platform could
   do without the lender), on its own campaign with the same budget.
5. **bid + convert** - :func:`fedacq.sim.simulate_campaign` runs the auctions,
   clicks, applications and the credit funnel; the platform reports click and
   conversion events carrying bucket IDs.
6. **measure** - the lender computes per-arm KPIs and lifts with intervals
   (:mod:`fedacq.measure`); the platform learns per-bucket aggregates only, via
   private intersection-sum with a minimum cohort size and Laplace noise.
7. **report** - one HTML page (``report.html``) plus MLflow runs in each party's
   own store (``<out>/train/<party>/mlruns``, the nodes' stores, and the
   activation/measurement runs logged beside them).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

LENDER, PLATFORM = "lender", "platform"

#: the KPIs the business case is judged on (names from :mod:`fedacq.measure.kpis`).
HEADLINE_KPIS = ("cost_per_credit_user", "drawdown_per_user")


@dataclass
class DemoConfig:
    """Settings of one demo run; the defaults finish in minutes on 2 cores."""

    out_dir: Path = Path("fedacq-demo")
    n_users: int = 1_000_000
    seed: int = 7
    key_bits: int = 2048
    insecure_test_key: bool = False
    transport: str = "grpc"
    n_estimators: int = 20
    max_depth: int = 3
    learning_rate: float = 0.3
    max_bin: int = 32
    days: int = 28
    #: the lender's daily budget per platform user. A lender's budget buys a small share of
    #: the platform's traffic; the scarcer it is, the more it matters where it goes (see the
    #: README's "What the demo shows" for the measured trade-off).
    budget_per_user_day: float = 0.005
    tier_cuts: tuple[float, ...] = (0.2, 0.5, 0.8)
    tier_boosts: tuple[float, ...] = (0.3, 1.0, 1.6, 3.0)
    treatment_share: float = 0.5
    min_bucket_size: int = 20
    platform_min_group_size: int = 20
    platform_epsilon: float | None = 1.0
    platform_drawdown_bound: float = 20_000.0
    progress: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


class _Steps:
    """Prints one line per step with its wall time (the long steps show their own bars)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[[], Any]) -> Any:
        if self.enabled:
            print(f"[fedacq demo] {name} ...", flush=True)
        start = time.perf_counter()
        result = fn()
        self.timings[name] = round(time.perf_counter() - start, 3)
        if self.enabled:
            print(f"[fedacq demo] {name}: done in {self.timings[name]:.1f} s", flush=True)
        return result


def write_party_files(market: Any, data_dir: Path) -> dict[str, Path]:
    """Each party's own input files: the lender's customers with labels, the platform's users."""
    (data_dir / LENDER).mkdir(parents=True, exist_ok=True)
    (data_dir / PLATFORM).mkdir(parents=True, exist_ok=True)
    lender = market.lender_customers[["user_id", market.label_column, *market.lender_feature_columns]].copy()
    lender[market.label_column] = lender[market.label_column].astype(np.int8)
    users = market.platform_users[["user_id", *market.platform_feature_columns]]
    paths = {"lender_csv": data_dir / LENDER / "customers.csv",
             "platform_csv": data_dir / PLATFORM / "users.csv",
             "platform_parquet": data_dir / PLATFORM / "users.parquet"}
    lender.to_csv(paths["lender_csv"], index=False)
    users.to_csv(paths["platform_csv"], index=False)
    users.to_parquet(paths["platform_parquet"], index=False)
    return paths


def activity_scores(users: pd.DataFrame) -> pd.DataFrame:
    """The label-free baseline: rank users by how active they are (no lender input at all)."""
    minutes = users["daily_minutes"].fillna(0).to_numpy()
    days = users["days_active_30d"].fillna(0).to_numpy()
    return pd.DataFrame({"user_id": users["user_id"].to_numpy(), "score": minutes * days / 30.0})


def headline(report: dict[str, Any], layer: str) -> dict[str, Any]:
    """Lift (relative, with interval) of the headline KPIs of one measured layer."""
    lifts = report["layers"][layer]["lift"]
    return {k: lifts.get(k) for k in HEADLINE_KPIS}


def train_model(market: Any, paths: dict[str, Path], out_dir: Path, *, mode: str, params: dict[str, Any],
                key_bits: int, insecure_test_key: bool, transport: str, seed: int, job_id: str,
                experiment: str = "fedacq-demo", progress: bool = True) -> dict[str, Any]:
    """PSI + SecureBoost on the parties' files (``mode`` "prospect" or "joint"); the run's metrics."""
    from fedacq.learn.run import RunConfig, run

    run_cfg = RunConfig(lender_path=paths["lender_csv"], platform_path=paths["platform_csv"],
                        id_column="user_id", label_column=market.label_column, out_dir=out_dir,
                        model="secureboost", mode=mode, key_bits=key_bits,
                        insecure_test_key=insecure_test_key, transport=transport,
                        validation_fraction=0.2, seed=seed, experiment=experiment, job_id=job_id,
                        progress=progress, params=params)
    return run(run_cfg)


def prospect_model_path(metrics: dict[str, Any]) -> Path:
    """The platform's exported XGBoost model of a prospect run."""
    return next(Path(f) for f in metrics["files"][PLATFORM] if f.endswith("prospect_xgboost.json"))


def score_users(model_path: Path, platform_parquet: Path, scores_path: Path, progress: bool) -> pd.DataFrame:
    """The platform scores its whole user base with the prospect model (``user_id``, ``score``)."""
    from fedacq.activate import load_booster, score_parquet

    scores_path.parent.mkdir(parents=True, exist_ok=True)
    score_parquet(load_booster(model_path), platform_parquet, scores_path, id_column="user_id", progress=progress)
    return pd.read_parquet(scores_path)


def tier_config(cuts: tuple[float, ...], boosts: tuple[float, ...]) -> Any:
    """Quantile tiers whose floor and cap are the smallest and largest boost."""
    from fedacq.activate import TierConfig

    return TierConfig(cuts=cuts, boosts=boosts, floor=min(boosts), cap=max(boosts))


def experiment_config(layer: str, salt: str, treatment_share: float) -> Any:
    """Buckets ``0..share*1000-1`` in treatment, the rest in control."""
    from fedacq.activate import ExperimentConfig

    cut = round(treatment_share * 1000)
    return ExperimentConfig(layer=layer, salt=salt, treatment=((0, cut - 1),), control=((cut, 999),))


def run_arm(market: Any, scores: pd.DataFrame, *, layer: str, label: str, tiers: Any, experiment: Any,
            model_version: str, table_root: Path, days: int, budget_per_day: float, seed: int,
            progress: bool, step: Callable[[str, Callable[[], Any]], Any] | None = None) -> dict[str, Any]:
    """One targeting's boost table and simulated campaign: ``layer``, ``label``, ``table``, ``table_dir``, ``campaign``."""
    from fedacq.activate import build_boost_table
    from fedacq.sim import simulate_campaign

    step = step or (lambda _name, fn: fn())
    table = step(f"boost table: {label}",
                 lambda: build_boost_table(scores, campaign=f"lender-acq-{layer}", tiers=tiers,
                                           experiment=experiment, model_version=model_version))
    table_dir = table.write(table_root / layer)
    campaign = step(f"bidding days: {label}",
                    lambda: simulate_campaign(market, boost_table=table.serving_frame(),
                                              bucket_of=table.bucket_fn(), days=days,
                                              budget_per_day=budget_per_day, seed=seed,
                                              campaign=f"lender-acq-{layer}", layer=layer, progress=progress))
    return {"layer": layer, "label": label, "table": table, "table_dir": table_dir, "campaign": campaign}


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole loop and write ``report.html`` and ``demo.json`` under ``cfg.out_dir``."""
    from fedacq.sim import generate_market

    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    step = _Steps(cfg.progress)
    job_id = f"demo-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"

    market = step("generate market", lambda: generate_market(cfg.n_users, seed=cfg.seed))
    paths = step("write each party's files", lambda: write_party_files(market, out / "data"))

    params = {"n_estimators": cfg.n_estimators, "max_depth": cfg.max_depth,
              "learning_rate": cfg.learning_rate, "max_bin": cfg.max_bin}
    metrics = step("PSI + prospect SecureBoost (two nodes, mutual TLS)",
                   lambda: train_model(market, paths, out / "train", mode="prospect", params=params,
                                       key_bits=cfg.key_bits, insecure_test_key=cfg.insecure_test_key,
                                       transport=cfg.transport, seed=cfg.seed, job_id=job_id,
                                       progress=cfg.progress))
    scores = step("score the platform's whole user base",
                  lambda: score_users(prospect_model_path(metrics), paths["platform_parquet"],
                                      out / PLATFORM / "scores.parquet", cfg.progress))

    tiers = tier_config(cfg.tier_cuts, cfg.tier_boosts)
    arms = {"model": ("prospect", scores, "jointly built prospect model"),
            "baseline": ("activity", activity_scores(market.platform_users), "activity targeting (no lender input)")}
    results: dict[str, Any] = {}
    for name, (layer, layer_scores, label) in arms.items():
        results[name] = run_arm(market, layer_scores, layer=layer, label=label, tiers=tiers,
                                experiment=experiment_config(layer, f"fedacq-demo-{cfg.seed}-{layer}", cfg.treatment_share),
                                model_version=job_id, table_root=out / PLATFORM / "boost_tables",
                                days=cfg.days, budget_per_day=cfg.budget_per_user_day * cfg.n_users,
                                seed=cfg.seed, progress=cfg.progress, step=step)

    measured = step("measure at the lender; private aggregates for the platform",
                    lambda: _measure(cfg, results, out, job_id))
    step("log activation and measurement to each party's MLflow store",
         lambda: _track(metrics["tracking"], results, measured, job_id))
    summary = _summary(cfg, job_id, metrics, results, measured, step.timings)
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str))
    step("report", lambda: _write_report(out, summary, metrics, results, measured))
    if cfg.progress:
        print(f"[fedacq demo] report: {out / 'report.html'}")
        for name, res in summary["results"].items():
            for kpi, lift in res["headline"].items():
                print(f"[fedacq demo]   {name:8s} {kpi}: {_lift_text(lift)}")
    return summary


def _measure(cfg: DemoConfig, results: dict[str, Any], out: Path, job_id: str) -> dict[str, Any]:
    """Lender-side KPI reports per campaign, and the platform's private per-bucket view."""
    from fedacq.crypto.paillier import generate_keypair
    from fedacq.link.ledger import PartyLedger
    from fedacq.link.memory import memory_pair, run_parties
    from fedacq.measure.private import share_outcomes_lender, share_outcomes_platform
    from fedacq.measure.report import measure

    reports, views = {}, {}
    ledgers = {p: PartyLedger(out / p, p) for p in (LENDER, PLATFORM)}  # one per party, a job per campaign
    _, private_key = generate_keypair(cfg.key_bits, insecure_test_key=cfg.insecure_test_key)
    for name, res in results.items():
        camp = res["campaign"]
        reports[name] = measure(camp.lender_funnel, camp.events, camp.spend_by_bucket,
                                min_bucket_size=cfg.min_bucket_size)
        lender_link, platform_link = memory_pair(LENDER, PLATFORM, job=f"{job_id}-measure-{name}", ledgers=ledgers)
        _, view = run_parties(
            (lambda: share_outcomes_lender(lender_link, camp.lender_funnel, private_key=private_key,
                                           layer=res["layer"], min_group_size=cfg.platform_min_group_size,
                                           epsilon=cfg.platform_epsilon,
                                           value_bounds={"drawdown_amount": cfg.platform_drawdown_bound}),),
            (lambda: share_outcomes_platform(platform_link, camp.events,
                                             min_group_size=cfg.platform_min_group_size,
                                             spend=camp.spend_by_bucket),))
        views[name] = view
    return {"reports": reports, "platform_views": views}


def _track(stores: dict[str, str], results: dict[str, Any], measured: dict[str, Any], job_id: str) -> None:
    """Each party logs what it holds to its own store, tagged with the job: the platform its
    boost tables and the per-bucket aggregates it was released, the lender its measurement."""
    from fedacq.measure.commands import flat_metrics
    from fedacq.measure.render import figures
    from fedacq.track import PartyRun

    for name, res in results.items():
        manifest = res["table"].manifest
        view = measured["platform_views"][name]
        with PartyRun(stores[PLATFORM], PLATFORM, "fedacq-demo", f"activate-{res['layer']}", job_id,
                      params={k: manifest[k] for k in ("version", "campaign", "model_version", "rows")}) as run:
            run.log_dict(manifest, "boost_table_manifest.json")
            run.log_dict({"layer": view.layer, "epsilon": view.epsilon,
                          "buckets": view.buckets.to_dict(orient="records")}, "released_aggregates.json")
            run.log_metrics({"buckets_suppressed": int(view.buckets["suppressed"].sum()),
                             "buckets_released": int((~view.buckets["suppressed"]).sum())})
        report = measured["reports"][name]
        with PartyRun(stores[LENDER], LENDER, "fedacq-demo", f"measure-{res['layer']}", job_id,
                      params={**report["settings"], "layer": res["layer"]}) as run:
            run.log_metrics(flat_metrics(report))
            run.log_dict(report, "report.json")
            for fig_name, fig in figures(report).items():
                run.log_figure(fig, fig_name)


def _lift_text(lift: dict[str, Any] | None) -> str:
    if not lift or "relative" not in lift or not isinstance(lift["relative"], dict):
        return "not enough data"
    rel = lift["relative"]
    if "value" not in rel:
        return "not enough data"
    return f"{rel['value']:+.1%} [{rel['ci_low']:+.1%}, {rel['ci_high']:+.1%}]"


def _summary(cfg: DemoConfig, job_id: str, metrics: dict[str, Any], results: dict[str, Any],
             measured: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    settings = asdict(cfg)
    settings["out_dir"] = str(cfg.out_dir)
    out: dict[str, Any] = {"job_id": job_id, "settings": settings, "timings": timings,
                           "model": {"intersection_size": metrics["intersection_size"],
                                     "train": {k: metrics["train"][k] for k in ("auc", "ks")},
                                     "validation": {k: metrics["validation"][k] for k in ("auc", "ks")},
                                     "bytes": metrics["bytes"], "timings": metrics["timings"]},
                           "results": {}}
    for name, res in results.items():
        report = measured["reports"][name]
        out["results"][name] = {"label": res["label"], "layer": res["layer"],
                                "table_version": res["table"].manifest["version"],
                                "headline": headline(report, res["layer"]),
                                "truth": res["campaign"].summary.to_dict(orient="index")}
    return out


def _write_report(out: Path, summary: dict[str, Any], metrics: dict[str, Any], results: dict[str, Any],
                  measured: dict[str, Any]) -> Path:
    from fedacq.demo_report import demo_report_html

    path = out / "report.html"
    path.write_text(demo_report_html(summary, metrics, results, measured), encoding="utf-8")
    return path


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="the whole pipeline, both parties, on a simulated market",
                              description=__doc__.splitlines()[0])
    d = DemoConfig()
    p.add_argument("--out", type=Path, default=d.out_dir, help="output folder (default: %(default)s)")
    p.add_argument("--users", type=int, default=d.n_users, help="platform users in the market (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--days", type=int, default=d.days, help="bidding days per campaign (default: %(default)s)")
    p.add_argument("--n-estimators", type=int, default=d.n_estimators)
    p.add_argument("--max-depth", type=int, default=d.max_depth)
    p.add_argument("--key-bits", type=int, default=d.key_bits)
    p.add_argument("--insecure-test-key", action="store_true",
                   help="allow a key under 2048 bits (tests only: the result is not a result)")
    p.add_argument("--transport", choices=("grpc", "inproc"), default=d.transport,
                   help="grpc: two real node processes with mutual TLS (default); inproc: threads")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_cli)


def _cli(args: Any) -> int:
    cfg = DemoConfig(out_dir=args.out, n_users=args.users, seed=args.seed, days=args.days,
                     n_estimators=args.n_estimators, max_depth=args.max_depth, key_bits=args.key_bits,
                     insecure_test_key=args.insecure_test_key, transport=args.transport,
                     progress=not args.quiet)
    run_demo(cfg)
    return 0
