"""Split neural network between the lender and the platform, with noise on what crosses.

Each party has a *bottom* network over its own columns (an MLP, or a
DeepFM-style network when it has categorical columns: see
:mod:`fedacq.learn.splitnn_nets`); the lender also has the *top* network, which
maps the two embeddings to the logit, and the labels. Only embeddings (forward)
and gradients with respect to them (backward) cross, as float32 arrays, one
mini-batch at a time. torch is the optional ``nn`` extra and is imported only
inside the functions that train or score, so ``fedacq`` works without it.

Steps (one message each over a :class:`~fedacq.link.link.Link`)
    1. ``snn.hello`` L->P: the shared parameters (architecture sizes, batch
       size, epochs, optimiser, noise parameters, seed) and the row counts;
       ``snn.hello_reply`` P->L: the platform's row counts. The platform builds
       its bottom network over its own columns; the lender never learns its
       width, its columns or which of them are categorical. The seed drives
       only the batches: each party initialises its networks from its own
       secret seed (OS CSPRNG), so neither knows the other's initial weights.
    2. Per epoch both draw the same row permutation from the seed; per
       mini-batch B: ``snn.forward`` P->L: the platform's embeddings of B
       (clipped and noised when ``embedding_clip`` is set, below); the lender runs its bottom and the top
       network, computes the log-loss, back-propagates and updates its own
       networks, and sends ``snn.backward`` L->P: the gradient of each row's
       loss with respect to that row's platform embedding (clipped and noised
       by default);
       the platform back-propagates it through its bottom network and updates.
    3. End of epoch: ``snn.epoch`` P->L: embeddings of all training (and
       validation) rows, for the lender's loss and AUC; ``snn.epoch_done`` L->P:
       best epoch so far (both keep a copy of their weights) and whether to
       stop (no improvement above ``tol`` for ``n_iter_no_change`` epochs, or
       ``max_iter``). Both restore their best weights at the stop.
    Inference: ``snn.predict`` L->P (row count), ``snn.embed`` P->L (the
    platform's embeddings of those rows, noised the same way).

Protection: clipping and Gaussian noise in both directions
    Embeddings: each row's platform embedding is clipped to L2 norm
    ``embedding_clip`` and gets N(0, (``embedding_noise`` * ``embedding_clip``)^2)
    noise per coordinate. Gradients: each row's gradient is clipped to
    ``gradient_clip`` and gets N(0, (``gradient_noise`` * ``gradient_clip``)^2).
    The noise is drawn from the OS CSPRNG (:mod:`fedacq.crypto.dp_noise`, the
    sampler every fedacq protocol uses), never from the shared seed or a
    seeded generator, so the receiver cannot regenerate and subtract it. ``*_clip=None`` disables
    clipping and noise for that direction (the setting for the comparison with
    central training). The platform back-propagates through its own clipping
    (the lender's gradient is with respect to the clipped embedding); a
    straight-through gradient let noisy gradients push the embedding norms far
    past the clip.

    Defaults and what they buy, measured on the full default_credit data with
    one seed (``experiments/splitnn_noise.py``, results in
    ``experiments/results/splitnn_noise.json``; runs differ by ~0.003 AUC
    because the noise is not seeded):

    * ``gradient_clip=0.1, gradient_noise=2.0`` (on by default): the noise
      has about 9 times the RMS norm of the clipped gradients. The
      platform's two label attacks of Li et al. (gradient norm; projection on
      the batch's leading direction, :mod:`fedacq.learn.splitnn_leakage`)
      rank rows by label with AUC ~0.50-0.51 (chance) on the first epoch's
      gradients, against 0.85 and 1.00 with no protection and 0.54 and 0.99
      with the first defaults (``gradient_noise=0.5``: clipping alone defeats
      the norm attack, not the direction attack). Cost: validation AUC ~0.008
      below the same network trained centrally (0.781 vs 0.789).
    * ``embedding_clip=None`` (off by default), ``embedding_noise=0.02``: with
      ``embedding_clip=4.0`` every embedding the lender receives has norm <= 4
      before noise and the noise is ~0.06 of the embeddings' RMS norm; the
      AUC cost rises to 0.021-0.023 over three runs (0.766-0.769). That is a heuristic blur, not a
      guarantee (below): embedding noise large enough to mean something
      removes most of the platform's contribution, so it is opt-in rather
      than a default that looks like protection. The first defaults
      (4, 0.05, 0.1, 0.5) cost 0.026-0.030 (0.046 before the platform
      back-propagated through its clip) and left the labels readable.

    Differential privacy, stated honestly (:func:`gaussian_dp`): one row's
    clipped vector changes by at most twice its clip when its label (for the
    gradient) or its features (for the embedding) change, so one release is
    the Gaussian mechanism with sensitivity 2 * clip, i.e. mu-Gaussian-DP with
    mu = 2 / noise multiplier, and the releases of one row over E epochs
    compose to mu * sqrt(E). For the gradient defaults that is mu = 1 per
    release (epsilon 4.4 at delta = 1e-5) and epsilon 28 over 20
    epochs: label DP of what the platform receives *for that row, given the
    lender's networks*. It is not a guarantee for the whole training: the
    lender's top network is trained on the exact labels, and every other
    row's gradient depends on it. For embeddings at ``embedding_noise=0.02``
    mu = 100: no useful guarantee; a useful one (mu ~ 1, noise multiplier 2)
    would drown the embeddings.

What each party learns
    Lender: its own data, the top network and its bottom network; the
    platform's embeddings (by default exact; noised with ``embedding_clip``)
    of every training, validation and scored row. Embeddings are a learned, lossy function of the platform's features
    built to predict the lender's label: they carry whatever of the features
    is predictive (that is their point) and may let a motivated lender
    approximate some features; optional embedding noise blurs them but gives
    no useful bound. Never the platform's raw features, column names or weights.
    Platform: its own data and bottom network; per training row and epoch the
    (noised) gradient of the loss with respect to its embedding. Without
    noise that gradient leaks labels: for a sigmoid output its component
    along the top network's direction has the sign of (p - y), so an
    unprotected platform could read most labels off it (Li et al., "Label
    leakage and protection in two-party split learning", 2022). Gradient
    noise is what stands between the platform and the labels; with
    ``gradient_clip=None`` the labels are effectively revealed. The platform
    never sees a label, the lender's features or the top network.
"""

