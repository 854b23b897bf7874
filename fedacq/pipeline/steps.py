"""The pipeline's steps as functions; :mod:`fedacq.pipeline` says who runs each and what crosses."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from fedacq.pipeline.parties import LENDER, PLATFORM, Parties

if TYPE_CHECKING:  # activation's imports are heavy; the lender's steps do not need them
    from fedacq.activate.value import Stage, ValueModel

#: registered data-set names of the parties' inputs (``[datasets]`` of each node).
INPUTS = {LENDER: "customers", PLATFORM: "users"}


# -- the parties' files ------------------------------------------------------------------

def stage_dataset(stage: str) -> str:
    """The lender's registered name of a value stage's training table (:func:`write_party_files`)."""
    return f"{INPUTS[LENDER]}-{stage}"


def write_party_files(market: Any, root: Path, stages: tuple[Stage, ...] = ()) -> dict[str, Path]:
    """Each party's own input files from a simulated market: the lender's customers with labels
    and its features (``lender_csv``), the platform's users with features (``platform_csv`` for
    training, ``platform_parquet`` for scoring), under ``root/<party>/data``.

    Each value stage (:class:`fedacq.activate.value.Stage`) gets its own lender table, keyed
    :func:`stage_dataset`: every customer, the stage's label (empty outside the stage) and the
    lender's features. One label per table, so no outcome is ever read as a feature.
    """
    for party in (LENDER, PLATFORM):
        (root / party / "data").mkdir(parents=True, exist_ok=True)
    customers = market.lender_customers
    features = list(market.lender_feature_columns)
    lender = customers[["user_id", market.label_column, *features]].copy()
    lender[market.label_column] = lender[market.label_column].astype(np.int8)
    users = market.platform_users[["user_id", *market.platform_feature_columns]]
    paths = {"lender_csv": root / LENDER / "data" / "customers.csv",
             "platform_csv": root / PLATFORM / "data" / "users.csv",
             "platform_parquet": root / PLATFORM / "data" / "users.parquet"}
    lender.to_csv(paths["lender_csv"], index=False)
    for stage in stages:
        table = pd.DataFrame({"user_id": customers["user_id"], stage.label_column: stage.labels(customers)})
        path = paths[stage_dataset(stage.name)] = root / LENDER / "data" / f"{stage_dataset(stage.name)}.csv"
        pd.concat([table, customers[features]], axis=1).to_csv(path, index=False)
    users.to_csv(paths["platform_csv"], index=False)
    users.to_parquet(paths["platform_parquet"], index=False)
    return paths


def campaign_datasets(layer: str) -> dict[str, dict[str, str]]:
    """A campaign's outputs at each party, logical name -> the name the party registers them under:
    the lender's ``funnel`` and ``events`` (the click events reported to it), the platform's
    ``events`` (its ad log) and ``spend`` (per bucket). The ``[datasets]`` of a ``measure`` job."""
    return {LENDER: {"funnel": f"funnel-{layer}", "events": f"events-{layer}"},
            PLATFORM: {"events": f"events-{layer}", "spend": f"spend-{layer}"}}


def campaign_files(root: Path, layer: str) -> dict[str, dict[str, Path]]:
    """Registered name -> file of a campaign's outputs, under ``root/<party>/campaigns/<layer>/``."""
    return {party: {name: root / party / "campaigns" / layer / f"{logical}.parquet" for logical, name in names.items()}
            for party, names in campaign_datasets(layer).items()}


def registry(paths: dict[str, Path], root: Path, layers: tuple[str, ...] = ()) -> dict[str, dict[str, Path]]:
    """Each party's data-set registry for a run: its inputs (the value stages' tables among
    them) and the campaign files of ``layers``."""
    out = {LENDER: {INPUTS[LENDER]: paths["lender_csv"]}, PLATFORM: {INPUTS[PLATFORM]: paths["platform_csv"]}}
    out[LENDER].update({name: path for name, path in paths.items() if name.startswith(stage_dataset(""))})
    for layer in layers:
        for party, names in campaign_files(root, layer).items():
            out[party].update(names)
    return out


# -- align and train (cross: node jobs) ---------------------------------------------------

