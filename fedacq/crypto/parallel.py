"""A process pool for large Paillier batches, so encryption and decryption use every core.

gmpy2 holds the GIL, so threads do not help; child processes do. The pool is
started lazily, once per process and worker count, with the ``forkserver``
method (``spawn`` off Linux): forking a process that runs gRPC or protocol
threads is unsafe, and a fork server is single-threaded.

What crosses to the workers, over a local pipe between the party's own
processes: plaintexts and ``n`` for encryption; ciphertexts and the private
factors ``p``, ``q`` for decryption. The workers are children of the key
owner's process on the key owner's machine; nothing here talks to a peer.
Each worker caches its key objects (and the encryption table) per modulus.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import sys
import threading
from concurrent.futures import ProcessPoolExecutor
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # imported lazily by paillier; typing only here
    from gmpy2 import mpz

    from fedacq.crypto.paillier import PrivateKey, PublicKey

_lock = threading.Lock()
_pool: ProcessPoolExecutor | None = None
_pool_size = 0

#: chunk bounds: big enough to amortise the pipe, small enough to balance load.
MIN_CHUNK, MAX_CHUNK = 128, 2048


def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def resolve_workers(workers: int | None, size: int, threshold: int) -> int:
    """``None``: all cores when the batch is at least ``threshold`` long, else 1."""
    if workers is None:
        return cpu_count() if size >= threshold else 1
    if workers < 1:
        raise ValueError(f"workers must be >= 1 or None, got {workers}")
    return min(workers, max(size, 1))


def _get_pool(workers: int) -> ProcessPoolExecutor:
    global _pool, _pool_size
    with _lock:
        if _pool is None or _pool_size != workers:
            if _pool is not None:
                _pool.shutdown(wait=True)
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            _pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method))
            _pool_size = workers
        return _pool


def shutdown() -> None:
    """Stop the pool (also done at interpreter exit)."""
    global _pool, _pool_size
    with _lock:
        if _pool is not None:
            _pool.shutdown(wait=True)
        _pool, _pool_size = None, 0


atexit.register(shutdown)


def _chunks(items: Sequence, workers: int) -> list[Sequence]:
    size = min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(len(items) / (4 * workers))))
    return [items[i:i + size] for i in range(0, len(items), size)]


# -- worker side -------------------------------------------------------------
_public_keys: dict[int, "PublicKey"] = {}
_private_keys: dict[int, "PrivateKey"] = {}


def _encrypt_chunk(n: int, plaintexts: Sequence[int]) -> list["mpz"]:
    from fedacq.crypto.paillier import PublicKey

    key = _public_keys.get(n)
    if key is None:
        key = _public_keys[n] = PublicKey(n)
    return key.encrypt_raw_local(plaintexts)


def _decrypt_chunk(n: int, p: int, q: int, ciphertexts: Sequence["mpz"]) -> list[int]:
    from fedacq.crypto.paillier import PrivateKey, PublicKey

    key = _private_keys.get(n)
    if key is None:
        key = _private_keys[n] = PrivateKey(PublicKey(n), p, q)
    return key.decrypt_raw_local(ciphertexts)


# -- caller side -------------------------------------------------------------
def encrypt(public_key: "PublicKey", plaintexts: Sequence[int], workers: int) -> list["mpz"]:
    pool = _get_pool(workers)
    n = int(public_key.n)
    futures = [pool.submit(_encrypt_chunk, n, [int(m) for m in chunk]) for chunk in _chunks(plaintexts, workers)]
    return [c for f in futures for c in f.result()]


def decrypt(private_key: "PrivateKey", ciphertexts: Sequence["mpz"], workers: int) -> list[int]:
    pool = _get_pool(workers)
    n, p, q = int(private_key.public_key.n), int(private_key.p), int(private_key.q)
    futures = [pool.submit(_decrypt_chunk, n, p, q, chunk) for chunk in _chunks(ciphertexts, workers)]
    return [m for f in futures for m in f.result()]