from __future__ import annotations

import copy
import json
import math
import secrets
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from fedacq.learn.early_stopping import EarlyStopping
from fedacq.learn.hetero_lr import Standardizer, batches, read_model_file
from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, PartSpec, register

register(
    MessageSpec("snn.hello", header={"config": str}),
    MessageSpec("snn.hello_reply", header={"n_rows": int, "n_eval_rows": int}),
    MessageSpec("snn.forward", header={"epoch": int, "batch": int},
                parts={"embedding": PartSpec(dtypes=("float32",), ndim=2)}),
    MessageSpec("snn.backward", header={"epoch": int, "batch": int},
                parts={"gradient": PartSpec(dtypes=("float32",), ndim=2)}),
    MessageSpec("snn.epoch", header={"epoch": int},
                parts={"train_embedding": PartSpec(dtypes=("float32",), ndim=2),
                       "eval_embedding": PartSpec(dtypes=("float32",), ndim=2, optional=True)}),
    MessageSpec("snn.epoch_done", header={"epoch": int, "improved": bool, "stop": bool}),
    MessageSpec("snn.predict", header={"n_rows": int}),
    MessageSpec("snn.embed", header={"n_rows": int},
                parts={"embedding": PartSpec(dtypes=("float32",), ndim=2)}),
)

#: parameters of the split NN (MLPClassifier names where they exist), with their defaults.
DEFAULTS: dict[str, Any] = {
    "hidden_layer_sizes": [32],
    "embedding_dim": 8,
    "top_layer_sizes": [16],
    "categorical_features": "auto",
    "max_categories": 16,
    "fm_embedding_dim": 4,
    "batch_size": 256,
    "max_iter": 20,
    "learning_rate_init": 1e-3,
    "alpha": 0.0,
    "early_stopping": True,
    "tol": 1e-4,
    "n_iter_no_change": 3,
    "embedding_clip": None,
    "embedding_noise": 0.02,
    "gradient_clip": 0.1,
    "gradient_noise": 2.0,
}

#: each party's model part (:meth:`SplitNNLender.save`, :meth:`SplitNNPlatform.save`): weights, the rest
LENDER_NPZ, LENDER_JSON = "splitnn_lender.npz", "splitnn_lender.json"
PLATFORM_NPZ, PLATFORM_JSON = "splitnn_platform.npz", "splitnn_platform.json"

#: seeds of the three networks, offsets from each party's own secret ``init_seed``.
LENDER_BOTTOM, PLATFORM_BOTTOM, TOP = 1, 2, 3


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``params``; unknown names and bad values raise ``ValueError``."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"splitnn: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **params}
    for key in ("hidden_layer_sizes", "top_layer_sizes"):
        sizes = out[key]
        if isinstance(sizes, int):
            sizes = [sizes]
        if not isinstance(sizes, (list, tuple)) or not all(isinstance(s, int) and s > 0 for s in sizes):
            raise ValueError(f"splitnn: {key} must be a list of positive ints, got {out[key]!r}")
        out[key] = list(sizes)
    for key in ("embedding_dim", "batch_size", "max_iter", "n_iter_no_change", "fm_embedding_dim",
                "max_categories"):
        if not isinstance(out[key], int) or out[key] < 1:
            raise ValueError(f"splitnn: {key} must be a positive int, got {out[key]!r}")
    if out["categorical_features"] not in ("auto", None):
        raise ValueError("splitnn: categorical_features must be 'auto' (each party picks its columns "
                         f"with <= max_categories values) or None, got {out['categorical_features']!r}")
    for key in ("embedding_clip", "gradient_clip"):
        if out[key] is not None and not out[key] > 0:
            raise ValueError(f"splitnn: {key} must be > 0 or None (no clipping, no noise)")
    for key in ("embedding_noise", "gradient_noise", "alpha", "tol"):
        if not out[key] >= 0:
            raise ValueError(f"splitnn: {key} must be >= 0, got {out[key]}")
    if not out["learning_rate_init"] > 0:
        raise ValueError("splitnn: learning_rate_init must be > 0")
    return out


