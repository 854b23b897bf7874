"""The objectives hetero LR trains: XGBoost's names, each a generalised linear model.

Why these and not the others: the protocol (:mod:`fedacq.learn.hetero_lr`) lets
the lender see the full margin ``z = b + X_l w_l + X_p w_p`` of every row of a
batch in plaintext (the platform sends its partial margins), so the lender can
compute the exact per-row derivative ``r = dloss/dz`` of *any* loss; the
platform only ever needs ``[[r]]`` to form ``[[X_p^T r]]``. No Taylor
approximation of the loss is needed (that is what protocols need where the
party holding the labels never sees the margin in the clear). What the
encrypted gradient does need is a bound on ``|r|``: the platform sizes the
slots it packs the masked sums into from it (see ``residual_bound``).

``r`` is XGBoost's first-order gradient of each objective with respect to the
margin, so a one-row-per-feature linear booster and this model descend the same
loss:

========================  ==========  ==================================  ====================
objective                 link        r = dloss/dz                        XGBoost's metric
========================  ==========  ==================================  ====================
``binary:logistic``       logit       ``sigmoid(z) - y``  (|r| < 1)       logloss (and AUC)
``reg:squarederror``      identity    ``z - y``                           rmse
``count:poisson``         log         ``exp(z) - y``                      poisson-nloglik
``reg:tweedie``           log         ``-y e^((1-p) z) + e^((2-p) z)``    tweedie-nloglik@p
========================  ==========  ==================================  ====================

``multi:softprob`` is refused (:data:`REFUSED`): it needs ``num_class`` weight
vectors at the platform, ``num_class`` residual ciphertexts per row and
``num_class * d_p`` masked sums per batch, with each class's system again
guarded by the batch size; the messages of this protocol carry one of each.
"""

from __future__ import annotations

import math
import numpy as np

OBJECTIVES = ("binary:logistic", "reg:squarederror", "count:poisson", "reg:tweedie")

#: objectives XGBoost has that hetero LR refuses, with the reason (shown in the error)
REFUSED = {
    "multi:softprob": "hetero LR trains one weight vector per party; multi:softprob needs num_class of them at "
                      "the platform, num_class residual ciphertexts per row and num_class * d_p masked sums per "
                      "batch, which this protocol's messages do not carry (use SecureBoost for multi-class)",
}

#: the margin is clipped to this before ``exp`` (log links): ``e^80`` is far past any count or amount
_MAX_LOG_MARGIN = 80.0


def check_objective(objective: str, tweedie_variance_power: float) -> None:
    """A clear error for an objective hetero LR does not train, or a Tweedie power outside (1, 2)."""
    if objective in REFUSED:
        raise ValueError(f"objective {objective!r} is not available for hetero LR: {REFUSED[objective]}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    if objective == "reg:tweedie" and not 1.0 < tweedie_variance_power < 2.0:
        raise ValueError(f"tweedie_variance_power must be in (1, 2) as in XGBoost, got {tweedie_variance_power}")


def check_labels(objective: str, y: np.ndarray) -> None:
    """The labels each objective is defined for (0/1; any finite value; non-negative, not all zero)."""
    if objective == "binary:logistic":
        if not np.isin(y, (0.0, 1.0)).all():
            raise ValueError("binary:logistic needs 0/1 labels")
        return
    if not np.isfinite(y).all():
        raise ValueError(f"{objective} needs finite labels")
    if objective != "reg:squarederror" and ((y < 0).any() or not y.sum() > 0):
        raise ValueError(f"{objective} needs non-negative labels, not all zero")


def _log_margin(z: np.ndarray) -> np.ndarray:
    return np.clip(np.asarray(z, dtype=np.float64), -_MAX_LOG_MARGIN, _MAX_LOG_MARGIN)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(z, dtype=np.float64)))


def transform(objective: str, z: np.ndarray) -> np.ndarray:
    """The prediction from the margin (XGBoost's ``Booster.predict``): probability, identity or mean."""
    if objective == "binary:logistic":
        return sigmoid(z)
    if objective == "reg:squarederror":
        return np.asarray(z, dtype=np.float64)
    return np.exp(_log_margin(z))


