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

Histograms (platform side, :class:`BlockKernel`)
    Per node and feature, bin sums are products of the rows' ciphertexts mod
    n^2. Per level only the *smaller* child of each split is built from rows;
    its sibling is ``parent / child``: homomorphic subtraction as a product with
    the modular inverse of the child's ciphertext. Inverses are chosen over
    adding ``n - x`` encodings because packed slots must stay non-negative: a
    sibling's slot sums are subset sums, so the inverse gives exactly the
    sibling's packed plaintext with no borrow between slots. The platform
    derives a sibling only when it splits it again; it sends the root and the
    built children only, and the lender subtracts each sibling's decoded
    integer sums itself (``fedacq.learn.secureboost``), which halves the
    compression and the decryption. Bin sums are made cumulative (bin ``b``
    holds bins ``0..b``: the lender reads a split's left side directly) and
    shift-and-add compressed so the lender decrypts one ciphertext per
    ~``key_bits / entry_bits`` bin sums.

Joint cells (pairs of features), :func:`build_histograms`
    The cost of a histogram is its number of multiply-mods. Per feature alone
    it is one per row of the node. Take two features ``f1``, ``f2`` with
    ``B1``, ``B2`` bins and give "missing" a code of its own (``B``), so every
    row falls in exactly one joint cell ``(c1, c2)`` of ``(B1 + 1)(B2 + 1)``.
    Each row is multiplied once into its cell's product ``P(c1, c2)``; then

        S1(b) = prod_{c2} P(b, c2),        S2(b) = prod_{c1} P(c1, b)

    are exactly the per-feature bin sums (each row of bin ``b`` of ``f1`` is
    in exactly one cell of column ``b``; products mod n^2 are associative and
    commutative, so the residues are bit-for-bit those of the per-feature
    kernel). Cost for ``r`` rows and ``e`` non-empty cells: ``r - e`` products
    into cells (the first row of a cell is taken, not multiplied) plus at most
    ``2 e`` to fold cells into bins, against ``2 r`` for the two features
    alone. At 100k rows and 32 bins (``e <= 33^2 = 1089``) that is ~1.95x fewer;
    at a deep level's small node (``r`` not much above ``e``) pairing does not
    pay, and the node keeps the features single.

    The most-populated cell ``m`` of a group (a pair, or one feature: then its
    cells are its bins) can instead be derived from the node total ``T``, the
    product over all the node's rows: ``P(m) = T * (prod_{c != m} P(c))^-1``,
    which skips its ``r_m`` rows for ~``e`` multiplies and one inverse (~8
    multiply-mods, :data:`INVERT_COST`). ``T`` itself costs ``r`` products,
    shared by every group of the node. Credit and ad-platform data have
    dominant cells (a zero count, a "no delay" status), so this is where
    sparse features get cheap: rows of the default cell are never touched.

    The plan per node (:func:`_plan`, numpy over bin codes, no ciphertext):
    for each adjacent pair of the block's active features (an odd one stays
    single), estimated costs ``plain = r - e + fold`` and ``derived = r - r_m
    + INVERT_COST + fold`` (``fold = 2 e`` for a pair, 0 for a single); the
    total is computed if the sum of the best costs with it, plus ``r``, is
    below the sum without it; then each pair is kept joint or split,
    whichever is cheaper under that choice, and each group derives its
    most-populated cell if that is cheaper.

Any additive scheme
    The kernel only multiplies ciphertexts modulo the key's
    ``ciphertext_modulus`` (Paillier ``n^2``, OU ``n``; the argument is still
    called ``nsq``) and compresses up to ``n_bits - 1`` plaintext bits, so an OU
    key runs through it with ``nsq = pk.ciphertext_modulus`` and ``n_bits =
    pk.plaintext_bits + 1`` (:mod:`fedacq.crypto.scheme`). The cost per
    multiply-mod scales with the modulus: ~3x cheaper under a 2048-bit OU key than under 2048-bit Paillier
    (mod a 4096-bit ``n^2``).

