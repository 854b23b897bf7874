"""Vertical SecureBoost: XGBoost-exact trees on Paillier-encrypted gradients.

The lender (active party) holds the labels and the Paillier private key; the
platform (passive party) holds features. Rows are the PSI intersection, in the
same order on both sides. Every step below is one message over a
:class:`~fedacq.link.link.Link` (sans-I/O: this module never opens a socket).

Steps
    1. ``sb.hello`` L->P: training parameters, the public key, the packing
       layout (bit widths only), row counts. The platform refuses a key under
       its own ``min_key_bits`` and a mode other than the one its node agreed
       to, whatever the lender says. ``sb.hello_reply`` P->L: the
       platform's row counts and its number of bins per feature.
    2. Both parties bin their own features locally (XGBoost ``hist`` cuts,
       :mod:`fedacq.learn.binning`).
    3. Per tree: ``sb.tree`` L->P: one packed ciphertext of (g, h, 1) per row
       (:mod:`fedacq.learn.histogram`; rows left out by ``subsample`` encrypt 0)
       and the mask of the platform's features sampled for the tree. The
       platform answers ``sb.hist`` with the compressed cumulative encrypted
       histograms of the root.
    4. Per tree level, ONE round trip. ``sb.split`` L->P: the decision for every
       node of the level: leaf, lender split (with the left/right bit of each of
       the node's rows) or platform split (feature index, bin index, default
       direction). ``sb.hist`` P->L: the left/right bit of each row of the
       platform's split nodes, and, for each split, the encrypted histograms
       of the child with fewer rows only, built from rows, cumulative and
       compressed, listed in ``nodes``. Both parties know every node's rows, so
       the lender knows which children to expect and refuses any other list
       or count; it derives each sibling's sums as parent - child on the
       decrypted integer sums (exact), so it decrypts half the histograms.
       The platform keeps the sibling's encrypted histogram (by homomorphic
       subtraction) only if it splits it again. When the tree is complete the
       reply instead carries the platform's decisions for the validation rows.
    5. The lender computes leaf values itself (it knows every node's rows and
       gradients). ``sb.finish`` L->P: the number of trees kept (early
       stopping); in prospect mode also the leaf values (optionally noised
       with Laplace or Gaussian noise from the OS CSPRNG,
       :mod:`fedacq.crypto.dp_noise`: the shared ``random_state`` drives only
       row and column sampling, so the platform cannot regenerate the noise)
       and the base margin(s), so the platform holds a complete model.
    Inference (joint mode): ``sb.predict`` L->P (row count), ``sb.predict_bits``
    P->L: for each platform split node, the direction of every row.

Objectives are XGBoost's (:mod:`fedacq.learn.objectives`): the lender computes
the float32 gradients, the intercept and the metrics exactly as XGBoost 3.2
``hist``; the protocol only ever sees one ``(g, h)`` pair per row and tree. For
``multi:softprob`` every boosting round grows ``num_class`` trees in a row
(tree ``t`` serves class ``t % num_class``, XGBoost's ``tree_info``), all from
the gradients at the start of the round; the platform checks ``num_class``
against what it agreed to before it sizes anything by it.

What each party learns
    Lender: its own data; per node, the sums of gradients/hessians/row counts
    per platform (feature, bin) — from which it picks splits; the instance
    space (which rows go left) of every split, including the platform's; the
    number of bins of each platform feature. Never the platform's thresholds
    or feature values.
    Platform: ciphertexts only, never a plaintext gradient, hessian or label;
    the instance space of every node (as in SecureBoost: it must route rows to
    build histograms); which of its (feature, bin) won each split, and where
    the lender split instead (not on what). In prospect mode, at the end, the
    leaf values (noised if ``leaf_noise``) and the base score: without noise
    each leaf value is an exact equation in the labels of its rows, which the
    platform knows (``protocols/secureboost.md``, *What an adversarial peer
    can still learn*).

Joint mode splits on both parties' features; prospect mode only on the
platform's, so the platform's model scores users the lender has never seen.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fedacq.crypto import dp_noise
from fedacq.crypto.paillier import MIN_KEY_BITS
from fedacq.learn import objectives
from fedacq.learn import secureboost_params as sb_params
from fedacq.learn.binning import MISSING, QuantileBinner
from fedacq.learn.early_stopping import EarlyStopping
from fedacq.learn.histogram import GradientCodec, HistogramEngine, PackingLayout, n_compressed
from fedacq.learn.metrics import metric_key
from fedacq.learn.tree import FeatureHistogram, SplitParams, Tree, best_split, calc_weight, is_valid, route
from fedacq.link.link import Link
from fedacq.link.message import BigInts, Message, MessageSpec, PartSpec, register

MODES = ("joint", "prospect")

# node decisions in sb.split
LEAF, LENDER_SPLIT, PLATFORM_SPLIT = 0, 1, 2

register(
    MessageSpec("sb.hello", header={"config": str}),
    MessageSpec("sb.hello_reply", header={"n_rows": int, "n_eval_rows": int},
                parts={"n_bins": PartSpec(dtypes=("int32",), ndim=1)}),
    # sample (GOSS only): the rows whose ciphertexts follow, in row order
    MessageSpec("sb.tree", header={"tree": int},
                parts={"gradients": PartSpec(kind="bigints"),
                       "features": PartSpec(dtypes=("bool",), ndim=1),
                       "sample": PartSpec(dtypes=("bool",), ndim=1, optional=True)}),
    MessageSpec("sb.split", header={"tree": int, "depth": int, "build": bool},
                parts={"nodes": PartSpec(dtypes=("int32",), ndim=1),
                       "kind": PartSpec(dtypes=("int8",), ndim=1),
                       "feature": PartSpec(dtypes=("int32",), ndim=1),
                       "bin": PartSpec(dtypes=("int32",), ndim=1),
                       "default_left": PartSpec(dtypes=("bool",), ndim=1),
                       "lender_left": PartSpec(dtypes=("bool",), ndim=1)}),
    # nodes: the nodes whose histograms follow (the root, then per split the child built from rows)
    MessageSpec("sb.hist", header={"tree": int, "depth": int},
                parts={"nodes": PartSpec(dtypes=("int32",), ndim=1),
                       "histograms": PartSpec(kind="bigints"),
                       "block_features": PartSpec(dtypes=("int32",), ndim=1),
                       "platform_left": PartSpec(dtypes=("bool",), ndim=1),
                       "eval_left": PartSpec(dtypes=("bool",), ndim=2, optional=True)}),
    # n_trees: every tree kept (num_class per round for multi:softprob; tree t serves class t % num_class);
    # prospect mode: the leaf values tree after tree, and one base margin per class
    MessageSpec("sb.finish", header={"n_trees": int},
                parts={"leaf_values": PartSpec(dtypes=("float64",), ndim=1, optional=True),
                       "base_margin": PartSpec(dtypes=("float64",), ndim=1, optional=True)}),
    MessageSpec("sb.predict", header={"n_rows": int}),
    MessageSpec("sb.predict_bits", header={"n_rows": int},
                parts={"left": PartSpec(dtypes=("bool",), ndim=2)}),
)


def _rows_of(row_node: np.ndarray, nodes: list[int]) -> np.ndarray:
    """Rows (ascending) whose current node is in ``nodes``."""
    if not nodes:
        return np.zeros(0, dtype=np.int64)
    return np.nonzero(np.isin(row_node, nodes))[0]


def _built_child(tree: Tree, row_node: np.ndarray, parent: int) -> tuple[int, int]:
    """(child built from rows, child derived by subtraction) of a split: the one with fewer rows is built.

    Both parties know every node's rows, so both compute the same answer: the
    platform builds and sends the first, the lender derives the second's sums.
    ``row_node``: the current node of every row histograms are built from (with
    GOSS, of the tree's sample only).
    """
    lc, rc = tree.left[parent], tree.right[parent]
    nl, nr = int(np.sum(row_node == lc)), int(np.sum(row_node == rc))
    return (lc, rc) if nl <= nr else (rc, lc)


def check_goss(top_rate: Any, other_rate: Any) -> None:
    """Refuse GOSS rates LightGBM would refuse: both set, each in (0, 1), together at most 1."""
    for name, v in (("top_rate", top_rate), ("other_rate", other_rate)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
            raise ValueError(f"{name} must be a number in (0, 1) (GOSS needs both top_rate and other_rate), got {v!r}")
    if top_rate + other_rate > 1:
        raise ValueError(f"top_rate + other_rate must be at most 1, got {top_rate} + {other_rate}")


def goss_sizes(n: int, top_rate: float, other_rate: float) -> tuple[int, int]:
    """(rows kept by largest |g|, rows drawn from the rest) of an ``n``-row tree, LightGBM's way.

    Both parties compute it from the announced rates, so the platform can check
    every sample's size; too few rows for one random row is an error.
    """
    top_k, other_k = max(1, int(n * top_rate)), int(n * other_rate)
    if other_k < 1 or top_k + other_k > n:
        raise ValueError(f"GOSS: {n} rows are too few for top_rate {top_rate} and other_rate {other_rate}")
    return top_k, other_k


def goss_sample(g: np.ndarray, top_rate: float, other_rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Gradient-based one-side sampling (LightGBM's GOSS) of one tree: (sampled rows, sorted; row weights).

    The ``top_k`` rows of largest ``|g|`` are kept with weight 1; ``other_k`` of the
    others are drawn uniformly, from the OS CSPRNG (never from ``random_state``,
    which the platform holds), with weight ``(n - top_k) / other_k``, about
    ``(1 - top_rate) / other_rate``, so their ``g`` and ``h`` sums estimate the rest's
    (LightGBM's ``multiply``); every other row weighs 0. The paper ranks by
    ``|g|``, as here; LightGBM's code ranks by ``|g h|``. Not XGBoost-exact: the
    trees are those of the sampled, reweighted gradients.

    Privacy: the platform receives the sample, so it learns which rows have the
    largest ``|g|``. For ``binary:logistic`` the first tree's ``|g|`` takes two values
    (``p0`` for a negative, ``1 - p0`` for a positive), so its top set is the
    minority class: **the platform learns those labels** (all of them when the
    minority share is below ``top_rate``). This is why a lender's node must opt in
    (``[policy] secureboost_goss``); ``protocols/secureboost.md`` says more.
    """
    import secrets

    n = len(g)
    top_k, other_k = goss_sizes(n, top_rate, other_rate)
    order = np.argsort(-np.abs(np.asarray(g, dtype=np.float64)), kind="stable")
    rest = order[top_k:]
    drawn = rest[secrets.SystemRandom().sample(range(len(rest)), other_k)]
    weight = np.zeros(n, dtype=np.float32)
    weight[order[:top_k]] = 1
    weight[drawn] = np.float32((n - top_k) / other_k)
    return np.sort(np.concatenate([order[:top_k], drawn])), weight


def _objective_of(params: dict[str, Any]) -> objectives.Objective:
    """The objective named in a parameter set, with its own XGBoost parameters."""
    return objectives.get(params.get("objective"), tweedie_variance_power=params.get("tweedie_variance_power"),
                          max_delta_step=params.get("max_delta_step"), num_class=params.get("num_class"))


def _start_margin(base_margin: np.ndarray, n: int) -> np.ndarray:
    """Every row's margin before the first tree: (n,) for one output, (n, num_class) for multi-class."""
    base = np.asarray(base_margin, dtype=np.float32)
    if len(base) == 1:
        return np.full(n, base[0], dtype=np.float32)
    return np.tile(base, (n, 1))


def _add_tree(margin: np.ndarray, tree_index: int, values: np.ndarray) -> None:
    """Add one tree's per-row values to the margins of its class (tree ``t`` serves class ``t % num_class``)."""
    if margin.ndim == 1:
        margin[:] = (margin + values).astype(np.float32)
    else:
        k = tree_index % margin.shape[1]
        margin[:, k] = (margin[:, k] + values).astype(np.float32)


def features(X: Any) -> np.ndarray:
    """A party's feature matrix as float32 or float64, without a copy when it already is one.

    Bins and split decisions read every column as float32 (XGBoost's own input type), so a
    float32 matrix is used as it comes: a float64 copy of 1M x 300 features would cost 2.4 GB.
    """
    X = np.asarray(X)
    return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)


