"""Model metrics: XGBoost's evaluation metrics by name, and a binary credit model's AUC, KS, lift, gains and plots.

XGBoost's metrics (:func:`evaluate_metric`) are the one place every model's
training history is computed from (SecureBoost, hetero LR, split NN): the same
names and definitions as XGBoost's ``eval_metric`` - ``logloss``, ``auc``,
``rmse``, ``poisson-nloglik``, ``tweedie-nloglik@rho``, ``mlogloss``,
``merror`` - so a federated run's history reads like ``xgboost.train``'s.
They are averaged per row in double precision from the model's float32
predictions (XGBoost sums float32 row losses in double; the two agree far below
the 1e-4 the exactness tests ask for).

These are the numbers a credit acquisition team reads off a model (and what the
lender computes on the held-out part of the intersection, since only it holds
labels): AUC for ranking quality, KS (the largest gap between the cumulative
score distributions of positives and negatives) because risk teams quote it,
and gains/lift by decile because the platform will act on the *top* deciles
(boosting bids there), so the question is how many positives the top 10 %, 20 %
... of scores capture.

Everything here is computed with numpy so the functions can run at either
party without extra dependencies; tests check them against scikit-learn and
against hand-computed cases. Plots are built on bare ``matplotlib.figure.Figure``
objects with the Agg canvas: no pyplot state, no display, safe in threads and on
servers, and the caller owns (and may discard) the figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "XGBOOST_METRICS", "evaluate_metric", "logloss", "rmse", "poisson_nloglik", "tweedie_nloglik",
    "mlogloss", "merror", "format_rho", "metric_key", "Curve", "check_binary", "roc_curve", "roc_auc",
    "ks_curve", "ks_statistic", "gains_table", "evaluate", "plot_roc", "plot_ks", "plot_gains",
]


# -- XGBoost's evaluation metrics ---------------------------------------------------------

#: XGBoost metric names :func:`evaluate_metric` knows (``tweedie-nloglik@<rho>``: any rho in [1, 2)).
XGBOOST_METRICS = ("logloss", "auc", "rmse", "poisson-nloglik", "tweedie-nloglik@<rho>", "mlogloss", "merror")

_EPS = 1e-16  # XGBoost's floor of probabilities and Poisson means


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean of ``-(y log p + (1 - y) log(1 - p))``, ``p`` and ``1 - p`` floored at 1e-16 (XGBoost ``logloss``)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    return float(np.mean(-(y * np.log(np.maximum(p, _EPS)) + (1 - y) * np.log(np.maximum(1 - p, _EPS)))))


def rmse(y: np.ndarray, pred: np.ndarray) -> float:
    """Root mean squared error (XGBoost ``rmse``)."""
    d = np.asarray(y, dtype=np.float64) - np.asarray(pred, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d)))


def poisson_nloglik(y: np.ndarray, mu: np.ndarray) -> float:
    """Mean Poisson negative log-likelihood ``lgamma(y + 1) + mu - y log mu``, ``mu`` floored at 1e-16."""
    from scipy.special import gammaln

    y = np.asarray(y, dtype=np.float64)
    mu = np.maximum(np.asarray(mu, dtype=np.float64), _EPS)
    return float(np.mean(gammaln(y + 1.0) + mu - y * np.log(mu)))


def tweedie_nloglik(y: np.ndarray, mu: np.ndarray, rho: float) -> float:
    """Mean Tweedie negative log-likelihood (without the term free of ``mu``), XGBoost ``tweedie-nloglik@rho``.

    ``-y mu^(1-rho) / (1 - rho) + mu^(2-rho) / (2 - rho)``, for ``1 <= rho < 2``
    as XGBoost (at ``rho = 1`` the first term divides by zero there too).
    """
    y = np.asarray(y, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = y * np.exp((1.0 - rho) * np.log(mu)) / (1.0 - rho)
        b = np.exp((2.0 - rho) * np.log(mu)) / (2.0 - rho)
    return float(np.mean(-a + b))


def _class_probs(y: np.ndarray, prob: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64).ravel()
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or prob.shape[0] != y.shape[0]:
        raise ValueError(f"class probabilities must have shape ({y.shape[0]}, num_class), got {prob.shape}")
    if y.size and (y.min() < 0 or y.max() >= prob.shape[1]):
        raise ValueError(f"class labels must be in [0, {prob.shape[1]})")
    return y, prob


def mlogloss(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean of ``-log p[y]`` with ``p[y]`` floored at 1e-16 (XGBoost ``mlogloss``); ``prob`` is (n, num_class)."""
    y, prob = _class_probs(y, prob)
    return float(np.mean(-np.log(np.maximum(prob[np.arange(len(y)), y], _EPS))))


