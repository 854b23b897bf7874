"""What every fedacq scikit-learn estimator shares: the peer, row alignment, the request protocol, files.

The estimators (:mod:`fedacq.learn.secureboost_estimator`, :mod:`fedacq.learn.hetero_lr_estimator`,
:mod:`fedacq.learn.splitnn_estimator`) are the lender's side of a federated model, shaped as
scikit-learn estimators (the contract XGBoost's ``XGBClassifier`` follows): every parameter is an
``__init__`` argument stored as given and validated in ``fit``; the platform is one of them,
``peer``, so ``sklearn.base.clone``, ``Pipeline`` and ``GridSearchCV`` handle the estimator
like any other. The protocol role classes (``SecureBoostLender`` ...) stay what they are,
endpoints that take a link on every call; an estimator builds one per ``fit``.

The peer
    Anything with ``run(lender_side)``: it connects to the platform, calls
    ``lender_side(link)`` with a fresh :class:`~fedacq.link.link.Link` while the
    platform serves the other end, and returns its result.
    :class:`fedacq.learn.local_peer.LocalPlatform` runs the platform's side in a
    thread of this process; :class:`fedacq.learn.local_peer.GrpcPlatform` reaches a
    platform on another premise over mutual TLS. A peer is a *handle* to a party:
    copying it (``clone`` deep-copies parameters) gives a handle to the same party.

Row alignment (why X is indexed by the joint user id)
    The platform holds its features for the users both parties share, keyed by the
    joint user id (the PSI intersection's id, an integer both sides hold). The
    lender's ``X`` is a pandas DataFrame indexed by the same id, a *named* index
    (``X.set_index("user_id")``). Every request names its rows by those ids, and
    the platform takes its rows by them, in the lender's order. This is what
    survives GridSearchCV and cross-validation: scikit-learn subsets a DataFrame
    with ``.iloc`` and keeps its index, so each fold's rows still name their users.
    A numpy ``X``, or a DataFrame whose index has no name (pandas' own row
    numbering, most likely an id column never made the index), carries no ids:
    it is read as *all* the platform's rows in the platform's order, and refused
    when its length differs (a subset cannot be aligned). A platform with no
    features (``LocalPlatform()``) accepts any rows.

What the platform learns from a request
    The model kind, the action (fit or predict), and the ids of the rows of the
    request: which of the shared users are in this fit's training / validation
    rows, or are scored. It already knows the intersection; the split is what
    ``fedacq run`` shares too. Never a label, a lender feature or a score.

scikit-learn's estimator checks (``tests/test_estimators_checks.py``)
    Against a platform without features every check passes (the split NN's but two
    that expect two fits to agree: its platform's initial weights and gradient noise
    come from the OS CSPRNG, by design). Against a
    platform holding features, the checks that fit cannot pass: they generate numpy
    ``X`` of their own sizes with no joint user ids, which nothing can align with the
    platform's users, so the platform refuses them ("cannot be aligned"). They are the
    test's expected failures (``NEED_ALIGNMENT`` there), not skips.

Request protocol (one round trip before the model's own protocol)
    ``est.request`` L->P: model, action, the platform's model id (predict),
    whether rows are positional, the row ids (and validation row ids).
    ``est.accept`` P->L: the model id (fit: a new one from the platform) — then
    the model's protocol runs on the same link — or ``est.refuse`` P->L: why
    (an unknown model or id, a row the platform does not hold), and nothing else
    happens.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted, validate_data

from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, PartSpec, register

#: model kinds a platform can serve (local_peer._role_class maps each to its platform role class)
MODELS = ("secureboost", "hetero_lr", "splitnn")
ACTIONS = ("fit", "predict")
#: the platform's model ids: lowercase hex (never a path; checked on receipt)
MODEL_ID = re.compile(r"[0-9a-f]{8,64}")
#: the estimator's file beside the role's own model files
ESTIMATOR_FILE = "estimator.json"
ESTIMATOR_FORMAT = "fedacq.estimator/1"

register(
    MessageSpec("est.request", header={"model": str, "action": str, "model_id": str, "positional": bool},
                parts={"rows": PartSpec(dtypes=("int64",), ndim=1),
                       "eval_rows": PartSpec(dtypes=("int64",), ndim=1, optional=True)}),
    MessageSpec("est.accept", header={"model_id": str}),
    MessageSpec("est.refuse", header={"reason": str}),
)


class PeerRefused(ValueError):
    """The platform refused a request (its reason is the message)."""


def request(link: Link, model: str, action: str, rows: "Rows", eval_rows: "Rows | None" = None,
            model_id: str = "") -> str:
    """The lender's half of the request round trip; returns the platform's model id."""
    parts = {"rows": rows.ids}
    if eval_rows is not None:
        if eval_rows.positional != rows.positional:
            raise ValueError("eval_set: X and the eval_set's X must both be DataFrames indexed by the joint "
                             "user id, or both numpy arrays")
        parts["eval_rows"] = eval_rows.ids
    link.send(Message("est.request", {"model": model, "action": action, "model_id": model_id,
                                      "positional": rows.positional}, parts, step=f"{model}/{action}"))
    reply = link.recv(["est.accept", "est.refuse"])
    if reply.type == "est.refuse":
        raise PeerRefused(f"the platform refused to {action} {model}: {reply.header['reason']}")
    got = reply.header["model_id"]
    if not MODEL_ID.fullmatch(got) or (model_id and got != model_id):
        raise ValueError(f"est.accept: model id {got[:80]!r} is not {'the one asked for' if model_id else 'hex'}")
    return got


class Rows:
    """The ids of a request's rows (see "Row alignment" above).

    A DataFrame whose index has a name (``set_index('user_id')`` gives it one) names its
    rows by that index, the joint user id. Anything else, numpy or a DataFrame with an
    unnamed index (pandas' row numbering), is positional: rows 0..n-1 of the platform.
    """

    def __init__(self, X: Any, n: int) -> None:
        index = getattr(X, "index", None)
        self.positional = index is None or not hasattr(X, "columns") or index.name is None
        if self.positional:
            self.ids = np.arange(n, dtype=np.int64)
            return
        check_joint_index(index, "X")
        self.ids = np.asarray(index, dtype=np.int64)


def check_joint_index(index: Any, what: str) -> None:
    """Refuse an index that cannot be the joint user id (ValueError saying how to set it)."""
    if index.dtype.kind not in "iu":
        raise ValueError(f"{what} must be indexed by the joint user id as integers (the PSI intersection's id), "
                         f"got an index {index.name!r} of dtype {index.dtype}")
    if not index.is_unique:
        raise ValueError(f"{what}'s index (the joint user id) holds duplicates: each row must name one user")


def eval_pair(eval_set: Any) -> tuple[Any, Any] | None:
    """XGBoost's ``eval_set`` (a list of (X, y)) as the one validation pair the protocols take."""
    if eval_set is None or len(eval_set) == 0:
        return None
    if len(eval_set) != 1 or len(eval_set[0]) != 2:
        raise ValueError("eval_set must be a list of one (X, y) pair: the federated protocols evaluate one "
                         "validation set per fit (train metrics are reported beside it)")
    return eval_set[0]


class FederatedEstimator(BaseEstimator):
    """The lender's side of a federated model as a scikit-learn estimator (see the module docstring)."""

    #: the model kind the platform serves (MODELS)
    _model: str = ""
    #: NaN allowed in the lender's features (trees route missing values)
    _allow_nan: bool = False

    # -- what each model defines ----------------------------------------------------
    def _role(self) -> Any:
        """A lender role object built from the parameters (its constructor validates them)."""
        raise NotImplementedError

    @staticmethod
    def _load_role(directory: Path) -> Any:
        raise NotImplementedError

    def _min_features(self) -> int:
        return 1

    def _from_role(self) -> None:
        """Fitted attributes read from the role (after fit and load_model)."""

    def _objective(self) -> Any:
        """The fitted role's :class:`fedacq.learn.objectives.Objective` (its metric names)."""
        from fedacq.learn import objectives

        role = self.lender_
        return objectives.get(role.objective, tweedie_variance_power=role.tweedie_variance_power,
                              num_class=getattr(role, "num_class", None))

    # -- shared machinery -------------------------------------------------------------
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = self._allow_nan
        return tags

    def _check_peer(self) -> Any:
        if self.peer is None:
            raise ValueError(f"{type(self).__name__}: peer is None: pass peer=fedacq.LocalPlatform(platform_features) "
                             "to run the platform on this machine, or peer=fedacq.GrpcPlatform(...) for a remote one")
        if not callable(getattr(self.peer, "run", None)):
            raise TypeError(f"{type(self).__name__}: peer must have run(lender_side) (LocalPlatform, GrpcPlatform), "
                            f"got {type(self.peer).__name__}")
        return self.peer

    def _features(self, X: Any, reset: bool) -> tuple[np.ndarray, Rows]:
        """The lender's feature matrix (validated) and the rows' ids."""
        Xv = validate_data(self, X, reset=reset, dtype=np.float64,
                           ensure_all_finite="allow-nan" if self._allow_nan else True,
                           ensure_min_features=self._min_features())
        return Xv, Rows(X, Xv.shape[0])

    def _fit_role(self, X: Any, y: Any, eval_set: Any, labels: Callable[[Any], np.ndarray],
                  y_eval: Callable[[Any], np.ndarray]) -> None:
        """Validate, build the role, fit it with the peer; set the fitted attributes.

        ``labels(y)`` validates and encodes the training labels (a classifier sets ``classes_``),
        ``y_eval`` the validation labels.
        """
        peer = self._check_peer()
        Xl, rows = self._features(X, reset=True)
        y = labels(y)
        if len(y) != len(Xl):
            raise ValueError(f"X has {len(Xl)} rows, y {len(y)}")
        role = self._role()
        pair = eval_pair(eval_set)
        ev, ev_rows = None, None
        if pair is not None:
            Xe, ev_rows = self._features(pair[0], reset=False)
            ev = (Xe, y_eval(pair[1]))

        def lender_side(link: Link) -> str:
            model_id = request(link, self._model, "fit", rows, ev_rows)
            role.fit(link, Xl, y, eval_set=ev)
            return model_id

        self.model_id_ = peer.run(lender_side)
        self.lender_ = role
        self._set_results(role.history_, getattr(role, "best_iteration_", None))
        self._from_role()

    def _set_results(self, history: list[dict], best_iteration: int | None) -> None:
        """XGBoost's ``evals_result_`` (validation metrics per iteration, XGBoost's metric names) and
        ``best_iteration_``."""
        from fedacq.learn.metrics import metric_key

        obj = self._objective()
        # history keys write XGBoost's "@" as "_" (metrics.metric_key): name them as XGBoost does
        names = {metric_key("valid", m): m for m in obj.metrics}
        valid: dict[str, list[float]] = {}
        for h in history:
            for k, v in h.items():
                if k.startswith("valid_"):
                    valid.setdefault(names.get(k, k[len("valid_"):]), []).append(float(v))
        self.evals_result_ = {"validation_0": valid} if valid else {}
        if best_iteration is not None:
            self.best_iteration_ = int(best_iteration)

    def _ask(self, X: Any, method: str) -> np.ndarray:
        """``method`` of the lender role on the rows of ``X``, the platform answering its part."""
        check_is_fitted(self, "lender_")
        peer = self._check_peer()
        Xl, rows = self._features(X, reset=False)
        role = self.lender_

        def lender_side(link: Link) -> np.ndarray:
            request(link, self._model, "predict", rows, model_id=self.model_id_)
            return getattr(role, method)(link, Xl)

        return np.asarray(peer.run(lender_side), dtype=np.float64)

    # -- files --------------------------------------------------------------------------
    def _extra_state(self) -> dict[str, Any]:
        """Fitted attributes beyond the role's own files (classes_ for classifiers)."""
        return {}

    def _set_extra_state(self, doc: dict[str, Any]) -> None:
        pass

    def save_model(self, directory: str | Path) -> Path:
        """The lender's model part (the role's files) and this estimator's state, in ``directory``.

        The platform saves its own part where it runs (``LocalPlatform.save_model(model_id_, ...)``
        or its server's); ``model_id_`` ties the two. ``peer`` is not saved: it is a connection.
        """
        check_is_fitted(self, "lender_")
        path = Path(directory)
        self.lender_.save(path)
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "peer"}
        doc = {"format": ESTIMATOR_FORMAT, "estimator": type(self).__name__, "params": params,
               "model_id": self.model_id_, "n_features_in": int(self.n_features_in_),
               "feature_names_in": (list(map(str, self.feature_names_in_))
                                    if hasattr(self, "feature_names_in_") else None),
               "evals_result": self.evals_result_, "best_iteration": getattr(self, "best_iteration_", None),
               **self._extra_state()}
        out = path / ESTIMATOR_FILE
        out.write_text(json.dumps(doc, sort_keys=True, allow_nan=False))
        return out

    def load_model(self, directory: str | Path) -> "FederatedEstimator":
        """Read what :meth:`save_model` wrote: parameters (but ``peer``) and fitted state."""
        path = Path(directory)
        doc = json.loads((path / ESTIMATOR_FILE).read_text())
        if doc.get("format") != ESTIMATOR_FORMAT or doc.get("estimator") != type(self).__name__:
            raise ValueError(f"{path / ESTIMATOR_FILE}: not a saved {type(self).__name__}")
        if not MODEL_ID.fullmatch(str(doc["model_id"])):
            raise ValueError(f"{path / ESTIMATOR_FILE}: model_id is not a platform model id")
        current = self.get_params(deep=False)
        # JSON has no tuples: a tuple parameter (layer sizes) comes back as one
        self.set_params(**{k: tuple(v) if isinstance(current.get(k), tuple) and isinstance(v, list) else v
                           for k, v in doc["params"].items()})
        self.lender_ = self._load_role(path)
        self.model_id_ = doc["model_id"]
        self.n_features_in_ = int(doc["n_features_in"])
        if doc["feature_names_in"] is not None:
            self.feature_names_in_ = np.asarray(doc["feature_names_in"], dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.evals_result_ = doc["evals_result"]
        if doc["best_iteration"] is not None:
            self.best_iteration_ = int(doc["best_iteration"])
        self._set_extra_state(doc)
        self._from_role()
        return self


class FederatedClassifierMixin:
    """Label encoding, ``fit`` and XGBoost's probability shapes for the classifiers."""

    #: the most classes the model's protocol trains
    _max_classes = 2

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = self._max_classes > 2
        return tags

    def fit(self, X: Any, y: Any, eval_set: list[tuple[Any, Any]] | None = None) -> Any:
        """Train with the platform (``peer``) on the rows of ``X``; ``eval_set``: ``[(X_valid, y_valid)]``.

        ``X``: a pandas DataFrame indexed by the joint user id (see :mod:`fedacq.learn.estimator_base`).
        """
        self._fit_role(X, y, eval_set, self._encode, self._encode_eval)
        return self

    def _encode(self, y: Any) -> np.ndarray:
        from sklearn.utils.multiclass import check_classification_targets
        from sklearn.utils.validation import column_or_1d

        y = column_or_1d(y, warn=True)
        check_classification_targets(y)
        self.classes_, enc = np.unique(y, return_inverse=True)
        k = len(self.classes_)
        if k < 2:
            raise ValueError(f"y holds {k} class(es): a classifier needs at least 2 classes")
        if k > self._max_classes == 2:
            raise ValueError(f"Only binary classification is supported (y holds {k} classes): "
                             f"{type(self).__name__}'s protocol trains one margin per row")
        if k > self._max_classes:
            raise ValueError(f"y holds {k} classes; {type(self).__name__} trains at most {self._max_classes}")
        return enc.astype(np.float64)

    def _encode_eval(self, y: Any) -> np.ndarray:
        from sklearn.utils.validation import column_or_1d

        y = column_or_1d(y)
        pos = np.clip(np.searchsorted(self.classes_, y), 0, len(self.classes_) - 1)
        if not np.all(self.classes_[pos] == y):
            raise ValueError("eval_set: y holds a class absent from the training labels")
        return pos.astype(np.float64)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, (n, 2) for two classes, (n, K) for K: XGBClassifier's shapes."""
        p = self._ask(X, "predict_proba")
        if p.ndim == 1:
            return np.column_stack([1.0 - p, p])
        return p

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class, as a label of ``classes_``."""
        proba = self.predict_proba(X)  # first: it raises NotFittedError before classes_ is needed
        return self.classes_[np.argmax(proba, axis=1)]

    def _extra_state(self) -> dict[str, Any]:
        return {"classes": self.classes_.tolist()}

    def _set_extra_state(self, doc: dict[str, Any]) -> None:
        self.classes_ = np.asarray(doc["classes"])


class FederatedRegressorMixin:
    """``fit`` and ``predict`` for the regressors."""

    #: the lender role's method giving the objective's prediction
    _predict_method = "predict"

    def fit(self, X: Any, y: Any, eval_set: list[tuple[Any, Any]] | None = None) -> Any:
        """Train with the platform (``peer``) on the rows of ``X``; ``eval_set``: ``[(X_valid, y_valid)]``.

        ``X``: a pandas DataFrame indexed by the joint user id (see :mod:`fedacq.learn.estimator_base`).
        """
        self._fit_role(X, y, eval_set, self._labels, self._labels)
        return self

    @staticmethod
    def _labels(y: Any) -> np.ndarray:
        from sklearn.utils.validation import column_or_1d

        return column_or_1d(y, warn=True).astype(np.float64)

    def predict(self, X: Any) -> np.ndarray:
        """The objective's prediction for each row of ``X`` (the mean: identity or exp of the margin)."""
        return self._ask(X, self._predict_method)
