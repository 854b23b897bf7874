"""Binning: each party's own cut points are exactly XGBoost ``hist``'s cuts on the joined data."""

import numpy as np
import pytest
import xgboost

from fedacq.learn.binning import MISSING, QuantileBinner


def _data(seed=0, n=500):
    rng = np.random.default_rng(seed)
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 4, n).astype(float),
                         rng.exponential(size=n), rng.normal(size=n)])
    X[rng.random(X.shape) < 0.1] = np.nan
    return X


def test_party_cuts_equal_joined_xgboost_cuts():
    X = _data()
    ptr, values = xgboost.QuantileDMatrix(X, max_bin=16).get_quantile_cut()
    left = QuantileBinner(16).fit(X[:, :2])
    right = QuantileBinner(16).fit(X[:, 2:])
    for f, cuts in enumerate(left.cuts_ + right.cuts_):
        np.testing.assert_array_equal(cuts, np.asarray(values[ptr[f]:ptr[f + 1]], dtype=np.float32))


def test_bins_follow_xgboost_split_semantics():
    X = _data(1)
    binner = QuantileBinner(8).fit(X)
    bins = binner.transform(X)
    assert bins.shape == X.shape
    assert np.all((bins == MISSING) == np.isnan(X))
    for f in range(X.shape[1]):
        x = X[:, f].astype(np.float32)
        present = ~np.isnan(x)
        for b in range(len(binner.cuts_[f])):
            # "left = bins 0..b" is exactly "x < cut_b"
            np.testing.assert_array_equal(bins[present, f] <= b, x[present] < binner.threshold(f, b))
    assert binner.threshold(0, -1) == np.nanmin(X[:, 0].astype(np.float32))


def test_zero_columns_and_bad_input():
    binner = QuantileBinner(8).fit(np.zeros((10, 0)))
    assert binner.n_features == 0 and binner.transform(np.zeros((10, 0))).shape == (10, 0)
    with pytest.raises(ValueError, match="column 1"):
        QuantileBinner(8).fit(np.array([[0.0, np.inf]]))
    with pytest.raises(ValueError, match="fitted on 4 features"):
        QuantileBinner(8).fit(_data()).transform(np.zeros((3, 2)))
    restored = QuantileBinner.from_dict(QuantileBinner(8).fit(_data()).to_dict())
    np.testing.assert_array_equal(restored.transform(_data()), QuantileBinner(8).fit(_data()).transform(_data()))
