"""What a ``fedacq run`` job reports: each party's own report, the lender's evaluation and plots,
the MLflow records, ``metrics.json`` (or ``FAILED.json``) and the one-line summary.

Each party reports only what it knows: sizes, its timings, bytes it counted,
its model part. Only the lender holds labels, so only it evaluates; the
metrics it computes are the objective's (XGBoost's default evaluation metrics
for it, plus AUC/KS/gains for a binary classifier, which a credit team reads).
:func:`job_metrics` is the one place the two parties' reports become the job's
metrics, for ``fedacq run`` and for the pipeline's train step alike.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from fedacq.learn.run_config import LENDER, PLATFORM, RunConfig

FAILED_FILE = "FAILED.json"
METRICS_FILE = "metrics.json"


# -- progress on the console -------------------------------------------------------------

def progress_bar(module: ModuleType, params: dict[str, Any], cfg: RunConfig) -> Any:
    """The lender's training bar, one step per iteration of the model (tree, epoch)."""
    from tqdm.auto import tqdm

    spec = getattr(module, "ITERATION", None)
    total, unit = (params.get(spec[0]), spec[1]) if spec else (None, "it")
    return tqdm(total=total, unit=unit, desc=f"{cfg.model} training", disable=not cfg.progress,
                file=sys.stderr)


def is_number(v: Any) -> bool:
    """A finite number (what MLflow and the progress line can show)."""
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)


# -- one party's report ------------------------------------------------------------------

def run_params(cfg: RunConfig, params: dict[str, Any]) -> dict[str, Any]:
    """The parameters a party logs to its MLflow run: the job's settings and the model's."""
    return {"model": cfg.model, "mode": cfg.mode, "key_bits": cfg.key_bits,
            "insecure_test_key": cfg.insecure_test_key, "min_intersection": cfg.min_intersection,
            "validation_fraction": cfg.validation_fraction,
            "seed": cfg.seed, "transport": cfg.transport, "id_column": cfg.id_column, **params}


def traffic(stats: dict[str, int]) -> dict[str, int]:
    """Bytes and messages each way, from a link's counters."""
    return {"bytes_sent": int(stats["bytes_sent"]), "bytes_received": int(stats["bytes_received"]),
            "messages_sent": int(stats["messages_sent"]), "messages_received": int(stats["messages_received"])}


def log_party_run(run: Any, report: dict[str, Any], timings: dict[str, float], files: list[Path]) -> None:
    """Close a party's MLflow run: its timings, bytes, model part and its own report."""
    total = report["bytes"]["total"]
    run.log_metrics({f"seconds_{k}": v for k, v in timings.items()})
    run.log_metrics({"bytes_sent": total["bytes_sent"], "bytes_received": total["bytes_received"]})
    for path in files:
        run.log_artifact(path, "model")
    run.log_dict(report, f"{report['party']}_report.json")


# -- the lender's evaluation -------------------------------------------------------------

def evaluate(splits: dict[str, tuple[np.ndarray, np.ndarray]], history: list[dict[str, float]],
             cfg: RunConfig, run: Any) -> dict[str, Any]:
    """The lender's evaluation: metrics per split, plots under the output folder and in MLflow.

    ``splits`` maps "train" (and "validation" when there is one) to (labels, scores).
    """
    from fedacq.learn import metrics

    out: dict[str, Any] = {"history": history}
    for name, (y, s) in splits.items():
        out[name] = metrics.evaluate(y, np.asarray(s, dtype=np.float64))
        run.log_metrics({f"{name}_auc": out[name]["auc"], f"{name}_ks": out[name]["ks"]})
    main = "validation" if "validation" in splits else "train"
    y, s = splits[main]
    figures = {
        "roc.png": metrics.plot_roc(splits, title=f"ROC - {cfg.model} ({cfg.mode})"),
        "ks.png": metrics.plot_ks(y, s, title=f"KS - {main}"),
        "gains.png": metrics.plot_gains(y, s, title=main),
    }
    out["plots"] = _save_figures(figures, cfg.out_dir, run)
    out["evaluated_on"] = main
    return out


def _save_figures(figures: dict[str, Any], out_dir: Path, run: Any) -> list[str]:
    plots = []
    for name, fig in figures.items():
        path = out_dir / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        run.log_artifact(path, "plots")
        plots.append(str(path))
    return plots


# -- the job's metrics -------------------------------------------------------------------

def job_metrics(lender: dict[str, Any], platform: dict[str, Any], *, job_id: str, model: str, mode: str,
                transport: str, tracking: dict[str, str]) -> dict[str, Any]:
    """The job's metrics from the two parties' reports (what :func:`fedacq.learn.run.party_job`
    returns at each): sizes, the lender's evaluation and history, each side's timings, the bytes
    each way (total, by phase, messages), each party's model part and the lender's plots."""
    sent, received = "bytes_sent", "bytes_received"
    traffic_of = lender["bytes"]
    return {
        "job_id": job_id,
        "model": model,
        "mode": mode,
        "transport": transport,
        "intersection_size": lender["intersection_size"],
        "train_rows": lender["train_rows"],
        "validation_rows": lender["validation_rows"],
        "train": lender["train"],
        "validation": lender.get("validation"),
        "evaluated_on": lender["evaluated_on"],
        "timings": {k: round(v, 4) for k, v in lender["timings"].items()},
        "platform_timings": {k: round(v, 4) for k, v in platform["timings"].items()},
        "bytes": {
            "lender_to_platform": traffic_of["total"][sent],
            "platform_to_lender": traffic_of["total"][received],
            "by_phase": {phase: {"lender_to_platform": traffic_of[phase][sent],
                                 "platform_to_lender": traffic_of[phase][received]}
                         for phase in ("psi", "model")},
            "messages": {"lender_to_platform": traffic_of["total"]["messages_sent"],
                         "platform_to_lender": traffic_of["total"]["messages_received"]},
        },
        "history": lender["history"],
        "model_info": {LENDER: lender["info"], PLATFORM: platform["info"]},
        "files": {LENDER: lender["files"], PLATFORM: platform["files"], "plots": lender["plots"]},
        "tracking": tracking,
    }


def write_metrics(out_dir: Path, metrics: dict[str, Any]) -> Path:
    path = out_dir / METRICS_FILE
    path.write_text(json.dumps(metrics, indent=2, default=json_default))
    return path


def mark_failed(cfg: RunConfig, exc: BaseException) -> None:
    """Mark ``out_dir`` as the partial folder of a failed run (checks before any work leave none).

    What is left is kept on purpose: the ledgers record what crossed before the
    failure, and each party's MLflow run is marked FAILED.
    """
    (cfg.out_dir / FAILED_FILE).write_text(json.dumps({
        "job_id": cfg.job_id, "error": f"{type(exc).__name__}: {exc}",
        "partial": "this run failed; the ledgers record what crossed before it stopped, "
                   f"the MLflow runs are marked FAILED, and there is no {METRICS_FILE}"}, indent=2))


def json_default(value: Any) -> Any:
    """numpy values and paths as JSON (reports and node job results are plain JSON)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to {METRICS_FILE}")


def headline(metrics: dict[str, Any]) -> dict[str, Any]:
    """The one-line summary ``fedacq run`` prints: the intersection, each split's main metrics, timings."""
    summary: dict[str, Any] = {"intersection_size": metrics["intersection_size"]}
    for split in ("train", "validation"):
        values = metrics.get(split)
        if values:
            summary.update({f"{split}_{k}": round(values[k], 4) for k in ("auc", "ks")})
    summary["seconds"] = metrics["timings"]
    return summary
