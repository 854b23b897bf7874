"""Tests of fedacq.crypto.paillier: correctness, edge values, interop with phe, bad input."""

from __future__ import annotations

import json

import gmpy2
import numpy as np
import phe
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedacq.crypto.paillier import (
    EncryptedVector,
    FixedPoint,
    Packing,
    PrivateKey,
    PublicKey,
    compress,
    compress_capacity,
    decompress,
    generate_keypair,
)
from fedacq.link.message import BigInts


@pytest.fixture(scope="session")
def keys():
    # Test-only 1024-bit key (insecure_test_key=True): keygen and decryption are
    # ~8x faster than 2048 bits and every code path is the same.
    return generate_keypair(1024, insecure_test_key=True)


@pytest.fixture(scope="session")
def other_keys():
    # A second test-only key, to check that ciphertexts under another key are refused.
    return generate_keypair(512, insecure_test_key=True)


@pytest.fixture(scope="session")
def real_keys():
    return generate_keypair(2048)


def roundtrip(keys, x, frac_bits=16):
    pk, sk = keys
    fp = FixedPoint(frac_bits)
    return fp.decode(sk.decrypt_raw(pk.encrypt_raw(fp.encode(x, pk), workers=1), workers=1), pk)


def test_keys_below_2048_bits_refused():
    with pytest.raises(ValueError, match="below 2048 bits"):
        generate_keypair(1024)


def test_real_2048_bit_key_roundtrip(real_keys):
    pk, sk = real_keys
    assert pk.n_bits == 2048 and pk.ciphertext_bytes == 512
    x = np.array([0.0, -1.0, 123.456, -9e9, 1e-4])
    np.testing.assert_allclose(roundtrip(real_keys, x, 32), x, atol=2.0 ** -32)
    plain = FixedPoint(32).encode(x, pk)
    assert sk.decrypt_raw(sk.encrypt_raw(plain, workers=1), workers=1) == plain


def test_random_and_edge_values(keys):
    pk, sk = keys
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=50) * 1e3, [0.0, -0.0, 1.0, -1.0]])
    np.testing.assert_allclose(roundtrip(keys, x, 24), x, atol=2.0 ** -24)
    ints = np.array([0, 1, -1, 2**62, -(2**62)], dtype=np.int64)
    np.testing.assert_array_equal(roundtrip(keys, ints, 0), ints.astype(np.float64))
    # Beyond int64 after scaling: encoded exactly, not through a lossy float path.
    huge = np.array([1e300, -1e300, 2.0**70 + 2.0**18])
    np.testing.assert_array_equal(roundtrip(keys, huge, 8), huge)


def test_max_of_range_and_one_beyond(keys):
    pk, sk = keys
    fp = FixedPoint(0)
    top = int(pk.max_int)
    plain = fp.encode(np.array([top, -top], dtype=object), pk)
    got = fp.decode_ints(sk.decrypt_raw(pk.encrypt_raw(plain, workers=1), workers=1), pk)
    assert got == [top, -top]
    with pytest.raises(ValueError, match="safe range"):
        fp.encode(np.array([top + 1], dtype=object), pk)
    with pytest.raises(ValueError, match="safe range"):
        fp.encode(np.array([-top - 1], dtype=object), pk)


def test_floats_at_precision_limit(keys):
    # The smallest step of the encoding survives exactly; half a step rounds to even.
    f = 20
    step = 2.0 ** -f
    x = np.array([step, -step, 3 * step, 0.5 * step, 1.5 * step, 1e6 + step])
    got = roundtrip(keys, x, f)
    np.testing.assert_array_equal(got, [step, -step, 3 * step, 0.0, 2 * step, 1e6 + step])


def test_nan_and_inf_refused(keys):
    pk, _ = keys
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ValueError, match="NaN or infinity"):
            FixedPoint(8).encode(np.array([1.0, bad]), pk)


def test_homomorphic_add_sum_sub_scalar(keys):
    pk, sk = keys
    fp = FixedPoint(16)
    a = np.array([1.5, -2.25, 0.0, 100.0])
    b = np.array([-0.5, 4.0, -7.0, 0.125])
    va, vb = (pk.encrypt_raw(fp.encode(x, pk), workers=1) for x in (a, b))
    dec = lambda v: fp.decode(sk.decrypt_raw(v, workers=1), pk)
    np.testing.assert_allclose(dec(va + vb), a + b)
    np.testing.assert_allclose(dec(va - vb), a - b)
    np.testing.assert_allclose(dec(va.sum()), [a.sum()])
    np.testing.assert_allclose(dec(va.mul_scalar([2, -3, 5, 0])), a * [2, -3, 5, 0])
    np.testing.assert_allclose(dec(va.mul_scalar(-1)), -a)
    np.testing.assert_allclose(dec(va.take(np.array([3, 0]))), a[[3, 0]])
    np.testing.assert_allclose(dec(va.add_raw(fp.encode(b, pk))), a + b)
    obf = va.obfuscate()
    assert all(x != y for x, y in zip(obf.ciphertexts, va.ciphertexts))
    np.testing.assert_allclose(dec(obf), a)