def align(parties: Parties, *, job_id: str, id_columns: tuple[str, ...] = ("user_id",),
          min_intersection: int = 100, mode: str = "balanced", incremental: bool = False,
          tables: dict[str, str] | None = None, progress: bool = False) -> dict[str, Any]:
    """PSI on the parties' inputs (a ``psi`` job; ``tables[party]``: the registered names, default
    :data:`INPUTS`); ``{party: result}`` with each side's ``intersection`` size and ``output`` (its
    rows of the intersection, in the shared order). ``incremental`` (``mode="unbalanced"`` only):
    the platform updates its cache of blinded ids in place and only the change crosses
    (:mod:`fedacq.psi.cache`), what a campaign's cycles want.

    :func:`train` aligns again inside its own job unless it is given this job's id as
    ``psi_job``; this step alone tells both parties the overlap before either commits to training.
    """
    job = {"job": {"protocol": "psi", "id": job_id},
           "datasets": {party: {"ids": name} for party, name in {**INPUTS, **(tables or {})}.items()},
           "params": {"id_columns": list(id_columns), "min_intersection": min_intersection, "mode": mode,
                      "incremental": incremental}}
    return parties.run(job, progress)


def train(parties: Parties, *, job_id: str, label_column: str, id_column: str = "user_id",
          model: str = "secureboost", mode: str = "prospect", model_params: dict[str, Any] | None = None,
          key_bits: int = 2048, insecure_test_key: bool = False, min_intersection: int = 100,
          validation_fraction: float = 0.2, seed: int = 0, experiment: str = "fedacq-pipeline",
          lender_table: str = INPUTS[LENDER], platform_table: str = INPUTS[PLATFORM],
          xgb_model: str | None = None, psi_job: str | None = None, progress: bool = False) -> dict[str, Any]:
    """PSI then federated training and the lender's evaluation (a ``run`` job) on the lender's
    registered table ``lender_table`` and the platform's ``platform_table``; with ``xgb_model``
    (the id of an earlier ``run`` job both nodes hold, XGBoost's name) trees are added to that model;
    with ``psi_job`` (the id of a finished ``psi`` job of both nodes on the same tables and id
    column) each node trains on its own result of that job instead of aligning again inside the
    run job.

    Returns the job's metrics as ``fedacq run`` reports them
    (:func:`fedacq.learn.run_report.job_metrics`): ``intersection_size``, ``train`` /
    ``validation`` (the lender's evaluation with the objective's metrics), ``history``,
    ``timings`` and ``platform_timings``, ``bytes`` each way, ``files`` (each party's model
    part, and the lender's ``plots``), ``tracking`` (each party's MLflow store) and ``job_id``.
    """
    from fedacq.learn.run_report import job_metrics

    job = {"job": {"protocol": "run", "id": job_id},
           "datasets": {LENDER: {"table": lender_table}, PLATFORM: {"table": platform_table}},
           "params": {"id_column": id_column, "label_column": label_column, "model": model,
                      "model_params": dict(model_params or {}), "mode": mode, "key_bits": key_bits,
                      "insecure_test_key": insecure_test_key, "min_intersection": min_intersection,
                      "validation_fraction": validation_fraction, "seed": seed, "experiment": experiment}}
    if xgb_model is not None:
        job["params"]["xgb_model"] = xgb_model
    if psi_job is not None:
        job["params"]["psi_job"] = psi_job
    results = parties.run(job, progress)
    # at one site (SiteParties) the platform's side stays at the platform: its part is not named here
    platform = results.get(PLATFORM) or {"timings": {}, "info": None, "files": []}
    return job_metrics(results[LENDER], platform, job_id=job_id, model=model, mode=mode,
                       transport=parties.transport, tracking={p: parties.store(p) for p in (LENDER, PLATFORM)})


def train_stages(parties: Parties, value: ValueModel, *, job_id: str, model_params: dict[str, Any] | None = None,
                 lender_prefix: str = INPUTS[LENDER], **kwargs: Any) -> dict[str, dict[str, Any]]:
    """One prospect ``run`` job per stage of ``value`` (job ``<job_id>-<stage>``, on the lender's
    table ``<lender_prefix>-<stage>``, :func:`stage_dataset` by default, with the stage's objective);
    ``{stage: metrics}`` as :func:`train` returns them. ``kwargs`` go to :func:`train`."""
    return {stage.name: train(parties, job_id=f"{job_id}-{stage.name}", label_column=stage.label_column,
                              mode="prospect", model_params={**(model_params or {}), "objective": stage.objective},
                              lender_table=f"{lender_prefix}-{stage.name}", **kwargs)
            for stage in value.stages}


