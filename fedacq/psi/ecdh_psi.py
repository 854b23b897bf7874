"""ECDH-PSI between the lender (drives, matches) and the platform, over a ``Link``.

Balanced mode (a fresh blinding key per party per job; salt chosen by the lender):

1. lender -> platform ``psi.hello``: mode, salt, its id-column count and sizes,
   ``reveal_to``, ``min_intersection``. Platform -> lender ``psi.hello_ack``: its
   column sizes and its own ``min_intersection``.
2. Both at once, streamed in chunks: the lender sends ``H(x)^a`` for its ids (per
   column, domain-separated by column position and kind); the platform sends
   ``H(y)^b`` for its ids in a random order, each with a *token* (a random relabelling
   of platform rows, shared by all columns of a row).
3. The platform raises the lender's points to ``b`` and returns ``H(x)^ab`` in the
   same order; the lender raises the platform's points to ``a``: ``H(y)^ba``.
4. The lender matches column by column in priority order; a row (on either side)
   matched by a higher-priority column is out of the later columns, so each row
   matches at most once. The shared order is: by column, then by the doubly-blinded
   value (pseudo-random, unrelated to either side's row order).
5. If the intersection is below ``max(lender min, platform min)`` the lender sends
   ``psi.abort`` and both raise :class:`PsiError`. Otherwise ``psi.result``: the
   size, and with ``reveal_to="both"`` the matched tokens in shared order.

Unbalanced mode (platform key and salt live in a :class:`~fedacq.psi.cache.PlatformCache`):
the platform's ``H(y)^b`` set goes to the lender once per platform key (phase
``cache_set``, kept in a :class:`~fedacq.psi.cache.LenderSetStore`); online, the lender
sends ``H(x)^a``, gets ``H(x)^ab`` back, unblinds it to ``H(x)^b`` with ``a^-1`` and
looks it up in the stored set. Online cost is three scalar multiplications per
*lender* id and nothing per platform id.

Which set crosses (``transfer`` in ``psi.hello_ack``): the lender announces the key
fingerprint and the digest (:func:`~fedacq.psi.cache.set_digest`) of the copy it holds.
``none`` if that is the platform's current set; with ``incremental`` asked for and the
copy an earlier state of this key's cache (the platform updated it in place,
:meth:`~fedacq.psi.cache.PlatformCache.update`), ``delta``: the added points with
their tokens (phase ``delta_added``) and the removed tokens (``psi.removed``), sizes
announced in the ack; otherwise ``full``. After ``none`` or ``delta`` the lender checks
that its (patched) copy has the platform's digest and sizes and says so in
``psi.set_check``; on a mismatch the platform sends the full set in the same job, so a
lost or altered delta costs a transfer, never a wrong result.

What each party learns: the lender learns which of its rows are in the intersection
(and, from the points' tokens, how many platform rows have each id column; balanced:
the platform set sizes). The platform learns the lender's set sizes per column, the
intersection size, and with ``reveal_to="both"`` which of its rows are in the
intersection; with ``reveal_to="lender"`` only the size. Neither sees the other's
ids, hashes or unmatched items: only points blinded by a secret scalar cross, and
the salt makes them job-specific. Security is semi-honest (the lender could blind
ids it does not hold; any DH-PSI allows that).

Memory (10M x 10M must stay well inside 4 GB per party): ids are packed
(:class:`~fedacq.psi.ids.IdArray`, ~28 bytes per id with its row number), points
stream in 2 MiB messages and are written straight into arrays of the announced
size, and matching sorts 8-byte keys rather than 32-byte values. Python objects
per id exist only for one slice of ids at a time (normalising, hashing).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from fedacq import compute
from fedacq.crypto import dp_noise
from fedacq.crypto.ecdh import POINT_BYTES, POOL_THRESHOLD, BlindingKey, warm_pool
from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, PartSpec, register
from fedacq.psi.cache import FINGERPRINT, LenderSetStore, PlatformCache, column_domain, set_digest
from fedacq.psi.ids import PreparedIds, prepare_ids

PROTOCOL_VERSION = 1
#: payload bytes a streamed message aims at: per-message costs (framing, schema checks, a
#: ledger line) vanish at this size, and memory per message in flight stays small.
MESSAGE_TARGET_BYTES = 2 * 1024 * 1024
#: points per ``psi.points`` message (and per blinding batch): 65536 x 32 bytes = 2 MiB.
CHUNK = MESSAGE_TARGET_BYTES // POINT_BYTES
REVEAL = ("both", "lender")
MODES = ("balanced", "unbalanced")
#: how the platform's set reaches the lender in unbalanced mode (module docstring).
TRANSFERS = ("none", "delta", "full")

register(
    MessageSpec("psi.hello", header={"version": int, "mode": str, "salt": str, "kinds": list,
                                     "sizes": list, "reveal_to": str, "min_intersection": int,
                                     "have_set": str},
                optional_header={"incremental": bool, "have_digest": str}),
    MessageSpec("psi.hello_ack", header={"sizes": list, "n_rows": int, "min_intersection": int,
                                         "fingerprint": str, "salt": str, "send_set": bool},
                optional_header={"transfer": str, "set_digest": str, "added": list, "removed": list}),
    MessageSpec("psi.points", header={"phase": str, "column": int, "offset": int},
                parts={"points": PartSpec(dtypes=("uint8",), ndim=2, max_bytes=CHUNK * POINT_BYTES),
                       "tokens": PartSpec(dtypes=("int64",), ndim=1, optional=True,
                                          max_bytes=CHUNK * 8)}),
    MessageSpec("psi.result", header={"size": int},
                parts={"tokens": PartSpec(dtypes=("int64",), ndim=1, optional=True),
                       "columns": PartSpec(dtypes=("int8",), ndim=1, optional=True)}),
    MessageSpec("psi.removed", header={"column": int, "offset": int},
                parts={"tokens": PartSpec(dtypes=("int64",), ndim=1, max_bytes=CHUNK * 8)}),
    MessageSpec("psi.set_check", header={"ok": bool}),
    MessageSpec("psi.abort", header={"reason": str}),
)


class PsiError(RuntimeError):
    """The PSI job stopped (e.g. intersection below the minimum); the reason says why."""


@dataclass
class PsiResult:
    """One side's view of the intersection: ``rows[i]`` matches the peer's ``rows[i]``."""

    rows: np.ndarray
    size: int
    matched_on: np.ndarray | None = None   # id-column index per row (lender; platform if revealed)
    stats: dict[str, Any] = field(default_factory=dict)


class _Timer:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    def phase(self, name: str) -> "_Phase":
        return _Phase(self, name)


class _Phase:
    def __init__(self, timer: _Timer, name: str) -> None:
        self.timer, self.name = timer, name

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timer.times[self.name] = self.timer.times.get(self.name, 0.0) + time.perf_counter() - self.t0


def _send_points(link: Link, phase: str, column: int, points: np.ndarray,
                 tokens: np.ndarray | None = None, offset: int = 0, bar: tqdm | None = None) -> None:
    for start in range(0, len(points), CHUNK):
        parts = {"points": np.ascontiguousarray(points[start:start + CHUNK])}
        if tokens is not None:
            parts["tokens"] = np.ascontiguousarray(tokens[start:start + CHUNK])
        link.send(Message("psi.points", {"phase": phase, "column": column, "offset": offset + start},
                          parts, step=f"psi/{phase}/col{column}"))
        if bar is not None:
            bar.update(len(parts["points"]))


def _recv_points(link: Link, phase: str, sizes: list[int], *, with_tokens: bool,
                 transform=None, bar: tqdm | None = None) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Collect one phase's streamed chunks into per-column arrays (optionally transformed).

    ``sizes`` come from the peer. Arrays of those sizes are reserved but not touched: the
    OS backs their pages only as chunks are written in, so a peer that announces more
    than it sends costs address space, not memory, and no chunk is copied a second time
    (10M points: 320 MB less at the peak than collecting chunks and joining them). An
    announcement this machine cannot even reserve is refused.
    """
    try:
        points = [np.empty((size, POINT_BYTES), dtype=np.uint8) for size in sizes]
        tokens = [np.empty(size if with_tokens else 0, dtype=np.int64) for size in sizes]
    except (MemoryError, ValueError):
        raise PsiError(f"psi.points ({phase}): the peer announced {sizes} points, more than this "
                       "machine can hold") from None
    got = [0] * len(sizes)
    while got != list(sizes):
        msg = link.recv("psi.points")
        h = msg.header
        c, off = h["column"], h["offset"]
        pts = msg.parts["points"]
        if h["phase"] != phase or not 0 <= c < len(sizes) or off != got[c] or \
                pts.shape[1] != POINT_BYTES or off + len(pts) > sizes[c]:
            raise PsiError(f"psi.points out of order: expected phase {phase!r} column/offset "
                           f"{got}, got {h} with {pts.shape}")
        if with_tokens:
            toks = msg.parts.get("tokens")
            if toks is None or len(toks) != len(pts):
                raise PsiError(f"psi.points ({phase}) chunk lacks its tokens")
            tokens[c][off:off + len(pts)] = toks
        points[c][off:off + len(pts)] = transform(pts) if transform is not None else pts
        got[c] += len(pts)
        if bar is not None:
            bar.update(len(pts))
    return points, tokens


