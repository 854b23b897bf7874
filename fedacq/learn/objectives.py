"""XGBoost's learning objectives: gradients, intercept, prediction and default metrics, as XGBoost 3.2 computes them.

One object per objective, got by name with XGBoost's parameters::

    obj = objectives.get("reg:tweedie", tweedie_variance_power=1.3)
    y = obj.check_labels(y)            # float32, as XGBoost stores labels; clear error otherwise
    margin0 = obj.base_margin(y)       # shape (n_groups,): the intercept in margin space
    g, h = obj.gradients(margin, y)    # float32, shape of ``margin``: (n,) or (n, num_class)
    pred = obj.transform(margin)       # what ``Booster.predict`` returns
    obj.evaluate(margin, y)            # {"tweedie-nloglik@1.3": ...}: XGBoost's metric names

Everything a boosting protocol needs to be *exact* against XGBoost ``hist`` is
here: gradients in float32 with XGBoost's operation order, labels read as
float32, and the intercept XGBoost 3.2 estimates (``learner_model_param.base_score``
in its saved config: the label mean for the regression losses and the logistic
loss, centred log class frequencies for ``multi:softprob``).

Per objective (``p`` the margin; ``g``, ``h`` the gradient and hessian; the
intercept as ``base_score`` and then in margin space; the default metrics):

``binary:logistic``
    ``s = 1 / (1 + e^-p)``, ``g = s - y``, ``h = max(s (1 - s), 1e-16)``;
    ``b = mean(y)``, margin ``-log(1/b - 1)``; ``logloss``, ``auc``.
``reg:squarederror``
    ``g = p - y``, ``h = 1``; ``b = mean(y)``, margin ``b``; ``rmse``.
``count:poisson``
    ``g = e^p - y``, ``h = e^(p + max_delta_step)``; ``b = mean(y)``, margin
    ``log b``; ``poisson-nloglik``.
``reg:tweedie``
    ``g = -y e^((1-ρ)p) + e^((2-ρ)p)``, ``h = -y (1-ρ) e^((1-ρ)p) + (2-ρ) e^((2-ρ)p)``;
    ``b = mean(y)``, margin ``log b``; ``tweedie-nloglik@ρ``.
``multi:softprob``
    ``s = softmax(p)``, ``g_k = s_k - [y = k]``, ``h_k = max(2 s_k (1 - s_k), 1e-16)``;
    margin ``log(f_k + 1e-6) - mean_k log(f_k + 1e-6)`` with ``f_k`` the share of
    class ``k`` (``base_score`` is that margin); ``mlogloss``, ``merror``.

``ρ`` is ``tweedie_variance_power`` (default 1.5, in ``[1, 2)``);
``max_delta_step`` of ``count:poisson`` defaults to 0.7 as in XGBoost (it
damps the Newton step by inflating the hessian; XGBoost's learner also hands
it to the trees, which clip leaf weights to it: :attr:`Objective.max_delta_step`
is what a tree booster must use when the user sets none). XGBoost's own default metric
of ``binary:logistic`` is ``logloss`` alone; ``auc`` is added because credit
teams read it. The first metric of :attr:`Objective.metrics` is the one early
stopping watches (XGBoost watches its default metric, which is that one).

``multi:softprob`` has ``n_groups = num_class`` outputs: XGBoost grows one tree
per class per boosting round, all from the gradients at the start of the round,
and tree ``t`` adds to class ``t % num_class``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedacq.learn import metrics as _metrics

__all__ = ["Objective", "OBJECTIVES", "PARAMS", "get", "MAX_NUM_CLASS"]

#: XGBoost's objectives fedacq trains (``multi:softprob`` needs ``num_class``).
OBJECTIVES = ("binary:logistic", "reg:squarederror", "reg:tweedie", "count:poisson", "multi:softprob")

#: The objectives' own XGBoost parameters, with XGBoost's defaults (``None``: not used / objective-dependent).
PARAMS: dict[str, Any] = {"tweedie_variance_power": 1.5, "max_delta_step": None, "num_class": None}

#: Largest ``num_class`` accepted: a peer's ``num_class`` sizes arrays of ``rows x num_class`` here.
MAX_NUM_CLASS = 256

_EPS = np.float32(1e-16)   # XGBoost's kEps floor of hessians and probabilities
_RT_EPS = np.float32(1e-6)  # XGBoost's kRtEps (added to class shares before the log)
_F32 = np.float32


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _sigmoid(p: np.ndarray) -> np.ndarray:
    p = _f32(p)
    with np.errstate(over="ignore"):
        return (_F32(1.0) / (_F32(1.0) + np.exp(-p))).astype(np.float32)


def _softmax(p: np.ndarray) -> np.ndarray:
    """XGBoost's softmax: float32 exponentials, the row maximum floored at FLT_MIN, a double sum."""
    p = _f32(p)
    wmax = np.maximum(p.max(axis=1, keepdims=True), np.finfo(np.float32).tiny)
    e = np.exp((p - wmax).astype(np.float32)).astype(np.float32)
    wsum = e.astype(np.float64).sum(axis=1, keepdims=True).astype(np.float32)
    return (e / wsum).astype(np.float32)


