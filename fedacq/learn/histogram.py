"""Packed gradient encoding (lender) and the encrypted histogram kernel (platform).

Packing (lender side, :class:`GradientCodec`)
    Each row becomes ONE plaintext holding three non-negative slots::

        m = (g_enc << (slot_bits + count_bits)) | (h_enc << count_bits) | c

    ``g_enc = round((g / g_scale + 1) * 2^frac_bits)`` (the offset makes it
    non-negative, so sums can be packed and compressed), ``h_enc = round(h /
    h_scale * 2^frac_bits)`` and ``c = 1`` for a row in the tree sample (a row
    left out by ``subsample`` encrypts plain 0: the platform cannot tell). The
    count slot is what lets the lender remove the offset from a bin sum
    (``G = (sum g_enc / 2^frac_bits - count) * g_scale``). ``g_scale`` and
    ``h_scale`` (max |g|, max h of the tree) stay with the lender, so the
    layout the platform sees (bit widths, fixed for the job) says nothing about
    the gradients. Slot widths hold the sum over every row, so no histogram
    sum can carry into the next slot.

Histograms (platform side, :class:`EncryptedHistogram`)
    Per node and feature, bin sums are products of the rows' ciphertexts mod
    n^2. Per level only the *smaller* child of each split is built from rows;
    its sibling is ``parent / child``: homomorphic subtraction as a product with
    the modular inverse of the child's ciphertext. Inverses are chosen over
    adding ``n - x`` encodings because packed slots must stay non-negative: a
    sibling's slot sums are subset sums, so the inverse gives exactly the
    sibling's packed plaintext with no borrow between slots. Bin sums are then
    made cumulative (bin ``b`` holds bins ``0..b``: the lender reads a split's
    left side directly) and shift-and-add compressed so the lender decrypts
    one ciphertext per ~``key_bits / entry_bits`` bin sums.

Any additive scheme
    The kernel only multiplies ciphertexts modulo the key's
    ``ciphertext_modulus`` (Paillier ``n^2``, OU ``n``; the argument is still
    called ``nsq``) and compresses up to ``n_bits - 1`` plaintext bits, so an OU
    key runs through it with ``nsq = pk.ciphertext_modulus`` and ``n_bits =
    pk.plaintext_bits + 1`` (:mod:`fedacq.crypto.scheme`).

The compiled path (:class:`CompiledProducts`)
    The bin products are one multiply-mod per (row, feature): ~10^8 per tree at
    100k x 300. In Python each costs a gmpy2 multiply and a *division* (GMP
    has no fixed-modulus reduction behind ``%``) plus interpreter overhead.
    When ``sf-heu`` is installed the per-node histograms are instead computed
    by its C++ ``batch_feature_wise_bucket_sum``, used purely as a Montgomery
    product engine modulo our own modulus: heu's OU evaluator multiplies
    Montgomery-form integers mod whatever ``n`` its public key names, so the
    kernel loads a key object holding only our public modulus, converts the
    tree's ciphertexts to Montgomery form once per tree (one multiply-mod per
    row), and converts each bin sum back. heu sees public values only (the
    ciphertexts and the modulus). A known-answer check at start refuses a heu
    build whose conventions differ, and the kernel then falls back to gmpy2.
    Measured: /work/notes/s3/figures_F.md.

Workers get only public values (ciphertexts, the modulus, bin codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import gmpy2
import numpy as np
from gmpy2 import mpz

#: fractional bits of the fixed-point gradients: relative precision 2^-40, far
#: below float32 (XGBoost's gradient type), so sums decode to what XGBoost sums.
FRAC_BITS = 40


@dataclass(frozen=True)
class PackingLayout:
    """Bit layout of one packed (g, h, count) entry; public, fixed for a job."""

    frac_bits: int
    slot_bits: int
    count_bits: int

    @classmethod
    def for_rows(cls, n_rows: int, frac_bits: int = FRAC_BITS) -> "PackingLayout":
        count_bits = max(1, int(n_rows).bit_length())
        # each row adds < 2^(frac_bits + 1) to the g slot (g/g_scale + 1 <= 2)
        slot_bits = frac_bits + 1 + count_bits + 1
        return cls(frac_bits, slot_bits, count_bits)

    @property
    def entry_bits(self) -> int:
        return 2 * self.slot_bits + self.count_bits

    def to_header(self) -> dict:
        return {"frac_bits": self.frac_bits, "slot_bits": self.slot_bits, "count_bits": self.count_bits}


class GradientCodec:
    """Lender-side encoding of (g, h) rows and decoding of decrypted bin sums."""

    def __init__(self, layout: PackingLayout) -> None:
        self.layout = layout
        self.g_scale = 1.0
        self.h_scale = 1.0

    def encode(self, g: np.ndarray, h: np.ndarray, in_sample: np.ndarray) -> list[int]:
        """One packed plaintext per row; rows outside the sample encode 0."""
        lay = self.layout
        g = np.asarray(g, dtype=np.float64)
        h = np.asarray(h, dtype=np.float64)
        if np.any(h < 0):
            raise ValueError("hessians must be non-negative to be packed")
        self.g_scale = float(np.max(np.abs(g[in_sample]), initial=0.0)) or 1.0
        self.h_scale = float(np.max(h[in_sample], initial=0.0)) or 1.0
        one = float(2 ** lay.frac_bits)
        g_enc = np.rint((g / self.g_scale + 1.0) * one)
        h_enc = np.rint(h / self.h_scale * one)
        gs = lay.slot_bits + lay.count_bits
        cb = lay.count_bits
        out = []
        for ge, he, s in zip(g_enc.tolist(), h_enc.tolist(), in_sample.tolist()):
            out.append(((int(ge) << gs) | (int(he) << cb) | 1) if s else 0)
        return out

    def decode(self, entries: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(G, H, count) arrays from decrypted, decompressed packed sums."""
        lay = self.layout
        cmask = (1 << lay.count_bits) - 1
        smask = (1 << lay.slot_bits) - 1
        gs = lay.slot_bits + lay.count_bits
        counts = np.array([e & cmask for e in entries], dtype=np.int64)
        h_raw = [(e >> lay.count_bits) & smask for e in entries]
        g_raw = [e >> gs for e in entries]
        one = 1 << lay.frac_bits
        # exact integer offset removal before going to float
        g_net = np.array([gr - c * one for gr, c in zip(g_raw, counts.tolist())], dtype=np.float64)
        G = g_net / one * self.g_scale
        H = np.array(h_raw, dtype=np.float64) / one * self.h_scale
        return G, H, counts