class SecureBoostLender:
    """The active party: labels, private key, split decisions and leaf values.

    Parameters are :mod:`fedacq.learn.secureboost_params` (XGBoost's names);
    they are checked when :meth:`fit` starts. ``callback(round, metrics)`` is
    called after every boosting round; ``checkpoints`` (node jobs) saves and
    resumes after every round.

    Labels may hold NaN: such a row weighs 0 (XGBoost with sample weight 0: its
    gradient and hessian are 0, it still gets a ciphertext, so the platform
    cannot tell it apart) and is left out of the intercept and the metrics. It
    still counts in the quantile cuts (XGBoost would leave it out of a weighted
    sketch): the platform cuts its bins from every row, since it must not learn
    which ones are labelled.
    """

    def __init__(self, n_estimators: int = 30, max_depth: int = 3, learning_rate: float = 0.3,
                 reg_lambda: float = 1.0, reg_alpha: float = 0.0, gamma: float = 0.0,
                 min_child_weight: float = 1.0, max_delta_step: float | None = None, max_bin: int = 32,
                 subsample: float = 1.0, colsample_bytree: float = 1.0, objective: str = "binary:logistic",
                 tweedie_variance_power: float = 1.5, num_class: int | None = None,
                 base_score: float | list[float] | None = None, early_stopping_rounds: int | None = None,
                 leaf_noise: dict | None = None, top_rate: float | None = None, other_rate: float | None = None,
                 mode: str = "joint", scheme: str = "paillier", key_bits: int = 2048,
                 random_state: int = 0, insecure_test_key: bool = False, n_jobs: int | None = None,
                 callback: Callable[[int, dict], Any] | None = None, checkpoints: Any = None) -> None:
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
        self.num_class = num_class
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
        self.callback = callback
        #: a :class:`fedacq.learn.run.RunCheckpoints` (node jobs): save after each round, resume
        self.checkpoints = checkpoints
        self.trees_: list[Tree] = []
        self.history_: list[dict[str, float]] = []
        self.timings_: dict[str, float] = {}
        #: the names of this party's feature columns, when its caller knows them (saved with the model,
        #: so a job continuing it can check it gets the same columns)
        self.feature_names_: list[str] | None = None

    def _check_params(self) -> objectives.Objective:
        """The parameters' errors, before any work; returns the objective."""
        obj = _objective_of(self.get_params())
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.n_estimators < 1 or self.max_depth < 1:
            raise ValueError("n_estimators and max_depth must be >= 1")
        if not 0 < self.subsample <= 1 or not 0 < self.colsample_bytree <= 1:
            raise ValueError("subsample and colsample_bytree must be in (0, 1]")
        if self.max_delta_step is not None and not 0 <= self.max_delta_step < math.inf:
            raise ValueError(f"max_delta_step must be a finite number >= 0, got {self.max_delta_step!r}")
        if self.leaf_noise is not None:
            _check_noise(self.leaf_noise, obj, self.reg_lambda, self.mode)
        if (self.top_rate, self.other_rate) != (None, None):
            check_goss(self.top_rate, self.other_rate)
            if self.subsample < 1:
                raise ValueError("top_rate/other_rate (GOSS) sample the rows already: leave subsample at 1")
        return obj

    @property
    def split_params(self) -> SplitParams:
        # XGBoost's learner gives the trees the objective's max_delta_step too (0.7 for count:poisson), else 0
        mds = self.max_delta_step
        if mds is None:
            mds = _objective_of(self.get_params()).max_delta_step
        return SplitParams(self.reg_lambda, self.reg_alpha, self.gamma, self.min_child_weight,
                           self.learning_rate, float(mds))

    def get_params(self) -> dict[str, Any]:
        """The parameters ``sb.hello`` announces and the saved model records (:data:`secureboost_params.WIRE`)."""
        return {k: getattr(self, k) for k in sb_params.WIRE}

    # -- training --------------------------------------------------------------
    def fit(self, link: Link, X: np.ndarray, y: np.ndarray,
            eval_set: tuple[np.ndarray, np.ndarray] | None = None,
            xgb_model: "SecureBoostLender | None" = None) -> "SecureBoostLender":
        """Train with the platform on the other end of ``link`` (rows aligned on both sides).

        ``xgb_model``: a fitted lender model part to add ``n_estimators`` rounds to
        (XGBoost's ``xgb_model``); the platform continues its own part of the same model
        (:meth:`SecureBoostPlatform.fit`). See :meth:`_live_margins` for how it starts.
        """
        from fedacq.crypto import scheme
        from fedacq.learn.randomness import RandomnessAhead

        self.objective_ = self._check_params()
        if xgb_model is not None:
            self._check_live(xgb_model, np.asarray(X).shape[1])
        resumed = self.checkpoints.latest("tree") if self.checkpoints is not None else None
        if resumed is None:
            pk, sk = scheme.generate_keypair(self.scheme, self.key_bits, insecure_test_key=self.insecure_test_key)
        else:  # the key pair of the first attempt, from this party's own checkpoint
            sk = scheme.private_key_from_json(self.scheme, resumed[1]["private_key"])
            pk = sk.public_key
            if pk.n_bits != self.key_bits:
                raise ValueError(f"tree checkpoint: a {pk.n_bits}-bit key, the job's is {self.key_bits} bits")
        self.public_key_, self._private_key = pk, sk
        # the first tree's encryption randomness is computed while binning and the handshake run
        n = int(np.asarray(X).shape[0])
        ahead = RandomnessAhead(pk, n if self.top_rate is None else sum(goss_sizes(n, self.top_rate, self.other_rate)),
                                self.n_jobs)  # GOSS: only each tree's sample is encrypted
        try:
            return self._fit(link, X, y, eval_set, ahead, resumed, xgb_model)
        finally:
            ahead.close()

    def _check_live(self, live: "SecureBoostLender", n_features: int) -> None:
        """Refuse a live model this job cannot continue: another mode, objective or feature count."""
        mine = (self.mode, self.objective_.name, self.objective_.params)
        theirs = (live.mode, live.objective_.name, live.objective_.params)
        if mine != theirs:
            raise ValueError(f"xgb_model: the live model is (mode, objective, objective parameters) {theirs}, "
                             f"this job trains {mine}")
        if live.n_features_in_ != n_features:
            raise ValueError(f"xgb_model: the live model has {live.n_features_in_} lender features, the data "
                             f"{n_features}")
        if len(live.trees_) % self.objective_.n_groups:
            raise ValueError(f"xgb_model: {len(live.trees_)} trees is not a whole number of rounds")

    def _live_margins(self, live: "SecureBoostLender", link: Link, X: np.ndarray,
                      eval_set: tuple[np.ndarray, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray | None]:
        """The live model's margins on the training and validation rows: where its trees leave them.

        Continuing a model is XGBoost's ``xgb_model``: the new trees start from the
        live model's margin on each training row (its base margin plus its trees; with
        an ``xgboost.DMatrix`` XGBoost starts from exactly these float32 margins) and
        keep its intercept. The platform's splits of the live trees are the platform's,
        so the margins come from the joint prediction protocol (``sb.predict``): the
        platform answers which branch each of its live splits sends every row, as it
        does for every prediction at the end of a job - nothing new crosses.
        """
        margin = live.decision_function(link, X)
        margin_v = None if eval_set is None else live.decision_function(link, eval_set[0])
        return margin, margin_v

    def _labels(self, y: Any, n: int, what: str) -> tuple[np.ndarray, np.ndarray]:
        """(labels as float32 with 0 where missing, mask of labelled rows), after the objective's check."""
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (n,):
            raise ValueError(f"{what} must have shape ({n},), got {y.shape}")
        if np.isinf(y).any():
            raise ValueError(f"{what} hold infinite values")
        labelled = ~np.isnan(y)
        if not labelled.any():
            raise ValueError(f"{what}: no row has a label")
        out = np.zeros(n, dtype=np.float32)
        out[labelled] = self.objective_.check_labels(y[labelled])
        return out, labelled

    def _metrics(self, prefix: str, margin: np.ndarray, y: np.ndarray, labelled: np.ndarray) -> dict[str, float]:
        return {metric_key(prefix, name): v
                for name, v in self.objective_.evaluate(margin[labelled], y[labelled]).items()}

    def _fit(self, link: Link, X: np.ndarray, y: np.ndarray,
             eval_set: tuple[np.ndarray, np.ndarray] | None, ahead,
             resumed: tuple[int, dict, dict] | None, live: "SecureBoostLender | None") -> "SecureBoostLender":
        pk, sk = self.public_key_, self._private_key
        obj = self.objective_
        X = features(X)
        if X.ndim != 2:
            raise ValueError(f"lender features must be a 2-D array, got shape {X.shape}")
        n = X.shape[0]
        y, labelled = self._labels(y, n, "labels")
        live_margins = None if live is None else self._live_margins(live, link, X, eval_set)
        t_start = time.perf_counter()
        timings = {"encrypt": 0.0, "wait": 0.0, "decrypt": 0.0, "split": 0.0}
        layout = PackingLayout.for_rows(n)
        if layout.entry_bits > pk.plaintext_bits:
            raise ValueError(f"secureboost: {n} rows need {layout.entry_bits} plaintext bits; the {pk.scheme} key "
                             f"has {pk.plaintext_bits}")
        codec = GradientCodec(layout)
        n_eval = 0 if eval_set is None else len(eval_set[1])
        K = obj.n_groups
        first_tree = 0 if resumed is None else resumed[0] + 1
        config = {"params": self.get_params(), "public_key": pk.to_json(), "layout": layout.to_header(),
                  "n_rows": n, "n_eval_rows": n_eval, "first_tree": first_tree,
                  "live_trees": 0 if live is None else len(live.trees_)}
        link.send(Message("sb.hello", {"config": json.dumps(config)}, step="hello"))
        reply = link.recv("sb.hello_reply")
        if reply.header["n_rows"] != n or reply.header["n_eval_rows"] != n_eval:
            raise ValueError(f"row counts differ: lender has {n} training / {n_eval} validation rows, "
                             f"platform {reply.header['n_rows']} / {reply.header['n_eval_rows']}")
        n_bins_p = reply.parts["n_bins"].astype(np.int64)
        if np.any(n_bins_p < 0) or np.any(n_bins_p > self.max_bin + 1):  # XGBoost may add a cut above the max
            raise ValueError("sb.hello_reply: platform bin counts outside [0, max_bin + 1]")
        d_p = len(n_bins_p)
        if live is not None and d_p != live.n_platform_features_:
            raise ValueError(f"xgb_model: the live model has {live.n_platform_features_} platform features, "
                             f"the platform now has {d_p}")
        self.n_platform_features_ = d_p

        own = self.mode == "joint"
        self.binner_ = QuantileBinner(self.max_bin).fit(X if own else X[:, :0])
        bins_l = self.binner_.transform(X if own else X[:, :0])
        self.n_features_in_ = X.shape[1]
        if live is None:
            self.base_margin_ = obj.base_margin(y[labelled], self.base_score)
            margin = _start_margin(self.base_margin_, n)
        else:  # XGBoost keeps a live model's intercept
            self.base_margin_ = live.base_margin_
            margin = live_margins[0]
        Xv = yv = labelled_v = margin_v = None
        if eval_set is not None:
            Xv = np.asarray(eval_set[0], dtype=np.float64)
            if Xv.shape != (n_eval, X.shape[1]):
                raise ValueError(f"eval_set features must have shape ({n_eval}, {X.shape[1]}), got {Xv.shape}")
            yv, labelled_v = self._labels(eval_set[1], n_eval, "eval_set labels")
            margin_v = _start_margin(self.base_margin_, n_eval) if live is None else live_margins[1]
        rng = np.random.default_rng(self.random_state)
        self.trees_, self.history_ = [], []
        stopper = EarlyStopping(self.early_stopping_rounds)
        watch = eval_set is not None and bool(self.early_stopping_rounds)
        if resumed is not None:
            margin, margin_v, stopper = self._restore(resumed, rng, margin, margin_v)
        grow = _TreeGrower(self, link, codec, pk, sk, ahead, bins_l, n_bins_p, d_p, timings,
                           n_trees=self.n_estimators * K)
        from tqdm import tqdm

        first_round = first_tree // K
        for r in tqdm(range(first_round, self.n_estimators if not stopper.stopped else first_round),
                      desc="secureboost", unit="round", leave=False, disable=None, initial=first_round,
                      total=self.n_estimators):
            g_all, h_all = obj.gradients(margin, y)  # every class's trees of a round start from the same margins
            g_all = np.where(labelled.reshape((n,) + (1,) * (g_all.ndim - 1)), g_all, np.float32(0))
            h_all = np.where(labelled.reshape((n,) + (1,) * (h_all.ndim - 1)), h_all, np.float32(0))
            for k in range(K):
                t = r * K + k
                g = g_all if K == 1 else np.ascontiguousarray(g_all[:, k])
                h = h_all if K == 1 else np.ascontiguousarray(h_all[:, k])
                tree, row_node, eval_left = grow(t, g, h, labelled, rng)
                values = np.array(tree.value, dtype=np.float32)
                _add_tree(margin, t, values[row_node])
                self.trees_.append(tree)
                if eval_set is not None:
                    _add_tree(margin_v, t, values[self._route_eval(tree, Xv, eval_left, n_eval)])
            metrics = self._metrics("train", margin, y, labelled)
            if eval_set is not None:
                metrics.update(self._metrics("valid", margin_v, yv, labelled_v))
            metrics["tree"] = r  # the boosting round (XGBoost's iteration)
            metrics["seconds"] = time.perf_counter() - t_start
            self.history_.append(metrics)
            if self.callback is not None:
                self.callback(r, metrics)
            stop = watch and stopper.update(r, metrics[metric_key("valid", obj.stop_metric)])
            if self.checkpoints is not None:
                self.checkpoints.save("tree", len(self.trees_) - 1, {
                    "trees": [tr.to_dict() for tr in self.trees_], "history": self.history_,
                    "rng": rng.bit_generator.state, "early_stopping": stopper.state(),
                    "private_key": sk.to_json()},
                    {"margin": margin} if margin_v is None else {"margin": margin, "margin_valid": margin_v})
            if stop:
                break
        if watch:
            self.best_iteration_ = stopper.best_iteration
            self.trees_ = self.trees_[:(stopper.best_iteration + 1) * K]
        self._send_finish(link)
        if live is not None:  # the continued model: the live trees, then this job's (XGBoost's order)
            self.trees_ = live.trees_ + self.trees_
            if watch:
                self.best_iteration_ += len(live.trees_) // K
        timings["total"] = time.perf_counter() - t_start
        self.timings_ = timings
        return self

    def _restore(self, resumed: tuple[int, dict, dict], rng: np.random.Generator, margin: np.ndarray,
                 margin_v: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, EarlyStopping]:
        """The training state after tree ``resumed[0]`` (the last of a round), from this party's own checkpoint.

        The trees, the margins of every row, the sampling generator's state and
        the early-stopping state are exactly those of the uninterrupted run, so
        the trees that follow are too (the key pair is the checkpoint's; fresh
        encryption randomness does not change a decrypted sum).
        """
        index, meta, arrays = resumed
        self.trees_ = [Tree.from_dict(d) for d in meta["trees"]]
        self.history_ = [dict(h) for h in meta["history"]]
        got = np.asarray(arrays["margin"])
        got_v = arrays.get("margin_valid")
        if len(self.trees_) != index + 1 or (index + 1) % self.objective_.n_groups or \
                got.shape != margin.shape or got.dtype != np.float32 or \
                (margin_v is not None) != (got_v is not None) or \
                (got_v is not None and got_v.shape != margin_v.shape):
            raise ValueError(f"tree checkpoint {index}: does not fit this job ({len(self.trees_)} trees, "
                             f"margins {got.shape} for {margin.shape})")
        rng.bit_generator.state = meta["rng"]
        return got, got_v, EarlyStopping.from_state(meta["early_stopping"])


    def _sample_features(self, rng: np.random.Generator, d_l: int, d_p: int) -> np.ndarray:
        """Global feature mask of one tree (lender features first; prospect: platform only)."""
        d = d_l + d_p
        if d == 0:
            raise ValueError("no features to split on (the platform sent none)")
        if self.colsample_bytree >= 1:
            return np.ones(d, dtype=bool)
        k = max(1, int(self.colsample_bytree * d))
        mask = np.zeros(d, dtype=bool)
        mask[rng.choice(d, size=k, replace=False)] = True
        return mask

    @staticmethod
    def _own_hists(rows: np.ndarray, bins: np.ndarray, n_bins: np.ndarray, active: list[int],
                   g: np.ndarray, h: np.ndarray, cnt: np.ndarray) -> list[FeatureHistogram]:
        out = []
        gr, hr, cr = g[rows], h[rows], cnt[rows]
        for f in active:
            b = bins[rows, f].astype(np.int64)
            ok = b != MISSING
            nb = int(n_bins[f])
            gs = np.bincount(b[ok], weights=gr[ok], minlength=nb)
            hs = np.bincount(b[ok], weights=hr[ok], minlength=nb)
            cs = np.bincount(b[ok], weights=cr[ok], minlength=nb)
            out.append(FeatureHistogram(f, np.cumsum(gs), np.cumsum(hs), np.cumsum(cs).astype(np.int64)))
        return out

    def _received_entries(self, msg: Message, nodes: list[int], active_p: list[int], n_bins_p: np.ndarray,
                          codec: GradientCodec, sk, pk, decompress, timings: dict) -> dict[int, list[int]]:
        """Decrypt a level's compressed histograms: per node, the packed cumulative bin sums (integers).

        The message must name exactly ``nodes`` (what this party expects from
        the row counts it knows) and carry exactly their ciphertexts. The
        platform compresses each of its feature blocks separately: block ``i``
        holds the next ``block_features[i]`` active features, node-major.
        Entries come back per node in ``active_p`` order.
        """
        sent = msg.parts["nodes"].tolist()
        if sent != nodes:
            raise ValueError(f"sb.hist: histograms of nodes {sent}, expected {nodes}")
        blocks = msg.parts["block_features"].tolist()
        if sum(blocks) != len(active_p) or min(blocks, default=0) < 0:
            raise ValueError(f"sb.hist: feature blocks {blocks} do not cover {len(active_p)} active features")
        vec = pk.vector_from_bigints(msg.parts["histograms"])
        groups, start = [], 0
        for k in blocks:
            width = int(sum(n_bins_p[f] for f in active_p[start:start + k]))
            start += k
            count = len(nodes) * width
            n_ct = n_compressed(count, codec.layout.entry_bits, pk.plaintext_bits + 1) if count else 0
            groups.append((width, count, n_ct))
        if len(vec) != sum(g[2] for g in groups):
            raise ValueError(f"sb.hist: {len(vec)} compressed ciphertexts, expected {sum(g[2] for g in groups)}")
        t0 = time.perf_counter()
        plain = sk.decrypt_raw(vec, workers=self.n_jobs) if len(vec) else []
        timings["decrypt"] += time.perf_counter() - t0
        out: dict[int, list[int]] = {node: [] for node in nodes}
        pos = 0
        for width, count, n_ct in groups:
            entries = decompress(plain[pos:pos + n_ct], codec.layout.entry_bits, count, pk) if count else []
            pos += n_ct
            for i, node in enumerate(nodes):
                out[node].extend(entries[i * width:(i + 1) * width])
        return out

    @staticmethod
    def _sibling_entries(parent: list[int], child: list[int]) -> list[int]:
        """A sibling's packed sums, parent - child on the integers (exact: packed sums add slot by slot).

        Subset sums are never negative, so a negative difference can only come
        from histograms that are not the platform's honest ones.
        """
        out = [p - c for p, c in zip(parent, child)]
        if len(parent) != len(child) or min(out, default=0) < 0:
            raise ValueError("sb.hist: a built child's histogram exceeds its parent's")
        return out

    @staticmethod
    def _feature_hists(entries: list[int], active_p: list[int], n_bins_p: np.ndarray, d_l: int,
                       codec: GradientCodec) -> list[FeatureHistogram]:
        """One node's packed cumulative sums as the platform features' histograms."""
        G, H, C = codec.decode(entries)
        out, at = [], 0
        for f in active_p:
            nb = int(n_bins_p[f])
            out.append(FeatureHistogram(d_l + f, G[at:at + nb], H[at:at + nb], C[at:at + nb]))
            at += nb
        return out

    def _route_eval(self, tree: Tree, Xv: np.ndarray, eval_left: np.ndarray | None, n_eval: int) -> np.ndarray:
        pnodes = [i for i in range(tree.n_nodes) if tree.party[i] == 1]
        decisions = {}
        if pnodes:
            if eval_left is None or eval_left.shape != (n_eval, len(pnodes)):
                raise ValueError("sb.hist: platform decisions for the validation rows are missing or mis-shaped")
            decisions = {nid: eval_left[:, j] for j, nid in enumerate(pnodes)}
        return route(tree, Xv if self.mode == "joint" else Xv[:, :0], decisions, owner=0)

    def _send_finish(self, link: Link) -> None:
        header: dict[str, Any] = {"n_trees": len(self.trees_)}
        parts: dict[str, np.ndarray] = {}
        if self.mode == "prospect":
            values = np.concatenate([np.array([tr.value[i] for i in tr.leaves()], dtype=np.float64)
                                     for tr in self.trees_])
            if self.leaf_noise is not None:
                values = values + _leaf_noise(self.leaf_noise, self.learning_rate, self.reg_lambda,
                                              len(self.trees_), len(values))
            self.released_leaf_values_ = values
            parts["leaf_values"] = values
            parts["base_margin"] = np.asarray(self.base_margin_, dtype=np.float64)
        link.send(Message("sb.finish", header, parts, step="finish"))

    # -- inference -------------------------------------------------------------
    def decision_function(self, link: Link, X: np.ndarray) -> np.ndarray:
        """Federated margins for rows the platform holds in the same order: (n,), or (n, num_class)."""
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            raise ValueError(f"lender features must have {self.n_features_in_} columns, got shape {X.shape}")
        n = X.shape[0]
        link.send(Message("sb.predict", {"n_rows": n}, step="predict"))
        msg = link.recv("sb.predict_bits")
        bits = msg.parts["left"]
        pnodes = [(t, i) for t, tr in enumerate(self.trees_) for i in range(tr.n_nodes) if tr.party[i] == 1]
        if bits.shape != (n, len(pnodes)):
            raise ValueError(f"sb.predict_bits: shape {bits.shape}, expected {(n, len(pnodes))}")
        col = {key: j for j, key in enumerate(pnodes)}
        margin = _start_margin(self.base_margin_, n)
        Xown = X if self.mode == "joint" else X[:, :0]
        for t, tr in enumerate(self.trees_):
            decisions = {i: bits[:, col[(t, i)]] for i in range(tr.n_nodes) if tr.party[i] == 1}
            leaf = route(tr, Xown, decisions, owner=0)
            _add_tree(margin, t, np.array(tr.value, dtype=np.float32)[leaf])
        return margin

    def predict(self, link: Link, X: np.ndarray) -> np.ndarray:
        """The objective's prediction, as XGBoost's ``Booster.predict``: P(1), the value or mean, or (n, num_class)."""
        return self.objective_.transform(self.decision_function(link, X)).astype(np.float64)

    def predict_proba(self, link: Link, X: np.ndarray) -> np.ndarray:
        """Classifiers only: P(1) for binary:logistic (n,), class probabilities (n, num_class) for multi:softprob."""
        if self.objective_.name not in ("binary:logistic", "multi:softprob"):
            raise ValueError(f"predict_proba is for classifiers; {self.objective_.name} predicts values: use predict")
        return self.predict(link, X)

    def save(self, directory: str | Path) -> Path:
        """The lender's model part as JSON: structure, its own thresholds, all leaf values."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        doc = {"format": "fedacq.secureboost.lender/1", "params": self.get_params(),
               "base_margin": [float(v) for v in self.base_margin_], "n_features": self.n_features_in_,
               "n_platform_features": self.n_platform_features_, "feature_names": self.feature_names_,
               "binner": self.binner_.to_dict(), "trees": [t.to_dict() for t in self.trees_],
               # the model, not the timing: the file is the same whenever the same data and seed train it
               "history": [{k: v for k, v in h.items() if k != "seconds"} for h in self.history_]}
        out = path / "secureboost_lender.json"
        out.write_text(json.dumps(doc, allow_nan=False, sort_keys=True))
        return out

    @classmethod
    def load(cls, directory: str | Path) -> "SecureBoostLender":
        """A lender model part written by :meth:`save`, ready for federated prediction."""
        path = Path(directory) / "secureboost_lender.json"
        doc = json.loads(path.read_text())
        if doc.get("format") != "fedacq.secureboost.lender/1":
            raise ValueError(f"{path}: not a fedacq SecureBoost lender model")
        model = cls(**{k: v for k, v in doc["params"].items() if k in sb_params.WIRE})
        model.objective_ = model._check_params()
        model.base_margin_ = np.atleast_1d(np.asarray(doc["base_margin"], dtype=np.float32))
        if len(model.base_margin_) != model.objective_.n_groups:
            raise ValueError(f"{path}: {len(model.base_margin_)} base margins for {model.objective_.name}")
        model.n_features_in_ = int(doc["n_features"])
        model.n_platform_features_ = int(doc["n_platform_features"])
        model.feature_names_ = doc.get("feature_names")
        model.binner_ = QuantileBinner.from_dict(doc["binner"])
        model.trees_ = [Tree.from_dict(t) for t in doc["trees"]]
        model.history_ = list(doc.get("history", []))
        return model


class _TreeGrower:
    """The lender's side of one tree (steps 3 to 5 of the module docstring), for gradients ``g``, ``h``."""

    def __init__(self, lender: SecureBoostLender, link: Link, codec: GradientCodec, pk, sk, ahead,
                 bins_l: np.ndarray, n_bins_p: np.ndarray, d_p: int, timings: dict, n_trees: int) -> None:
        self.lender, self.link, self.codec, self.pk, self.sk, self.ahead = lender, link, codec, pk, sk, ahead
        self.bins_l, self.n_bins_l, self.n_bins_p, self.d_p = bins_l, lender.binner_.n_bins, n_bins_p, d_p
        self.timings, self.n_trees = timings, n_trees

    def __call__(self, t: int, g: np.ndarray, h: np.ndarray, labelled: np.ndarray,
                 rng: np.random.Generator) -> tuple[Tree, np.ndarray, np.ndarray | None]:
        """Grow tree ``t``; returns it, each training row's leaf, and the platform's validation-row decisions."""
        from fedacq.crypto.paillier import decompress

        lender, link, codec, pk, sk, timings = self.lender, self.link, self.codec, self.pk, self.sk, self.timings
        bins_l, n_bins_l, n_bins_p, d_p = self.bins_l, self.n_bins_l, self.n_bins_p, self.d_p
        d_l = bins_l.shape[1]
        n = len(g)
        p = lender.split_params
        in_sample = (rng.random(n) < lender.subsample) if lender.subsample < 1 else np.ones(n, dtype=bool)
        sample = None  # GOSS: the rows the platform builds histograms from (sorted), else every row
        if lender.top_rate is not None:
            sample, weight = goss_sample(g, lender.top_rate, lender.other_rate)
            g, h = (g * weight).astype(np.float32), (h * weight).astype(np.float32)
            in_sample = weight > 0
        in_sample &= labelled
        g = np.where(in_sample, g, np.float32(0))
        h = np.where(in_sample, h, np.float32(0))
        active = lender._sample_features(rng, d_l, d_p)
        active_l = [f for f in range(d_l) if active[f]]
        active_p = [f for f in range(d_p) if active[d_l + f]]
        platform_mask = np.array(active[d_l:], dtype=bool)

        t0 = time.perf_counter()
        sent = slice(None) if sample is None else sample
        plain = codec.encode(g[sent], h[sent], in_sample[sent])
        factors = self.ahead.take(more=t + 1 < self.n_trees)  # the next tree's start computing now
        cts = self.ahead.encrypt(plain, factors)
        timings["encrypt"] += time.perf_counter() - t0
        parts = {"gradients": BigInts(cts, pk.ciphertext_bytes), "features": platform_mask}
        if sample is not None:
            parts["sample"] = np.isin(np.arange(n), sample)
        link.send(Message("sb.tree", {"tree": t}, parts, step=f"tree{t}"))
        g64, h64 = g.astype(np.float64), h.astype(np.float64)
        cnt = in_sample.astype(np.int64)
        tree = Tree()
        row_node = np.zeros(n, dtype=np.int32)
        level = [0]
        t0 = time.perf_counter()
        msg = link.recv("sb.hist")
        timings["wait"] += time.perf_counter() - t0
        entries = lender._received_entries(msg, level, active_p, n_bins_p, codec, sk, pk, decompress, timings)
        depth = 0
        while True:
            t0 = time.perf_counter()
            kinds, feats, bins_, defaults, lender_rows, lender_bits = [], [], [], [], [], []
            children: list[int] = []
            for node in level:
                rows = np.nonzero(row_node == node)[0]
                G, H, C = g64[rows].sum(), h64[rows].sum(), int(cnt[rows].sum())
                hists = lender._own_hists(rows, bins_l, n_bins_l, active_l, g64, h64, cnt) + \
                    lender._feature_hists(entries[node], active_p, n_bins_p, d_l, codec)
                cand = best_split(G, H, C, hists, p)
                if not is_valid(cand, p):
                    kinds.append(LEAF), feats.append(-1), bins_.append(-1), defaults.append(False)
                    continue
                if cand.feature < d_l:
                    f = cand.feature
                    thr = lender.binner_.threshold(f, cand.bin)
                    kids = tree.split(node, 0, f, cand.bin, cand.default_left, thr, cand.loss_chg)
                    kinds.append(LENDER_SPLIT), feats.append(-1), bins_.append(-1), defaults.append(False)
                    b = bins_l[rows, f]
                    go_left = np.where(b == MISSING, cand.default_left, b <= cand.bin)
                    lender_rows.append(rows)
                    lender_bits.append(go_left)
                else:
                    f = cand.feature - d_l
                    kids = tree.split(node, 1, f, cand.bin, cand.default_left, float("nan"), cand.loss_chg)
                    kinds.append(PLATFORM_SPLIT), feats.append(f), bins_.append(cand.bin)
                    defaults.append(cand.default_left)
                tree.hess[kids[0]], tree.hess[kids[1]] = cand.left_h, cand.right_h
                children.extend(kids)
            timings["split"] += time.perf_counter() - t0
            build = bool(children) and depth + 1 < lender.max_depth
            if lender_rows:
                order = np.argsort(np.concatenate(lender_rows), kind="stable")
                lrows = np.concatenate(lender_rows)[order]
                lbits = np.concatenate(lender_bits)[order].astype(bool)
            else:
                lrows, lbits = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)
            link.send(Message("sb.split", {"tree": t, "depth": depth, "build": build}, {
                "nodes": np.array(level, dtype=np.int32), "kind": np.array(kinds, dtype=np.int8),
                "feature": np.array(feats, dtype=np.int32), "bin": np.array(bins_, dtype=np.int32),
                "default_left": np.array(defaults, dtype=bool), "lender_left": lbits},
                step=f"tree{t}/depth{depth}"))
            t0 = time.perf_counter()
            msg = link.recv("sb.hist")
            timings["wait"] += time.perf_counter() - t0
            split_nodes = [nd for nd, k in zip(level, kinds) if k == PLATFORM_SPLIT]
            prows = _rows_of(row_node, split_nodes)
            pbits = msg.parts["platform_left"]
            if len(pbits) != len(prows):
                raise ValueError(f"sb.hist: {len(pbits)} platform directions for {len(prows)} rows")
            new_node = row_node.copy()
            for rows_, bits in ((lrows, lbits), (prows, pbits)):
                cur = row_node[rows_]
                lefts = np.array(tree.left, dtype=np.int32)[cur]
                rights = np.array(tree.right, dtype=np.int32)[cur]
                new_node[rows_] = np.where(bits, lefts, rights)
            row_node = new_node
            if not build:
                if len(msg.parts["nodes"]) or len(msg.parts["histograms"]):
                    raise ValueError("sb.hist: histograms after the tree's last level")
                eval_left = msg.parts.get("eval_left")
                break
            # the platform sends the child it built from rows; the sibling is parent - child, here
            sampled = row_node if sample is None else row_node[sample]
            pairs = [(nd, *_built_child(tree, sampled, nd)) for nd, k in zip(level, kinds) if k != LEAF]
            got = lender._received_entries(msg, sorted(built for _, built, _ in pairs), active_p, n_bins_p,
                                           codec, sk, pk, decompress, timings)
            new_entries = {}
            for parent, built, derived in pairs:
                new_entries[built] = got[built]
                new_entries[derived] = lender._sibling_entries(entries[parent], got[built])
            entries = new_entries
            level = children
            depth += 1
        for leaf in tree.leaves():
            rows = np.nonzero(row_node == leaf)[0]
            w = calc_weight(g64[rows].sum(), h64[rows].sum(), p)
            tree.value[leaf] = float(np.float32(w * lender.learning_rate))
            tree.hess[leaf] = float(h64[rows].sum())
        return tree, row_node, eval_left


