"""Hetero LR's batches, played by the platform as an attacker.

The platform knows which rows form each batch (the shared shuffle) and receives the
exact gradient of its own weights, ``X_B^T r_B`` with ``r = p - y``: ``d_p`` linear
equations in the ``|B|`` residuals of the batch. When ``|B| <= d_p`` (and its rows are
in general position) least squares returns ``r_B`` exactly and the labels are the
signs. The old batching left such a tail at the end of an epoch; the new one never
does. 512-bit keys (``min_key_bits=512`` at the platform) only for speed in the
end-to-end test.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedacq.learn.hetero_lr import HeteroLRLender, HeteroLRPlatform, _check_batch, batches
from fedacq.link.memory import memory_pair, run_parties


def old_batches(n, batch_size, seed, epoch):
    """The batching before the fix: fixed-size cuts, a short tail at the end."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    return [perm[i:i + batch_size] for i in range(0, n, batch_size)]


def attack(X, r, rows):
    """What the platform recovers from one batch's exact gradient: residuals by least squares, labels by sign."""
    g = X[rows].T @ r[rows]
    r_hat = np.linalg.lstsq(X[rows].T, g, rcond=None)[0]
    return r_hat, (r_hat < 0).astype(float)


def _problem(n, d_p, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d_p))
    y = (rng.random(n) < 0.3).astype(float)
    p = rng.uniform(0.05, 0.95, size=n)
    return X, y, p - y


def test_the_old_tail_batch_gives_away_its_labels():
    n, batch_size, d_p = 203, 50, 10  # old tail: 3 rows against 10 features
    X, y, r = _problem(n, d_p, 0)
    tail = old_batches(n, batch_size, 0, 0)[-1]
    assert len(tail) == 3 <= d_p
    r_hat, labels = attack(X, r, tail)
    np.testing.assert_allclose(r_hat, r[tail], atol=1e-9)
    np.testing.assert_array_equal(labels, y[tail])


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 600), st.integers(0, 3))
def test_every_batch_is_underdetermined(d_p, extra, n_over, epoch):
    batch_size = d_p + extra
    n = d_p + 1 + n_over
    _check_batch(batch_size, n, d_p, "test")  # allowed: so every batch must be safe
    X, y, r = _problem(n, d_p, n)
    got = batches(n, batch_size, 7, epoch)
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(n))  # a partition of the rows
    for rows in got:
        assert min(batch_size, n) <= len(rows) < 2 * batch_size
        assert len(rows) > d_p
        assert np.linalg.matrix_rank(X[rows]) < len(rows)  # a null space: r_B is not determined
    old = old_batches(n, batch_size, 7, epoch)
    if n % batch_size and n % batch_size <= d_p:  # where the old batching was solvable
        r_hat, labels = attack(X, r, old[-1])
        np.testing.assert_allclose(r_hat, r[old[-1]], atol=1e-6)
        np.testing.assert_array_equal(labels, y[old[-1]])


def test_underdetermined_means_other_labels_fit_the_same_gradient():
    """With |B| > d_p, flipping labels along the null space keeps the gradient the platform sees."""
    n, batch_size, d_p = 203, 50, 10
    X, y, r = _problem(n, d_p, 1)
    for rows in batches(n, batch_size, 0, 0):
        u, _, _ = np.linalg.svd(X[rows])
        null = u[:, -1]  # a left singular vector beyond the rank: X_B^T null = 0
        i = int(np.argmax(np.abs(null)))
        other = r[rows] - null * (2.0 * np.sign(r[rows][i]) / null[i])  # row i's residual changes sign
        np.testing.assert_allclose(X[rows].T @ other, X[rows].T @ r[rows], atol=1e-9)
        assert not np.array_equal(other < 0, r[rows] < 0)  # some label reads differently


@pytest.mark.parametrize("batch_size,n,d_p", [(5, 20, 5), (6, 5, 5)])
def test_refused_batchings(batch_size, n, d_p):
    with pytest.raises(ValueError, match="must exceed the platform's 5 features"):
        _check_batch(batch_size, n, d_p, "hlr.hello")


def test_the_platform_never_receives_a_short_batch():
    """Over the wire: every hlr.residuals the platform received has at least batch_size ciphertexts."""
    rng = np.random.default_rng(3)
    n, d_p, batch_size = 103, 6, 25  # old tail: 3 rows
    Xl, Xp = rng.normal(size=(n, 2)), rng.normal(size=(n, d_p))
    y = (Xl[:, 0] + Xp[:, 0] + rng.normal(size=n) > 0).astype(float)
    L, P = memory_pair("lender", "platform", record=True)
    lender = HeteroLRLender(key_bits=512, insecure_test_key=True, n_jobs=1, batch_size=batch_size, max_iter=2)
    platform = HeteroLRPlatform(n_jobs=1, min_key_bits=512)
    run_parties((lender.fit, L, Xl, y), (platform.fit, P, Xp))
    sizes = [len(m.parts["residuals"].values) for m in P.received if m.type == "hlr.residuals"]
    assert sizes == [25, 25, 25, 28] * 2
    assert min(sizes) > d_p
