"""Differential-privacy noise (and secret shuffles) drawn from the OS CSPRNG: one sampler for every protocol.

Why not a seeded numpy generator
    DP noise protects a value only while the receiver cannot subtract it. A
    ``numpy.random.default_rng(seed)`` stream is a deterministic function of its
    seed: when the seed is the job's shared ``random_state`` (which both parties
    hold so they agree on splits and batches), the peer regenerates the stream
    and removes the noise exactly (prospect SecureBoost's leaf noise was undone
    this way to 1e-16). Seeding numpy from ``os.urandom`` hides the seed but
    still puts a non-cryptographic generator (PCG64, Mersenne Twister) between
    the secret and the output. Here every sample is computed from fresh bytes
    of ``os.urandom`` (the kernel CSPRNG), so nothing the peer holds, seed or
    messages, predicts the noise. Masks and key material use ``secrets`` /
    ``os.urandom`` directly (:mod:`fedacq.crypto.paillier`, hetero LR's masks);
    this module is for real-valued noise, and for the one other secret draw
    protocols make in bulk: a shuffle that must hide an order from the peer
    (:func:`permutation`).

The math
    Uniform: a 64-bit word from the CSPRNG gives ``k``, its low 52 bits, and
    ``u = (k + 1/2) / 2^52``. ``k + 1/2`` has 53 significant bits, so ``u`` is
    exact in float64, lies in the open interval (0, 1) (from ``2^-53`` to
    ``1 - 2^-53``) and is symmetric about 1/2. Bit 63 of the same word is a
    fair sign bit for Laplace.

    Laplace(0, b): the magnitude of a Laplace variable is exponential with
    mean ``b``, and its sign is independent and fair, so
    ``X = s * (-b ln u)`` with ``u`` uniform on (0, 1) (inverse CDF of the
    exponential) and ``s = ±1`` from the sign bit. Density
    ``exp(-|x|/b) / (2b)``. The largest magnitude is ``b * 53 ln 2 ≈ 36.7 b``;
    the tail beyond has probability ``2^-53``.

    Gaussian N(0, σ²): Box–Muller. For independent uniforms ``u1``, ``u2``,
    ``R = sqrt(-2 ln u1)`` and ``θ = 2π u2`` give two independent standard
    normals ``R cos θ`` and ``R sin θ``; both are used, so a sample costs 8
    random bytes. The largest magnitude is ``σ * sqrt(2 * 53 ln 2) ≈ 8.6 σ``.

    Permutation: sort the indices by independent uniform 64-bit keys. Every
    order is equally likely given distinct keys; two of ``n`` keys collide
    with probability below ``n² / 2^65`` (1e-9 for a million rows), and a
    collision only keeps those two in index order.

What this does not cover
    Floating-point DP mechanisms leak through the low-order bits of
    ``value + noise`` (Mironov, "On significance of the least significant bits
    for differential privacy", CCS 2012): an attacker with the released
    doubles can sometimes rule out candidate true values. The snapping
    mechanism fixes this at a cost in accuracy; fedacq releases float64 sums
    and leaf values without it. The guarantees stated in ``protocols/*.md``
    are those of the ideal real-valued mechanisms.
"""

from __future__ import annotations

import math
import os

import numpy as np

_MANTISSA = 52
_SCALE = 2.0 ** -_MANTISSA


def _words(count: int) -> np.ndarray:
    """``count`` uniform 64-bit words from the OS CSPRNG."""
    return np.frombuffer(os.urandom(8 * count), dtype=np.uint64)


def _count(size: int | tuple[int, ...]) -> tuple[tuple[int, ...], int]:
    shape = (size,) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
    if any(s < 0 for s in shape):
        raise ValueError(f"noise size must be non-negative, got {size!r}")
    return shape, int(np.prod(shape, dtype=np.int64))


def _uniform_from(words: np.ndarray) -> np.ndarray:
    """(k + 1/2) / 2^52 for k = the low 52 bits of each word: exact, in (0, 1)."""
    k = (words & np.uint64((1 << _MANTISSA) - 1)).astype(np.float64)
    return (k + 0.5) * _SCALE


def uniform(size: int | tuple[int, ...]) -> np.ndarray:
    """Uniform doubles on the open interval (0, 1), 52 random bits each, from the OS CSPRNG."""
    shape, count = _count(size)
    return _uniform_from(_words(count)).reshape(shape)


def _checked_scale(scale: float | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(scale, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise ValueError(f"{name} must be finite and > 0, got {scale!r}")
    return arr


def laplace(scale: float | np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    """Laplace(0, ``scale``) samples of shape ``size`` (``scale`` may broadcast against it)."""
    b = _checked_scale(scale, "Laplace scale")
    shape, count = _count(size)
    words = _words(count)
    sign = np.where((words >> np.uint64(63)) == 1, -1.0, 1.0)
    return (b * (sign * -np.log(_uniform_from(words))).reshape(shape)).astype(np.float64)


def gaussian(sigma: float | np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
    """N(0, ``sigma``²) samples of shape ``size`` (``sigma`` may broadcast against it)."""
    s = _checked_scale(sigma, "Gaussian sigma")
    shape, count = _count(size)
    pairs = (count + 1) // 2
    u = _uniform_from(_words(2 * pairs))
    r = np.sqrt(-2.0 * np.log(u[:pairs]))
    theta = (2.0 * math.pi) * u[pairs:]
    z = np.concatenate([r * np.cos(theta), r * np.sin(theta)])[:count]
    return (s * z.reshape(shape)).astype(np.float64)


def permutation(n: int) -> np.ndarray:
    """A uniformly random permutation of ``0..n-1`` (int64) that no seed reproduces."""
    if n < 0:
        raise ValueError(f"permutation size must be non-negative, got {n}")
    return np.argsort(_words(n), kind="stable").astype(np.int64)


__all__ = ["uniform", "laplace", "gaussian", "permutation"]
