"""Joint-cell (paired-feature) histograms equal the per-feature kernel's, residue for residue.

Products mod m do not depend on the order or grouping of the factors, so the
kernel is checked on random units mod a prime (no key needed): every bin sum
must be the very same integer as the per-feature kernel's and as a naive
product over the bin's rows.
"""

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz

from fedacq.learn.histogram import BlockKernel, _plan, build_histograms, subtract_histograms

MOD = gmpy2.next_prime(mpz(2) ** 521)


def _units(n, seed):
    rng = np.random.default_rng(seed)
    return [mpz(int.from_bytes(rng.bytes(64), "big")) % (MOD - 1) + 1 for _ in range(n)]


def _bins(n, n_feat, seed, nb=7, missing=0.1, dominant=0.0):
    rng = np.random.default_rng(seed)
    bins = rng.integers(0, nb, size=(n, n_feat)).astype(np.int16)
    bins[rng.random((n, n_feat)) < dominant] = 0
    bins[rng.random((n, n_feat)) < missing] = -1
    return bins


def _naive(cts, bins, n_bins, rows):
    out = []
    for f in range(bins.shape[1]):
        acc = [mpz(1)] * int(n_bins[f])
        for r in rows:
            b = int(bins[r, f])
            if b >= 0:
                acc[b] = acc[b] * cts[r] % MOD
        out.append(acc)
    return out


@pytest.mark.parametrize("n, n_feat, dominant, seed", [
    (400, 6, 0.0, 0), (400, 5, 0.0, 1),      # dense, even and odd feature counts
    (400, 7, 0.8, 2), (3000, 4, 0.9, 3),     # sparse: the derived (most-populated) cell
    (1, 5, 0.0, 4), (2, 3, 0.0, 5), (0, 4, 0.0, 6), (9, 1, 0.0, 7),  # tiny nodes, one feature
])
def test_pairs_equal_per_feature_kernel_bit_for_bit(n, n_feat, dominant, seed):
    cts = _units(max(n, 1) + 10, seed)
    bins = _bins(max(n, 1) + 10, n_feat, seed, dominant=dominant)
    n_bins = np.array([7] * n_feat)
    rows = np.sort(np.random.default_rng(seed).permutation(len(cts))[:n])
    paired = build_histograms(cts, MOD, bins, n_bins, rows)
    single = build_histograms(cts, MOD, bins, n_bins, rows, pair_features=False)
    assert paired == single == _naive(cts, bins, n_bins, rows)


def test_unequal_bin_counts_all_missing_and_binless_features():
    cts = _units(500, 8)
    bins = _bins(500, 5, 8, nb=3, missing=0.2)
    bins[:, 1] = np.random.default_rng(8).integers(0, 33, 500)
    bins[:, 2] = -1  # every row missing
    bins[:, 4] = -1
    n_bins = np.array([3, 33, 4, 3, 0])  # the last feature has no bins at all
    rows = np.arange(0, 500, 2)
    got = build_histograms(cts, MOD, bins, n_bins, rows)
    assert got == _naive(cts, bins, n_bins, rows)
    assert got[4] == [] and got[2] == [mpz(1)] * 4


def test_plan_pairs_big_nodes_and_keeps_tiny_ones_single():
    big = _bins(5000, 5, 9, nb=32, missing=0.0).astype(np.int64)
    radix = np.full(5, 33)
    groups, _ = _plan(big, radix, True)
    assert [g.features for g in groups] == [[0, 1], [2, 3], [4]]
    tiny = big[:40]
    groups, _ = _plan(tiny, radix, True)
    assert all(len(g.features) == 1 for g in groups)
    assert all(len(g.features) == 1 for g in _plan(big, radix, False)[0])


def test_plan_uses_the_node_total_for_sparse_features():
    sparse = _bins(5000, 6, 10, nb=32, missing=0.0, dominant=0.9).astype(np.int64)
    groups, use_total = _plan(sparse, np.full(6, 33), True)
    assert use_total and all(g.derived < g.plain for g in groups)
    dense = _bins(5000, 6, 10, nb=32, missing=0.0).astype(np.int64)
    assert not _plan(dense, np.full(6, 33), True)[1]


@pytest.mark.parametrize("pair_features", [True, False])
def test_block_kernel_derives_siblings_only_when_asked(pair_features):
    n = 600
    cts = _units(n, 11)
    bins = _bins(n, 5, 11, dominant=0.5)
    n_bins = np.full(5, 7)
    kernel = BlockKernel(bins, n_bins, MOD, 520, 64, pair_features)
    kernel.start_tree(cts, [0, 1, 3, 4])
    cols = [0, 1, 3, 4]
    kernel.root()
    left = np.nonzero(bins[:, 1] <= 2)[0]
    right = np.setdiff1d(np.arange(n), left)
    kernel.level([(0, 1, 2, left)], [1])
    assert 2 not in kernel.hists  # not derived: not split, not emitted
    # node 2 is split next: it is derived from the root and node 1
    sub_small = right[bins[right, 3] <= 1]
    kernel.level([(2, 3, 4, sub_small)], [3, 4])
    want = _naive(cts, bins[:, cols], n_bins[cols], np.setdiff1d(right, sub_small))
    assert kernel.hists[4] == want
    root = _naive(cts, bins[:, cols], n_bins[cols], np.arange(n))
    assert kernel.hists[2] == subtract_histograms(root, _naive(cts, bins[:, cols], n_bins[cols], left), MOD)


def test_planned_products_pairs_dense_features_at_about_half_the_cost():
    from fedacq.learn.histogram import planned_products

    bins = _bins(20000, 4, 12, nb=32, missing=0.0)
    rows, n_bins = np.arange(20000), np.full(4, 32)
    single, paired = planned_products(bins, n_bins, rows, False), planned_products(bins, n_bins, rows)
    assert single == 4 * (20000 - 32)  # one product per row and feature (the first of each bin is taken)
    assert 1.7 < single / paired < 2
