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

from sklearn.base import ClassifierMixin, RegressorMixin

from fedacq.learn import objectives
from fedacq.learn import secureboost_params as sb_params
from fedacq.learn.estimator_base import FederatedClassifierMixin, FederatedEstimator, FederatedRegressorMixin


#: the defaults, declared once (:mod:`fedacq.learn.secureboost_params`)
_D = {**sb_params.TRAIN, **sb_params.JOB, **sb_params.LOCAL}


class _SecureBoost(FederatedEstimator):
    _model = "secureboost"
    _allow_nan = True  # missing values take each split's learned default direction

    def __init__(self, *, n_estimators: int = _D["n_estimators"], max_depth: int = _D["max_depth"],
                 learning_rate: float = _D["learning_rate"], reg_lambda: float = _D["reg_lambda"],
                 reg_alpha: float = _D["reg_alpha"], gamma: float = _D["gamma"],
                 min_child_weight: float = _D["min_child_weight"], max_delta_step: float | None = _D["max_delta_step"],
                 max_bin: int = _D["max_bin"], subsample: float = _D["subsample"],
                 colsample_bytree: float = _D["colsample_bytree"], objective: str | None = None,
                 tweedie_variance_power: float = _D["tweedie_variance_power"],
                 base_score: float | None = _D["base_score"],
                 early_stopping_rounds: int | None = _D["early_stopping_rounds"],
                 leaf_noise: dict | None = _D["leaf_noise"], top_rate: float | None = _D["top_rate"],
                 other_rate: float | None = _D["other_rate"], mode: str = _D["mode"], scheme: str = _D["scheme"],
                 key_bits: int = _D["key_bits"],
                 random_state: int = _D["random_state"], insecure_test_key: bool = _D["insecure_test_key"],
                 n_jobs: int | None = _D["n_jobs"], peer: Any = None) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.reg_lambda = reg_lambda
        self.reg_alpha = reg_alpha
        self.gamma = gamma
        self.min_child_weight = min_child_weight
        self.max_delta_step = max_delta_step
        self.max_bin = max_bin
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.objective = objective
        self.tweedie_variance_power = tweedie_variance_power
        self.base_score = base_score
        self.early_stopping_rounds = early_stopping_rounds
        self.leaf_noise = leaf_noise
        self.top_rate = top_rate
        self.other_rate = other_rate
        self.mode = mode
        self.scheme = scheme
        self.key_bits = key_bits
        self.random_state = random_state
        self.insecure_test_key = insecure_test_key
        self.n_jobs = n_jobs
        self.peer = peer

    #: the objective when ``objective=None``
    _default_objective = ""

    def _role_params(self) -> dict[str, Any]:
        params = self.get_params(deep=False)
        del params["peer"]
        params["objective"] = params["objective"] or self._default_objective
        return params

    def _role(self) -> Any:
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

    As XGBClassifier: ``objective=None`` means ``binary:logistic`` for two classes and
    ``multi:softprob`` (with ``num_class`` the number of classes) for more;
    ``predict_proba`` returns (n, 2) or (n, K).
    """

    _default_objective = "binary:logistic"
    _max_classes = objectives.MAX_NUM_CLASS

    def _role_params(self) -> dict[str, Any]:
        params = super()._role_params()
        k = len(self.classes_)
        if k > 2 or params["objective"] == "multi:softprob":
            params["objective"], params["num_class"] = "multi:softprob", k
        return params


class SecureBoostRegressor(FederatedRegressorMixin, RegressorMixin, _SecureBoost):
    """Vertical XGBoost regressor: ``objective=None`` means ``reg:squarederror``; also ``reg:tweedie``
    (``tweedie_variance_power``) and ``count:poisson``. ``predict`` is the objective's mean."""

    _default_objective = "reg:squarederror"
