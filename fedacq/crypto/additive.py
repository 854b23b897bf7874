"""What every additive homomorphic scheme in fedacq shares: ciphertext vectors and the key plumbing.

Why one module: Paillier (:mod:`fedacq.crypto.paillier`) and Okamoto–Uchiyama
(:mod:`fedacq.crypto.ou`) differ only in their math (key generation, the
encryption and decryption formulas, what a key's JSON holds), which each keeps
with its docstrings. Everything around the math is the same idea for both and
lives here once:

* :class:`EncryptedVector`, the homomorphic operations on ciphertexts (a
  product mod ``ciphertext_modulus`` adds plaintexts, whatever the scheme);
* the batch dispatch: a large batch left at ``workers=None`` goes to the
  party's distributed engine (:func:`distributed_engine`), otherwise to this
  machine's process pool (:mod:`fedacq.crypto.parallel`) or this process;
* the checks on ciphertexts a key is handed (type, key, range:
  :func:`check_range`, :func:`vector_from_bigints`);
* the JSON (JWK) plumbing: base64url integers, parsing with clear errors,
  the private key's ``p``/``q``/``pub`` layout.

:class:`PublicKeyBase` and :class:`PrivateKeyBase` carry the last three as
methods; a scheme's key classes inherit them and supply ``encrypt_raw_local``
/ ``decrypt_raw_local`` (the math), ``to_jwk`` / ``from_jwk`` and ``spec``.
"""

from __future__ import annotations

import base64
import json
from typing import Any, Iterable, Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedacq.link.message import BigInts

#: batches at least this long use the process pool (or the party's cluster) when ``workers`` is None.
PARALLEL_THRESHOLD = 4096

#: decryption costs far more per value than fixed-base encryption, so it goes to the party's cluster at
#: shorter batches.
DECRYPT_THRESHOLD = PARALLEL_THRESHOLD // 8

#: on this machine decryption runs in threads (no start-up, nothing shipped): every core from 2 ciphertexts.
LOCAL_DECRYPT_THRESHOLD = 2


