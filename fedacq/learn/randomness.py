"""Encryption randomness computed ahead, so the lender encrypts a tree almost instantly.

A ciphertext is a plaintext factor times a random factor ``r``: Paillier
``(1 + m*n) * r mod n^2`` with ``r = h_s^x``, Okamoto–Uchiyama ``g^m * r mod n``
with ``r = h^x``. ``r`` (an encryption of zero) costs most of the work and
does not depend on ``m``. The next tree's gradients are only known when the
current tree is finished, but its randomness can be computed at any time: this
module keeps one tree's worth being computed in background processes while the
lender waits for the platform's histograms, and the encryption itself becomes
one multiply-mod per row. Each factor is used exactly once.

With ``workers=1`` there is no background process: factors are computed when
taken (nothing to overlap with on a single core).
"""

from __future__ import annotations

import math
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

from gmpy2 import mpz

if TYPE_CHECKING:
    from fedacq.crypto.scheme import AdditivePublicKey


def _factors(spec: tuple, count: int) -> list[int]:
    """Worker side: ``count`` fresh random factors for the public key ``spec`` describes (either scheme)."""
    from fedacq.crypto.parallel import key_from_spec

    return [int(r) for r in key_from_spec(spec).random_factors(count)]


class RandomnessAhead:
    """Batches of ``count`` random factors; the next batch is computed in the background."""

    def __init__(self, public_key: "AdditivePublicKey", count: int, workers: int | None = None) -> None:
        from fedacq.crypto.parallel import cpu_count

        self.public_key = public_key
        self.count = count
        self.workers = workers or cpu_count()
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[Future] | None = None
        if self.workers > 1 and count:
            import multiprocessing

            self._pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"))
            self._pending = self._submit()

    def _submit(self) -> list[Future]:
        assert self._pool is not None
        size = max(1, math.ceil(self.count / (2 * self.workers)))
        spec = self.public_key.spec()
        return [self._pool.submit(_factors, spec, min(size, self.count - start))
                for start in range(0, self.count, size)]

    def take(self, more: bool = True) -> list[mpz]:
        """This batch's factors; with ``more``, start computing the next batch now."""
        if self._pool is None or self._pending is None:
            return self.public_key.random_factors(self.count)
        factors = [mpz(r) for f in self._pending for r in f.result()]
        self._pending = self._submit() if more else None
        return factors

    def encrypt(self, plaintexts: list[int], factors: list[mpz]) -> list[mpz]:
        """Ciphertexts of ``plaintexts`` with one fresh factor each (the key's own ``encrypt_with_factors``)."""
        return self.public_key.encrypt_with_factors(plaintexts, factors)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
