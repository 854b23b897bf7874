"""``fedacq run`` as a node protocol (``run``): each node runs its own party's job.

Steps and what each party learns: exactly those of :mod:`fedacq.learn.run`
(this module only maps a node's :class:`~fedacq.node.protocols.JobContext` onto
:func:`fedacq.learn.run.party_job`). The link is the node's mutual-TLS gRPC
link; the table is the data set the job names ``table`` for this party,
registered at this node; outputs go to the job's work directory and the
node's own MLflow store.

Params (``[params]`` of the job; both nodes see them, so they hold names and
settings, never data): ``id_column``, ``label_column``, ``model``,
``model_params`` (a table of the model's parameters, XGBoost's ``objective``
and its ``num_class`` / ``tweedie_variance_power`` among them), ``mode``, ``scheme``,
``key_bits``, ``insecure_test_key``, ``min_intersection``,
``validation_fraction``, ``seed``, ``experiment``, ``xgb_model`` and ``psi_job``.

``xgb_model`` (XGBoost's name; absent or null: train afresh) continues a live
model: the id of an earlier ``run`` job of this pair of nodes. Each node looks
the id up in its OWN job store - a job that succeeded there, of the same model
and mode - and loads its OWN part of that job's model, which must have this
job's objective and the feature columns of the table it names now
(:func:`fedacq.learn.run.live_model`); anything else fails the job before PSI,
with nothing written. The peer sends no model and names no path: only the id,
which both nodes see in the job. ``model_params.n_estimators`` rounds are added
to the live trees (XGBoost's ``xgb.train(..., xgb_model=booster)``).

``psi_job`` (absent or null: align inside the job) trains on a finished ``psi`` job
instead of running PSI inside this one: the id of a psi job of this pair of nodes, as
``xgb_model`` names a run job. Each node looks the id up in its OWN job store and,
before anything crosses, refuses it (naming ``psi_job``) unless it is a psi job that
succeeded there; aligned the very data set this job names ``table`` for this node, on
this job's ``id_column`` alone; revealed the intersection to both (``reveal_to =
"both"``: the platform needs its rows); finished at most ``psi_job_max_age_days`` of
this node's policy before this run job was submitted (the same bound for every attempt,
so a resumption is judged as the first attempt was); and whose result is in its folder
with at least ``min_intersection`` rows, each naming the id it named then, while the
table's id column is still exactly the one that was aligned (the psi job's
``ids_digest``: no id came, went or moved since). The rows are read from the node's
own file of that job, never from a path. Then both exchange what they hold
(:func:`fedacq.learn.run.agree_psi_job`: id, size and the aligned order's digest),
so a peer that holds another alignment under that id - another or a stale PSI run -
is refused at both before either writes anything. What each party learns is what the
psi job taught it (its own rows in the shared order, the size): the run job adds only
that both hold the same. Both sides' rows are in the psi job's shared order; with an
unbalanced psi job that order is fixed by the platform's cache key, so the seeded
validation split is the same for every run on the same alignment.

Checkpoints: each node saves its own party's state in the job's checkpoint
folder (the PSI result, then the model after each tree or epoch); ``fedacq job
resume ID`` continues from the last checkpoint both parties hold
(:class:`fedacq.learn.run_checkpoints.RunCheckpoints`). ``fedacq job status`` shows the
step ("psi", "tree", "epoch") with an ETA.

Policy (:mod:`fedacq.node.policy`), checked by each node on the complete
parameters: ``models``, ``modes``, ``schemes``, ``min_key_bits`` and
``test_mode`` (key size), ``min_intersection`` (the PSI inside the job, or the
``psi_job``'s result), ``psi_job_max_age_days`` (with ``psi_job``); and
for the lender's labels ``leaf_noise_max_epsilon`` (prospect SecureBoost
releases leaf values: they must carry DP noise of at most that epsilon),
``hetero_lr_min_batch_size`` and ``splitnn_min_gradient_noise``; and the
lender's ``secureboost_goss`` (default false), checked by the lender's node when
its side starts, before anything crosses: GOSS (``top_rate``/``other_rate``) shows
the platform each tree's sample, the rows of largest gradients.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fedacq.node.policy import Policy, PolicyError, complete
from fedacq.node.protocols import JobContext, Protocol
from fedacq.paths import check_name

if TYPE_CHECKING:
    from fedacq.learn.run import PsiJobRows
    from fedacq.learn.run_tables import PartyTable
    from fedacq.node.jobs import JobStore

#: the logical data-set name each party's table is given under in the job.
DATASET = "table"
#: the job's parameters (``resolve`` fills the ones a proposal leaves out).
PARAMS = ("id_column", "label_column", "model", "model_params", "mode", "scheme", "key_bits", "insecure_test_key",
          "min_intersection", "validation_fraction", "seed", "experiment", "xgb_model", "psi_job")


def job_params(cfg: Any) -> dict[str, Any]:
    """The ``[params]`` of a node job equivalent to a :class:`~fedacq.learn.run_config.RunConfig`."""
    return {"id_column": cfg.id_column, "label_column": cfg.label_column, "model": cfg.model,
            "model_params": dict(cfg.params), "mode": cfg.mode, "scheme": cfg.scheme, "key_bits": cfg.key_bits,
            "insecure_test_key": cfg.insecure_test_key, "min_intersection": cfg.min_intersection,
            "validation_fraction": cfg.validation_fraction, "seed": cfg.seed,
            "experiment": cfg.experiment, "xgb_model": cfg.xgb_model_id}


def resolve(params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The run job's complete parameters, checked against ``policy`` (module docstring)."""
    from fedacq.learn.run_config import check_scheme, model_module, objective_of

    defaults = {"id_column": None, "label_column": None, "model": "secureboost", "model_params": {},
                "mode": "joint", "scheme": _preferred_scheme(params, policy), "key_bits": 2048,
                "insecure_test_key": False,
                "min_intersection": policy.min_intersection, "validation_fraction": 0.2, "seed": 0,
                "experiment": "fedacq-run", "xgb_model": None, "psi_job": None}
    out = complete(params, defaults, "run")
    for key in ("id_column", "label_column", "experiment"):
        if not isinstance(out[key], str) or not out[key]:
            raise PolicyError(f"run: {key} must be a non-empty string, got {out[key]!r}")
    policy.one_of("models", "model", out["model"])
    policy.one_of("modes", "mode", out["mode"])
    policy.one_of("schemes", "scheme", out["scheme"])
    policy.key_size(out["key_bits"], out["insecure_test_key"])
    if not isinstance(out["min_intersection"], int) or isinstance(out["min_intersection"], bool):
        raise PolicyError(f"run: min_intersection must be an integer, got {out['min_intersection']!r}")
    policy.at_least("min_intersection", "min_intersection", out["min_intersection"])
    if not isinstance(out["seed"], int) or isinstance(out["seed"], bool):
        raise PolicyError(f"run: seed must be an integer, got {out['seed']!r}")
    fraction = out["validation_fraction"]
    if not isinstance(fraction, (int, float)) or isinstance(fraction, bool) or not 0 <= fraction < 1:
        raise PolicyError(f"run: validation_fraction must be in [0, 1), got {fraction!r}")
    module = model_module(out["model"])
    if out["xgb_model"] is not None:
        try:
            check_name(out["xgb_model"], "run: xgb_model (the id of an earlier run job)")
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
        if not hasattr(module, "load_live_model"):
            raise PolicyError(f"run: model {out['model']!r} cannot continue a model (xgb_model): only secureboost can")
    if out["psi_job"] is not None:
        try:
            check_name(out["psi_job"], "run: psi_job (the id of a finished psi job)")
        except ValueError as exc:
            raise PolicyError(str(exc)) from None
    if out["mode"] not in module.MODES:
        raise PolicyError(f"run: model {out['model']!r} supports mode(s) {list(module.MODES)}, not {out['mode']!r}")
    try:
        check_scheme(module, out["scheme"])
    except ValueError as exc:
        raise PolicyError(f"run: {exc}") from None
    if not isinstance(out["model_params"], dict):
        raise PolicyError("run: model_params must be a table")
    try:
        model = module.resolve_params(dict(out["model_params"]))
        objective_of(model)  # the objective and its parameters (num_class ...) are valid
    except ValueError as exc:
        raise PolicyError(f"run: {exc}") from None
    out["model_params"] = json.loads(json.dumps(model))
    _label_protection(out["model"], out["mode"], out["model_params"], policy)
    return out