def prospect_model_path(metrics: dict[str, Any]) -> Path:
    """The platform's exported XGBoost model of a prospect run."""
    return next(Path(f) for f in metrics["files"][PLATFORM] if f.endswith("prospect_xgboost.json"))


# -- score and activate (platform) -------------------------------------------------------

def score(model_path: Path, users_parquet: Path, scores_path: Path, progress: bool = False) -> pd.DataFrame:
    """The platform scores its whole user base with the prospect model (``user_id``, ``score``), on the
    party's compute engine (this machine's cores, or its own Ray cluster inside ``compute.using``)."""
    from fedacq import compute

    scores_path.parent.mkdir(parents=True, exist_ok=True)
    compute.active().score_parquet(model_path, users_parquet, scores_path, id_column="user_id", progress=progress)
    return pd.read_parquet(scores_path)


def value_scores(value: ValueModel, stages: dict[str, dict[str, Any]], users_parquet: Path, out_dir: Path,
                 progress: bool = False) -> pd.DataFrame:
    """The platform scores its whole user base with each stage's released model and combines the
    scores into ``value``'s expected-value score (:func:`fedacq.activate.value.combine`); each
    stage's scores and the value go to ``out_dir`` (``scores-<stage>.parquet``, ``value-<name>.parquet``)."""
    from fedacq.activate.value import combine

    scores = {name: score(prospect_model_path(metrics), users_parquet, out_dir / f"scores-{name}.parquet", progress)
              for name, metrics in stages.items()}
    combined = combine(value, scores)
    combined.to_parquet(out_dir / f"value-{value.name}.parquet", index=False)
    return combined


def activity_scores(users: pd.DataFrame) -> pd.DataFrame:
    """The label-free baseline: the platform ranks users by how active they are (no lender input)."""
    minutes = users["daily_minutes"].fillna(0).to_numpy()
    days = users["days_active_30d"].fillna(0).to_numpy()
    return pd.DataFrame({"user_id": users["user_id"].to_numpy(), "score": minutes * days / 30.0})


def tier_config(cuts: tuple[float, ...], boosts: tuple[float, ...]) -> Any:
    """Quantile tiers whose floor and cap are the smallest and largest boost."""
    from fedacq.activate import TierConfig

    return TierConfig(cuts=cuts, boosts=boosts, floor=min(boosts), cap=max(boosts))


def experiment_config(layer: str, salt: str, treatment_share: float) -> Any:
    """Buckets ``0..share*1000-1`` in treatment, the rest in control."""
    from fedacq.activate import ExperimentConfig

    cut = round(treatment_share * 1000)
    return ExperimentConfig(layer=layer, salt=salt, treatment=((0, cut - 1),), control=((cut, 999),))


def activate(scores: pd.DataFrame, *, layer: str, tiers: Any, experiment: Any, model_version: str,
             table_root: Path, store: str | None = None, job_id: str = "", tracking: str = "fedacq-pipeline",
             versioned: bool = False) -> Any:
    """Scores -> tiers -> a versioned boost table with experiment buckets, written under
    ``table_root/<layer>`` (``table_root/<layer>/<version>`` when ``versioned``: a campaign keeps
    every version for its boost service's rollback); logged to the platform's MLflow ``store``
    (experiment ``tracking``) when given."""
    from fedacq.activate import build_boost_table
    from fedacq.track import PartyRun

    table = build_boost_table(scores, campaign=f"lender-acq-{layer}", tiers=tiers, experiment=experiment,
                              model_version=model_version)
    table.write(table_root / layer / table.version if versioned else table_root / layer)
    if store is not None:
        manifest = table.manifest
        with PartyRun(store, PLATFORM, tracking, f"activate-{layer}", job_id,
                      params={k: manifest[k] for k in ("version", "campaign", "model_version", "rows")}) as run:
            run.log_dict(manifest, "boost_table_manifest.json")
    return table


# -- campaign (the simulated world) -------------------------------------------------------