def merror(y: np.ndarray, prob: np.ndarray) -> float:
    """Share of rows whose most probable class (the first on ties) is not the label (XGBoost ``merror``)."""
    y, prob = _class_probs(y, prob)
    return float(np.mean(np.argmax(prob, axis=1) != y))


def format_rho(rho: float) -> str:
    """``rho`` as XGBoost writes it in ``tweedie-nloglik@<rho>`` (C++ stream of a float: 6 significant digits)."""
    return f"{float(np.float32(rho)):.6g}"


def evaluate_metric(name: str, y: np.ndarray, pred: np.ndarray) -> float:
    """XGBoost's metric ``name`` of predictions ``pred`` (``Booster.predict`` output: probabilities, values, means).

    Lower is better for every metric but ``auc``.
    """
    if name == "logloss":
        return logloss(y, pred)
    if name == "auc":
        return roc_auc(y, pred)
    if name == "rmse":
        return rmse(y, pred)
    if name == "poisson-nloglik":
        return poisson_nloglik(y, pred)
    if name.startswith("tweedie-nloglik@"):
        try:
            rho = float(name.split("@", 1)[1])
        except ValueError:
            raise ValueError(f"metric {name!r}: the Tweedie power after '@' is not a number") from None
        if not 1.0 <= rho < 2.0:
            raise ValueError(f"metric {name!r}: the Tweedie power must be in [1, 2)")
        return tweedie_nloglik(y, pred, rho)
    if name == "mlogloss":
        return mlogloss(y, pred)
    if name == "merror":
        return merror(y, pred)
    raise ValueError(f"unknown metric {name!r}; known: {', '.join(XGBOOST_METRICS)}")


def metric_key(prefix: str, name: str) -> str:
    """History / tracking key of metric ``name`` on split ``prefix``: ``train_logloss``, ``valid_tweedie-nloglik_1.5``.

    XGBoost's name, with ``@`` (which MLflow refuses in metric names) written ``_``.
    """
    return f"{prefix}_{name.replace('@', '_')}"


