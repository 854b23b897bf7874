"""The ``fedacq run`` pipeline: PSI, split, train, evaluate, report, one job for two parties.

Each party runs its own side (:func:`party_job`) over a
:class:`~fedacq.link.link.Link` and touches only its own table; :func:`run`
checks the inputs, starts both parties (:mod:`fedacq.learn.run_transports`)
and writes ``metrics.json``.

Steps, and what each party learns
---------------------------------
1. **load** - each party reads and checks its own CSV (id column, the lender's
   label column as the objective needs it, numeric features;
   :mod:`fedacq.learn.run_tables`). Nothing crosses.
2. **align** - ECDH PSI (:mod:`fedacq.psi`) on the id column. Both learn the
   intersection size and their own rows of the intersection, in one shared
   order; see that module for the exact leakage. A node job naming a finished
   psi job (``psi_job``, :mod:`fedacq.learn.run_node`) runs no PSI: each node
   takes its own rows from its own result of that job (a :class:`PsiJobRows`,
   checked at that node), and both exchange ``run.psi_job`` - the job id, the
   intersection size and the ``order_digest`` of the aligned order, which both
   already hold (:mod:`fedacq.psi.node_protocol`) - and stop unless all three
   agree. Nothing new is learned; it costs one small message each way instead
   of a PSI.
3. **split** - both derive the same validation positions of the intersection
   from the shared ``seed`` (a seeded permutation of ``0..n-1``). No message is
   sent and nothing new is learned: the split is a function of the
   intersection size and the seed, which both already hold. It is not
   stratified, because stratifying would need the lender's labels. PSI's shared
   order is pseudo-random per PSI run, so the same seed picks other rows after
   another PSI run: the split is reproducible for one alignment, not across them.
4. **train and predict** - the model's own protocol (the role interface is in
   :mod:`fedacq.learn.run_roles`); what crosses is documented in that
   protocol's module. Continuing a live model (``RunConfig.xgb_model``, XGBoost's
   ``xgb_model``), each party loads its own part of it from its own folder and
   checks it against the job and its table (:func:`live_model`) before step 2.
5. **evaluate** - the lender, which alone holds labels, computes the
   objective's metrics on its training and validation scores
   (:mod:`fedacq.learn.run_report`). ``metrics.json`` and the plots are the
   lender's report; the platform's own report holds only what it knows (sizes,
   its timings, bytes, its model part).

Each party logs a run to its own MLflow store (:class:`fedacq.track.PartyRun`),
writes its model part under ``DIR/<party>/`` and records every message it sent
in ``DIR/<party>/egress.jsonl``. A node job (:mod:`fedacq.learn.run_node`) also
checkpoints (:mod:`fedacq.learn.run_checkpoints`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import numpy as np
import pandas as pd

from fedacq.learn import run_report as report_
from fedacq.learn.run_checkpoints import RunCheckpoints
from fedacq.learn.run_config import (LENDER, PLATFORM, TRANSPORTS, RunConfig, check_scheme, model_module,
                                     objective_of)
from fedacq.learn.run_roles import PartyData, RoleContext, RoleResult
from fedacq.learn.run_tables import PartyTable, check_evaluable, check_labelled, check_rows, load_table
from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, register
from fedacq.node.checkpoint import Checkpoints

# Thin re-export for secureboost_roles.py, which imports the role interface from here
# (to go once it imports from fedacq.learn.run_roles).
from fedacq.learn.run_roles import fit_lender, model_files, serve_platform  # noqa: F401


#: the one message of a run job that trains on a finished psi job: what each side holds of it.
PSI_JOB_MESSAGE = "run.psi_job"
register(MessageSpec(PSI_JOB_MESSAGE, header={"psi_job": str, "intersection": int, "order_digest": str}))


@dataclass(frozen=True)
class PsiJobRows:
    """This party's result of the finished psi job a run job names (``psi_job``), checked at this
    node against its own job store and table (:func:`fedacq.learn.run_node.psi_job_rows`)."""

    psi_job: str
    rows: np.ndarray
    order_digest: str


def agree_psi_job(link: Link, party: str, aligned: PsiJobRows) -> np.ndarray:
    """This party's rows of ``aligned``, once the peer's ``run.psi_job`` names the same job with
    the same intersection size and order digest; ValueError naming ``psi_job`` otherwise.

    Both send first, then read: neither waits on the other's verdict, and each refuses on its own."""
    mine = {"psi_job": aligned.psi_job, "intersection": int(aligned.rows.size), "order_digest": aligned.order_digest}
    link.send(Message(PSI_JOB_MESSAGE, mine, step="psi_job"))
    theirs = link.recv(PSI_JOB_MESSAGE).header
    if theirs != mine:
        peer = PLATFORM if party == LENDER else LENDER
        raise ValueError(
            f"psi_job {aligned.psi_job!r}: the {peer} holds another alignment under that id "
            f"({theirs['psi_job'][:80]!r}, {theirs['intersection']} rows, order digest {theirs['order_digest'][:16]!r}) "
            f"than the {party} ({mine['intersection']} rows, order digest {mine['order_digest'][:16]!r}): "
            "a different or stale psi job; run a psi job and name it in both nodes' run job")
    return aligned.rows