def _preferred_scheme(params: dict[str, Any], policy: Policy) -> str:
    """The proposer's scheme when the job names none: its policy's first that the model runs on
    (hetero LR: Paillier only), else its first (and the check in :func:`resolve` says why not)."""
    from fedacq.learn.run_config import model_module

    try:
        supported = getattr(model_module(params.get("model", "secureboost")), "SCHEMES", None)
    except (ValueError, TypeError):
        supported = None
    usable = [s for s in policy.schemes if supported is None or s in supported]
    return (usable or list(policy.schemes))[0]


def _label_protection(model: str, mode: str, p: dict[str, Any], policy: Policy) -> None:
    """The policy keys that guard the lender's labels inside each model's parameters."""
    if model == "secureboost" and mode == "prospect" and policy.leaf_noise_max_epsilon is not None:
        noise = p.get("leaf_noise")
        epsilon = noise.get("epsilon") if isinstance(noise, dict) else None
        if epsilon is None or not epsilon <= policy.leaf_noise_max_epsilon:
            raise policy.refuse("leaf_noise_max_epsilon", f"leaf_noise={noise!r}",
                                f"leaf noise with epsilon <= {policy.leaf_noise_max_epsilon}")
    if model == "hetero_lr":
        policy.at_least("hetero_lr_min_batch_size", "batch_size", p["batch_size"])
    if model == "splitnn" and policy.splitnn_min_gradient_noise > 0:
        if p["gradient_clip"] is None:
            raise policy.refuse("splitnn_min_gradient_noise", "gradient_clip=None (no gradient noise)",
                                f"gradient_noise >= {policy.splitnn_min_gradient_noise} with clipping")
        policy.at_least("splitnn_min_gradient_noise", "gradient_noise", p["gradient_noise"])