def build_histograms(cts: list[mpz], nsq: mpz, bins: np.ndarray, n_bins: np.ndarray,
                     rows: np.ndarray) -> list[list[mpz]]:
    """Encrypted per-bin sums for every feature (column of ``bins``) over ``rows``.

    The cost is one multiply-mod per (row, feature). Credit data has many
    features with one dominant bin (a "no delay" status, a zero balance), so
    when the dominant bins together hold more rows than the node, the node
    total is computed once and each feature's dominant bin is derived as
    ``total / (other bins * missing)`` (one inverse) instead of summed row by row.
    """
    one = mpz(1)
    out = []
    sub = bins[rows]
    row_list = rows.tolist()
    dominant = []
    for f in range(bins.shape[1]):
        col = sub[:, f]
        counts = np.bincount(col[col >= 0], minlength=int(n_bins[f])) if len(col) else np.zeros(1, int)
        dominant.append((int(np.argmax(counts)), int(counts.max(initial=0))))
    use_total = sum(c for _, c in dominant) > len(row_list) + 64
    total = one
    if use_total:
        for r in row_list:
            total = total * cts[r] % nsq
    for f in range(bins.shape[1]):
        acc = [one] * int(n_bins[f])
        if not use_total or not acc:
            for r, b in zip(row_list, sub[:, f].tolist()):
                if b >= 0:
                    acc[b] = acc[b] * cts[r] % nsq
            out.append(acc)
            continue
        skip = dominant[f][0]
        missing = one
        for r, b in zip(row_list, sub[:, f].tolist()):
            if b == skip:
                continue
            if b >= 0:
                acc[b] = acc[b] * cts[r] % nsq
            else:
                missing = missing * cts[r] % nsq
        rest = missing  # every row outside the dominant bin
        for i, c in enumerate(acc):
            if i != skip:
                rest = rest * c % nsq
        acc[skip] = total * gmpy2.invert(rest, nsq) % nsq
        out.append(acc)
    return out


def subtract_histograms(parent: list[list[mpz]], child: list[list[mpz]], nsq: mpz) -> list[list[mpz]]:
    """Sibling = parent - child, homomorphically (product with the inverse)."""
    invert = gmpy2.invert
    return [[p * invert(c, nsq) % nsq for p, c in zip(pf, cf)] for pf, cf in zip(parent, child)]


def cumulative(hist: list[list[mpz]], nsq: mpz) -> list[mpz]:
    """Flatten per-feature bin sums into prefix sums (bin b holds bins 0..b)."""
    out = []
    for feat in hist:
        acc = mpz(1)
        for c in feat:
            acc = acc * c % nsq
            out.append(acc)
    return out


