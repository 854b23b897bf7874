"""The split neural network as a scikit-learn classifier: :class:`SplitNNClassifier`.

The lender's side of :mod:`fedacq.learn.splitnn` (the protocol, its noise, what each party
learns), with the parameters of :class:`~fedacq.learn.splitnn.SplitNNLender`
(``MLPClassifier``'s names where they exist) plus ``peer``; row alignment and the peer
are described in :mod:`fedacq.learn.estimator_base`. torch (the ``nn`` extra) is imported
only when a model is built, so this module imports without it.

``init_seed`` seeds this party's initial weights; ``None`` draws it from the OS CSPRNG at
each fit (the platform never learns it), so two fits differ unless it is set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sklearn.base import ClassifierMixin

from fedacq.learn.estimator_base import FederatedClassifierMixin, FederatedEstimator


class SplitNNClassifier(FederatedClassifierMixin, ClassifierMixin, FederatedEstimator):
    """Vertical split neural network, binary labels; ``predict_proba`` (n, 2)."""

    _model = "splitnn"

    def __init__(self, *, hidden_layer_sizes: tuple[int, ...] = (32,), embedding_dim: int = 8,
                 top_layer_sizes: tuple[int, ...] = (16,), categorical_features: str | None = "auto",
                 max_categories: int = 16, fm_embedding_dim: int = 4, batch_size: int = 256, max_iter: int = 20,
                 learning_rate_init: float = 1e-3, alpha: float = 0.0, early_stopping: bool = True,
                 tol: float = 1e-4, n_iter_no_change: int = 3, embedding_clip: float | None = None,
                 embedding_noise: float = 0.02, gradient_clip: float | None = 0.1, gradient_noise: float = 2.0,
                 random_state: int = 0, init_seed: int | None = None, peer: Any = None) -> None:
        self.hidden_layer_sizes = hidden_layer_sizes
        self.embedding_dim = embedding_dim
        self.top_layer_sizes = top_layer_sizes
        self.categorical_features = categorical_features
        self.max_categories = max_categories
        self.fm_embedding_dim = fm_embedding_dim
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.early_stopping = early_stopping
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.embedding_clip = embedding_clip
        self.embedding_noise = embedding_noise
        self.gradient_clip = gradient_clip
        self.gradient_noise = gradient_noise
        self.random_state = random_state
        self.init_seed = init_seed
        self.peer = peer

    def _role(self) -> Any:
        from fedacq.learn.splitnn import SplitNNLender

        params = self.get_params(deep=False)
        del params["peer"]
        for key in ("hidden_layer_sizes", "top_layer_sizes"):
            if isinstance(params[key], tuple):
                params[key] = list(params[key])
        return SplitNNLender(**params)

    @staticmethod
    def _load_role(directory: Path) -> Any:
        from fedacq.learn.splitnn import SplitNNLender

        return SplitNNLender.load(directory)

    def _objective(self) -> Any:
        from fedacq.learn import objectives

        return objectives.get("binary:logistic")  # the split NN's one objective

    def _from_role(self) -> None:
        self.n_iter_ = self.lender_.n_iter_
