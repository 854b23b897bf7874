"""The Ray engine: a party's parallel work as tasks on the party's OWN Ray cluster.

When one machine is not enough, a party points its node at a Ray cluster it runs
itself (``[compute] engine = "ray"``, ``address = "host:port"``): batches are cut
into chunks and each chunk becomes one Ray task (one CPU), results come back in order.
Results equal the local engine's (:mod:`fedacq.compute.local`); Paillier / OU
ciphertexts are fresh randomised encryptions of the same plaintexts either way.

Trust boundary. A Ray cluster is one trust domain: every node of it can read every
object and run any code as the cluster's user. So the cluster must be the party's own
(its machines, its network), exactly like the machine the local engine uses. What
crosses from the node to the Ray workers, per batch:

* PSI blinding: the party's secret blinding scalar (once per batch, through Ray's
  object store), its ids (normalised bytes), the job salt and column domain, and the
  points to re-blind or unblind;
* encryption: the public key's ``spec()`` (Paillier ``n``; OU ``n, g, h``) and the
  plaintexts (the lender's packed gradients: its secret data, so on its own cluster);
* the key owner's encryption and decryption: the private key's ``spec()`` (adding
  ``p``, ``q`` and, for OU keys, ``t``) and the plaintexts or ciphertexts; the lender's private key therefore
  only ever reaches the lender's cluster, and the platform's node never holds it;
* SecureBoost histograms (the platform): its bin codes, once per job, and the lender's
  ciphertexts with ``n^2`` (public values), once per tree
  (:mod:`fedacq.compute.ray_histogram`);
* scoring: the model (XGBoost JSON bytes) and the path of the users' Parquet file,
  which every Ray node reads itself (a path on storage the whole cluster mounts); the
  scores come back to the node, which writes the one output file.

Ray serialises these objects with its own pickle-based format, inside the party's
cluster only. No pickle crosses between PARTIES: the peer link carries typed
messages (:mod:`fedacq.link`), and a peer's values reach this engine only after the
protocol code has checked them.

One process talks to one Ray cluster (Ray's own limit): the node connects on first use
and stays connected; asking for a second address in the same process is an error.
The cluster's Python must be able to import the same fedacq version as the node
(checked when connecting).
"""

from __future__ import annotations

import hashlib
import math
import os
import threading
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

from fedacq.compute.engine import check_address

try:
    import ray
except ImportError as exc:  # the optional extra
    raise ImportError("the Ray engine ([compute] engine = \"ray\", fedacq run --engine ray) needs the "
                      "optional 'ray' extra: pip install 'fedacq[ray]'") from exc

if TYPE_CHECKING:
    from gmpy2 import mpz

    from fedacq.activate.scoring import ScoreReport
    from fedacq.crypto.ecdh import BlindingKey

#: chunks per cluster CPU: enough to balance uneven workers, few enough to amortise a task (~1 ms).
TASKS_PER_CPU = 4
#: chunk bounds per kind of work, in items (a Paillier item costs ~0.5 ms, a point ~40 us).
CRYPTO_CHUNK = (128, 4096)
POINT_CHUNK = (1024, 16384)

_lock = threading.Lock()
_connected: str | None = None


# -- worker side: what a Ray task runs (module level, so Ray ships it by reference) -------------
_blinding_keys: dict[bytes, "BlindingKey"] = {}
_boosters: dict[bytes, Any] = {}


def _blinding_key(scalar: bytes) -> "BlindingKey":
    """The party's blinding key in this worker (cached: its inverses cost two modular inversions)."""
    from fedacq.crypto.ecdh import BlindingKey

    key = _blinding_keys.get(scalar)
    if key is None:
        _blinding_keys.clear()  # one job's key at a time; do not keep old secrets around
        key = _blinding_keys[scalar] = BlindingKey(scalar)
    return key


@ray.remote(num_cpus=1)
def _blind_ids_task(scalar: bytes, salt: bytes, domain: bytes, ids: list[bytes]) -> np.ndarray:
    return _blinding_key(scalar).blind_ids(ids, salt, domain, workers=1)


@ray.remote(num_cpus=1)
def _points_task(operation: str, scalar: bytes, points: np.ndarray) -> np.ndarray:
    key = _blinding_key(scalar)
    return key.reblind(points, workers=1) if operation == "reblind" else key.unblind(points, workers=1)


@ray.remote(num_cpus=1)
def _encrypt_task(spec: tuple, plaintexts: list[int]) -> list["mpz"]:
    from fedacq.crypto.parallel import key_from_spec

    return key_from_spec(spec).encrypt_raw_local(plaintexts)