The compiled kernel (:mod:`fedacq.learn._histkernel`, C)
    Products are the kernel's whole cost at scale (every row of a node, per
    group), so a group's bin sums are computed in C: the tree's ciphertexts are
    one table (:class:`CiphertextTable`, filled once per tree from the buffer
    the workers receive), and ``bin_sums`` walks a node's rows and the group's
    cell codes (numpy arrays, read in place) into per-cell accumulators,
    derives the most-populated cell (one ``mpz_invert``) and folds cells into
    each feature's bins, with no Python object per ciphertext or cell and the
    GIL released. Products are Montgomery's in 27-bit digits, four at a time
    in the lanes of AVX2 registers (a portable loop computes the same digits
    where there is no AVX2): the C file's header has the math, and why the
    planner's product counts are unchanged. The results are the canonical
    residues, bit for bit what ``acc * c % m`` in Python gives over the same
    rows, in any order. Measured on the project's 2-core machine (Zen 3), one
    product: 3.0-3.7 us at 4096 bits (Paillier's ``n^2``) against 5.3-6.2 us
    for GMP's multiply and Montgomery reduction, 0.75-0.85 us against 1.5 at
    2048 bits (OU); the gmpy2 loop before them took 8.4-8.8 and 3.0 us. The
    compression (:func:`fedacq.crypto.powmod.compress_chunks`) runs on the same lanes. What stays
    in Python is per bin: siblings (:func:`batch_invert`) and prefix sums.

Workers get only public values (ciphertexts, the modulus, bin codes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import gmpy2
import numpy as np
from gmpy2 import mpz

from fedacq.crypto.powmod import compress_chunks, from_limbs, limb_width, to_limbs
from fedacq.learn import _histkernel

#: fractional bits of the fixed-point gradients: relative precision 2^-40, far
#: below float32 (XGBoost's gradient type), so sums decode to what XGBoost sums.
FRAC_BITS = 40

#: an inverse mod n^2 (or n) costs ~6-8 multiply-mods under gmpy2 (measured at 2048 and 4096 bits)
INVERT_COST = 10


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


def _cell_stats(cells: np.ndarray, size: int) -> tuple[int, int, int]:
    """(non-empty cells, most-populated cell, its row count) of one feature group over a node's rows."""
    counts = np.bincount(cells, minlength=size)
    top = int(np.argmax(counts)) if len(cells) else 0
    return int(np.count_nonzero(counts)), top, int(counts[top]) if len(cells) else 0


class _Group:
    """One or two features accumulated together over a node's rows (see :func:`build_histograms`)."""

    def __init__(self, features: list[int], codes: np.ndarray, radix: np.ndarray) -> None:
        self.features = features
        self.radix = [int(radix[f]) for f in features]
        # a pair's cell in int32 (at most (max_bin + 2)^2 cells), not the int64 numpy would promote to: a
        # node's root holds every pair's cells at once while it plans (memory at 1M rows x 150 features a worker)
        self.cells = codes[:, features[0]] if len(features) == 1 else \
            codes[:, features[0]].astype(np.int32) * np.int32(self.radix[1]) + codes[:, features[1]]
        n = len(self.cells)
        self.nonempty, self.top, self.top_rows = _cell_stats(self.cells, int(np.prod(self.radix)))
        # folding cells into bins: 2 multiplies per non-empty cell of a pair (first one per bin is free), none
        # for a single feature (its cells are its bins)
        self.fold = 0 if len(features) == 1 else 2 * self.nonempty
        self.plain = n - self.nonempty + self.fold
        self.derived = n - self.top_rows + INVERT_COST + self.fold

    def cost(self, with_total: bool) -> int:
        return min(self.plain, self.derived) if with_total else self.plain


def _plan(codes: np.ndarray, radix: np.ndarray, pair_features: bool) -> tuple[list[_Group], bool]:
    """The cheapest grouping of a node's features and whether the node total is worth its ``rows`` products."""
    n_feat = codes.shape[1]
    singles = [_Group([f], codes, radix) for f in range(n_feat)]
    if not pair_features:
        options = [[[s]] for s in singles]
    else:
        options = [[[singles[f], singles[f + 1]], [_Group([f, f + 1], codes, radix)]]
                   for f in range(0, n_feat - 1, 2)]
        if n_feat % 2:
            options.append([[singles[-1]]])

    def best(opts: list[list[_Group]], with_total: bool) -> list[_Group]:
        return min(opts, key=lambda gs: sum(g.cost(with_total) for g in gs))

    def total_cost(with_total: bool) -> int:
        return sum(g.cost(with_total) for opts in options for g in best(opts, with_total))

    rows = codes.shape[0]
    use_total = rows > 1 and total_cost(True) + rows - 1 < total_cost(False)
    return [g for opts in options for g in best(opts, use_total)], use_total


def _codes(bins: np.ndarray, n_bins: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The node's bin codes with missing as a code of its own (``n_bins[f]``), in the bins' own dtype.

    One copy of the node's rows at the bins' width (int16 for 32 bins), not an int64 one and
    a second for the missing codes: at a 1M-row root a worker's 150 features take 300 MB,
    not 2.4 GB.
    """
    codes = bins[rows]
    if codes.dtype.kind != "i" or np.iinfo(codes.dtype).max < int(np.max(n_bins, initial=0)):
        codes = codes.astype(np.int32)
    for f in range(codes.shape[1]):  # column by column: no node-sized mask
        column = codes[:, f]
        column[column < 0] = n_bins[f]
    return codes


def planned_products(bins: np.ndarray, n_bins: np.ndarray, rows: np.ndarray, pair_features: bool = True) -> int:
    """The multiply-mods :func:`build_histograms` plans for ``rows`` (its cost model; no ciphertext needed).

    What benchmarks count to compare kernels independently of the machine's load.
    """
    groups, use_total = _plan(_codes(bins, n_bins, rows), np.asarray(n_bins, dtype=np.int64) + 1, pair_features)
    return (len(rows) - 1 if use_total else 0) + sum(g.cost(use_total) for g in groups)


class CiphertextTable:
    """A tree's ciphertexts in the kernel's own table: Montgomery form, 27-bit digits (``_histkernel``).

    Given as a ``(rows, k)`` array of 64-bit limbs, least significant first
    (``k`` limbs hold the ciphertext modulus ``m``), each row ``c`` is stored
    as ``c R mod m`` (``R = 2^(27 L) > 4m``, one division per ciphertext and
    tree) in ``L`` digits of 27 bits, what four-lane products read (module
    docstring of :mod:`fedacq.learn._histkernel`): one buffer instead of an
    ``mpz`` object per row, which at 1M rows also spares the objects'
    overhead. Every ciphertext must be below ``m`` (as
    :func:`fedacq.crypto.additive.check_range` has already made sure of the
    peer's). :meth:`from_ints` and :meth:`from_packed` make the limbs.
    """

    def __init__(self, limbs: np.ndarray, modulus: int) -> None:
        self.k = limbs.shape[1]
        self._modulus_limbs = np.frombuffer(to_limbs([modulus], 8 * self.k), dtype="<u8")
        self.table = _histkernel.to_table(limbs, self._modulus_limbs)
        self.n_rows = limbs.shape[0]

    @staticmethod
    def _limbs(modulus: int) -> int:
        return limb_width(modulus) // 8

    @classmethod
    def from_ints(cls, cts, modulus: int) -> "CiphertextTable":
        """From integers, a few thousand at a time (no second full-size copy while filling the table)."""
        k = cls._limbs(modulus)
        limbs = np.empty((len(cts), k), dtype="<u8")
        for start in range(0, len(cts), 4096):
            chunk = to_limbs(cts[start:start + 4096], 8 * k)
            limbs[start:start + 4096] = np.frombuffer(chunk, dtype="<u8").reshape(-1, k)
        return cls(limbs, modulus)

    @classmethod
    def from_packed(cls, packed: bytes, width: int, modulus: int) -> "CiphertextTable":
        """From ``width``-byte big-endian integers end to end (:func:`pack_ciphertexts`)."""
        view = memoryview(packed)
        k = cls._limbs(modulus)
        if width <= 0 or view.nbytes % width:
            raise ValueError(f"{view.nbytes} bytes is not a whole number of {width}-byte ciphertexts")
        if width > 8 * k:
            raise ValueError(f"{width}-byte ciphertexts are wider than the {int(modulus).bit_length()}-bit modulus")
        big_endian = np.frombuffer(view, dtype=np.uint8).reshape(-1, width)
        little = np.zeros((big_endian.shape[0], 8 * k), dtype=np.uint8)
        little[:, :width] = big_endian[:, ::-1]
        return cls(little.view("<u8"), modulus)

    def __len__(self) -> int:
        return self.n_rows

    def node_total(self, rows: np.ndarray) -> bytes:
        """The product of ``rows``' ciphertexts mod m as ``k`` limbs: what :meth:`bin_sums` derives a cell from."""
        return _histkernel.bin_sums(self.table, self._modulus_limbs, rows, None, 1, 0, 1, 0, -1, None)

    def bin_sums(self, rows: np.ndarray, cells: np.ndarray, radix: list[int], n_bins: list[int], skip: int = -1,
                 total: bytes | None = None) -> list[list[mpz]]:
        """Each feature's bin sums over ``rows`` for one group (one feature, or a pair: cell ``c1 radix[1] + c2``).

        ``skip``: the cell derived from ``total`` (:meth:`node_total`) instead of multiplied from its rows.
        """
        pair = len(radix) == 2
        out = _histkernel.bin_sums(self.table, self._modulus_limbs, rows, cells, int(np.prod(radix)),
                                   radix[1] if pair else 0, n_bins[0], n_bins[1] if pair else 0, skip, total)
        sums = from_limbs(out, 8 * self.k)
        return [sums[:n_bins[0]], sums[n_bins[0]:]] if pair else [sums]


def build_histograms(cts: "CiphertextTable | list", nsq: mpz, bins: np.ndarray, n_bins: np.ndarray,
                     rows: np.ndarray, pair_features: bool = True) -> list[list[mpz]]:
    """Encrypted per-bin sums for every feature (column of ``bins``) over ``rows``.

    See the module docstring (*Joint cells*) for the cost model; ``pair_features=False``
    is the per-feature kernel (every group a single feature), kept to measure against.
    ``cts`` is the tree's :class:`CiphertextTable` (a list of integers is made into one).
    """
    table = cts if isinstance(cts, CiphertextTable) else CiphertextTable.from_ints(cts, nsq)
    codes = _codes(bins, n_bins, rows)
    radix = np.asarray(n_bins, dtype=np.int64) + 1
    groups, use_total = _plan(codes, radix, pair_features)
    total = table.node_total(rows) if use_total else None
    out: list[list[mpz]] = [[] for _ in range(bins.shape[1])]
    for g in groups:
        derive = use_total and g.derived < g.plain
        sums = table.bin_sums(rows, g.cells, g.radix, [int(n_bins[f]) for f in g.features],
                              g.top if derive else -1, total)
        for f, s in zip(g.features, sums):
            out[f] = s
    return out


def batch_invert(xs: list[mpz], m: mpz) -> list[mpz]:
    """Every ``x^-1 mod m`` from one inverse (Montgomery's trick).

    With prefix products ``p_i = x_0 ... x_i``, ``u = p_last^-1`` and walking
    back, ``x_i^-1 = u p_(i-1)`` and then ``u <- u x_i`` (now ``p_(i-1)^-1``):
    three multiply-mods per element instead of an inverse (~11 of them under a
    2048-bit modulus, ~7 under a 4096-bit one, measured with gmpy2). Inverses
    mod ``m`` are unique, so the results are those of one ``invert`` each; a
    non-invertible element raises ``ZeroDivisionError`` as ``invert`` does.
    """
    if not xs:
        return []
    prefix = [xs[0]]
    for x in xs[1:]:
        prefix.append(prefix[-1] * x % m)
    u = gmpy2.invert(prefix[-1], m)
    out = [mpz(0)] * len(xs)
    for i in range(len(xs) - 1, 0, -1):
        out[i] = u * prefix[i - 1] % m
        u = u * xs[i] % m
    out[0] = u
    return out


def subtract_histograms(parent: list[list[mpz]], child: list[list[mpz]], nsq: mpz) -> list[list[mpz]]:
    """Sibling = parent - child, homomorphically: the product with the child's inverses (:func:`batch_invert`)."""
    inverses = iter(batch_invert([c for cf in child for c in cf], nsq))
    return [[p * next(inverses) % nsq for p in pf] for pf in parent]


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
    undoes it; this version takes the capacity from the plaintext bits, so worker
    processes need no key: :func:`fedacq.crypto.powmod.compress_chunks`.
    """
    return compress_chunks(cts, entry_bits, capacity(entry_bits, n_bits), nsq)


def capacity(entry_bits: int, n_bits: int) -> int:
    return (n_bits - 1) // entry_bits


def n_compressed(count: int, entry_bits: int, n_bits: int) -> int:
    return math.ceil(count / capacity(entry_bits, n_bits))


class BlockKernel:
    """Encrypted histograms of one block of the platform's features, kept across a tree's levels.

    Holds the tree's ciphertexts, the block's bin codes and the raw (not yet
    cumulative) histograms the next level may need: the children built from
    rows and their parents. A sibling (``parent / child``) is derived only
    when it is asked for: when it is split in turn (its children need it as a
    parent) or emitted. Runs in the platform's process, in one of its worker
    processes or in a Ray actor; it only ever sees public values. Pairs of
    features (:func:`build_histograms`) never cross a block.
    """

    def __init__(self, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int, entry_bits: int,
                 pair_features: bool = True) -> None:
        self.bins_all = np.asarray(bins)
        self.n_bins_all = np.asarray(n_bins)
        self.nsq = mpz(nsq)
        self.n_bits = n_bits
        self.entry_bits = entry_bits
        self.pair_features = pair_features
        self.cts = CiphertextTable.from_ints([], self.nsq)
        self.hists: dict[int, list[list[mpz]]] = {}
        self.siblings: dict[int, tuple[int, int]] = {}  # node -> (parent, built sibling), not derived yet

    def start_tree_packed(self, packed: bytes, width: int, columns: list[int]) -> None:
        """:meth:`start_tree` from the tree's ciphertexts as ``width``-byte big-endian integers, end to end.

        How a worker process or a Ray actor receives them: one buffer, not a list of
        Python ints pickled (which at 1M rows costs about twice the ciphertexts' size
        in the sender and again in each receiver).
        """
        self.cts = CiphertextTable.from_packed(packed, width, self.nsq)
        self._select(columns)

    def start_tree(self, cts: list, columns: list[int]) -> None:
        self.cts = CiphertextTable.from_ints(cts, self.nsq)
        self._select(columns)

    def _select(self, columns: list[int]) -> None:
        """The tree's active columns; all of them (no column sampling) without a copy of the block's codes."""
        every = list(columns) == list(range(self.bins_all.shape[1]))
        self.bins = self.bins_all if every else self.bins_all[:, columns]
        self.n_bins = self.n_bins_all if every else self.n_bins_all[columns]
        self.hists, self.siblings = {}, {}

    def root(self) -> list[mpz]:
        self.hists = {0: self._build(np.arange(len(self.cts)))}
        self.siblings = {}
        return self._emit([0])

    def level(self, jobs: list[tuple[int, int, int, np.ndarray]], nodes: list[int]) -> list[mpz]:
        """``jobs``: (parent, small child, big child, rows of the small child); emits ``nodes``.

        The protocol emits the built (small) children only; the lender derives
        their siblings itself. Any node of the level can be emitted.
        """
        hists, siblings = {}, {}
        for parent, small, big, rows in jobs:
            hists[parent] = self._hist(parent)
            hists[small] = self._build(rows)
            siblings[big] = (parent, small)
        self.hists, self.siblings = hists, siblings
        return self._emit(nodes)

    def _build(self, rows: np.ndarray) -> list[list[mpz]]:
        return build_histograms(self.cts, self.nsq, self.bins, self.n_bins, rows, self.pair_features)

    def _hist(self, node: int) -> list[list[mpz]]:
        if node not in self.hists:
            parent, child = self.siblings[node]
            self.hists[node] = subtract_histograms(self.hists[parent], self.hists[child], self.nsq)
        return self.hists[node]

    def _emit(self, nodes: list[int]) -> list[mpz]:
        flat = [c for node in nodes for c in cumulative(self._hist(node), self.nsq)]
        return compress(flat, self.entry_bits, self.n_bits, self.nsq) if flat else []


def _worker_main(conn, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int, entry_bits: int,
                 pair_features: bool) -> None:
    kernel = BlockKernel(bins, n_bins, nsq, n_bits, entry_bits, pair_features)
    while True:
        cmd, *args = conn.recv()
        if cmd == "stop":
            return
        try:
            if cmd == "tree":  # (width, columns); the ciphertexts follow as one buffer
                kernel.start_tree_packed(conn.recv_bytes(), *args)
                conn.send(("ok", None))
            elif cmd == "root":
                conn.send(("ok", [int(c) for c in kernel.root()]))
            elif cmd == "level":
                conn.send(("ok", [int(c) for c in kernel.level(*args)]))
        except Exception as exc:  # noqa: BLE001 - reported to the platform process
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


def pack_ciphertexts(cts: list, modulus: int) -> tuple[int, bytes]:
    """(width, buffer): ``cts`` (each below ``modulus``) as fixed-width big-endian integers, end to end."""
    width = (int(modulus).bit_length() + 7) // 8
    return width, b"".join(int(c).to_bytes(width, "big") for c in cts)


class HistogramEngine:
    """The platform's histogram work, split over feature blocks and worker processes.

    Each block's histograms are compressed separately, so the reply is a list
    of groups: ``block_features[i]`` features of block ``i`` (contiguous in the
    tree's active-feature order), all nodes of the level node-major, each
    compressed on its own. ``n_jobs=1`` runs everything in this process.
    ``pair_features=False`` is the per-feature kernel (benchmarks compare the two).
    """

    def __init__(self, bins: np.ndarray, n_bins: np.ndarray, nsq: int, n_bits: int, entry_bits: int,
                 n_jobs: int | None = None, pair_features: bool = True) -> None:
        from fedacq.crypto.parallel import cpu_count

        self.bins, self.n_bins = bins, n_bins
        self.args = (int(nsq), n_bits, entry_bits, pair_features)
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
        width, payload = pack_ciphertexts(cts, self.args[0])
        for conn, cols in zip(self._conns, self._groups):
            mine = set(cols.tolist())
            local = [int(np.searchsorted(cols, f)) for f in active if f in mine]
            self._blocks.append(np.array(local))
            self.block_features.append(len(local))
            conn.send(("tree", width, local))
            conn.send_bytes(payload)
        del payload
        self._collect()

    def root(self) -> list[mpz]:
        if self._local is not None and self.n_workers == 1:
            return self._local.root()
        for conn in self._conns:
            conn.send(("root",))
        return [mpz(c) for part in self._collect() for c in part]

    def level(self, jobs: list[tuple[int, int, int, np.ndarray]], nodes: list[int]) -> list[mpz]:
        """``jobs``: (parent, small child, big child, rows of the small child); emits ``nodes``."""
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