def compress(cts: list[mpz], entry_bits: int, n_bits: int, nsq: mpz) -> list[mpz]:
    """Shift-and-add ``cts`` (values < 2^entry_bits) into ceil(len / capacity) ciphertexts.

    Same layout as :func:`fedacq.crypto.paillier.compress` (element i at bit
    ``(i % capacity) * entry_bits``) so :func:`fedacq.crypto.paillier.decompress`
    undoes it; this version works on bare ciphertexts so worker processes can run it.
    """
    capacity = (n_bits - 1) // entry_bits
    shift = mpz(1) << entry_bits
    out = []
    for start in range(0, len(cts), capacity):
        chunk = cts[start:start + capacity]
        acc = chunk[-1]
        for c in reversed(chunk[:-1]):
            acc = gmpy2.powmod(acc, shift, nsq) * c % nsq
        out.append(acc)
    return out


def capacity(entry_bits: int, n_bits: int) -> int:
    return (n_bits - 1) // entry_bits


def n_compressed(count: int, entry_bits: int, n_bits: int) -> int:
    return math.ceil(count / capacity(entry_bits, n_bits))


_MSGPACK_TAIL = b"\x01" + b"\x00" * 7  # what heu writes after each serialised big integer


def _mp_uint(x: int) -> bytes:
    if x < 128:
        return bytes([x])
    if x < 1 << 8:
        return bytes([0xcc, x])
    if x < 1 << 16:
        return b"\xcd" + x.to_bytes(2, "big")
    return b"\xce" + x.to_bytes(4, "big")


def _mp_array(k: int) -> bytes:
    if k < 16:
        return bytes([0x90 + k])
    if k < 1 << 16:
        return b"\xdc" + k.to_bytes(2, "big")
    return b"\xdd" + k.to_bytes(4, "big")


def _mp_str(data: bytes) -> bytes:
    k = len(data)
    if k < 32:
        return bytes([0xa0 + k]) + data
    if k < 1 << 8:
        return bytes([0xd9, k]) + data
    if k < 1 << 16:
        return b"\xda" + k.to_bytes(2, "big") + data
    return b"\xdb" + k.to_bytes(4, "big") + data


def _mp_read_len(b: bytes, i: int) -> tuple[int, int]:
    t = b[i]
    if t < 0x80:
        return t, i + 1
    if 0x90 <= t <= 0x9f:
        return t - 0x90, i + 1
    if 0xa0 <= t <= 0xbf:
        return t - 0xa0, i + 1
    if t in (0xcc, 0xd9, 0xc4):
        return b[i + 1], i + 2
    if t in (0xcd, 0xdc, 0xda, 0xc5):
        return int.from_bytes(b[i + 1:i + 3], "big"), i + 3
    if t in (0xce, 0xdd, 0xdb, 0xc6):
        return int.from_bytes(b[i + 1:i + 5], "big"), i + 5
    raise ValueError(f"unexpected byte {t:#x} at {i} in a heu ciphertext array")


