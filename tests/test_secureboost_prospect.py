"""Prospect mode: the platform ends with a complete model, exported to XGBoost JSON.

512-bit keys (``insecure_test_key=True``, platform ``min_key_bits=512``) only for speed.
"""

import json

import numpy as np
import pytest
import xgboost

from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.link.memory import memory_pair, run_parties


def _fit(leaf_noise=None, objective="binary:logistic", mode="prospect", seed=2, random_state=0, record=False):
    rng = np.random.default_rng(seed)
    n = 500
    Xp = rng.normal(size=(n, 4))
    Xp[rng.random(Xp.shape) < 0.15] = np.nan
    signal = np.nan_to_num(Xp[:, 0]) - 0.5 * np.nan_to_num(Xp[:, 2])
    y = (signal + rng.normal(size=n) > 0).astype(float)
    if objective == "reg:squarederror":
        y = signal * 2 + rng.normal(size=n)
    Xl = rng.normal(size=(n, 2))  # the lender's own features: unused by a prospect model
    la, pa = memory_pair("lender", "platform", record=record)
    lender = SecureBoostLender(n_estimators=5, max_depth=3, mode=mode, objective=objective,
                               leaf_noise=leaf_noise, key_bits=512, insecure_test_key=True, n_jobs=1,
                               random_state=random_state)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=512, mode=mode)
    run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=300)
    if record:
        platform.received_ = pa.received
    return lender, platform, Xl, Xp, y


@pytest.mark.parametrize("objective", ["binary:logistic", "reg:squarederror"])
def test_exported_model_predicts_like_fedacq_and_like_xgboost(tmp_path, objective):
    lender, platform, Xl, Xp, y = _fit(objective=objective)
    path = platform.export_xgboost_json(tmp_path / "prospect.json", feature_names=["a", "b", "c", "d"])
    booster = xgboost.Booster(model_file=str(path))
    rng = np.random.default_rng(9)
    unseen = rng.normal(size=(300, 4))
    unseen[rng.random(unseen.shape) < 0.2] = np.nan
    for X in (Xp, unseen):
        got = booster.predict(xgboost.DMatrix(X, feature_names=["a", "b", "c", "d"]))
        np.testing.assert_allclose(got, platform.predict_local(X), rtol=0, atol=1e-6)
    # without noise, the released model is XGBoost trained on the platform's columns alone
    ref = xgboost.train({"tree_method": "hist", "max_bin": 32, "max_depth": 3, "eta": 0.3,
                         "objective": objective},
                        xgboost.QuantileDMatrix(Xp, label=y, max_bin=32), 5)
    np.testing.assert_allclose(ref.predict(xgboost.DMatrix(Xp)), platform.predict_local(Xp), atol=1e-5)


def test_leaf_noise_changes_released_values_not_the_lender_model():
    exact, p_exact, *_ = _fit()
    noisy, p_noisy, Xl, Xp, y = _fit(leaf_noise={"mechanism": "gaussian", "epsilon": 50.0, "delta": 1e-5})
    true_values = np.concatenate([[tr.value[i] for i in tr.leaves()] for tr in noisy.trees_])
    released = np.concatenate([[tr.value[i] for i in tr.leaves()] for tr in p_noisy.trees_])
    assert not np.allclose(true_values, released)
    np.testing.assert_allclose(released, noisy.released_leaf_values_)
    # same data and structure: the lender's own leaf values are those of the exact run
    np.testing.assert_allclose(true_values,
                               np.concatenate([[tr.value[i] for i in tr.leaves()] for tr in exact.trees_]))
    assert np.max(np.abs(p_noisy.predict_local(Xp) - p_exact.predict_local(Xp))) > 1e-4


def test_saved_parts_are_json_and_joint_models_do_not_export(tmp_path):
    lender, platform, Xl, Xp, y = _fit(mode="joint")
    doc_l = json.loads(lender.save(tmp_path / "lender").read_text())
    doc_p = json.loads(platform.save(tmp_path / "platform").read_text())
    assert len(doc_l["trees"]) == len(doc_p["trees"]) == 5
    assert doc_p["base_margin"] is None  # a joint platform never learns the leaf values
    assert all(v == 0.0 for tr in doc_p["trees"] for v in tr["value"])
    # reloaded parts give the same federated prediction
    la, pa = memory_pair("lender", "platform")
    before, _ = run_parties((lender.predict_proba, la, Xl), (platform.serve_predict, pa, Xp), timeout=60)
    l2 = SecureBoostLender.load(tmp_path / "lender")
    p2 = SecureBoostPlatform.load(tmp_path / "platform")
    after, _ = run_parties((l2.predict_proba, la, Xl), (p2.serve_predict, pa, Xp), timeout=60)
    np.testing.assert_array_equal(before, after)
    with pytest.raises(ValueError, match="prospect"):
        platform.export_xgboost_json(tmp_path / "x.json")
    with pytest.raises(ValueError, match="prospect"):
        platform.predict_local(Xp)


def _leaves(trees):
    return np.concatenate([[tr.value[i] for i in tr.leaves()] for tr in trees])


def test_a_platform_that_knows_the_seed_cannot_remove_the_leaf_noise():
    """The platform holds random_state (sb.hello) and every message: the noise is still not its to regenerate."""
    noise = {"mechanism": "laplace", "epsilon": 1.0}
    first, p_first, *_ = _fit(leaf_noise=noise, random_state=7, record=True)
    second, p_second, *_ = _fit(leaf_noise=noise, random_state=7)
    exact = _leaves(first.trees_)
    np.testing.assert_array_equal(exact, _leaves(second.trees_))  # same seed, same trees and true leaves
    released = [_leaves(p.trees_) for p in (p_first, p_second)]
    assert not np.allclose(released[0], released[1])  # same seed, different noise: not a function of it
    # the old attack: regenerate default_rng(random_state) noise from what crossed, subtract it
    hello = next(m for m in p_first.received_ if m.type == "sb.hello")
    params = json.loads(hello.header["config"])["params"]
    assert params["random_state"] == 7 and params["leaf_noise"] == noise
    scale = params["learning_rate"] / params["reg_lambda"] / (noise["epsilon"] / len(p_first.trees_))
    guess = released[0] - np.random.default_rng(params["random_state"]).laplace(0.0, scale, len(exact))
    assert np.min(np.abs(guess - exact)) > 1e-12  # no leaf recovered, not even one
    assert np.median(np.abs(guess - exact)) > 0.1 * scale