def gradient(objective: str, y: np.ndarray, z: np.ndarray, tweedie_variance_power: float = 1.5) -> np.ndarray:
    """Per-row ``dloss/dz`` (XGBoost's gradient of each objective with respect to the margin)."""
    if objective == "reg:tweedie":
        zc, rho = _log_margin(z), tweedie_variance_power
        return -y * np.exp((1.0 - rho) * zc) + np.exp((2.0 - rho) * zc)
    return transform(objective, z) - y


def base_margin(objective: str, y: np.ndarray) -> float:
    """The starting intercept: the link of the label mean (log-odds, mean, log mean)."""
    mean = float(np.mean(y)) if len(y) else 0.0
    if objective == "binary:logistic":
        prior = min(max(mean, 1e-6), 1 - 1e-6)
        return math.log(prior / (1 - prior))
    if objective == "reg:squarederror":
        return mean
    return math.log(max(mean, 1e-6))


def residual_bound(objective: str, y: np.ndarray, z0: float, tweedie_variance_power: float) -> float:
    """The default bound on ``|r|``: 1 for logistic, else the power of two >= 2 max |r| at the start.

    A power of two, so what it tells the platform is one exponent (the order of
    magnitude of the lender's largest starting residual), and dividing by it is
    exact in floating point.
    """
    if objective == "binary:logistic":
        return 1.0
    r0 = np.abs(gradient(objective, y, np.full(len(y), z0), tweedie_variance_power))
    top = 2.0 * float(r0.max()) if len(r0) else 1.0
    return float(2.0 ** max(math.ceil(math.log2(top)), 0)) if top > 0 else 1.0


def check_residual_bound(bound: float) -> None:
    """A bound the platform accepts: a power of two in [2^-16, 2^40] (the slot widths follow from it)."""
    if not isinstance(bound, (int, float)) or isinstance(bound, bool) or not math.isfinite(bound) or \
            not 2.0 ** -16 <= bound <= 2.0 ** 40 or math.frexp(bound)[0] != 0.5:
        raise ValueError(f"residual_bound must be a power of two in [2^-16, 2^40], got {bound!r}")


def metric_names(objective: str) -> tuple[str, ...]:
    """History keys (after ``train_`` / ``valid_``) per objective; the first is the one early stopping watches."""
    return {"binary:logistic": ("logloss", "auc"), "reg:squarederror": ("rmse",),
            "count:poisson": ("poisson_nloglik",), "reg:tweedie": ("tweedie_nloglik",)}[objective]


def metrics(objective: str, prefix: str, y: np.ndarray, z: np.ndarray,
            tweedie_variance_power: float = 1.5) -> dict[str, float]:
    """XGBoost's default evaluation metrics of ``objective`` on margins ``z``, keyed ``<prefix>_<name>``."""
    from scipy.special import gammaln

    pred = transform(objective, z)
    if objective == "binary:logistic":
        p = np.clip(pred, 1e-12, 1 - 1e-12)
        out = {f"{prefix}_logloss": float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))}
        if 0 < y.sum() < len(y):
            from sklearn.metrics import roc_auc_score

            out[f"{prefix}_auc"] = float(roc_auc_score(y, p))
        return out
    if objective == "reg:squarederror":
        return {f"{prefix}_rmse": float(np.sqrt(np.mean((y - pred) ** 2)))}
    mu = np.maximum(pred, 1e-16)
    if objective == "count:poisson":
        return {f"{prefix}_poisson_nloglik": float(np.mean(gammaln(y + 1.0) + mu - y * np.log(mu)))}
    rho = tweedie_variance_power
    a = y * np.exp((1.0 - rho) * np.log(mu)) / (1.0 - rho)
    b = np.exp((2.0 - rho) * np.log(mu)) / (2.0 - rho)
    return {f"{prefix}_tweedie_nloglik": float(np.mean(-a + b))}

