"""Hetero logistic / linear regression as scikit-learn estimators.

The lender's side of :mod:`fedacq.learn.hetero_lr` (the protocol, and what each party
learns) with the parameters of :class:`~fedacq.learn.hetero_lr.HeteroLRLender` (scikit-learn's
``LogisticRegression`` / ``SGDClassifier`` names) plus ``peer``; row alignment and the peer are
described in :mod:`fedacq.learn.estimator_base`.

* :class:`HeteroLogisticRegression`: ``binary:logistic``, two classes; ``predict_proba`` (n, 2).
* :class:`HeteroLinearRegression`: the linear models of the other objectives hetero LR trains,
  ``reg:squarederror`` (default), ``count:poisson``, ``reg:tweedie``; ``predict`` is the mean.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sklearn.base import ClassifierMixin, RegressorMixin

from fedacq.learn.estimator_base import FederatedClassifierMixin, FederatedEstimator, FederatedRegressorMixin


class _HeteroLR(FederatedEstimator):
    _model = "hetero_lr"

    def __init__(self, *, objective: str | None = None, tweedie_variance_power: float = 1.5,
                 residual_bound: float | None = None, penalty: str | None = "l2", C: float = 1.0,
                 fit_intercept: bool = True, max_iter: int = 30, batch_size: int = 512,
                 learning_rate: str = "invscaling", solver: str = "adam", eta0: float = 0.05,
                 power_t: float = 0.5, momentum: float = 0.9, tol: float = 1e-4, n_iter_no_change: int = 3,
                 early_stopping: bool = True, residual_frac_bits: int = 24, feature_frac_bits: int = 8,
                 key_bits: int = 2048, insecure_test_key: bool = False,
                 random_state: int = 0, n_jobs: int | None = None, peer: Any = None) -> None:
        self.objective = objective
        self.tweedie_variance_power = tweedie_variance_power
        self.residual_bound = residual_bound
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.solver = solver
        self.eta0 = eta0
        self.power_t = power_t
        self.momentum = momentum
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.residual_frac_bits = residual_frac_bits
        self.feature_frac_bits = feature_frac_bits
        self.key_bits = key_bits
        self.insecure_test_key = insecure_test_key
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.peer = peer

    _default_objective = ""

    def _role(self) -> Any:
        from fedacq.learn.hetero_lr import HeteroLRLender

        params = self.get_params(deep=False)
        del params["peer"]
        params["objective"] = params["objective"] or self._default_objective
        return HeteroLRLender(**params)

    @staticmethod
    def _load_role(directory: Path) -> Any:
        from fedacq.learn.hetero_lr import HeteroLRLender

        return HeteroLRLender.load(directory)

    def _from_role(self) -> None:
        self.coef_ = self.lender_.coef_
        self.intercept_ = self.lender_.intercept_
        self.n_iter_ = self.lender_.n_iter_


class HeteroLogisticRegression(FederatedClassifierMixin, ClassifierMixin, _HeteroLR):
    """Vertical logistic regression (``objective=None`` means ``binary:logistic``), two classes.

    ``coef_`` / ``intercept_`` are the lender's own weights, on its standardised
    features; the platform's weights stay at the platform. ``multi:softprob`` is not in
    the protocol (:data:`fedacq.learn.hetero_lr_objectives.REFUSED` says why).
    """

    _default_objective = "binary:logistic"


class HeteroLinearRegression(FederatedRegressorMixin, RegressorMixin, _HeteroLR):
    """Vertical generalised linear regression: ``reg:squarederror`` (default), ``count:poisson``, ``reg:tweedie``."""

    _default_objective = "reg:squarederror"
