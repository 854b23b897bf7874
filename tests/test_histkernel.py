"""The compiled bin sums (fedacq.learn._histkernel) equal the gmpy2 loops they replaced, residue for residue.

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
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedacq.learn import _histkernel
from fedacq.learn.histogram import BlockKernel, CiphertextTable, batch_invert, build_histograms, pack_ciphertexts


AVX2 = _histkernel.simd()


@pytest.fixture(params=[pytest.param(True, id="avx2"), pytest.param(False, id="portable")])
def products(request):
    """Each property under both product loops: AVX2 (where the CPU has it) and the portable one."""
    if request.param and not AVX2:
        pytest.skip("this CPU has no AVX2")
    before = _histkernel.simd()
    _histkernel.simd(request.param)
    yield request.param
    _histkernel.simd(before)


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


def _fold(cells_products, m, radix, n_bins):
    """Per feature of a group, the gmpy2 loop folding cells into bins (empty bins: 1)."""
    out = []
    for j, nb in enumerate(n_bins):
        sums = {}
        for c, p in cells_products.items():
            code = c if len(radix) == 1 else (c // radix[1] if j == 0 else c % radix[1])
            if code < nb:
                sums[code] = p if code not in sums else sums[code] * p % m
        out.append([sums.get(b, mpz(1)) for b in range(nb)])
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])  # one loop per run
@given(bits=st.sampled_from([2, 63, 64, 65, 127, 521, 2048, 4096]), n=st.integers(0, 300),
       radix=st.sampled_from([[1], [2], [9], [33], [3, 4], [8, 5], [33, 33], [1, 6]]),
       seed=st.integers(0, 2 ** 32 - 1), small=st.booleans(), skip=st.booleans(),
       dtype=st.sampled_from([np.int16, np.int32, np.int64, np.uint16]))
def test_bin_sums_equal_the_gmpy2_loop(products, bits, n, radix, seed, small, skip, dtype):
    """Cells, then bins with the missing code (radix - 1) in none; the derived cell when ``skip``."""
    m, cts = _random(bits, max(n, 1) + 5, seed, small)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, len(cts), n)
    n_cells = int(np.prod(radix))
    cells = rng.integers(0, n_cells, n).astype(dtype)
    n_bins = [r - 1 for r in radix]
    table = CiphertextTable.from_ints(cts, m)
    want_cells = _loop(cts, m, rows.tolist(), cells.tolist())
    total = table.node_total(rows)
    assert int.from_bytes(total, "little") == (_loop(cts, m, rows.tolist(), [0] * n)[0] if n else 1)
    top = int(cells[0]) if skip and n else -1
    if top >= 0:  # derived from the total: the same residue when the other cells' product is invertible
        rest = mpz(1)
        for c, p in want_cells.items():
            if c != top:
                rest = rest * p % m
        if gmpy2.gcd(rest, m) != 1:
            with pytest.raises(ZeroDivisionError):
                table.bin_sums(rows, cells, radix, n_bins, top, total)
            return
    assert table.bin_sums(rows, cells, radix, n_bins, top, total) == _fold(want_cells, m, radix, n_bins)


def test_strided_cells_and_packed_buffers_as_workers_receive_them():
    m, cts = _random(4096, 500, 1)
    width, packed = pack_ciphertexts(cts, m)
    table = CiphertextTable.from_packed(packed, width, m)
    assert table.table == CiphertextTable.from_ints(cts, m).table
    codes = np.random.default_rng(1).integers(0, 33, size=(500, 3)).astype(np.int16)
    rows = np.arange(0, 500, 3)
    column = codes[rows][:, 1]  # a strided view, as a single feature's cells are
    assert not column.flags.c_contiguous
    want = _fold(_loop(cts, m, rows.tolist(), column.tolist()), m, [33], [32])
    assert table.bin_sums(rows, column, [33], [32]) == want


@pytest.mark.parametrize("bits, dominant", [(2203, 0.0), (4253, 0.85), (521, 0.6)])
def test_histograms_equal_the_gmpy2_kernel(products, bits, dominant):
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
        table.bin_sums(np.array([0, 10]), np.array([0, 0]), [2], [1])
    with pytest.raises(IndexError, match="row -1 out of range"):
        table.node_total(np.array([-1]))
    with pytest.raises(IndexError, match="cell 3 out of range"):
        table.bin_sums(np.array([0, 1]), np.array([0, 3]), [3], [2])
    with pytest.raises(ValueError, match="differ in length"):
        table.bin_sums(np.array([0, 1]), np.array([0]), [2], [1])
    with pytest.raises(ValueError, match="do not describe"):
        table.bin_sums(np.array([0]), np.array([0]), [2], [1], skip=2)
    with pytest.raises(ValueError, match="do not describe"):
        table.bin_sums(np.array([0]), np.array([0]), [2, 3], [1, 4])
    with pytest.raises(ValueError, match="needs the node total"):
        table.bin_sums(np.array([0]), np.array([0]), [2], [1], skip=1)
    with pytest.raises(ValueError, match="total is not below"):
        table.bin_sums(np.array([0]), np.array([0]), [2], [1], 1, int(m).to_bytes(8 * table.k, "little"))
    with pytest.raises(TypeError, match="rows must be a 1-D integer array"):
        table.node_total(np.array([0.0]))
    with pytest.raises(TypeError, match="cells must be a 1-D integer array"):
        table.bin_sums(np.array([0]), np.array([[0]]), [2], [1])
    with pytest.raises(ValueError, match="odd"):
        _histkernel.bin_sums(table.table, np.zeros(3, dtype="<u8"), np.array([0]), None, 1, 0, 1, 0, -1, None)
    with pytest.raises(ValueError, match="not a whole number of this modulus's rows"):  # a table of another modulus
        _histkernel.bin_sums(table.table, np.array([1, 0, 1], dtype="<u8"), np.array([0]), None, 1, 0, 1, 0, -1, None)
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