def check_binary(y_true: np.ndarray, y_score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validate and return ``(y, score)`` as 1-d arrays: labels in {0, 1}, finite scores, same length.

    AUC and KS are undefined without both classes, so that is an error rather than a NaN.
    """
    y = np.asarray(y_true).ravel()
    s = np.asarray(y_score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"labels and scores differ in length: {y.size} != {s.size}")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    if not np.all(np.isin(y, (0, 1))):
        bad = np.unique(y[~np.isin(y, (0, 1))])[:5]
        raise ValueError(f"labels must be 0/1, found {bad.tolist()}")
    y = y.astype(np.int8)
    if y.min() == y.max():
        raise ValueError(f"labels hold one class only ({int(y[0])}): AUC and KS are undefined")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores contain NaN or infinite values")
    return y, s


@dataclass(frozen=True)
class Curve:
    """Points of a ROC curve: one per distinct score threshold, plus the (0, 0) start.

    ``thresholds[i]`` is the score at or above which rows count as positive to
    reach ``(fpr[i], tpr[i])``; the first point uses +inf (nothing selected).
    """

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(y_true: np.ndarray, y_score: np.ndarray) -> Curve:
    """The ROC curve with tied scores merged into one step (so ties cost no arbitrary order)."""
    y, s = check_binary(y_true, y_score)
    order = np.argsort(-s, kind="mergesort")
    s_sorted = s[order]
    y_sorted = y[order]
    # last index of each run of equal scores: a threshold between distinct scores
    last = np.r_[np.flatnonzero(np.diff(s_sorted) != 0), s.size - 1]
    tp = np.cumsum(y_sorted)[last].astype(np.float64)
    fp = (last + 1) - tp
    n_pos = float(y.sum())
    n_neg = float(y.size - n_pos)
    return Curve(fpr=np.r_[0.0, fp / n_neg], tpr=np.r_[0.0, tp / n_pos],
                 thresholds=np.r_[np.inf, s_sorted[last]])


def roc_auc(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """Area under the ROC curve (trapezoids, so tied scores count one half, as in scikit-learn)."""
    c = roc_curve(y_true, y_score)
    return float(np.sum(np.diff(c.fpr) * (c.tpr[1:] + c.tpr[:-1]) / 2.0))


def ks_curve(y_true: np.ndarray, y_score: np.ndarray) -> Curve:
    """The curves behind KS: cumulative share of positives (tpr) and of negatives (fpr) by threshold.

    They are the ROC points; KS is their largest vertical gap.
    """
    return roc_curve(y_true, y_score)


def ks_statistic(y_true: np.ndarray, y_score: np.ndarray) -> tuple[float, float]:
    """``(ks, threshold)``: max over thresholds of TPR - FPR, and the score where it is reached.

    Taken as the plain difference (not its absolute value), so a model that ranks
    positives *below* negatives gets a KS near zero rather than a high one.
    """
    y, s = check_binary(y_true, y_score)
    c = roc_curve(y, s)
    gap = _ks_gap(c, y)
    i = int(np.argmax(gap))
    return float(gap[i]), float(c.thresholds[i])


def _ks_gap(c: Curve, y: np.ndarray) -> np.ndarray:
    """TPR - FPR from integer counts, so equal gaps compare equal (the first maximum wins)."""
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    tp = np.rint(c.tpr * n_pos)
    fp = np.rint(c.fpr * n_neg)
    return (tp * n_neg - fp * n_pos) / (n_pos * n_neg)


def gains_table(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Gains and lift by score group (deciles by default), best scores first.

    Rows are sorted by descending score and cut into ``n_bins`` groups of equal
    size (sizes differ by at most one when the rows do not divide evenly); rows
    with equal scores that straddle a cut are split by their input order, which
    keeps the groups equal in size - the convention credit reports use.

    Columns: ``decile`` (1 = top scores), ``rows``, ``positives``,
    ``positive_rate``, ``min_score``/``max_score``, ``cum_rows_share`` (share of
    all rows selected down to this group), ``cum_positives``, ``gain`` (share of
    all positives captured down to this group), ``lift`` (this group's positive
    rate over the overall rate) and ``cum_lift`` (the selection's rate over the
    overall rate).
    """
    y, s = check_binary(y_true, y_score)
    if not 1 <= n_bins <= y.size:
        raise ValueError(f"n_bins must be between 1 and the number of rows ({y.size}), got {n_bins}")
    order = np.argsort(-s, kind="mergesort")
    groups = np.array_split(order, n_bins)
    rows = np.array([g.size for g in groups], dtype=np.int64)
    pos = np.array([int(y[g].sum()) for g in groups], dtype=np.int64)
    base_rate = y.mean()
    cum_rows = np.cumsum(rows)
    cum_pos = np.cumsum(pos)
    return pd.DataFrame({
        "decile": np.arange(1, n_bins + 1),
        "rows": rows,
        "positives": pos,
        "positive_rate": pos / rows,
        "min_score": [float(s[g].min()) for g in groups],
        "max_score": [float(s[g].max()) for g in groups],
        "cum_rows_share": cum_rows / y.size,
        "cum_positives": cum_pos,
        "gain": cum_pos / pos.sum(),
        "lift": (pos / rows) / base_rate,
        "cum_lift": (cum_pos / cum_rows) / base_rate,
    })


def evaluate(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10) -> dict:
    """AUC, KS and the decile table as a JSON-able dict (what ``metrics.json`` stores per split)."""
    y, s = check_binary(y_true, y_score)
    ks, ks_threshold = ks_statistic(y, s)
    table = gains_table(y, s, n_bins)
    return {
        "rows": int(y.size),
        "positives": int(y.sum()),
        "auc": roc_auc(y, s),
        "ks": ks,
        "ks_threshold": ks_threshold,
        "lift_by_decile": [float(v) for v in table["lift"]],
        "gain_by_decile": [float(v) for v in table["gain"]],
        "deciles": table.to_dict(orient="records"),
    }


# -- plots ---------------------------------------------------------------------------------

def _figure(ncols: int = 1) -> tuple[Figure, list]:
    fig = Figure(figsize=(5.2 * ncols, 4.4))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _as_series(scores: dict[str, tuple[np.ndarray, np.ndarray]] | tuple[np.ndarray, np.ndarray]
               ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Plots take one ``(y, score)`` pair or several, named (e.g. train and validation)."""
    if isinstance(scores, tuple):
        return {"model": scores}
    return dict(scores)


def plot_roc(scores: dict[str, tuple[np.ndarray, np.ndarray]] | tuple[np.ndarray, np.ndarray],
             title: str = "ROC") -> Figure:
    """ROC curves with their AUC in the legend and the chance diagonal."""
    fig, (ax,) = _figure()
    for name, (y, s) in _as_series(scores).items():
        c = roc_curve(y, s)
        ax.plot(c.fpr, c.tpr, label=f"{name} (AUC {roc_auc(y, s):.4f})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="chance")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title,
           xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_ks(y_true: np.ndarray, y_score: np.ndarray, title: str = "KS") -> Figure:
    """Cumulative shares of positives and negatives against the share of rows selected, KS marked."""
    y, s = check_binary(y_true, y_score)
    c = ks_curve(y, s)
    # x: share of all rows at or above each threshold
    n_pos, n_neg = y.sum(), y.size - y.sum()
    selected = (c.tpr * n_pos + c.fpr * n_neg) / y.size
    gap = _ks_gap(c, y)
    i = int(np.argmax(gap))
    fig, (ax,) = _figure()
    ax.plot(selected, c.tpr, label="positives (cumulative share)")
    ax.plot(selected, c.fpr, label="negatives (cumulative share)")
    ax.vlines(selected[i], c.fpr[i], c.tpr[i], colors="black", linestyles="--",
              label=f"KS {gap[i]:.4f} at score {c.thresholds[i]:.4g}")
    ax.set(xlabel="share of rows selected (highest scores first)", ylabel="cumulative share",
           title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return fig


def plot_gains(y_true: np.ndarray, y_score: np.ndarray, n_bins: int = 10,
               title: str = "Gains and lift") -> Figure:
    """Two panels: cumulative gains against a random selection, and lift per decile."""
    table = gains_table(y_true, y_score, n_bins)
    fig, (ax_gain, ax_lift) = _figure(2)
    x = np.r_[0.0, table["cum_rows_share"].to_numpy()]
    ax_gain.plot(x, np.r_[0.0, table["gain"].to_numpy()], marker="o", label="model")
    ax_gain.plot([0, 1], [0, 1], color="grey", linestyle=":", label="random")
    ax_gain.set(xlabel="share of rows selected", ylabel="share of positives captured",
                title=f"{title}: cumulative gains", xlim=(0, 1), ylim=(0, 1.01))
    ax_gain.legend(loc="lower right")
    ax_gain.grid(alpha=0.3)
    ax_lift.bar(table["decile"], table["lift"], color="tab:blue", label="lift")
    ax_lift.plot(table["decile"], table["cum_lift"], color="tab:orange", marker="o",
                 label="cumulative lift")
    ax_lift.axhline(1.0, color="grey", linestyle=":")
    ax_lift.set(xlabel="decile (1 = highest scores)", ylabel="lift over base rate",
                title=f"{title}: lift by decile", xticks=table["decile"])
    ax_lift.legend(loc="upper right")
    ax_lift.grid(alpha=0.3, axis="y")
    return fig
