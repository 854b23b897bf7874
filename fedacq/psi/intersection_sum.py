"""Private intersection-sum (after Google's Private Join and Compute), with groups.

The platform holds ids with a group label (an experiment bucket); the lender holds ids
with a non-negative value (e.g. drawdown amount) and the Paillier private key. The
platform should learn, per group, the number of its ids the lender also has and the
sum of their values — and nothing about any single user.

Steps (ECDH blinding as in :mod:`fedacq.psi.ecdh_psi`, fresh keys ``a``, ``b`` per job):

1. lender -> platform ``isum.hello``: salt, Paillier public key, the lender's
   ``min_group_size`` and ``epsilon``. Platform -> lender ``isum.hello_ack``: group
   sizes (by group index; labels stay with the platform) and the platform's own
   requested minimum.
2. Platform -> lender: ``H(y)^b`` per group, shuffled within the group.
3. Lender -> platform: those points raised to ``a`` (``H(y)^ba``), shuffled again
   within each group, so the platform cannot link them back to its rows.
4. Lender -> platform: ``H(x)^a`` for its ids with ``Enc(v << 64 | 1)`` (value and a
   count of one packed in one Paillier plaintext), in random order.
5. Platform: raises the lender's points to ``b``, finds which of them equal a
   ``H(y)^ba`` of group g, homomorphically sums those ciphertexts per group,
   re-randomises, sends ``Enc(sum_g << 64 | count_g)`` per group.
6. Lender decrypts, **enforces** the minimum group size (``max`` of both sides'
   minimum) and, if ``epsilon`` is set, adds Laplace noise (count: sensitivity 1,
   sum: sensitivity ``value_bound``, values clipped to it; ``epsilon`` split equally),
   then sends the released numbers. Groups below the minimum are sent as
   *suppressed* with no numbers at all.

Who learns what: the platform learns the lender's set size, and per group only the
released (noisy, thresholded) count and sum. The lender learns the number of
groups and the platform's per-group set sizes, and the exact per-group counts and
sums before release (aggregates of its own values); it never sees which of its ids
matched or their groups. The minimum and the noise protect the lender's values, so
the lender applies them after decryption: the platform cannot skip them.

Security model: semi-honest. A platform that deviates could add one lender
ciphertext several times to inflate a count; the lender checks that decrypted
counts stay within its own set size and the group sizes, which bounds but does not
exclude this. A malicious-secure variant needs zero-knowledge proofs of the sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from fedacq.crypto.ecdh import POINT_BYTES, BlindingKey
from fedacq.crypto.paillier import EncryptedVector, PrivateKey, PublicKey
from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, PartSpec, register
from fedacq.psi.ecdh_psi import CHUNK, PsiError, _recv_points, _send_points
from fedacq.psi.ids import normalize_value

COUNT_BITS = 64
FRAC_BITS = 16
DOMAIN = b"fedacq/intersection-sum"

register(
    MessageSpec("isum.hello", header={"salt": str, "public_key": str, "n": int,
                                      "min_group_size": int, "epsilon": float}),
    MessageSpec("isum.hello_ack", header={"group_sizes": list, "min_group_size": int}),
    MessageSpec("isum.values", header={"offset": int},
                parts={"points": PartSpec(dtypes=("uint8",), ndim=2, max_bytes=CHUNK * POINT_BYTES),
                       "ciphertexts": PartSpec(kind="bigints")}),
    MessageSpec("isum.sums", parts={"sums": PartSpec(kind="bigints")}),
    MessageSpec("isum.release", parts={"count": PartSpec(dtypes=("float64",), ndim=1),
                                       "sum": PartSpec(dtypes=("float64",), ndim=1),
                                       "suppressed": PartSpec(dtypes=("bool",), ndim=1)}),
)


@dataclass
class GroupAggregate:
    count: float | None
    sum: float | None
    suppressed: bool


@dataclass
class IntersectionSumResult:
    """Per group (platform: by label; lender: by group index) what that side learned."""

    groups: dict[Any, GroupAggregate]
    exact: dict[int, tuple[int, float]] = field(default_factory=dict)  # lender only, before release
    stats: dict[str, Any] = field(default_factory=dict)


def _normalised(ids: Sequence[object], kind: str, who: str) -> list[bytes]:
    out = []
    seen: set[str] = set()
    for i, v in enumerate(ids):
        norm = normalize_value(v, kind)
        if norm is None:
            raise ValueError(f"{who} id at position {i} is missing")
        if norm in seen:
            raise ValueError(f"{who} id {norm!r} occurs twice; aggregate per id first")
        seen.add(norm)
        out.append(norm.encode("utf-8"))
    return out


def intersection_sum_lender(link: Link, ids: Sequence[object], values: Sequence[float], *,
                            private_key: PrivateKey, min_group_size: int = 10,
                            epsilon: float | None = None, value_bound: float | None = None,
                            id_kind: str = "text", workers: int | None = None,
                            progress: bool = False) -> IntersectionSumResult:
    """The lender's side: supplies encrypted values, enforces the minimum and the noise."""
    vals = np.asarray(values, dtype=np.float64)
    if len(vals) != len(ids):
        raise ValueError(f"{len(ids)} ids but {len(vals)} values")
    if not np.isfinite(vals).all() or (vals < 0).any():
        raise ValueError("values must be finite and non-negative")
    if epsilon is not None:
        if epsilon <= 0 or value_bound is None or value_bound <= 0:
            raise ValueError("Laplace noise needs epsilon > 0 and a positive value_bound")
        vals = np.minimum(vals, value_bound)
    encoded = _normalised(ids, id_kind, "lender")
    pk: PublicKey = private_key.public_key
    ints = [int(round(v * (1 << FRAC_BITS))) for v in vals]
    if ints and max(ints) * len(ints) >= 1 << (pk.n.bit_length() - COUNT_BITS - 2):
        raise ValueError("values too large to sum safely under this Paillier key")
    salt = os.urandom(32)
    link.send(Message("isum.hello", {"salt": salt.hex(), "public_key": pk.to_json(), "n": len(encoded),
                                     "min_group_size": int(min_group_size),
                                     "epsilon": float(epsilon or 0.0)}, step="isum/hello"))
    ack = link.recv("isum.hello_ack").header
    group_sizes = [int(s) for s in ack["group_sizes"]]
    minimum = max(int(min_group_size), int(ack["min_group_size"]))
    key = BlindingKey.generate()
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "big"))
    # 2-3: re-blind the platform's groups, shuffle within each group, send back.
    points, _ = _recv_points(link, "isum_platform", group_sizes, with_tokens=False,
                             transform=lambda p: key.reblind(p, workers=workers))
    for g, pts in enumerate(points):
        _send_points(link, "isum_platform_reblinded", g, pts[rng.permutation(len(pts))])
    # 4: own points with encrypted (value, 1), in random order.
    order = rng.permutation(len(encoded))
    bar = tqdm(total=len(encoded), desc="isum lender: blind and encrypt", unit="id", disable=not progress)
    for start in range(0, len(order), CHUNK):
        idx = order[start:start + CHUNK]
        pts = key.blind_ids([encoded[i] for i in idx], salt, DOMAIN, workers=workers)
        enc = pk.encrypt_raw([(ints[i] << COUNT_BITS) | 1 for i in idx], workers=workers)
        link.send(Message("isum.values", {"offset": start},
                          {"points": pts, "ciphertexts": enc.to_bigints()}, step="isum/values"))
        bar.update(len(idx))
    bar.close()
    # 6: decrypt, check, threshold, add noise, release.
    sums = pk.vector_from_bigints(link.recv("isum.sums").parts["sums"])
    if len(sums) != len(group_sizes):
        raise PsiError(f"isum.sums has {len(sums)} groups, expected {len(group_sizes)}")
    plain = private_key.decrypt_raw(sums)
    mask = (1 << COUNT_BITS) - 1
    exact = {g: (int(s) & mask, (int(s) >> COUNT_BITS) / (1 << FRAC_BITS)) for g, s in enumerate(plain)}
    if sum(c for c, _ in exact.values()) > len(encoded) or \
            any(exact[g][0] > group_sizes[g] for g in exact):
        raise PsiError("decrypted counts exceed the set sizes: the platform did not follow the protocol")
    count = np.zeros(len(exact))
    total = np.zeros(len(exact))
    suppressed = np.zeros(len(exact), dtype=bool)
    noise = np.random.default_rng(int.from_bytes(os.urandom(8), "big"))
    for g, (c, s) in exact.items():
        if c < minimum:
            suppressed[g] = True
            continue
        count[g], total[g] = float(c), s
        if epsilon:
            count[g] += noise.laplace(0.0, 2.0 / epsilon)
            total[g] += noise.laplace(0.0, 2.0 * value_bound / epsilon)
    link.send(Message("isum.release", parts={"count": count, "sum": total, "suppressed": suppressed},
                      step="isum/release"))
    released = {g: GroupAggregate(None if suppressed[g] else float(count[g]),
                                  None if suppressed[g] else float(total[g]), bool(suppressed[g]))
                for g in exact}
    return IntersectionSumResult(released, exact, {"party": "lender", "n": len(encoded),
                                                   "group_sizes": group_sizes, "min_group_size": minimum,
                                                   "epsilon": epsilon, **link.stats()})