def gaussian_dp(noise_multiplier: float, releases: int = 1, delta: float = 1e-5) -> dict[str, float]:
    """Privacy of ``releases`` clipped-and-noised releases of one row's vector (Gaussian DP).

    Changing the row (its label, or its features) moves its clipped vector by
    at most 2 * clip, and the noise std is ``noise_multiplier`` * clip, so one
    release is mu-GDP with mu = 2 / ``noise_multiplier`` (Dong, Roth & Su,
    "Gaussian differential privacy", 2022); k releases compose to
    mu * sqrt(k), and mu-GDP is (epsilon, delta)-DP with
    delta = Phi(-epsilon/mu + mu/2) - e^epsilon Phi(-epsilon/mu - mu/2), solved
    here for epsilon. Returns ``{"mu": ..., "epsilon": ..., "delta": ...}``
    (infinite without noise). What this covers is in the module docstring.
    """
    from scipy.stats import norm

    if noise_multiplier <= 0:
        return {"mu": math.inf, "epsilon": math.inf, "delta": delta}
    mu = 2.0 / noise_multiplier * math.sqrt(releases)

    def delta_at(eps: float) -> float:
        return float(norm.cdf(-eps / mu + mu / 2) - math.exp(eps + norm.logcdf(-eps / mu - mu / 2)))

    lo, hi = 0.0, 1.0
    while delta_at(hi) > delta:
        lo, hi = hi, hi * 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if delta_at(mid) > delta else (lo, mid)
    return {"mu": mu, "epsilon": hi, "delta": delta}


class Columns:
    """One party's column encoding: standardised dense columns and indexed categorical ones.

    With ``categorical_features="auto"`` a column is categorical when its
    training rows hold at most ``max_categories`` distinct values; category
    index 0 is kept for missing and unseen values.
    """

    def __init__(self, categorical: list[int], categories: list[np.ndarray], dense: list[int],
                 scaler: Standardizer) -> None:
        self.categorical, self.categories, self.dense, self.scaler = categorical, categories, dense, scaler

    @classmethod
    def fit(cls, X: np.ndarray, categorical_features: str | None, max_categories: int) -> "Columns":
        X = np.asarray(X, dtype=np.float64)
        categorical, categories = [], []
        if categorical_features == "auto":
            for j in range(X.shape[1]):
                values = np.unique(X[:, j][~np.isnan(X[:, j])])
                if 1 < len(values) <= max_categories:
                    categorical.append(j)
                    categories.append(values)
        dense = [j for j in range(X.shape[1]) if j not in categorical]
        return cls(categorical, categories, dense, Standardizer.fit(X[:, dense]))

    @property
    def cardinalities(self) -> list[int]:
        return [len(c) + 1 for c in self.categories]

    def transform(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.dense) + len(self.categorical):
            raise ValueError(f"expected {len(self.dense) + len(self.categorical)} feature columns, got shape {X.shape}")
        cats = np.zeros((X.shape[0], len(self.categorical)), dtype=np.int64)
        for i, (j, values) in enumerate(zip(self.categorical, self.categories)):
            pos = np.searchsorted(values, X[:, j])
            hit = (pos < len(values)) & (values[np.minimum(pos, len(values) - 1)] == X[:, j])
            cats[:, i] = np.where(hit, pos + 1, 0)
        return self.scaler.transform(X[:, self.dense]).astype(np.float32), cats

    def to_dict(self) -> dict[str, Any]:
        return {"categorical": self.categorical, "categories": [c.tolist() for c in self.categories],
                "dense": self.dense, "scaler": self.scaler.to_dict()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Columns":
        """The inverse of :meth:`to_dict` (a model file): the columns partition 0..d-1, categories sorted."""
        categorical, dense = [int(j) for j in doc["categorical"]], [int(j) for j in doc["dense"]]
        categories = [np.asarray(c, dtype=np.float64) for c in doc["categories"]]
        if sorted(categorical + dense) != list(range(len(categorical) + len(dense))) or \
                len(categories) != len(categorical) or \
                any(c.ndim != 1 or len(c) < 1 or (np.diff(c) <= 0).any() for c in categories):
            raise ValueError("columns: categorical and dense must partition the columns, one sorted list of "
                             "categories per categorical column")
        scaler = Standardizer.from_dict(doc["scaler"])
        if len(scaler.mean) != len(dense):
            raise ValueError(f"columns: a scaler of {len(scaler.mean)} columns for {len(dense)} dense ones")
        return cls(categorical, categories, dense, scaler)


def _own_seed(init_seed: int | None) -> int:
    """The seed of a party's initial weights: its own secret from the OS CSPRNG unless given.

    Never the shared ``random_state``: a lender that knows the platform's
    initial bottom weights (and the gradients it sent back) holds a known
    function of each platform row per epoch, ``embedding_dim`` equations per
    row each time, which can pin down the platform's standardised features.
    An explicit seed is for the central reference (:func:`fit_central`).
    """
    return secrets.randbits(59) if init_seed is None else int(init_seed)  # seed * 10 + 3 fits torch's int64


def _metrics(prefix: str, y: np.ndarray, logit: np.ndarray) -> dict[str, float]:
    """binary:logistic's metrics (logloss, AUC) of logits, as every fedacq model keys them (``train_logloss``)."""
    from fedacq.learn import objectives
    from fedacq.learn.hetero_lr_objectives import history

    return history(objectives.get("binary:logistic"), prefix, y, logit)


def _state_arrays(state: dict[str, Any], prefix: str) -> dict[str, np.ndarray]:
    """A network's state dict as numpy arrays named ``prefix.<key>`` (for .npz files and checkpoints)."""
    return {f"{prefix}.{k}": v.detach().cpu().numpy() for k, v in state.items()}


def _state_from_arrays(module: Any, arrays: dict[str, np.ndarray], prefix: str,
                       source: str = "epoch checkpoint") -> dict[str, Any]:
    """A state dict for ``module`` from arrays named ``prefix.<key>`` (a checkpoint or a model file):
    keys and shapes checked."""
    import torch

    own = module.state_dict()
    got = {k[len(prefix) + 1:]: v for k, v in arrays.items() if k.startswith(f"{prefix}.")}
    if set(got) != set(own) or any(tuple(got[k].shape) != tuple(own[k].shape) for k in own):
        raise ValueError(f"{source}: the {prefix!r} weights do not fit this party's network")
    return {k: torch.as_tensor(got[k]).to(own[k].dtype) for k in own}


#: what torch's Adam keeps per parameter
_ADAM_STATE = ("step", "exp_avg", "exp_avg_sq")


def _optimizer_arrays(opt: Any) -> dict[str, np.ndarray]:
    """Adam's per-parameter state as numpy arrays ``opt.<parameter index>.<name>`` (no pickle)."""
    return {f"opt.{i}.{name}": value.detach().cpu().numpy()
            for i, state in opt.state_dict()["state"].items() for name, value in state.items()}


def _load_optimizer(opt: Any, arrays: dict[str, np.ndarray]) -> None:
    """Adam's state from :func:`_optimizer_arrays`' arrays: indices, names and shapes checked."""
    import torch

    groups = opt.state_dict()["param_groups"]
    shapes = [tuple(p.shape) for group in opt.param_groups for p in group["params"]]
    state: dict[int, dict[str, Any]] = {}
    for key, value in arrays.items():
        if not key.startswith("opt."):
            continue
        _, index, name = key.split(".", 2)
        i = int(index) if index.isdigit() else -1
        if name == "step" and value.size == 1:
            value = value.reshape(())  # the checkpoint store writes a scalar as one element
        if not 0 <= i < len(shapes) or name not in _ADAM_STATE or \
                tuple(value.shape) != (() if name == "step" else shapes[i]):
            raise ValueError(f"epoch checkpoint: optimiser state {key!r} does not fit this party's network")
        state.setdefault(i, {})[name] = torch.as_tensor(value)
    if any(set(v) != set(_ADAM_STATE) for v in state.values()):
        raise ValueError("epoch checkpoint: incomplete optimiser state")
    opt.load_state_dict({"state": state, "param_groups": groups})


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays :func:`_save_npz` wrote; ``allow_pickle=False``: an object array is refused, not unpickled."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the weights: {exc}") from exc


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """``np.savez`` without its clock: members dated 1980-01-01, so equal weights give equal bytes."""
    import zipfile

    with zipfile.ZipFile(path, "w") as zf:
        for name, array in arrays.items():
            with zf.open(zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0)), "w") as fh:
                np.lib.format.write_array(fh, np.asanyarray(array), allow_pickle=False)