def _role(party: str, ctx: JobContext) -> dict[str, Any]:
    from fedacq.learn.run import empty_labels, party_job
    from fedacq.learn.run_config import LENDER, RunConfig, model_module, objective_of
    from fedacq.learn.run_report import json_default
    from fedacq.learn.run_tables import check_rows, load_table

    if DATASET not in ctx.datasets:
        raise ValueError(f"run: the job names no data set {DATASET!r} for {ctx.party} (has {sorted(ctx.datasets)})")
    p = ctx.params
    goss = p["model"] == "secureboost" and (p["model_params"].get("top_rate") is not None
                                            or p["model_params"].get("other_rate") is not None)
    if party == LENDER and goss and not ctx.policy.secureboost_goss:
        raise ctx.policy.refuse("secureboost_goss", f"top_rate={p['model_params']['top_rate']!r} (GOSS: the "
                                "platform learns each tree's sample)", "no GOSS (secureboost_goss = false)")
    path = Path(ctx.datasets[DATASET])
    cfg = RunConfig(lender_path=path, platform_path=path, id_column=p["id_column"],
                    label_column=p["label_column"], out_dir=ctx.work_dir, model=p["model"],
                    params=dict(p["model_params"]), mode=p["mode"], scheme=p["scheme"], key_bits=p["key_bits"],
                    insecure_test_key=p["insecure_test_key"], min_intersection=p["min_intersection"],
                    validation_fraction=float(p["validation_fraction"]),
                    transport="grpc", seed=p["seed"], tracking_dir=ctx.mlflow_store,
                    experiment=p["experiment"], job_id=ctx.job_id, progress=False,
                    xgb_model=_live_job_dir(ctx), xgb_model_id=p["xgb_model"])
    module = model_module(cfg.model)
    params = module.resolve_params(dict(cfg.params))
    if party == LENDER:
        table = load_table(path, cfg.id_column, cfg.label_column, party=party, objective=objective_of(params),
                           empty_labels=empty_labels(module))
    else:
        table = load_table(path, cfg.id_column, party=party)
    check_rows(party, table, cfg.min_intersection)
    ctx.logger.info("run: %s loaded %s (%d rows), model %s", party, path, table.X.shape[0], cfg.model)
    aligned = psi_job_rows(ctx, table)
    report = party_job(party, ctx.link, table, cfg, params, log=ctx.logger.info, checkpoints=ctx.checkpoints,
                       resume=ctx.resume, progress=ctx.progress, aligned=aligned)
    ctx.logger.info("run: %s done, intersection %d", party, report["intersection_size"])
    # the job result must be plain JSON
    return json.loads(json.dumps(report, default=json_default))


