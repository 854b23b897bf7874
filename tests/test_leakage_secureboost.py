"""Prospect SecureBoost, played by the platform as an attacker: what released leaf values give away.

The platform routes every training row itself (instance space), and in prospect mode it
receives the base margin and every leaf value. In the first tree all rows share
p0 = sigmoid(base margin), so each leaf value is ``-lr * (n p0 - s) / (n h0 + lambda)``
with ``s`` the number of positive labels among the leaf's ``n`` rows: one equation, one
unknown. Without noise the platform reads off every leaf's exact label count; with leaf
noise (drawn from the OS CSPRNG) it cannot. 512-bit test-only keys, for speed.
"""

from __future__ import annotations

import numpy as np

from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.learn.tree import route
from fedacq.link.memory import memory_pair, run_parties

LR, LAMBDA = 0.3, 1.0


def _prospect(leaf_noise):
    rng = np.random.default_rng(11)
    n = 500
    Xp = rng.normal(size=(n, 4))
    y = (Xp[:, 0] + rng.normal(size=n) > 0.5).astype(float)
    la, pa = memory_pair("lender", "platform", record=True)
    lender = SecureBoostLender(n_estimators=1, max_depth=3, mode="prospect", learning_rate=LR, reg_lambda=LAMBDA,
                               leaf_noise=leaf_noise, key_bits=512, insecure_test_key=True, n_jobs=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=512, mode="prospect")
    run_parties((lender.fit, la, rng.normal(size=(n, 1)), y), (platform.fit, pa, Xp), timeout=300)
    return platform, Xp, y, pa.received


def _attack(platform, Xp, received):
    """Label counts per leaf from the platform's own routing and what it received."""
    finish = next(m for m in received if m.type == "sb.finish")
    p0 = 1.0 / (1.0 + np.exp(-np.float32(finish.parts["base_margin"][0])))
    h0 = float(np.float32(p0) * (np.float32(1) - np.float32(p0)))
    tree = platform.trees_[0]
    leaf_of_row = route(tree, Xp, None, owner=1)
    out = {}
    for leaf, value in zip(tree.leaves(), finish.parts["leaf_values"]):
        rows = np.flatnonzero(leaf_of_row == leaf)
        out[leaf] = (rows, len(rows) * float(p0) + value / LR * (len(rows) * h0 + LAMBDA))
    return out


def test_without_noise_each_leaf_gives_its_exact_label_count():
    platform, Xp, y, received = _prospect(None)
    for rows, estimate in _attack(platform, Xp, received).values():
        assert round(estimate) == y[rows].sum()
        assert abs(estimate - y[rows].sum()) < 1e-3


def test_with_leaf_noise_the_counts_are_not_recovered():
    """epsilon 0.05 on one tree: the noise on a leaf value is Laplace of scale LR / LAMBDA / 0.05 = 6,
    so the count error is Laplace of scale 20 * (n h0 + 1) >= 40 (min_child_weight 1 makes n h0 >= 1).
    With k >= 6 leaves the mean absolute error stays below 0.5 with probability
    < (0.5 k / 40)^k / k! < 1e-9 (the tree's structure does not depend on the noise: 8 leaves here)."""
    platform, Xp, y, received = _prospect({"mechanism": "laplace", "epsilon": 0.05})
    errors = [abs(estimate - y[rows].sum()) for rows, estimate in _attack(platform, Xp, received).values()]
    assert len(errors) >= 6
    assert np.mean(errors) > 0.5