def intersection_sum_platform(link: Link, ids: Sequence[object], groups: Sequence[object], *,
                              min_group_size: int = 10, id_kind: str = "text",
                              workers: int | None = None) -> IntersectionSumResult:
    """The platform's side: learns per group only the released count and sum (or suppression)."""
    if len(ids) != len(groups):
        raise ValueError(f"{len(ids)} ids but {len(groups)} group labels")
    encoded = _normalised(ids, id_kind, "platform")
    labels = sorted(set(groups), key=str)
    index = {g: i for i, g in enumerate(labels)}
    members: list[list[bytes]] = [[] for _ in labels]
    for item, g in zip(encoded, groups):
        members[index[g]].append(item)
    hello = link.recv("isum.hello").header
    pk = PublicKey.from_json(hello["public_key"])
    salt = bytes.fromhex(hello["salt"])
    link.send(Message("isum.hello_ack", {"group_sizes": [len(m) for m in members],
                                         "min_group_size": int(min_group_size)}, step="isum/hello_ack"))
    key = BlindingKey.generate()
    rng = np.random.default_rng(int.from_bytes(os.urandom(8), "big"))
    for g, items in enumerate(members):
        shuffled = [items[i] for i in rng.permutation(len(items))]
        _send_points(link, "isum_platform", g, key.blind_ids(shuffled, salt, DOMAIN, workers=workers))
    double, _ = _recv_points(link, "isum_platform_reblinded", [len(m) for m in members], with_tokens=False)
    group_of = {bytes(p): g for g, pts in enumerate(double) for p in pts}
    matched: list[list[Any]] = [[] for _ in labels]
    got = 0
    while got < hello["n"]:
        msg = link.recv("isum.values")
        pts, cts = msg.parts["points"], pk.vector_from_bigints(msg.parts["ciphertexts"])
        if msg.header["offset"] != got or len(cts) != len(pts):
            raise PsiError(f"isum.values out of order or ragged at offset {msg.header['offset']}")
        for i, p in enumerate(key.reblind(pts, workers=workers)):
            g = group_of.get(bytes(p))
            if g is not None:
                matched[g].append(cts.ciphertexts[i])
        got += len(pts)
    sums = []
    for cs in matched:
        vec = EncryptedVector(pk, cs).sum() if cs else pk.encrypt_raw([0])
        sums.extend(vec.obfuscate().ciphertexts)
    link.send(Message("isum.sums", parts={"sums": EncryptedVector(pk, sums).to_bigints()}, step="isum/sums"))
    rel = link.recv("isum.release").parts
    if not len(rel["count"]) == len(rel["sum"]) == len(rel["suppressed"]) == len(labels):
        raise PsiError("isum.release does not have one entry per group")
    out = {label: GroupAggregate(None if rel["suppressed"][g] else float(rel["count"][g]),
                                 None if rel["suppressed"][g] else float(rel["sum"][g]),
                                 bool(rel["suppressed"][g]))
           for g, label in enumerate(labels)}
    return IntersectionSumResult(out, stats={"party": "platform", "n": len(encoded),
                                             "lender_n": hello["n"], "epsilon": hello["epsilon"] or None,
                                             **link.stats()})


__all__ = ["intersection_sum_lender", "intersection_sum_platform", "IntersectionSumResult",
           "GroupAggregate"]
