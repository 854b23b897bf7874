"""Which of XGBoost's objectives hetero LR trains, and the bound its encrypted gradient needs.

The objectives themselves (gradients, intercept, prediction, metrics) are
:mod:`fedacq.learn.objectives`, the same ones SecureBoost uses; this module is
what is particular to hetero LR.

Why every objective but ``multi:softprob`` works unchanged: in this protocol
(:mod:`fedacq.learn.hetero_lr`) the lender sees the full margin
``z = b + X_l w_l + X_p w_p`` of every row of a batch in plaintext (the
platform sends its partial margins), so it computes the exact per-row
derivative ``r = dloss/dz`` of *any* loss itself (XGBoost's first-order
gradient, :meth:`fedacq.learn.objectives.Objective.gradients`); the platform
only ever needs ``[[r]]`` to form ``[[X_p^T r]]``. No Taylor approximation of
the loss is needed (protocols where the label holder never sees the margin in
the clear need one). Each is then a generalised linear model:
``binary:logistic`` (logit link), ``reg:squarederror`` (identity),
``count:poisson`` and ``reg:tweedie`` (log link).

What the encrypted gradient does need is a bound on ``|r|``: the platform
sizes the slots it packs the gradient sums into from it (and refuses an answer
whose slots overflow), so the lender encodes ``r / residual_bound`` and clips
``r`` to the bound (:func:`residual_bound`).
"""

from __future__ import annotations

import math

import numpy as np

from fedacq.learn import metrics, objectives
from fedacq.learn.objectives import Objective

#: objectives XGBoost has that hetero LR refuses, with the reason (shown in the error)
REFUSED = {
    "multi:softprob": "hetero LR trains one weight vector per party; multi:softprob needs num_class of them at "
                      "the platform, num_class residual ciphertexts per row and num_class * d_p masked sums per "
                      "batch, which this protocol's messages do not carry (use SecureBoost for multi-class)",
}

#: the objectives hetero LR trains, XGBoost's names
OBJECTIVES = tuple(name for name in objectives.OBJECTIVES if name not in REFUSED)


def get(objective: str, tweedie_variance_power: float = 1.5) -> Objective:
    """The objective, or a clear error for one hetero LR does not train (with the reason) or bad parameters."""
    if objective in REFUSED:
        raise ValueError(f"objective {objective!r} is not available for hetero LR: {REFUSED[objective]}")
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    return objectives.get(objective, tweedie_variance_power=tweedie_variance_power)


def residual(obj: Objective, y: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Per-row ``dloss/dz`` (XGBoost's gradient, computed in float32 as XGBoost does), as float64."""
    return obj.gradients(margin, y)[0].astype(np.float64)


def residual_bound(obj: Objective, y: np.ndarray, margin: float) -> float:
    """The default bound on ``|r|``: 1 for logistic, else the power of two >= 2 max |r| at the start.

    ``margin`` is the starting margin (the intercept). A power of two, so what it
    tells the platform is one exponent (the order of magnitude of the lender's
    largest starting residual), and dividing by it is exact in floating point.
    """
    if obj.name == "binary:logistic":
        return 1.0
    r0 = np.abs(residual(obj, y, np.full(len(y), margin)))
    top = 2.0 * float(r0.max()) if len(r0) else 1.0
    return float(2.0 ** max(math.ceil(math.log2(top)), 0)) if top > 0 else 1.0


def check_residual_bound(bound: float) -> None:
    """A bound the platform accepts: a power of two in [2^-16, 2^40] (the slot widths follow from it)."""
    if not isinstance(bound, (int, float)) or isinstance(bound, bool) or not math.isfinite(bound) or \
            not 2.0 ** -16 <= bound <= 2.0 ** 40 or math.frexp(bound)[0] != 0.5:
        raise ValueError(f"residual_bound must be a power of two in [2^-16, 2^40], got {bound!r}")


def history(obj: Objective, prefix: str, y: np.ndarray, margin: np.ndarray) -> dict[str, float]:
    """The objective's metrics keyed for the history and MLflow (``train_logloss``, ``valid_rmse`` ...)."""
    return {metrics.metric_key(prefix, name): value for name, value in obj.evaluate(margin, y).items()}
