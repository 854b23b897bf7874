"""Echo: the smallest protocol that exercises a link both ways (node smoke test).

Steps
  1. lender -> platform ``echo.hello`` {party, nonce}; platform answers
     ``echo.hello`` with its own name and the same nonce.
  2. ``rounds`` times: lender -> platform ``echo.data`` (a float64 array, an
     int64 array and a vector of 2048-bit-sized big integers, drawn from
     ``seed``); platform returns the same parts in ``echo.reply``; the lender
     checks that every value came back unchanged.

Params: ``rounds`` (3), ``n_rows`` (1000), ``width`` (256 bytes per big
integer), ``seed`` (0).

What each party learns: only the random test values and the peer's name; no
data set is read (the job may still name data sets, to exercise the nodes'
data-set checks; the result lists their logical names).
"""

from __future__ import annotations

import secrets
from typing import Any

import numpy as np

from fedacq.link.message import BigInts, Message, MessageSpec, PartSpec, register
from fedacq.node.policy import Policy, PolicyError, complete
from fedacq.node.protocols import JobContext, Protocol

#: echo carries large test payloads (a node test pushes a 1 GB array through it).
_MAX = 2 * 1024 ** 3
_PARTS = {"values": PartSpec(dtypes=("float64",), ndim=1, max_bytes=_MAX),
          "ids": PartSpec(dtypes=("int64",), ndim=1, max_bytes=_MAX),
          "cipher": PartSpec(kind="bigints", max_bytes=_MAX)}

register(
    MessageSpec("echo.hello", header={"party": str, "nonce": str}),
    MessageSpec("echo.data", header={"round": int}, parts=_PARTS),
    MessageSpec("echo.reply", header={"round": int}, parts=_PARTS),
)


DEFAULTS = {"rounds": 3, "n_rows": 1000, "width": 256, "seed": 0}


def resolve(params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """Echo's parameters: non-negative integers (the policy has nothing to say about test values)."""
    out = complete(params, DEFAULTS, "echo")
    for key, value in out.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PolicyError(f"echo: parameter {key} must be a non-negative integer, got {value!r}")
    return out


def _payload(rng: np.random.Generator, n_rows: int, width: int) -> dict[str, Any]:
    ints = rng.integers(0, 2 ** 62, size=(n_rows, max(1, width // 8)), dtype=np.int64)
    cipher = [int.from_bytes(row.tobytes(), "big") % (1 << (8 * width)) for row in ints]
    return {"values": rng.standard_normal(n_rows), "ids": np.arange(n_rows, dtype=np.int64),
            "cipher": BigInts(cipher, width)}


def run_lender(ctx: JobContext) -> dict[str, Any]:
    rounds, n_rows, width = ctx.params["rounds"], ctx.params["n_rows"], ctx.params["width"]
    rng = np.random.default_rng(ctx.params["seed"])
    nonce = secrets.token_hex(8)
    ctx.link.send(Message("echo.hello", {"party": ctx.party, "nonce": nonce}, step="hello"))
    hello = ctx.link.recv("echo.hello")
    if hello.header["nonce"] != nonce:
        raise RuntimeError(f"echo: {ctx.peer} answered the handshake with the wrong nonce")
    for r in range(rounds):
        parts = _payload(rng, n_rows, width)
        ctx.link.send(Message("echo.data", {"round": r}, parts, step=f"round{r}"))
        back = ctx.link.recv("echo.reply")
        same = (back.header["round"] == r and np.array_equal(back.parts["values"], parts["values"])
                and np.array_equal(back.parts["ids"], parts["ids"]) and back.parts["cipher"] == parts["cipher"])
        if not same:
            raise RuntimeError(f"echo: round {r} came back changed from {ctx.peer}")
        ctx.logger.info("round %d of %d echoed (%d rows)", r + 1, rounds, n_rows)
    return {"peer": hello.header["party"], "rounds": rounds, "n_rows": n_rows, "matched": True,
            "datasets": sorted(ctx.datasets), **ctx.link.stats()}


def run_platform(ctx: JobContext) -> dict[str, Any]:
    rounds = ctx.params["rounds"]
    hello = ctx.link.recv("echo.hello")
    ctx.link.send(Message("echo.hello", {"party": ctx.party, "nonce": hello.header["nonce"]}, step="hello"))
    for r in range(rounds):
        msg = ctx.link.recv("echo.data")
        ctx.link.send(Message("echo.reply", {"round": msg.header["round"]}, msg.parts, step=f"round{r}"))
        ctx.logger.info("round %d of %d echoed", r + 1, rounds)
    return {"peer": hello.header["party"], "rounds": rounds, "datasets": sorted(ctx.datasets),
            **ctx.link.stats()}


PROTOCOL = Protocol("echo", roles={"lender": run_lender, "platform": run_platform}, resolve=resolve,
                    messages=("fedacq.node.echo",), description="handshake, then arrays and big integers echoed back")