# -- step 3: split -----------------------------------------------------------------------

def split_positions(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation positions of an ``n``-row intersection, the same at both parties.

    A seeded permutation picks ``round(n * fraction)`` validation positions; both
    lists are returned sorted so each side keeps the shared intersection order.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    n_valid = int(round(n * validation_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


# -- one party's job ---------------------------------------------------------------------

def _psi(party: str, link: Link, table: PartyTable, id_column: str, min_intersection: int) -> np.ndarray:
    """This party's row indices of the intersection, in the shared order."""
    from fedacq import psi

    fn = psi.psi_lender if party == LENDER else psi.psi_platform
    frame = pd.DataFrame({id_column: table.ids})
    return np.asarray(fn(link, frame, [id_column], min_intersection=min_intersection).rows, dtype=np.int64)


def _party_data(table: PartyTable, rows: np.ndarray, train: np.ndarray, valid: np.ndarray) -> PartyData:
    X = table.X[rows]
    y = table.y[rows] if table.y is not None else None
    has_valid = valid.size > 0
    return PartyData(X_train=X[train], X_valid=X[valid] if has_valid else None,
                     feature_names=table.feature_names,
                     y_train=y[train] if y is not None else None,
                     y_valid=y[valid] if y is not None and has_valid else None)


def live_model(module: ModuleType, cfg: RunConfig, party: str, params: dict[str, Any],
               feature_names: list[str]) -> Any:
    """This party's part of the model ``cfg.xgb_model`` names, checked against the job (None: train afresh)."""
    if cfg.xgb_model is None:
        return None
    load = getattr(module, "load_live_model", None)
    if load is None:
        raise ValueError(f"model {cfg.model!r} cannot continue a model (xgb_model): only secureboost can")
    return load(Path(cfg.xgb_model) / party / "model", party, params, cfg.mode, feature_names)


def party_job(party: str, link: Link, table: PartyTable, cfg: RunConfig,
              params: dict[str, Any], log: Callable[[str], None] | None = None,
              checkpoints: Checkpoints | None = None, resume: bool = False,
              progress: Callable[[str, int, int | None], None] | None = None,
              aligned: PsiJobRows | None = None) -> dict[str, Any]:
    """Run ``party``'s side of the job over ``link``; return that party's own report.

    ``log`` receives one line per iteration (a node passes its job log, which
    the operator's ``fedacq job logs`` and ``fedacq run --transport grpc`` follow).
    A node passes its ``checkpoints`` of the job: the PSI result and the model
    after each iteration are saved there, and with ``resume`` both parties first
    agree on the checkpoints they both hold (:class:`RunCheckpoints`) and
    continue from there. ``progress(step, done, total)`` is told the step
    ("psi", then the model's unit: "tree", "epoch") as it advances. ``aligned``
    (a node job's ``psi_job``) replaces the PSI: both sides check that they hold
    the same alignment (:func:`agree_psi_job`) before this party writes anything.
    """
    from fedacq.track import PartyRun

    module = model_module(cfg.model)
    objective = objective_of(params)
    live = live_model(module, cfg, party, params, table.feature_names)  # refused before anything crosses
    saved = RunCheckpoints.agree(link, checkpoints, resume) if checkpoints is not None else None
    rows = saved.psi() if saved is not None else None
    resumed = rows is not None
    if rows is None and aligned is not None:
        rows = agree_psi_job(link, party, aligned)  # refused before this party writes anything
        if saved is not None:
            saved.save_psi(rows)
    model_dir = cfg.out_dir / party / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    report_progress = progress or (lambda step, done, total=None: None)
    unit = getattr(module, "ITERATION", None)

    def say(text: str) -> None:
        cfg.say(party, text)
        if log is not None:
            log(text)
    with PartyRun(cfg.store(party), party, cfg.experiment, f"{cfg.model}-{party}", cfg.job_id,
                  report_.run_params(cfg, params)) as run:
        def on_iteration(i: int, values: dict[str, float]) -> None:
            numbers = {k: v for k, v in values.items() if report_.is_number(v)}
            run.log_metrics(numbers, step=i)
            if unit is not None:
                report_progress(unit[1], i + 1, params.get(unit[0]))
            if log is not None:
                log(f"iteration {i + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in numbers.items()))
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in numbers.items()}, refresh=False)

        ctx = RoleContext(party=party, params=params, mode=cfg.mode, scheme=cfg.scheme,
                          key_bits=cfg.key_bits, insecure_test_key=cfg.insecure_test_key, seed=cfg.seed,
                          model_dir=model_dir, on_iteration=on_iteration, checkpoints=saved,
                          progress=report_progress, xgb_model=live,
                          xgb_model_job=cfg.xgb_model_id or (None if live is None else str(cfg.xgb_model)))
        try:
            if rows is None:
                say("private set intersection")
                report_progress("psi", 0, 1)
                with ctx.phase("psi"):
                    rows = _psi(party, link, table, cfg.id_column, cfg.min_intersection)
                if saved is not None:
                    saved.save_psi(rows)
            elif resumed:
                say(f"resuming: the intersection of {rows.size} rows from this party's PSI checkpoint")
                if rows.size and (rows.min() < 0 or rows.max() >= table.X.shape[0]):
                    raise ValueError(f"{party}'s PSI checkpoint names rows outside its file {table.path}")
                if aligned is not None and not np.array_equal(rows, aligned.rows):
                    raise ValueError(f"psi_job {aligned.psi_job!r}: {party}'s PSI checkpoint of this job holds "
                                     "other rows than that psi job's result")
            else:
                say(f"the intersection of {rows.size} rows from psi job {aligned.psi_job}, agreed with the peer")
            report_progress("psi", 1, 1)
            psi_stats = link.stats()
            train, valid = split_positions(rows.size, cfg.validation_fraction, cfg.seed)
            if train.size == 0:
                raise ValueError(f"the intersection of the two files is empty: no common {cfg.id_column!r}")
            say(f"intersection {rows.size} rows ({train.size} train, {valid.size} validation); training")
            data = _party_data(table, rows, train, valid)
            check_evaluable(party, data)
            if party == LENDER:
                check_labelled(data, objective)
                bar = report_.progress_bar(module, params, cfg)
            role = module.lender_role if party == LENDER else module.platform_role
            result: RoleResult = role(link, data, ctx)
        finally:
            if bar is not None:
                bar.close()
        total = link.stats()
        report: dict[str, Any] = {
            "party": party,
            "file": str(table.path),
            "rows": int(table.X.shape[0]),
            "features": len(table.feature_names),
            "intersection_size": int(rows.size),
            "psi_job": None if aligned is None else aligned.psi_job,
            "train_rows": int(train.size),
            "validation_rows": int(valid.size),
            "timings": dict(ctx.timings),
            "bytes": {"psi": report_.traffic(psi_stats),
                      "model": report_.traffic({k: total[k] - psi_stats[k] for k in total}),
                      "total": report_.traffic(total)},
            "files": [str(p) for p in result.files],
            "info": result.info,
        }
        if party == LENDER:
            report.update(report_.evaluate(_scored_splits(data, result, cfg), result.history, objective, cfg, run))
        report_.log_party_run(run, report, ctx.timings, result.files)
    return report


def empty_labels(module: ModuleType) -> bool:
    """Whether the model trains on the labelled rows only (its role module sets ``EMPTY_LABELS``):
    then an empty label cell means "not in this stage" rather than an error."""
    return bool(getattr(module, "EMPTY_LABELS", False))


def _scored_splits(data: PartyData, result: RoleResult,
                   cfg: RunConfig) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The lender's (labels, scores) per evaluated split, checked against what the role returned."""
    if result.train_score is None:
        raise RuntimeError(f"model {cfg.model!r}: the lender role returned no training scores")
    splits = {"train": (data.y_train, result.train_score)}
    if data.y_valid is not None:
        if result.valid_score is None:
            raise RuntimeError(f"model {cfg.model!r}: the lender role returned no validation scores")
        splits["validation"] = (data.y_valid, result.valid_score)
    return splits


# -- the driver --------------------------------------------------------------------------

def run(cfg: RunConfig) -> dict[str, Any]:
    """Check everything, run the whole job and write ``cfg.out_dir/metrics.json``; return what it holds.

    Every check that can be made before any work is made here, so a refused run
    leaves no output folder; a run that fails later leaves ``FAILED.json``.
    """
    from fedacq.learn.run_transports import run_grpc, run_inproc

    module = model_module(cfg.model)
    if cfg.mode not in module.MODES:
        raise ValueError(f"model {cfg.model!r} supports mode(s) {', '.join(module.MODES)}, not {cfg.mode!r}")
    check_scheme(module, cfg.scheme)
    if cfg.transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {cfg.transport!r}; use one of {', '.join(TRANSPORTS)}")
    if cfg.xgb_model is not None and cfg.transport == "grpc":
        raise ValueError("xgb_model: `fedacq run --transport grpc` starts two fresh nodes, which hold no earlier "
                         "model; continue a node's model with a run job's xgb_model (fedacq.learn.run_node), "
                         "or an earlier `fedacq run --out` folder with --transport inproc")
    if cfg.key_bits < 2048 and not cfg.insecure_test_key:
        raise ValueError(f"key size {cfg.key_bits} bits is below the 2048-bit minimum "
                         "(smaller keys are for tests only, with insecure_test_key)")
    if cfg.min_intersection < 1:
        raise ValueError(f"min_intersection must be at least 1, got {cfg.min_intersection}")
    split_positions(0, cfg.validation_fraction, cfg.seed)  # checks the fraction
    params = module.resolve_params(dict(cfg.params))
    if params.get("early_stopping_rounds") and cfg.validation_fraction == 0:
        raise ValueError("early_stopping_rounds needs a validation set: give a validation fraction above 0")
    tables = {LENDER: load_table(cfg.lender_path, cfg.id_column, cfg.label_column, party=LENDER,
                                 objective=objective_of(params), empty_labels=empty_labels(module)),
              PLATFORM: load_table(cfg.platform_path, cfg.id_column, party=PLATFORM)}
    for party, table in tables.items():
        check_rows(party, table, cfg.min_intersection)
        live_model(module, cfg, party, params, table.feature_names)
    if cfg.label_column in tables[PLATFORM].feature_names:
        raise ValueError(f"{cfg.platform_path}: has a column named like the label ({cfg.label_column!r}); "
                         "the platform's file must not hold the lender's labels")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    try:
        lender, platform = run_grpc(cfg) if cfg.transport == "grpc" else \
            run_inproc(cfg, party_job, tables, params)
    except BaseException as exc:
        report_.mark_failed(cfg, exc)
        raise
    wall = time.perf_counter() - start

    out = report_.job_metrics(lender, platform, job_id=cfg.job_id, model=cfg.model, mode=cfg.mode,
                              transport=cfg.transport,
                              tracking={LENDER: cfg.store(LENDER), PLATFORM: cfg.store(PLATFORM)})
    out.update({
        "key_bits": cfg.key_bits,
        "insecure_test_key": cfg.insecure_test_key,
        "seed": cfg.seed,
        "validation_fraction": cfg.validation_fraction,
        "params": params,
        "inputs": {p: {"file": r["file"], "rows": r["rows"], "features": r["features"]}
                   for p, r in ((LENDER, lender), (PLATFORM, platform))},
        "lift_by_decile": lender[lender["evaluated_on"]].get("lift_by_decile"),
    })
    out["timings"]["total"] = round(wall, 4)
    report_.write_metrics(cfg.out_dir, out)
    return out