def _b64(value: int) -> str:
    """An integer as unpadded base64url big-endian bytes (the JWK encoding ``phe`` uses)."""
    raw = int(value).to_bytes((int(value).bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _unb64(text: str, what: str) -> mpz:
    """A JWK integer field ``what`` back, refusing non-base64url text and values <= 1."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"key JSON: field {what!r} is not base64url") from exc
    value = mpz(int.from_bytes(raw, "big"))
    if value <= 1:
        raise ValueError(f"key JSON: field {what!r} must be an integer > 1")
    return value


def _parse_json(text: str, what: str) -> Any:
    """``text`` parsed, or a ValueError naming ``what`` (e.g. "OU private key")."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} is not valid JSON: {exc}") from exc


def signed_residue(v: int, modulus: int, limit: int) -> int | None:
    """``v`` in [0, modulus) read as a signed value of magnitude at most ``limit``, or None.

    Every signed encoding in fedacq puts ``-|x|`` at ``modulus - |x|``: a value
    within ``limit`` of 0 is itself, one within ``limit`` of ``modulus`` is
    ``v - modulus``, and the gap between is an overflowed sum (or, for OU, a
    forged ciphertext), which the caller refuses with its own message.
    """
    if 0 <= v <= limit:
        return v
    if modulus - limit <= v < modulus:
        return v - modulus
    return None


def distributed_engine(workers: int | None, count: int, threshold: int) -> Any:
    """The party's distributed compute engine (:mod:`fedacq.compute`) if this batch goes to it, else None.

    A batch goes to the party's cluster only when its engine is distributed (Ray),
    the batch is at least ``threshold`` long (smaller ones cost more to ship than to
    compute) and the caller left ``workers`` unset: an explicit ``workers`` keeps
    meaning this machine's processes (``workers=1``: this process).
    """
    if workers is not None or count < threshold:
        return None
    from fedacq import compute

    engine = compute.active()
    return engine if engine.distributed else None


def _run_batch(op: str, key: Any, items: list, workers: int | None, threshold: int,
               local_threshold: int | None = None) -> list:
    """``op`` ("encrypt", "encrypt_private" or "decrypt") of ``items`` under ``key``, wherever it runs.

    The party's distributed engine (batches of ``threshold`` or more), this
    machine's cores (batches of ``local_threshold``, default ``threshold``, or
    more) or this process (``key.encrypt_raw_local`` / ``key.decrypt_raw_local``):
    the same method name on the engine and in :mod:`fedacq.crypto.parallel`, the
    same result.
    """
    from fedacq.crypto import parallel

    engine = distributed_engine(workers, len(items), threshold)
    if engine is not None:
        return getattr(engine, op)(key, items)
    local = threshold if local_threshold is None else local_threshold
    nworkers = parallel.resolve_workers(workers, len(items), local)
    if nworkers <= 1:
        return key.decrypt_raw_local(items) if op == "decrypt" else key.encrypt_raw_local(items)
    return getattr(parallel, op)(key, items, nworkers)


def check_range(public_key: Any, cs: Sequence[mpz]) -> None:
    """Every ciphertext in (0, modulus).

    Not a gcd per ciphertext (~50 us each at 4096 bits, seconds per tree): only
    the key owner can make a non-unit, and an OU decryption of one falls
    outside the plaintext bound and is refused.
    """
    mod = public_key.ciphertext_modulus
    for i, c in enumerate(cs):
        if not 0 < c < mod:
            raise ValueError(f"ciphertext {i} is out of range for key {public_key.fingerprint}")


def check_vector(v: Any, public_key: Any) -> None:
    """``v`` is an :class:`EncryptedVector` under ``public_key``: ciphertexts under
    different keys are never combined or decrypted."""
    if not isinstance(v, EncryptedVector):
        raise TypeError(f"expected EncryptedVector, got {type(v).__name__}")
    if v.public_key != public_key:
        raise ValueError(f"ciphertexts are under key {v.public_key.fingerprint}, not {public_key.fingerprint} "
                         "(different keys)")


def vector_from_bigints(public_key: Any, b: BigInts) -> "EncryptedVector":
    """A peer's ciphertexts under ``public_key`` (any scheme), checked: width and range."""
    if not isinstance(b, BigInts):
        raise ValueError(f"expected BigInts of ciphertexts, got {type(b).__name__}")
    if b.width != public_key.ciphertext_bytes:
        raise ValueError(f"ciphertext width {b.width} bytes does not match key {public_key.fingerprint} "
                         f"({public_key.ciphertext_bytes} bytes)")
    raw, w = b.buffer(), b.width  # straight from the wire bytes: no Python int list kept beside the mpz
    cs = [mpz(int.from_bytes(raw[i:i + w], "big")) for i in range(0, raw.nbytes, w)]
    check_range(public_key, cs)
    return EncryptedVector(public_key, cs)


class EncryptedVector:
    """A vector of ciphertexts under one public key of any additive scheme (Paillier, OU).

    ``terms`` bounds how many unit-weight fresh plaintexts each element is a sum
    of; ``max_terms`` (set by :meth:`~fedacq.crypto.paillier.Packing.encrypt`) is the most that the
    packing's guard bits allow. Any operation that would push ``terms`` past
    ``max_terms`` raises instead of silently corrupting packed slots.
    """

    __slots__ = ("public_key", "ciphertexts", "terms", "max_terms")

    def __init__(self, public_key: Any, ciphertexts: list[mpz], *, terms: int = 1,
                 max_terms: int | None = None) -> None:
        self.public_key = public_key
        self.ciphertexts = ciphertexts
        self.terms = terms
        self.max_terms = max_terms
        if max_terms is not None and terms > max_terms:
            raise ValueError(f"packed sum of {terms} terms exceeds the packing's max_terms={max_terms}: "
                             "slots could overflow")

    def __len__(self) -> int:
        return len(self.ciphertexts)

    def __repr__(self) -> str:
        return f"EncryptedVector(len={len(self)}, key={self.public_key.fingerprint}, terms={self.terms})"

    def _derived(self, cs: list[mpz], terms: int, other: "EncryptedVector | None" = None) -> "EncryptedVector":
        limits = [v.max_terms for v in (self, other) if v is not None and v.max_terms is not None]
        return EncryptedVector(self.public_key, cs, terms=terms, max_terms=min(limits) if limits else None)

    def _same_key(self, other: "EncryptedVector") -> None:
        check_vector(other, self.public_key)
        if len(other) != len(self):
            raise ValueError(f"vector lengths differ: {len(self)} vs {len(other)}")

    def __add__(self, other: "EncryptedVector") -> "EncryptedVector":
        """Element-wise homomorphic addition (a product of ciphertexts mod n^2)."""
        self._same_key(other)
        nsq = self.public_key.ciphertext_modulus
        return self._derived([a * b % nsq for a, b in zip(self.ciphertexts, other.ciphertexts)],
                             self.terms + other.terms, other)

    def __neg__(self) -> "EncryptedVector":
        nsq = self.public_key.ciphertext_modulus
        if self.max_terms is not None:
            raise ValueError("cannot negate a packed vector: slots hold non-negative values")
        return self._derived([gmpy2.invert(c, nsq) for c in self.ciphertexts], self.terms)

    def __sub__(self, other: "EncryptedVector") -> "EncryptedVector":
        return self + (-other)

    def add_raw(self, plaintexts: Sequence[int]) -> "EncryptedVector":
        """Add plaintext ints in [0, n) without encrypting them (c * (1 + m*n)).

        The result is as random as ``self``: use it to mask a fresh ciphertext.
        """
        n, nsq = self.public_key.n, self.public_key.ciphertext_modulus
        ms = [mpz(m) for m in plaintexts]
        if len(ms) != len(self):
            raise ValueError(f"vector lengths differ: {len(self)} vs {len(ms)}")
        if any(not 0 <= m < n for m in ms):
            raise ValueError("plaintexts to add must be in [0, n)")
        fs = self.public_key.plain_factors(ms)
        return self._derived([c * f % nsq for c, f in zip(self.ciphertexts, fs)], self.terms + 1)

    def sum(self) -> "EncryptedVector":
        """The homomorphic sum of all elements, as a vector of length 1."""
        nsq = self.public_key.ciphertext_modulus
        acc = mpz(1)
        for c in self.ciphertexts:
            acc = acc * c % nsq
        return self._derived([acc], self.terms * max(len(self), 1))

    def mul_scalar(self, ks: Sequence[int] | int) -> "EncryptedVector":
        """Element-wise multiply by plaintext ints (one per element, or one for all).

        Pass small signed ints (e.g. fixed-point encodings as Python ints, not
        ``n - |k|``): the cost grows with the bit length of ``k``. The result is
        deterministic in ``self`` and ``k``; call :meth:`obfuscate` before sending
        it to the key owner if ``k`` is secret.
        """
        nsq = self.public_key.ciphertext_modulus
        if isinstance(ks, (int, np.integer, mpz)):
            ks = [int(ks)] * len(self)
        ks = [int(k) for k in ks]
        if len(ks) != len(self):
            raise ValueError(f"vector lengths differ: {len(self)} vs {len(ks)}")
        if self.max_terms is not None and any(k < 0 for k in ks):
            raise ValueError("negative scalar on a packed vector: slots hold non-negative values")
        weight = max((abs(k) for k in ks), default=1)
        return self._derived([gmpy2.powmod(c, k, nsq) for c, k in zip(self.ciphertexts, ks)],
                             self.terms * max(weight, 1))

    def obfuscate(self) -> "EncryptedVector":
        """Re-randomise every ciphertext (multiply by a fresh encryption of zero)."""
        nsq = self.public_key.ciphertext_modulus
        rs = self.public_key.random_factors(len(self))
        return self._derived([c * r % nsq for c, r in zip(self.ciphertexts, rs)], self.terms)

    def take(self, indices: Iterable[int]) -> "EncryptedVector":
        """The elements at ``indices`` (numpy index arrays welcome)."""
        cs = self.ciphertexts
        return self._derived([cs[int(i)] for i in indices], self.terms)

    def concat(self, other: "EncryptedVector") -> "EncryptedVector":
        check_vector(other, self.public_key)
        return self._derived(self.ciphertexts + other.ciphertexts, max(self.terms, other.terms), other)

    def to_bigints(self) -> BigInts:
        """Fixed-width bytes for a :class:`~fedacq.link.message.Message` part."""
        return BigInts(self.ciphertexts, self.public_key.ciphertext_bytes)


class PublicKeyBase:
    """JSON, batch encryption and peer ciphertexts for a scheme's public key.

    The scheme's class sets ``scheme``, ``label`` (its name in messages) and
    ``kty`` (its JWK key type) and supplies ``to_jwk``, ``from_jwk`` and
    ``encrypt_raw_local`` (its math).
    """

    scheme: str
    label: str
    kty: str

    def to_json(self) -> str:
        return json.dumps(self.to_jwk())

    @classmethod
    def from_json(cls, text: str) -> Any:
        return cls.from_jwk(_parse_json(text, f"{cls.label} public key"))

    def encrypt_raw(self, plaintexts: Sequence[int], *, workers: int | None = None) -> EncryptedVector:
        """Encrypt ints in [0, n) (negatives as ``n - |v|``). ``workers=None`` uses every core
        (or the party's cluster) for large batches."""
        return EncryptedVector(self, _run_batch("encrypt", self, list(plaintexts), workers, PARALLEL_THRESHOLD))

    def vector_from_bigints(self, b: BigInts) -> EncryptedVector:
        """Ciphertexts received from a peer, checked: right width, in (0, ciphertext_modulus)."""
        return vector_from_bigints(self, b)


class PrivateKeyBase:
    """JSON, batch encryption by the key owner and checked batch decryption for a private key ``(p, q)``.

    The scheme's class sets ``public_key_type`` and supplies ``encrypt_raw_local``
    and ``decrypt_raw_local`` (its math); its constructor takes
    ``(public_key, p, q, **extra)`` and validates them, ``extra`` being the optional
    private integers named in ``extra_fields`` (OU's ``t``), which the JSON carries
    when the key has them.
    """

    public_key_type: type
    public_key: Any
    p: mpz
    q: mpz
    extra_fields: tuple[str, ...] = ()

    def to_json(self) -> str:
        """The JWK ``pheutil``'s layout for a private key: ``p``, ``q`` and the public part."""
        pk = self.public_key
        extra = {f: _b64(getattr(self, f)) for f in self.extra_fields if getattr(self, f) is not None}
        return json.dumps({"kty": pk.kty, "key_ops": ["decrypt"], "p": _b64(self.p),
                           "q": _b64(self.q), **extra, "pub": pk.to_jwk(),
                           "kid": f"fedacq {pk.label} private key {pk.fingerprint}"})

    @classmethod
    def from_json(cls, text: str) -> Any:
        label, kty = cls.public_key_type.label, cls.public_key_type.kty
        jwk = _parse_json(text, f"{label} private key")
        if not isinstance(jwk, dict) or jwk.get("kty") != kty or not {"p", "q", "pub"} <= set(jwk):
            raise ValueError(f"{label} private key JSON must have kty={kty!r}, 'p', 'q' and 'pub'")
        extra = {f: _unb64(jwk[f], f) for f in cls.extra_fields if f in jwk}
        return cls(cls.public_key_type.from_jwk(jwk["pub"]), _unb64(jwk["p"], "p"), _unb64(jwk["q"], "q"),
                   **extra)

    def encrypt_raw(self, plaintexts: Sequence[int], *, workers: int | None = None) -> EncryptedVector:
        """Encrypt ints in [0, n) as the key owner: the public key's output, faster."""
        cts = _run_batch("encrypt_private", self, list(plaintexts), workers, PARALLEL_THRESHOLD)
        return EncryptedVector(self.public_key, cts)

    def decrypt_raw(self, v: EncryptedVector, *, workers: int | None = None) -> list[int]:
        """Decrypt to ints in [0, n) (negatives as ``n - |v|``); refuses ciphertexts under
        another key or out of range."""
        check_vector(v, self.public_key)
        check_range(self.public_key, v.ciphertexts)
        return _run_batch("decrypt", self, v.ciphertexts, workers, DECRYPT_THRESHOLD, LOCAL_DECRYPT_THRESHOLD)