def campaign(market: Any, table: Any, *, layer: str, days: int, budget_per_day: float, seed: int,
             deliver_to: Path | None = None, progress: bool = False) -> Any:
    """Simulated bidding days with the boost table (:func:`fedacq.sim.simulate_campaign`).

    The simulator stands in for the bidding side, the users and the platform's
    conversion reporting. With ``deliver_to`` (a run's root) each party gets its
    share in :func:`campaign_files`: the platform its ad log and per-bucket spend,
    the lender its applicants' funnel and the click events reported to it.
    """
    from fedacq.sim import simulate_campaign

    result = simulate_campaign(market, boost_table=table.serving_frame(), bucket_of=table.bucket_fn(), days=days,
                               budget_per_day=budget_per_day, seed=seed, campaign=f"lender-acq-{layer}",
                               layer=layer, progress=progress)
    if deliver_to is not None:
        shares = {LENDER: {"funnel": result.lender_funnel, "events": result.events},
                  PLATFORM: {"events": result.events, "spend": result.spend_by_bucket}}
        for party, names in campaign_datasets(layer).items():
            files = campaign_files(deliver_to, layer)[party]
            for logical, name in names.items():
                files[name].parent.mkdir(parents=True, exist_ok=True)
                shares[party][logical].to_parquet(files[name], index=False)
    return result


# -- measure (cross: a node job) ---------------------------------------------------------

@dataclass
class Measured:
    """One layer's measurement: the lender's report and what the platform was released (None
    when the lender ran the job from its own node alone: the platform's view stays there)."""

    report: dict[str, Any]
    platform_view: Any  # fedacq.measure.private.PlatformView | None
    results: dict[str, dict[str, Any]]


def measure(parties: Parties, *, job_id: str, layer: str, min_cohort: int, epsilon: float,
            value_bounds: dict[str, float], min_bucket_size: int, key_bits: int = 2048,
            insecure_test_key: bool = False, experiment: str = "fedacq-pipeline",
            progress: bool = False) -> Measured:
    """Private measurement of one campaign layer (a ``measure`` job, :mod:`fedacq.measure.node_protocol`)
    on the files :func:`campaign` delivered."""
    from fedacq.measure.private import PlatformView

    job = {"job": {"protocol": "measure", "id": job_id}, "datasets": campaign_datasets(layer),
           "params": {"layer": layer, "min_cohort": min_cohort, "epsilon": epsilon,
                      "value_bounds": dict(value_bounds), "key_bits": key_bits,
                      "insecure_test_key": insecure_test_key, "min_bucket_size": min_bucket_size,
                      "experiment": experiment}}
    results = parties.run(job, progress)
    report = json.loads(Path(results[LENDER]["report"]).read_text(encoding="utf-8"))
    mine = results.get(PLATFORM)
    view = PlatformView(mine["layer"], pd.read_parquet(mine["view"]), mine["epsilon"]) if mine else None
    return Measured(report, view, results)


#: the business KPIs a campaign is judged by (:data:`fedacq.measure.kpis.KPIS` defines them).
HEADLINE_KPIS = ("cost_per_credit_user", "drawdown_per_user", "loan_fee_rate")


def headline(report: dict[str, Any], layer: str) -> dict[str, Any]:
    """Lift (relative, with interval) of the headline KPIs of one measured layer."""
    lifts = report["layers"][layer]["lift"]
    return {k: lifts.get(k) for k in HEADLINE_KPIS}


def compare(report: dict[str, Any], layer: str, other: dict[str, Any], other_layer: str,
            arm: str = "treatment") -> dict[str, Any]:
    """The headline KPIs of ``arm`` of one measured campaign over the same arm of another (two
    independent randomisations at equal budget per user), with intervals
    (:func:`fedacq.measure.report.compare_arms`)."""
    from fedacq.measure.report import compare_arms

    lifts = compare_arms(report, layer, other, other_layer, arm)
    return {k: lifts.get(k) for k in HEADLINE_KPIS}


# -- report ------------------------------------------------------------------------------

def report(out_dir: Path, summary: dict[str, Any], metrics: dict[str, Any], arms: dict[str, Any]) -> Path:
    """The one-page ``report.html`` of a run in which one operator holds both parties' results
    (``arms[name]``: ``label``, ``layer``, ``campaign`` and its :class:`Measured` ``measured``)."""
    from fedacq.demo_report import demo_report_html

    path = out_dir / "report.html"
    path.write_text(demo_report_html(summary, metrics, arms), encoding="utf-8")
    return path
