"""Tests of fedacq.crypto.ou: correctness, the shared vector API, key checks, the CCA bound."""

from __future__ import annotations

import json
import os
import secrets

import gmpy2
import numpy as np
import pytest

from fedacq.crypto import ou
from fedacq.crypto.paillier import EncryptedVector, FixedPoint, Packing, compress, decompress
from fedacq.link.message import BigInts


@pytest.fixture(scope="session")
def keys():
    # Test-only 768-bit key (insecure_test_key=True): every code path is the one a
    # 2048-bit key takes, with a 127-bit plaintext space and ~10x faster decryption.
    return ou.generate_keypair(768, insecure_test_key=True)


def test_small_keys_refused_without_test_mode():
    with pytest.raises(ValueError, match="below 2048"):
        ou.generate_keypair(1024)
    with pytest.raises(ValueError, match="too small"):
        ou.generate_keypair(300, insecure_test_key=True)


def test_key_shape(keys):
    pk, sk = keys
    assert pk.n_bits == 768 and sk.p * sk.p * sk.q == pk.n
    assert pk.plaintext_bits == 768 // 3 - 1 - ou.CCA_MARGIN_BITS
    assert pk.ciphertext_modulus == pk.n and pk.ciphertext_bytes == 96


def test_round_trip_public_and_key_owner(keys):
    pk, sk = keys
    n = int(pk.n)
    ms = [0, 1, 5, 2**100, int(pk.max_int), n - 1, n - int(pk.max_int)]
    for enc in (pk.encrypt_raw, sk.encrypt_raw):
        v = enc(ms, workers=1)
        assert sk.decrypt_raw(v, workers=1) == ms


def test_homomorphic_ops_through_encrypted_vector(keys):
    pk, sk = keys
    fp = FixedPoint(16)
    x, y = np.array([1.5, -2.25, 0.0, 7.0]), np.array([0.5, 0.25, -3.0, -7.0])
    a, b = pk.encrypt_raw(fp.encode(x, pk), workers=1), pk.encrypt_raw(fp.encode(y, pk), workers=1)
    assert fp.decode(sk.decrypt_raw(a + b, workers=1), pk).tolist() == (x + y).tolist()
    assert fp.decode(sk.decrypt_raw(a - b, workers=1), pk).tolist() == (x - y).tolist()
    assert fp.decode(sk.decrypt_raw(a.mul_scalar([2, -3, 1, 1]), workers=1), pk).tolist() == [3.0, 6.75, 0.0, 7.0]
    assert fp.decode(sk.decrypt_raw(a.add_raw(fp.encode(y, pk)), workers=1), pk).tolist() == (x + y).tolist()
    assert sk.decrypt_raw(a.sum(), workers=1) == fp.encode([x.sum()], pk)
    o = a.obfuscate()
    assert o.ciphertexts != a.ciphertexts and sk.decrypt_raw(o, workers=1) == sk.decrypt_raw(a, workers=1)


