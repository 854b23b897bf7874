"""The encrypted histogram kernel against plaintext sums.

512-bit keys (``insecure_test_key=True``) only for speed.
"""

import numpy as np
import pytest

from fedacq.crypto.paillier import EncryptedVector, decompress, generate_keypair
from fedacq.learn.histogram import (BlockKernel, GradientCodec, HistogramEngine, PackingLayout,
                                    build_histograms, subtract_histograms)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair(512, insecure_test_key=True)


def _setup(keys, n=300, seed=0, dominant=True):
    pk, sk = keys
    rng = np.random.default_rng(seed)
    bins = rng.integers(0, 6, size=(n, 4)).astype(np.int16)
    if dominant:  # most rows in one bin per feature: exercises the derive-by-subtraction path
        bins[rng.random((n, 4)) < 0.7] = 2
    bins[rng.random((n, 4)) < 0.1] = -1
    g = rng.normal(size=n).astype(np.float32)
    h = rng.random(n).astype(np.float32)
    in_sample = rng.random(n) < 0.9
    layout = PackingLayout.for_rows(n)
    codec = GradientCodec(layout)
    cts = sk.encrypt_raw(codec.encode(g, h, in_sample), workers=1).ciphertexts
    return pk, sk, bins, g, h, in_sample, layout, codec, cts


def _plain(bins, rows, g, h, in_sample, f, nb):
    b = bins[rows, f]
    ok = (b >= 0) & in_sample[rows]
    return (np.bincount(b[ok], weights=g[rows][ok].astype(np.float64), minlength=nb),
            np.bincount(b[ok], weights=h[rows][ok].astype(np.float64), minlength=nb),
            np.bincount(b[ok], minlength=nb))


def _decrypt(sk, pk, codec, flat):
    ints = sk.decrypt_raw(EncryptedVector(pk, flat), workers=1)
    return codec.decode(ints)


@pytest.mark.parametrize("dominant", [True, False])
def test_histograms_and_subtraction_decode_to_plaintext_sums(keys, dominant):
    pk, sk, bins, g, h, in_sample, layout, codec, cts = _setup(keys, dominant=dominant)
    n_bins = np.full(4, 6)
    rows = np.arange(len(g))
    child = rows[bins[:, 0] <= 1]
    parent_h = build_histograms(cts, pk.nsquare, bins, n_bins, rows)
    child_h = build_histograms(cts, pk.nsquare, bins, n_bins, child)
    sibling_h = subtract_histograms(parent_h, child_h, pk.nsquare)
    sibling = np.setdiff1d(rows, child)
    for hist, rs in ((parent_h, rows), (child_h, child), (sibling_h, sibling)):
        G, H, C = _decrypt(sk, pk, codec, [c for feat in hist for c in feat])
        for f in range(4):
            pg, ph, pc = _plain(bins, rs, g, h, in_sample, f, 6)
            np.testing.assert_allclose(G[f * 6:(f + 1) * 6], pg, atol=1e-9)
            np.testing.assert_allclose(H[f * 6:(f + 1) * 6], ph, atol=1e-9)
            np.testing.assert_array_equal(C[f * 6:(f + 1) * 6], pc)


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_engine_blocks_compress_cumulative_sums(keys, n_jobs):
    pk, sk, bins, g, h, in_sample, layout, codec, cts = _setup(keys, seed=1)
    n_bins = np.full(4, 6)
    engine = HistogramEngine(bins, n_bins, pk.nsquare, pk.n_bits, layout.entry_bits, n_jobs=n_jobs)
    try:
        active = np.array([0, 2, 3])
        engine.start_tree(cts, active)
        packed = engine.root()
        blocks = engine.block_features
        assert sum(blocks) == 3 and len(blocks) == n_jobs
        plain = sk.decrypt_raw(EncryptedVector(pk, packed), workers=1)
        pos, feat_pos = 0, 0
        for k in blocks:
            count = 6 * k
            n_ct = -(-count // ((pk.n_bits - 1) // layout.entry_bits))
            G, H, C = codec.decode(decompress(plain[pos:pos + n_ct], layout.entry_bits, count, pk))
            pos += n_ct
            for j, f in enumerate(active[feat_pos:feat_pos + k]):
                pg, ph, pc = _plain(bins, np.arange(len(g)), g, h, in_sample, f, 6)
                np.testing.assert_allclose(G[j * 6:(j + 1) * 6], np.cumsum(pg), atol=1e-9)
                np.testing.assert_array_equal(C[j * 6:(j + 1) * 6], np.cumsum(pc))
            feat_pos += k
        assert pos == len(packed)
    finally:
        engine.close()


def test_kernel_level_keeps_parent_for_subtraction(keys):
    pk, sk, bins, g, h, in_sample, layout, codec, cts = _setup(keys, seed=2)
    kernel = BlockKernel(bins, np.full(4, 6), pk.nsquare, pk.n_bits, layout.entry_bits)
    kernel.start_tree(cts, [0, 1, 2, 3])
    kernel.root()
    left = np.nonzero(bins[:, 1] <= 2)[0]
    kernel.level([(0, 1, 2, left)], [1, 2])
    right = np.setdiff1d(np.arange(len(g)), left)
    G, H, C = _decrypt(sk, pk, codec, [c for feat in kernel.hists[2] for c in feat])
    pg, ph, pc = _plain(bins, right, g, h, in_sample, 3, 6)
    np.testing.assert_allclose(G[18:24], pg, atol=1e-9)
    np.testing.assert_array_equal(C[18:24], pc)



def test_kernel_under_an_ou_key():
    # The same kernel under an OU key: products mod n, compression within plaintext_bits.
    from fedacq.crypto import ou

    # Test-only 768-bit OU key (insecure_test_key=True): speed; same code path as 2048 bits.
    keys = ou.generate_keypair(768, insecure_test_key=True)
    pk, sk, bins, g, h, in_sample, layout, codec, cts = _setup(keys, n=200, seed=4)
    kernel = BlockKernel(bins, np.full(4, 6), pk.ciphertext_modulus, pk.plaintext_bits + 1, layout.entry_bits)
    kernel.start_tree(cts, [0, 1, 2, 3])
    packed = kernel.root()
    entries = decompress(sk.decrypt_raw(EncryptedVector(pk, packed), workers=1), layout.entry_bits, 24, pk)
    G, H, C = codec.decode(entries)
    for f in range(4):
        pg, ph, pc = _plain(bins, np.arange(len(g)), g, h, in_sample, f, 6)
        np.testing.assert_allclose(G[f * 6:(f + 1) * 6], np.cumsum(pg), atol=1e-9)
        np.testing.assert_array_equal(C[f * 6:(f + 1) * 6], np.cumsum(pc))
