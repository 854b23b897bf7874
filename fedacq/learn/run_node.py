"""``fedacq run`` as a node protocol (``run``): each node runs its own party's job.

Steps and what each party learns: exactly those of :mod:`fedacq.learn.run`
(this module only maps a node's :class:`~fedacq.node.protocols.JobContext` onto
:func:`fedacq.learn.run.party_job`). The link is the node's mutual-TLS gRPC
link; the table is the data set the job names ``table`` for this party,
registered at this node; outputs go to the job's work directory and the
node's own MLflow store.

Params (``[params]`` of the job; both nodes see them, so they hold names and
settings, never data): ``id_column``, ``label_column``, ``model``,
``model_params`` (a table of the model's parameters), ``mode``, ``key_bits``,
``insecure_test_key``, ``validation_fraction``, ``seed``, ``experiment``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fedacq.node.protocols import JobContext, Protocol

#: the logical data-set name each party's table is given under in the job.
DATASET = "table"


def job_params(cfg: Any) -> dict[str, Any]:
    """The ``[params]`` of a node job equivalent to a :class:`~fedacq.learn.run.RunConfig`."""
    return {"id_column": cfg.id_column, "label_column": cfg.label_column, "model": cfg.model,
            "model_params": dict(cfg.params), "mode": cfg.mode, "key_bits": cfg.key_bits,
            "insecure_test_key": cfg.insecure_test_key,
            "validation_fraction": cfg.validation_fraction, "seed": cfg.seed,
            "experiment": cfg.experiment}


def _role(party: str, ctx: JobContext) -> dict[str, Any]:
    from fedacq.learn.run import LENDER, RunConfig, _json_default, load_table, model_module, party_job

    if DATASET not in ctx.datasets:
        raise ValueError(f"run: the job names no data set {DATASET!r} for {ctx.party} (has {sorted(ctx.datasets)})")
    p = ctx.params
    path = Path(ctx.datasets[DATASET])
    cfg = RunConfig(lender_path=path, platform_path=path, id_column=str(p["id_column"]),
                    label_column=str(p["label_column"]), out_dir=ctx.work_dir, model=str(p["model"]),
                    params=dict(p.get("model_params", {})), mode=str(p.get("mode", "joint")),
                    key_bits=int(p.get("key_bits", 2048)),
                    insecure_test_key=bool(p.get("insecure_test_key", False)),
                    validation_fraction=float(p.get("validation_fraction", 0.2)),
                    transport="grpc", seed=int(p.get("seed", 0)), tracking_dir=ctx.mlflow_store,
                    experiment=str(p.get("experiment", "fedacq-run")), job_id=ctx.job_id, progress=False)
    params = model_module(cfg.model).resolve_params(dict(cfg.params))
    table = load_table(path, cfg.id_column, cfg.label_column if party == LENDER else None)
    ctx.logger.info("run: %s loaded %s (%d rows), model %s", party, path, table.X.shape[0], cfg.model)
    report = party_job(party, ctx.link, table, cfg, params, log=ctx.logger.info)
    ctx.logger.info("run: %s done, intersection %d", party, report["intersection_size"])
    # the job result must be plain JSON
    return json.loads(json.dumps(report, default=_json_default))


def run_lender(ctx: JobContext) -> dict[str, Any]:
    return _role("lender", ctx)


def run_platform(ctx: JobContext) -> dict[str, Any]:
    return _role("platform", ctx)


PROTOCOL = Protocol("run", roles={"lender": run_lender, "platform": run_platform},
                    description="fedacq run: PSI, federated training and evaluation of a registered model")