def test_sum_overflow_detected_on_decode(keys):
    pk, sk = keys
    fp = FixedPoint(0)
    top = int(pk.max_int)
    v = pk.encrypt_raw(fp.encode(np.array([top, top], dtype=object), pk), workers=1).sum()
    with pytest.raises(ValueError, match="overflowed"):
        fp.decode(sk.decrypt_raw(v, workers=1), pk)


def test_ciphertexts_are_randomised(keys):
    pk, _ = keys
    v = pk.encrypt_raw([7, 7, 7], workers=1)
    assert len(set(v.ciphertexts)) == 3


def test_phe_interop_both_ways(keys):
    pk, sk = keys
    phe_pub = phe.PaillierPublicKey(int(pk.n))
    phe_priv = phe.PaillierPrivateKey(phe_pub, int(sk.p), int(sk.q))
    plain = [0, 1, 12345, int(pk.n) - 1]
    ours = pk.encrypt_raw(plain, workers=1)
    assert [phe_priv.raw_decrypt(int(c)) for c in ours.ciphertexts] == plain
    theirs = EncryptedVector(pk, [gmpy2.mpz(phe_pub.raw_encrypt(m)) for m in plain])
    assert sk.decrypt_raw(theirs, workers=1) == plain
    # Signed fixed-point values cross too: phe's base-16 exponent -2 is FixedPoint(8).
    enc = phe_pub.encrypt(-3.5, precision=2.0 ** -8)
    assert enc.exponent == -2
    raw = sk.decrypt_raw(EncryptedVector(pk, [gmpy2.mpz(enc.ciphertext())]), workers=1)
    assert FixedPoint(8).decode(raw, pk)[0] == -3.5
    mine = pk.encrypt_raw(FixedPoint(8).encode(np.array([-3.5]), pk), workers=1)
    assert phe_priv.decrypt(phe.EncryptedNumber(phe_pub, int(mine.ciphertexts[0]), -2)) == -3.5


