"""Private intersection-sum (after Google's Private Join and Compute), with groups and several columns.

The platform holds ids with a group label (an experiment bucket); the lender holds ids
with ``k >= 1`` non-negative values each (e.g. credit granted, drawdown amount) and the
private key of an additive homomorphic scheme (Paillier, or Okamoto–Uchiyama where
both nodes' policies list ``"ou"``: :mod:`fedacq.crypto.scheme`). The platform should learn, per group, the number of its ids the
lender also has and the sum of each value column over them — and nothing about any
single user. One run serves every column: the ids are blinded and matched once, and
each lender id's count and ``k`` values travel packed in *one* plaintext.

Steps (ECDH blinding as in :mod:`fedacq.psi.ecdh_psi`, fresh keys ``a``, ``b`` per job):

1. lender -> platform ``isum.hello``: salt, the scheme and public key, the lender's
   set size ``n``, the number of value columns ``k``, its ``min_group_size`` and the
   ``epsilon`` of each column. The platform parses the key only as a scheme it
   accepts (for a node job: the one the job agreed) and refuses a key under its own
   ``min_key_bits``. Platform -> lender ``isum.hello_ack``: group sizes
   (by group index; labels stay with the platform) and its own requested minimum.
2. Platform -> lender ``psi.points`` (phase ``isum_platform``): ``H(y)^b`` for all its
   ids, group after group, shuffled within each group, streamed in chunks of
   ~2 MiB (65536 points) whatever the number of groups.
3. Lender -> platform ``psi.points`` (phase ``isum_platform_reblinded``): those
   points raised to ``a`` (``H(y)^ba``), shuffled again within each group, so the
   platform cannot link them back to its rows.
4. Lender -> platform ``isum.values``: ``H(x)^a`` for its ids, in random order, each
   with ``Enc(1 | v_1 | ... | v_k)``: a count of one and the ``k`` fixed-point
   values (:data:`FRAC_BITS` fractional bits) in the slots of a
   :class:`~fedacq.crypto.paillier.Packing` whose guard bits hold a sum over the
   largest group. Messages carry ~2 MiB each (:func:`rows_per_message`).
5. Platform: raises the lender's points to ``b``, finds which of them equal a
   ``H(y)^ba`` of group g, homomorphically sums those ciphertexts per group,
   re-randomises, sends ``isum.sums``: one ciphertext per group.
6. Lender decrypts (an OU sum outside the plaintext bound, which only a forged or
   overflowed ciphertext gives, is refused: the job fails and nothing is released),
   unpacks, checks the counts, and, if ``epsilon`` is set, adds
   Laplace noise (:func:`release`); it then **enforces** the minimum group size
   (``max`` of both sides' minimum) *on the noisy count*, and sends
   ``isum.release``: per group the count, the ``k`` sums and a *suppressed*
   flag; suppressed groups carry no numbers at all (zeros).

Suppression: with noise, a group is suppressed when its *noisy* count is below the
minimum, so the decision is post-processing of the noisy count and costs no privacy
budget beyond it. Deciding on the exact count (as this module first did) leaks
through the released flag: a group of ``minimum - 1`` ids the lender has plus one
target is released exactly when the target is a lender customer. Without noise
(``epsilon=None``) the rule is the exact one, count below minimum, and says so.

Noise: values of column j are clipped to ``value_bound[j]``. Column j's sum gets
Laplace noise of scale ``value_bound[j] / (epsilon[j] / 2)``; the one count gets scale
``1 / (sum(epsilon) / 2)``: half of every column's budget pays for the shared count.
All noise comes from the OS CSPRNG (:mod:`fedacq.crypto.dp_noise`), as do the
shuffles. The run spends ``sum(epsilon)`` in total per group (groups are disjoint), exactly what
``k`` single-column runs with the same epsilons spent, with less noise on the count.
With ``k = 1`` this is the single-value protocol: count scale ``2 / epsilon``, sum
scale ``2 * value_bound / epsilon``.

Who learns what: the platform learns the lender's set size and number of columns,
the **exact number of matches per group** (it does the matching in step 5 and knows
each re-blinded point's group: inherent in this Private-Join-and-Compute shape, so
a platform that chooses its groups, e.g. one target padded with ids it made up,
learns whether that target is a lender customer), and per group only the released
(noisy, thresholded) ``k`` sums. The lender learns the number of groups and the
platform's per-group set sizes, and the exact per-group counts and sums before
release (aggregates of its own values); it never sees which of its ids matched or
their groups. The minimum and the noise protect the lender's values (and the counts
against whoever sees only the release), so the lender applies them after
decryption: the platform cannot skip them. Packing several columns changes none of
this: the platform only ever holds ciphertexts, and the lender decrypts one per group.

Security model: semi-honest. A platform that deviates could add one lender
ciphertext several times to inflate a count; the lender checks that decrypted
counts stay within its own set size and the group sizes (which also keeps every
packed slot within its guard bits), which bounds but does not exclude this. A
malicious-secure variant needs zero-knowledge proofs of the sums.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Sequence

import gmpy2
import numpy as np
from tqdm import tqdm

from fedacq.crypto import dp_noise
from fedacq.crypto.ecdh import POINT_BYTES, BlindingKey
from fedacq.crypto.paillier import MIN_KEY_BITS, EncryptedVector, Packing
from fedacq.crypto.scheme import AdditivePrivateKey, AdditivePublicKey, peer_public_key
from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, PartSpec, register
from fedacq.psi.ecdh_psi import CHUNK, MESSAGE_TARGET_BYTES, PsiError, _recv_points, _send_points
from fedacq.psi.ids import normalize_value

#: fractional bits of the fixed-point values (a cent is ~2^-7: 16 bits keep sums exact to 2^-16).
FRAC_BITS = 16
DOMAIN = b"fedacq/intersection-sum"
#: schema bounds: value columns per run, and bytes of ciphertexts in one ``isum.values``.
MAX_COLUMNS = 64
MAX_VALUES_BYTES = 4 * MESSAGE_TARGET_BYTES

register(
    MessageSpec("isum.hello", header={"salt": str, "scheme": str, "public_key": str, "n": int, "columns": int,
                                      "min_group_size": int, "epsilon": list}),
    MessageSpec("isum.hello_ack", header={"group_sizes": list, "min_group_size": int}),
    MessageSpec("isum.values", header={"offset": int},
                parts={"points": PartSpec(dtypes=("uint8",), ndim=2, max_bytes=CHUNK * POINT_BYTES),
                       "ciphertexts": PartSpec(kind="bigints", max_bytes=MAX_VALUES_BYTES)}),
    MessageSpec("isum.sums", parts={"sums": PartSpec(kind="bigints")}),
    MessageSpec("isum.release", parts={"count": PartSpec(dtypes=("float64",), ndim=1),
                                       "sum": PartSpec(dtypes=("float64",), ndim=2),
                                       "suppressed": PartSpec(dtypes=("bool",), ndim=1)}),
)


@dataclass
class GroupAggregate:
    """One group's released (or, in ``exact``, true) count and per-column sums."""

    count: float | None
    sums: tuple[float, ...] | None
    suppressed: bool

    @property
    def sum(self) -> float | None:
        """The sum of a single-column run (read ``sums`` when several columns were summed)."""
        if self.sums is None:
            return None
        if len(self.sums) != 1:
            raise ValueError(f"this run summed {len(self.sums)} columns: read .sums")
        return self.sums[0]


