"""Identifier preparation for PSI: normalise, de-duplicate, encode.

Two parties only find a common user if they write the identifier the same way, so
every id goes through one normalisation before hashing:

* all kinds: Unicode NFKC, surrounding whitespace trimmed; empty / missing values
  are "no id in this column" (the row can still match on another column);
* ``"text"``: case-folded (``"ÄBC "`` and ``"äbc"`` are one id);
* ``"phone"``: digits only, in one international form: a ``+`` or ``00`` prefix means
  the number already carries its country code; otherwise a trunk ``0`` is dropped
  and ``country_code`` is prepended unless the number already starts with it and is
  longer than a national number;
* ``"hash"`` (an identifier that is already a hex digest): trimmed and lower-cased.

The kind of a column is given explicitly or inferred from its name (``phone``,
``mobile``, ``tel`` -> phone; ``hash``/``md5``/``sha`` -> hash; otherwise text).

Duplicates: an id value that occurs on several rows of one side cannot say which row
it belongs to. Policy ``"first"`` (default) keeps it on its first row only and counts
the others; ``"drop"`` removes it from every row that has it; ``"error"`` refuses the
input naming the column. The counts are reported in the PSI stats.

Memory: ten million ids as Python ``bytes`` in a list cost ~90 bytes each; an
:class:`IdArray` packs them end to end (their length plus an 8-byte offset each).
Columns are normalised ``NORMALIZE_ROWS`` rows at a time, so the Python strings of
only one slice exist at once, and duplicates are found by Arrow's dictionary
encoding of the packed bytes (exact byte equality, no Python set).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from typing import Iterable, Iterator, Sequence, overload

import numpy as np
import pandas as pd
import pyarrow as pa

DUPLICATE_POLICIES = ("first", "drop", "error")
ID_KINDS = ("text", "phone", "hash")
_NON_DIGIT = re.compile(r"\D+")
#: rows normalised at once: bounds the Python strings alive while a column is prepared.
NORMALIZE_ROWS = 1 << 20


def infer_kind(column: str) -> str:
    name = column.lower()
    if any(t in name for t in ("phone", "mobile", "tel")):
        return "phone"
    if any(t in name for t in ("hash", "md5", "sha")):
        return "hash"
    return "text"


def _to_text(value: object) -> str | None:
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        value = int(value)  # a CSV integer column with gaps is read as float
    text = unicodedata.normalize("NFKC", str(value)).strip()
    return text or None


def normalize_phone(text: str, country_code: str = "86", national_digits: int = 11) -> str | None:
    international = text.startswith("+") or text.startswith("00")
    digits = _NON_DIGIT.sub("", text)
    if international:
        digits = digits[2:] if text.startswith("00") else digits
    else:
        if digits.startswith("0"):
            digits = digits.lstrip("0")
        if not (digits.startswith(country_code) and len(digits) > national_digits):
            digits = country_code + digits
    return digits or None


def normalize_value(value: object, kind: str, country_code: str = "86") -> str | None:
    text = _to_text(value)
    if text is None:
        return None
    if kind == "phone":
        return normalize_phone(text, country_code)
    if kind == "hash":
        return text.lower()
    if kind == "text":
        return text.casefold()
    raise ValueError(f"unknown id kind {kind!r}; expected one of {ID_KINDS}")


def _normalize_series(series: pd.Series, kind: str, country_code: str) -> pd.Series:
    """:func:`normalize_value` over a column; vectorised for all-string text/hash columns."""
    if kind in ("text", "hash") and pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty"):
        s = series.astype("string").str.normalize("NFKC").str.strip()
        s = s.str.casefold() if kind == "text" else s.str.lower()
        s = s.mask(s == "")
        return s.astype(object).where(s.notna(), None).reset_index(drop=True)
    return pd.Series([normalize_value(v, kind, country_code) for v in series.to_numpy()], dtype=object)


class IdArray(Sequence[bytes]):
    """Byte strings packed end to end: id ``i`` is ``data[offsets[i]:offsets[i + 1]]``.

    A ``Sequence[bytes]`` (what the engines' ``blind_ids`` take); a slice is a view,
    :meth:`take` gathers rows without creating Python objects, and a chunk sent to a
    worker process of this party pickles as two arrays rather than a list of objects.
    """

    __slots__ = ("offsets", "data")

    def __init__(self, offsets: np.ndarray, data: np.ndarray) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        data = np.asarray(data, dtype=np.uint8)
        if offsets.ndim != 1 or not len(offsets) or data.ndim != 1:
            raise ValueError("IdArray needs 1-d offsets (n + 1 of them) and 1-d uint8 data")
        if offsets[0] != 0 or offsets[-1] != len(data):
            data, offsets = data[offsets[0]:offsets[-1]], offsets - offsets[0]
        if offsets[-1] != len(data) or (len(offsets) > 1 and (np.diff(offsets) < 0).any()):
            raise ValueError("IdArray offsets must rise from 0 to len(data)")
        self.offsets, self.data = offsets, data

    @classmethod
    def from_bytes(cls, values: Iterable[bytes]) -> "IdArray":
        values = list(values)
        offsets = np.zeros(len(values) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=offsets[1:])
        return cls(offsets, np.frombuffer(b"".join(values), dtype=np.uint8))

    @classmethod
    def from_arrow(cls, array: pa.Array) -> "IdArray":
        """The bytes of a null-free Arrow (large_)string/binary array, without a Python object per id."""
        if array.null_count:
            raise ValueError("IdArray.from_arrow: the array has nulls")
        if not len(array):
            return IdArray.concat([])
        array = array.cast(pa.large_binary())
        _, offsets, data = array.buffers()
        offs = np.frombuffer(offsets, dtype=np.int64)[array.offset:array.offset + len(array) + 1]
        raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.empty(0, dtype=np.uint8)
        return cls(offs, raw)

    def to_arrow(self) -> pa.Array:
        return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(self), [
            None, pa.py_buffer(self.offsets), pa.py_buffer(self.data)])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @overload
    def __getitem__(self, index: int) -> bytes: ...
    @overload
    def __getitem__(self, index: slice) -> "IdArray": ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                return self.take(np.arange(start, stop, step))
            return IdArray(self.offsets[start:max(start, stop) + 1], self.data)
        i = range(len(self))[index]
        return self.data[self.offsets[i]:self.offsets[i + 1]].tobytes()

    def __iter__(self) -> Iterator[bytes]:
        raw = self.data.tobytes()
        bounds = self.offsets.tolist()
        return (raw[a:b] for a, b in zip(bounds[:-1], bounds[1:]))

    def take(self, indices: np.ndarray) -> "IdArray":
        """The ids at ``indices`` (any order), packed anew."""
        idx = np.asarray(indices, dtype=np.int64)
        starts = self.offsets[idx]
        lengths = self.offsets[idx + 1] - starts
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        gather = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1], dtype=np.int64)
        return IdArray(offsets, self.data[gather])

    def __reduce__(self):
        return (IdArray, (np.ascontiguousarray(self.offsets), np.ascontiguousarray(self.data)))

    @staticmethod
    def concat(parts: Sequence["IdArray"]) -> "IdArray":
        if not parts:
            return IdArray(np.zeros(1, dtype=np.int64), np.empty(0, dtype=np.uint8))
        lengths = np.concatenate([np.diff(p.offsets) for p in parts])
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return IdArray(offsets, np.concatenate([p.data[p.offsets[0]:p.offsets[-1]] for p in parts]))


@dataclass
class ColumnIds:
    """The usable ids of one column: the rows that carry them and their encoded values."""

    column: str
    kind: str
    rows: np.ndarray           # int64 row numbers, ascending
    values: IdArray            # normalised ids, UTF-8, aligned with rows
    missing: int = 0
    duplicates: int = 0        # rows that lost this id to the duplicate policy


@dataclass
class PreparedIds:
    n_rows: int
    columns: list[ColumnIds] = field(default_factory=list)

    def stats(self) -> dict[str, dict[str, int]]:
        return {c.column: {"ids": len(c.rows), "missing": c.missing, "duplicates": c.duplicates}
                for c in self.columns}


def _duplicates(values: IdArray, policy: str) -> np.ndarray:
    """Which ids lose to the duplicate policy: later repeats (``first``/``error``) or every copy (``drop``)."""
    if not len(values):
        return np.zeros(0, dtype=bool)
    codes = values.to_arrow().dictionary_encode().indices.to_numpy()
    if policy == "drop":
        return np.bincount(codes)[codes] > 1
    _, first = np.unique(codes, return_index=True)
    dup = np.ones(len(codes), dtype=bool)
    dup[first] = False
    return dup


def prepare_ids(table: pd.DataFrame, id_columns: list[str], *, kinds: dict[str, str] | None = None,
                duplicates: str = "first", country_code: str = "86",
                source: str = "table") -> PreparedIds:
    """Normalise the id columns of ``table`` in priority order and apply the duplicate policy."""
    if not id_columns:
        raise ValueError("at least one id column is needed")
    if duplicates not in DUPLICATE_POLICIES:
        raise ValueError(f"duplicate policy {duplicates!r} is not one of {DUPLICATE_POLICIES}")
    if len(set(id_columns)) != len(id_columns):
        raise ValueError(f"id columns repeat: {id_columns}")
    prepared = PreparedIds(n_rows=len(table))
    for column in id_columns:
        if column not in table.columns:
            raise ValueError(f"{source}: id column {column!r} not found (columns: {list(table.columns)})")
        kind = (kinds or {}).get(column) or infer_kind(column)
        present_parts, packed = [], []
        series = table[column]
        for start in range(0, len(series), NORMALIZE_ROWS):
            norm = _normalize_series(series.iloc[start:start + NORMALIZE_ROWS], kind, country_code)
            present = norm.notna().to_numpy()
            present_parts.append(present)
            packed.append(IdArray.from_arrow(pa.array(norm.to_numpy()[present], type=pa.large_string())))
        present = np.concatenate(present_parts) if present_parts else np.zeros(0, dtype=bool)
        values = IdArray.concat(packed)
        del packed
        dup_sub = _duplicates(values, duplicates)
        n_dup = int(dup_sub.sum())
        if n_dup and duplicates == "error":
            example = values[int(np.flatnonzero(dup_sub)[0])].decode("utf-8")
            raise ValueError(f"{source}: id column {column!r} has {n_dup} duplicate id(s), "
                             f"e.g. {example!r} (duplicate policy 'error')")
        present_rows = np.flatnonzero(present).astype(np.int64)
        keep = ~dup_sub
        prepared.columns.append(ColumnIds(
            column=column, kind=kind, rows=present_rows[keep],
            values=values if not n_dup else values.take(np.flatnonzero(keep)),
            missing=int((~present).sum()), duplicates=n_dup))
    # Arrow's allocator keeps what the encoding and de-duplication freed (~90 bytes per id) for
    # reuse; nothing else in PSI allocates through Arrow, so hand it back to the system now.
    pa.default_memory_pool().release_unused()
    return prepared


__all__ = ["prepare_ids", "PreparedIds", "ColumnIds", "IdArray", "normalize_value", "normalize_phone",
           "infer_kind", "DUPLICATE_POLICIES"]
