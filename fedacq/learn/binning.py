"""Local quantile binning of one party's own features, with XGBoost ``hist`` cut points.

Each party bins its own columns on its own premises; only the *number* of bins
per feature ever leaves (the lender needs it to read histograms). The cut points
are taken from XGBoost itself (``QuantileDMatrix(...).get_quantile_cut()`` on the
party's own columns): XGBoost sketches every column independently, so the cuts a
party computes alone are exactly the cuts XGBoost computes for those columns on
the joined data. That is what lets the federated model match XGBoost tree for
tree instead of approximately.

Bin semantics follow XGBoost: feature ``f`` has cuts ``c_0 < c_1 < ... < c_{k-1}``;
a value ``v`` falls in bin ``i`` when ``c_{i-1} <= v < c_i`` (values are compared
as float32, as XGBoost stores them; the last cut lies above the column maximum).
A split "at bin ``b``" sends bins ``0..b`` left, i.e. ``v < c_b``. Missing values
(NaN) fall in no bin (code :data:`MISSING`); their direction is learned per split.
"""

from __future__ import annotations

import numpy as np

#: bin code of a missing value.
MISSING = -1


class QuantileBinner:
    """Cut points per feature (XGBoost ``hist``) and the bin code of every value."""

    def __init__(self, max_bin: int = 256) -> None:
        if max_bin < 2:
            raise ValueError(f"max_bin must be >= 2, got {max_bin}")
        self.max_bin = max_bin
        self.cuts_: list[np.ndarray] = []
        self.min_values_: np.ndarray = np.zeros(0, dtype=np.float32)

    @property
    def n_features(self) -> int:
        return len(self.cuts_)

    @property
    def n_bins(self) -> np.ndarray:
        """Number of (non-missing) bins per feature."""
        return np.array([len(c) for c in self.cuts_], dtype=np.int32)

    def fit(self, X: np.ndarray) -> "QuantileBinner":
        """Compute cut points of every column of ``X`` (NaN = missing)."""
        X = _as_float32(X)
        self.cuts_ = []
        self.min_values_ = np.full(X.shape[1], np.nan, dtype=np.float32)
        if X.shape[1] == 0:
            return self
        import xgboost

        dm = xgboost.QuantileDMatrix(X, max_bin=self.max_bin, missing=np.nan)
        ptr, values = dm.get_quantile_cut()
        ptr = np.asarray(ptr)
        values = np.asarray(values, dtype=np.float32)
        for f in range(X.shape[1]):
            self.cuts_.append(values[ptr[f]:ptr[f + 1]].copy())
        with np.errstate(all="ignore"):
            present = ~np.isnan(X)
            for f in range(X.shape[1]):
                if present[:, f].any():
                    self.min_values_[f] = X[present[:, f], f].min()
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Bin codes (int16/int32, n x d): bin index, or :data:`MISSING` for NaN."""
        X = _as_float32(X)
        if X.shape[1] != self.n_features:
            raise ValueError(f"binner was fitted on {self.n_features} features, got {X.shape[1]}")
        dtype = np.int16 if self.max_bin < 2 ** 15 else np.int32
        out = np.full(X.shape, MISSING, dtype=dtype)
        for f, cuts in enumerate(self.cuts_):
            col = X[:, f]
            present = ~np.isnan(col)
            if not len(cuts):
                continue
            idx = np.searchsorted(cuts, col[present], side="right")
            np.minimum(idx, len(cuts) - 1, out=idx)
            out[present, f] = idx
        return out

    def threshold(self, feature: int, bin_index: int) -> float:
        """The split value of "left = bins 0..bin_index": ``x < threshold`` goes left.

        ``bin_index = -1`` (every present value right, only missing left) uses the
        column minimum, as XGBoost does for that case.
        """
        if bin_index < 0:
            return float(self.min_values_[feature])
        return float(self.cuts_[feature][bin_index])

    def to_dict(self) -> dict:
        return {"max_bin": self.max_bin, "cuts": [c.tolist() for c in self.cuts_],
                "min_values": [None if np.isnan(v) else float(v) for v in self.min_values_]}

    @classmethod
    def from_dict(cls, d: dict) -> "QuantileBinner":
        b = cls(int(d["max_bin"]))
        b.cuts_ = [np.asarray(c, dtype=np.float32) for c in d["cuts"]]
        b.min_values_ = np.array([np.nan if v is None else v for v in d["min_values"]], dtype=np.float32)
        return b


def _as_float32(X: np.ndarray) -> np.ndarray:
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"feature matrix must be 2-dimensional, got shape {X.shape}")
    if not np.issubdtype(X.dtype, np.number):
        raise ValueError(f"feature matrix must be numeric, got dtype {X.dtype}")
    X32 = X.astype(np.float32)
    if np.isinf(X32).any():
        col = int(np.nonzero(np.isinf(X32).any(axis=0))[0][0])
        raise ValueError(f"feature column {col} holds infinite values (use NaN for missing)")
    return X32
