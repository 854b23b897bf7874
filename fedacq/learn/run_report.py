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
from typing import TYPE_CHECKING, Any

import numpy as np

from fedacq.learn.run_config import LENDER, PLATFORM, RunConfig

if TYPE_CHECKING:
    from fedacq.learn.objectives import Objective

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
             objective: "Objective", cfg: RunConfig, run: Any) -> dict[str, Any]:
    """The lender's evaluation: the objective's metrics per split, plots under the output folder and in MLflow.

    ``splits`` maps "train" (and "validation" when there is one) to (labels,
    predictions as XGBoost's ``Booster.predict`` gives them); rows without a
    label (NaN) are left out. Every objective gets its XGBoost default metrics;
    a binary classifier also AUC, KS and gains by decile (ROC, KS and gains
    plots), a regression the mean actual and predicted value by decile of the
    prediction and the share of the total each decile captures (predicted
    against actual plots), a multi-class model its confusion matrix.
    """
    out: dict[str, Any] = {"history": history, "objective": objective.name,
                           "objective_params": objective.params}
    labelled: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, (y, pred) in splits.items():
        y = np.asarray(y, dtype=np.float64)
        pred = np.asarray(pred, dtype=np.float64)
        keep = ~np.isnan(y)
        labelled[name] = y, pred = y[keep], pred[keep]
        out[name] = _split_metrics(objective, y, pred)
        out[f"{name}_labelled_rows"] = int(keep.sum())
        run.log_metrics({_metric_key(name, k): out[name][k] for k in headline_metrics(objective)})
    main = "validation" if "validation" in splits else "train"
    out["plots"] = _save_figures(_figures(objective, labelled, main, cfg), cfg.out_dir, run)
    out["evaluated_on"] = main
    return out


def headline_metrics(objective: "Objective") -> tuple[str, ...]:
    """The metrics logged to MLflow and printed per split: the objective's, and KS for a binary classifier."""
    return (*objective.metrics, "ks") if objective.name == "binary:logistic" else objective.metrics


def _split_metrics(objective: "Objective", y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    from fedacq.learn import metrics

    values: dict[str, Any] = {"rows": int(y.size)}
    values.update({name: metrics.evaluate_metric(name, y, pred) for name in objective.metrics})
    if objective.name == "binary:logistic":
        values.update(metrics.evaluate(y, pred))
    elif objective.name == "multi:softprob":
        values["confusion"] = _confusion(y, pred, objective.num_class).tolist()
    else:
        values["mean_label"] = float(y.mean())
        values["mean_prediction"] = float(pred.mean())
        values["value_by_decile"] = value_by_decile(y, pred)
    return values


def _metric_key(split: str, name: str) -> str:
    from fedacq.learn.metrics import metric_key

    return metric_key(split, name)


def value_by_decile(y: np.ndarray, pred: np.ndarray, n_bins: int = 10) -> list[dict[str, Any]]:
    """Rows ranked by prediction, highest first, cut in ``n_bins`` equal groups: per group the mean
    prediction, the mean actual value, and the cumulative share of the total actual value captured
    (what value targeting acts on: how much drawdown the top deciles hold). The share is None for a
    target that can be negative or sums to 0: a share of such a total means nothing."""
    order = np.argsort(-pred, kind="stable")
    total = float(y.sum())
    shares = total > 0 and not (y < 0).any()
    out, captured = [], 0.0
    for i, rows in enumerate(np.array_split(order, n_bins)):
        if rows.size == 0:
            continue
        captured += float(y[rows].sum())
        out.append({"decile": i + 1, "rows": int(rows.size), "mean_prediction": float(pred[rows].mean()),
                    "mean_actual": float(y[rows].mean()),
                    "cum_value_share": captured / total if shares else None})
    return out


def _confusion(y: np.ndarray, prob: np.ndarray, num_class: int) -> np.ndarray:
    """Counts of (actual class, predicted class), the predicted class the most probable one."""
    matrix = np.zeros((num_class, num_class), dtype=np.int64)
    np.add.at(matrix, (y.astype(np.int64), np.argmax(prob, axis=1)), 1)
    return matrix


def _figures(objective: "Objective", splits: dict[str, tuple[np.ndarray, np.ndarray]], main: str,
             cfg: RunConfig) -> dict[str, Any]:
    """The plots a person reads for this objective, by file name."""
    from fedacq.learn import metrics

    y, pred = splits[main]
    if objective.name == "binary:logistic":
        return {"roc.png": metrics.plot_roc(splits, title=f"ROC - {cfg.model} ({cfg.mode})"),
                "ks.png": metrics.plot_ks(y, pred, title=f"KS - {main}"),
                "gains.png": metrics.plot_gains(y, pred, title=main)}
    if objective.name == "multi:softprob":
        return {"confusion.png": _plot_confusion(_confusion(y, pred, objective.num_class),
                                                 f"{cfg.model} ({cfg.mode}) - {main}")}
    return {"predicted_vs_actual.png": _plot_predicted_vs_actual(splits, f"{objective.name} - {cfg.model}"),
            "value_by_decile.png": _plot_value_by_decile(value_by_decile(y, pred), f"{objective.name} - {main}")}


def _figure(ncols: int = 1) -> tuple[Any, list]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2 * ncols, 4.4))
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]


