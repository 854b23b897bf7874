"""SecureBoost reproduces XGBoost ``hist`` tree for tree.

Keys here are 512/1024 bits with ``insecure_test_key=True``: only to keep the
suite fast; the arithmetic under test is identical for 2048-bit keys.
"""

import re

import numpy as np
import pandas as pd
import pytest
import xgboost

from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.link.memory import memory_pair, run_parties

DATA = "/work/shared/datasets/fate/default_credit_hetero_{}.csv"


def train(Xl, Xp, y, key_bits=512, **params):
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(key_bits=key_bits, insecure_test_key=True, n_jobs=1, **params)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=key_bits)  # small test keys: speed only
    run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=600)
    proba, _ = run_parties((lender.predict, la, Xl), (platform.serve_predict, pa, Xp), timeout=600)
    return lender, platform, proba


def xgb_reference(X, y, n_estimators, **params):
    p = {"tree_method": "hist", "max_bin": params.pop("max_bin", 32), **params}
    dm = xgboost.QuantileDMatrix(X, label=y, max_bin=p["max_bin"])
    booster = xgboost.train(p, dm, n_estimators)
    return booster, booster.predict(xgboost.DMatrix(X))


def splits_of_dump(dump: str) -> list[tuple[int, int, float]]:
    """(node id, feature, threshold) of every split in an XGBoost text dump."""
    return sorted((int(n), int(f), float(t)) for n, f, t in re.findall(r"(\d+):\[f(\d+)<([^\]]+)\]", dump))


def splits_of_fedacq(tree, lender, platform_tree, d_l):
    out = []
    for i in range(tree.n_nodes):
        if tree.party[i] == 0:
            out.append((i, tree.feature[i], tree.threshold[i]))
        elif tree.party[i] == 1:
            out.append((i, d_l + platform_tree.feature[i], platform_tree.threshold[i]))
    return out


def synthetic(n=600, seed=0, missing=0.1):
    rng = np.random.default_rng(seed)
    Xl = rng.normal(size=(n, 3))
    Xp = np.column_stack([rng.normal(size=n), rng.integers(0, 5, n), rng.exponential(size=n)])
    logit = Xl[:, 0] - Xp[:, 0] + 0.5 * Xp[:, 1] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    Xl[rng.random(Xl.shape) < missing] = np.nan
    Xp[rng.random(Xp.shape) < missing] = np.nan
    return Xl, Xp, y


@pytest.mark.parametrize("params", [
    {},
    {"reg_lambda": 3.0, "reg_alpha": 0.5, "gamma": 0.8, "min_child_weight": 4.0, "max_depth": 4},
    {"objective": "reg:squarederror", "max_bin": 16},
])
def test_joint_model_equals_xgboost_with_missing_values(params):
    Xl, Xp, y = synthetic()
    if params.get("objective") == "reg:squarederror":
        y = y * 3 + np.nan_to_num(Xp[:, 0])
    base = {"n_estimators": 4, "max_depth": 3, "learning_rate": 0.3, "max_bin": 32, **params}
    lender, platform, pred = train(Xl, Xp, y, **base)
    xparams = {k: v for k, v in base.items() if k != "n_estimators"}
    xparams.setdefault("objective", "binary:logistic")
    booster, ref = xgb_reference(np.hstack([Xl, Xp]), y, base["n_estimators"], **xparams)
    np.testing.assert_allclose(pred, ref, rtol=0, atol=2e-6)
    for t, dump in enumerate(booster.get_dump()):
        got = splits_of_fedacq(lender.trees_[t], lender, platform.trees_[t], Xl.shape[1])
        want = splits_of_dump(dump)
        assert [(i, f) for i, f, _ in got] == [(i, f) for i, f, _ in want], f"tree {t}"
        np.testing.assert_allclose([c for *_, c in got], [c for *_, c in want], rtol=1e-6)


def test_default_credit_first_trees_match_xgboost_dump():
    """The real dataset, FATE's settings, the first trees: same split features and cut points."""
    guest, host = pd.read_csv(DATA.format("guest")), pd.read_csv(DATA.format("host"))
    y = guest["y"].to_numpy(float)
    Xl = guest.drop(columns=["id", "y"]).to_numpy()
    Xp = host.drop(columns=["id"]).to_numpy()
    lender, platform, pred = train(Xl, Xp, y, key_bits=1024, n_estimators=2, max_depth=3,
                                   learning_rate=0.3, max_bin=32)
    booster, ref = xgb_reference(np.hstack([Xl, Xp]), y, 2, max_depth=3, eta=0.3,
                                 objective="binary:logistic")
    np.testing.assert_allclose(pred, ref, atol=2e-6)
    for t, dump in enumerate(booster.get_dump()):
        got = splits_of_fedacq(lender.trees_[t], lender, platform.trees_[t], Xl.shape[1])
        want = splits_of_dump(dump)
        assert [(i, f) for i, f, _ in got] == [(i, f) for i, f, _ in want]
        np.testing.assert_allclose([c for *_, c in got], [c for *_, c in want], rtol=1e-6)
    assert {tr.party[0] for tr in lender.trees_} == {1}  # the root splits on the platform's features


