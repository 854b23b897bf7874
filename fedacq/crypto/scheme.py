"""One door to the additive homomorphic schemes: Paillier (default) and Okamoto–Uchiyama.

Why a door and not a scheme-choosing class: both schemes already share
everything a protocol touches after key set-up (the plumbing around the math
is one base class per key kind in :mod:`fedacq.crypto.additive`). Their keys
expose the same attributes (``scheme``, ``n_bits``, ``ciphertext_modulus``, ``ciphertext_bytes``,
``plaintext_bits``, ``max_int``, ``fingerprint``, ``to_json``, ``spec``) and the
same methods (``encrypt_raw``, ``random_factors``, ``encrypt_with_factors``,
``vector_from_bigints``; ``decrypt_raw`` on the private key), so
:class:`~fedacq.crypto.paillier.EncryptedVector`, ``FixedPoint``, ``Packing``,
``compress``/``decompress``, the worker pool and the histogram kernel take
either. What differs is only where a key comes from: generating one, reading a
peer's and checking it against this node's policy, reading one's own from a
checkpoint. This module is those three, by scheme name.

Names are the policy's (``[policy] schemes``): ``"paillier"``, ``"ou"``. Key
sizes are modulus bits, and equal sizes give the same security level in both
(2048 bits ~112-bit, 3072 ~128-bit: factoring ``n = pq`` or ``n = p^2 q``, see
each module's docstring), so a node's one ``min_key_bits`` serves both.

Which to choose (``benchmarks/secureboost.py --cases kernel``): OU makes
ciphertexts half the size and homomorphic additions ~2-4x cheaper, so it wins
where the peer adds many ciphertexts (SecureBoost histograms). Its plaintext
space is a third of the key (553 bits at 2048), so compression packs ~4x fewer
sums per ciphertext, and its decryption refuses results outside the plaintext
bound (the OU chosen-ciphertext defence), so a protocol whose key owner returns
decryptions to the peer (hetero LR) must keep every returned value within
``plaintext_bits``. Paillier stays the default: interoperable with ``phe``.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, Sequence

from fedacq.crypto import ou, paillier

#: scheme name -> its module (``generate_keypair``, ``PublicKey``, ``PrivateKey``, ``MIN_KEY_BITS``).
SCHEMES = {"paillier": paillier, "ou": ou}


class AdditivePublicKey(Protocol):
    """What protocols may use of a public key, whatever the scheme (typing only)."""

    scheme: str
    n: Any
    n_bits: int
    ciphertext_modulus: Any
    ciphertext_bytes: int
    plaintext_bits: int
    max_int: Any

    @property
    def fingerprint(self) -> str: ...
    def to_json(self) -> str: ...
    def spec(self) -> tuple: ...
    def encrypt_raw(self, plaintexts: Sequence[int], *, workers: int | None = None) -> paillier.EncryptedVector: ...
    def random_factors(self, count: int) -> list: ...
    def encrypt_with_factors(self, plaintexts: Sequence[int], factors: Sequence[Any]) -> list: ...
    def vector_from_bigints(self, b: Any) -> paillier.EncryptedVector: ...


class AdditivePrivateKey(Protocol):
    public_key: Any

    def to_json(self) -> str: ...
    def spec(self) -> tuple: ...
    def encrypt_raw(self, plaintexts: Sequence[int], *, workers: int | None = None) -> paillier.EncryptedVector: ...
    def decrypt_raw(self, v: paillier.EncryptedVector, *, workers: int | None = None) -> list[int]: ...


def _module(scheme: str):
    try:
        return SCHEMES[scheme]
    except (KeyError, TypeError):
        raise ValueError(f"unknown additive scheme {scheme!r}; known: {', '.join(SCHEMES)}") from None


def min_key_bits(scheme: str) -> int:
    """The smallest modulus the scheme accepts outside tests."""
    return _module(scheme).MIN_KEY_BITS


def generate_keypair(scheme: str, key_bits: int = 2048, *, insecure_test_key: bool = False
                     ) -> tuple[AdditivePublicKey, AdditivePrivateKey]:
    """A fresh key pair of ``scheme``; sizes below the scheme's minimum only in test mode."""
    return _module(scheme).generate_keypair(key_bits, insecure_test_key=insecure_test_key)


def private_key_from_json(scheme: str, text: str) -> AdditivePrivateKey:
    """This party's own private key (e.g. from its checkpoint), of the scheme the job uses."""
    return _module(scheme).PrivateKey.from_json(text)


def peer_public_key(text: str, *, scheme: str, allowed: Sequence[str], min_bits: int,
                    key_bits: int | None = None, what: str = "public key") -> AdditivePublicKey:
    """A public key received from the peer, checked against this node's own policy.

    ``scheme`` is what the job announced, ``allowed`` this node's ``[policy]
    schemes``, ``min_bits`` its ``min_key_bits``; ``key_bits``, when given, is
    the size the job announced and must match (the key's owner is the lender in
    every fedacq protocol, and the errors say so). The key is parsed only as the
    announced scheme (a Paillier key announced as OU is refused, not guessed),
    and its own constructor validates it (OU: ``h = g^n mod n``). ``what``
    names the message for the error.
    """
    if scheme not in allowed:
        raise ValueError(f"{what}: scheme {scheme!r} is not in this node's policy schemes {list(allowed)}")
    module = _module(scheme)
    try:
        jwk = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"{what}: not valid JSON: {exc}") from exc
    if not isinstance(jwk, dict) or jwk.get("kty") != module.PublicKey.kty:
        kty = jwk.get("kty") if isinstance(jwk, dict) else None
        raise ValueError(f"{what}: a {scheme} key must have kty={module.PublicKey.kty!r}, got {kty!r}")
    try:
        key = module.PublicKey.from_jwk(jwk)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc
    if key.n_bits < min_bits:
        raise ValueError(f"{what}: the lender's key has {key.n_bits} bits; this party accepts at least {min_bits}")
    if key_bits is not None and key.n_bits != key_bits:
        raise ValueError(f"{what}: key of {key.n_bits} bits, announced {key_bits}")
    return key