def _plot_predicted_vs_actual(splits: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> Any:
    """Actual against predicted value per split, the diagonal where they agree; RMSE in the legend."""
    from fedacq.learn.metrics import rmse

    fig, (ax,) = _figure()
    top = 0.0
    for name, (y, pred) in splits.items():
        ax.scatter(pred, y, s=6, alpha=0.35, label=f"{name} (RMSE {rmse(y, pred):.4g})")
        top = max(top, float(np.max(pred)), float(np.max(y)))
    low = min(min(float(np.min(p)), float(np.min(y))) for y, p in splits.values())
    ax.plot([low, top], [low, top], color="grey", linestyle="--", linewidth=1, label="actual = predicted")
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    ax.legend(loc="upper left")
    return fig


def _plot_value_by_decile(table: list[dict[str, Any]], title: str) -> Any:
    """Mean actual and predicted value per decile of the prediction; beside it the cumulative share of
    the total captured, when the target has one."""
    with_share = all(row["cum_value_share"] is not None for row in table)
    fig, axes = _figure(2 if with_share else 1)
    ax_mean = axes[0]
    deciles = [row["decile"] for row in table]
    ax_mean.bar(np.array(deciles) - 0.2, [row["mean_actual"] for row in table], width=0.4, label="actual")
    ax_mean.bar(np.array(deciles) + 0.2, [row["mean_prediction"] for row in table], width=0.4, label="predicted")
    ax_mean.set_xlabel("decile of the prediction (1 = highest)")
    ax_mean.set_ylabel("mean value")
    ax_mean.set_title(title)
    ax_mean.legend()
    if not with_share:
        return fig
    ax_share = axes[1]
    rows = np.cumsum([row["rows"] for row in table]) / sum(row["rows"] for row in table)
    ax_share.plot(np.r_[0.0, rows], np.r_[0.0, [row["cum_value_share"] for row in table]], marker="o",
                  label="model")
    ax_share.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="random")
    ax_share.set_xlabel("share of rows, highest predictions first")
    ax_share.set_ylabel("share of the total actual value")
    ax_share.legend(loc="lower right")
    return fig


def _plot_confusion(matrix: np.ndarray, title: str) -> Any:
    """Rows: actual class; columns: predicted class; each cell its count."""
    fig, (ax,) = _figure()
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                color="white" if count > matrix.max() / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("actual class")
    ax.set_xticks(range(matrix.shape[1]))
    ax.set_yticks(range(matrix.shape[0]))
    ax.set_title(title)
    return fig


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
        "train_labelled_rows": lender["train_labelled_rows"],
        "validation_labelled_rows": lender.get("validation_labelled_rows", 0),
        "objective": lender["objective"],
        "objective_params": lender["objective_params"],
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
    from fedacq.learn.run_config import objective_of

    names = headline_metrics(objective_of({"objective": metrics["objective"], **metrics["objective_params"]}))
    summary: dict[str, Any] = {"intersection_size": metrics["intersection_size"]}
    for split in ("train", "validation"):
        values = metrics.get(split)
        if values:
            summary.update({_metric_key(split, k): round(values[k], 4) for k in names if k in values})
    summary["seconds"] = metrics["timings"]
    return summary
