"""The engine interface, the ``[compute]`` configuration and the party's active engine.

An engine runs the embarrassingly parallel work of one party: blinding ids for PSI,
Paillier / OU encryption and decryption, the platform's SecureBoost histograms, and
scoring the whole user base. Two exist:
``local`` (worker processes on this machine; today's behaviour) and ``ray`` (tasks on
the party's own Ray cluster). Both give the same results; which one runs is a property
of the party's deployment, never of the protocol, so nothing about it crosses to the peer.

``[compute]`` in ``party.toml``::

    [compute]
    engine = "ray"                 # "local" (default) or "ray"
    address = "10.0.0.5:6379"      # the party's OWN Ray cluster (GCS host:port); ray only
    workers = 8                    # local only: worker processes (default: every core)

:func:`using` makes an engine the active one for the code that runs inside it (one
party's job: a context variable, so two parties in one process, each in its own
thread, keep their own); :func:`active` is what deep call sites (encryption inside a
learner) ask for.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

if TYPE_CHECKING:
    import os

    import numpy as np
    from gmpy2 import mpz

    from fedacq.activate.scoring import ScoreReport
    from fedacq.crypto.ecdh import BlindingKey

ENGINES = ("local", "ray")
#: ``host:port`` of a Ray cluster's GCS: a DNS name, an IPv4 address or a bracketed IPv6 address.
_ADDRESS = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?):(\d{1,5})$")


class Engine(Protocol):
    """What every engine does; results equal the local engine's (ciphertexts up to their randomness)."""

    name: str
    #: True when work leaves this process tree (the Ray engine): key objects use it for every
    #: batch instead of their own process pool.
    distributed: bool

    def blind_ids(self, key: "BlindingKey", ids: Sequence[bytes], salt: bytes, domain: bytes) -> "np.ndarray":
        """``H(id)^k`` for each id, shape (n, 32) (see :meth:`BlindingKey.blind_ids`)."""

    def reblind(self, key: "BlindingKey", points: "np.ndarray") -> "np.ndarray":
        """Points raised to ``key`` (see :meth:`BlindingKey.reblind`)."""

    def unblind(self, key: "BlindingKey", points: "np.ndarray") -> "np.ndarray":
        """``key`` removed from points it blinded (see :meth:`BlindingKey.unblind`)."""

    def encrypt(self, public_key: Any, plaintexts: Sequence[int]) -> list["mpz"]:
        """Ciphertexts of ints in [0, n) under a public key (Paillier or OU)."""

    def encrypt_private(self, private_key: Any, plaintexts: Sequence[int]) -> list["mpz"]:
        """The key owner's encryption (CRT path): same distribution as :meth:`encrypt`."""

    def decrypt(self, private_key: Any, ciphertexts: Sequence["mpz"]) -> list[int]:
        """Plaintexts of ciphertexts already checked by the key (range, key match)."""

    def histograms(self, bins: "np.ndarray", n_bins: "np.ndarray", nsq: int, n_bits: int, entry_bits: int) -> Any:
        """The platform's SecureBoost histogram builder: ``HistogramEngine``'s interface
        (``start_tree``, ``root``, ``level``, ``block_features``, ``close``)."""

    def score_parquet(self, model: "str | os.PathLike", users: "str | os.PathLike", out: "str | os.PathLike",
                      id_column: str = "user_id", batch_size: int = 262_144,
                      progress: bool = False) -> "ScoreReport":
        """Score every row of a Parquet file into ``out`` (``user_id, score``)."""


@dataclass(frozen=True)
class ComputeConfig:
    """``[compute]`` of one node (see the module docstring)."""

    engine: str = "local"
    address: str | None = None
    workers: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.engine == "ray":
            if self.address is None:
                raise ValueError('engine "ray" needs address (host:port of the party\'s own Ray cluster)')
            check_address(self.address)
            if self.workers is not None:
                raise ValueError('workers is for engine "local"; a Ray cluster has its own CPUs')
        elif self.address is not None:
            raise ValueError('address is for engine "ray"; engine "local" runs on this machine')
        if self.workers is not None and (not isinstance(self.workers, int) or isinstance(self.workers, bool)
                                         or self.workers < 1):
            raise ValueError(f"workers must be a positive integer, got {self.workers!r}")


def check_address(address: object) -> str:
    """A Ray cluster address ``host:port`` (what ``ray start --head`` prints), or a clear error."""
    match = _ADDRESS.match(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 65535:
        raise ValueError(f"address must be host:port of a Ray cluster (e.g. 10.0.0.5:6379), got {address!r}")
    return address


def load_compute(table: Any, source: str) -> ComputeConfig:
    """Read ``[compute]`` (a TOML table); every error names ``source`` and the key."""
    if table is None:
        return ComputeConfig()
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [compute] must be a table")
    known = ("engine", "address", "workers")
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{source}: [compute] unknown key(s) {unknown}; known: {list(known)}")
    if "engine" in table and not isinstance(table["engine"], str):
        raise ValueError(f"{source}: [compute] engine must be a string, one of {ENGINES}")
    try:
        return ComputeConfig(**table)
    except ValueError as exc:
        raise ValueError(f"{source}: [compute] {exc}") from None


def make_engine(config: ComputeConfig) -> Engine:
    """The engine a configuration names (the Ray engine connects on first use)."""
    if config.engine == "ray":
        from fedacq.compute.ray_engine import RayEngine

        return RayEngine(config.address)  # type: ignore[arg-type]
    from fedacq.compute.local import LocalEngine

    return LocalEngine(config.workers)


_active: contextvars.ContextVar[Engine | None] = contextvars.ContextVar("fedacq_compute_engine", default=None)


def active() -> Engine:
    """The engine of the party running here: the one given to :func:`using`, else the local one."""
    engine = _active.get()
    if engine is None:
        from fedacq.compute.local import LocalEngine

        return LocalEngine()
    return engine


def choose(engine: Engine | None = None, workers: int | None = None) -> Engine:
    """The engine one call runs on: ``engine`` if given, a local one with ``workers`` if given,
    else the :func:`active` one (the party's)."""
    if engine is not None:
        if workers is not None:
            raise ValueError("workers is for the local engine: give workers or engine, not both")
        return engine
    if workers is not None:
        from fedacq.compute.local import LocalEngine

        return LocalEngine(workers)
    return active()


@contextlib.contextmanager
def using(engine: Engine) -> Iterator[Engine]:
    """Run the enclosed code (one party's job) with ``engine`` as the active engine."""
    token = _active.set(engine)
    try:
        yield engine
    finally:
        _active.reset(token)