@ray.remote(num_cpus=1)
def _decrypt_task(spec: tuple, ciphertexts: list["mpz"]) -> list[int]:
    from fedacq.crypto.parallel import key_from_spec

    return key_from_spec(spec).decrypt_raw_local(ciphertexts)


def _booster(model_json: bytes, digest: bytes):
    """The prospect model in this worker, loaded once per model (one thread: a task has one CPU)."""
    booster = _boosters.get(digest)
    if booster is None:
        import xgboost as xgb

        _boosters.clear()
        booster = _boosters[digest] = xgb.Booster(model_file=bytearray(model_json))
        booster.set_param({"nthread": 1})
    return booster


@ray.remote(num_cpus=1)
def _score_row_group_task(model_json: bytes, digest: bytes, users: str, row_group: int,
                          columns: list[str], id_column: str, batch_size: int) -> list:
    import pyarrow.parquet as pq

    from fedacq.activate.scoring import score_batch

    booster = _booster(model_json, digest)
    table = pq.ParquetFile(users).read_row_group(row_group, columns=columns)
    return [score_batch(booster, batch, id_column) for batch in table.to_batches(max_chunksize=batch_size)]


@ray.remote(num_cpus=1)
def _versions_task() -> tuple[str, str]:
    import sys

    import fedacq

    return fedacq.__version__, sys.version.split()[0]


# -- caller side --------------------------------------------------------------------------------
def disconnect() -> None:
    """Leave the cluster (the cluster keeps running: it is the party's, not this process's)."""
    global _connected
    with _lock:
        ray.shutdown()
        _connected = None