# -- lender ------------------------------------------------------------------------------

class SplitNNLender:
    """The active party: labels, its bottom network and the top network."""

    def __init__(self, random_state: int = 0, callback: Callable[[int, dict], Any] | None = None,
                 init_seed: int | None = None, checkpoints: Any = None, **params: Any) -> None:
        self.params = resolve_params(params)
        self.random_state = random_state
        self.init_seed = _own_seed(init_seed)
        self.callback = callback
        #: a :class:`fedacq.learn.run_checkpoints.RunCheckpoints` (node jobs): save after each epoch, resume
        self.checkpoints = checkpoints
        self.history_: list[dict[str, float]] = []

    def _build(self, X: np.ndarray) -> None:
        self.columns_ = Columns.fit(X, self.params["categorical_features"], self.params["max_categories"])
        self._networks()

    def _networks(self) -> None:
        """Both networks for the column encoding ``columns_``, initialised from this party's seed."""
        from fedacq.learn import splitnn_nets as nets

        p = self.params
        self.bottom_ = nets.bottom(len(self.columns_.dense), self.columns_.cardinalities, p,
                                   self.init_seed * 10 + LENDER_BOTTOM)
        lender_dim = p["embedding_dim"]
        self.top_ = nets.top(lender_dim * 2, p, self.init_seed * 10 + TOP)

    def _logits(self, dense: Any, cats: Any, platform_embedding: Any) -> Any:
        import torch

        return self.top_(torch.cat([self.bottom_(dense, cats), platform_embedding], dim=1)).squeeze(1)

    def _batch_step(self, dense: Any, cats: Any, y: Any, hp: Any, opt: Any) -> Any:
        """One step of the lender's networks; returns d(row loss)/d(platform embedding)."""
        import torch

        hp = hp.detach().requires_grad_(True)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(self._logits(dense, cats, hp), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return hp.grad * hp.shape[0]

    def _optimizer(self) -> Any:
        import torch

        from fedacq.learn import splitnn_nets as nets

        return nets.optimizer(torch.nn.ModuleList([self.bottom_, self.top_]), self.params)

    def fit(self, link: Link, X: np.ndarray, y: np.ndarray,
            eval_set: tuple[np.ndarray, np.ndarray] | None = None) -> "SplitNNLender":
        import torch

        from fedacq.learn import splitnn_nets as nets

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        n = X.shape[0]
        if X.ndim != 2 or y.shape != (n,) or not np.isin(y, (0.0, 1.0)).all():
            raise ValueError(f"lender needs a 2-D feature array and 0/1 labels of shape ({n},)")
        p = self.params
        t_start = time.perf_counter()
        n_eval = 0 if eval_set is None else len(eval_set[1])
        resumed = self.checkpoints.latest("epoch") if self.checkpoints is not None else None
        first_epoch = 0 if resumed is None else resumed[0] + 1
        config = {"params": p, "random_state": self.random_state, "n_rows": n, "n_eval_rows": n_eval}
        if first_epoch:  # a resumption names the epoch it continues from; the platform checks its own
            config["first_epoch"] = first_epoch
        link.send(Message("snn.hello", {"config": json.dumps(config)}, step="hello"))
        reply = link.recv("snn.hello_reply")
        if reply.header["n_rows"] != n or reply.header["n_eval_rows"] != n_eval:
            raise ValueError(f"row counts differ: lender has {n} training / {n_eval} validation rows, "
                             f"platform {reply.header['n_rows']} / {reply.header['n_eval_rows']}")
        self._build(X)
        dense, cats = nets.tensors(*self.columns_.transform(X))
        yt = torch.as_tensor(y, dtype=torch.float32)
        if eval_set is not None:
            dense_v, cats_v = nets.tensors(*self.columns_.transform(eval_set[0]))
            yv = np.asarray(eval_set[1], dtype=np.float64)
        opt = self._optimizer()
        stopper = EarlyStopping(p["n_iter_no_change"], tol=p["tol"])
        best = copy.deepcopy((self.bottom_.state_dict(), self.top_.state_dict()))
        self.history_ = []
        stopped = False
        if resumed is not None:
            best, stopper, stopped = self._restore(resumed, opt)
        from tqdm import tqdm

        for epoch in tqdm(range(first_epoch, first_epoch if stopped else p["max_iter"]), desc="split NN",
                          unit="epoch", leave=False, disable=None, initial=first_epoch, total=p["max_iter"]):
            self.bottom_.train(), self.top_.train()
            for bi, rows in enumerate(batches(n, p["batch_size"], self.random_state, epoch)):
                msg = link.recv("snn.forward")
                hp = msg.parts["embedding"]
                if msg.header["epoch"] != epoch or msg.header["batch"] != bi or hp.shape != (len(rows), p["embedding_dim"]):
                    raise ValueError(f"snn.forward: expected epoch {epoch} batch {bi}, shape "
                                     f"{(len(rows), p['embedding_dim'])}, got {hp.shape}")
                idx = torch.as_tensor(rows)
                grad = self._batch_step(dense[idx], cats[idx], yt[idx], torch.as_tensor(hp), opt)
                grad = nets.clip_and_noise(grad, p["gradient_clip"], p["gradient_noise"])
                link.send(Message("snn.backward", {"epoch": epoch, "batch": bi},
                                  {"gradient": grad.numpy().astype(np.float32)}, step=f"epoch{epoch}/batch{bi}"))
            msg = link.recv("snn.epoch")
            self.bottom_.eval(), self.top_.eval()
            with torch.no_grad():
                logit = self._logits(dense, cats, torch.as_tensor(msg.parts["train_embedding"])).numpy()
                metrics: dict[str, Any] = {"epoch": epoch, **_metrics("train", y, logit)}
                if eval_set is not None:
                    he = msg.parts.get("eval_embedding")
                    if he is None or len(he) != n_eval:
                        raise ValueError(f"snn.epoch: expected {n_eval} validation embeddings")
                    metrics.update(_metrics("valid", yv, self._logits(dense_v, cats_v, torch.as_tensor(he)).numpy()))
            monitor = "valid_logloss" if eval_set is not None and p["early_stopping"] else "train_logloss"
            stop = stopper.update(epoch, metrics[monitor]) or epoch == p["max_iter"] - 1
            improved = stopper.best_iteration == epoch
            if improved:
                best = copy.deepcopy((self.bottom_.state_dict(), self.top_.state_dict()))
            metrics["seconds"] = time.perf_counter() - t_start
            self.history_.append(metrics)
            if self.callback is not None:
                self.callback(epoch, metrics)
            if self.checkpoints is not None:  # before epoch_done: the platform saves this epoch after it
                self.checkpoints.save("epoch", epoch, {
                    "history": self.history_, "early_stopping": stopper.state(), "stop": stop}, {
                    **_state_arrays(self.bottom_.state_dict(), "bottom"),
                    **_state_arrays(self.top_.state_dict(), "top"),
                    **_state_arrays(best[0], "best_bottom"), **_state_arrays(best[1], "best_top"),
                    **_optimizer_arrays(opt)})
            link.send(Message("snn.epoch_done", {"epoch": epoch, "improved": improved, "stop": stop},
                              step=f"epoch{epoch}"))
            if stop:
                break
        self.bottom_.load_state_dict(best[0])
        self.top_.load_state_dict(best[1])
        self.best_epoch_ = stopper.best_iteration
        self.n_iter_ = len(self.history_)
        self.seconds_ = time.perf_counter() - t_start
        return self

    def _restore(self, resumed: tuple[int, dict, dict], opt: Any) -> tuple[tuple, EarlyStopping, bool]:
        """The training state after epoch ``resumed[0]`` from this party's own checkpoint; (best, stopper, stopped).

        Both networks, Adam's moments, the best weights so far and the
        early-stopping state are the first attempt's, and the batches come
        from the shared seed: with noise off the epochs that follow are the
        uninterrupted run's. Noise is fresh randomness from the OS CSPRNG, so
        with noise on no two runs are equal, resumed or not.
        """
        index, meta, arrays = resumed
        self.history_ = [dict(h) for h in meta["history"]]
        if len(self.history_) != index + 1:
            raise ValueError(f"epoch checkpoint {index}: {len(self.history_)} epochs of history")
        self.bottom_.load_state_dict(_state_from_arrays(self.bottom_, arrays, "bottom"))
        self.top_.load_state_dict(_state_from_arrays(self.top_, arrays, "top"))
        best = (_state_from_arrays(self.bottom_, arrays, "best_bottom"),
                _state_from_arrays(self.top_, arrays, "best_top"))
        _load_optimizer(opt, arrays)
        p, stopper = self.params, EarlyStopping.from_state(meta["early_stopping"])
        if (stopper.rounds, stopper.maximize, stopper.tol) != (p["n_iter_no_change"], False, p["tol"]):
            raise ValueError(f"epoch checkpoint {index}: early stopping with n_iter_no_change={stopper.rounds}, "
                             f"tol={stopper.tol}, not this job's {p['n_iter_no_change']}, {p['tol']}")
        return best, stopper, bool(meta["stop"])

    def decision_function(self, link: Link, X: np.ndarray) -> np.ndarray:
        """Federated logits for rows the platform holds in the same order."""
        import torch

        from fedacq.learn import splitnn_nets as nets

        dense, cats = nets.tensors(*self.columns_.transform(X))
        link.send(Message("snn.predict", {"n_rows": dense.shape[0]}, step="predict"))
        he = link.recv("snn.embed").parts["embedding"]
        if he.shape != (dense.shape[0], self.params["embedding_dim"]):
            raise ValueError(f"snn.embed: shape {he.shape} for {dense.shape[0]} rows")
        self.bottom_.eval(), self.top_.eval()
        with torch.no_grad():
            return self._logits(dense, cats, torch.as_tensor(he)).numpy().astype(np.float64)

    def predict_proba(self, link: Link, X: np.ndarray) -> np.ndarray:
        """Probabilities of label 1 (one column, as SecureBoost's)."""
        return 1.0 / (1.0 + np.exp(-self.decision_function(link, X)))

    def predict(self, link: Link, X: np.ndarray) -> np.ndarray:
        """The model's prediction as XGBoost's ``Booster.predict`` for binary:logistic: probabilities of 1."""
        return self.predict_proba(link, X)

    def save(self, directory: str | Path) -> list[Path]:
        """Weights as .npz (no pickle) and the column encoding, params and history as JSON."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        weights = path / LENDER_NPZ
        _save_npz(weights, {**_state_arrays(self.bottom_.state_dict(), "bottom"),
                            **_state_arrays(self.top_.state_dict(), "top")})
        doc = path / LENDER_JSON
        # the model, not the timing, keys sorted (a restored checkpoint's history is): the same weights
        # and data give the same bytes
        doc.write_text(json.dumps({"format": "fedacq.splitnn.lender/1", "params": self.params,
                                   "columns": self.columns_.to_dict(),
                                   "history": [{k: v for k, v in h.items() if k != "seconds"}
                                               for h in self.history_]}, sort_keys=True))
        return [weights, doc]

    @classmethod
    def load(cls, directory: str | Path) -> "SplitNNLender":
        """A lender model part written by :meth:`save`, ready for federated prediction (torch needed).

        The networks are rebuilt from the saved parameters and column encoding,
        then take the saved weights (names and shapes checked against them).
        """
        path = Path(directory)
        doc = read_model_file(path / LENDER_JSON, "fedacq.splitnn.lender/1")
        try:
            model = cls(init_seed=0, **doc["params"])
            model.columns_ = Columns.from_dict(doc["columns"])
            model._networks()
            arrays = _load_npz(path / LENDER_NPZ)
            model.bottom_.load_state_dict(_state_from_arrays(model.bottom_, arrays, "bottom", str(path / LENDER_NPZ)))
            model.top_.load_state_dict(_state_from_arrays(model.top_, arrays, "top", str(path / LENDER_NPZ)))
            model.history_ = [dict(h) for h in doc["history"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path / LENDER_JSON}: not a valid split NN lender model: {exc}") from exc
        model.n_iter_ = len(model.history_)
        return model


# -- platform ----------------------------------------------------------------------------

class SplitNNPlatform:
    """The passive party: features and its bottom network, initialised from its own secret seed."""

    def __init__(self, init_seed: int | None = None, checkpoints: Any = None,
                 on_epoch: Callable[[int], Any] | None = None) -> None:
        self.init_seed = _own_seed(init_seed)
        #: a :class:`fedacq.learn.run_checkpoints.RunCheckpoints` (node jobs): its network after each epoch, resume
        self.checkpoints = checkpoints
        self.on_epoch = on_epoch

    def _embed(self, dense: Any, cats: Any) -> np.ndarray:
        """Noised embeddings of rows (no gradient): what crosses at evaluation and scoring."""
        import torch

        from fedacq.learn import splitnn_nets as nets

        self.bottom_.eval()
        with torch.no_grad():
            h = nets.clip_and_noise(self.bottom_(dense, cats), self.params_["embedding_clip"],
                                    self.params_["embedding_noise"])
        return h.numpy().astype(np.float32)

    def fit(self, link: Link, X: np.ndarray, eval_X: np.ndarray | None = None) -> "SplitNNPlatform":
        import torch

        from fedacq.learn import splitnn_nets as nets

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"platform features must be a 2-D array, got shape {X.shape}")
        hello = link.recv("snn.hello")
        try:
            config = json.loads(hello.header["config"])
            p = resolve_params(config["params"])
            seed, n_rows, n_eval = int(config["random_state"]), int(config["n_rows"]), int(config["n_eval_rows"])
            first_epoch = config.get("first_epoch", 0)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"snn.hello: malformed config: {exc}") from exc
        n = X.shape[0]
        n_eval_here = 0 if eval_X is None else np.asarray(eval_X).shape[0]
        link.send(Message("snn.hello_reply", {"n_rows": n, "n_eval_rows": n_eval_here}, step="hello"))
        if n != n_rows or n_eval_here != n_eval:
            raise ValueError(f"row counts differ: platform has {n} training / {n_eval_here} validation rows, "
                             f"lender {n_rows} / {n_eval}")
        self.params_ = p
        self.columns_ = Columns.fit(X, p["categorical_features"], p["max_categories"])
        self.bottom_ = nets.bottom(len(self.columns_.dense), self.columns_.cardinalities, p,
                                   self.init_seed * 10 + PLATFORM_BOTTOM)
        opt = nets.optimizer(self.bottom_, p)
        dense, cats = nets.tensors(*self.columns_.transform(X))
        dense_v = cats_v = None
        if eval_X is not None:
            dense_v, cats_v = nets.tensors(*self.columns_.transform(eval_X))
        best = copy.deepcopy(self.bottom_.state_dict())
        from fedacq.learn.run_checkpoints import resume_point

        resumed = resume_point(self.checkpoints, "epoch", first_epoch, "snn.hello")
        stopped = False
        if resumed is not None:
            _, meta, arrays = resumed
            self.bottom_.load_state_dict(_state_from_arrays(self.bottom_, arrays, "bottom"))
            best = _state_from_arrays(self.bottom_, arrays, "best_bottom")
            _load_optimizer(opt, arrays)
            stopped = bool(meta["stop"])
        for epoch in range(first_epoch, first_epoch if stopped else p["max_iter"]):
            for bi, rows in enumerate(batches(n, p["batch_size"], seed, epoch)):
                self.bottom_.train()
                idx = torch.as_tensor(rows)
                # the clip stays in the graph: the lender's gradient is with respect to the clipped
                # embedding, and back-propagating it straight into the unclipped one lets noisy
                # gradients push the embedding norms far past the clip (the lender then sees
                # only directions); the additive noise has derivative 1 and needs no care
                sent = nets.clip_and_noise(self.bottom_(dense[idx], cats[idx]), p["embedding_clip"],
                                           p["embedding_noise"])
                link.send(Message("snn.forward", {"epoch": epoch, "batch": bi},
                                  {"embedding": sent.detach().numpy().astype(np.float32)}, step=f"epoch{epoch}/batch{bi}"))
                back = link.recv("snn.backward")
                g = back.parts["gradient"]
                if back.header["epoch"] != epoch or back.header["batch"] != bi or g.shape != tuple(sent.shape):
                    raise ValueError(f"snn.backward: expected epoch {epoch} batch {bi} of shape {tuple(sent.shape)}")
                opt.zero_grad()
                sent.backward(torch.as_tensor(g) / len(rows))
                opt.step()
            parts = {"train_embedding": self._embed(dense, cats)}
            if dense_v is not None:
                parts["eval_embedding"] = self._embed(dense_v, cats_v)
            link.send(Message("snn.epoch", {"epoch": epoch}, parts, step=f"epoch{epoch}"))
            done = link.recv("snn.epoch_done")
            if done.header["epoch"] != epoch:
                raise ValueError(f"snn.epoch_done: expected epoch {epoch}, got {done.header['epoch']}")
            if done.header["improved"]:
                best = copy.deepcopy(self.bottom_.state_dict())
            if self.checkpoints is not None:
                self.checkpoints.save("epoch", epoch, {"stop": done.header["stop"]}, {
                    **_state_arrays(self.bottom_.state_dict(), "bottom"), **_state_arrays(best, "best_bottom"),
                    **_optimizer_arrays(opt)})
            if self.on_epoch is not None:
                self.on_epoch(epoch)
            if done.header["stop"]:
                break
        self.bottom_.load_state_dict(best)
        return self

    def serve_predict(self, link: Link, X: np.ndarray) -> None:
        """Answer one federated prediction of the lender for rows of ``X`` (same order as the lender's);
        named as ``SecureBoostPlatform.serve_predict``: the lender gets the prediction, this returns nothing."""
        from fedacq.learn import splitnn_nets as nets

        msg = link.recv("snn.predict")
        dense, cats = nets.tensors(*self.columns_.transform(X))
        if msg.header["n_rows"] != dense.shape[0]:
            raise ValueError(f"snn.predict: lender asks for {msg.header['n_rows']} rows, platform has {dense.shape[0]}")
        link.send(Message("snn.embed", {"n_rows": dense.shape[0]}, {"embedding": self._embed(dense, cats)},
                          step="predict"))

    def save(self, directory: str | Path) -> list[Path]:
        """Its bottom network's weights (.npz) and column encoding (JSON)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        weights = path / PLATFORM_NPZ
        _save_npz(weights, _state_arrays(self.bottom_.state_dict(), "bottom"))
        doc = path / PLATFORM_JSON
        # /2: the parameters (architecture, embedding noise) are recorded, so the part can be loaded
        doc.write_text(json.dumps({"format": "fedacq.splitnn.platform/2", "columns": self.columns_.to_dict(),
                                   "params": self.params_}, sort_keys=True))
        return [weights, doc]

    @classmethod
    def load(cls, directory: str | Path) -> "SplitNNPlatform":
        """A platform model part written by :meth:`save` (format 2), ready to answer predictions.

        With ``embedding_clip`` set, each answer carries fresh noise, as before saving.
        """
        from fedacq.learn import splitnn_nets as nets

        path = Path(directory)
        doc = read_model_file(path / PLATFORM_JSON, "fedacq.splitnn.platform/2")
        model = cls(init_seed=0)
        try:
            model.params_ = resolve_params(doc["params"])
            model.columns_ = Columns.from_dict(doc["columns"])
            model.bottom_ = nets.bottom(len(model.columns_.dense), model.columns_.cardinalities, model.params_, 0)
            arrays = _load_npz(path / PLATFORM_NPZ)
            model.bottom_.load_state_dict(_state_from_arrays(model.bottom_, arrays, "bottom", str(path / PLATFORM_NPZ)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path / PLATFORM_JSON}: not a valid split NN platform model: {exc}") from exc
        return model


# -- the central reference ---------------------------------------------------------------

def fit_central(X_lender: np.ndarray, X_platform: np.ndarray, y: np.ndarray, eval_set: tuple | None = None,
                random_state: int = 0, **params: Any) -> tuple[np.ndarray | None, list[dict[str, float]]]:
    """The same networks trained on joined data in one process: the reference for the federated run.

    Same column encodings, batches, optimiser and early stopping as
    :class:`SplitNNLender` / :class:`SplitNNPlatform`, and no clipping or
    noise; the initial weights are those of parties constructed with
    ``init_seed=random_state`` (federated parties draw secret seeds by default). Returns the validation logits (``eval_set`` =
    ``(X_lender_valid, X_platform_valid, y_valid)``) and the history.
    """
    import torch

    from fedacq.learn import splitnn_nets as nets

    p = resolve_params({**params, "embedding_clip": None, "gradient_clip": None})
    lender = SplitNNLender(random_state=random_state, init_seed=random_state, **p)
    lender._build(np.asarray(X_lender, dtype=np.float64))
    cols_p = Columns.fit(X_platform, p["categorical_features"], p["max_categories"])
    bottom_p = nets.bottom(len(cols_p.dense), cols_p.cardinalities, p, random_state * 10 + PLATFORM_BOTTOM)
    opt_l, opt_p = lender._optimizer(), nets.optimizer(bottom_p, p)
    dl, cl = nets.tensors(*lender.columns_.transform(X_lender))
    dp, cp = nets.tensors(*cols_p.transform(X_platform))
    y = np.asarray(y, dtype=np.float64)
    yt = torch.as_tensor(y, dtype=torch.float32)
    if eval_set is not None:
        dlv, clv = nets.tensors(*lender.columns_.transform(eval_set[0]))
        dpv, cpv = nets.tensors(*cols_p.transform(eval_set[1]))
        yv = np.asarray(eval_set[2], dtype=np.float64)
    stopper = EarlyStopping(p["n_iter_no_change"], tol=p["tol"])
    history: list[dict[str, float]] = []
    best_valid = None
    for epoch in range(p["max_iter"]):
        for rows in batches(len(y), p["batch_size"], random_state, epoch):
            lender.bottom_.train(), lender.top_.train(), bottom_p.train()
            idx = torch.as_tensor(rows)
            h = bottom_p(dp[idx], cp[idx])
            grad = lender._batch_step(dl[idx], cl[idx], yt[idx], h, opt_l)
            opt_p.zero_grad()
            h.backward(grad / len(rows))
            opt_p.step()
        lender.bottom_.eval(), lender.top_.eval(), bottom_p.eval()
        with torch.no_grad():
            metrics = {"epoch": epoch, **_metrics("train", y, lender._logits(dl, cl, bottom_p(dp, cp)).numpy())}
            valid = None
            if eval_set is not None:
                valid = lender._logits(dlv, clv, bottom_p(dpv, cpv)).numpy().astype(np.float64)
                metrics.update(_metrics("valid", yv, valid))
        history.append(metrics)
        monitor = "valid_logloss" if eval_set is not None and p["early_stopping"] else "train_logloss"
        stop = stopper.update(epoch, metrics[monitor])  # the loop ends at max_iter by itself
        if stopper.best_iteration == epoch:
            best_valid = valid
        if stop:
            break
    return best_valid, history