class CompiledProducts:
    """Products of ciphertexts per (node, feature, bin) mod ``modulus``, in C++ through sf-heu.

    See the module docstring. Raises ``ImportError`` without sf-heu and
    ``RuntimeError`` when the known-answer check fails; callers fall back to
    :func:`build_histograms`.
    """

    def __init__(self, modulus: int) -> None:
        from heu import numpy as hnp
        from heu import phe

        self._hnp = hnp
        self.modulus = mpz(modulus)
        bits = int(self.modulus.bit_length())
        self.width = bits // 8 + 1  # heu reads a set top bit as a sign
        self.R = pow(mpz(2), 60 * -(-bits // 60), self.modulus)  # heu's Montgomery radix (60-bit digits)
        self.R_inv = gmpy2.invert(self.R, self.modulus)
        key = (b"\x94" + b"".join(_mp_str(int(v).to_bytes(self.width, "little")) for v in (self.modulus, 2, 4))
               + _mp_uint(max(1, bits // 3)) + _MSGPACK_TAIL)
        self._evaluator = hnp.setup(phe.PublicKey.load_from(key)).evaluator()
        self._array = None
        a, b = mpz(3), self.modulus - 2
        got = self._products([a, b], np.zeros((2, 1), dtype=np.int8), 2, [np.ones(2, dtype=bool)])[0]
        if got != [a * b % self.modulus, 1]:  # the product, and an empty bucket as the identity
            raise RuntimeError("sf-heu's bucket sum does not follow the expected Montgomery convention")

    def _pack(self, cts: Sequence[mpz]) -> bytes:
        R, mod, width, tail = self.R, self.modulus, self.width, _MSGPACK_TAIL
        body = b"".join(_mp_str(b"\x91" + _mp_str(int(c * R % mod).to_bytes(width, "little")) + tail) for c in cts)
        return b"\x94" + _mp_uint(len(cts)) + _mp_uint(1) + _mp_uint(2) + _mp_array(len(cts)) + body

    def _unpack(self, raw: bytes) -> list[mpz]:
        _, i = _mp_read_len(raw, 1)
        _, i = _mp_read_len(raw, i)
        _, i = _mp_read_len(raw, i)
        count, i = _mp_read_len(raw, i)
        R_inv, mod = self.R_inv, self.modulus
        out = []
        for _ in range(count):
            size, j = _mp_read_len(raw, i)
            i = j + size
            k, j = _mp_read_len(raw, j + 1)  # skip the one-element array marker
            out.append(mpz(int.from_bytes(raw[j:j + k], "little")) * R_inv % mod)
        return out

    def load(self, cts: Sequence[mpz]) -> None:
        """This tree's ciphertexts, converted to Montgomery form once."""
        self._array = self._hnp.CiphertextArray.load_from(self._pack(cts))

    def _products(self, cts, order_map, buckets, masks) -> list[list[mpz]]:
        self.load(cts)
        return self.bucket_products(order_map, buckets, masks)

    def bucket_products(self, order_map: np.ndarray, buckets: int, masks: list[np.ndarray]) -> list[list[mpz]]:
        """For each row mask: ``buckets`` products per feature (feature-major), empty ones = 1."""
        groups = [np.ascontiguousarray(m, dtype=np.int8).reshape(1, -1) for m in masks]
        out = self._evaluator.batch_feature_wise_bucket_sum(self._array, groups, order_map, buckets, False)
        return [self._unpack(r.serialize()) for r in out]


class BlockKernel:
    """Encrypted histograms of one block of the platform's features, kept across a tree's levels.

    Holds the tree's ciphertexts, the block's bin codes and the raw (not yet
    cumulative) histograms of the current level's nodes, which the next level
    needs for subtraction. Runs in the platform's process or in one of its
    worker processes; it only ever sees public values.
    """

    def __init__(self, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int, entry_bits: int,
                 compiled: bool | None = None) -> None:
        """``compiled``: True requires the sf-heu path, False forbids it, None uses it when it works."""
        self.bins_all = np.asarray(bins)
        self.n_bins_all = np.asarray(n_bins)
        self.nsq = mpz(nsq)
        self.n_bits = n_bits
        self.entry_bits = entry_bits
        self.cts: list[mpz] = []
        self.hists: dict[int, list[list[mpz]]] = {}
        self.compiled = compiled
        self._engine: CompiledProducts | None = None
        if compiled is not False:
            try:
                self._engine = CompiledProducts(self.nsq)
            except (ImportError, RuntimeError):
                if compiled:
                    raise

    def start_tree(self, cts: list, columns: list[int]) -> None:
        self.cts = [mpz(c) for c in cts]
        self.bins = self.bins_all[:, columns]
        self.n_bins = self.n_bins_all[columns]
        self.hists = {}
        # heu takes int8 bin codes; missing values (< 0) go to one extra bucket that is dropped
        self._buckets = int(self.n_bins.max(initial=0)) + 1
        self._use_engine = self._engine is not None and self._buckets <= 127 and self.bins.shape[1] > 0
        if self._use_engine:
            assert self._engine is not None
            codes = np.where(self.bins < 0, self._buckets - 1, self.bins)
            self._order = np.ascontiguousarray(codes, dtype=np.int8)
            self._engine.load(self.cts)

    def _build(self, row_sets: list[np.ndarray]) -> list[list[list[mpz]]]:
        """Raw per-feature bin sums for each set of rows."""
        if not self._use_engine:
            return [build_histograms(self.cts, self.nsq, self.bins, self.n_bins, rows) for rows in row_sets]
        assert self._engine is not None
        masks = []
        for rows in row_sets:
            mask = np.zeros(len(self.cts), dtype=np.int8)
            mask[rows] = 1
            masks.append(mask)
        b = self._buckets
        flat = self._engine.bucket_products(self._order, b, masks)
        return [[prods[f * b:f * b + int(nb)] for f, nb in enumerate(self.n_bins.tolist())] for prods in flat]

    def root(self) -> list[mpz]:
        self.hists = {0: self._build([np.arange(len(self.cts))])[0]}
        return self._emit([0])

    def level(self, jobs: list[tuple[int, int, int, np.ndarray]], nodes: list[int]) -> list[mpz]:
        """``jobs``: (parent, small child, big child, rows of the small child)."""
        new = {}
        smalls = self._build([rows for _, _, _, rows in jobs]) if jobs else []
        for (parent, small, big, _), hist in zip(jobs, smalls):
            new[small] = hist
            new[big] = subtract_histograms(self.hists[parent], hist, self.nsq)
        self.hists = new
        return self._emit(nodes)

    def _emit(self, nodes: list[int]) -> list[mpz]:
        flat = [c for node in nodes for c in cumulative(self.hists[node], self.nsq)]
        return compress(flat, self.entry_bits, self.n_bits, self.nsq) if flat else []


def _worker_main(conn, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int, entry_bits: int,
                 compiled: bool | None) -> None:
    kernel = BlockKernel(bins, n_bins, nsq, n_bits, entry_bits, compiled)
    while True:
        cmd, *args = conn.recv()
        if cmd == "stop":
            return
        try:
            if cmd == "tree":
                kernel.start_tree(*args)
                conn.send(("ok", None))
            elif cmd == "root":
                conn.send(("ok", [int(c) for c in kernel.root()]))
            elif cmd == "level":
                conn.send(("ok", [int(c) for c in kernel.level(*args)]))
        except Exception as exc:  # noqa: BLE001 - reported to the platform process
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class HistogramEngine:
    """The platform's histogram work, split over feature blocks and worker processes.

    Each block's histograms are compressed separately, so the reply is a list
    of groups: ``block_features[i]`` features of block ``i`` (contiguous in the
    tree's active-feature order), all nodes of the level node-major, each
    compressed on its own. ``n_jobs=1`` runs everything in this process.
    """

    def __init__(self, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int, entry_bits: int,
                 n_jobs: int | None = None, compiled: bool | None = None) -> None:
        from fedacq.crypto.parallel import cpu_count

        self.bins, self.n_bins = bins, n_bins
        self.args = (int(nsq), n_bits, entry_bits, compiled)
        self.n_workers = max(1, min(n_jobs or cpu_count(), bins.shape[1] or 1))
        self._procs: list = []
        self._conns: list = []
        self._blocks: list[np.ndarray] = []
        self.block_features: list[int] = []
        self._local: BlockKernel | None = None

    def _ensure_workers(self) -> None:
        if self.n_workers == 1 or self._procs:
            return
        import multiprocessing

        ctx = multiprocessing.get_context("forkserver")
        self._groups = np.array_split(np.arange(self.bins.shape[1]), self.n_workers)
        for cols in self._groups:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker_main, daemon=True,
                               args=(child, self.bins[:, cols], self.n_bins[cols], *self.args))
            proc.start()
            self._procs.append(proc)
            self._conns.append(parent)

    def start_tree(self, cts: list[mpz], active: np.ndarray) -> None:
        """New tree: its ciphertexts and the active (sampled) platform features."""
        if self.n_workers == 1:
            if self._local is None:
                self._local = BlockKernel(self.bins, self.n_bins, *self.args)
            self._local.start_tree(cts, list(active))
            self.block_features = [len(active)]
            return
        self._ensure_workers()
        self._blocks = []
        self.block_features = []
        payload = [int(c) for c in cts]
        for conn, cols in zip(self._conns, self._groups):
            mine = set(cols.tolist())
            local = [int(np.searchsorted(cols, f)) for f in active if f in mine]
            self._blocks.append(np.array(local))
            self.block_features.append(len(local))
            conn.send(("tree", payload, local))
        self._collect()

    def root(self) -> list[mpz]:
        if self._local is not None and self.n_workers == 1:
            return self._local.root()
        for conn in self._conns:
            conn.send(("root",))
        return [mpz(c) for part in self._collect() for c in part]

    def level(self, jobs: list[tuple[int, int, int, np.ndarray]], nodes: list[int]) -> list[mpz]:
        if self._local is not None and self.n_workers == 1:
            return self._local.level(jobs, nodes)
        for conn in self._conns:
            conn.send(("level", jobs, nodes))
        return [mpz(c) for part in self._collect() for c in part]

    def _collect(self) -> list:
        out = []
        for conn in self._conns:
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(f"histogram worker failed: {value}")
            out.append(value)
        return out

    def close(self) -> None:
        for conn in self._conns:
            try:
                conn.send(("stop",))
            except (BrokenPipeError, OSError):
                pass
        for proc in self._procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
        self._procs, self._conns = [], []
