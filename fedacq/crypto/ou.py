"""Okamoto–Uchiyama (OU) encryption on gmpy2: the faster additive scheme beside Paillier.

Why: a SecureBoost tree is ~10^8 homomorphic additions at the platform. An
OU ciphertext lives mod ``n`` (2048 bits) where a Paillier one lives mod
``n^2`` (4096 bits), so an addition (a multiply-mod) costs ~2-3x less, a
ciphertext is half the bytes, and decryption is one exponentiation mod ``p^2``
(~1365 bits): ``benchmarks/crypto.py`` and ``benchmarks/secureboost.py --cases
kernel`` measure it against Paillier and sf-heu's OU. SecretFlow's HEU makes OU its default for the same
reason. The API mirrors :mod:`fedacq.crypto.paillier` so that
:class:`~fedacq.crypto.paillier.EncryptedVector`, ``Packing``, ``FixedPoint``,
``compress`` and the histogram kernel work on either key unchanged.

The scheme (Okamoto and Uchiyama, EUROCRYPT 1998)
    Keys: primes ``p``, ``q`` of ``k = n_bits / 3`` bits, ``n = p^2 q``; ``g``
    random in Z_n* with ``g^(p-1) mod p^2`` of order ``p``; ``h = g^n mod n``.
    Public key ``(n, g, h)``, private key ``(p, q)``.
    Encryption: ``c = g^m * h^r mod n``. Decryption:
    ``m = L(c^(p-1) mod p^2) / L(g^(p-1) mod p^2) mod p`` with ``L(x) = (x-1)/p``.
    Addition is the product of ciphertexts mod n, subtraction the product with
    an inverse; plaintexts live mod the secret ``p``.

Key sizes and security levels
    Breaking OU means factoring ``n = p^2 q`` (semantic security rests on the
    p-subgroup assumption, which factoring breaks and nothing better is known
    to). The number field sieve on ``n`` costs what it costs for an RSA modulus
    of the same size; the special methods for ``p^r q`` (Boneh–Durfee–
    Howgrave-Graham lattices) need ``r`` near ``log p`` and do not help at
    ``r = 2``; ECM on a 682-bit ``p`` is far beyond NFS. So: 2048-bit ``n``
    ~112-bit security (NIST's RSA-2048 level, :data:`MIN_KEY_BITS`), 3072 bits
    ~128-bit. Smaller keys only with ``insecure_test_key=True`` (tests).

Fast decryption: the randomness in a subgroup of prime order t (Coron–Naccache–Paillier)
    Textbook decryption raises ``c`` to ``p - 1`` (682 bits for a 2048-bit key). Keys made
    by :func:`generate_keypair` follow J.-S. Coron, D. Naccache and P. Paillier,
    "Accelerating Okamoto-Uchiyama's public-key cryptosystem", Electronics Letters 35(4),
    291-292, 1999 (the variant SecretFlow HEU's OU uses): ``p = t*u + 1`` with ``t`` a
    random prime of :func:`subgroup_bits` bits and ``g = g0^u mod n`` for a random ``g0``.
    Then mod ``p^2`` the element ``g`` has order ``p*t`` and ``h = g^n`` order ``t``, so
    ``c^t = g^(m*t) * (h^t)^r = (g^t)^m (mod p^2)`` and
    ``m = L(c^t mod p^2) / L(g^t mod p^2) mod p``: an exponent of 224 bits instead of 682,
    ~3x less work per decryption. Encryption, the public key's shape (``h = g^n``) and its
    checks are unchanged; ``t`` is private (it is a factor of ``p - 1``) and travels only in
    the private key's JSON. A key without ``t`` (made before this variant) still decrypts
    with ``p - 1``.

    Security assumption: factoring ``n = p^2 q`` when ``p - 1`` has a prime factor ``t`` of
    known size, plus OU's p-subgroup assumption inside the order-``t`` subgroup. ``g`` and
    ``h`` are public elements of order ``t`` mod ``p``; whoever finds a multiple of ``t``
    factors ``n`` (``gcd(h^t - 1 mod n, n)``), and the best known way to find one is a
    collision search costing ~``sqrt(t)``. So ``t`` has twice the modulus' symmetric
    strength, the subgroup sizes NIST SP 800-57 gives for discrete logarithms: 224 bits for
    2048-bit keys (~112-bit security), 256 for 3072 (~128-bit), 384 for 7680, 512 for 15360;
    ``u`` (> 450 bits at 2048) keeps ``p - 1`` far from smooth. The randomness ``r`` (256
    bits, below) is uniform mod ``t`` up to a 2^-32 statistical distance. A ciphertext whose
    ``c^t`` is not 1 mod ``p`` (not of the honest form) is refused like an out-of-bound
    result, with the same message.

Short randomness
    ``r`` has :func:`~fedacq.crypto.paillier._exponent_bits` bits (256 up to
    3072-bit keys): the generic attacks on a short exponent cost ``2^(|r|/2)``,
    the same argument (and the same fixed-base tables) as fedacq's DJN
    Paillier. ``g^m`` and ``h^r`` come from fixed-base window tables, one
    multiply-mod per 10 bits of ``m`` and ``r``.

A chosen-ciphertext caveat, and the margin that closes it
    Unlike Paillier, OU's plaintext modulus ``p`` is secret, and decrypting
    ``g^M`` for a forged ``M > p`` yields ``M mod p``: whoever learns that
    value factors ``n`` (``gcd(M - (M mod p), n)``). So the key owner never
    returns an arbitrary decryption: :attr:`PublicKey.plaintext_bits` is
    ``k - 1 - CCA_MARGIN_BITS`` and :meth:`PrivateKey.decrypt_raw` refuses any
    result whose residue is not within ``2^plaintext_bits`` of 0 (positive) or
    of ``p`` (negative). A forged ciphertext decrypts inside that window with
    probability ~``2^-128`` per try, so the refusal (which a peer does see)
    leaks nothing useful; honest sums are below the bound by construction
    (packing and compression fill at most ``plaintext_bits``).

Negative values
    As in Paillier, a negative ``v`` is handed in as ``n - |v|``:
    ``g^(n-|v|) = h * g^(-|v|)`` is an encryption of ``-|v|``, and decryption
    maps a residue near ``p`` back to ``n - |v|``, so
    :class:`~fedacq.crypto.paillier.FixedPoint` works unchanged (its safe range
    is :attr:`PublicKey.max_int`).

Randomness
    ``p``, ``q`` candidates from ``secrets.randbits``, ``g`` from
    ``secrets.randbelow``, ``r`` from ``os.urandom`` (the OS CSPRNG); gmpy2's
    Mersenne Twister is never used.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
from typing import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedacq.crypto.additive import PrivateKeyBase, PublicKeyBase, _b64, _unb64, signed_residue
from fedacq.crypto.paillier import (WINDOW_BITS, _exponent_bits, _fixed_base_powers, _random_digits, _random_prime,
                                    _table_rows, _window_table)
from fedacq.crypto.powmod import powmod_list

#: minimum modulus size accepted for real keys (~112-bit security, see the module docstring).
MIN_KEY_BITS = 2048

#: bits between the largest plaintext and the secret p (see "A chosen-ciphertext caveat").
CCA_MARGIN_BITS = 128

#: the smallest plaintext space a (test) key may have.
MIN_PLAINTEXT_BITS = 64


def subgroup_bits(n_bits: int) -> int:
    """Bits of the prime t (the randomness subgroup's order): twice the key's symmetric strength.

    NIST SP 800-57's discrete-log subgroup sizes for the matching RSA modulus sizes (module
    docstring); a test key too small for that gets ``t`` of half of ``p``'s bits.
    """
    bits = 224 if n_bits < 3072 else 256 if n_bits < 7680 else 384 if n_bits < 15360 else 512
    return min(bits, (n_bits // 3) // 2)


def _digits(values: Sequence[mpz], rows: int) -> np.ndarray:
    """The ``WINDOW_BITS``-bit digits of each value, least significant first: a (values, rows) uint16 array."""
    mask = (1 << WINDOW_BITS) - 1
    return np.array([[int(v >> (WINDOW_BITS * i)) & mask for i in range(rows)] for v in values],
                    dtype=np.uint16).reshape(len(values), rows)


class PublicKey(PublicKeyBase):
    """An OU public key ``(n, g, h)``, validated on construction (a peer may send it).

    Same attributes as :class:`fedacq.crypto.paillier.PublicKey`:
    ``ciphertext_modulus`` is ``n``, ``plaintext_bits`` the bound every sum
    must stay under (module docstring).
    """

    scheme = "ou"
    label = "OU"
    kty = "OU"

    def __init__(self, n: int, g: int, h: int) -> None:
        n, g, h = mpz(n), mpz(g), mpz(h)
        if n < 3 or n % 2 == 0:
            raise ValueError("OU modulus n must be an odd integer > 2")
        if not (1 < g < n and 1 < h < n):
            raise ValueError("OU key: g and h must lie in (1, n)")
        if gmpy2.gcd(g, n) != 1:
            raise ValueError("OU key: g is not a unit mod n")
        if gmpy2.powmod(g, n, n) != h:
            raise ValueError("OU key: h is not g^n mod n")
        self.n, self.g, self.h = n, g, h
        self.n_bits = int(n.bit_length())
        self.p_bits = self.n_bits // 3
        self.plaintext_bits = self.p_bits - 1 - CCA_MARGIN_BITS
        if self.plaintext_bits < MIN_PLAINTEXT_BITS:
            raise ValueError(f"OU key of {self.n_bits} bits leaves {self.plaintext_bits} plaintext bits "
                             f"(< {MIN_PLAINTEXT_BITS})")
        self.ciphertext_modulus = n
        self.ciphertext_bytes = (self.n_bits + 7) // 8
        self.max_int = (mpz(1) << self.plaintext_bits) - 1
        self.exponent_bits = _exponent_bits(self.n_bits)
        self._g_table: list[list[mpz]] = []
        self._h_table: list[list[mpz]] | None = None
        self._table_lock = threading.Lock()  # g's table grows in place: one grower at a time

    @property
    def fingerprint(self) -> str:
        width = self.ciphertext_bytes
        raw = b"".join(int(v).to_bytes(width, "big") for v in (self.n, self.g, self.h))
        return hashlib.sha256(raw).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and (self.n, self.g, self.h) == (other.n, other.g, other.h)

    def __hash__(self) -> int:
        return hash((int(self.n), int(self.g)))

    def __repr__(self) -> str:
        return f"ou.PublicKey({self.n_bits} bits, fingerprint={self.fingerprint})"

    # -- serialisation -------------------------------------------------------
    def to_jwk(self) -> dict:
        return {"kty": "OU", "alg": "OU-98", "key_ops": ["encrypt"], "n": _b64(self.n), "g": _b64(self.g),
                "h": _b64(self.h), "kid": f"fedacq OU public key {self.fingerprint}"}

    @classmethod
    def from_jwk(cls, jwk: dict) -> "PublicKey":
        if not isinstance(jwk, dict) or jwk.get("kty") != "OU" or not {"n", "g", "h"} <= set(jwk):
            raise ValueError("OU public key JSON must be an object with kty='OU', 'n', 'g' and 'h'")
        return cls(_unb64(jwk["n"], "n"), _unb64(jwk["g"], "g"), _unb64(jwk["h"], "h"))

    def spec(self) -> tuple:
        """What a worker process needs to rebuild this key (public values only)."""
        return ("ou", int(self.n), int(self.g), int(self.h))

    # -- fixed-base tables ---------------------------------------------------
    def _g_rows(self, rows: int) -> list[list[mpz]]:
        """The first ``rows`` rows of g's table, grown on demand (small plaintexts need few)."""
        table = self._g_table
        if len(table) < rows:
            with self._table_lock:
                if len(table) < rows:
                    base = table[-1][-1] * table[-1][1] % self.n if table else self.g
                    table.extend(_window_table(base, self.n, rows - len(table)))
        return table[:rows]

    def _h_rows(self) -> list[list[mpz]]:
        if self._h_table is None:
            self._h_table = _window_table(self.h, self.n, _table_rows(self.exponent_bits))
        return self._h_table

    def _split_signs(self, plaintexts: Sequence[int]) -> tuple[list[mpz], list[bool]]:
        """Magnitudes and signs of ints in [0, n) (``n - |v|`` is negative); refuses the gap."""
        mags, negs = [], []
        for i, m in enumerate(plaintexts):
            v = signed_residue(mpz(m), self.n, self.max_int)
            if v is None:
                raise ValueError(f"plaintext {i} is outside the OU range |v| < 2^{self.plaintext_bits} "
                                 f"(negatives as n - |v|) of key {self.fingerprint}")
            mags.append(abs(v))
            negs.append(v < 0)
        return mags, negs

    def plain_factors(self, plaintexts: Sequence[int]) -> list[mpz]:
        """``g^m mod n``: multiplying a ciphertext by it adds ``m`` (no randomness)."""
        mags, negs = self._split_signs(plaintexts)
        rows = _table_rows(max((int(m).bit_length() for m in mags), default=1) or 1)
        out = _fixed_base_powers(self._g_rows(rows), self.n, _digits(mags, rows))
        return [gmpy2.invert(f, self.n) if neg else f for f, neg in zip(out, negs)]

    def random_factors(self, count: int) -> list[mpz]:
        """``count`` fresh ``h^r mod n`` (encryptions of zero), r from the OS CSPRNG."""
        return _fixed_base_powers(self._h_rows(), self.n, _random_digits(count, _table_rows(self.exponent_bits)))

    def encrypt_with_factors(self, plaintexts: Sequence[int], factors: Sequence[mpz]) -> list[mpz]:
        """Ciphertexts with one fresh factor from :meth:`random_factors` each (used once)."""
        if len(factors) != len(plaintexts):
            raise ValueError(f"{len(factors)} random factors for {len(plaintexts)} plaintexts")
        n = self.n
        return [f * mpz(r) % n for f, r in zip(self.plain_factors(plaintexts), factors)]

    def encrypt_raw_local(self, plaintexts: Sequence[int]) -> list[mpz]:
        """Encrypt in this process; plaintexts are ints in [0, n) as for Paillier."""
        return self.encrypt_with_factors(plaintexts, self.random_factors(len(plaintexts)))


