"""Two-party vertical (hetero) logistic regression, no third party: the lender holds the key.

The lender (active party) holds labels, its own features and the Paillier
private key; the platform (passive party) holds features. Rows are the PSI
intersection in the same order on both sides. The model is
``sigmoid(b + X_l w_l + X_p w_p)``: the lender owns ``b`` and ``w_l``, the
platform owns ``w_p``, and neither weight vector ever leaves its owner. There
is no arbiter: FATE's coordinated LR needs a third party to hold the key; here
the platform masks what it sends back instead.

Objective (``objective``, XGBoost's names; :mod:`fedacq.learn.hetero_lr_objectives`)
    ``binary:logistic`` (default; the model above), ``reg:squarederror``
    (identity link), ``count:poisson`` and ``reg:tweedie`` (log link): the same
    protocol, because the lender sees every row's full margin and computes the
    per-row derivative ``r = dloss/dz`` itself; only the bound on ``|r|``
    differs (``residual_bound``: 1 for logistic, a power of two chosen from the
    labels otherwise, announced in ``hlr.hello``; residuals beyond it are
    clipped at both parties' updates alike). ``multi:softprob`` is refused with
    the reason. Penalised as scikit-learn's ``LogisticRegression`` (divided by
    the row count n): mean loss + ``||w||^2 / (2 C n)`` (``penalty="l2"``) or
    ``||w||_1 / (C n)`` (``penalty="l1"``, applied as a proximal soft-threshold
    step); the intercept is not penalised. Each party standardises its own
    columns on its training rows (as ``StandardScaler`` on the joined data
    would, column by column) and imputes missing values with the mean.

Steps (every step is one message over a :class:`~fedacq.link.link.Link`)
    1. ``hlr.hello`` L->P: parameters, the public key, row counts, the seed.
       ``hlr.hello_reply`` P->L: the platform's row and feature counts. Both
       refuse ``batch_size <= d_p`` and ``n <= d_p`` (see *what the platform
       learns*). The platform refuses a public key under its own
       ``min_key_bits``, whatever the lender announces.
    2. Per epoch both parties draw the same row permutation from the seed and
       cut it into mini-batches with :func:`batches`: ``n // batch_size``
       batches, the remainder merged into the last one, so every batch has
       at least ``min(batch_size, n)`` rows. Per mini-batch B:

       a. ``hlr.logits`` P->L: the platform's partial logits ``X_p[B] w_p``, in
          plaintext.
       b. The lender computes residuals ``r = sigmoid(z) - y`` (the
          objective's ``dloss/dz``, clipped to ``residual_bound``) and its own
          gradient, updates ``b, w_l`` and sends ``hlr.residuals``: ``[[r / residual_bound]]``,
          one fixed-point ciphertext per row (``residual_frac_bits``), and the
          step size of the schedule. The ciphertexts' randomness was computed
          while the platform worked on the batch before (:class:`_FactorsAhead`):
          encrypting is one multiply per row.
       c. The platform computes ``[[X_p[B]^T r]]``: its standardised features
          quantised to ``feature_frac_bits`` fractional bits are small signed
          integers, so each of the d_p sums is one multi-exponentiation
          (:func:`encrypted_dot`: one bucket per distinct value, one
          ciphertext multiply per row and feature plus two per distinct value;
          a feature's most frequent value through one product shared by all
          features, :func:`column_defaults`), the features split over the
          party's worker processes, which also pack the sums into slots of a
          few ciphertexts. It offsets the slots to be non-negative, adds ONE
          mask ``M`` uniform in ``Z_n`` to each packed ciphertext
          (:func:`mask_gradient`), re-randomises (``obfuscate``) and sends
          ``hlr.gradient``.
       d. The lender decrypts and returns ``P + M mod n`` in ``hlr.unmask``;
          the platform subtracts ``M`` mod n, unpacks the slots itself
          (refusing any outside the range honest residuals give:
          :func:`unmask_gradient`), scales, adds its penalty term and updates
          ``w_p``.
    3. End of epoch: ``hlr.epoch`` P->L: the platform's partial logits of all
       training (and validation) rows, so the lender can compute the loss and
       AUC; ``hlr.epoch_done`` L->P: whether this epoch is the best so far
       (both keep a copy of their weights then) and whether to stop (no
       improvement above ``tol`` for ``n_iter_no_change`` epochs, or
       ``max_iter`` reached). At the stop both restore their best weights.
    Inference: ``hlr.predict`` L->P (row count), ``hlr.predict_logits`` P->L
    (partial logits of those rows).

What each party learns
    Lender: its own data and weights; the platform's *partial logits*
    ``X_p w_p`` for every row it trains or scores, in plaintext (as in most
    hetero-LR protocols). Over many steps this is more than a score: the
    lender knows the residuals and step sizes it sent, and the change of the
    partial logits between steps is ``-lr/|B| X_p X_p[B]^T r``, so it can
    learn inner products between platform rows (the Gram matrix of the
    platform's features, i.e. the features up to a rotation), but not the
    features, their names or ``w_p``. What it decrypts is uniform in ``Z_n``
    whatever it encrypted (one uniform mask per packed ciphertext): a lender
    that encrypts residuals far beyond ``[-1, 1]`` to lift a platform row's
    features above the slots reads noise, and the platform refuses its answer
    (the job stops). The ciphertexts it receives are re-randomised, so it
    cannot learn the platform's quantised features from their randomness.
    Platform: ciphertexts of residuals only, never a label or residual in
    plaintext; the row count, the step sizes and the early-stopping decisions;
    the objective and ``residual_bound`` (for regression objectives one power
    of two: the order of magnitude of the lender's largest starting residual);
    and the gradient of its *own* weights ``X_p[B]^T r / |B|`` per batch
    (it must, to update them). That gradient is d_p linear combinations of the
    |B| residuals of the batch: with ``|B| <= d_p`` the platform could solve
    for them, and so for the labels (the sign of ``p - y`` is the label),
    which is why both parties refuse ``batch_size <= d_p`` and no batch is
    ever shorter than ``batch_size`` (a short last batch of an epoch was
    exactly such a solvable system). Each batch's system is then
    underdetermined (``batch_size >= 4 d_p`` is a sensible floor in
    production; the node's ``hetero_lr_min_batch_size`` policy sets it).
    That is a per-batch statement: over many epochs the platform collects
    ``d_p`` equations per batch about the same labels, with the lender's
    changing logits as further unknowns; ``protocols/hetero_lr.md`` says what
    that does and does not rule out.
"""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedacq.crypto.paillier import MIN_KEY_BITS, PARALLEL_THRESHOLD
from fedacq.learn import hetero_lr_objectives as objectives
from fedacq.learn.early_stopping import EarlyStopping
from fedacq.crypto.powmod import compress_chunks
from fedacq.learn.histogram import CiphertextTable
from fedacq.learn.objectives import Objective
from fedacq.learn.metrics import metric_key
from fedacq.link.link import Link
from fedacq.link.message import BigInts, Message, MessageSpec, PartSpec, register

PENALTIES = ("l2", "l1", None)
#: the model part each party saves (:meth:`HeteroLRLender.save`, :meth:`HeteroLRPlatform.save`)
LENDER_FILE, PLATFORM_FILE = "hetero_lr_lender.json", "hetero_lr_platform.json"
SCHEDULES = ("constant", "invscaling", "adaptive")
SOLVERS = ("adam", "sgd")

register(
    MessageSpec("hlr.hello", header={"config": str}),
    MessageSpec("hlr.hello_reply", header={"n_rows": int, "n_eval_rows": int, "n_features": int}),
    MessageSpec("hlr.logits", header={"epoch": int, "batch": int},
                parts={"logits": PartSpec(dtypes=("float64",), ndim=1)}),
    MessageSpec("hlr.residuals", header={"epoch": int, "batch": int, "step_size": float},
                parts={"residuals": PartSpec(kind="bigints")}),
    MessageSpec("hlr.gradient", header={"epoch": int, "batch": int},
                parts={"gradient": PartSpec(kind="bigints")}),
    MessageSpec("hlr.unmask", header={"epoch": int, "batch": int},
                parts={"values": PartSpec(kind="bigints")}),
    MessageSpec("hlr.epoch", header={"epoch": int},
                parts={"train_logits": PartSpec(dtypes=("float64",), ndim=1),
                       "eval_logits": PartSpec(dtypes=("float64",), ndim=1, optional=True)}),
    MessageSpec("hlr.epoch_done", header={"epoch": int, "improved": bool, "stop": bool}),
    MessageSpec("hlr.predict", header={"n_rows": int}),
    MessageSpec("hlr.predict_logits", header={"n_rows": int},
                parts={"logits": PartSpec(dtypes=("float64",), ndim=1)}),
)