@dataclass
class IntersectionSumResult:
    """Per group (platform: by label; lender: by group index) what that side learned."""

    groups: dict[Any, GroupAggregate]
    exact: dict[int, GroupAggregate] = field(default_factory=dict)  # lender only, before release
    stats: dict[str, Any] = field(default_factory=dict)


def rows_per_message(ciphertext_bytes: int) -> int:
    """Lender ids per ``isum.values`` message: ~:data:`MESSAGE_TARGET_BYTES` of point + ciphertext.

    Per-message overhead (framing, schema checks, a ledger line, a gRPC round of
    frames) is paid per message, so messages should be large; the schema bounds
    them, and the platform works on one message at a time, so not too large.
    """
    return max(1, min(CHUNK, MESSAGE_TARGET_BYTES // (POINT_BYTES + ciphertext_bytes)))


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


def _per_column(value: float | Sequence[float] | None, k: int, name: str) -> np.ndarray | None:
    """A scalar applies to every column; a sequence must name one value per column."""
    if value is None:
        return None
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1 or len(arr) not in (1, k):
        raise ValueError(f"{name} must be one number or one per value column ({k}), got {value!r}")
    return np.broadcast_to(arr, (k,)).copy()


def _group_bounds(sizes: list[int]) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])


def release(counts: np.ndarray, sums: np.ndarray, minimum: int, epsilon: np.ndarray | None,
            value_bound: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What the lender releases per group: (count, sums, suppressed), noised then thresholded.

    With ``epsilon``: the count gets Laplace noise of scale ``2 / sum(epsilon)``,
    column j's sum scale ``2 * value_bound[j] / epsilon[j]``, and a group is
    suppressed when its *noisy* count is below ``minimum``: the exact count is
    never compared with anything. Without: exact values, suppressed when the
    exact count is below ``minimum``. Suppressed groups carry zeros.
    """
    count = np.array(counts, dtype=np.float64)
    total = np.array(sums, dtype=np.float64)
    if epsilon is not None:
        count = count + dp_noise.laplace(2.0 / float(np.sum(epsilon)), count.shape)
        total = total + dp_noise.laplace(2.0 * np.asarray(value_bound) / np.asarray(epsilon), total.shape)
    suppressed = count < minimum
    count[suppressed] = 0.0
    total[suppressed] = 0.0
    return count, total, suppressed


def intersection_sum_lender(link: Link, ids: Sequence[object], values: Sequence[float] | np.ndarray, *,
                            private_key: AdditivePrivateKey, min_group_size: int = 10,
                            epsilon: float | Sequence[float] | None = None,
                            value_bound: float | Sequence[float] | None = None,
                            id_kind: str = "text", workers: int | None = None,
                            progress: bool = False) -> IntersectionSumResult:
    """The lender's side: supplies encrypted values, enforces the minimum and the noise.

    ``values`` is one value per id (shape ``(n,)``) or a matrix ``(n, k)``: ``k``
    columns summed in the same run. ``epsilon`` and ``value_bound`` are one number
    for all columns or one per column (see the module docstring for the noise).
    The scheme is the private key's (``private_key.public_key.scheme``).
    """
    matrix = np.asarray(values, dtype=np.float64)
    if matrix.ndim == 1:
        matrix = matrix.reshape(-1, 1)
    if matrix.ndim != 2 or matrix.shape[0] != len(ids):
        raise ValueError(f"{len(ids)} ids but values of shape {np.shape(values)}: need (n,) or (n, k)")
    k = matrix.shape[1]
    if not 1 <= k <= MAX_COLUMNS:
        raise ValueError(f"values must have 1 to {MAX_COLUMNS} columns, got {k}")
    if not np.isfinite(matrix).all() or (matrix < 0).any():
        raise ValueError("values must be finite and non-negative")
    eps = _per_column(epsilon, k, "epsilon")
    bounds = _per_column(value_bound, k, "value_bound")
    if eps is not None:
        if (eps <= 0).any() or bounds is None or (bounds <= 0).any():
            raise ValueError("Laplace noise needs epsilon > 0 and a positive value_bound for every column")
        matrix = np.minimum(matrix, bounds)
    encoded = _normalised(ids, id_kind, "lender")
    n = len(encoded)
    pk: AdditivePublicKey = private_key.public_key
    scaled = np.rint(np.ldexp(matrix, FRAC_BITS))
    if scaled.size and scaled.max() >= 2.0 ** 62:
        raise ValueError(f"values up to {matrix.max():g} are too large for {FRAC_BITS} fractional bits")
    ints = np.hstack([np.ones((n, 1), dtype=np.int64), scaled.astype(np.int64)])
    slot_bits = max(1, int(ints.max(initial=1)).bit_length())
    try:  # a group sums at most n ids: checked before anything is sent
        Packing(slot_bits, k + 1, max(1, n)).check_key(pk)
    except ValueError as exc:
        raise ValueError(f"{n} ids with {k} value column(s) of up to {slot_bits} bits do not fit "
                         f"one plaintext of this {pk.scheme} key: {exc}") from None
    salt = os.urandom(32)
    link.send(Message("isum.hello", {"salt": salt.hex(), "scheme": pk.scheme, "public_key": pk.to_json(),
                                     "n": n, "columns": k,
                                     "min_group_size": int(min_group_size),
                                     "epsilon": [0.0] * k if eps is None else eps.tolist()},
                      step="isum/hello"))
    ack = link.recv("isum.hello_ack").header
    if not all(type(s) is int and s >= 0 for s in ack["group_sizes"]) or type(ack["min_group_size"]) is not int:
        raise PsiError("isum.hello_ack: group sizes and the minimum must be non-negative integers")
    group_sizes = list(ack["group_sizes"])
    minimum = max(int(min_group_size), ack["min_group_size"])
    packing = Packing(slot_bits, k + 1, max(1, min(n, max(group_sizes, default=0))))
    key = BlindingKey.generate()
    # 2-3: re-blind the platform's points as they arrive, shuffle within each group, send back.
    (points,), _ = _recv_points(link, "isum_platform", [sum(group_sizes)], with_tokens=False,
                                transform=lambda p: key.reblind(p, workers=workers))
    bounds_g = _group_bounds(group_sizes)
    order = np.concatenate([lo + dp_noise.permutation(hi - lo) for lo, hi in zip(bounds_g[:-1], bounds_g[1:])]
                           + [np.empty(0, dtype=np.int64)]).astype(np.int64)
    _send_points(link, "isum_platform_reblinded", 0, points[order])
    # 4: own points with the encrypted packed (count, values), in random order.
    order = dp_noise.permutation(n)
    per_message = rows_per_message(pk.ciphertext_bytes)
    bar = tqdm(total=n, desc="isum lender: blind and encrypt", unit="id", disable=not progress)
    for start in range(0, n, CHUNK):
        idx = order[start:start + CHUNK]
        pts = key.blind_ids([encoded[i] for i in idx], salt, DOMAIN, workers=workers)
        cts = private_key.encrypt_raw(packing.pack(ints[idx]), workers=workers)
        for sub in range(0, len(idx), per_message):
            part = EncryptedVector(pk, cts.ciphertexts[sub:sub + per_message])
            link.send(Message("isum.values", {"offset": start + sub},
                              {"points": pts[sub:sub + per_message], "ciphertexts": part.to_bigints()},
                              step="isum/values"))
        bar.update(len(idx))
    bar.close()
    # 6: decrypt, check, threshold, add noise, release.
    sums = pk.vector_from_bigints(link.recv("isum.sums").parts["sums"])
    if len(sums) != len(group_sizes):
        raise PsiError(f"isum.sums has {len(sums)} groups, expected {len(group_sizes)}")
    try:
        slots = packing.unpack(private_key.decrypt_raw(sums, workers=workers))
    except ValueError as exc:
        raise PsiError(f"isum.sums: {exc}: the platform did not follow the protocol") from None
    counts = [int(c) for c in slots[:, 0]]
    if sum(counts) > n or any(c > s for c, s in zip(counts, group_sizes)):
        raise PsiError("decrypted counts exceed the set sizes: the platform did not follow the protocol")
    exact_sums = np.array([[int(v) for v in row[1:]] for row in slots], dtype=np.float64).reshape(-1, k)
    exact_sums /= 1 << FRAC_BITS
    count, total, suppressed = release(np.array(counts), exact_sums, minimum, eps, bounds)
    link.send(Message("isum.release", parts={"count": count, "sum": total, "suppressed": suppressed},
                      step="isum/release"))
    released = {g: GroupAggregate(None if suppressed[g] else float(count[g]),
                                  None if suppressed[g] else tuple(map(float, total[g])), bool(suppressed[g]))
                for g in range(len(group_sizes))}
    exact = {g: GroupAggregate(float(counts[g]), tuple(map(float, exact_sums[g])), bool(suppressed[g]))
             for g in range(len(group_sizes))}  # suppressed: the released decision (on the noisy count)
    return IntersectionSumResult(released, exact, {"party": "lender", "n": n, "columns": k,
                                                   "group_sizes": group_sizes, "min_group_size": minimum,
                                                   "epsilon": None if eps is None else eps.tolist(),
                                                   **link.stats()})


def intersection_sum_platform(link: Link, ids: Sequence[object], groups: Sequence[object], *,
                              min_group_size: int = 10, id_kind: str = "text",
                              workers: int | None = None, min_key_bits: int = MIN_KEY_BITS,
                              schemes: Sequence[str] = ("paillier",)) -> IntersectionSumResult:
    """The platform's side: learns per group only the released count and sums (or suppression).

    ``schemes`` are the schemes this party accepts (its policy's, or for a node
    job the one scheme the job agreed) and ``min_key_bits`` its own floor for
    the lender's key: ``isum.hello`` announcing another scheme, or a key that
    does not parse as the announced scheme or is shorter, is refused before
    anything is sent.
    """
    if len(ids) != len(groups):
        raise ValueError(f"{len(ids)} ids but {len(groups)} group labels")
    encoded = _normalised(ids, id_kind, "platform")
    labels = sorted(set(groups), key=str)
    index = {g: i for i, g in enumerate(labels)}
    members: list[list[bytes]] = [[] for _ in labels]
    for item, g in zip(encoded, groups):
        members[index[g]].append(item)
    sizes = [len(m) for m in members]
    hello = link.recv("isum.hello").header
    try:
        pk = peer_public_key(hello["public_key"], scheme=hello["scheme"], allowed=tuple(schemes),
                             min_bits=min_key_bits, what="isum.hello")
    except ValueError as exc:
        raise PsiError(str(exc)) from None
    try:
        salt = bytes.fromhex(hello["salt"])
    except ValueError as exc:
        raise PsiError(f"isum.hello: malformed salt: {exc}") from None
    k = hello["columns"]
    if not 1 <= k <= MAX_COLUMNS or len(hello["epsilon"]) != k or hello["n"] < 0:
        raise PsiError(f"isum.hello: {k} columns with {len(hello['epsilon'])} epsilons and {hello['n']} ids")
    if not all(type(e) in (int, float) and e >= 0 for e in hello["epsilon"]):
        raise PsiError(f"isum.hello: epsilons must be non-negative numbers, got {hello['epsilon']}")
    link.send(Message("isum.hello_ack", {"group_sizes": sizes, "min_group_size": int(min_group_size)},
                      step="isum/hello_ack"))
    key = BlindingKey.generate()
    shuffled = [m[i] for m in members for i in dp_noise.permutation(len(m))]
    for start in range(0, len(shuffled), CHUNK):
        _send_points(link, "isum_platform", 0, key.blind_ids(shuffled[start:start + CHUNK], salt, DOMAIN,
                                                             workers=workers), offset=start)
    (double,), _ = _recv_points(link, "isum_platform_reblinded", [len(shuffled)], with_tokens=False)
    # Look-up table of H(y)^ba: sorted 32-byte values with their group index.
    group_of_row = np.repeat(np.arange(len(labels), dtype=np.int64), sizes)
    table = np.ascontiguousarray(double).view(f"V{POINT_BYTES}").ravel()
    by_value = np.argsort(table, kind="stable")
    table, group_of_row = table[by_value], group_of_row[by_value]
    nsq = pk.ciphertext_modulus
    acc = [gmpy2.mpz(1)] * len(labels)  # 1 is a (trivial) encryption of 0; obfuscated below
    got = 0
    while got < hello["n"]:
        msg = link.recv("isum.values")
        pts, cts = msg.parts["points"], pk.vector_from_bigints(msg.parts["ciphertexts"])
        if msg.header["offset"] != got or len(cts) != len(pts) or got + len(pts) > hello["n"]:
            raise PsiError(f"isum.values out of order or ragged at offset {msg.header['offset']}")
        mine = np.ascontiguousarray(key.reblind(pts, workers=workers)).view(f"V{POINT_BYTES}").ravel()
        pos = np.minimum(np.searchsorted(table, mine), max(len(table) - 1, 0))
        hit = np.flatnonzero(table[pos] == mine) if len(table) else np.empty(0, dtype=np.int64)
        for i, g in zip(hit.tolist(), group_of_row[pos[hit]].tolist()):
            acc[g] = acc[g] * cts.ciphertexts[i] % nsq
        got += len(pts)
    sums = EncryptedVector(pk, acc).obfuscate()
    link.send(Message("isum.sums", parts={"sums": sums.to_bigints()}, step="isum/sums"))
    rel = link.recv("isum.release").parts
    if not len(rel["count"]) == len(rel["sum"]) == len(rel["suppressed"]) == len(labels) \
            or rel["sum"].shape[1:] != (k,):
        raise PsiError(f"isum.release does not have one entry per group ({len(labels)}) and {k} sums each")
    out = {label: GroupAggregate(None if rel["suppressed"][g] else float(rel["count"][g]),
                                 None if rel["suppressed"][g] else tuple(map(float, rel["sum"][g])),
                                 bool(rel["suppressed"][g]))
           for g, label in enumerate(labels)}
    eps = [float(e) for e in hello["epsilon"]]
    return IntersectionSumResult(out, stats={"party": "platform", "n": len(encoded), "columns": k,
                                             "lender_n": hello["n"], "epsilon": eps if any(eps) else None,
                                             **link.stats()})


__all__ = ["intersection_sum_lender", "intersection_sum_platform", "IntersectionSumResult",
           "GroupAggregate", "release", "rows_per_message"]
