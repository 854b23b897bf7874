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
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

DUPLICATE_POLICIES = ("first", "drop", "error")
ID_KINDS = ("text", "phone", "hash")
_NON_DIGIT = re.compile(r"\D+")


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


@dataclass
class ColumnIds:
    """The usable ids of one column: the rows that carry them and their encoded values."""

    column: str
    kind: str
    rows: np.ndarray           # int64 row numbers, ascending
    values: list[bytes]        # normalised ids, UTF-8, aligned with rows
    missing: int = 0
    duplicates: int = 0        # rows that lost this id to the duplicate policy


@dataclass
class PreparedIds:
    n_rows: int
    columns: list[ColumnIds] = field(default_factory=list)

    def stats(self) -> dict[str, dict[str, int]]:
        return {c.column: {"ids": len(c.rows), "missing": c.missing, "duplicates": c.duplicates}
                for c in self.columns}


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
        norm = _normalize_series(table[column], kind, country_code)
        present = norm.notna().to_numpy()
        dup_mask = np.zeros(len(norm), dtype=bool)
        if present.any():
            sub = norm[present]
            if duplicates == "drop":
                dup_sub = sub.duplicated(keep=False).to_numpy()
            else:
                dup_sub = sub.duplicated(keep="first").to_numpy()
            dup_mask[np.flatnonzero(present)] = dup_sub
        n_dup = int(dup_mask.sum())
        if n_dup and duplicates == "error":
            example = norm[dup_mask].iloc[0]
            raise ValueError(f"{source}: id column {column!r} has {n_dup} duplicate id(s), "
                             f"e.g. {example!r} (duplicate policy 'error')")
        keep = present & ~dup_mask
        rows = np.flatnonzero(keep).astype(np.int64)
        prepared.columns.append(ColumnIds(
            column=column, kind=kind, rows=rows,
            values=[s.encode("utf-8") for s in norm.to_numpy()[keep]],
            missing=int((~present).sum()), duplicates=n_dup))
    return prepared


__all__ = ["prepare_ids", "PreparedIds", "ColumnIds", "normalize_value", "normalize_phone",
           "infer_kind", "DUPLICATE_POLICIES"]
