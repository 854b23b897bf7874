"""Hetero LR and split NN model parts: saved by each party, loaded, they predict exactly as before.

Keys are 1024 bits with the explicit ``insecure_test_key`` flag (the platform's
``min_key_bits`` lowered to match), only to keep the test fast; prediction uses no key.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedacq.learn.hetero_lr import HeteroLRLender, HeteroLRPlatform
from fedacq.link.memory import memory_pair, run_parties

TEST_KEY_BITS = 1024  # test-only key size (see module docstring)


def _data(n: int = 300, seed: int = 3):
    rng = np.random.default_rng(seed)
    Xl = rng.normal(size=(n, 3))
    Xp = np.c_[rng.normal(size=(n, 3)), rng.integers(0, 4, size=n)]  # a categorical column for split NN
    eta = Xl[:, 0] - Xp[:, 1] + 0.5 * (Xp[:, 3] == 2)
    return Xl, Xp, eta, rng


def _predict(lender, platform, Xl, Xp):
    L, P = memory_pair("lender", "platform")
    out, _ = run_parties((lender.predict, L, Xl), (platform.serve_predict, P, Xp))
    return out


@pytest.mark.parametrize("objective", ["binary:logistic", "count:poisson"])
def test_hetero_lr_parts_reload_and_predict_the_same(objective, tmp_path):
    Xl, Xp, eta, rng = _data()
    y = (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(float) if objective == "binary:logistic" \
        else rng.poisson(np.exp(0.3 * eta)).astype(float)
    L, P = memory_pair("lender", "platform")
    lender = HeteroLRLender(objective=objective, max_iter=2, batch_size=64, key_bits=TEST_KEY_BITS,
                            insecure_test_key=True, n_jobs=1)
    platform = HeteroLRPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS)
    run_parties((lender.fit, L, Xl, y), (platform.fit, P, Xp))
    before = _predict(lender, platform, Xl, Xp)
    lender.save(tmp_path / "lender")
    platform.save(tmp_path / "platform")

    lender2 = HeteroLRLender.load(tmp_path / "lender")
    platform2 = HeteroLRPlatform.load(tmp_path / "platform")
    np.testing.assert_array_equal(_predict(lender2, platform2, Xl, Xp), before)
    assert lender2.get_params() == lender.get_params() and lender2.objective == objective
    assert lender2.n_features_in_ == 3 and lender2.n_platform_features_ == 4 and lender2.n_iter_ == 2
    # a file of another format, or none, is named in the error
    (tmp_path / "platform" / "hetero_lr_platform.json").write_text(json.dumps({"format": "something/9"}))
    with pytest.raises(ValueError, match="hetero_lr_platform.json: expected a model of format "
                                         "'fedacq.hetero_lr.platform/1', found 'something/9'"):
        HeteroLRPlatform.load(tmp_path / "platform")
    with pytest.raises(ValueError, match="hetero_lr_lender.json: cannot read"):
        HeteroLRLender.load(tmp_path / "platform")


def test_splitnn_parts_reload_and_predict_the_same(tmp_path):
    pytest.importorskip("torch")
    from fedacq.learn.splitnn import SplitNNLender, SplitNNPlatform

    Xl, Xp, eta, rng = _data()
    y = (rng.random(len(eta)) < 1 / (1 + np.exp(-eta))).astype(float)
    params = {"hidden_layer_sizes": [8], "embedding_dim": 4, "top_layer_sizes": [4], "batch_size": 64,
              "max_iter": 2}
    L, P = memory_pair("lender", "platform")
    lender, platform = SplitNNLender(**params), SplitNNPlatform()
    run_parties((lender.fit, L, Xl, y), (platform.fit, P, Xp))
    assert platform.columns_.categorical == [3]  # the DeepFM bottom, with its embeddings
    before = _predict(lender, platform, Xl, Xp)
    lender.save(tmp_path / "lender")
    platform.save(tmp_path / "platform")

    lender2, platform2 = SplitNNLender.load(tmp_path / "lender"), SplitNNPlatform.load(tmp_path / "platform")
    np.testing.assert_array_equal(_predict(lender2, platform2, Xl, Xp), before)
    assert lender2.params == lender.params and lender2.n_iter_ == lender.n_iter_
    # the weights are plain arrays: a member that is not (a pickled object array) is refused, not run
    np.savez(tmp_path / "platform" / "splitnn_platform.npz", **{"bottom.x": np.array([object()], dtype=object)})
    with pytest.raises(ValueError, match="splitnn_platform.npz: cannot read the weights"):
        SplitNNPlatform.load(tmp_path / "platform")