def test_packing_and_compression_fill_the_plaintext_bound(keys):
    pk, sk = keys
    packing = Packing.for_key(pk, slot_bits=20, max_terms=8)
    assert packing.total_bits <= pk.plaintext_bits
    m = np.array([[secrets.randbits(20) for _ in range(packing.slots)] for _ in range(8)])
    v = packing.encrypt(m, pk, workers=1)
    assert np.array_equal(packing.unpack(sk.decrypt_raw(v.sum(), workers=1))[0], m.sum(axis=0))
    vals = [secrets.randbits(30) for _ in range(9)]
    c = compress(pk.encrypt_raw(vals, workers=1), 30)
    assert len(c) == -(-9 // (pk.plaintext_bits // 30))
    assert decompress(sk.decrypt_raw(c, workers=1), 30, 9, pk) == vals


def test_plaintexts_outside_the_bound_refused(keys):
    pk, _ = keys
    with pytest.raises(ValueError, match="outside the OU range"):
        pk.encrypt_raw([int(pk.max_int) + 1], workers=1)


def test_forged_ciphertext_refused_not_revealed(keys):
    # g^M for M > p decrypts to M mod p, which would reveal p to whoever saw it:
    # it lands outside the plaintext bound and decryption refuses it.
    pk, sk = keys
    forged = EncryptedVector(pk, [gmpy2.powmod(pk.g, gmpy2.mpz(1) << (pk.p_bits + 40), pk.n)])
    with pytest.raises(ValueError, match="outside the OU plaintext bound"):
        sk.decrypt_raw(forged, workers=1)


def test_public_key_json_round_trip_and_validation(keys):
    pk, sk = keys
    assert ou.PublicKey.from_json(pk.to_json()) == pk
    assert ou.PrivateKey.from_json(sk.to_json()).p == sk.p
    jwk = pk.to_jwk()
    bad = dict(jwk, h=jwk["g"])  # h must be g^n mod n
    with pytest.raises(ValueError, match="g\\^n"):
        ou.PublicKey.from_jwk(bad)
    with pytest.raises(ValueError, match="kty='OU'"):
        ou.PublicKey.from_json(json.dumps(dict(jwk, kty="DAJ")))
    with pytest.raises(ValueError, match="not valid JSON"):
        ou.PublicKey.from_json("{")


def test_peer_ciphertexts_checked(keys):
    pk, sk = keys
    v = pk.encrypt_raw([3, 4], workers=1)
    assert sk.decrypt_raw(pk.vector_from_bigints(v.to_bigints()), workers=1) == [3, 4]
    with pytest.raises(ValueError, match="width"):
        pk.vector_from_bigints(BigInts([3], pk.ciphertext_bytes + 1))
    with pytest.raises(ValueError, match="out of range"):
        pk.vector_from_bigints(BigInts([int(pk.n)], pk.ciphertext_bytes))


def test_other_keys_ciphertexts_refused(keys):
    pk, sk = keys
    other, _ = ou.generate_keypair(768, insecure_test_key=True)
    with pytest.raises(ValueError, match="under key"):
        sk.decrypt_raw(other.encrypt_raw([1], workers=1), workers=1)


def test_worker_pool_matches_local(keys):
    pk, sk = keys
    ms = [secrets.randbits(100) for _ in range(300)]
    v = sk.encrypt_raw(ms, workers=2)
    assert sk.decrypt_raw(v, workers=2) == ms
    assert sk.decrypt_raw(pk.encrypt_raw(ms, workers=2), workers=1) == ms


def test_randomness_from_os_csprng(keys, monkeypatch):
    # With the OS CSPRNG replaced by fixed streams, keys and ciphertexts repeat.
    def run():
        import random
        rnd = random.Random(7)
        monkeypatch.setattr(secrets, "randbits", lambda k: rnd.getrandbits(k))
        monkeypatch.setattr(secrets, "randbelow", lambda k: rnd.randrange(k))
        monkeypatch.setattr(os, "urandom", lambda k: rnd.randbytes(k))
        pk, _ = ou.generate_keypair(768, insecure_test_key=True)
        return pk, pk.encrypt_raw([1, 2], workers=1).ciphertexts

    assert run() == run()


@pytest.mark.parametrize("workers", [1, 2])
def test_randomness_ahead_encrypts_under_an_ou_key(keys, workers):
    """SecureBoost's precomputed randomness (learn.randomness) builds OU factors and OU ciphertexts,
    in this process and in its background workers, that decrypt to the plaintexts."""
    from fedacq.learn.randomness import RandomnessAhead

    pk, sk = keys
    plaintexts = [secrets.randbits(100) for _ in range(8)]
    ahead = RandomnessAhead(pk, len(plaintexts), workers=workers)
    try:
        for _ in range(2):  # the second batch was computed in the background while the first was used
            factors = ahead.take()
            ciphertexts = ahead.encrypt(plaintexts, factors)
            assert len(set(ciphertexts)) == len(plaintexts)
            assert sk.decrypt_raw(EncryptedVector(pk, ciphertexts), workers=1) == plaintexts
    finally:
        ahead.close()


def test_keys_have_the_small_randomness_subgroup(keys):
    """Coron–Naccache–Paillier form: t prime, t | p - 1, h of order t mod p^2, so decryption
    exponentiates by t; the key is still a textbook OU key (h = g^n, checked by PublicKey)."""
    pk, sk = keys
    t, p, psq = sk.t, sk.p, sk.psquare
    assert gmpy2.is_prime(t) and (p - 1) % t == 0 and t.bit_length() == ou.subgroup_bits(pk.n_bits)
    assert gmpy2.powmod(pk.h, t, psq) == 1 and gmpy2.powmod(pk.g, t, psq) != 1
    assert sk.exponent == t
    assert ou.subgroup_bits(2048) == 224 and ou.subgroup_bits(3072) == 256


def test_short_exponent_decrypts_bit_identical_to_textbook(keys):
    """The same key without t decrypts with p - 1 (keys made before the variant): same values,
    negatives and sums included; JSON keeps t, and JSON without t still loads."""
    pk, sk = keys
    textbook = ou.PrivateKey(pk, sk.p, sk.q)
    assert textbook.exponent == sk.p - 1
    n = int(pk.n)
    ms = [0, 1, 2**90, int(pk.max_int), n - 1, n - int(pk.max_int)] + [secrets.randbits(100) for _ in range(40)]
    v = pk.encrypt_raw(ms, workers=1)
    v = v + pk.encrypt_raw([0] * len(ms), workers=1)
    assert sk.decrypt_raw(v, workers=1) == textbook.decrypt_raw(v, workers=1) == ms
    assert sk.decrypt_raw(v, workers=2) == ms
    assert ou.PrivateKey.from_json(sk.to_json()).t == sk.t
    assert "t" in json.loads(sk.to_json()) and "t" not in json.loads(textbook.to_json())
    assert ou.PrivateKey.from_json(textbook.to_json()).decrypt_raw(v, workers=1) == ms


def test_bad_subgroup_order_refused(keys):
    pk, sk = keys
    for bad in (sk.t + 2, (sk.p - 1) // sk.t, 3):
        with pytest.raises(ValueError, match="order of h"):
            ou.PrivateKey(pk, sk.p, sk.q, bad)


def test_ciphertext_outside_the_subgroup_refused(keys):
    # A unit that is not g^m h^r (c^t != 1 mod p) is refused with the out-of-bound message:
    # the peer cannot tell which test failed.
    pk, sk = keys
    while True:
        c = gmpy2.mpz(2 + secrets.randbelow(int(pk.n) - 3))
        if gmpy2.powmod(c, sk.t, sk.p) != 1:
            break
    with pytest.raises(ValueError, match="outside the OU plaintext bound"):
        sk.decrypt_raw(EncryptedVector(pk, [c]), workers=1)


def test_a_refused_ciphertext_is_named_by_its_place_in_the_whole_batch():
    """Threaded decryption splits a batch into chunks; the refusal names the batch index."""
    from fedacq.crypto import parallel

    pk, sk = ou.generate_keypair(768, insecure_test_key=True)  # small key: speed only
    good = pk.encrypt_raw_local(list(range(9)))
    forged = gmpy2.powmod(pk.g, gmpy2.mpz(1) << (pk.plaintext_bits + 8), pk.n)  # g^M, M above the bound
    batch = good[:7] + [forged] + good[7:]
    with pytest.raises(ValueError, match=r"ciphertext 7 decrypts outside the OU plaintext bound"):
        parallel.decrypt(sk, batch, workers=2)