def _own_store(ctx: JobContext, what: str) -> "JobStore":
    """THIS node's job store, found from the job's own folder ``<state_dir>/jobs/<id>/work``
    (:class:`fedacq.node.jobs.JobStore`): the store is two levels above it."""
    from fedacq.node.jobs import JobStore

    if ctx.work_dir.name != "work" or ctx.work_dir.parent.name != ctx.job_id:
        raise RuntimeError(f"{what}: this job's folder {ctx.work_dir} is not in a node's job store")
    return JobStore(ctx.work_dir.parent.parent.parent)


def _own_succeeded_job(ctx: JobContext, job_id: str, protocol: str, what: str) -> tuple["JobStore", dict, dict, dict]:
    """(store, record, spec, params) of ``job_id`` in THIS node's own store, which must be a
    ``protocol`` job that succeeded here; the peer only ever names a job, this node decides what it is."""
    store = _own_store(ctx, what)
    if not store.exists(job_id):
        raise ValueError(f"{what}: {ctx.party} has no such job")
    record = store.get(job_id)
    spec = record.get("spec") or {}
    if spec.get("protocol") != protocol or record.get("status") != "succeeded":
        raise ValueError(f"{what}: at {ctx.party} it is a {spec.get('protocol')!r} job that "
                         f"{record.get('status')}, not a {protocol} job that succeeded")
    return store, record, spec, spec.get("params") or {}


