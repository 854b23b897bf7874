"""``fedacq demo``: the whole loop on one machine, both parties, on an embedded default market.

The steps are those of :mod:`fedacq.pipeline` (which says who runs each and what
crosses); the demo plays both operators and the simulated world:

1. **market** - :func:`fedacq.sim.generate_market`: the platform's users with
   behavioural features, the lender's existing customers with labels and its own
   features; the latent truth stays with the simulator. Each party's files go to
   ``<out>/<party>/data``.
2. **two nodes** - with ``--transport grpc`` (the default) a lender node and a
   platform node, two ``fedacq node`` processes on 127.0.0.1 with mutual TLS,
   started once with every data set of the run registered; every cross-party
   step below is a job between them. ``inproc`` runs the same jobs in threads.
3. **align + train** - a ``run`` job: ECDH PSI on ``user_id``, then a *prospect*
   SecureBoost model (splits on platform features only, 2048-bit Paillier
   gradients) of the lender's ``high_value`` label; the lender releases the leaf
   values, so the platform holds a complete XGBoost model. For value targeting
   (``--value``, on by default) one more ``run`` job per stage of the value
   (:mod:`fedacq.activate.value`): P(credit granted) and E[drawdown | credit] with
   ``reg:tweedie``.
4. **score** and **activate** - the platform scores its whole user base, builds
   tiers and boosts in a versioned boost table, with experiment buckets (treatment
   gets the boost, control 1.0). Three targetings, each on its own campaign
   (experiment layer) with the same budget per user: *conversion* (the
   probability of a high-value conversion), *value* (the stages' expected value)
   and a label-free *baseline* by activity alone (what the platform could do
   without the lender).
5. **campaign** - :func:`fedacq.sim.simulate_campaign` runs the auctions, clicks,
   applications and the credit funnel; the platform gets its ad log and spend, the
   lender its applicants' funnel and the click events reported to it.
6. **measure** - a ``measure`` job per campaign: the lender's KPIs and lifts with
   intervals; the platform learns per-bucket aggregates only, via private
   intersection-sum with a minimum cohort size and Laplace noise. Value targeting
   is also compared head to head with conversion targeting (treatment arm over
   treatment arm, and the two control arms as a placebo).
7. **report** - one HTML page (``report.html``), ``demo.json``, and MLflow runs in
   each party's own store (``<out>/<party>/mlruns``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from fedacq import pipeline
from fedacq.pipeline import LENDER, PLATFORM


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
    #: the value targeting's business value (a key of :data:`fedacq.activate.value.VALUE_MODELS`),
    #: or ``None`` for conversion targeting and the baseline only.
    value: str | None = "drawdown"
    tier_cuts: tuple[float, ...] = (0.2, 0.5, 0.8)
    tier_boosts: tuple[float, ...] = (0.3, 1.0, 1.6, 3.0)
    treatment_share: float = 0.5
    min_bucket_size: int = 20
    platform_min_group_size: int = 20
    platform_epsilon: float | None = 1.0
    platform_drawdown_bound: float = 20_000.0
    progress: bool = True


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


#: the demo's campaigns: name -> (experiment layer, label). "value" runs when ``DemoConfig.value`` is set.
ARMS = {"conversion": ("prospect", "conversion targeting (P(high-value) prospect model)"),
        "value": ("value", "value targeting (expected value of staged prospect models)"),
        "baseline": ("activity", "activity targeting (no lender input)")}


def run_demo(cfg: DemoConfig) -> dict[str, Any]:
    """Run the whole loop and write ``report.html`` and ``demo.json`` under ``cfg.out_dir``."""
    from fedacq.activate.value import VALUE_MODELS
    from fedacq.sim import generate_market

    if cfg.value is not None and cfg.value not in VALUE_MODELS:
        raise ValueError(f"value must be one of {', '.join(VALUE_MODELS)} (or None), got {cfg.value!r}")
    value = VALUE_MODELS[cfg.value] if cfg.value is not None else None
    names = [n for n in ARMS if n != "value" or value is not None]
    out = _fresh_out_dir(Path(cfg.out_dir).resolve())
    step = _Steps(cfg.progress)
    demo_id = f"demo-{dt.datetime.now(dt.timezone.utc):%Y%m%d%H%M%S}"

    market = step("generate market", lambda: generate_market(cfg.n_users, seed=cfg.seed))
    paths = step("write each party's files", lambda: pipeline.write_party_files(
        market, out, value.stages if value is not None else ()))
    datasets = pipeline.registry(paths, out, tuple(ARMS[n][0] for n in names))
    policy = pipeline.one_operator_policy(cfg.key_bits, cfg.insecure_test_key, min_intersection=100)
    how = "two nodes, mutual TLS" if cfg.transport == "grpc" else "in-process"
    with contextlib.ExitStack() as stack:
        parties = step(f"start the parties ({how})", lambda: stack.enter_context(
            pipeline.start_parties(cfg.transport, out, datasets, {LENDER: policy, PLATFORM: policy})))
        params = {"n_estimators": cfg.n_estimators, "max_depth": cfg.max_depth,
                  "learning_rate": cfg.learning_rate, "max_bin": cfg.max_bin}
        job = {"key_bits": cfg.key_bits, "insecure_test_key": cfg.insecure_test_key, "seed": cfg.seed,
               "experiment": "fedacq-demo", "progress": cfg.progress}
        metrics = step(f"PSI + prospect SecureBoost ({how})",
                       lambda: pipeline.train(parties, job_id=f"{demo_id}-run", label_column=market.label_column,
                                              mode="prospect", model_params=params, **job))
        scores_dir = out / PLATFORM / "scores"
        targeting = {"conversion": step("score the platform's whole user base", lambda: pipeline.score(
            pipeline.prospect_model_path(metrics), paths["platform_parquet"], scores_dir / "scores.parquet",
            cfg.progress)), "baseline": pipeline.activity_scores(market.platform_users)}
        versions = {"conversion": metrics["job_id"], "baseline": metrics["job_id"]}
        stages: dict[str, Any] = {}
        if value is not None:
            stages = step(f"value stages: {', '.join(s.name for s in value.stages)} ({how})",
                          lambda: pipeline.train_stages(parties, value, job_id=f"{demo_id}-value",
                                                        model_params=params, **job))
            targeting["value"] = step(f"value scores: {value.description}", lambda: pipeline.value_scores(
                value, stages, paths["platform_parquet"], scores_dir, cfg.progress))
            versions["value"] = "+".join(m["job_id"] for m in stages.values())
        tiers = pipeline.tier_config(cfg.tier_cuts, cfg.tier_boosts)
        arms: dict[str, Any] = {}
        for name in names:
            layer, label = ARMS[name]
            experiment = pipeline.experiment_config(layer, f"fedacq-demo-{cfg.seed}-{layer}", cfg.treatment_share)
            table = step(f"boost table: {label}", lambda: pipeline.activate(
                targeting[name], layer=layer, tiers=tiers, experiment=experiment, model_version=versions[name],
                table_root=out / PLATFORM / "boost_tables", store=parties.store(PLATFORM), job_id=demo_id,
                tracking="fedacq-demo"))
            camp = step(f"bidding days: {label}", lambda: pipeline.campaign(
                market, table, layer=layer, days=cfg.days, budget_per_day=cfg.budget_per_user_day * cfg.n_users,
                seed=cfg.seed, deliver_to=out, progress=cfg.progress))
            arms[name] = {"layer": layer, "label": label, "table": table, "campaign": camp}
        for arm in arms.values():
            arm["measured"] = step(f"measure: {arm['label']} (lender KPIs; private aggregates for the platform)",
                                   lambda: pipeline.measure(
                                       parties, job_id=f"{demo_id}-measure-{arm['layer']}", layer=arm["layer"],
                                       min_cohort=cfg.platform_min_group_size, epsilon=cfg.platform_epsilon or 0.0,
                                       value_bounds={"drawdown_amount": cfg.platform_drawdown_bound},
                                       min_bucket_size=cfg.min_bucket_size, key_bits=cfg.key_bits,
                                       insecure_test_key=cfg.insecure_test_key, experiment="fedacq-demo",
                                       progress=cfg.progress))
    summary = _summary(cfg, demo_id, metrics, value, stages, arms, step.timings)
    (out / "demo.json").write_text(json.dumps(summary, indent=2, default=str))
    step("report", lambda: pipeline.report(out, summary, metrics, arms))
    if cfg.progress:
        print(f"[fedacq demo] report: {out / 'report.html'}")
        for name, res in summary["results"].items():
            for kpi, lift in res["headline"].items():
                print(f"[fedacq demo]   {name:10s} {kpi}: {_lift_text(lift)}")
        for name, comparison in summary["comparisons"].items():
            for kpi, lift in comparison["headline"].items():
                print(f"[fedacq demo]   {name} {kpi}: {_lift_text(lift)}")
    return summary


#: marks a folder as a demo's output, so that the next run may replace it.
MARKER = ".fedacq-demo"


def _fresh_out_dir(out: Path) -> Path:
    """An empty output folder: a previous demo's output is replaced (its nodes' certificates and
    state included, which a new run must not reuse); any other non-empty folder is refused."""
    import shutil

    if out.exists() and any(out.iterdir()):
        if not (out / MARKER).exists():
            raise ValueError(f"{out} is not empty and holds no previous demo run; give --out a new folder")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("written by fedacq demo; the next run replaces this folder\n")
    return out


def _lift_text(lift: dict[str, Any] | None) -> str:
    if not lift or "relative" not in lift or not isinstance(lift["relative"], dict):
        return "not enough data"
    rel = lift["relative"]
    if "value" not in rel:
        return "not enough data"
    return f"{rel['value']:+.1%} [{rel['ci_low']:+.1%}, {rel['ci_high']:+.1%}]"


def _model_summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """A model's job, sizes, evaluation (the lender's scalar metrics, whichever its objective has)
    and traffic, as ``demo.json`` keeps them."""
    sets = {name: {k: v for k, v in (metrics.get(name) or {}).items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool)}
            for name in ("train", "validation")}
    return {"job_id": metrics["job_id"], "intersection_size": metrics["intersection_size"], **sets,
            "bytes": metrics["bytes"], "timings": metrics["timings"]}


def _summary(cfg: DemoConfig, demo_id: str, metrics: dict[str, Any], value: Any, stages: dict[str, Any],
             arms: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    settings = asdict(cfg)
    settings["out_dir"] = str(cfg.out_dir)
    out: dict[str, Any] = {"job_id": demo_id, "settings": settings, "timings": timings,
                           "model": _model_summary(metrics), "results": {}, "comparisons": {}}
    if value is not None:
        out["value"] = {"name": value.name, "description": value.description,
                        "stages": {s.name: {"label_column": s.label_column, "objective": s.objective,
                                            "given": s.given, **_model_summary(stages[s.name])}
                                   for s in value.stages}}
    for name, arm in arms.items():
        measured = arm["measured"]
        out["results"][name] = {"label": arm["label"], "layer": arm["layer"],
                                "table_version": arm["table"].manifest["version"],
                                "measure_report": measured.results[LENDER]["report"],
                                "headline": pipeline.headline(measured.report, arm["layer"]),
                                "truth": arm["campaign"].summary.to_dict(orient="index")}
    if "value" in arms:
        v, c = arms["value"], arms["conversion"]
        for arm, label in (("treatment", "value over conversion targeting (treatment arms)"),
                           ("control", "placebo: value campaign's control over conversion campaign's control")):
            out["comparisons"][f"value_vs_conversion_{arm}"] = {
                "label": label, "headline": pipeline.compare(v["measured"].report, v["layer"],
                                                             c["measured"].report, c["layer"], arm)}
    return out
