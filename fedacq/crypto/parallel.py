"""Every core for large Paillier / OU batches: a process pool for encryption, threads for decryption.

Encryption is a Python loop of small multiply-mods that holds the GIL, so threads
do not help; child processes do. The pool is started lazily, once per process and
worker count, with the ``forkserver`` method (``spawn`` off Linux): forking a
process that runs gRPC or protocol threads is unsafe, and a fork server is
single-threaded. What crosses to its workers, over a local pipe between the
party's own processes: plaintexts and the public key's ``spec()`` (Paillier ``n``;
OU ``n, g, h``) for public-key encryption, adding ``p``, ``q`` for the key owner's
CRT encryption. The workers are children of the key owner's process on the key
owner's machine; nothing here talks to a peer. Each worker caches its key objects
(and the encryption tables) per spec.

Decryption is almost all modular exponentiation, which each scheme does in one
:func:`fedacq.crypto.powmod.powmod_list` call per chunk: compiled, the GIL released. So a
batch is split over threads of the calling process: no pickling, no pool start-up,
worth it from two ciphertexts on, and the private key never leaves the process.
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
import sys
import threading
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Sequence

from fedacq.crypto.ou import OutOfBound

if TYPE_CHECKING:  # imported lazily by paillier; typing only here
    from gmpy2 import mpz

    from fedacq.crypto.paillier import PrivateKey, PublicKey

_lock = threading.Lock()
#: one pool per worker count: two parties in one process (simulation, tests) may
#: ask for different counts at once, and neither may shut the other's pool down.
_pools: dict[int, ProcessPoolExecutor] = {}
#: decryption threads, one pool per worker count (same reason).
_thread_pools: dict[int, ThreadPoolExecutor] = {}

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
    with _lock:
        pool = _pools.get(workers)
        if pool is None:
            method = "forkserver" if sys.platform.startswith("linux") else "spawn"
            pool = _pools[workers] = ProcessPoolExecutor(
                max_workers=workers, mp_context=multiprocessing.get_context(method))
        return pool


def _get_thread_pool(workers: int) -> ThreadPoolExecutor:
    with _lock:
        pool = _thread_pools.get(workers)
        if pool is None:
            pool = _thread_pools[workers] = ThreadPoolExecutor(max_workers=workers,
                                                               thread_name_prefix="fedacq-decrypt")
        return pool


def shutdown() -> None:
    """Stop the pools (also done at interpreter exit)."""
    with _lock:
        pools: list = [*_pools.values(), *_thread_pools.values()]
        _pools.clear()
        _thread_pools.clear()
    for pool in pools:
        pool.shutdown(wait=True)


atexit.register(shutdown)


def _chunks(items: Sequence, workers: int) -> list[Sequence]:
    size = min(MAX_CHUNK, max(MIN_CHUNK, math.ceil(len(items) / (4 * workers))))
    return [items[i:i + size] for i in range(0, len(items), size)]


# -- worker side -------------------------------------------------------------
_keys: dict[tuple, object] = {}


def key_from_spec(spec: tuple):
    """The key object a ``spec()`` tuple describes (cached per process): Paillier or OU."""
    key = _keys.get(spec)
    if key is None:
        kind, *values = spec
        if kind == "paillier":
            from fedacq.crypto import paillier as mod
        elif kind == "ou":
            from fedacq.crypto import ou as mod  # type: ignore[no-redef]
        else:
            raise ValueError(f"unknown scheme {kind!r} in a key spec")
        key = _keys[spec] = mod.key_from_spec(values)
    return key


def _encrypt_chunk(spec: tuple, plaintexts: Sequence[int]) -> list["mpz"]:
    return key_from_spec(spec).encrypt_raw_local(plaintexts)


# -- caller side -------------------------------------------------------------
def _gather(workers: int, futures: list[Future]) -> list:
    """Results in order; a dead worker drops the pool so the next call starts a fresh one."""
    try:
        return [x for f in futures for x in f.result()]
    except BrokenProcessPool as exc:
        with _lock:
            _pools.pop(workers, None)
        raise RuntimeError(f"a crypto worker process died (pool of {workers}); if the main script "
                           "is not importable (stdin, no __main__ guard), pass workers=1") from exc


def encrypt(public_key: "PublicKey", plaintexts: Sequence[int], workers: int) -> list["mpz"]:
    pool = _get_pool(workers)
    spec = public_key.spec()
    futures = [pool.submit(_encrypt_chunk, spec, [int(m) for m in chunk]) for chunk in _chunks(plaintexts, workers)]
    return _gather(workers, futures)


def encrypt_private(private_key: "PrivateKey", plaintexts: Sequence[int], workers: int) -> list["mpz"]:
    """The key owner's encryption (CRT path) in its own worker processes."""
    return encrypt(private_key, plaintexts, workers)  # type: ignore[arg-type]


def decrypt(private_key: "PrivateKey", ciphertexts: Sequence["mpz"], workers: int) -> list[int]:
    """Decryption in ``workers`` threads of this process (module docstring), in order.

    Two chunks per thread, so a thread slowed by other load is helped by the others.
    """
    size = max(1, math.ceil(len(ciphertexts) / (2 * workers)))

    def chunk(start: int) -> list[int]:
        try:
            return private_key.decrypt_raw_local(ciphertexts[start:start + size])
        except OutOfBound as exc:  # name the ciphertext in the whole batch, not in its chunk
            raise exc.shifted(start) from None

    pool = _get_thread_pool(workers)
    return [x for part in pool.map(chunk, range(0, len(ciphertexts), size)) for x in part]