@dataclass(frozen=True)
class Objective:
    """One XGBoost objective with its parameters (build with :func:`get`)."""

    name: str
    tweedie_variance_power: float = 1.5
    max_delta_step: float = 0.0
    num_class: int = 1
    metrics: tuple[str, ...] = field(default=())

    # -- shape -------------------------------------------------------------------------
    @property
    def n_groups(self) -> int:
        """Outputs per row (trees per boosting round): ``num_class`` for multi-class, else 1."""
        return self.num_class if self.name == "multi:softprob" else 1

    @property
    def params(self) -> dict[str, Any]:
        """The XGBoost parameters of this objective (what ``Booster.save_config`` holds for it)."""
        if self.name == "reg:tweedie":
            return {"tweedie_variance_power": self.tweedie_variance_power}
        if self.name == "count:poisson":
            return {"max_delta_step": self.max_delta_step}
        if self.name == "multi:softprob":
            return {"num_class": self.num_class}
        return {}

    @property
    def stop_metric(self) -> str:
        """The metric early stopping watches (XGBoost's default metric of the objective); lower is better."""
        return self.metrics[0]

    # -- labels --------------------------------------------------------------------------
    def check_labels(self, y: Any) -> np.ndarray:
        """``y`` as float32 (XGBoost's label type) after the objective's label check; ValueError naming it."""
        y64 = np.asarray(y, dtype=np.float64)
        if y64.ndim != 1:
            raise ValueError(f"{self.name}: labels must be a 1-D array, got shape {y64.shape}")
        if not np.isfinite(y64).all():
            raise ValueError(f"{self.name}: labels hold NaN or infinite values")
        if self.name == "binary:logistic" and not np.isin(y64, (0.0, 1.0)).all():
            bad = np.unique(y64[~np.isin(y64, (0.0, 1.0))])[:5].tolist()
            raise ValueError(f"{self.name} needs labels 0/1, found {bad}")
        if self.name in ("count:poisson", "reg:tweedie"):
            if (y64 < 0).any():
                raise ValueError(f"{self.name} needs non-negative labels, found {float(y64.min())}")
            if len(y64) and not y64.sum() > 0:
                raise ValueError(f"{self.name}: every label is 0 (the log-mean intercept is undefined)")
        if self.name == "multi:softprob":
            bad = (y64 < 0) | (y64 >= self.num_class) | (np.floor(y64) != y64)
            if bad.any():
                raise ValueError(f"{self.name} needs integer class labels in [0, num_class={self.num_class}), "
                                 f"found {np.unique(y64[bad])[:5].tolist()}")
        return y64.astype(np.float32)

    # -- intercept -----------------------------------------------------------------------
    def base_score(self, y: np.ndarray) -> np.ndarray:
        """XGBoost 3.2's estimated ``base_score`` (float32, length :attr:`n_groups`), from checked labels.

        Label mean for every objective but multi-class (``SampleMean``: double sum of
        ``y_i / n``); for ``multi:softprob`` the centred log class shares, already a margin.
        """
        y = _f32(y)
        if not len(y):
            raise ValueError(f"{self.name}: no rows to estimate the intercept from")
        if self.name == "multi:softprob":
            share = (np.bincount(y.astype(np.int64), minlength=self.num_class) / len(y)).astype(np.float32)
            logs = np.log((share + _RT_EPS).astype(np.float32)).astype(np.float32)
            mean = _F32(0.0)
            for v in logs:  # XGBoost's Mean: float sum of v / n
                mean = _F32(mean + _F32(v / _F32(self.num_class)))
            return (logs - mean).astype(np.float32)
        mean = float(np.sum(y.astype(np.float64) / float(len(y))))
        if self.name == "binary:logistic" and not 0.0 < mean < 1.0:
            raise ValueError(f"{self.name}: labels hold one class only (base score {mean} outside (0, 1))")
        return np.array([mean], dtype=np.float32)

    def prob_to_margin(self, base_score: Any) -> np.ndarray:
        """``base_score`` (XGBoost's user-facing intercept) in margin space, float32 (XGBoost's ProbToMargin)."""
        b = _f32(base_score).reshape(-1)
        if len(b) != self.n_groups:
            raise ValueError(f"{self.name}: base_score of length {len(b)}, expected {self.n_groups}")
        if self.name == "binary:logistic":
            if not ((b > 0) & (b < 1)).all():
                raise ValueError(f"base_score must be in (0, 1) for binary:logistic, got {b.tolist()}")
            return (-np.log((_F32(1.0) / b - _F32(1.0)).astype(np.float32))).astype(np.float32)
        if self.name in ("count:poisson", "reg:tweedie"):
            if not (b > 0).all():
                raise ValueError(f"base_score must be positive for {self.name}, got {b.tolist()}")
            return np.log(b).astype(np.float32)
        return b

    def margin_to_prob(self, margin: Any) -> np.ndarray:
        """The inverse of :meth:`prob_to_margin` (``base_score`` as XGBoost's JSON model stores it)."""
        m = _f32(margin).reshape(-1)
        if self.name == "binary:logistic":
            return _sigmoid(m)
        if self.name in ("count:poisson", "reg:tweedie"):
            return np.exp(m).astype(np.float32)
        return m

    def base_margin(self, y: np.ndarray, base_score: Any = None) -> np.ndarray:
        """The starting margin (length :attr:`n_groups`): ``base_score`` if given, else XGBoost's estimate.

        A single ``base_score`` serves every class of ``multi:softprob``.
        """
        if base_score is None:
            return self.prob_to_margin(self.base_score(y))
        b = _f32(base_score).reshape(-1)
        return self.prob_to_margin(np.repeat(b, self.n_groups) if len(b) == 1 else b)

    # -- gradients -----------------------------------------------------------------------
    def gradients(self, margin: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(g, h)`` float32, shaped as ``margin`` ((n,) or (n, num_class)), as XGBoost computes them."""
        p = _f32(margin)
        y = _f32(y)
        one = _F32(1.0)
        with np.errstate(over="ignore"):
            if self.name == "binary:logistic":
                s = _sigmoid(p)
                return (s - y).astype(np.float32), np.maximum(s * (one - s), _EPS).astype(np.float32)
            if self.name == "reg:squarederror":
                return (p - y).astype(np.float32), np.ones_like(p)
            if self.name == "count:poisson":
                mds = _F32(self.max_delta_step)
                return (np.exp(p) - y).astype(np.float32), np.exp((p + mds).astype(np.float32)).astype(np.float32)
            if self.name == "reg:tweedie":
                rho = _F32(self.tweedie_variance_power)
                a = np.exp(((one - rho) * p).astype(np.float32)).astype(np.float32)
                b = np.exp(((_F32(2.0) - rho) * p).astype(np.float32)).astype(np.float32)
                g = (-y * a + b).astype(np.float32)
                h = (-y * (one - rho) * a + (_F32(2.0) - rho) * b).astype(np.float32)
                return g, h
        # multi:softprob
        if p.ndim != 2 or p.shape[1] != self.num_class:
            raise ValueError(f"multi:softprob margins must have shape (n, {self.num_class}), got {p.shape}")
        s = _softmax(p)
        h = np.maximum((_F32(2.0) * s * (one - s)).astype(np.float32), _EPS).astype(np.float32)
        onehot = (y.astype(np.int64)[:, None] == np.arange(self.num_class)[None, :])
        g = np.where(onehot, s - one, s).astype(np.float32)
        return g, h

    # -- prediction and metrics ----------------------------------------------------------
    def transform(self, margin: np.ndarray) -> np.ndarray:
        """The prediction from the margin (``Booster.predict``): probability, value, mean or class probabilities."""
        p = _f32(margin)
        if self.name == "binary:logistic":
            return _sigmoid(p)
        if self.name in ("count:poisson", "reg:tweedie"):
            with np.errstate(over="ignore"):
                return np.exp(p).astype(np.float32)
        if self.name == "multi:softprob":
            return _softmax(p)
        return p

    def evaluate(self, margin: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """This objective's metrics on ``margin`` (keys: XGBoost's metric names).

        ``auc`` is left out when the labels hold one class (it is undefined there).
        """
        pred = self.transform(margin)
        out = {}
        for name in self.metrics:
            if name == "auc" and not 0 < float(np.sum(y)) < len(y):
                continue
            out[name] = _metrics.evaluate_metric(name, y, pred)
        return out


def get(name: str, *, tweedie_variance_power: float | None = None, max_delta_step: float | None = None,
        num_class: int | None = None) -> Objective:
    """The objective ``name`` with XGBoost's parameters (defaults as XGBoost's); ValueError when invalid.

    Parameters that do not belong to ``name`` are ignored, as XGBoost ignores them.
    """
    if name not in OBJECTIVES:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {name!r}")
    rho = 1.5 if tweedie_variance_power is None else tweedie_variance_power
    if name == "reg:tweedie":
        if not isinstance(rho, (int, float)) or isinstance(rho, bool) or not 1.0 <= rho < 2.0:
            raise ValueError(f"reg:tweedie: tweedie_variance_power must be in [1, 2) as in XGBoost, got {rho!r}")
        rho = float(_F32(rho))
    mds = 0.0
    if name == "count:poisson":
        mds = 0.7 if max_delta_step is None else max_delta_step
        if not isinstance(mds, (int, float)) or isinstance(mds, bool) or not 0.0 <= mds < math.inf:
            raise ValueError(f"count:poisson: max_delta_step must be a finite number >= 0, got {mds!r}")
        mds = float(mds)
    k = 1
    if name == "multi:softprob":
        if num_class is None or isinstance(num_class, bool) or not isinstance(num_class, (int, np.integer)) \
                or not 2 <= int(num_class) <= MAX_NUM_CLASS:
            raise ValueError(f"multi:softprob needs num_class, an integer in [2, {MAX_NUM_CLASS}], got {num_class!r}")
        k = int(num_class)
    metrics = {
        "binary:logistic": ("logloss", "auc"),
        "reg:squarederror": ("rmse",),
        "count:poisson": ("poisson-nloglik",),
        "reg:tweedie": (f"tweedie-nloglik@{_metrics.format_rho(rho)}",),
        "multi:softprob": ("mlogloss", "merror"),
    }[name]
    return Objective(name, float(rho), mds, k, metrics)
