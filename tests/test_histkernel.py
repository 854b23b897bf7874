"""The compiled cell products (fedacq.learn._histkernel) equal the gmpy2 loop they replaced, residue for residue.

The oracle is that loop itself (``acc = c if acc is None else acc * c % m`` per cell, rows in
order), run on seeded random ciphertexts below odd moduli from one limb to 64 limbs (a 4096-bit
one as Paillier's n^2), with missing codes, pairs and single features, a skipped (derived) cell,
one-row cells (the ciphertext itself) and zero. No key is needed: products mod m do not care
where the factors came from.
"""

import numpy as np
import pytest
import gmpy2
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st

from fedacq.learn import _histkernel
from fedacq.learn.histogram import BlockKernel, CiphertextTable, batch_invert, build_histograms, pack_ciphertexts


def _loop(cts, m, rows, cells, skip=-1):
    acc = {}
    for r, c in zip(rows, cells):
        if c == skip:
            continue
        a = acc.get(c)
        acc[c] = cts[r] if a is None else a * cts[r] % m
    return dict(sorted(acc.items()))


def _random(bits, n, seed, small=False):
    """An odd ``bits``-bit modulus and ``n`` values below it (``small``: most of them below 2^64, and zeros)."""
    rng = np.random.default_rng(seed)
    m = mpz(int.from_bytes(rng.bytes((bits + 7) // 8), "big")) % (mpz(1) << bits) | (mpz(1) << (bits - 1)) | 1
    top = [m, min(m, mpz(1) << 64), mpz(1)] if small else [m]
    cts = [mpz(int.from_bytes(rng.bytes((bits + 7) // 8 + 8), "big")) % top[i % len(top)] for i in range(n)]
    return m, cts


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([2, 63, 64, 65, 127, 521, 2048, 4096]), n=st.integers(0, 300),
       n_cells=st.integers(1, 40), seed=st.integers(0, 2 ** 32 - 1), small=st.booleans(),
       skip=st.booleans(), dtype=st.sampled_from([np.int8, np.int16, np.int32, np.int64, np.uint16]))
def test_cell_products_equal_the_gmpy2_loop(bits, n, n_cells, seed, small, skip, dtype):
    m, cts = _random(bits, max(n, 1) + 5, seed, small)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(cts), n)
    cells = rng.integers(0, min(n_cells, 127), n).astype(dtype)
    skipped = int(cells[0]) if skip and n else -1
    table = CiphertextTable.from_ints(cts, m)
    got = table.products(rows, cells, n_cells, skipped)
    assert got == _loop(cts, m, rows.tolist(), cells.tolist(), skipped)
    assert list(got) == sorted(got)
    assert table.products(rows) == ({0: _loop(cts, m, rows.tolist(), [0] * n)[0]} if n else {})


def test_strided_cells_and_packed_buffers_as_workers_receive_them():
    m, cts = _random(4096, 500, 1)
    width, packed = pack_ciphertexts(cts, m)
    table = CiphertextTable.from_packed(packed, width, m)
    assert np.array_equal(table.limbs, CiphertextTable.from_ints(cts, m).limbs)
    codes = np.random.default_rng(1).integers(0, 33, size=(500, 3)).astype(np.int16)
    rows = np.arange(0, 500, 3)
    column = codes[rows][:, 1]  # a strided view, as a single feature's cells are
    assert not column.flags.c_contiguous
    assert table.products(rows, column, 33) == _loop(cts, m, rows.tolist(), column.tolist())


@pytest.mark.parametrize("bits, dominant", [(2203, 0.0), (4253, 0.85), (521, 0.6)])
def test_histograms_equal_the_gmpy2_kernel(bits, dominant):
    """The whole kernel (pairs, singles, missing codes, the derived cell) against per-feature gmpy2 sums.

    A Mersenne prime modulus and units below it: the derived cell takes an inverse.
    """
    m = mpz(2) ** bits - 1
    cts = [c % (m - 1) + 1 for c in _random(bits, 700, bits)[1]]
    rng = np.random.default_rng(bits)
    bins = rng.integers(0, 9, size=(700, 5)).astype(np.int16)
    bins[rng.random(bins.shape) < dominant] = 0
    bins[rng.random(bins.shape) < 0.1] = -1
    n_bins = np.array([9, 9, 9, 9, 9])
    rows = np.sort(rng.permutation(700)[:600])
    want = []
    for f in range(5):
        per_bin = _loop(cts, m, rows.tolist(), bins[rows, f].tolist(), skip=-1)
        want.append([per_bin.get(b, mpz(1)) for b in range(9)])
    assert build_histograms(cts, m, bins, n_bins, rows) == want
    assert build_histograms(cts, m, bins, n_bins, rows, pair_features=False) == want


def test_bad_input_is_refused_before_any_product():
    m, cts = _random(256, 10, 2)
    table = CiphertextTable.from_ints(cts, m)
    with pytest.raises(IndexError, match="row 10 out of range"):
        table.products(np.array([0, 10]), np.array([0, 0]), 1)
    with pytest.raises(IndexError, match="row -1 out of range"):
        table.products(np.array([-1]))
    with pytest.raises(IndexError, match="cell 3 out of range"):
        table.products(np.array([0, 1]), np.array([0, 3]), 3)
    with pytest.raises(ValueError, match="differ in length"):
        table.products(np.array([0, 1]), np.array([0]), 2)
    with pytest.raises(ValueError, match="skip"):
        table.products(np.array([0]), np.array([0]), 2, 2)
    with pytest.raises(TypeError, match="rows must be a 1-D integer array"):
        table.products(np.array([0.0]))
    with pytest.raises(TypeError, match="cells must be a 1-D integer array"):
        table.products(np.array([0]), np.array([[0]]), 1)
    with pytest.raises(ValueError, match="limb width"):
        _histkernel.cell_products(table.limbs, np.zeros(3, dtype="<u8"), np.array([0]), None, 1, -1)
    with pytest.raises(ValueError, match="ciphertext 1 is not below the modulus"):
        CiphertextTable.from_ints([1, m, 2], m)
    with pytest.raises(ValueError, match="odd"):
        CiphertextTable.from_ints([1, 2], m + 1)
    with pytest.raises(ValueError, match="whole number of 32-byte"):
        CiphertextTable.from_packed(b"\x00" * 33, 32, m)
    with pytest.raises(ValueError, match="wider than"):
        CiphertextTable.from_packed(b"\x00" * 80, 40, m)


def test_block_kernel_from_a_packed_buffer_equals_from_a_list():
    m = mpz(2) ** 2281 - 1  # siblings take inverses: units mod a (Mersenne) prime
    cts = [c % (m - 1) + 1 for c in _random(2281, 300, 3)[1]]
    bins = np.random.default_rng(3).integers(-1, 6, size=(300, 4)).astype(np.int16)
    n_bins = np.full(4, 6)
    a, b = (BlockKernel(bins, n_bins, int(m), 2280, 100) for _ in range(2))
    width, packed = pack_ciphertexts(cts, m)
    a.start_tree(cts, [0, 1, 2, 3])
    b.start_tree_packed(packed, width, [0, 1, 2, 3])
    assert a.root() == b.root()
    left = np.arange(0, 300, 4)
    assert a.level([(0, 1, 2, left)], [1, 2]) == b.level([(0, 1, 2, left)], [1, 2])
    assert a.hists[2] == b.hists[2]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(0, 40), seed=st.integers(0, 2 ** 32 - 1), bits=st.sampled_from([61, 521, 2203]))
def test_batch_invert_equals_one_inverse_each(n, seed, bits):
    m = mpz(2) ** bits - 1  # Mersenne primes: every nonzero value is invertible
    xs = [c % (m - 1) + 1 for c in _random(bits, n, seed)[1]]
    assert batch_invert(xs, m) == [gmpy2.invert(x, m) for x in xs]


def test_batch_invert_refuses_a_non_unit_as_invert_does():
    with pytest.raises(ZeroDivisionError):
        batch_invert([mpz(3), mpz(5), mpz(7)], mpz(35))