class PrivateKey(PrivateKeyBase):
    """The OU private key ``(p, q)``, and ``t`` for keys of the Coron–Naccache–Paillier form.

    Decryption refuses results outside the plaintext bound (module docstring).
    """

    public_key_type = PublicKey
    #: private values beside p and q in the key's JSON (absent for keys without a subgroup).
    extra_fields = ("t",)

    def __init__(self, public_key: PublicKey, p: int, q: int, t: int | None = None) -> None:
        if not isinstance(public_key, PublicKey):
            raise TypeError(f"expected an OU PublicKey, got {type(public_key).__name__}")
        p, q = mpz(p), mpz(q)
        if p * p * q != public_key.n or p == q:
            raise ValueError("OU private key: p^2 * q does not equal the public modulus n")
        if p.bit_length() < public_key.p_bits:  # the plaintext bound assumes p >= 2^(p_bits - 1)
            raise ValueError(f"OU private key: p has {p.bit_length()} bits, fewer than the {public_key.p_bits} "
                             "its public key's size implies")
        self.public_key = public_key
        self.p, self.q = p, q
        self.psquare = p * p
        self.t = None if t is None else mpz(t)
        if self.t is not None:
            # t must kill h mod p^2 (then c^t removes the randomness of every honest ciphertext)
            hp = public_key.h % self.psquare  # h = 1 mod p^2 would put p^2 in gcd(h - 1, n)
            if not (1 < self.t < p and (p - 1) % self.t == 0 and gmpy2.is_prime(self.t)
                    and hp != 1 and gmpy2.powmod(hp, self.t, self.psquare) == 1):
                raise ValueError("OU private key: t is not a prime factor of p - 1 that is the order of h mod p^2")
        #: the decryption exponent: t for keys with the subgroup, else p - 1.
        self.exponent = self.t if self.t is not None else p - 1
        ge = gmpy2.powmod(public_key.g, self.exponent, self.psquare)
        if ge % p != 1 or ((ge - 1) // p) % p == 0:
            raise ValueError(f"OU private key: g^{'t' if self.t is not None else '(p-1)'} mod p^2 does not have "
                             "order p")
        self.gp_inverse = gmpy2.invert((ge - 1) // p, p)
        self._crt: tuple | None = None

    def __repr__(self) -> str:
        return f"ou.PrivateKey(for {self.public_key!r})"

    def spec(self) -> tuple:
        """What the key owner's own worker processes need to rebuild this key."""
        pk = self.public_key
        tail = () if self.t is None else (int(self.t),)
        return ("ou", int(pk.n), int(pk.g), int(pk.h), int(self.p), int(self.q), *tail)

    # -- encryption by the key owner (CRT) -------------------------------------
    def _crt_tables(self) -> tuple:
        """g's and h's tables mod p^2 and mod q (half- and third-size multiply-mods)."""
        if self._crt is None:
            pk = self.public_key
            g_rows, h_rows = _table_rows(pk.plaintext_bits), _table_rows(pk.exponent_bits)
            psq, q = self.psquare, self.q
            self._crt = (_window_table(pk.g % psq, psq, g_rows), _window_table(pk.h % psq, psq, h_rows),
                         _window_table(pk.g % q, q, g_rows), _window_table(pk.h % q, q, h_rows),
                         gmpy2.invert(psq, q))
        return self._crt

    def encrypt_raw_local(self, plaintexts: Sequence[int]) -> list[mpz]:
        """The public key's ciphertexts (same distribution), computed mod p^2 and q and recombined."""
        pk = self.public_key
        mags, negs = pk._split_signs(plaintexts)
        gp_t, hp_t, gq_t, hq_t, psq_inv_q = self._crt_tables()
        rows = _table_rows(max((int(m).bit_length() for m in mags), default=1) or 1)
        digits = np.hstack([_digits(mags, rows), _random_digits(len(mags), len(hp_t))])
        psq, q = self.psquare, self.q
        cp = _fixed_base_powers(gp_t[:rows] + hp_t, psq, digits)
        cq = _fixed_base_powers(gq_t[:rows] + hq_t, q, digits)
        out = []
        for a, b in zip(cp, cq):
            out.append(a + psq * ((b - a) * psq_inv_q % q))
        if any(negs):  # rare (the lender packs non-negative gradients): the public path for those
            fix = [i for i, neg in enumerate(negs) if neg]
            redo = pk.encrypt_raw_local([plaintexts[i] for i in fix])
            for i, c in zip(fix, redo):
                out[i] = c
        return out

    # -- decryption -------------------------------------------------------------
    def decrypt_raw_local(self, ciphertexts: Sequence[mpz]) -> list[int]:
        """Decrypt in this process; residues outside the bound raise (module docstring).

        All exponentiations in one :func:`fedacq.crypto.powmod.powmod_list` call: four at
        a time in C with the GIL released, so :mod:`fedacq.crypto.parallel` runs chunks on
        every core in threads.
        """
        p, psq, ginv = self.p, self.psquare, self.gp_inverse
        n, limit = self.public_key.n, self.public_key.max_int
        out = []
        for i, x in enumerate(powmod_list(ciphertexts, self.exponent, psq)):
            v = signed_residue((x - 1) // p * ginv % p, p, limit) if x % p == 1 else None
            if v is None:
                raise OutOfBound(i, self.public_key.plaintext_bits)
            out.append(int(v % n))  # negatives as n - |v|, as Paillier returns them
        return out


class OutOfBound(ValueError):
    """A ciphertext whose residue is outside the plaintext bound (module docstring): refused.

    ``index`` is its position in the batch, so a caller that decrypted a slice can name it
    in the whole batch (:func:`fedacq.crypto.parallel.decrypt`).
    """

    def __init__(self, index: int, plaintext_bits: int) -> None:
        super().__init__(f"ciphertext {index} decrypts outside the OU plaintext bound (2^{plaintext_bits}): "
                         "an overflowed sum or a forged ciphertext; refused")
        self.index = index
        self.plaintext_bits = plaintext_bits

    def shifted(self, offset: int) -> "OutOfBound":
        return OutOfBound(self.index + offset, self.plaintext_bits)

    def __reduce__(self) -> tuple:  # rebuilt from its fields where it crosses processes (Ray tasks)
        return OutOfBound, (self.index, self.plaintext_bits)


def generate_keypair(n_length: int = 2048, *, insecure_test_key: bool = False) -> tuple[PublicKey, PrivateKey]:
    """A fresh OU key pair with an ``n_length``-bit ``n = p^2 q``.

    Below :data:`MIN_KEY_BITS` only with ``insecure_test_key=True`` (tests).
    """
    if n_length < MIN_KEY_BITS and not insecure_test_key:
        raise ValueError(f"OU keys below {MIN_KEY_BITS} bits are refused (got {n_length}); "
                         "pass insecure_test_key=True only in tests")
    p_bits = n_length // 3
    if p_bits - 1 - CCA_MARGIN_BITS < MIN_PLAINTEXT_BITS:
        raise ValueError(f"n_length={n_length} is too small for OU (at least "
                         f"{3 * (MIN_PLAINTEXT_BITS + 1 + CCA_MARGIN_BITS)} bits)")
    q_bits = n_length - 2 * p_bits
    t_bits = subgroup_bits(n_length)
    while True:
        t = _random_prime(t_bits)
        p = _prime_with_factor(t, p_bits)
        q = _random_prime(q_bits)
        n = p * p * q
        if p == q or n.bit_length() != n_length or (q - 1) % p == 0:
            continue
        psq, u = p * p, (p - 1) // t
        while True:  # g = g0^u: order p*t mod p^2 (order p for g^t), and h = g^n of order t
            g0 = mpz(2 + secrets.randbelow(int(n) - 3))
            g = gmpy2.powmod(g0, u, n)
            if gmpy2.gcd(g0, n) == 1 and g % p != 1 and gmpy2.powmod(g, t, psq) != 1:
                break
        public_key = PublicKey(n, g, gmpy2.powmod(g, n, n))
        return public_key, PrivateKey(public_key, p, q, t)


def _prime_with_factor(t: mpz, bits: int) -> mpz:
    """A random prime ``p = t*u + 1`` of exactly ``bits`` bits, top two bits set (as
    :func:`~fedacq.crypto.paillier._random_prime`), ``u`` even and drawn from the OS CSPRNG."""
    low = ((mpz(3) << (bits - 2)) + t - 1) // t  # smallest u with t*u + 1 >= 3 * 2^(bits-2)
    high = ((mpz(1) << bits) - 2) // t           # largest u with t*u + 1 < 2^bits
    while True:
        u = low + secrets.randbelow(int(high - low + 1))
        u += u % 2
        p = t * u + 1
        if p.bit_length() == bits and gmpy2.is_prime(p, 40):
            return p


def key_from_spec(values: Sequence[int]) -> PublicKey | PrivateKey:
    """Inverse of ``spec()`` (without its scheme tag): ``(n, g, h)``, ``(n, g, h, p, q)`` or
    ``(n, g, h, p, q, t)``."""
    if len(values) == 3:
        return PublicKey(*values)
    n, g, h, p, q, *t = values
    return PrivateKey(PublicKey(n, g, h), p, q, *t)
