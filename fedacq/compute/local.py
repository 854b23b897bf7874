"""The local engine: this machine's cores, exactly as the key and scoring code run by themselves.

Each method hands the batch to the implementation it names (``BlindingKey`` for PSI,
the key's ``encrypt_raw`` / ``decrypt_raw`` with their process pool for Paillier and
OU, ``learn.histogram.HistogramEngine`` for the platform's histograms,
``activate.scoring`` for scoring), so choosing the local engine changes nothing.
What crosses to the worker processes is said where the pools live
(:mod:`fedacq.crypto.ecdh`, :mod:`fedacq.crypto.parallel`): key material only to the
key owner's own child processes, over local pipes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:
    import os

    import numpy as np
    from gmpy2 import mpz

    from fedacq.activate.scoring import ScoreReport
    from fedacq.crypto.ecdh import BlindingKey


class LocalEngine:
    """Worker processes on this machine; ``workers=None``: every core for large batches."""

    name = "local"
    distributed = False

    def __init__(self, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1 or None, got {workers}")
        self.workers = workers

    def __repr__(self) -> str:
        return f"LocalEngine(workers={self.workers})"

    def blind_ids(self, key: "BlindingKey", ids: Sequence[bytes], salt: bytes, domain: bytes) -> "np.ndarray":
        return key.blind_ids(ids, salt, domain, workers=self.workers)

    def reblind(self, key: "BlindingKey", points: "np.ndarray") -> "np.ndarray":
        return key.reblind(points, workers=self.workers)

    def unblind(self, key: "BlindingKey", points: "np.ndarray") -> "np.ndarray":
        return key.unblind(points, workers=self.workers)

    def encrypt(self, public_key: Any, plaintexts: Sequence[int]) -> list["mpz"]:
        return public_key.encrypt_raw(plaintexts, workers=self.workers).ciphertexts

    def encrypt_private(self, private_key: Any, plaintexts: Sequence[int]) -> list["mpz"]:
        return private_key.encrypt_raw(plaintexts, workers=self.workers).ciphertexts

    def decrypt(self, private_key: Any, ciphertexts: Sequence["mpz"]) -> list[int]:
        from fedacq.crypto.paillier import EncryptedVector

        return private_key.decrypt_raw(EncryptedVector(private_key.public_key, list(ciphertexts)),
                                       workers=self.workers)

    def histograms(self, bins: "np.ndarray", n_bins: "np.ndarray", nsq: int, n_bits: int, entry_bits: int):
        from fedacq.learn.histogram import HistogramEngine

        return HistogramEngine(bins, n_bins, nsq, n_bits, entry_bits, self.workers)

    def score_parquet(self, model: "str | os.PathLike", users: "str | os.PathLike", out: "str | os.PathLike",
                      id_column: str = "user_id", batch_size: int = 262_144,
                      progress: bool = False) -> "ScoreReport":
        from fedacq.activate import scoring

        booster = scoring.load_booster(model, n_jobs=self.workers)
        return scoring.score_parquet(booster, users, out, id_column=id_column, batch_size=batch_size,
                                     progress=progress)