def test_json_roundtrip_and_phe_format(keys):
    pk, sk = keys
    assert PublicKey.from_json(pk.to_json()) == pk
    sk2 = PrivateKey.from_json(sk.to_json())
    assert (sk2.p, sk2.q) == (sk.p, sk.q)
    jwk = json.loads(sk.to_json())
    assert jwk["kty"] == "DAJ" and jwk["pub"]["alg"] == "PAI-GN1"
    # The phe base64url helper reads our fields.
    assert phe.util.base64_to_int(jwk["pub"]["n"]) == int(pk.n)
    assert phe.util.base64_to_int(jwk["p"]) * phe.util.base64_to_int(jwk["q"]) == int(pk.n)
    with pytest.raises(ValueError, match="kty='DAJ'"):
        PublicKey.from_json('{"kty": "RSA", "n": "AQAB"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        PrivateKey.from_json("{")


def test_bigints_roundtrip_and_range_checks(keys):
    pk, sk = keys
    v = pk.encrypt_raw([1, 2, 3], workers=1)
    b = BigInts.from_bytes(v.to_bigints().to_bytes(), pk.ciphertext_bytes)
    assert sk.decrypt_raw(pk.vector_from_bigints(b), workers=1) == [1, 2, 3]
    with pytest.raises(ValueError, match="out of range"):
        pk.vector_from_bigints(BigInts([1, 0], pk.ciphertext_bytes))
    with pytest.raises(ValueError, match="out of range"):
        pk.vector_from_bigints(BigInts([int(pk.nsquare)], pk.ciphertext_bytes))
    with pytest.raises(ValueError, match="width"):
        pk.vector_from_bigints(BigInts([1], pk.ciphertext_bytes + 1))
    with pytest.raises(ValueError, match="out of range"):
        sk.decrypt_raw(EncryptedVector(pk, [pk.nsquare + 5]), workers=1)


def test_ciphertext_under_wrong_key_refused(keys, other_keys):
    pk, sk = keys
    opk, _ = other_keys
    foreign = opk.encrypt_raw([1], workers=1)
    with pytest.raises(ValueError, match=f"under key {opk.fingerprint}"):
        sk.decrypt_raw(foreign, workers=1)
    with pytest.raises(ValueError, match="different keys"):
        pk.encrypt_raw([1], workers=1) + foreign


def test_plaintext_out_of_range_refused(keys):
    pk, _ = keys
    with pytest.raises(ValueError, match=r"outside \[0, n\)"):
        pk.encrypt_raw([int(pk.n)], workers=1)
    with pytest.raises(ValueError, match=r"outside \[0, n\)"):
        pk.encrypt_raw([-1], workers=1)


def test_packing_roundtrip_and_guard_bits(keys):
    pk, sk = keys
    pack = Packing.for_key(pk, slot_bits=20, max_terms=8)
    assert pack.guard_bits == 3 and pack.slots == (pk.n_bits - 1) // 23
    rng = np.random.default_rng(1)
    m = rng.integers(0, 2**20, size=(8, pack.slots))
    v = pack.encrypt(m, pk, workers=1)
    total = v.sum()  # 8 terms: exactly the limit
    got = pack.unpack(sk.decrypt_raw(total, workers=1))
    np.testing.assert_array_equal(got[0], m.sum(axis=0))
    with pytest.raises(ValueError, match="max_terms=8"):
        total + v.take([0])
    with pytest.raises(ValueError, match="max_terms=8"):
        v.take([0]).mul_scalar(9)
    with pytest.raises(ValueError, match="non-negative"):
        v.mul_scalar(-1)


def test_packing_bad_input(keys):
    pk, _ = keys
    pack = Packing(slot_bits=8, slots=3, max_terms=2)
    with pytest.raises(ValueError, match=r"row 0, slot 1: 256"):
        pack.pack([[1, 256, 0]])
    with pytest.raises(ValueError, match=r"row 0, slot 0: -1"):
        pack.pack([[-1, 0, 0]])
    with pytest.raises(ValueError, match="shape"):
        pack.pack([[1, 2, 3, 4]])
    with pytest.raises(ValueError, match="bits above"):
        pack.unpack([1 << (pack.width * 3)])
    with pytest.raises(ValueError, match="needs"):
        Packing(slot_bits=600, slots=2, max_terms=1).check_key(pk)


def test_compression_roundtrip(keys):
    pk, sk = keys
    slot_bits = 40
    cap = compress_capacity(pk, slot_bits)
    values = list(np.random.default_rng(2).integers(0, 2**39, size=2 * cap + 3).tolist())
    # Sums of two encryptions each, as histogram bins would be.
    half = [v // 2 for v in values]
    rest = [v - h for v, h in zip(values, half)]
    v = pk.encrypt_raw(half, workers=1) + pk.encrypt_raw(rest, workers=1)
    packed = compress(v, slot_bits)
    assert len(packed) == 3
    assert decompress(sk.decrypt_raw(packed, workers=1), slot_bits, len(values), pk) == values
    with pytest.raises(ValueError, match="cannot hold"):
        decompress([0], slot_bits, len(values), pk)


def test_compression_of_packed_sums(keys):
    pk, sk = keys
    pack = Packing(slot_bits=16, slots=2, max_terms=4)  # (g, h) pairs as in SecureBoost
    rows = np.random.default_rng(3).integers(0, 2**16, size=(12, 2))
    enc = pack.encrypt(rows, pk, workers=1)
    sums = [enc.take(range(i, i + 4)).sum() for i in range(0, 12, 4)]
    cs = EncryptedVector(pk, [s.ciphertexts[0] for s in sums])
    out = decompress(sk.decrypt_raw(compress(cs, pack.total_bits), workers=1), pack.total_bits, 3, pk)
    np.testing.assert_array_equal(pack.unpack(out), rows.reshape(3, 4, 2).sum(axis=1))


def test_compression_overflow_detected(keys):
    pk, sk = keys
    # Overflow of the top slot of a compressed ciphertext is detectable (nothing is
    # above it); a lower slot's carry is not, which is why compress needs the bound.
    v = pk.encrypt_raw([1, 2**8], workers=1)  # 2^8 does not fit 8 bits
    with pytest.raises(ValueError, match="exceeded"):
        decompress(sk.decrypt_raw(compress(v, 8), workers=1), 8, 2, pk)


def test_parallel_matches_serial(keys):
    pk, sk = keys
    plain = list(range(600))
    v = pk.encrypt_raw(plain, workers=2)
    assert sk.decrypt_raw(v, workers=2) == plain
    assert sk.decrypt_raw(v, workers=1) == plain


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=1, max_size=6),
       st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), min_size=6, max_size=6))