def test_sampling_and_early_stopping():
    Xl, Xp, y = synthetic(n=500, seed=3)
    Xl_v, Xp_v, y_v = synthetic(n=200, seed=4)
    seen = []
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(n_estimators=40, max_depth=3, learning_rate=1.0, subsample=0.7,
                               colsample_bytree=0.5, early_stopping_rounds=2, key_bits=512,
                               insecure_test_key=True, n_jobs=2, callback=lambda t, m: seen.append(t))
    # background randomness and histogram worker processes; small test key: speed only
    platform = SecureBoostPlatform(n_jobs=2, min_key_bits=512)
    run_parties((lender.fit, la, Xl, y, (Xl_v, y_v)), (platform.fit, pa, Xp, Xp_v), timeout=600)
    assert len(seen) < 40, "early stopping never triggered"
    assert len(lender.trees_) == lender.best_iteration_ + 1 == len(platform.trees_)
    assert all("valid_auc" in h and "train_logloss" in h for h in lender.history_)
    losses = [h["valid_logloss"] for h in lender.history_]
    assert min(losses) == losses[lender.best_iteration_]
    # the federated prediction on the validation rows uses the kept trees only
    proba, _ = run_parties((lender.predict_proba, la, Xl_v), (platform.serve_predict, pa, Xp_v), timeout=600)
    margin = np.log(proba / (1 - proba))
    assert np.all(np.isfinite(margin))


def test_row_count_mismatch_is_refused():
    Xl, Xp, y = synthetic(n=100)
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(n_estimators=1, key_bits=512, insecure_test_key=True, n_jobs=1)
    with pytest.raises(ValueError, match="row counts differ"):
        run_parties((lender.fit, la, Xl, y), (SecureBoostPlatform(min_key_bits=512).fit, pa, Xp[:90]), timeout=60)


@pytest.mark.parametrize("params, error", [
    ({"objective": "multi:softmax"}, "objective"),
    ({"mode": "both"}, "mode"),
    ({"leaf_noise": {"mechanism": "laplace", "epsilon": 1.0}}, "prospect"),
    ({"mode": "prospect", "leaf_noise": {"mechanism": "gaussian", "epsilon": 1.0}}, "delta"),
    ({"key_bits": 1024}, "below 2048"),
])
def test_parameter_validation(params, error):
    """Parameters are checked when fit starts (scikit-learn's contract: __init__ only stores them)."""
    lender = SecureBoostLender(**params)
    la, pa = memory_pair("lender", "platform")
    with pytest.raises(ValueError, match=error):
        lender.fit(la, np.zeros((3, 1)), np.array([0.0, 1.0, 0.0]))


def test_platform_refuses_an_undeclared_short_key():
    import json

    from fedacq.crypto.paillier import generate_keypair
    from fedacq.link.message import Message

    pk, _ = generate_keypair(512, insecure_test_key=True)  # test-only size, the point of the test
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(key_bits=512)
    config = {"params": lender.get_params(), "public_key": pk.to_json(),
              "layout": {"frac_bits": 40, "slot_bits": 50, "count_bits": 8}, "n_rows": 3,
              "n_eval_rows": 0, "insecure_test_key": False}
    la.send(Message("sb.hello", {"config": json.dumps(config)}))
    with pytest.raises(ValueError, match="512 bits"):
        SecureBoostPlatform(n_jobs=1).fit(pa, np.zeros((3, 1)))


def test_thirty_trees_do_not_drift_from_xgboost():
    """FATE's settings over 30 trees on a slice of default_credit: predictions stay XGBoost's."""
    guest, host = pd.read_csv(DATA.format("guest"), nrows=3000), pd.read_csv(DATA.format("host"), nrows=3000)
    y = guest["y"].to_numpy(float)
    Xl = guest.drop(columns=["id", "y"]).to_numpy()
    Xp = host.drop(columns=["id"]).to_numpy()
    lender, platform, pred = train(Xl, Xp, y, n_estimators=30, max_depth=3, learning_rate=0.3, max_bin=32)
    _, ref = xgb_reference(np.hstack([Xl, Xp]), y, 30, max_depth=3, eta=0.3, objective="binary:logistic")
    np.testing.assert_allclose(pred, ref, atol=1e-5)
    from sklearn.metrics import roc_auc_score

    assert abs(roc_auc_score(y, pred) - roc_auc_score(y, ref)) < 1e-6
    assert lender.history_[-1]["train_auc"] == pytest.approx(roc_auc_score(y, pred), abs=1e-6)
