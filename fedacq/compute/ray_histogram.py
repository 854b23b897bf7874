"""The platform's encrypted histograms on its own Ray cluster: one Ray actor per feature block.

The same work as :class:`fedacq.learn.histogram.HistogramEngine` and the same replies:
the platform's features are split into blocks (one per cluster CPU, at most one per
feature); each block lives in a Ray actor running a
:class:`~fedacq.learn.histogram.BlockKernel`, which keeps the block's bin codes for the
whole job and the current level's histograms between levels (what histogram
subtraction needs). Each block's histograms are compressed on their own, so the
reply is a list of groups, ``block_features[i]`` features of block ``i``; with as
many blocks as the process engine has workers the ciphertexts are identical.

What crosses to the actors: the platform's bin codes (its own data, on its own
cluster), the lender's ciphertexts of the tree and ``n^2`` (public values). No key.

An actor holds its CPU until :meth:`RayHistogramEngine.close`: the blocks are the
platform's main work while a model trains, and keeping them resident is what spares
shipping every ciphertext again at each level.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from fedacq.compute.ray_engine import RayEngine, ray

if TYPE_CHECKING:
    from gmpy2 import mpz


class RayHistogramEngine:
    """``HistogramEngine``'s interface (``start_tree``, ``root``, ``level``, ``close``) on Ray actors."""

    def __init__(self, engine: RayEngine, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int,
                 entry_bits: int, n_blocks: int | None = None) -> None:
        from fedacq.learn.histogram import BlockKernel

        self.engine = engine
        engine.connect()
        n_features = bins.shape[1]
        blocks = max(1, min(n_blocks or engine.cpus(), n_features or 1))
        self._groups = np.array_split(np.arange(n_features), blocks)
        actor = ray.remote(num_cpus=1)(BlockKernel)
        args = (int(nsq), n_bits, entry_bits)
        self._modulus = int(nsq)
        self._actors = [actor.remote(bins[:, cols], n_bins[cols], *args) for cols in self._groups]
        engine.tasks["histogram_actors"] = engine.tasks.get("histogram_actors", 0) + len(self._actors)
        self.block_features: list[int] = []

    def start_tree(self, cts: list["mpz"], active: np.ndarray) -> None:
        """New tree: its ciphertexts (sent once to every block) and the active platform features."""
        from fedacq.learn.histogram import pack_ciphertexts

        width, packed = pack_ciphertexts(cts, self._modulus)
        payload = ray.put(packed)  # one buffer in the object store, read by every block (not a list of ints)
        del packed
        self.block_features = []
        calls = []
        for actor, cols in zip(self._actors, self._groups):
            mine = set(cols.tolist())
            local = [int(np.searchsorted(cols, f)) for f in active if f in mine]
            self.block_features.append(len(local))
            calls.append(actor.start_tree_packed.remote(payload, width, local))
        ray.get(calls)

    def root(self) -> list["mpz"]:
        return [c for part in ray.get([a.root.remote() for a in self._actors]) for c in part]

    def level(self, jobs: list[tuple[int, int, int, np.ndarray]], nodes: list[int]) -> list["mpz"]:
        """``jobs``: (parent, small child, big child, rows of the small child), as for the process engine."""
        jobs_ref = ray.put(jobs)
        return [c for part in ray.get([a.level.remote(jobs_ref, nodes) for a in self._actors]) for c in part]

    def close(self) -> None:
        """Release the actors (and their CPUs)."""
        for actor in self._actors:
            ray.kill(actor)
        self._actors = []


__all__ = ["RayHistogramEngine"]