def test_property_add_matches_float_add(keys, a, b):
    pk, sk = keys
    fp = FixedPoint(30)
    a, b = np.array(a), np.array(b[: len(a)])
    s = pk.encrypt_raw(fp.encode(a, pk), workers=1) + pk.encrypt_raw(fp.encode(b, pk), workers=1)
    expected = np.array([(fp.to_ints([x])[0] + fp.to_ints([y])[0]) / 2**30 for x, y in zip(a, b)])
    np.testing.assert_array_equal(fp.decode(sk.decrypt_raw(s, workers=1), pk), expected)
    np.testing.assert_allclose(expected, a + b, atol=2.0 ** -30, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=1, max_value=30), st.integers(min_value=3, max_value=16),
       st.data())
def test_property_packing_roundtrip(keys, slot_bits, max_terms, data):
    pk, _ = keys
    pack = Packing.for_key(pk, slot_bits, max_terms)
    rows = data.draw(st.lists(st.lists(st.integers(0, 2**slot_bits - 1), min_size=pack.slots,
                                       max_size=pack.slots), min_size=1, max_size=3))
    sums = [sum(col) for col in zip(*rows)]
    assert pack.unpack(pack.pack(rows)).tolist() == rows
    # Up to 3 rows <= max_terms: the plaintext sum keeps every slot's sum intact.
    assert pack.unpack([sum(pack.pack(rows))]).tolist() == [sums]


def test_key_owner_encryption_equals_public_encryption(keys, monkeypatch):
    # Same random digits in -> bit-identical ciphertexts out: the CRT path is the
    # public-key encryption computed faster, with the same distribution.
    pk, sk = keys
    plain = [0, 1, 2**40, int(pk.n) - 1]
    stream = bytes(range(256)) * 40
    monkeypatch.setattr("fedacq.crypto.paillier.os.urandom", lambda k: stream[:k])
    assert sk.encrypt_raw(plain, workers=1).ciphertexts == pk.encrypt_raw(plain, workers=1).ciphertexts
    monkeypatch.undo()
    v = sk.encrypt_raw(plain, workers=1)
    assert sk.decrypt_raw(v, workers=1) == plain
    with pytest.raises(ValueError, match=r"outside \[0, n\)"):
        sk.encrypt_raw([-1], workers=1)


def test_key_owner_parallel_encryption(keys):
    pk, sk = keys
    plain = list(range(300))
    assert sk.decrypt_raw(sk.encrypt_raw(plain, workers=2), workers=1) == plain


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(-(2**60), 2**60), st.integers(-(2**60), 2**60),
                          st.integers(-(2**20), 2**20)), min_size=1, max_size=5))
def test_property_signed_sub_and_scalar(keys, triples):
    pk, sk = keys
    fp = FixedPoint(0)
    a, b, k = (np.array(col, dtype=object) for col in zip(*triples))
    va, vb = (pk.encrypt_raw(fp.encode(x, pk), workers=1) for x in (a, b))
    got = fp.decode_ints(sk.decrypt_raw((va - vb).mul_scalar(list(k)), workers=1), pk)
    assert got == [(x - y) * z for x, y, z in zip(a, b, k)]


def test_key_and_encryption_randomness_come_only_from_the_os_csprng(monkeypatch):
    """With secrets.randbits and os.urandom replaced by fixed streams, keys and ciphertexts repeat:
    nothing else (gmpy2's Mersenne Twister, numpy, a seed) feeds them. Seeding gmpy2's and numpy's
    generators differently between the two draws changes nothing. 512-bit keys: speed only."""
    import random

    from fedacq.crypto import paillier

    def draw(seed):
        fixed = random.Random(1234)  # the test's own stand-in for the OS CSPRNG
        monkeypatch.setattr(paillier.secrets, "randbits", fixed.getrandbits)
        monkeypatch.setattr(paillier.os, "urandom", fixed.randbytes)
        np.random.seed(seed)
        gmpy2.mpz_urandomb(gmpy2.random_state(seed), 64)
        pk, sk = generate_keypair(512, insecure_test_key=True)
        return pk.n, pk.encrypt_raw([1, 2, 3], workers=1).ciphertexts, pk.random_factors(2)

    assert draw(1) == draw(2)
    monkeypatch.undo()
    assert generate_keypair(512, insecure_test_key=True)[0] != generate_keypair(512, insecure_test_key=True)[0]