# -- shared helpers ----------------------------------------------------------------------

def batches(n: int, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """The mini-batches (row positions) of one epoch: the same at both parties from the seed.

    Rule: a seeded permutation of the ``n`` rows is cut into ``n // batch_size``
    batches of ``batch_size`` rows, and the remainder (fewer than
    ``batch_size`` rows) is merged into the last of them, which then has
    ``batch_size`` to ``2 * batch_size - 1`` rows; with ``n < batch_size`` the
    epoch is one batch of all ``n`` rows. So no batch is ever smaller than
    ``min(batch_size, n)``: a short tail batch would hand the platform a
    gradient it can solve for the residuals of those few rows (hetero LR), or
    a gradient computed on very few labels (split NN). Both parties call this
    one function, so they agree on every batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    if n == 0:
        return []
    starts = list(range(0, max(n // batch_size, 1) * batch_size, batch_size))
    ends = starts[1:] + [n]
    return [perm[a:b] for a, b in zip(starts, ends)]


def step_size(schedule: str, eta0: float, power_t: float, epoch: int, adaptive_eta: float) -> float:
    """The learning-rate schedule (scikit-learn's names), per epoch."""
    if schedule == "constant":
        return eta0
    if schedule == "invscaling":
        return eta0 / (epoch + 1) ** power_t
    return adaptive_eta


class Standardizer:
    """Column means and scales of one party's training rows; missing values become the mean."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray) -> None:
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)

    @classmethod
    def fit(cls, X: np.ndarray) -> "Standardizer":
        X = np.asarray(X, dtype=np.float64)
        mean = np.nanmean(X, axis=0) if X.shape[0] else np.zeros(X.shape[1])
        mean = np.where(np.isfinite(mean), mean, 0.0)
        std = np.nanstd(X, axis=0) if X.shape[0] else np.ones(X.shape[1])
        std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
        return cls(mean, std)

    def transform(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean):
            raise ValueError(f"expected a 2-D array with {len(self.mean)} columns, got shape {X.shape}")
        Z = (X - self.mean) / self.scale
        return np.where(np.isnan(Z), 0.0, Z)

    def to_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist()}

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> "Standardizer":
        """The inverse of :meth:`to_dict` (a model file): equal lengths, finite, positive scales."""
        mean, scale = np.asarray(doc["mean"], dtype=np.float64), np.asarray(doc["scale"], dtype=np.float64)
        if mean.ndim != 1 or mean.shape != scale.shape or not np.isfinite(mean).all() or \
                not (np.isfinite(scale) & (scale > 0)).all():
            raise ValueError("scaler: mean and scale must be finite lists of one length, scales > 0")
        return cls(mean, scale)


class Optimizer:
    """Mini-batch Adam or SGD with momentum, with scikit-learn's penalty scaled per row.

    Both are per coordinate, so each party runs the optimiser on its own
    weights with nothing shared. Adam (``solver="adam"``, the default) is what
    converges on the strongly correlated columns of credit data (bill amounts
    of consecutive months) in a few epochs, where plain SGD crawls. L1 is a
    proximal soft-threshold after the step.
    """

    def __init__(self, n_weights: int, penalty: str | None, C: float, n_rows: int, momentum: float,
                 intercept_last: bool = False, solver: str = "adam") -> None:
        self.penalty, self.C, self.n_rows, self.momentum = penalty, C, n_rows, momentum
        self.solver = solver
        self.velocity = np.zeros(n_weights)
        self.second = np.zeros(n_weights)
        self.t = 0
        #: 1 for penalised weights, 0 for an intercept (scikit-learn does not penalise it)
        self.penalised = np.ones(n_weights)
        if intercept_last:
            self.penalised[-1] = 0.0

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The step count and moments, as checkpoint (meta, arrays): a resumed run takes the same steps."""
        return {"opt_t": self.t}, {"opt_velocity": self.velocity.copy(), "opt_second": self.second.copy()}

    def restore(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        """The state :meth:`state` gave, from this party's own checkpoint (shapes checked)."""
        velocity = np.asarray(arrays["opt_velocity"], dtype=np.float64)
        second = np.asarray(arrays["opt_second"], dtype=np.float64)
        t = meta["opt_t"]
        if velocity.shape != self.velocity.shape or second.shape != self.second.shape or \
                not isinstance(t, int) or isinstance(t, bool) or t < 0:
            raise ValueError(f"optimiser checkpoint: moments of shape {velocity.shape} for "
                             f"{self.velocity.shape[0]} weights, step {t!r}")
        self.velocity, self.second, self.t = velocity, second, t

    def step(self, w: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
        if self.penalty == "l2":
            grad = grad + self.penalised * w / (self.C * self.n_rows)
        if self.solver == "adam":  # beta_1 = momentum, beta_2 = 0.999 (Kingma & Ba defaults)
            self.t += 1
            self.velocity = self.momentum * self.velocity + (1 - self.momentum) * grad
            self.second = 0.999 * self.second + 0.001 * grad * grad
            m_hat = self.velocity / (1 - self.momentum ** self.t)
            v_hat = self.second / (1 - 0.999 ** self.t)
            step = lr / (np.sqrt(v_hat) + 1e-8)  # per-coordinate step: the prox below uses it too
            w = w - step * m_hat
        else:
            step = np.full_like(w, lr)
            self.velocity = self.momentum * self.velocity - lr * grad
            w = w + self.velocity
        if self.penalty == "l1":
            t = self.penalised * step / (self.C * self.n_rows)
            w = np.sign(w) * np.maximum(np.abs(w) - t, 0.0)
        return w


def _check_params(penalty: str | None, C: float, max_iter: int, batch_size: int, learning_rate: Any,
                  eta0: float, power_t: float, momentum: float, n_iter_no_change: int,
                  residual_frac_bits: int, feature_frac_bits: int, solver: str = "adam",
                  objective: str = "binary:logistic", tweedie_variance_power: float = 1.5,
                  residual_bound: float | None = None) -> None:
    objectives.get(objective, tweedie_variance_power)
    if residual_bound is not None:
        if objective == "binary:logistic" and residual_bound != 1:
            raise ValueError("binary:logistic residuals are below 1 in size: residual_bound must be None or 1")
        objectives.check_residual_bound(residual_bound)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if penalty not in PENALTIES:
        raise ValueError(f"penalty must be one of 'l2', 'l1' or None, got {penalty!r}")
    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    if max_iter < 1 or batch_size < 1 or n_iter_no_change < 1:
        raise ValueError("max_iter, batch_size and n_iter_no_change must be >= 1")
    if learning_rate not in SCHEDULES:
        hint = (" (learning_rate is the schedule's name, as in scikit-learn's SGDClassifier; "
                "set the initial step size with eta0)") if isinstance(learning_rate, (int, float)) else ""
        raise ValueError(f"learning_rate must be one of {', '.join(SCHEDULES)}, got {learning_rate!r}{hint}")
    if not eta0 > 0 or power_t < 0:
        raise ValueError(f"eta0 must be > 0 and power_t >= 0 (got {eta0}, {power_t})")
    if not 0 <= momentum < 1:
        raise ValueError(f"momentum must be in [0, 1), got {momentum}")
    if not 4 <= residual_frac_bits <= 40 or not 0 <= feature_frac_bits <= 16:
        raise ValueError("residual_frac_bits must be in [4, 40] and feature_frac_bits in [0, 16]")


def _check_batch(batch_size: int, n_rows: int, n_platform_features: int, who: str) -> None:
    """Refuse any batching with a batch of at most ``d_p`` rows (see :func:`batches` for the sizes)."""
    if batch_size <= n_platform_features:
        raise ValueError(f"{who}: batch_size={batch_size} must exceed the platform's {n_platform_features} "
                         "features, or the platform could solve its gradients for the residuals (labels)")
    if n_rows <= n_platform_features:
        raise ValueError(f"{who}: {n_rows} training rows must exceed the platform's {n_platform_features} "
                         "features, or the platform could solve its gradient for the residuals (labels)")


# -- the platform's encrypted gradient ----------------------------------------------------

#: magnitudes up to this many bits are bucketed as a pair of half-width codes (:func:`_multiexp`): at most
#: 2^6 x 2^6 cells, whose four lane copies the kernel keeps (10 MB at 4096 bits)
JOINT_MAGNITUDE_BITS = 12


def _chain_cost(keys: Sequence[int]) -> float:
    """Multiplies :func:`_combine`'s running product spends on descending distinct ``keys``."""
    cost = 0.0
    for k, nxt in zip(keys, [*keys[1:], 0]):
        gap = k - nxt
        cost += 2 if gap == 1 else 2 + 1.5 * gap.bit_length()  # a gap is one powmod
    return cost


def _combine(buckets: dict[int, mpz], nsq: mpz) -> mpz:
    """``prod_d buckets[d]^d mod nsq`` for distinct positive ``d``.

    Running product: over descending ``d``, ``running`` is the product of the
    buckets at or above ``d`` and is multiplied into the total once per unit
    step of ``d``, so bucket ``d`` counts ``d`` times: two multiplies per
    bucket where the ``d`` are consecutive, a power where they skip. Wide,
    sparse ``d`` (the tail of a feature's values, or long fixed-point values)
    are split first by radix, ``d = 2^w h + l`` with ``l < 2^w``::

        prod_d B_d^d = prod_l L_l^l * (prod_h H_h^h)^(2^w),
        L_l = prod_{d mod 2^w = l} B_d,   H_h = prod_{d >> w = h} B_d,

    two multiplies per bucket and two combines over at most ``2^w`` and
    ``d_max / 2^w`` keys, each done the same way. The split is taken when it
    costs fewer multiplies than the running product (:func:`_chain_cost`).
    """
    keys = sorted(buckets, reverse=True)
    w = (keys[0].bit_length() + 1) // 2
    if len(keys) > 2 and w > 1:
        mask = (1 << w) - 1
        lows = sorted({d & mask for d in keys} - {0}, reverse=True)
        highs = sorted({d >> w for d in keys} - {0}, reverse=True)
        split = 2 * len(keys) - len(lows) - len(highs) + _chain_cost(lows) + _chain_cost(highs) + w
        if split < _chain_cost(keys):
            low: dict[int, mpz] = {}
            high: dict[int, mpz] = {}
            for d in keys:
                for part, key in ((low, d & mask), (high, d >> w)):
                    if key:
                        b = part.get(key)
                        part[key] = buckets[d] if b is None else b * buckets[d] % nsq
            total = gmpy2.powmod(_combine(high, nsq), 1 << w, nsq) if high else mpz(1)
            return total * _combine(low, nsq) % nsq if low else total
    running, total = mpz(1), mpz(1)
    for k, nxt in zip(keys, [*keys[1:], 0]):
        running = running * buckets[k] % nsq
        gap = k - nxt
        total = total * (running if gap == 1 else gmpy2.powmod(running, gap, nsq)) % nsq
    return total


def _multiexp(table: CiphertextTable, n_bases: int, ks: np.ndarray, nsq: mpz) -> mpz:
    """``prod_i bases[i]^ks[i] mod nsq`` for signed int64 ``ks``; ``table`` holds the bases, then their inverses.

    Bucket method: each row is multiplied into the bucket of its magnitude
    ``|k|`` (its base, or the inverse for a negative ``k``), then
    :func:`_combine` raises each bucket to its magnitude: about one multiply
    per row with a non-zero ``k`` plus two per distinct magnitude, whatever
    the width of ``k``. The buckets are the histogram kernel's cells
    (:meth:`fedacq.learn.histogram.CiphertextTable.bin_sums`: compiled, four
    products at a time). Magnitudes of up to :data:`JOINT_MAGNITUDE_BITS`
    bits are split as ``|k| = 2^w h + l`` and bucketed as a pair of codes
    ``(h, l)``, so the kernel also folds the buckets into ``H_h`` and ``L_l``
    and only ``prod_h H_h^h`` (raised to ``2^w``) and ``prod_l L_l^l``, a few
    dozen keys each, are left to :func:`_combine` (``prod_d B_d^d =
    (prod_h H_h^h)^(2^w) prod_l L_l^l``).
    """
    mags = np.abs(ks)
    rows = np.flatnonzero(mags)
    if not rows.size:
        return mpz(1)
    picks = np.where(ks[rows] < 0, rows + n_bases, rows)
    mags = mags[rows]
    bits = int(mags.max()).bit_length()
    if bits <= JOINT_MAGNITUDE_BITS:
        w = (bits + 1) // 2
        radix = 1 << w
        high, low = table.bin_sums(picks, (mags >> w) * radix + (mags & (radix - 1)), [radix, radix], [radix, radix])
        parts = [{d: b for d, b in enumerate(sums) if d and b != 1} for sums in (high, low)]
        total = gmpy2.powmod(_combine(parts[0], nsq), radix, nsq) if parts[0] else mpz(1)
        return total * _combine(parts[1], nsq) % nsq if parts[1] else total
    values, codes = np.unique(mags, return_inverse=True)
    sums = table.bin_sums(picks, codes, [len(values)], [len(values)])[0]
    return _combine(dict(zip(values.tolist(), sums)), nsq)


def _column_cost(ks: np.ndarray) -> int:
    """Multiplies :func:`_multiexp` spends on ``ks``, about: non-zero rows plus distinct magnitudes."""
    mags = np.abs(ks)
    return int(np.count_nonzero(mags)) + len(np.unique(mags[mags > 0]))


def column_defaults(K: np.ndarray) -> np.ndarray:
    """Per column of ``K``, the value taken out of every row and added back once (0: none).

    Shared work: with ``C = prod_i [[m_i]]`` (one product per batch, every
    column's), ``sum_i K_ij m_i = v_j sum_i m_i + sum_i (K_ij - v_j) m_i``, so a
    column whose most frequent value ``v_j`` fills many rows (a binary, count
    or sparse feature) needs the rows with ``K_ij != v_j`` only, ``C`` entering
    the multi-exponentiation as one more base with exponent ``v_j``. A column
    takes its default where that saves multiplies, and defaults are used only
    if together they save more than ``C`` costs (one multiply per row).
    """
    n, d = K.shape
    defaults = np.zeros(d, dtype=np.int64)
    saved = 0
    run = max(n // 32, 1)  # only a value filling more than 1/32 of the rows can pay: found on sorted columns
    S = np.sort(K, axis=0)
    for j in np.flatnonzero((S[run:] == S[:-run]).any(axis=0)).tolist():
        values, counts = np.unique(K[:, j], return_counts=True)
        v = int(values[np.argmax(counts)])
        if v:
            gain = _column_cost(K[:, j]) - _column_cost(np.append(K[:, j] - v, v))
            if gain > 0:
                defaults[j], saved = v, saved + gain
    return defaults if saved > n else np.zeros(d, dtype=np.int64)


def _packed_columns(nsq: int, bases: list, inverses: list, K: np.ndarray, first: int, capacity: int,
                    slot_bits: int) -> list[tuple[int, mpz]]:
    """The multi-exponentiations of columns ``first, first + 1, ...`` (the columns of ``K``), packed.

    Column ``j`` goes to packed ciphertext ``j // capacity`` at bit ``(j %
    capacity) * slot_bits``: the part of each packed ciphertext these columns
    make is returned as ``(index, ciphertext)``; the parts of one packed
    ciphertext from several blocks multiply together. The packing is the
    histogram kernel's compression (Horner's rule in C), the slots below
    ``first`` in its first packed ciphertext filled with 1 (an encryption of
    0 with no randomness: it adds nothing). A worker-process entry point: the
    key's public modulus, the residual ciphertexts, their inverses and the
    platform's own quantised features.
    """
    nsq = mpz(nsq)
    table = CiphertextTable.from_ints([*bases, *inverses], nsq)
    columns = [_multiexp(table, len(bases), K[:, j], nsq) for j in range(K.shape[1])]
    if capacity == 1:
        return list(enumerate(columns, start=first))
    packed = compress_chunks([mpz(1)] * (first % capacity) + columns, slot_bits, capacity, nsq)
    return list(enumerate(packed, start=first // capacity))


def encrypted_dot(public_key: Any, ciphertexts: list[mpz], K: np.ndarray, n_jobs: int | None = None,
                  slot_bits: int | None = None, inverses: list[mpz] | None = None) -> list[mpz]:
    """Ciphertexts of ``K^T m`` for ``[[m]]`` = ``ciphertexts`` and a small-int matrix ``K`` (rows x d).

    One ciphertext per column, or with ``slot_bits`` the columns packed as
    :func:`~fedacq.crypto.paillier.compress` packs them (``capacity`` sums of
    ``slot_bits`` bits per ciphertext; each sum must be non-negative and fit,
    which :func:`mask_gradient`'s offset sees to). Negative entries use the
    inverse ciphertexts (``inverses``, or computed here). Columns with a
    frequent value share one product of all ciphertexts (:func:`column_defaults`).
    Columns are split evenly over the process pool when there is enough work;
    a packed ciphertext cut between two workers is the product of their parts.
    """
    from fedacq.crypto import parallel
    from fedacq.crypto.paillier import compress_capacity

    K = np.asarray(K, dtype=np.int64)
    n_rows, d = K.shape
    if n_rows != len(ciphertexts):
        raise ValueError(f"{n_rows} feature rows for {len(ciphertexts)} ciphertexts")
    nsq = public_key.ciphertext_modulus
    if inverses is None:
        inverses = _inverses(public_key, ciphertexts)
    capacity = 1 if slot_bits is None else compress_capacity(public_key, slot_bits)
    defaults = column_defaults(K)
    bases = list(ciphertexts)
    if defaults.any():  # one more base, the product of all, with exponent v_j (a unit: all are)
        total = mpz(1)
        for c in ciphertexts:
            total = total * c % nsq
        bases.append(total)
        inverses = [*inverses, gmpy2.invert(total, nsq)]
        K = np.vstack([K - defaults, defaults])
    workers = min(parallel.resolve_workers(n_jobs, K.size, 1 << 16), d)
    bounds = np.linspace(0, d, max(workers, 1) + 1).astype(int)
    blocks = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if workers <= 1:
        parts = [p for a, b in blocks for p in _packed_columns(int(nsq), bases, inverses, K[:, a:b], a, capacity,
                                                                 slot_bits or 0)]
    else:
        pool = parallel._get_pool(workers)
        futures = [pool.submit(_packed_columns, int(nsq), bases, inverses, K[:, a:b], a, capacity, slot_bits or 0)
                   for a, b in blocks]
        parts = parallel._gather(workers, futures)
    out = [mpz(1)] * -(-d // capacity)
    for k, c in parts:
        out[k] = out[k] * c % nsq
    return out


def _inverses(public_key: Any, ciphertexts: Sequence[mpz]) -> list[mpz]:
    """The inverses of ``ciphertexts`` mod ``n^2``, refusing any that is not a unit (``gcd(c, n) > 1``).

    Montgomery's trick: one inversion of the product and three multiplies per
    ciphertext, in place of an inversion each. A ciphertext that is not a
    unit decrypts mod ``p`` (or ``q``) the same whatever it is multiplied by,
    mask included: a lender sending one for a row would learn from the
    decrypted gradient whether that row's features packed in a ciphertext are
    all zero. An honest encryption is always a unit; the refusal names the
    first one that is not.
    """
    nsq, n = public_key.ciphertext_modulus, public_key.n
    prefix, acc = [], mpz(1)
    for c in ciphertexts:
        prefix.append(acc)
        acc = acc * c % nsq
    if gmpy2.gcd(acc, n) != 1:
        bad = next(i for i, c in enumerate(ciphertexts) if gmpy2.gcd(c, n) != 1)
        raise ValueError(f"hlr.residuals: ciphertext {bad} is not invertible under the lender's key")
    inv = gmpy2.invert(acc, nsq)  # (c_0 ... c_{k})^-1, walked down
    out = [mpz(0)] * len(ciphertexts)
    for i in range(len(ciphertexts) - 1, -1, -1):
        out[i] = inv * prefix[i] % nsq
        inv = inv * ciphertexts[i] % nsq
    return out


# -- the platform's one mask per packed ciphertext ------------------------------------------

#: the additive HE schemes hetero LR runs on: Paillier only. The gradient mask must be uniform over
#: the plaintext group the lender decrypts in, and the platform must take it back off. Paillier's is
#: ``Z_n``, public. Okamoto–Uchiyama's is ``Z_p`` with ``p`` the lender's secret (``n = p^2 q``):
#: a mask the platform can draw without ``p`` is either narrower than ``p`` (a lender encrypting
#: residuals of ``2^T`` for one row, ``T`` above the mask's width, reads that row's quantised
#: features back above the mask) or wider (``(P + M) mod p`` wraps: the platform cannot unmask
#: without ``p``, and ``P + M - value`` returned to it would be a multiple of ``p``, factoring
#: ``n``). So OU is refused, by both parties, before any key is made or read.
SCHEMES = ("paillier",)


def check_scheme(scheme: str, what: str) -> None:
    """Refuse a scheme hetero LR cannot run on soundly (:data:`SCHEMES`), saying why."""
    if scheme not in SCHEMES:
        raise ValueError(f"{what}: hetero LR runs on {list(SCHEMES)} only, not scheme {scheme!r}: the platform's "
                         "gradient mask must be uniform over the plaintext group the lender decrypts in, and "
                         "under OU that is Z_p with p the lender's secret (see fedacq.learn.hetero_lr.SCHEMES)")


def gradient_layout(K: np.ndarray, max_rows: int, residual_frac_bits: int) -> tuple[int, int]:
    """``(offset_bits, slot_bits)`` of the platform's packed gradient sums, for a whole job.

    An honest sum ``g = sum_i K_ij R_i`` over at most ``max_rows`` rows, with
    ``|R_i| <= 2^residual_frac_bits`` (the lender encodes ``r / residual_bound``
    in [-1, 1]), has ``|g| < 2^offset_bits``, so ``g + 2^offset_bits`` lies in
    ``[0, 2^(offset_bits + 1))``. A slot is one bit wider than that: the top
    bit of every slot is a guard an honest lender never sets (see
    :func:`unmask_gradient`).
    """
    top = int(np.abs(K).max()) if K.size else 0
    offset_bits = (max_rows * max(top, 1) << residual_frac_bits).bit_length()
    return offset_bits, offset_bits + 2


def mask_gradient(public_key: Any, packed: Sequence[mpz], offset_bits: int, slot_bits: int,
                  count: int) -> tuple[Any, list[int]]:
    """Offset the ``count`` packed sums ``[[g_j]]`` to ``[[g_j + 2^offset_bits]]``; ONE mask per packed ciphertext.

    ``packed`` is :func:`encrypted_dot` with ``slot_bits``: ``sum_j g_j 2^(j s)``
    per ciphertext, ``g_j`` signed. Adding ``O = sum_j 2^offset_bits 2^(j s)``
    makes every slot the non-negative ``g_j + 2^offset_bits`` (an honest sum
    has ``|g_j| < 2^offset_bits``), and in the same plaintext factor the mask:
    each mask ``M`` is uniform in ``Z_n`` (``secrets.randbelow``), so what the
    lender decrypts, ``P + M mod n``, is uniform whatever ``P`` is, i.e. whatever
    it encrypted as residuals: a lender that sends out-of-range residuals to
    push one row's features above the slots (or anywhere else) decrypts noise.
    (A mask per slot, only 64 bits wider than an honest sum, hid nothing
    above the masked slots.) The ciphertexts are then re-randomised, so their
    randomness says nothing about the features either. Returns the masked
    ciphertexts and their masks, which :func:`unmask_gradient` takes back.
    """
    from fedacq.crypto.paillier import compress_capacity

    n, nsq = public_key.n, public_key.ciphertext_modulus
    capacity = compress_capacity(public_key, slot_bits)
    if len(packed) != -(-count // capacity):
        raise ValueError(f"{len(packed)} packed ciphertexts cannot hold exactly {count} sums")
    masks = [secrets.randbelow(int(n)) for _ in packed]  # Z_n: Paillier's plaintext group (SCHEMES)
    offsets = [sum(1 << (offset_bits + slot_bits * j) for j in range(min(capacity, count - k * capacity)))
               for k in range(len(packed))]
    factors = public_key.plain_factors([mpz((o + m) % n) for o, m in zip(offsets, masks)])
    masked = [c * f % nsq for c, f in zip(packed, factors)]
    return public_key.vector_from_bigints(BigInts(masked, public_key.ciphertext_bytes)).obfuscate(), masks


def unmask_gradient(public_key: Any, values: BigInts, masks: Sequence[int], offset_bits: int, slot_bits: int,
                    count: int) -> list[int]:
    """The ``count`` gradient sums from the lender's decryptions ``P + M mod n`` (``hlr.unmask``).

    The values are checked against the key (as many as packed ciphertexts,
    ``n``-byte integers below ``n``); then ``P = value - M mod n`` is unpacked
    here, at the platform. A slot out of the honest range (bits above the last
    slot, or a guard bit set) can only come from a lender that encrypted
    residuals beyond ``[-1, 1]`` or returned a wrong decryption: that is refused,
    and the job stops. Whatever such a lender does, it changes only this
    party's own gradient (as in-range but wrong residuals would, undetectably).
    """
    from fedacq.crypto.paillier import compress_capacity

    n = int(public_key.n)
    width = (public_key.n_bits + 7) // 8
    if values.width != width:
        raise ValueError(f"hlr.unmask: values of {values.width} bytes, expected {width} (the key's n)")
    if len(values) != len(masks):
        raise ValueError(f"hlr.unmask: {len(values)} values for {len(masks)} packed ciphertexts")
    capacity = compress_capacity(public_key, slot_bits)
    slot, guard, offset = (1 << slot_bits) - 1, 1 << (offset_bits + 1), 1 << offset_bits
    out: list[int] = []
    for i, (v, m) in enumerate(zip(values.values, masks)):
        if not 0 <= v < n:
            raise ValueError(f"hlr.unmask: value {i} is not below the key's n")
        p = (v - m) % n
        k = min(capacity, count - i * capacity)
        sums = [(p >> (slot_bits * j)) & slot for j in range(k)]
        if p >> (slot_bits * k) or any(s >= guard for s in sums):
            raise ValueError(f"hlr.unmask: value {i} does not unmask to {k} sums of honest residuals "
                             "(|r| <= residual_bound): the lender encrypted residuals out of range or "
                             "returned a wrong decryption")
        out.extend(s - offset for s in sums)
    return out


# -- lender ------------------------------------------------------------------------------

class _FactorsAhead:
    """The random factors of each batch's residual ciphertexts, computed one batch ahead by the key owner.

    A Paillier ciphertext is ``(1 + m n) r mod n^2`` with ``r = h_s^x`` (an
    encryption of 0): ``r`` is nearly all of the work and does not depend on
    ``m``. So the lender computes the next batch's factors in its own worker
    processes (the CRT path of :meth:`~fedacq.crypto.paillier.PrivateKey.encrypt_raw`,
    on zeros) while the platform computes this batch's gradient, and encrypting
    the residuals is one multiply per row
    (:meth:`~fedacq.crypto.paillier.PublicKey.encrypt_with_factors`): the same
    ciphertexts' distribution as encrypting them whole. Each factor is used
    once. Batch sizes repeat every epoch (:func:`batches`). With one worker
    nothing runs ahead: the factors are computed when taken.
    """

    def __init__(self, private_key: Any, sizes: Sequence[int], workers: int | None) -> None:
        from fedacq.crypto import parallel

        self.private_key, self.sizes, self.index = private_key, list(sizes), 0
        # workers=None: the pool only for an epoch of at least PARALLEL_THRESHOLD rows (it costs a start)
        self.workers = parallel.resolve_workers(workers, sum(self.sizes), PARALLEL_THRESHOLD)
        self._pending = self._submit()

    def _submit(self) -> tuple[list, int]:
        from fedacq.crypto import parallel

        count = self.sizes[self.index % len(self.sizes)]
        self.index += 1
        if self.workers <= 1:
            return [], count
        pool, spec = parallel._get_pool(self.workers), self.private_key.spec()
        return [pool.submit(parallel._encrypt_chunk, spec, [0] * len(chunk))
                for chunk in parallel._chunks(range(count), self.workers)], count

    def take(self) -> list[mpz]:
        """This batch's factors; the next batch's start."""
        from fedacq.crypto import parallel

        futures, count = self._pending
        factors = parallel._gather(self.workers, futures) if futures else \
            self.private_key.encrypt_raw_local([0] * count)
        self._pending = self._submit()
        return factors

    def cancel(self) -> None:
        for future in self._pending[0]:
            future.cancel()


class HeteroLRLender:
    """The active party: labels, private key, intercept and its own weights.

    ``objective`` (XGBoost's names, :mod:`fedacq.learn.hetero_lr_objectives`):
    ``binary:logistic``, ``reg:squarederror``, ``count:poisson`` or
    ``reg:tweedie`` (with ``tweedie_variance_power``). ``residual_bound``: the
    bound on each row's ``|dloss/dz|`` the platform sizes its encrypted sums
    for; ``None`` takes 1 for logistic (exact) and otherwise the power of two
    at least twice the largest starting residual on the training rows (one
    exponent the platform learns; give it yourself to reveal nothing
    data-dependent). Residuals beyond it are clipped, for both parties' updates.
    Early stopping watches the objective's first metric (logloss, rmse,
    poisson_nloglik, tweedie_nloglik). The platform's mask is uniform in ``Z_n``
    (see :func:`mask_gradient`), so it has no width to choose.
    """

    def __init__(self, objective: str = "binary:logistic", tweedie_variance_power: float = 1.5,
                 residual_bound: float | None = None, penalty: str | None = "l2", C: float = 1.0,
                 fit_intercept: bool = True, max_iter: int = 30, batch_size: int = 512,
                 learning_rate: str = "invscaling", solver: str = "adam", eta0: float = 0.05, power_t: float = 0.5,
                 momentum: float = 0.9, tol: float = 1e-4, n_iter_no_change: int = 3,
                 early_stopping: bool = True, residual_frac_bits: int = 24, feature_frac_bits: int = 8,
                 scheme: str = "paillier", key_bits: int = 2048, insecure_test_key: bool = False,
                 random_state: int = 0, n_jobs: int | None = None,
                 callback: Callable[[int, dict], Any] | None = None, checkpoints: Any = None) -> None:
        _check_params(penalty, C, max_iter, batch_size, learning_rate, eta0, power_t, momentum,
                      n_iter_no_change, residual_frac_bits, feature_frac_bits, solver,
                      objective, tweedie_variance_power, residual_bound)
        check_scheme(scheme, "hetero LR")
        self.objective = objective
        self.tweedie_variance_power = tweedie_variance_power
        self.residual_bound = residual_bound
        self.solver = solver
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.momentum = momentum
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.early_stopping = early_stopping
        self.residual_frac_bits = residual_frac_bits
        self.feature_frac_bits = feature_frac_bits
        self.scheme = scheme
        self.key_bits = key_bits
        self.insecure_test_key = insecure_test_key
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.callback = callback
        #: a :class:`fedacq.learn.run_checkpoints.RunCheckpoints` (node jobs): save after each epoch, resume
        self.checkpoints = checkpoints
        self.history_: list[dict[str, float]] = []
        self.timings_: dict[str, float] = {}

    def get_params(self) -> dict[str, Any]:
        """The model's parameters (JSON-able): ``hlr.hello`` carries them, the model file records them."""
        return {k: getattr(self, k) for k in (
            "objective", "tweedie_variance_power", "residual_bound", "penalty", "C", "fit_intercept", "max_iter", "batch_size", "learning_rate", "solver", "eta0", "power_t",
            "momentum", "tol", "n_iter_no_change", "early_stopping", "residual_frac_bits", "feature_frac_bits",
            "scheme", "key_bits", "random_state")}

    def fit(self, link: Link, X: np.ndarray, y: np.ndarray,
            eval_set: tuple[np.ndarray, np.ndarray] | None = None) -> "HeteroLRLender":
        from fedacq.crypto import scheme
        from fedacq.crypto.paillier import FixedPoint

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"lender features must be a 2-D array, got shape {X.shape}")
        y = np.asarray(y, dtype=np.float64)
        n = X.shape[0]
        if y.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), got {y.shape}")
        obj = self._objective()
        obj.check_labels(y)
        b0 = float(obj.base_margin(y)[0]) if self.fit_intercept else 0.0
        bound = self.residual_bound if self.residual_bound is not None else objectives.residual_bound(obj, y, b0)
        self.residual_bound_ = float(bound)
        t_start = time.perf_counter()
        timings = {"encrypt": 0.0, "decrypt": 0.0, "wait": 0.0}
        pk, sk = scheme.generate_keypair(self.scheme, self.key_bits, insecure_test_key=self.insecure_test_key)
        self.public_key_ = pk
        n_eval = 0 if eval_set is None else len(eval_set[1])
        # a fresh key pair on resumption too: no ciphertext outlives its batch, so nothing needs the old one
        resumed = self.checkpoints.latest("epoch") if self.checkpoints is not None else None
        first_epoch = 0 if resumed is None else resumed[0] + 1
        config = {"params": self.get_params(), "public_key": pk.to_json(), "n_rows": n, "n_eval_rows": n_eval,
                  "residual_bound": self.residual_bound_}
        if first_epoch:  # a resumption names the epoch it continues from; the platform checks its own
            config["first_epoch"] = first_epoch
        # the first batch's encryption randomness is computed while the platform reads the hello
        ahead = _FactorsAhead(sk, [len(rows) for rows in batches(n, self.batch_size, self.random_state, 0)],
                              self.n_jobs) if n else None
        link.send(Message("hlr.hello", {"config": json.dumps(config)}, step="hello"))
        reply = link.recv("hlr.hello_reply")
        if reply.header["n_rows"] != n or reply.header["n_eval_rows"] != n_eval:
            raise ValueError(f"row counts differ: lender has {n} training / {n_eval} validation rows, "
                             f"platform {reply.header['n_rows']} / {reply.header['n_eval_rows']}")
        d_p = reply.header["n_features"]
        _check_batch(self.batch_size, n, d_p, "hlr.hello_reply")
        if ahead is not None and not d_p:  # no platform feature: no gradient, no residual is ever encrypted
            ahead.cancel()
            ahead = None
        self.n_platform_features_ = d_p
        self.n_features_in_ = X.shape[1]
        self.scaler_ = Standardizer.fit(X)
        Z = self.scaler_.transform(X)
        Zv = yv = None
        if eval_set is not None:
            Zv = self.scaler_.transform(eval_set[0])
            yv = np.asarray(eval_set[1], dtype=np.float64)
        fp = FixedPoint(self.residual_frac_bits)
        # the intercept rides along as a last weight, never penalised
        opt = Optimizer(X.shape[1] + 1, self.penalty, self.C, n, self.momentum, intercept_last=True,
                        solver=self.solver)
        w = np.zeros(X.shape[1])
        b = b0
        best = (w.copy(), b)
        stopper = EarlyStopping(self.n_iter_no_change, tol=self.tol)
        adaptive_eta = self.eta0
        self.history_ = []
        stopped = False
        if resumed is not None:
            w, b, best, adaptive_eta, stopper, stopped = self._restore(resumed, opt, X.shape[1])
        from tqdm import tqdm

        for epoch in tqdm(range(first_epoch, first_epoch if stopped else self.max_iter), desc="hetero LR",
                          unit="epoch", leave=False, disable=None, initial=first_epoch, total=self.max_iter):
            lr = step_size(self.learning_rate, self.eta0, self.power_t, epoch, adaptive_eta)
            clipped = 0
            for bi, rows in enumerate(batches(n, self.batch_size, self.random_state, epoch)):
                t0 = time.perf_counter()
                msg = link.recv("hlr.logits")
                timings["wait"] += time.perf_counter() - t0
                u = msg.parts["logits"]
                if msg.header["epoch"] != epoch or msg.header["batch"] != bi or len(u) != len(rows):
                    raise ValueError(f"hlr.logits: expected epoch {epoch} batch {bi} with {len(rows)} rows")
                r = objectives.residual(obj, y[rows], Z[rows] @ w + b + u)
                clipped += int(np.count_nonzero(np.abs(r) > bound))
                r = np.clip(r, -bound, bound)  # what the platform's slots hold; both parties step on it
                if ahead is not None:  # a platform without feature columns has no gradient: no residual is sent
                    t0 = time.perf_counter()
                    enc = pk.encrypt_with_factors(fp.encode(r / bound, pk), ahead.take())
                    timings["encrypt"] += time.perf_counter() - t0
                    link.send(Message("hlr.residuals", {"epoch": epoch, "batch": bi, "step_size": float(lr)},
                                      {"residuals": BigInts(enc, pk.ciphertext_bytes)},
                                      step=f"epoch{epoch}/batch{bi}"))
                wb = opt.step(np.append(w, b), np.append(Z[rows].T @ r / len(rows), r.mean()), lr)
                w, b = wb[:-1], (float(wb[-1]) if self.fit_intercept else 0.0)
                if not d_p:
                    continue
                t0 = time.perf_counter()
                g = link.recv("hlr.gradient")
                timings["wait"] += time.perf_counter() - t0
                if g.header["epoch"] != epoch or g.header["batch"] != bi:
                    raise ValueError(f"hlr.gradient: expected epoch {epoch} batch {bi}")
                vec = pk.vector_from_bigints(g.parts["gradient"])
                if not 1 <= len(vec) <= d_p:  # several sums per ciphertext, at least one sum in each
                    raise ValueError(f"hlr.gradient: {len(vec)} ciphertexts for {d_p} sums")
                t0 = time.perf_counter()
                values = sk.decrypt_raw(vec, workers=self.n_jobs)  # P + M mod n: uniform, the platform unpacks
                timings["decrypt"] += time.perf_counter() - t0
                link.send(Message("hlr.unmask", {"epoch": epoch, "batch": bi},
                                  {"values": BigInts(values, (pk.n_bits + 7) // 8)},
                                  step=f"epoch{epoch}/batch{bi}"))
            msg = link.recv("hlr.epoch")
            u_train = msg.parts["train_logits"]
            if msg.header["epoch"] != epoch or len(u_train) != n:
                raise ValueError(f"hlr.epoch: expected epoch {epoch} with {n} training logits")
            metrics: dict[str, Any] = {"epoch": epoch, "step_size": lr,
                                       **self._metrics("train", y, Z @ w + b + u_train)}
            if self.objective != "binary:logistic":  # never happens for logistic (|r| < 1 = its bound)
                metrics["residuals_clipped"] = clipped
            if Zv is not None:
                u_eval = msg.parts.get("eval_logits")
                if u_eval is None or len(u_eval) != n_eval:
                    raise ValueError(f"hlr.epoch: expected {n_eval} validation logits")
                metrics.update(self._metrics("valid", yv, Zv @ w + b + u_eval))
            monitor = metric_key("valid" if Zv is not None and self.early_stopping else "train", obj.stop_metric)
            stop = stopper.update(epoch, metrics[monitor]) or epoch == self.max_iter - 1
            improved = stopper.best_iteration == epoch
            if improved:
                best = (w.copy(), b)
            if stopper.last_reset != epoch and self.learning_rate == "adaptive":  # not better by tol: as sklearn
                adaptive_eta /= 5.0
            metrics["seconds"] = time.perf_counter() - t_start
            self.history_.append(metrics)
            if self.callback is not None:
                self.callback(epoch, metrics)
            if self.checkpoints is not None:  # before epoch_done: the platform saves this epoch after it
                opt_meta, opt_arrays = opt.state()
                self.checkpoints.save("epoch", epoch, {
                    **opt_meta, "early_stopping": stopper.state(), "intercept": b, "best_intercept": best[1],
                    "history": self.history_, "adaptive_eta": adaptive_eta, "stop": stop},
                    {**opt_arrays, "coef": w, "best_coef": best[0]})
            link.send(Message("hlr.epoch_done", {"epoch": epoch, "improved": improved, "stop": stop},
                              step=f"epoch{epoch}"))
            if stop:
                break
        self.coef_, self.intercept_ = best
        self.best_epoch_ = stopper.best_iteration
        self.n_iter_ = len(self.history_)
        if ahead is not None:
            ahead.cancel()
        timings["total"] = time.perf_counter() - t_start
        self.timings_ = timings
        return self

    def _objective(self) -> Objective:
        return objectives.get(self.objective, self.tweedie_variance_power)

    def _metrics(self, prefix: str, y: np.ndarray, margin: np.ndarray) -> dict[str, float]:
        return objectives.history(self._objective(), prefix, y, margin)

    def _restore(self, resumed: tuple[int, dict, dict], opt: Optimizer, d: int) -> tuple:
        """The training state after epoch ``resumed[0]``, from this party's own checkpoint.

        Weights, intercept, optimiser moments, the best weights so far and the
        early-stopping state are exactly the uninterrupted run's, and the
        batches of the next epochs come from the shared seed, so the epochs
        that follow are too: the platform's masks cancel exactly and a fresh
        key decrypts the same sums.
        """
        index, meta, arrays = resumed
        w = np.asarray(arrays["coef"], dtype=np.float64)
        best_w = np.asarray(arrays["best_coef"], dtype=np.float64)
        self.history_ = [dict(h) for h in meta["history"]]
        if w.shape != (d,) or best_w.shape != (d,) or len(self.history_) != index + 1:
            raise ValueError(f"epoch checkpoint {index}: does not fit this job ({w.shape[0]} weights for {d} "
                             f"features, {len(self.history_)} epochs of history)")
        opt.restore(meta, arrays)
        stopper = EarlyStopping.from_state(meta["early_stopping"])
        if (stopper.rounds, stopper.maximize, stopper.tol) != (self.n_iter_no_change, False, self.tol):
            raise ValueError(f"epoch checkpoint {index}: early stopping with n_iter_no_change={stopper.rounds}, "
                             f"tol={stopper.tol}, not this job's {self.n_iter_no_change}, {self.tol}")
        return (w, float(meta["intercept"]), (best_w, float(meta["best_intercept"])),
                float(meta["adaptive_eta"]), stopper, bool(meta["stop"]))

    def decision_function(self, link: Link, X: np.ndarray) -> np.ndarray:
        """Federated logits for rows the platform holds in the same order."""
        Z = self.scaler_.transform(X)
        n = Z.shape[0]
        link.send(Message("hlr.predict", {"n_rows": n}, step="predict"))
        msg = link.recv("hlr.predict_logits")
        u = msg.parts["logits"]
        if len(u) != n:
            raise ValueError(f"hlr.predict_logits: {len(u)} logits for {n} rows")
        return Z @ self.coef_ + self.intercept_ + u

    def predict(self, link: Link, X: np.ndarray) -> np.ndarray:
        """The objective's prediction, as XGBoost's ``Booster.predict``: probability of 1 or the mean."""
        return self._objective().transform(self.decision_function(link, X)).astype(np.float64)

    def predict_proba(self, link: Link, X: np.ndarray) -> np.ndarray:
        """Probabilities of label 1 (one column, as SecureBoost's); ``binary:logistic`` only."""
        if self.objective != "binary:logistic":
            raise ValueError(f"predict_proba is for binary:logistic; this model's objective is {self.objective} "
                             "(use predict)")
        return self.predict(link, X)

    def save(self, directory: str | Path) -> Path:
        """The lender's model part: its scaler, weights and intercept (never the platform's)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        doc = {"format": "fedacq.hetero_lr.lender/1", "params": self.get_params(),
               "scaler": self.scaler_.to_dict(), "coef": self.coef_.tolist(),
               "intercept": self.intercept_, "n_platform_features": self.n_platform_features_,
               # the model, not the timing: the file is the same whenever the same data and seed train it
               "history": [{k: v for k, v in h.items() if k != "seconds"} for h in self.history_]}
        out = path / LENDER_FILE
        out.write_text(json.dumps(doc, sort_keys=True))  # key order as a restored checkpoint's history
        return out

    @classmethod
    def load(cls, directory: str | Path, n_jobs: int | None = None) -> "HeteroLRLender":
        """A lender model part written by :meth:`save`, ready for federated prediction.

        The platform answers with its own part (:meth:`HeteroLRPlatform.load`, then
        :meth:`~HeteroLRPlatform.serve_predict`); the Paillier key is not needed to predict and is not in the file.
        """
        path = Path(directory) / LENDER_FILE
        doc = read_model_file(path, "fedacq.hetero_lr.lender/1")
        try:
            model = cls(**doc["params"], n_jobs=n_jobs)
            model.scaler_ = Standardizer.from_dict(doc["scaler"])
            model.coef_ = np.asarray(doc["coef"], dtype=np.float64)
            model.intercept_ = float(doc["intercept"])
            model.n_platform_features_ = int(doc["n_platform_features"])
            model.history_ = [dict(h) for h in doc["history"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a valid hetero LR lender model: {exc}") from exc
        if model.coef_.shape != model.scaler_.mean.shape:
            raise ValueError(f"{path}: {model.coef_.shape[0]} weights for {model.scaler_.mean.shape[0]} columns")
        model.n_features_in_ = model.coef_.shape[0]
        model.n_iter_ = len(model.history_)
        return model


# -- platform ----------------------------------------------------------------------------

class HeteroLRPlatform:
    """The passive party: features, its own weights, masks for its encrypted gradients.

    ``min_key_bits`` and ``schemes`` are this party's own floor for the
    lender's key and the additive schemes it accepts (its node's policy): the
    key in ``hlr.hello`` is read only as the scheme the lender announces, which
    must be in ``schemes`` and one hetero LR runs on (:data:`SCHEMES`), and a
    shorter key is refused whatever the lender announces.
    """

    def __init__(self, n_jobs: int | None = None, min_key_bits: int = MIN_KEY_BITS, checkpoints: Any = None,
                 on_epoch: Callable[[int], Any] | None = None, schemes: Sequence[str] = ("paillier",)) -> None:
        self.n_jobs = n_jobs
        self.min_key_bits = int(min_key_bits)
        self.schemes = tuple(schemes)
        #: a :class:`fedacq.learn.run_checkpoints.RunCheckpoints` (node jobs): its weights after each epoch, resume
        self.checkpoints = checkpoints
        self.on_epoch = on_epoch
        self.timings_: dict[str, float] = {}

    def _quantize(self, X: np.ndarray) -> np.ndarray:
        """Standardised features as signed ints with ``feature_frac_bits`` fractional bits."""
        return np.rint(np.ldexp(self.scaler_.transform(X), self.feature_frac_bits)).astype(np.int64)

    def _logits(self, X: np.ndarray) -> np.ndarray:
        return np.ldexp(self._quantize(X).astype(np.float64), -self.feature_frac_bits) @ self.coef_

    def fit(self, link: Link, X: np.ndarray, eval_X: np.ndarray | None = None) -> "HeteroLRPlatform":
        from fedacq.crypto import scheme

        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"platform features must be a 2-D array, got shape {X.shape}")
        hello = link.recv("hlr.hello")
        try:
            config = json.loads(hello.header["config"])
            params = config["params"]
            announced, key_text = params.get("scheme", "paillier"), config["public_key"]
            n_rows, n_eval = int(config["n_rows"]), int(config["n_eval_rows"])
            first_epoch = config.get("first_epoch", 0)
            # a lender that names no objective trains logistic regression, residuals below 1
            bound = config.get("residual_bound", 1.0)
            _check_params(params["penalty"], params["C"], params["max_iter"], params["batch_size"],
                          params["learning_rate"], params["eta0"], params["power_t"],
                          params["momentum"], params["n_iter_no_change"], params["residual_frac_bits"],
                          params["feature_frac_bits"], params["solver"],
                          params.get("objective", "binary:logistic"), params.get("tweedie_variance_power", 1.5),
                          bound)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"hlr.hello: malformed config: {exc}") from exc
        if not isinstance(announced, str):
            raise ValueError(f"hlr.hello: malformed config: scheme must be a name, got {announced!r}")
        check_scheme(announced, "hlr.hello")
        pk = scheme.peer_public_key(key_text, scheme=announced, allowed=self.schemes, min_bits=self.min_key_bits,
                                    what="hlr.hello")
        self.params_ = params
        self.feature_frac_bits = int(params["feature_frac_bits"])
        n, d = X.shape
        n_eval_here = 0 if eval_X is None else np.asarray(eval_X).shape[0]
        link.send(Message("hlr.hello_reply", {"n_rows": n, "n_eval_rows": n_eval_here, "n_features": d},
                          step="hello"))
        if n != n_rows or n_eval_here != n_eval:
            raise ValueError(f"row counts differ: platform has {n} training / {n_eval_here} validation rows, "
                             f"lender {n_rows} / {n_eval}")
        batch_size, seed = int(params["batch_size"]), int(params["random_state"])
        _check_batch(batch_size, n, d, "hlr.hello")
        penalty, C = params["penalty"], float(params["C"])
        frac = int(params["residual_frac_bits"]) + self.feature_frac_bits
        self.scaler_ = Standardizer.fit(X)
        K = self._quantize(X)
        # one slot layout for the whole job: its width (hence the number of packed ciphertexts the
        # lender sees) does not follow the largest feature of each batch
        offset_bits, slot_bits = gradient_layout(
            K, max(map(len, batches(n, batch_size, seed, 0))), int(params["residual_frac_bits"]))
        Xq = np.ldexp(K.astype(np.float64), -self.feature_frac_bits)
        Xe = None if eval_X is None else np.ldexp(self._quantize(eval_X).astype(np.float64),
                                                 -self.feature_frac_bits)
        w = np.zeros(d)
        best = w.copy()
        opt = Optimizer(d, penalty, C, n, float(params["momentum"]), solver=params["solver"])
        from fedacq.learn.run_checkpoints import resume_point

        resumed = resume_point(self.checkpoints, "epoch", first_epoch, "hlr.hello")
        held = 0 if resumed is None else resumed[0] + 1
        stopped = False
        if resumed is not None:
            _, meta, arrays = resumed
            w = np.asarray(arrays["coef"], dtype=np.float64)
            best = np.asarray(arrays["best_coef"], dtype=np.float64)
            if w.shape != (d,) or best.shape != (d,):
                raise ValueError(f"epoch checkpoint {held - 1}: {w.shape[0]} weights for {d} features")
            opt.restore(meta, arrays)
            stopped = bool(meta["stop"])
        timings = {"gradient": 0.0, "mask": 0.0, "wait": 0.0}
        for epoch in range(first_epoch, first_epoch if stopped else int(params["max_iter"])):
            for bi, rows in enumerate(batches(n, batch_size, seed, epoch)):
                link.send(Message("hlr.logits", {"epoch": epoch, "batch": bi}, {"logits": Xq[rows] @ w},
                                  step=f"epoch{epoch}/batch{bi}"))
                if not d:  # no feature column, no weight to update: the lender sends no residuals
                    continue
                t0 = time.perf_counter()
                msg = link.recv("hlr.residuals")
                timings["wait"] += time.perf_counter() - t0
                if msg.header["epoch"] != epoch or msg.header["batch"] != bi:
                    raise ValueError(f"hlr.residuals: expected epoch {epoch} batch {bi}")
                lr = msg.header["step_size"]
                cts = pk.vector_from_bigints(msg.parts["residuals"]).ciphertexts
                if len(cts) != len(rows):
                    raise ValueError(f"hlr.residuals: {len(cts)} ciphertexts for {len(rows)} rows")
                t0 = time.perf_counter()
                inverses = _inverses(pk, cts)  # refuses a ciphertext that is not a unit
                packed = encrypted_dot(pk, cts, K[rows], self.n_jobs, slot_bits, inverses)
                timings["gradient"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                packed, masks = mask_gradient(pk, packed, offset_bits, slot_bits, d)
                timings["mask"] += time.perf_counter() - t0
                link.send(Message("hlr.gradient", {"epoch": epoch, "batch": bi}, {"gradient": packed.to_bigints()},
                                  step=f"epoch{epoch}/batch{bi}"))
                t0 = time.perf_counter()
                back = link.recv("hlr.unmask")
                timings["wait"] += time.perf_counter() - t0
                if back.header["epoch"] != epoch or back.header["batch"] != bi:
                    raise ValueError(f"hlr.unmask: expected epoch {epoch} batch {bi}")
                grad = np.array([float(g) for g in unmask_gradient(pk, back.parts["values"], masks, offset_bits,
                                                                    slot_bits, d)])
                grad = np.ldexp(grad, -frac) * bound / len(rows)  # the lender sent r / bound
                w = opt.step(w, grad, lr)
            parts = {"train_logits": Xq @ w}
            if Xe is not None:
                parts["eval_logits"] = Xe @ w
            link.send(Message("hlr.epoch", {"epoch": epoch}, parts, step=f"epoch{epoch}"))
            done = link.recv("hlr.epoch_done")
            if done.header["epoch"] != epoch:
                raise ValueError(f"hlr.epoch_done: expected epoch {epoch}, got {done.header['epoch']}")
            if done.header["improved"]:
                best = w.copy()
            if self.checkpoints is not None:
                opt_meta, opt_arrays = opt.state()
                self.checkpoints.save("epoch", epoch, {**opt_meta, "stop": done.header["stop"]},
                                      {**opt_arrays, "coef": w, "best_coef": best})
            if self.on_epoch is not None:
                self.on_epoch(epoch)
            if done.header["stop"]:
                break
        self.coef_ = best
        self.timings_ = timings
        return self

    def serve_predict(self, link: Link, X: np.ndarray) -> None:
        """Answer one federated prediction of the lender for rows of ``X`` (same order as the lender's).

        Named for what it does (it returns nothing: the lender gets the prediction), as
        ``SecureBoostPlatform.serve_predict``; one call per lender ``predict``/``decision_function``.
        """
        msg = link.recv("hlr.predict")
        X = np.asarray(X, dtype=np.float64)
        if msg.header["n_rows"] != X.shape[0]:
            raise ValueError(f"hlr.predict: lender asks for {msg.header['n_rows']} rows, platform has {X.shape[0]}")
        link.send(Message("hlr.predict_logits", {"n_rows": X.shape[0]}, {"logits": self._logits(X)},
                          step="predict"))

    def save(self, directory: str | Path) -> Path:
        """The platform's model part: its scaler, quantisation and weights (never the lender's)."""
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        doc = {"format": "fedacq.hetero_lr.platform/1", "scaler": self.scaler_.to_dict(),
               "feature_frac_bits": self.feature_frac_bits, "coef": self.coef_.tolist()}
        out = path / PLATFORM_FILE
        out.write_text(json.dumps(doc))
        return out

    @classmethod
    def load(cls, directory: str | Path, n_jobs: int | None = None,
             min_key_bits: int = MIN_KEY_BITS) -> "HeteroLRPlatform":
        """A platform model part written by :meth:`save`, ready to answer the lender's predictions."""
        path = Path(directory) / PLATFORM_FILE
        doc = read_model_file(path, "fedacq.hetero_lr.platform/1")
        model = cls(n_jobs=n_jobs, min_key_bits=min_key_bits)
        try:
            model.scaler_ = Standardizer.from_dict(doc["scaler"])
            model.feature_frac_bits = int(doc["feature_frac_bits"])
            model.coef_ = np.asarray(doc["coef"], dtype=np.float64)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: not a valid hetero LR platform model: {exc}") from exc
        if model.coef_.shape != model.scaler_.mean.shape or not 0 <= model.feature_frac_bits <= 16:
            raise ValueError(f"{path}: {model.coef_.shape[0]} weights for {model.scaler_.mean.shape[0]} columns, "
                             f"feature_frac_bits={model.feature_frac_bits}")
        return model


def read_model_file(path: Path, fmt: str) -> dict[str, Any]:
    """A model file's JSON document, checked to be of format ``fmt`` (name and version); hetero LR and
    split NN read their parts with it."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read the model file: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        found = doc.get("format") if isinstance(doc, dict) else None
        raise ValueError(f"{path}: expected a model of format {fmt!r}, found {found!r}")
    return doc