def psi_job_rows(ctx: JobContext, table: "PartyTable") -> "PsiJobRows | None":
    """This node's result of the psi job ``psi_job`` names, checked against this job and ``table``
    (module docstring), as a :class:`fedacq.learn.run.PsiJobRows`; None without ``psi_job``.

    Every check reads only this node's own job store and files; a refusal is a ValueError naming
    ``psi_job``, raised before anything crosses."""
    import numpy as np
    import pandas as pd

    from fedacq.learn.run import PsiJobRows
    from fedacq.learn.run_config import LENDER
    from fedacq.psi.node_protocol import OUTPUT, ids_digest

    p = ctx.params
    psi_job = p["psi_job"]
    if psi_job is None:
        return None
    what = f"run: psi_job {psi_job!r}"
    store, record, spec, psi = _own_succeeded_job(ctx, psi_job, "psi", what)
    aligned_set = (spec.get("datasets") or {}).get(ctx.party, {}).get(psi.get("dataset"))
    if aligned_set != ctx.registered.get(DATASET):
        raise ValueError(f"{what}: at {ctx.party} it aligned data set {aligned_set!r}, this job trains on "
                         f"{ctx.registered.get(DATASET)!r}")
    columns = psi.get("id_columns") if ctx.party == LENDER else \
        (psi.get("platform_id_columns") or psi.get("id_columns"))
    if columns != [p["id_column"]]:
        raise ValueError(f"{what}: at {ctx.party} it aligned on id column(s) {columns!r}, this job on "
                         f"[{p['id_column']!r}]")
    if psi.get("reveal_to") != "both":
        raise ValueError(f"{what}: it revealed the intersection to {psi.get('reveal_to')!r}; training needs "
                         "both parties' rows (reveal_to = \"both\")")
    submitted = store.get(ctx.job_id).get("submitted")
    age = (float(submitted) - float(record.get("finished") or 0.0)) / 86400.0
    if not 0.0 <= age <= ctx.policy.psi_job_max_age_days:
        raise ctx.policy.refuse("psi_job_max_age_days", f"psi_job={psi_job!r}, finished {age:.2f} days "
                                "before this run job", f"<= {ctx.policy.psi_job_max_age_days} days (run a new "
                                "psi job)")
    result = record.get("result") or {}
    digests = result.get("ids_digest") or {}
    if not isinstance(result.get("order_digest"), str) or not result["order_digest"] \
            or p["id_column"] not in digests:
        raise ValueError(f"{what}: at {ctx.party} its result holds no order or ids digest (a psi job from "
                         "before run jobs could name one): run a new psi job")
    if ids_digest(table.ids) != digests[p["id_column"]]:
        raise ValueError(f"{what}: {ctx.party}'s data set {ctx.registered.get(DATASET)!r} changed since that "
                         f"psi job (its {p['id_column']!r} column is not the one aligned): run a new psi job")
    path = store.dir(psi_job) / "work" / OUTPUT
    try:
        out = pd.read_parquet(path, columns=["row", p["id_column"]])
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(f"{what}: {ctx.party} cannot read that job's result {path.name}: {exc}") from None
    rows = out["row"].to_numpy()
    n = table.X.shape[0]
    if rows.dtype.kind != "i" or len(rows) != result.get("intersection") or (len(rows) and (
            rows.min() < 0 or rows.max() >= n)) or len(np.unique(rows)) != len(rows):
        raise ValueError(f"{what}: {ctx.party}'s result {path.name} is not {result.get('intersection')} "
                         f"distinct rows of its {n}-row table")
    if not np.array_equal(table.ids.to_numpy(dtype=str)[rows], out[p["id_column"]].astype(str).to_numpy()):
        raise ValueError(f"{what}: {ctx.party}'s result {path.name} names rows whose ids are not the ones aligned")
    if len(rows) < p["min_intersection"]:
        raise ValueError(f"{what}: its intersection of {len(rows)} is below this job's min_intersection "
                         f"of {p['min_intersection']}")
    ctx.logger.info("run: %s takes the intersection of %d rows from psi job %s", ctx.party, len(rows), psi_job)
    return PsiJobRows(psi_job=psi_job, rows=rows.astype(np.int64), order_digest=result["order_digest"])


def _live_job_dir(ctx: JobContext) -> Path | None:
    """The output folder of the earlier run job ``xgb_model`` names, in THIS node's own job store.

    The earlier job must be a ``run`` job that succeeded here, of the same model and mode; its
    model part is checked against this job later (:func:`fedacq.learn.run.live_model`). Nothing
    is read from the peer.
    """
    live = ctx.params["xgb_model"]
    if live is None:
        return None
    what = f"run: xgb_model {live!r}"
    if live == ctx.job_id:
        raise ValueError(f"{what}: a job cannot continue its own model")
    store, _, spec, earlier = _own_succeeded_job(ctx, live, "run", what)
    for key in ("model", "mode"):
        if earlier.get(key) != ctx.params[key]:
            raise ValueError(f"{what}: at {ctx.party} it trained {key} {earlier.get(key)!r}, this job "
                             f"{ctx.params[key]!r}")
    return store.dir(live) / "work"


def run_lender(ctx: JobContext) -> dict[str, Any]:
    return _role("lender", ctx)


def run_platform(ctx: JobContext) -> dict[str, Any]:
    return _role("platform", ctx)


PROTOCOL = Protocol("run", roles={"lender": run_lender, "platform": run_platform}, resolve=resolve,
                    messages=("fedacq.learn.run_checkpoints", "fedacq.learn.run", "fedacq.psi.ecdh_psi", "fedacq.learn.secureboost", "fedacq.learn.hetero_lr",
                              "fedacq.learn.splitnn"),
                    description="fedacq run: PSI, federated training and evaluation of a registered model")