class SecureBoostPlatform:
    """The passive party: features, encrypted histograms, its own thresholds.

    ``min_key_bits``, ``schemes``, ``mode``, ``objective`` and ``num_class`` are
    this party's own decisions (its node's policy and the job it agreed to): an
    ``sb.hello`` with a shorter key, a key of a scheme not in ``schemes`` (the key
    is parsed only as the scheme announced), another mode, objective or class
    count is refused, whatever it claims. ``None`` accepts any value (for direct
    use of the class; a node always passes what its job says). Whatever was agreed,
    the lender's objective parameters must be valid ones (``num_class`` at most
    :data:`fedacq.learn.objectives.MAX_NUM_CLASS`, since it sizes this party's
    prediction arrays).
    """

    def __init__(self, n_jobs: int | None = None, min_key_bits: int = MIN_KEY_BITS,
                 schemes: tuple[str, ...] = ("paillier",), mode: str | None = None, objective: str | None = None,
                 num_class: int | None = None, goss: tuple[float | None, float | None] | None = None,
                 checkpoints: Any = None, on_tree: Callable[[int], Any] | None = None) -> None:
        if mode is not None and mode not in MODES:
            raise ValueError(f"mode must be one of {MODES} or None, got {mode!r}")
        if objective is not None and objective not in objectives.OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(objectives.OBJECTIVES)} or None, got {objective!r}")
        self.n_jobs = n_jobs
        self.min_key_bits = int(min_key_bits)
        self.schemes = tuple(schemes)
        self.agreed_mode = mode
        self.agreed_objective = objective
        self.agreed_num_class = num_class
        #: (top_rate, other_rate) agreed, (None, None) for no GOSS; None accepts what sb.hello announces
        self.agreed_goss = None if goss is None else tuple(goss)
        #: a :class:`fedacq.learn.run.RunCheckpoints` (node jobs): its trees after each tree, resume
        self.checkpoints = checkpoints
        self.on_tree = on_tree
        self.trees_: list[Tree] = []
        self.timings_: dict[str, float] = {}
        #: this party's feature column names, when its caller knows them (saved with the model part)
        self.feature_names_: list[str] | None = None
        self.live_: SecureBoostPlatform | None = None

    def fit(self, link: Link, X: np.ndarray, eval_X: np.ndarray | None = None,
            xgb_model: "SecureBoostPlatform | None" = None) -> "SecureBoostPlatform":
        """Serve one training job; ``xgb_model``: this party's part of the live model the job continues.

        Continuing (XGBoost's ``xgb_model``), this party first answers the lender's
        ``sb.predict`` for the training rows, then the validation rows, with its live
        part (the lender's starting margins; :meth:`SecureBoostLender._live_margins`),
        then trains exactly as from scratch, checking that the lender continues a model
        of as many trees as its own (``sb.hello``) and keeps its intercept (``sb.finish``).
        Its live part must have the mode, objective and class count this party agreed to.
        """
        from fedacq import compute
        from fedacq.crypto.scheme import peer_public_key

        X = features(X)
        if X.ndim != 2:
            raise ValueError(f"platform features must be a 2-D array, got shape {X.shape}")
        self.live_ = xgb_model
        if xgb_model is not None:
            self._check_live(xgb_model, X.shape[1])
            xgb_model.serve_predict(link, X)
            if eval_X is not None:
                xgb_model.serve_predict(link, eval_X)
        hello = link.recv("sb.hello")
        try:
            config = json.loads(hello.header["config"])
            params = config["params"]
            if not isinstance(params, dict):
                raise TypeError("params is not an object")
            public_key = config["public_key"]
            layout = PackingLayout(**config["layout"])
            n_rows, n_eval = int(config["n_rows"]), int(config["n_eval_rows"])
            first_tree = config.get("first_tree", 0)
            live_trees = config.get("live_trees", 0)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"sb.hello: malformed config: {exc}") from exc
        pk = peer_public_key(public_key, scheme=params.get("scheme", "paillier"), allowed=self.schemes,
                             min_bits=self.min_key_bits, key_bits=params.get("key_bits"), what="sb.hello")
        mode = params.get("mode")
        if mode not in MODES:
            raise ValueError(f"sb.hello: unknown mode {mode!r}; known: {', '.join(MODES)}")
        if self.agreed_mode is not None and mode != self.agreed_mode:
            raise ValueError(f"sb.hello: the lender asks for mode {mode!r}; this party agreed to "
                             f"{self.agreed_mode!r}")
        try:
            obj = _objective_of(params)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"sb.hello: {exc}") from exc
        if self.agreed_objective is not None and obj.name != self.agreed_objective:
            raise ValueError(f"sb.hello: the lender asks for objective {obj.name!r}; this party agreed to "
                             f"{self.agreed_objective!r}")
        if self.agreed_num_class is not None and obj.num_class != self.agreed_num_class:
            raise ValueError(f"sb.hello: the lender asks for num_class {obj.num_class}; this party agreed to "
                             f"{self.agreed_num_class}")
        n_estimators = params.get("n_estimators")
        if isinstance(n_estimators, bool) or not isinstance(n_estimators, int) or n_estimators < 1:
            raise ValueError(f"sb.hello: n_estimators must be a positive integer, got {n_estimators!r}")
        held = 0 if self.live_ is None else len(self.live_.trees_)
        if self.live_ is not None and (self.live_.mode, self.live_.objective_.name, self.live_.objective_.params) \
                != (mode, obj.name, obj.params):
            raise ValueError(f"sb.hello: the lender asks for mode {mode!r}, objective {obj.name!r} {obj.params}; "
                             f"this party's live model part is {self.live_.mode!r}, {self.live_.objective_.name!r} "
                             f"{self.live_.objective_.params}")
        if live_trees != held or isinstance(live_trees, bool):
            raise ValueError(f"sb.hello: the lender continues a model of {live_trees!r} trees; this party's "
                             f"live model part holds {held}" if held else
                             f"sb.hello: the lender continues a model of {live_trees!r} trees; this party "
                             f"was given none to continue")
        goss = (params.get("top_rate"), params.get("other_rate"))
        if self.agreed_goss is not None and goss != self.agreed_goss:
            raise ValueError(f"sb.hello: the lender asks for GOSS (top_rate, other_rate) {goss}; this party agreed "
                             f"to {self.agreed_goss}")
        #: GOSS: the (top, other) sample size of every tree, which this party checks; None: every row, every tree
        self.goss_sizes_ = None
        if goss != (None, None):
            try:
                check_goss(*goss)
                self.goss_sizes_ = goss_sizes(int(n_rows), *goss)
            except ValueError as exc:
                raise ValueError(f"sb.hello: {exc}") from None
        self.params_ = params
        self.mode = mode
        self.objective, self.objective_ = obj.name, obj
        #: the most trees this job may grow (sb.tree beyond it is refused)
        self.max_trees_ = n_estimators * obj.n_groups
        n = X.shape[0]
        n_eval_here = 0 if eval_X is None else np.asarray(eval_X).shape[0]
        self.binner_ = QuantileBinner(int(params["max_bin"])).fit(X)
        bins = self.binner_.transform(X)
        n_bins = self.binner_.n_bins
        link.send(Message("sb.hello_reply", {"n_rows": n, "n_eval_rows": n_eval_here},
                          {"n_bins": n_bins.astype(np.int32)}, step="hello"))
        if n != n_rows or n_eval_here != n_eval:
            raise ValueError(f"row counts differ: platform has {n} training / {n_eval_here} validation rows, "
                             f"lender {n_rows} / {n_eval}")
        Xe = None if eval_X is None else np.asarray(eval_X, dtype=np.float64)
        timings = {"histograms": 0.0, "wait": 0.0}
        resumed = self.checkpoints.latest("tree") if self.checkpoints is not None else None
        self.trees_ = [] if resumed is None else [Tree.from_dict(d) for d in resumed[1]["trees"]]
        if first_tree != len(self.trees_) or isinstance(first_tree, bool):
            raise ValueError(f"sb.hello: the lender continues from tree {first_tree!r}; this party's checkpoints "
                             f"hold {len(self.trees_)} trees")
        party_engine = compute.active()  # this party's own (its node's [compute]); Ray: one actor per block

        def engine_for(rows_bins: np.ndarray) -> HistogramEngine:
            args = (rows_bins, n_bins, pk.ciphertext_modulus, pk.plaintext_bits + 1, layout.entry_bits)
            return party_engine.histograms(*args) if party_engine.distributed else HistogramEngine(*args, self.n_jobs)
        self._engine = engine_for(bins) if self.goss_sizes_ is None else None  # GOSS: one per tree, on its sample
        try:
            self._train(link, X, Xe, bins, n_bins, pk, timings, engine_for)
        finally:
            if self._engine is not None:
                self._engine.close()
            self._engine = None  # workers and closures stay out of the fitted model (it pickles, clones)
        self.timings_ = timings
        return self

    def _check_live(self, live: "SecureBoostPlatform", n_features: int) -> None:
        """Refuse a live model part of another mode, objective or class count than agreed, or other features."""
        agreed = {"mode": self.agreed_mode, "objective": self.agreed_objective, "num_class": self.agreed_num_class}
        held = {"mode": live.mode, "objective": live.objective_.name, "num_class": live.objective_.num_class}
        for key, value in agreed.items():
            if value is not None and held[key] != value:
                raise ValueError(f"xgb_model: the live model part has {key} {held[key]!r}; this party agreed to "
                                 f"{value!r}")
        if live.binner_.n_features != n_features:
            raise ValueError(f"xgb_model: the live model part has {live.binner_.n_features} features, the data "
                             f"{n_features}")

    def _train(self, link: Link, X: np.ndarray, Xe: np.ndarray | None, bins: np.ndarray,
               n_bins: np.ndarray, pk, timings: dict,
               engine_for: Callable[[np.ndarray], HistogramEngine]) -> None:
        n = X.shape[0]
        while True:
            t0 = time.perf_counter()
            msg = link.recv(["sb.tree", "sb.finish"])
            timings["wait"] += time.perf_counter() - t0
            if msg.type == "sb.finish":
                self._finish(msg)
                break
            if msg.header["tree"] != len(self.trees_) or len(self.trees_) >= self.max_trees_:
                raise ValueError(f"sb.tree: tree {msg.header['tree']}, expected {len(self.trees_)} "
                                 f"(of {self.max_trees_} announced)")
            sample = self._tree_sample(msg, n)
            cts = pk.vector_from_bigints(msg.parts["gradients"]).ciphertexts
            if len(cts) != (n if sample is None else len(sample)):
                raise ValueError(f"sb.tree: {len(cts)} ciphertexts for {n if sample is None else len(sample)} rows")
            mask = msg.parts["features"]
            if mask.shape != (X.shape[1],):
                raise ValueError(f"sb.tree: feature mask of length {len(mask)} for {X.shape[1]} features")
            active = np.nonzero(mask)[0]
            tree = Tree()
            row_node = np.zeros(n, dtype=np.int32)
            t0 = time.perf_counter()
            if sample is not None:  # GOSS: this tree's histograms come from its sample's rows only
                if self._engine is not None:
                    self._engine.close()
                self._engine = engine_for(bins[sample])
            engine = self._engine
            engine.start_tree(cts, active)
            packed = engine.root()
            timings["histograms"] += time.perf_counter() - t0
            link.send(self._hist_message(msg.header["tree"], 0, [0], packed, engine.block_features, pk,
                                         np.zeros(0, dtype=bool)))
            level = [0]
            depth = 0
            while True:
                t0 = time.perf_counter()
                sm = link.recv("sb.split")
                timings["wait"] += time.perf_counter() - t0
                nodes = sm.parts["nodes"].tolist()
                if nodes != level or sm.header["depth"] != depth:
                    raise ValueError(f"sb.split: decisions for nodes {nodes} at depth {sm.header['depth']}, "
                                     f"expected {level} at depth {depth}")
                kinds, feats, bins_, dls = (sm.parts[k].tolist() for k in ("kind", "feature", "bin", "default_left"))
                if not (len(kinds) == len(feats) == len(bins_) == len(dls) == len(nodes)):
                    raise ValueError("sb.split: decision arrays of different lengths")
                lender_nodes, platform_nodes, children = [], [], []
                for node, k, f, b, dl in zip(nodes, kinds, feats, bins_, dls):
                    if k == LEAF:
                        continue
                    if k == LENDER_SPLIT:
                        kids = tree.split(node, 0, -1, -1, False)
                        lender_nodes.append(node)
                    elif k == PLATFORM_SPLIT:
                        if not (0 <= f < X.shape[1] and mask[f] and -1 <= b < n_bins[f]):
                            raise ValueError(f"sb.split: invalid platform split (feature {f}, bin {b})")
                        kids = tree.split(node, 1, f, b, bool(dl), self.binner_.threshold(f, b))
                        platform_nodes.append(node)
                    else:
                        raise ValueError(f"sb.split: unknown decision kind {k}")
                    children.extend(kids)
                lrows = _rows_of(row_node, lender_nodes)
                lbits = sm.parts["lender_left"]
                if len(lbits) != len(lrows):
                    raise ValueError(f"sb.split: {len(lbits)} lender directions for {len(lrows)} rows")
                prows = _rows_of(row_node, platform_nodes)
                cur = row_node[prows]
                f_of = np.array(tree.feature, dtype=np.int64)[cur]
                b_of = np.array(tree.bin, dtype=np.int64)[cur]
                d_of = np.array(tree.default_left, dtype=bool)[cur]
                pb = bins[prows, f_of] if len(prows) else np.zeros(0, dtype=np.int64)
                pbits = np.where(pb == MISSING, d_of, pb <= b_of).astype(bool)
                new_node = row_node.copy()
                lefts = np.array(tree.left, dtype=np.int32)
                rights = np.array(tree.right, dtype=np.int32)
                for rows_, bits in ((lrows, lbits), (prows, pbits)):
                    new_node[rows_] = np.where(bits, lefts[row_node[rows_]], rights[row_node[rows_]])
                row_node = new_node
                build = sm.header["build"]
                if build and (not children or depth + 1 >= int(self.params_["max_depth"])):
                    raise ValueError(f"sb.split: histograms requested at depth {depth + 1} "
                                     f"(max_depth {self.params_['max_depth']}, {len(children)} children)")
                if not build:
                    eval_left = None
                    if Xe is not None:
                        pn = [i for i in range(tree.n_nodes) if tree.party[i] == 1]
                        eval_left = self._node_bits(tree, pn, Xe)
                    link.send(self._hist_message(sm.header["tree"], depth + 1, [], [], [], pk, pbits, eval_left))
                    break
                t0 = time.perf_counter()
                jobs = []
                sampled = row_node if sample is None else row_node[sample]  # positions in the engine's rows
                for parent in lender_nodes + platform_nodes:
                    small, big = _built_child(tree, sampled, parent)
                    jobs.append((parent, small, big, np.nonzero(sampled == small)[0]))
                level = sorted(children)
                built = sorted(job[1] for job in jobs)  # the lender derives their siblings
                packed = engine.level(jobs, built)
                timings["histograms"] += time.perf_counter() - t0
                depth += 1
                link.send(self._hist_message(sm.header["tree"], depth, built, packed, engine.block_features, pk,
                                             pbits))
            self.trees_.append(tree)
            t = len(self.trees_) - 1
            if self.checkpoints is not None:
                self.checkpoints.save("tree", t, {"trees": [tr.to_dict() for tr in self.trees_]})
            if self.on_tree is not None:
                self.on_tree(t)

    def _tree_sample(self, msg: Message, n: int) -> np.ndarray | None:
        """The rows of a GOSS tree (sorted), after checking the sample's size against the announced rates."""
        sample = msg.parts.get("sample")
        if self.goss_sizes_ is None:
            if sample is not None:
                raise ValueError("sb.tree: a row sample, but the job announced no GOSS (top_rate, other_rate)")
            return None
        want = sum(self.goss_sizes_)
        if sample is None or sample.shape != (n,) or int(sample.sum()) != want:
            got = None if sample is None else (sample.shape, int(sample.sum()))
            raise ValueError(f"sb.tree: GOSS sample (shape, rows) {got}, expected {want} of {n} rows "
                             f"(top {self.goss_sizes_[0]} + other {self.goss_sizes_[1]})")
        return np.nonzero(sample)[0]

    @staticmethod
    def _hist_message(tree: int, depth: int, nodes: list[int], packed: list, block_features: list[int], pk,
                      platform_left: np.ndarray, eval_left: np.ndarray | None = None) -> Message:
        parts: dict[str, Any] = {"nodes": np.array(nodes, dtype=np.int32),
                                 "histograms": BigInts(packed, pk.ciphertext_bytes),
                                 "block_features": np.array(block_features, dtype=np.int32),
                                 "platform_left": np.asarray(platform_left, dtype=bool)}
        if eval_left is not None:
            parts["eval_left"] = eval_left
        return Message("sb.hist", {"tree": tree, "depth": depth}, parts, step=f"tree{tree}/depth{depth}")

    @staticmethod
    def _node_bits(tree: Tree, nodes: list[int], X: np.ndarray) -> np.ndarray:
        """Direction (True = left) of every row of ``X`` at each of this party's ``nodes``."""
        X32 = np.asarray(X, dtype=np.float32)
        out = np.zeros((X32.shape[0], len(nodes)), dtype=bool)
        for j, nid in enumerate(nodes):
            x = X32[:, tree.feature[nid]]
            out[:, j] = np.where(np.isnan(x), tree.default_left[nid], x < np.float32(tree.threshold[nid]))
        return out

    def _finish(self, msg: Message) -> None:
        k = msg.header["n_trees"]
        groups = self.objective_.n_groups
        if not 0 <= k <= len(self.trees_) or k % groups:
            raise ValueError(f"sb.finish: keeps {k} trees of {len(self.trees_)} (a multiple of {groups} needed)")
        self.trees_ = self.trees_[:k]
        self.base_margin_ = None
        if self.mode == "prospect":
            values = msg.parts.get("leaf_values")
            base = msg.parts.get("base_margin")
            leaves = [tr.leaves() for tr in self.trees_]
            total = sum(len(lv) for lv in leaves)
            if values is None or len(values) != total or base is None or len(base) != groups:
                raise ValueError(f"sb.finish: prospect mode needs {total} leaf values and {groups} base margin(s)")
            if not (np.isfinite(values).all() and np.isfinite(base).all()):
                raise ValueError("sb.finish: leaf values and base margins must be finite")
            if any(tr.party[i] == 0 for tr in self.trees_ for i in range(tr.n_nodes)):
                raise ValueError("sb.finish: a prospect model holds a lender split")
            pos = 0
            for tr, lv in zip(self.trees_, leaves):
                for leaf in lv:
                    tr.value[leaf] = float(values[pos])
                    pos += 1
            self.base_margin_ = base.astype(np.float32)
        if self.live_ is not None:  # the continued model: the live trees, then this job's; the live intercept
            if self.mode == "prospect" and not np.array_equal(self.base_margin_, self.live_.base_margin_):
                raise ValueError(f"sb.finish: base margin {self.base_margin_.tolist()} is not the live model's "
                                 f"{self.live_.base_margin_.tolist()}")
            self.trees_ = self.live_.trees_ + self.trees_

    # -- inference -------------------------------------------------------------
    def serve_predict(self, link: Link, X: np.ndarray) -> None:
        """Serve one federated prediction of the lender (``sb.predict``) for the rows of ``X``, in the lender's order.

        The platform answers which branch each of its splits sends every row; the
        scores are computed, and kept, by the lender. Returns nothing: this party
        learns no score (in prospect mode it scores alone with :meth:`predict_local`).
        """
        msg = link.recv("sb.predict")
        X = np.asarray(X, dtype=np.float64)
        if msg.header["n_rows"] != X.shape[0]:
            raise ValueError(f"sb.predict: lender asks for {msg.header['n_rows']} rows, platform has {X.shape[0]}")
        cols = []
        for tr in self.trees_:
            pn = [i for i in range(tr.n_nodes) if tr.party[i] == 1]
            cols.append(self._node_bits(tr, pn, X))
        bits = np.concatenate(cols, axis=1) if cols else np.zeros((X.shape[0], 0), dtype=bool)
        link.send(Message("sb.predict_bits", {"n_rows": X.shape[0]}, {"left": bits}, step="predict"))

    def decision_function_local(self, X: np.ndarray) -> np.ndarray:
        """Margins from the platform's complete model (prospect mode only): (n,), or (n, num_class)."""
        if self.mode != "prospect" or self.base_margin_ is None:
            raise ValueError("only a prospect model can predict on the platform alone")
        margin = _start_margin(self.base_margin_, np.asarray(X).shape[0])
        for t, tr in enumerate(self.trees_):
            leaf = route(tr, X, None, owner=1)
            _add_tree(margin, t, np.array(tr.value, dtype=np.float32)[leaf])
        return margin

    def predict_local(self, X: np.ndarray) -> np.ndarray:
        """The prospect model's prediction, no lender needed (XGBoost's ``Booster.predict`` of the export)."""
        return self.objective_.transform(self.decision_function_local(X)).astype(np.float64)

    def export_xgboost_json(self, path: str | Path, feature_names: list[str] | None = None) -> Path:
        from fedacq.learn.xgb_export import export_xgboost_json

        return export_xgboost_json(self, path, feature_names)

    def save(self, directory: str | Path) -> Path:
        """The platform's model part as JSON: structure, its thresholds, (prospect) leaf values."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        doc = {"format": "fedacq.secureboost.platform/1", "mode": self.mode, "objective": self.objective,
               "objective_params": self.objective_.params,
               "base_margin": None if self.base_margin_ is None else [float(v) for v in self.base_margin_],
               "binner": self.binner_.to_dict(), "feature_names": self.feature_names_,
               "trees": [t.to_dict() for t in self.trees_]}
        out = path / "secureboost_platform.json"
        out.write_text(json.dumps(doc, allow_nan=False))
        return out

    @classmethod
    def load(cls, directory: str | Path, n_jobs: int | None = None) -> "SecureBoostPlatform":
        """A platform model part written by :meth:`save`."""
        path = Path(directory) / "secureboost_platform.json"
        doc = json.loads(path.read_text())
        if doc.get("format") != "fedacq.secureboost.platform/1":
            raise ValueError(f"{path}: not a fedacq SecureBoost platform model")
        model = cls(n_jobs=n_jobs)
        model.mode = doc["mode"]
        model.objective_ = _objective_of({"objective": doc["objective"], **doc.get("objective_params", {})})
        model.objective = model.objective_.name
        model.base_margin_ = (None if doc["base_margin"] is None
                              else np.atleast_1d(np.asarray(doc["base_margin"], dtype=np.float32)))
        model.binner_ = QuantileBinner.from_dict(doc["binner"])
        model.feature_names_ = doc.get("feature_names")
        model.trees_ = [Tree.from_dict(t) for t in doc["trees"]]
        return model


def _check_noise(noise: dict, obj: objectives.Objective, reg_lambda: float, mode: str) -> None:
    """Refuse leaf noise whose sensitivity argument (:func:`_leaf_noise`) does not hold for this job."""
    if mode != "prospect":
        raise ValueError("leaf_noise applies to prospect mode (the released leaf values)")
    if not isinstance(noise, dict):
        raise ValueError(f"leaf_noise must be a dict, got {type(noise).__name__}")
    mech = noise.get("mechanism")
    if mech not in ("laplace", "gaussian"):
        raise ValueError(f"leaf_noise mechanism must be 'laplace' or 'gaussian', got {mech!r}")
    if not noise.get("epsilon", 0) > 0:
        raise ValueError("leaf_noise needs epsilon > 0")
    if mech == "gaussian" and not 0 < noise.get("delta", 0) < 1:
        raise ValueError("gaussian leaf_noise needs 0 < delta < 1")
    if reg_lambda <= 0:
        raise ValueError("leaf_noise needs reg_lambda > 0 (it bounds the sensitivity)")
    if obj.name == "reg:tweedie":
        raise ValueError("leaf_noise is not available for reg:tweedie: its hessian depends on the label, so one "
                         "user's label moves both sums of its leaf and the leaf value's change has no bound "
                         "independent of the data (the sensitivity argument of the noise does not hold)")
    if obj.name in ("reg:squarederror", "count:poisson") and "gradient_bound" not in noise:
        raise ValueError(f"leaf_noise for {obj.name} needs 'gradient_bound' (the most one user's label can move "
                         f"its gradient: max |y - prediction| for reg:squarederror, the label range for count:poisson)")
    bound = noise.get("gradient_bound", 1.0)
    if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound < math.inf:
        raise ValueError(f"leaf_noise gradient_bound must be a positive number, got {bound!r}")


def _leaf_noise(noise: dict, learning_rate: float, reg_lambda: float, n_trees: int, size: int) -> np.ndarray:
    """Noise for the released leaf values, from the OS CSPRNG (:mod:`fedacq.crypto.dp_noise`).

    Never from ``random_state``: the platform holds that seed (it is part of
    the job), and noise drawn from it could be regenerated and subtracted.

    Changing one user's label moves its gradient by at most ``gradient_bound``
    and touches one leaf per tree, whose value ``-lr G / (H + reg_lambda)``
    then moves by at most ``learning_rate * gradient_bound / reg_lambda`` -
    provided the hessian does not depend on the label, so ``H`` stays put:

    * ``binary:logistic``: ``g = p - y`` moves by at most 1, ``h = p (1 - p)``;
    * ``multi:softprob``: each class's ``g = p_k - [y = k]`` moves by at most 1
      (in two of the round's num_class trees), ``h = 2 p_k (1 - p_k)``;
    * ``reg:squarederror``: ``g = p - y`` moves by at most ``gradient_bound``, ``h = 1``;
    * ``count:poisson``: ``g = e^p - y`` moves by the label change, bounded by
      ``gradient_bound``; ``h = e^(p + max_delta_step)``;
    * ``reg:tweedie`` is refused (:func:`_check_noise`): ``h`` holds ``-y (1 - rho) e^((1-rho)p)``.

    ``max_delta_step`` clipping can only shrink a change. The budget is split
    evenly over every released tree (sequential composition; for multi-class
    that counts all num_class trees of a round, although a label touches two).
    This protects the released values given the tree structure; the structure
    itself (chosen on encrypted gradients) is not covered.
    """
    bound = float(noise.get("gradient_bound", 1.0))
    sensitivity = learning_rate * bound / reg_lambda
    eps = float(noise["epsilon"]) / n_trees
    if noise["mechanism"] == "laplace":
        return dp_noise.laplace(sensitivity / eps, size)
    delta = float(noise["delta"]) / n_trees
    sigma = sensitivity * math.sqrt(2 * math.log(1.25 / delta)) / eps
    return dp_noise.gaussian(sigma, size)