def _send_removed(link: Link, removed: list[np.ndarray]) -> None:
    for c, toks in enumerate(removed):
        for start in range(0, len(toks), CHUNK):
            link.send(Message("psi.removed", {"column": c, "offset": start},
                              {"tokens": np.ascontiguousarray(toks[start:start + CHUNK])},
                              step=f"psi/delta_removed/col{c}"))


def _recv_removed(link: Link, sizes: list[int]) -> list[np.ndarray]:
    """The removed tokens per column, in chunks of the announced (already capped) sizes."""
    out = [np.empty(size, dtype=np.int64) for size in sizes]
    got = [0] * len(sizes)
    while got != list(sizes):
        msg = link.recv("psi.removed")
        c, off, toks = msg.header["column"], msg.header["offset"], msg.parts["tokens"]
        if not 0 <= c < len(sizes) or off != got[c] or off + len(toks) > sizes[c]:
            raise PsiError(f"psi.removed out of order: expected column/offset {got}, got "
                           f"{msg.header} with {len(toks)} tokens")
        out[c][off:off + len(toks)] = toks
        got[c] += len(toks)
    return out


def _patch(stored: tuple[list[np.ndarray], list[np.ndarray]] | None, removed: list[np.ndarray],
           added: list[np.ndarray], added_tokens: list[np.ndarray]
           ) -> tuple[list[np.ndarray], list[np.ndarray]] | None:
    """The lender's copy with a delta applied, or None when the delta does not fit the copy
    (a removed token it lacks or repeated, an added token it already has)."""
    if stored is None:
        return None
    points, tokens = [], []
    for pts, toks, rem, add, add_toks in zip(*stored, removed, added, added_tokens):
        gone = np.isin(toks, rem)
        if int(gone.sum()) != len(rem) or len(np.unique(rem)) != len(rem):
            return None
        toks = np.concatenate([toks[~gone], add_toks])
        if len(np.unique(toks)) != len(toks):
            return None
        points.append(np.concatenate([pts[~gone], add]))
        tokens.append(toks)
    return points, tokens