class RayEngine:
    """Tasks on the Ray cluster at ``address`` (the party's own); connects on first use."""

    name = "ray"
    distributed = True

    def __init__(self, address: str) -> None:
        self.address = check_address(address)
        #: Ray tasks submitted by this engine, per kind of work (for stats and tests).
        self.tasks: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"RayEngine(address={self.address!r})"

    # connection ---------------------------------------------------------------------------------
    def connect(self) -> None:
        """Connect this process to the cluster (once) and check that it runs this fedacq."""
        global _connected
        with _lock:
            if _connected == self.address and ray.is_initialized():
                return
            if ray.is_initialized():
                raise RuntimeError(f"this process is already connected to a Ray cluster "
                                   f"({_connected or 'started elsewhere'}); a node uses one cluster, its own, "
                                   f"so it cannot also use {self.address}")
            ray.init(address=self.address, namespace="fedacq", log_to_driver=False,
                     logging_level="WARNING")
            _connected = self.address
        import platform

        import fedacq

        try:
            theirs = ray.get(_versions_task.remote())
        except ray.exceptions.RayError as exc:
            raise RuntimeError(f"the Ray cluster at {self.address} cannot run fedacq tasks (is fedacq "
                               f"installed on every Ray node?): {exc}") from None
        ours = (fedacq.__version__, platform.python_version())
        if theirs != ours:
            raise RuntimeError(f"the Ray cluster at {self.address} runs fedacq {theirs[0]} on Python "
                               f"{theirs[1]}; this node runs fedacq {ours[0]} on Python {ours[1]}")

    def cpus(self) -> int:
        self.connect()
        return max(1, int(ray.cluster_resources().get("CPU", 1)))

    def _chunks(self, n: int, bounds: tuple[int, int]) -> list[slice]:
        low, high = bounds
        size = min(high, max(low, math.ceil(n / (TASKS_PER_CPU * self.cpus()))))
        return [slice(start, min(start + size, n)) for start in range(0, n, size)]

    def _map(self, kind: str, task: Callable, items: Sequence, bounds: tuple[int, int], *args: Any) -> list:
        """``task(*args, chunk)`` over chunks of ``items``, results in order."""
        if not len(items):
            return []
        chunks = self._chunks(len(items), bounds)
        refs = [task.remote(*args, items[s]) for s in chunks]
        self.tasks[kind] = self.tasks.get(kind, 0) + len(refs)
        return ray.get(refs)

    # PSI ----------------------------------------------------------------------------------------
    def blind_ids(self, key: "BlindingKey", ids: Sequence[bytes], salt: bytes, domain: bytes) -> np.ndarray:
        from fedacq.crypto.ecdh import POINT_BYTES

        ids = list(ids)
        if not ids:
            return np.empty((0, POINT_BYTES), dtype=np.uint8)
        self.connect()
        scalar = ray.put(key.to_bytes())
        return np.concatenate(self._map("blind_ids", _blind_ids_task, ids, POINT_CHUNK, scalar, salt, domain))

    def reblind(self, key: "BlindingKey", points: np.ndarray) -> np.ndarray:
        return self._points("reblind", key, points)

    def unblind(self, key: "BlindingKey", points: np.ndarray) -> np.ndarray:
        return self._points("unblind", key, points)

    def _points(self, operation: str, key: "BlindingKey", points: np.ndarray) -> np.ndarray:
        from fedacq.crypto.ecdh import POINT_BYTES

        pts = np.asarray(points)
        if pts.dtype != np.uint8 or pts.ndim != 2 or pts.shape[1] != POINT_BYTES:
            raise ValueError(f"points must be a uint8 array of shape (n, {POINT_BYTES}), got {pts.dtype} {pts.shape}")
        if not len(pts):
            return np.empty((0, POINT_BYTES), dtype=np.uint8)
        self.connect()
        scalar = ray.put(key.to_bytes())
        return np.concatenate(self._map(operation, _points_task, pts, POINT_CHUNK, operation, scalar))

    # Paillier / OU ------------------------------------------------------------------------------
    def encrypt(self, public_key: Any, plaintexts: Sequence[int]) -> list["mpz"]:
        return self._crypto("encrypt", _encrypt_task, public_key.spec(), [int(m) for m in plaintexts])

    def encrypt_private(self, private_key: Any, plaintexts: Sequence[int]) -> list["mpz"]:
        return self._crypto("encrypt_private", _encrypt_task, private_key.spec(), [int(m) for m in plaintexts])

    def decrypt(self, private_key: Any, ciphertexts: Sequence["mpz"]) -> list[int]:
        return self._crypto("decrypt", _decrypt_task, private_key.spec(), list(ciphertexts))

    def _crypto(self, kind: str, task: Callable, spec: tuple, items: list) -> list:
        if not items:
            return []
        self.connect()
        spec_ref = ray.put(spec)
        return [x for part in self._map(kind, task, items, CRYPTO_CHUNK, spec_ref) for x in part]

    # SecureBoost histograms (the platform) ---------------------------------------------------------
    def histograms(self, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int, entry_bits: int):
        """Feature blocks in Ray actors (:class:`~fedacq.compute.ray_histogram.RayHistogramEngine`)."""
        from fedacq.compute.ray_histogram import RayHistogramEngine

        return RayHistogramEngine(self, bins, n_bins, nsq, n_bits, entry_bits)

    # scoring ------------------------------------------------------------------------------------
    def score_parquet(self, model: "str | os.PathLike", users: "str | os.PathLike", out: "str | os.PathLike",
                      id_column: str = "user_id", batch_size: int = 262_144,
                      progress: bool = False) -> "ScoreReport":
        """One Ray task per Parquet row group of ``users``; the node writes the scores in file order.

        ``users`` must be readable at the same path on every Ray node (shared storage).
        At most two tasks per cluster CPU are in flight, so the node holds a bounded
        number of scored row groups whatever the population.
        """
        import pyarrow.parquet as pq
        from tqdm import tqdm

        from fedacq.activate.scoring import ScoreReport, load_booster, parquet_output, scores_schema

        users, out = Path(users).resolve(), Path(out)
        booster = load_booster(model, n_jobs=1)
        schema = scores_schema(booster, users, id_column)
        pf = pq.ParquetFile(users)
        self.connect()
        model_json = bytes(booster.save_raw("json"))
        model_ref = ray.put(model_json)
        digest = hashlib.sha256(model_json).digest()
        columns = [id_column, *booster.feature_names]
        in_flight = 2 * self.cpus()
        rows, start = 0, time.perf_counter()
        pending: deque = deque()
        groups = iter(range(pf.num_row_groups))
        with (parquet_output(out, schema) as writer,
              tqdm(total=pf.metadata.num_rows, unit="rows", unit_scale=True, disable=not progress,
                   desc="score (ray)") as bar):
            while True:
                for group in groups:
                    pending.append(_score_row_group_task.remote(model_ref, digest, str(users), group,
                                                                columns, id_column, batch_size))
                    self.tasks["score"] = self.tasks.get("score", 0) + 1
                    if len(pending) >= in_flight:
                        break
                if not pending:
                    break
                for scored in ray.get(pending.popleft()):
                    writer.write_batch(scored)
                    rows += scored.num_rows
                    bar.update(scored.num_rows)
        return ScoreReport(rows=rows, seconds=time.perf_counter() - start, out=out)


__all__ = ["RayEngine", "disconnect", "TASKS_PER_CPU"]
