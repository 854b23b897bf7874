"""Experiment buckets: a deterministic salted hash of the user id -> bucket 0..999 per layer.

Why a keyed hash and not a random draw: the bucket must be recomputable anywhere the
platform serves the user (scoring batch, boost service, event reporting) without a shared
assignment table, and must never change for a user while an experiment runs. Why per
layer: several experiments run on the same users at once (overlapping layers, in the style
of Google's "Overlapping Experiment Infrastructure"); a user's bucket in one layer must say
nothing about its bucket in another, otherwise one experiment's treatment would be
concentrated in another's arm. Keying BLAKE2b with ``salt|layer`` gives each layer an
independent pseudo-random function; changing the salt re-shuffles every user (done between
experiments, so that carry-over effects from the last one do not line up with the new arms).

The hash is BLAKE2b-64 keyed with BLAKE2b-128(salt "|" layer) over the UTF-8 user id, taken
big-endian modulo 1000 (the modulo bias, 2**64 mod 1000 / 2**64, is below 1e-16). Any
system with a BLAKE2b implementation can reproduce it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np

N_BUCKETS = 1000


def layer_key(layer: str, salt: str) -> bytes:
    """The 16-byte BLAKE2b key of one (salt, layer): distinct layers get unrelated keys."""
    if not layer:
        raise ValueError("experiment layer name must not be empty")
    return hashlib.blake2b(f"{salt}|{layer}".encode(), digest_size=16).digest()


def salt_id(salt: str) -> str:
    """A short public fingerprint of a salt, recorded in manifests to name which salt was used."""
    return hashlib.sha256(b"fedacq-salt|" + salt.encode()).hexdigest()[:16]


def bucket_of(user_ids: Iterable[str] | np.ndarray, layer: str, salt: str) -> np.ndarray:
    """Bucket 0..999 (int16) of each user id in ``layer`` under ``salt``.

    Runs at about 0.6 us per id in CPython (a copied keyed hasher per id, then one
    vectorised modulo), i.e. ~10 M ids in seconds, which is what a scoring batch needs.
    """
    base = hashlib.blake2b(key=layer_key(layer, salt), digest_size=8)
    digests = bytearray()
    for uid in user_ids:
        h = base.copy()
        h.update(uid.encode() if isinstance(uid, str) else str(uid).encode())
        digests += h.digest()
    values = np.frombuffer(bytes(digests), dtype=">u8")
    return (values % N_BUCKETS).astype(np.int16)
