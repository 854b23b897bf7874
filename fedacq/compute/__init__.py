"""Compute engines: where a party's heavy, embarrassingly parallel work runs.

* ``local`` (default): worker processes on this machine (:mod:`fedacq.compute.local`).
* ``ray``: tasks on the party's own Ray cluster (:mod:`fedacq.compute.ray_engine`;
  the optional ``ray`` extra).

The choice is the party's alone (``[compute]`` in its ``party.toml``, or
``fedacq run --engine ray --ray-address host:port``); the protocols, their messages
and their results are the same either way. What each engine hands its workers is
written in its module: key material only ever reaches workers of the key owner.
"""

from __future__ import annotations

from fedacq.compute.engine import (ENGINES, ComputeConfig, Engine, active, check_address, choose, load_compute,
                                   make_engine, using)
from fedacq.compute.local import LocalEngine

__all__ = ["Engine", "ComputeConfig", "LocalEngine", "ENGINES", "active", "using", "choose", "make_engine",
           "load_compute", "check_address"]
