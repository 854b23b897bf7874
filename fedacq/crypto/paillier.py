"""Paillier encryption, vector-first, on gmpy2.

Every fedacq protocol that hides the lender's labels (SecureBoost, hetero LR,
intersection-sum) encrypts long vectors of gradients or values under the
lender's key, adds them up homomorphically at the platform and decrypts a few
sums at the lender. So the API works on whole vectors (``EncryptedVector``), and
the hot paths are written for throughput:

Encryption (Damgård–Jurik–Nielsen style randomness)
    Textbook Paillier computes ``r^n mod n^2`` for a fresh random ``r`` per
    ciphertext: a full 2048-bit exponentiation (~90/s per core). Instead the
    public key carries ``h_s = h^n mod n^2`` for a fixed square ``h`` of Z_n*,
    and a ciphertext is ``c = (1 + m*n) * h_s^x mod n^2`` with a short random
    exponent ``x``. Since ``h_s^x = (h^x)^n`` this is an ordinary Paillier
    ciphertext with randomness ``r = h^x``: it decrypts with any Paillier
    implementation (``phe`` included). ``h_s`` is a fixed base, so ``h_s^x``
    comes from a precomputed table of ``h_s^(d * 2^(10 i))`` (one 10-bit digit of
    ``x`` per row, :data:`WINDOW_BITS`): one 4096-bit multiply-mod per digit of
    ``x``, four ciphertexts at a time in the compiled lanes (:func:`_fixed_base_powers`).

    ``h`` is derived from ``n`` alone (``h = -y^2 mod n`` with ``y`` hashed from
    ``n``), so nobody knows a discrete logarithm relation for it, the public key
    stays just ``n`` and its JSON stays ``phe``-compatible.

    Security parameter: ``x`` has :data:`RANDOM_EXPONENT_BITS` = 256 bits for
    keys up to 3072 bits (and twice the key's symmetric strength beyond). A
    2048-bit modulus gives ~112-bit security; the best generic attacks on a
    short exponent (Pollard's kangaroo / baby-step giant-step) cost 2^(|x|/2),
    so |x| >= 2*112 = 224 bits keeps the randomness as strong as the key (the
    argument of DJN 2010 and of SecretFlow HEU's ZPaillier). 256 bits gives a
    margin to 128-bit security at negligible cost (32 vs 28 multiplies).

Randomness
    Every secret draw comes from the OS CSPRNG: the primes' candidate bits
    from ``secrets.randbits`` (:func:`generate_keypair`), the encryption
    exponents ``x`` from ``os.urandom`` (:func:`_random_digits`, also used by
    :meth:`EncryptedVector.obfuscate`). gmpy2's own generators
    (``gmpy2.random_state``, ``mpz_urandomb``) are Mersenne Twister and are
    never used; ``gmpy2.next_prime`` only searches upward from the random
    candidate (its primality test's internal bases are not key material).
    ``tests/test_crypto_paillier.py`` pins this: with ``secrets.randbits`` and
    ``os.urandom`` replaced by fixed streams, keys and ciphertexts repeat.

Encryption by the key owner
    The lender encrypts its own gradients, and it holds p and q:
    :meth:`PrivateKey.encrypt_raw` computes the very same ``(1 + m*n) * h_s^x``
    mod p^2 and mod q^2 (tables of h_s reduced mod each) and recombines by CRT,
    ~1.7x faster per core than the public-key path (15.2k against 9.1k
    encryptions/s, ``benchmarks/crypto.py``, 2026-11-24), with identical output
    distribution. The platform, which only has ``n``, uses the public key.

Decryption
    CRT with precomputed ``hp``, ``hq`` (as in ``phe``): two half-size
    exponentiations mod p^2 and q^2 instead of one mod n^2, each batched in one
    GIL-free compiled call (:func:`fedacq.crypto.powmod.powmod_list`, from
    :meth:`PrivateKey.decrypt_raw_local`), so a batch uses every core in threads
    of the key owner's own process.

Batches and cores
    ``encrypt_raw`` splits large batches into chunks for a process pool
    (:mod:`fedacq.crypto.parallel`), whose workers receive only the public ``n``
    (the key owner's CRT encryption: ``p`` and ``q``, in its own child processes on
    the same machine, over a local pipe). ``decrypt_raw`` splits a batch over
    threads of the calling process: ``p`` and ``q`` stay in it. When the party's
    compute engine is distributed (``[compute] engine = "ray"``,
    :mod:`fedacq.compute`), a large batch left at ``workers=None`` runs as tasks on
    the party's *own* Ray cluster instead: decryption then hands
    ``p`` and ``q`` to that cluster's workers, which only the key owner's node
    ever connects to. Key material goes nowhere else. That dispatch, the
    ciphertext checks, :class:`EncryptedVector` and the JSON plumbing are
    shared with OU in :mod:`fedacq.crypto.additive`; this module keeps the
    Paillier math.

Encoding, packing, compression
    :class:`FixedPoint` maps signed floats/ints to plaintexts (negatives as
    ``n - |v|``) and refuses values outside a safe range instead of wrapping.
    :class:`Packing` puts several non-negative small ints into one plaintext
    with guard bits sized for a maximum number of summed terms; an
    ``EncryptedVector`` tracks how many terms its elements hold and refuses an
    addition that could overflow a slot. :func:`compress` shifts-and-adds many
    ciphertexts of small non-negative sums into few, so the key owner decrypts
    one ciphertext per ~2047/slot_bits values (:func:`decompress` undoes it).
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
from fractions import Fraction
from typing import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedacq.crypto.additive import (PARALLEL_THRESHOLD, EncryptedVector, PrivateKeyBase, PublicKeyBase, _b64,
                                    _unb64, distributed_engine, signed_residue, vector_from_bigints)
from fedacq.crypto import _powmod
from fedacq.crypto.powmod import compress_chunks, from_limbs, limb_width, powmod_list, to_limbs

__all__ = ["MIN_KEY_BITS", "PARALLEL_THRESHOLD", "RANDOM_EXPONENT_BITS", "WINDOW_BITS", "EncryptedVector",
           "FixedPoint", "Packing", "PrivateKey", "PublicKey", "compress", "compress_capacity",
           "compress_ciphertexts", "decompress", "distributed_engine", "generate_keypair", "key_from_spec",
           "vector_from_bigints"]

#: minimum modulus size accepted for real keys.
MIN_KEY_BITS = 2048

#: bits of the short DJN exponent x for keys up to 3072 bits (see module docstring).
RANDOM_EXPONENT_BITS = 256

#: bits per digit of x in the fixed-base table (see PublicKey._fixed_base_table).
WINDOW_BITS = 10


def _exponent_bits(n_bits: int) -> int:
    """Length of the DJN exponent x: twice the symmetric strength of the modulus."""
    if n_bits <= 3072:
        return RANDOM_EXPONENT_BITS
    if n_bits <= 7680:
        return 2 * 192
    return 2 * 256


def _table_rows(exponent_bits: int) -> int:
    return -(-exponent_bits // WINDOW_BITS)


class _TableRow(list):
    """One row of a fixed-base table: ``base^(d 2^(w i)) mod m`` for every digit ``d``.

    ``form`` holds the same values as the compiled lanes read them
    (Montgomery form, :func:`fedacq.crypto._powmod.to_table`), made once with the row.
    """

    __slots__ = ("form",)


def _window_table(base: mpz, modulus: mpz, rows: int) -> list[_TableRow]:
    """table[i][d] = base^(d * 2^(w*i)) mod modulus for each w-bit digit position i of x.

    With w = :data:`WINDOW_BITS` = 10 a 256-bit x costs 26 multiply-mods
    (against ~3000 for a full r^n); the table is 26 x 1024 values, ~14 MB for a
    2048-bit key (and as much again in the lanes' form), built once per key and
    process in well under a second.
    """
    width = limb_width(modulus)
    modulus_limbs = to_limbs([modulus], width)
    table = []
    for _ in range(rows):
        row = _TableRow([mpz(1), base])
        for _ in range((1 << WINDOW_BITS) - 2):
            row.append(row[-1] * base % modulus)
        row.form = _powmod.to_table(to_limbs(row, width), modulus_limbs)
        table.append(row)
        base = row[-1] * base % modulus  # base^(2^w)
    return table


def _random_digits(count: int, rows: int) -> np.ndarray:
    """The w-bit digits of ``count`` exponents x, uniform over [0, 2^(w*rows)): a (count, rows) uint16 array.

    iid uniform digits make a uniform x; they come straight from the OS CSPRNG,
    vectorised with numpy.
    """
    digits = np.frombuffer(os.urandom(2 * rows * count), dtype=np.uint16).reshape(count, rows)
    return digits & np.uint16((1 << WINDOW_BITS) - 1)


def _fixed_base_powers(table: list[_TableRow], modulus: mpz, digits: np.ndarray) -> list[mpz]:
    """base^x mod modulus for each x given by its digits (a row of ``digits`` per x, one digit per table row).

    One multiply-mod per digit, four exponents at a time in the compiled lanes
    (:func:`fedacq.crypto._powmod.fixed_base_powers`; at 4096 bits ~2.5x fewer
    CPU seconds than gmpy2's products).
    """
    width = limb_width(modulus)
    out = _powmod.fixed_base_powers([row.form for row in table], np.ascontiguousarray(digits, dtype=np.uint16),
                                    to_limbs([modulus], width))
    return from_limbs(out, width)


class PublicKey(PublicKeyBase):
    """A Paillier public key (``g = n + 1``) with a lazily built DJN encryption table.

    The attributes :class:`EncryptedVector`, :func:`compress` and the protocols
    use are common to every additive scheme (:mod:`fedacq.crypto.scheme`):
    ``scheme``, ``n``, ``n_bits`` (the key size the policy checks),
    ``ciphertext_modulus`` (products of ciphertexts are taken mod it),
    ``ciphertext_bytes``, ``plaintext_bits`` (sums below ``2^plaintext_bits``
    decrypt exactly: what packing and compression may fill) and ``max_int``.
    """

    scheme = "paillier"
    label = "Paillier"
    kty = "DAJ"

    def __init__(self, n: int) -> None:
        n = mpz(n)
        if n < 3 or n % 2 == 0:
            raise ValueError("Paillier modulus n must be an odd integer > 2")
        self.n = n
        self.nsquare = n * n
        self.ciphertext_modulus = self.nsquare
        self.n_bits = int(n.bit_length())
        self.plaintext_bits = self.n_bits - 1
        #: byte width of one ciphertext (an integer below n^2), for BigInts.
        self.ciphertext_bytes = (int(self.nsquare.bit_length()) + 7) // 8
        #: largest plaintext magnitude FixedPoint accepts (a third of n, as phe does).
        self.max_int = n // 3 - 1
        self.exponent_bits = _exponent_bits(self.n_bits)
        self._table: list[list[mpz]] | None = None

    @property
    def fingerprint(self) -> str:
        """A short hex id of the key, for error messages and headers."""
        return hashlib.sha256(int(self.n).to_bytes((self.n_bits + 7) // 8, "big")).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(int(self.n))

    def __repr__(self) -> str:
        return f"PublicKey({self.n_bits} bits, fingerprint={self.fingerprint})"

    # -- serialisation -------------------------------------------------------
    def to_jwk(self) -> dict:
        """The public key as the JWK dict ``pheutil`` writes."""
        return {"kty": "DAJ", "alg": "PAI-GN1", "key_ops": ["encrypt"], "n": _b64(self.n),
                "kid": f"fedacq Paillier public key {self.fingerprint}"}

    @classmethod
    def from_jwk(cls, jwk: dict) -> "PublicKey":
        if not isinstance(jwk, dict) or jwk.get("kty") != "DAJ" or "n" not in jwk:
            raise ValueError("Paillier public key JSON must be an object with kty='DAJ' and 'n'")
        return cls(_unb64(jwk["n"], "n"))

    def spec(self) -> tuple:
        """What a worker process needs to rebuild this key (public values only)."""
        return ("paillier", int(self.n))

    # -- DJN randomness ------------------------------------------------------
    def _base(self) -> mpz:
        """h_s = h^n mod n^2 with h = -y^2 mod n, y derived from n by hashing."""
        seed = int(self.n).to_bytes((self.n_bits + 7) // 8, "big")
        stream = b""
        counter = 0
        while len(stream) * 8 < self.n_bits + 128:
            stream += hashlib.sha256(b"fedacq/paillier/djn-base/" + counter.to_bytes(4, "big") + seed).digest()
            counter += 1
        y = mpz(int.from_bytes(stream, "big")) % self.n
        if gmpy2.gcd(y, self.n) != 1:  # would reveal a factor: impossible for a real key
            raise ValueError("degenerate Paillier modulus (hash hit a factor)")
        h = (-(y * y)) % self.n
        return gmpy2.powmod(h, self.n, self.nsquare)

    def _fixed_base_table(self) -> list[list[mpz]]:
        """The fixed-base table of h_s mod n^2 (see :func:`_window_table`)."""
        if self._table is None:
            self._table = _window_table(self._base(), self.nsquare, _table_rows(self.exponent_bits))
        return self._table

    def _random_factors(self, count: int) -> list[mpz]:
        """``count`` fresh values h_s^x mod n^2 (see :func:`_random_digits`)."""
        return _fixed_base_powers(self._fixed_base_table(), self.nsquare,
                                  _random_digits(count, _table_rows(self.exponent_bits)))

    # -- encryption ----------------------------------------------------------
    def _plaintexts(self, plaintexts: Sequence[int]) -> list[mpz]:
        """The plaintexts as mpz, each checked to lie in [0, n) (signed values go through FixedPoint)."""
        ms = [mpz(m) for m in plaintexts]
        for i, m in enumerate(ms):
            if not 0 <= m < self.n:
                raise ValueError(f"plaintext {i} is outside [0, n): encode it with FixedPoint first")
        return ms

    def encrypt_raw_local(self, plaintexts: Sequence[int]) -> list[mpz]:
        """Encrypt in this process; plaintexts must be ints in [0, n)."""
        n, nsq = self.n, self.nsquare
        ms = self._plaintexts(plaintexts)
        rs = self._random_factors(len(ms))
        # (1 + m*n) * r = r + n * (m*r mod n)  (mod n^2): a reduction mod n, not n^2.
        return [(r + n * (m * r % n)) % nsq for m, r in zip(ms, rs)]

    def random_factors(self, count: int) -> list[mpz]:
        """Fresh encryptions of zero without the (1 + 0*n) factor, for re-randomising."""
        return self._random_factors(count)

    def encrypt_with_factors(self, plaintexts: Sequence[int], factors: Sequence[mpz]) -> list[mpz]:
        """Ciphertexts of ints in [0, n), each with one fresh factor from :meth:`random_factors`.

        For a caller that computed the randomness ahead (it is ~95% of the
        work); each factor must be used exactly once.
        """
        n, nsq = self.n, self.nsquare
        if len(factors) != len(plaintexts):
            raise ValueError(f"{len(factors)} random factors for {len(plaintexts)} plaintexts")
        return [mpz(r) * (m * n + 1) % nsq for m, r in zip(self._plaintexts(plaintexts), factors)]

    def plain_factors(self, plaintexts: Sequence[mpz]) -> list[mpz]:
        """``1 + m*n``: multiplying a ciphertext by it adds ``m`` (no randomness)."""
        n = self.n
        return [m * n + 1 for m in plaintexts]

class PrivateKey(PrivateKeyBase):
    """The Paillier private key (p, q) with CRT constants precomputed."""

    public_key_type = PublicKey

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        p, q = mpz(p), mpz(q)
        if not isinstance(public_key, PublicKey):
            raise TypeError(f"expected a Paillier PublicKey, got {type(public_key).__name__}")
        if p * q != public_key.n:
            raise ValueError("p * q does not equal the public modulus n")
        if p == q:
            raise ValueError("p and q must differ")
        if q < p:
            p, q = q, p
        self.public_key = public_key
        self.p, self.q = p, q
        self.psquare, self.qsquare = p * p, q * q
        self.p_inverse = gmpy2.invert(p, q)
        n = public_key.n
        # h_p = L_p(g^(p-1) mod p^2)^-1 mod p with g = n + 1 (phe's hp, hq).
        self.hp = gmpy2.invert((gmpy2.powmod(n + 1, p - 1, self.psquare) - 1) // p, p)
        self.hq = gmpy2.invert((gmpy2.powmod(n + 1, q - 1, self.qsquare) - 1) // q, q)
        self.qsquare_inverse = gmpy2.invert(self.qsquare, self.psquare)
        self._pm1, self._qm1 = p - 1, q - 1
        self._tables: tuple[list[list[mpz]], list[list[mpz]]] | None = None

    def __repr__(self) -> str:
        return f"PrivateKey(for {self.public_key!r})"

    def spec(self) -> tuple:
        """What the key owner's own worker processes need to rebuild this key."""
        return ("paillier", int(self.public_key.n), int(self.p), int(self.q))

    # -- encryption by the key owner (CRT) -------------------------------------
    def _crt_tables(self) -> tuple[list[list[mpz]], list[list[mpz]]]:
        """Fixed-base tables of the public h_s reduced mod p^2 and mod q^2."""
        if self._tables is None:
            hs = self.public_key._base()
            rows = _table_rows(self.public_key.exponent_bits)
            self._tables = (_window_table(hs % self.psquare, self.psquare, rows),
                            _window_table(hs % self.qsquare, self.qsquare, rows))
        return self._tables

    def encrypt_raw_local(self, plaintexts: Sequence[int]) -> list[mpz]:
        """Encrypt in this process with the factors: the same ciphertexts as the public key's.

        The key owner (the lender, encrypting its gradients) can work mod p^2 and
        q^2 separately: multiply-mods at half the size cost about a third, so
        two of them per digit plus one CRT recombination beat one at n^2. The
        exponent x and h_s are the public key's, so the output has exactly the
        distribution of :meth:`PublicKey.encrypt_raw`.
        """
        pk = self.public_key
        p, q, psq, qsq = self.p, self.q, self.psquare, self.qsquare
        ms = pk._plaintexts(plaintexts)
        tp, tq = self._crt_tables()
        digits = _random_digits(len(ms), len(tp))
        rps = _fixed_base_powers(tp, psq, digits)
        rqs = _fixed_base_powers(tq, qsq, digits)
        qinv = self.qsquare_inverse
        out = []
        for m, rp, rq in zip(ms, rps, rqs):
            # 1 + m*n = 1 + p*(m*q mod p)  (mod p^2), and symmetrically mod q^2.
            cp = (p * (m * q % p) + 1) * rp % psq
            cq = (q * (m * p % q) + 1) * rq % qsq
            out.append(cq + qsq * ((cp - cq) * qinv % psq))
        return out

    def decrypt_raw_local(self, ciphertexts: Sequence[mpz]) -> list[int]:
        """CRT decryption in this process.

        ``m_p = L_p(c^(p-1) mod p^2) * h_p mod p`` (and the same mod q), recombined with
        ``p^-1 mod q``. The exponents are p-1 and q-1 (the smallest that remove ``r^n``);
        each half is one :func:`fedacq.crypto.powmod.powmod_list` call over the whole
        batch: four exponentiations at a time in C, no Python per exponentiation, the
        GIL released, so :mod:`fedacq.crypto.parallel` runs chunks on every core in
        threads of this process.
        """
        p, q, hp, hq, pinv = self.p, self.q, self.hp, self.hq, self.p_inverse
        cs = ciphertexts if isinstance(ciphertexts, list) else list(ciphertexts)
        xs = powmod_list(cs, self._pm1, self.psquare)
        ys = powmod_list(cs, self._qm1, self.qsquare)
        out = []
        for x, y in zip(xs, ys):
            mp = (x - 1) // p * hp % p
            mq = (y - 1) // q * hq % q
            out.append(int(mp + (mq - mp) * pinv % q * p))
        return out


def _random_prime(bits: int) -> mpz:
    """A random prime of exactly ``bits`` bits with the top two bits set (so p*q has 2*bits).

    The candidate's bits come from ``secrets`` (the OS CSPRNG), never from
    gmpy2's Mersenne Twister; ``next_prime`` is a deterministic search from it.
    """
    while True:
        candidate = mpz(secrets.randbits(bits)) | (mpz(3) << (bits - 2)) | 1
        prime = gmpy2.next_prime(candidate)
        if prime.bit_length() == bits:
            return prime


def generate_keypair(n_length: int = 2048, *, insecure_test_key: bool = False) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair with an ``n_length``-bit modulus.

    Below :data:`MIN_KEY_BITS` only with ``insecure_test_key=True``: tests use
    small keys for speed; nothing called a result may.
    """
    if n_length < MIN_KEY_BITS and not insecure_test_key:
        raise ValueError(f"Paillier keys below {MIN_KEY_BITS} bits are refused (got {n_length}); "
                         "pass insecure_test_key=True only in tests")
    if n_length % 2 or n_length < 128:
        raise ValueError(f"n_length must be an even number of bits >= 128, got {n_length}")
    while True:
        p = _random_prime(n_length // 2)
        q = _random_prime(n_length // 2)
        n = p * q
        if p != q and n.bit_length() == n_length and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            public_key = PublicKey(n)
            return public_key, PrivateKey(public_key, p, q)


class FixedPoint:
    """Signed fixed-point encoding with ``frac_bits`` fractional bits.

    ``x`` encodes as ``round(x * 2^frac_bits)``, negatives as ``n - |v|``. A value
    whose encoding exceeds the key's safe range (``|v| <= n // 3``, which leaves
    room to tell an overflowed sum from a negative one) raises instead of
    wrapping; so does decoding a plaintext in the gap between the ranges.
    """

    def __init__(self, frac_bits: int) -> None:
        if not 0 <= frac_bits <= 1000:
            raise ValueError(f"frac_bits must be in [0, 1000], got {frac_bits}")
        self.frac_bits = frac_bits
        self.scale = 1 << frac_bits

    def __repr__(self) -> str:
        return f"FixedPoint(frac_bits={self.frac_bits})"

    def to_ints(self, x: np.ndarray | Sequence[float]) -> list[int]:
        """Signed integers ``round(x * 2^frac_bits)`` (exact for ints and binary floats)."""
        arr = np.asarray(x)
        if arr.dtype == object:  # Python ints beyond int64, or mixed ints and floats
            return [self._one_to_int(i, v) for i, v in enumerate(arr.ravel().tolist())]
        if arr.dtype.kind == "b":
            arr = arr.astype(np.int64)
        if arr.dtype.kind in "iu":
            return [int(v) << self.frac_bits for v in arr.ravel().tolist()]
        if arr.dtype.kind != "f":
            raise ValueError(f"FixedPoint encodes int or float arrays, got dtype {arr.dtype}")
        flat = arr.astype(np.float64, copy=False).ravel()
        if not np.isfinite(flat).all():
            bad = int(np.flatnonzero(~np.isfinite(flat))[0])
            raise ValueError(f"cannot encode NaN or infinity (element {bad} is {flat[bad]})")
        with np.errstate(over="ignore"):
            scaled = np.rint(np.ldexp(flat, self.frac_bits))
        if flat.size and np.abs(scaled).max() < 2.0 ** 62:
            return scaled.astype(np.int64).tolist()
        # Beyond int64 (or float range): exact rational arithmetic, same round-half-even.
        return [round(Fraction(v) * self.scale) for v in flat.tolist()]

    def _one_to_int(self, i: int, v: object) -> int:
        if isinstance(v, float):
            if not math.isfinite(v):
                raise ValueError(f"cannot encode NaN or infinity (element {i} is {v})")
            return round(Fraction(v) * self.scale)
        try:
            return int(v) << self.frac_bits  # type: ignore[call-overload]
        except (TypeError, ValueError) as exc:
            raise ValueError(f"element {i} ({v!r}) is not a number") from exc

    def encode(self, x: np.ndarray | Sequence[float], public_key: PublicKey) -> list[int]:
        """Plaintexts in [0, n) for :meth:`PublicKey.encrypt_raw`."""
        n, limit = int(public_key.n), int(public_key.max_int)
        out = self.to_ints(x)
        for i, v in enumerate(out):
            if abs(v) > limit:
                raise ValueError(f"element {i} encodes to {abs(v).bit_length()} bits with frac_bits="
                                 f"{self.frac_bits}, beyond the {limit.bit_length()}-bit safe range "
                                 f"of key {public_key.fingerprint}")
        return [v if v >= 0 else n + v for v in out]

    def decode_ints(self, ints: Sequence[int], public_key: PublicKey) -> list[int]:
        """Signed integers (still scaled by 2^frac_bits), with overflow detection."""
        n, limit = int(public_key.n), int(public_key.max_int)
        out = []
        for i, v in enumerate(ints):
            signed = signed_residue(int(v), n, limit)
            if signed is None:
                raise ValueError(f"plaintext {i} is outside the signed safe range of key "
                                 f"{public_key.fingerprint}: the sum overflowed")
            out.append(signed)
        return out

    def decode(self, ints: Sequence[int], public_key: PublicKey) -> np.ndarray:
        """float64 values; exact whenever the result is representable."""
        scale = self.scale
        return np.array([v / scale for v in self.decode_ints(ints, public_key)], dtype=np.float64)


class Packing:
    """Several non-negative ints of ``slot_bits`` bits in one plaintext.

    Each slot is ``slot_bits + guard_bits`` wide with ``guard_bits =
    ceil(log2(max_terms))``, so a sum of up to ``max_terms`` packed plaintexts
    cannot carry from one slot into the next. Slot 0 is the least significant.
    """

    def __init__(self, slot_bits: int, slots: int, max_terms: int) -> None:
        if slot_bits < 1 or slots < 1 or max_terms < 1:
            raise ValueError(f"Packing needs slot_bits, slots, max_terms >= 1 (got {slot_bits}, {slots}, {max_terms})")
        self.slot_bits = slot_bits
        self.slots = slots
        self.max_terms = max_terms
        self.guard_bits = (max_terms - 1).bit_length()
        self.width = slot_bits + self.guard_bits
        self.total_bits = self.width * slots

    def __repr__(self) -> str:
        return (f"Packing(slot_bits={self.slot_bits}, slots={self.slots}, max_terms={self.max_terms}, "
                f"width={self.width})")

    @classmethod
    def for_key(cls, public_key: PublicKey, slot_bits: int, max_terms: int) -> "Packing":
        """As many slots as fit below n."""
        width = slot_bits + (max_terms - 1).bit_length()
        slots = public_key.plaintext_bits // width
        if slots < 1:
            raise ValueError(f"a {width}-bit slot does not fit a {public_key.plaintext_bits}-bit plaintext")
        return cls(slot_bits, slots, max_terms)

    def check_key(self, public_key: PublicKey) -> None:
        if self.total_bits > public_key.plaintext_bits:
            raise ValueError(f"{self!r} needs {self.total_bits} bits; key {public_key.fingerprint} "
                             f"holds {public_key.plaintext_bits}")

    def pack(self, matrix: np.ndarray | Sequence[Sequence[int]]) -> list[int]:
        """Rows of up to ``slots`` non-negative ints -> one plaintext per row."""
        arr = np.asarray(matrix)
        if arr.ndim != 2 or arr.shape[1] > self.slots:
            raise ValueError(f"pack expects a (rows, <= {self.slots}) matrix, got shape {arr.shape}")
        if arr.dtype.kind not in "iuO":
            raise ValueError(f"pack expects non-negative integers, got dtype {arr.dtype}")
        rows = arr.tolist()
        bound = 1 << self.slot_bits
        width = self.width
        out = []
        for r, row in enumerate(rows):
            acc = 0
            for j in range(len(row) - 1, -1, -1):
                v = int(row[j])
                if not 0 <= v < bound:
                    raise ValueError(f"row {r}, slot {j}: {v} is outside [0, 2^{self.slot_bits})")
                acc = (acc << width) | v
            out.append(acc)
        return out

    def unpack(self, ints: Sequence[int], slots: int | None = None) -> np.ndarray:
        """Plaintexts -> (rows, slots) matrix; int64 when a slot fits, else object."""
        slots = self.slots if slots is None else slots
        width, mask = self.width, (1 << self.width) - 1
        rows = []
        for i, v in enumerate(ints):
            v = int(v)
            if v >> (width * slots):
                raise ValueError(f"plaintext {i} has bits above {slots} slots of {width} bits: "
                                 "overflow or wrong packing")
            rows.append([(v >> (width * j)) & mask for j in range(slots)])
        dtype = np.int64 if width <= 63 else object
        return np.array(rows, dtype=dtype).reshape(len(rows), slots)

    def encrypt(self, matrix: np.ndarray | Sequence[Sequence[int]], public_key: PublicKey, *,
                workers: int | None = None) -> EncryptedVector:
        """Pack and encrypt; the vector refuses sums beyond ``max_terms``."""
        self.check_key(public_key)
        v = public_key.encrypt_raw(self.pack(matrix), workers=workers)
        v.max_terms = self.max_terms
        return v


def compress_capacity(public_key: PublicKey, slot_bits: int) -> int:
    """How many ``slot_bits``-bit values one compressed ciphertext holds."""
    capacity = public_key.plaintext_bits // slot_bits
    if capacity < 1:
        raise ValueError(f"slot_bits={slot_bits} does not fit a {public_key.plaintext_bits}-bit plaintext")
    return capacity


def compress(v: EncryptedVector, slot_bits: int) -> EncryptedVector:
    """Shift-and-add ciphertexts of values in [0, 2^slot_bits) into few ciphertexts.

    Element i lands in ciphertext ``i // capacity`` at bit ``(i % capacity) *
    slot_bits``. The caller guarantees the bound (e.g. a packed sum within its
    ``max_terms`` has all values below ``2^packing.total_bits``); negative
    (``n - |v|``) plaintexts cannot be compressed.
    """
    return EncryptedVector(v.public_key, compress_ciphertexts(v.ciphertexts, slot_bits, v.public_key),
                           terms=v.terms)


def compress_ciphertexts(cts: Sequence[mpz], slot_bits: int, public_key: PublicKey) -> list[mpz]:
    """:func:`compress` on bare ciphertexts (e.g. inside a worker process): :func:`fedacq.crypto.powmod.compress_chunks`."""
    return compress_chunks(cts, slot_bits, compress_capacity(public_key, slot_bits), public_key.ciphertext_modulus)


def decompress(ints: Sequence[int], slot_bits: int, count: int, public_key: PublicKey) -> list[int]:
    """Undo :func:`compress` after decryption: ``count`` values in order.

    Bits above the last slot raise (a top-slot overflow); a carry out of a
    lower slot cannot be seen, which is why :func:`compress` requires the bound.
    """
    capacity = compress_capacity(public_key, slot_bits)
    if len(ints) != math.ceil(count / capacity):
        raise ValueError(f"{len(ints)} compressed plaintexts cannot hold exactly {count} values "
                         f"of {slot_bits} bits")
    mask = (1 << slot_bits) - 1
    out: list[int] = []
    for i, v in enumerate(ints):
        v = int(v)
        k = min(capacity, count - i * capacity)
        if v >> (k * slot_bits):
            raise ValueError(f"compressed plaintext {i} has bits above its {k} slots: values exceeded "
                             f"2^{slot_bits}")
        out.extend((v >> (slot_bits * j)) & mask for j in range(k))
    return out


def key_from_spec(values: Sequence[int]) -> "PublicKey | PrivateKey":
    """Inverse of ``spec()`` (without its scheme tag): ``(n,)`` or ``(n, p, q)``."""
    if len(values) == 1:
        return PublicKey(values[0])
    n, p, q = values
    return PrivateKey(PublicKey(n), p, q)
