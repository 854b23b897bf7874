"""SecureBoost as scikit-learn estimators: :class:`SecureBoostClassifier`, :class:`SecureBoostRegressor`.

The lender's side, shaped like XGBoost's ``XGBClassifier`` / ``XGBRegressor`` (the
same parameter names and defaults as :class:`~fedacq.learn.secureboost.SecureBoostLender`,
which does the work, plus ``peer``); the platform's side is a
:class:`~fedacq.learn.local_peer.PlatformPeer`. Row alignment, what the platform
learns from a request, and the peer are described in :mod:`fedacq.learn.estimator_base`;
the protocol and what each party learns from it in :mod:`fedacq.learn.secureboost`.

Example (the platform on this machine)::

    clf = SecureBoostClassifier(n_estimators=20, max_depth=3, peer=LocalPlatform(platform_df))
    clf.fit(lender_df, y)          # lender_df indexed by the joint user id
    clf.predict_proba(lender_df)   # (n, 2)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin, RegressorMixin

from fedacq.learn.estimator_base import FederatedClassifierMixin, FederatedEstimator


class _SecureBoost(FederatedEstimator):
    _model = "secureboost"
    _allow_nan = True  # missing values take each split's learned default direction

    def __init__(self, *, n_estimators: int = 30, max_depth: int = 3, learning_rate: float = 0.3,
                 reg_lambda: float = 1.0, reg_alpha: float = 0.0, gamma: float = 0.0,
                 min_child_weight: float = 1.0, max_bin: int = 32, subsample: float = 1.0,
                 colsample_bytree: float = 1.0, objective: str | None = None, base_score: float | None = None,
                 early_stopping_rounds: int | None = None, mode: str = "joint", key_bits: int = 2048,
                 insecure_test_key: bool = False, leaf_noise: dict | None = None, random_state: int = 0,
                 n_jobs: int | None = None, peer: Any = None) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.gamma = gamma
        self.min_child_weight = min_child_weight
        self.max_bin = max_bin
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.objective = objective
        self.base_score = base_score
        self.early_stopping_rounds = early_stopping_rounds
        self.mode = mode
        self.key_bits = key_bits
        self.insecure_test_key = insecure_test_key
        self.leaf_noise = leaf_noise
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.peer = peer

    #: the objective when ``objective=None``
    _default_objective = ""

    def _role_params(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        del params["peer"]
        params["objective"] = params["objective"] or self._default_objective
        return params

    def _role(self, n_classes: int) -> Any:
        from fedacq.learn.secureboost import SecureBoostLender

        return SecureBoostLender(**self._role_params())

    @staticmethod
    def _load_role(directory: Path) -> Any:
        from fedacq.learn.secureboost import SecureBoostLender

        return SecureBoostLender.load(directory)

    def _min_features(self) -> int:
        # prospect mode: the trees split on the platform's features only; the lender may bring labels alone
        return 0 if self.mode == "prospect" else 1


class SecureBoostClassifier(FederatedClassifierMixin, ClassifierMixin, _SecureBoost):
    """Vertical XGBoost classifier: the lender's labels, both parties' features (see the module docstring).

    ``objective=None`` means ``binary:logistic``. ``predict_proba`` returns (n, 2).
    """

    _default_objective = "binary:logistic"

    def fit(self, X: Any, y: Any, eval_set: list[tuple[Any, Any]] | None = None) -> "SecureBoostClassifier":
        """Train with the platform (``peer``) on the rows of ``X``; ``eval_set``: ``[(X_valid, y_valid)]``."""
        y_enc, k = self._encode(y)
        if k > 2:
            raise ValueError(f"y holds {k} classes; SecureBoostClassifier trains binary:logistic (two classes)")
        self._fit_role(X, y_enc, eval_set, self._encode_eval, k)
        return self


class SecureBoostRegressor(RegressorMixin, _SecureBoost):
    """Vertical XGBoost regressor (``objective=None`` means ``reg:squarederror``)."""

    _default_objective = "reg:squarederror"

    def fit(self, X: Any, y: Any, eval_set: list[tuple[Any, Any]] | None = None) -> "SecureBoostRegressor":
        """Train with the platform (``peer``) on the rows of ``X``; ``eval_set``: ``[(X_valid, y_valid)]``."""
        from sklearn.utils.validation import column_or_1d

        def labels(v: Any) -> np.ndarray:
            return column_or_1d(v, warn=True).astype(np.float64)

        self._fit_role(X, labels(y), eval_set, labels, 0)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """The objective's prediction for each row of ``X``."""
        return self._ask(X, "predict_proba")