def _counts(value: object, n: int, caps: list[int], what: str) -> list[int]:
    """Per-column counts announced by the peer: ``n`` non-negative integers, each within its cap."""
    counts = _sizes(value, what)
    if len(counts) != n or any(k > cap for k, cap in zip(counts, caps)):
        raise PsiError(f"{what}: {counts} is not {n} counts within {caps}")
    return counts


def _warm(engine: compute.Engine, n_rows: int) -> None:
    """Start this machine's blinding pool while the ids are prepared (local engine, batches that use it)."""
    if engine.name == "local" and n_rows >= POOL_THRESHOLD:
        warm_pool(getattr(engine, "workers", None))


def _sizes(value: object, what: str) -> list[int]:
    """Per-column set sizes announced by the peer: a list of non-negative integers."""
    if not isinstance(value, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                              for s in value):
        raise PsiError(f"{what}: sizes must be a list of non-negative integers")
    return list(value)


def _sort_key(points: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each point as a big-endian integer: sorts like the bytes themselves."""
    return np.ascontiguousarray(points[:, :8]).view(">u8").ravel().astype(np.uint64)


def _intersect_points(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(ia, ib)`` with ``a[ia] == b[ib]`` (rows of 32 bytes), ascending by that value.

    Why not ``np.intersect1d`` on 32-byte void values: sorting those compares bytes one call
    at a time and copies every value twice (1M x 1M: seconds and ~0.5 GB). The doubly-blinded
    values are pseudo-random, so their first 8 bytes almost always tell them apart: sort and
    match those as integers, then confirm every candidate pair on all 32 bytes. If the
    8-byte keys repeat within one side (probability ~n^2 / 2^65), fall back to the
    32-byte intersection, so the result is exactly the same in every case.
    """
    ka, kb = _sort_key(a), _sort_key(b)
    oa, ob = np.argsort(ka, kind="stable"), np.argsort(kb, kind="stable")
    sa, sb = ka[oa], kb[ob]
    del ka, kb
    if (sa[1:] == sa[:-1]).any() or (sb[1:] == sb[:-1]).any():
        va = np.ascontiguousarray(a).view(f"V{POINT_BYTES}").ravel()
        vb = np.ascontiguousarray(b).view(f"V{POINT_BYTES}").ravel()
        _, ia, ib = np.intersect1d(va, vb, assume_unique=False, return_indices=True)
        return ia.astype(np.int64), ib.astype(np.int64)
    if not len(sa) or not len(sb):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    pos = np.minimum(np.searchsorted(sb, sa), len(sb) - 1)
    hit = sb[pos] == sa
    ia, ib = oa[hit], ob[pos[hit]]
    del oa, ob, sa, sb, pos, hit
    same = np.empty(len(ia), dtype=bool)
    for start in range(0, len(ia), CHUNK):  # confirm in slices: no (n, 32) copies of both sides at once
        part = slice(start, start + CHUNK)
        same[part] = (a[ia[part]] == b[ib[part]]).all(axis=1)
    return ia[same].astype(np.int64), ib[same].astype(np.int64)


def _match(prepared: PreparedIds, own: list[np.ndarray], peer: list[np.ndarray],
           peer_tokens: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Priority matching of doubly-blinded values: (own rows, peer tokens, column) in shared order."""
    used_rows = np.zeros(prepared.n_rows, dtype=bool)
    rows_out, tokens_out, cols_out = [], [], []
    for c, col in enumerate(prepared.columns):
        own_idx = np.flatnonzero(~used_rows[col.rows])
        used_tokens = np.concatenate(tokens_out) if tokens_out else np.empty(0, dtype=np.int64)
        peer_idx = np.flatnonzero(~np.isin(peer_tokens[c], used_tokens))
        # the first column keeps every point: no copies of the (n, 32) arrays then
        a = own[c] if len(own_idx) == len(own[c]) else own[c][own_idx]
        b = peer[c] if len(peer_idx) == len(peer[c]) else peer[c][peer_idx]
        ia, ib = _intersect_points(a, b)
        rows = col.rows[own_idx[ia]]
        toks = peer_tokens[c][peer_idx[ib]]
        used_rows[rows] = True
        rows_out.append(rows)
        tokens_out.append(toks)
        cols_out.append(np.full(len(rows), c, dtype=np.int8))
    return (np.concatenate(rows_out).astype(np.int64), np.concatenate(tokens_out).astype(np.int64),
            np.concatenate(cols_out))


def psi_lender(link: Link, table: pd.DataFrame, id_columns: list[str], *, salt: bytes | None = None,
               min_intersection: int = 1, reveal_to: str = "both", mode: str = "balanced",
               set_store: str | Path | LenderSetStore | None = None, incremental: bool = False,
               kinds: dict[str, str] | None = None, duplicates: str = "first",
               workers: int | None = None, engine: compute.Engine | None = None,
               progress: bool = False) -> PsiResult:
    """The lender's side of ECDH-PSI; returns its rows of the intersection in shared order.

    ``mode="unbalanced"`` uses the platform's cached blinded set, kept by the lender in
    ``set_store`` (a folder) between jobs; ``incremental=True`` accepts a delta of it.
    Blinding runs on ``engine`` (default: the party's active engine, or a local one with
    ``workers`` processes); the lender's blinding key goes to that engine's workers only
    (:mod:`fedacq.compute`).
    """
    engine = compute.choose(engine, workers)
    _warm(engine, len(table))
    if reveal_to not in REVEAL:
        raise ValueError(f"reveal_to must be one of {REVEAL}, got {reveal_to!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if mode == "unbalanced" and set_store is None:
        raise ValueError("unbalanced PSI needs set_store (where the lender keeps the platform's set)")
    if incremental and mode != "unbalanced":
        raise ValueError("incremental PSI needs mode='unbalanced' (only the platform's cached set is reused)")
    store = LenderSetStore(set_store) if isinstance(set_store, (str, Path)) else set_store
    timer = _Timer()
    with timer.phase("prepare"):
        prepared = prepare_ids(table, id_columns, kinds=kinds, duplicates=duplicates, source="lender table")
    salt_bytes = b""
    if mode == "balanced":
        salt_bytes = salt if salt is not None else os.urandom(32)
    sizes = [len(c.rows) for c in prepared.columns]
    have = store.fingerprints() if store else []
    link.send(Message("psi.hello", {
        "version": PROTOCOL_VERSION, "mode": mode, "salt": salt_bytes.hex(),
        "kinds": [c.kind for c in prepared.columns], "sizes": sizes, "reveal_to": reveal_to,
        "min_intersection": int(min_intersection),
        "have_set": ",".join(have), "incremental": bool(incremental),
        "have_digest": store.digest(have[-1]) if have else ""}, step="psi/hello"))
    ack = link.recv("psi.hello_ack").header
    peer_sizes = _sizes(ack["sizes"], "psi.hello_ack")
    if len(peer_sizes) != len(sizes):
        raise PsiError(f"platform has {len(peer_sizes)} id columns, lender {len(sizes)}")
    transfer, set_received, resent = "balanced", sum(peer_sizes), False
    if mode == "unbalanced":
        transfer = ack.get("transfer", "full" if ack["send_set"] else "none")
        if transfer not in TRANSFERS or (transfer == "delta" and not incremental):
            raise PsiError(f"psi.hello_ack: transfer {transfer!r} was not offered")
        if not FINGERPRINT.match(ack["fingerprint"]):
            raise PsiError(f"psi.hello_ack: platform key fingerprint {ack['fingerprint']!r} is not 16 hex digits")
        try:
            salt_bytes = bytes.fromhex(ack["salt"])
        except ValueError:
            raise PsiError("psi.hello_ack: salt is not hex") from None
    key = BlindingKey.generate()
    total = sum(sizes)
    bar = tqdm(total=total, desc="psi lender: blind own ids", unit="id", disable=not progress)
    with timer.phase("blind_own"):
        for c, col in enumerate(prepared.columns):
            for start in range(0, len(col.values), CHUNK):
                pts = engine.blind_ids(key, col.values[start:start + CHUNK], salt_bytes,
                                       column_domain(c, col.kind))
                _send_points(link, "lender_blinded", c, pts, offset=start, bar=bar)
    bar.close()
    if mode == "balanced":
        bar = tqdm(total=sum(peer_sizes), desc="psi lender: re-blind platform", unit="id",
                   disable=not progress)
        with timer.phase("reblind_peer"):
            peer, peer_tokens = _recv_points(link, "platform_blinded", peer_sizes, with_tokens=True,
                                             transform=lambda p: engine.reblind(key, p), bar=bar)
        bar.close()
    else:
        fingerprint = ack["fingerprint"]
        if transfer == "full":
            with timer.phase("offline_receive_set"):
                peer, peer_tokens = _recv_points(link, "cache_set", peer_sizes, with_tokens=True)
                store.put(fingerprint, peer, peer_tokens)
        else:
            stored = store.get(fingerprint) if fingerprint in have else None
            if transfer == "delta":
                with timer.phase("receive_delta"):
                    held = [len(t) for t in stored[1]] if stored else [0] * len(sizes)
                    added_n = _counts(ack.get("added"), len(sizes), peer_sizes, "psi.hello_ack added")
                    removed_n = _counts(ack.get("removed"), len(sizes), held, "psi.hello_ack removed")
                    added, added_tokens = _recv_points(link, "delta_added", added_n, with_tokens=True)
                    removed = _recv_removed(link, removed_n)
                    stored = _patch(stored, removed, added, added_tokens)
            set_received = sum(added_n) if transfer == "delta" else 0
    bar = tqdm(total=total, desc="psi lender: receive own double-blinded", unit="id", disable=not progress)
    with timer.phase("receive_own"):
        transform = (lambda p: engine.unblind(key, p)) if mode == "unbalanced" else None
        own, _ = _recv_points(link, "lender_reblinded", sizes, with_tokens=False, transform=transform, bar=bar)
    bar.close()
    if transfer in ("none", "delta"):
        ok = stored is not None and [len(t) for t in stored[1]] == peer_sizes and \
            set_digest(*stored) == ack.get("set_digest")
        link.send(Message("psi.set_check", {"ok": ok}, step="psi/set_check"))
        if ok:
            peer, peer_tokens = stored
            if transfer == "delta":
                store.put(fingerprint, peer, peer_tokens)
        else:
            with timer.phase("offline_receive_set"):
                peer, peer_tokens = _recv_points(link, "cache_set", peer_sizes, with_tokens=True)
                store.put(fingerprint, peer, peer_tokens)
            set_received, resent = set_received + sum(peer_sizes), True
    with timer.phase("match"):
        rows, tokens, columns = _match(prepared, own, peer, peer_tokens)
    needed = max(int(min_intersection), int(ack["min_intersection"]))
    if len(rows) < needed:
        reason = f"intersection of {len(rows)} is below the minimum of {needed}"
        link.send(Message("psi.abort", {"reason": reason}, step="psi/abort"))
        raise PsiError(reason)
    parts = {"tokens": tokens, "columns": columns} if reveal_to == "both" else {}
    link.send(Message("psi.result", {"size": len(rows)}, parts, step="psi/result"))
    stats = {"party": "lender", "mode": mode, "n_rows": prepared.n_rows, "ids": prepared.stats(),
             "transfer": transfer, "resent_full_set": resent, "ids_blinded": total,
             "set_points_received": set_received,
             "peer_sizes": dict(zip(id_columns, peer_sizes)), "intersection": len(rows),
             "matched_by_column": {id_columns[c]: int((columns == c).sum()) for c in range(len(sizes))},
             "reveal_to": reveal_to, "seconds": timer.times, **link.stats()}
    return PsiResult(rows=rows, size=len(rows), matched_on=columns, stats=stats)


def psi_platform(link: Link, table: pd.DataFrame, id_columns: list[str], *,
                 cache: PlatformCache | str | Path | None = None, min_intersection: int = 1,
                 kinds: dict[str, str] | None = None, duplicates: str = "first",
                 workers: int | None = None, engine: compute.Engine | None = None, progress: bool = False,
                 expect: dict[str, object] | None = None) -> PsiResult:
    """The platform's side of ECDH-PSI; returns its rows in shared order (empty if not revealed).

    ``expect`` holds the ``mode``, ``reveal_to`` and ``incremental`` the platform agreed
    to (a node's job); a ``psi.hello`` asking for anything else is refused before any work. The
    platform also stops at once when the lender's sets cannot reach ``min_intersection``.
    Blinding runs on ``engine`` as in :func:`psi_lender`.
    """
    engine = compute.choose(engine, workers)
    _warm(engine, len(table))
    timer = _Timer()
    hello = link.recv("psi.hello").header
    if hello["version"] != PROTOCOL_VERSION:
        raise PsiError(f"lender speaks PSI version {hello['version']}, platform {PROTOCOL_VERSION}")
    mode = hello["mode"]
    if mode not in MODES or hello["reveal_to"] not in REVEAL:
        raise PsiError(f"psi.hello: unknown mode {mode!r} or reveal_to {hello['reveal_to']!r}")
    incremental = hello.get("incremental", False)
    for key, agreed in (expect or {}).items():
        if hello.get(key, False) != agreed:
            raise PsiError(f"psi.hello: the lender asks for {key}={hello.get(key, False)!r}, "
                           f"the job agreed {agreed!r}")
    if incremental and mode != "unbalanced":
        raise PsiError("psi.hello: incremental PSI needs mode 'unbalanced'")
    lender_sizes = _sizes(hello["sizes"], "psi.hello")
    delta = None
    if len(lender_sizes) != len(id_columns):
        raise PsiError(f"lender has {len(lender_sizes)} id columns, platform {len(id_columns)}")
    if sum(lender_sizes) < min_intersection:
        raise PsiError(f"psi.hello: the lender has {sum(lender_sizes)} ids, fewer than the platform's "
                       f"minimum intersection of {min_intersection}")
    if mode == "unbalanced":
        if cache is None:
            raise PsiError("the lender asked for unbalanced PSI but the platform has no PSI cache")
        if not isinstance(cache, PlatformCache):
            cache = PlatformCache.load(cache)
        cache.check_table(table, id_columns)
        key, salt = cache.key, cache.salt
        peer_points, peer_tokens, rows_by_token = cache.points, cache.tokens, cache.rows_by_token
        kinds_used = cache.kinds
        if cache.fingerprint not in hello["have_set"].split(","):
            transfer = "full"
        elif hello.get("have_digest") == cache.set_digest:
            transfer = "none"
        elif incremental and (delta := cache.delta_since(hello.get("have_digest", ""))) is not None:
            transfer = "delta"
        else:
            transfer = "full"
        n_rows = cache.n_rows
    else:
        with timer.phase("prepare"):
            prepared = prepare_ids(table, id_columns, kinds=kinds, duplicates=duplicates,
                                   source="platform table")
        key, salt = BlindingKey.generate(), bytes.fromhex(hello["salt"])
        rows_by_token = dp_noise.permutation(prepared.n_rows)
        token_of_row = np.empty_like(rows_by_token)
        token_of_row[rows_by_token] = np.arange(prepared.n_rows, dtype=np.int64)
        kinds_used = [c.kind for c in prepared.columns]
        transfer = "balanced"
        n_rows = prepared.n_rows
    if list(hello["kinds"]) != kinds_used:
        raise PsiError(f"id column kinds differ: lender {hello['kinds']}, platform {kinds_used}")
    sizes = [len(p) for p in peer_points] if mode == "unbalanced" else [len(c.rows) for c in prepared.columns]
    ack = {"sizes": sizes, "n_rows": n_rows, "min_intersection": int(min_intersection),
           "fingerprint": key.fingerprint if mode == "unbalanced" else "",
           "salt": salt.hex() if mode == "unbalanced" else "", "send_set": transfer == "full"}
    if mode == "unbalanced":
        ack.update(transfer=transfer, set_digest=cache.set_digest)
    if delta is not None:
        ack.update(added=[len(t) for t in delta[2]], removed=[len(t) for t in delta[0]])
    link.send(Message("psi.hello_ack", ack, step="psi/hello_ack"))
    set_sent = sum(sizes) if transfer == "full" else 0
    if mode == "balanced":
        bar = tqdm(total=sum(sizes), desc="psi platform: blind own ids", unit="id", disable=not progress)
        with timer.phase("blind_own"):
            for c, col in enumerate(prepared.columns):
                toks = token_of_row[col.rows]
                order = np.argsort(toks, kind="stable")
                for start in range(0, len(order), CHUNK):
                    idx = order[start:start + CHUNK]
                    pts = engine.blind_ids(key, col.values.take(idx), salt, column_domain(c, col.kind))
                    _send_points(link, "platform_blinded", c, pts, toks[idx], offset=start, bar=bar)
        bar.close()
    elif transfer == "full":
        with timer.phase("offline_send_set"):
            for c in range(len(sizes)):
                _send_points(link, "cache_set", c, peer_points[c], peer_tokens[c])
    elif transfer == "delta":
        with timer.phase("send_delta"):
            removed, added, added_tokens = delta
            for c in range(len(sizes)):
                _send_points(link, "delta_added", c, added[c], added_tokens[c])
            _send_removed(link, removed)
        set_sent = sum(len(a) for a in added)
    bar = tqdm(total=sum(lender_sizes), desc="psi platform: re-blind lender ids", unit="id",
               disable=not progress)
    with timer.phase("reblind_peer"):
        got = [0] * len(lender_sizes)
        while got != lender_sizes:
            msg = link.recv("psi.points")
            h, pts = msg.header, msg.parts["points"]
            c = h["column"]
            if h["phase"] != "lender_blinded" or not 0 <= c < len(got) or h["offset"] != got[c] \
                    or got[c] + len(pts) > lender_sizes[c]:
                raise PsiError(f"psi.points out of order from the lender: {h}")
            _send_points(link, "lender_reblinded", c, engine.reblind(key, pts), offset=got[c])
            got[c] += len(pts)
            bar.update(len(pts))
    bar.close()
    resent = False
    if transfer in ("none", "delta"):
        check = link.recv(("psi.set_check", "psi.abort"))
        if check.type == "psi.set_check" and not check.header["ok"]:
            with timer.phase("offline_send_set"):
                for c in range(len(sizes)):
                    _send_points(link, "cache_set", c, peer_points[c], peer_tokens[c])
            set_sent, resent = set_sent + sum(sizes), True
        elif check.type == "psi.abort":
            raise PsiError(f"lender stopped the PSI: {check.header['reason']}")
    with timer.phase("wait_result"):
        msg = link.recv(("psi.result", "psi.abort"))
    if msg.type == "psi.abort":
        raise PsiError(f"lender stopped the PSI: {msg.header['reason']}")
    size = int(msg.header["size"])
    if size < min_intersection:
        raise PsiError(f"intersection of {size} is below the platform's minimum of {min_intersection}")
    tokens = msg.parts.get("tokens")
    if tokens is not None:
        if len(tokens) != size or (size and (tokens.min() < 0 or tokens.max() >= len(rows_by_token))):
            raise PsiError("psi.result tokens do not match the platform's rows")
        rows = rows_by_token[tokens]
        if size and rows.min() < 0:
            raise PsiError("psi.result names a token whose row has left the platform's table")
        if len(np.unique(rows)) != len(rows):
            raise PsiError("psi.result matches a platform row twice")
        matched_on = msg.parts.get("columns")
    else:
        rows, matched_on = np.empty(0, dtype=np.int64), None
    stats = {"party": "platform", "mode": mode, "n_rows": n_rows, "lender_sizes": lender_sizes,
             "transfer": transfer, "resent_full_set": resent, "set_points_sent": set_sent,
             "set_tokens_removed": sum(len(t) for t in delta[0]) if delta is not None else 0,
             "ids_blinded": sum(sizes) if mode == "balanced" else 0,  # unbalanced: the cache's (node)
             "intersection": size, "revealed": tokens is not None, "seconds": timer.times, **link.stats()}
    if mode == "balanced":
        stats["ids"] = prepared.stats()
    return PsiResult(rows=rows.astype(np.int64), size=size, matched_on=matched_on, stats=stats)


__all__ = ["psi_lender", "psi_platform", "PsiResult", "PsiError"]
