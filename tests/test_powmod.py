"""Batched exponentiations (fedacq.crypto.powmod, C lanes) equal gmpy2's, base for base, on both product loops."""

import gmpy2
import pytest
from gmpy2 import mpz
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedacq.crypto import _powmod
from fedacq.crypto.powmod import powmod_list
from test_histkernel import _random


@pytest.fixture(params=[pytest.param(True, id="avx2"), pytest.param(False, id="portable")])
def products(request):
    if request.param and not _powmod.simd():
        pytest.skip("this CPU has no AVX2")
    before = _powmod.simd()
    _powmod.simd(request.param)
    yield
    _powmod.simd(before)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.sampled_from([2, 63, 64, 65, 683, 1366, 2048, 4096]), n=st.integers(0, 9),
       exponent_bits=st.sampled_from([0, 1, 4, 5, 6, 64, 65, 682, 1024]), seed=st.integers(0, 2 ** 32 - 1))
def test_powmod_list_equals_gmpy2(products, bits, n, exponent_bits, seed):
    """Odd moduli of any size, a short last batch, bases 0, 1 and above the modulus, exponents 0 and 1."""
    rs = gmpy2.random_state(seed)
    m = gmpy2.mpz_urandomb(rs, bits) | (mpz(1) << (bits - 1)) | 1
    e = gmpy2.mpz_urandomb(rs, exponent_bits) if exponent_bits else mpz(0)
    bases = [gmpy2.mpz_urandomb(rs, bits + 8) for _ in range(n)] + [mpz(0), mpz(1), m, m + 1]
    assert powmod_list(bases, e, m) == [gmpy2.powmod(b, e, m) for b in bases]
    assert powmod_list(bases[:n % 4], e, m) == [gmpy2.powmod(b, e, m) for b in bases[:n % 4]]  # fewer than 4: gmpy2


def test_powmod_list_refuses_what_it_cannot_compute():
    with pytest.raises(ValueError, match="odd positive modulus"):
        powmod_list([3], 5, 10)
    with pytest.raises(ValueError, match="non-negative exponent"):
        powmod_list([3], -1, 11)
    with pytest.raises(ValueError, match="base 0 is not below the modulus"):  # the raw call takes reduced bases only
        _powmod.powmod_list((11).to_bytes(8, "little"), (3).to_bytes(8, "little"), (11).to_bytes(8, "little"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.sampled_from([64, 683, 2048, 4096]), count=st.integers(0, 9), rows=st.integers(1, 4),
       seed=st.integers(0, 2 ** 32 - 1))
def test_fixed_base_powers_equal_the_gmpy2_products(products, bits, count, rows, seed):
    """Encryption's randomness from a fixed-base table: prod_i table[i][digit_i], any count (a short last batch)."""
    import numpy as np

    from fedacq.crypto.paillier import WINDOW_BITS, _fixed_base_powers, _random_digits, _window_table

    rs = gmpy2.random_state(seed)
    m = gmpy2.mpz_urandomb(rs, bits) | (mpz(1) << (bits - 1)) | 1
    table = _window_table(gmpy2.mpz_urandomb(rs, bits) % m, m, rows)
    digits = _random_digits(count, rows)
    digits[:1, :] = (1 << WINDOW_BITS) - 1  # the largest digit in every row, and 0 somewhere below
    digits[1:2, :] = 0
    want = []
    for ds in digits.tolist():
        acc = mpz(1)
        for row, d in zip(table, ds):
            acc = acc * row[d] % m
        want.append(acc)
    assert _fixed_base_powers(table, m, digits) == want
    assert table[-1][3] == gmpy2.powmod(table[0][1], 3 << (WINDOW_BITS * (rows - 1)), m)  # base^(d 2^(w i))
    with pytest.raises(ValueError, match="digit"):
        _fixed_base_powers(table, m, np.full((1, rows), 1 << WINDOW_BITS, dtype=np.uint16))
    with pytest.raises(ValueError, match="uint16 array"):
        _fixed_base_powers(table, m, np.zeros((1, rows + 1), dtype=np.uint16))


def _horner(cts, entry_bits, capacity, m):
    """The gmpy2 loop the compiled compression replaced: chunk by chunk, acc^(2^e) * c from the top."""
    out = []
    for start in range(0, len(cts), capacity):
        chunk = cts[start:start + capacity]
        acc = chunk[-1]
        for c in reversed(chunk[:-1]):
            acc = gmpy2.powmod(acc, mpz(1) << entry_bits, m) * c % m
        out.append(acc)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bits=st.sampled_from([2, 64, 65, 683, 2048, 4096]), n=st.integers(1, 40), capacity=st.integers(1, 9),
       entry_bits=st.integers(1, 140), seed=st.integers(0, 2 ** 32 - 1), small=st.booleans())
def test_compress_equals_the_gmpy2_horner_loop(products, bits, n, capacity, entry_bits, seed, small):
    """Four chunks in lockstep, a shorter last chunk, one-value chunks, zeros and ones among the values."""
    m, cts = _random(bits, n, seed, small)
    width = 8 * ((int(m).bit_length() + 63) // 64)
    packed = _powmod.compress(b"".join(int(c).to_bytes(width, "little") for c in cts),
                                  int(m).to_bytes(width, "little"), entry_bits, capacity)
    got = [int.from_bytes(packed[i:i + width], "little") for i in range(0, len(packed), width)]
    assert got == _horner(cts, entry_bits, capacity, m)


def test_compress_refuses_bad_input():
    m, cts = _random(256, 3, 5)
    ok = b"".join(int(c).to_bytes(32, "little") for c in cts)
    with pytest.raises(ValueError, match="ciphertext 1 is not below the modulus"):
        _powmod.compress(ok[:32] + int(m).to_bytes(32, "little"), int(m).to_bytes(32, "little"), 10, 2)
    with pytest.raises(ValueError, match="entry_bits and capacity"):
        _powmod.compress(ok, int(m).to_bytes(32, "little"), 10, 0)
    with pytest.raises(ValueError, match="width"):
        _powmod.compress(ok[:40], int(m).to_bytes(32, "little"), 10, 2)
