"""The scikit-learn estimators with the platform's side run locally (LocalPlatform) or over gRPC.

Small Paillier keys (512 bits) with ``insecure_test_key=True`` and a platform whose
``min_key_bits`` is 512: these tests check the estimator contract and row alignment,
not the cryptography (tests/test_secureboost_*.py do that with real key sizes), and a
2048-bit key would make each of the ~20 fits here cost seconds. ``n_jobs=1``: no
process pool per fit (start-up would dominate at this size).
"""

from __future__ import annotations

import inspect
import socket

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

import fedacq
from fedacq.learn.estimator_base import PeerRefused

TEST_KEY = {"key_bits": 512, "insecure_test_key": True, "n_jobs": 1}


def _platform(features=None):
    return fedacq.LocalPlatform(features, min_key_bits=512, n_jobs=1)


@pytest.fixture(scope="module")
def data():
    """A platform of 400 users (ids not in order), a lender holding 300 of them; y from both sides."""
    rng = np.random.default_rng(7)
    ids = pd.Index(rng.choice(10**9, size=400, replace=False).astype(np.int64), name="user_id")
    platform = pd.DataFrame(rng.normal(size=(400, 3)), index=ids, columns=["watch", "shop", "tips"])
    lender_ids = pd.Index(rng.permutation(ids)[:300], name="user_id")
    lender = pd.DataFrame(rng.normal(size=(300, 2)), index=lender_ids, columns=["income", "age"])
    score = platform.loc[lender_ids, "watch"].to_numpy() + lender["income"].to_numpy()
    y = (score + rng.normal(scale=0.5, size=300) > 0).astype(int)
    return platform, lender, y, score


def test_grid_search_cv_with_the_local_platform(data) -> None:
    """The issue's done-when: GridSearchCV over max_depth, each fold's rows aligned by the joint id."""
    platform, lender, y, _ = data
    clf = fedacq.SecureBoostClassifier(n_estimators=3, peer=_platform(platform), **TEST_KEY)
    search = GridSearchCV(clf, {"max_depth": [2, 3]}, cv=2, scoring="roc_auc").fit(lender, y)
    assert search.best_params_["max_depth"] in (2, 3)
    assert search.best_score_ > 0.8  # only possible if the platform's rows follow the lender's ids
    assert search.best_estimator_.predict_proba(lender.iloc[:10]).shape == (10, 2)


def test_pipeline_keeps_the_index_with_pandas_output(data) -> None:
    """In a Pipeline, transformers must output DataFrames (set_output) so the joint id reaches the model."""
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    platform, lender, y, _ = data
    pipe = make_pipeline(StandardScaler(), fedacq.SecureBoostClassifier(n_estimators=2, peer=_platform(platform),
                                                                        **TEST_KEY))
    assert pipe.set_output(transform="pandas").fit(lender, y).score(lender, y) > 0.8
    with pytest.raises(PeerRefused, match="cannot be aligned"):
        pipe.set_output(transform="default").fit(lender, y)


def test_rows_follow_the_index_not_the_order(data) -> None:
    """Shuffling the lender's rows shuffles the predictions the same way: alignment is by id."""
    platform, lender, y, _ = data
    clf = fedacq.SecureBoostClassifier(n_estimators=3, peer=_platform(platform), **TEST_KEY).fit(lender, y)
    p = clf.predict_proba(lender)
    order = np.random.default_rng(0).permutation(len(lender))
    np.testing.assert_array_equal(clf.predict_proba(lender.iloc[order]), p[order])
    assert set(clf.predict(lender)) <= {0, 1}
    assert clf.n_features_in_ == 2 and list(clf.feature_names_in_) == ["income", "age"]


def test_ou_fits_against_a_platform_that_accepts_it(data) -> None:
    """scheme="ou" needs the platform's opt-in (schemes), then trains the trees Paillier does.

    OU test key of 1024 bits: the smallest whose plaintext space holds the packed gradient
    entries of these rows (see tests/test_secureboost_ou.py)."""
    platform, lender, y, _ = data
    ou_key = {**TEST_KEY, "key_bits": 1024}
    paillier_only = fedacq.LocalPlatform(platform, min_key_bits=512, n_jobs=1)
    with pytest.raises(ValueError, match=r"scheme 'ou' is not in this node's policy schemes \['paillier'\]"):
        fedacq.SecureBoostClassifier(n_estimators=2, scheme="ou", peer=paillier_only, **ou_key).fit(lender, y)
    assert paillier_only.server.model_ids() == []
    both = fedacq.LocalPlatform(platform, min_key_bits=512, schemes=("paillier", "ou"), n_jobs=1)
    ou = fedacq.SecureBoostClassifier(n_estimators=2, scheme="ou", peer=both, **ou_key).fit(lender, y)
    paillier = fedacq.SecureBoostClassifier(n_estimators=2, peer=both, **TEST_KEY).fit(lender, y)
    np.testing.assert_allclose(ou.predict_proba(lender), paillier.predict_proba(lender), rtol=1e-6)
    with pytest.raises(ValueError, match="schemes"):
        fedacq.LocalPlatform(platform, schemes=("rsa",))


def test_refusals_name_the_cause_and_change_nothing(data) -> None:
    platform, lender, y, _ = data
    peer = _platform(platform)
    clf = fedacq.SecureBoostClassifier(n_estimators=2, peer=peer, **TEST_KEY)
    with pytest.raises(PeerRefused, match="numpy X of 300 rows cannot be aligned"):
        clf.fit(lender.to_numpy(), y)
    unknown = lender.rename(index={lender.index[0]: -1})
    with pytest.raises(PeerRefused, match="1 of 300 user ids are not among this platform's users"):
        clf.fit(unknown, y)
    with pytest.raises(ValueError, match="indexed by the joint user id as integers"):
        clf.fit(lender.set_axis(lender.index.astype(str)), y)
    with pytest.raises(PeerRefused, match="cannot be aligned"):  # an unnamed index is pandas' row numbering
        clf.fit(lender.reset_index(drop=True), y)
    assert peer.server.model_ids() == []
    strict = fedacq.LocalPlatform(platform)  # its own policy: keys of 2048 bits at least
    with pytest.raises(ValueError, match="accepts at least 2048"):
        fedacq.SecureBoostClassifier(n_estimators=2, peer=strict, **TEST_KEY).fit(lender, y)
    assert strict.server.model_ids() == []
    with pytest.raises(ValueError, match="peer is None"):
        fedacq.SecureBoostClassifier(**TEST_KEY).fit(lender, y)
    # numpy X is read as all the platform's users, in its order
    full = pd.DataFrame(np.zeros((len(platform), 1)), columns=["x"])
    clf.fit(full, np.arange(len(platform)) % 2)
    assert clf.predict_proba(full).shape == (len(platform), 2)


def test_params_clone_and_role_defaults(data) -> None:
    """get_params lists every parameter (the role's, plus peer), clone shares the peer handle."""
    from fedacq.learn import secureboost_params as sb_params

    platform = _platform(data[0])
    clf = fedacq.SecureBoostClassifier(max_depth=4, peer=platform)
    params = clf.get_params()
    wanted = (set(sb_params.TRAIN) | set(sb_params.JOB) | set(sb_params.LOCAL)) - {"num_class"}
    assert set(params) == wanted | {"peer"}
    defaults = {k: p.default for k, p in inspect.signature(fedacq.SecureBoostClassifier).parameters.items()}
    assert {k: v for k, v in defaults.items() if k not in ("peer", "objective")} == \
        {k: v for k, v in {**sb_params.TRAIN, **sb_params.JOB, **sb_params.LOCAL}.items() if k in defaults
         and k != "objective"}
    twin = clone(clf)
    assert twin.get_params() == params and twin.peer is platform
    assert twin.set_params(max_depth=2).max_depth == 2 and clf.max_depth == 4
    # no validation in __init__: a bad value is stored as given and refused by fit
    bad = fedacq.SecureBoostClassifier(n_estimators=0, peer=platform, **TEST_KEY)
    assert bad.n_estimators == 0
    with pytest.raises(ValueError, match="n_estimators"):
        bad.fit(data[1], data[2])


def test_evals_result_best_iteration_multiclass_and_regression(data) -> None:
    platform, lender, y, score = data
    peer = _platform(platform)
    train, valid = lender.iloc[:200], lender.iloc[200:]
    clf = fedacq.SecureBoostClassifier(n_estimators=4, early_stopping_rounds=2, peer=peer, **TEST_KEY)
    clf.fit(train, y[:200], eval_set=[(valid, y[200:])])
    assert set(clf.evals_result_["validation_0"]) >= {"logloss", "auc"}
    assert 0 <= clf.best_iteration_ < 4
    k3 = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]))
    multi = fedacq.SecureBoostClassifier(n_estimators=2, peer=peer, **TEST_KEY).fit(lender, np.array(["a", "b", "c"])[k3])
    proba = multi.predict_proba(lender.iloc[:5])
    assert proba.shape == (5, 3) and np.allclose(proba.sum(axis=1), 1)
    assert list(multi.classes_) == ["a", "b", "c"]
    reg = fedacq.SecureBoostRegressor(n_estimators=3, peer=peer, **TEST_KEY).fit(train, score[:200],
                                                                                 eval_set=[(valid, score[200:])])
    assert reg.predict(valid).shape == (100,) and reg.score(valid, score[200:]) > 0.5
    assert "rmse" in reg.evals_result_["validation_0"]
    tweedie = fedacq.SecureBoostRegressor(objective="reg:tweedie", n_estimators=2, peer=peer, **TEST_KEY)
    tweedie.fit(train, np.exp(score[:200]), eval_set=[(valid, np.exp(score[200:]))])
    assert list(tweedie.evals_result_["validation_0"]) == ["tweedie-nloglik@1.5"]  # XGBoost's name
    assert (tweedie.predict(valid) > 0).all()


def _save_load_roundtrip(est, peer, platform, X, tmp_path, method: str) -> None:
    before = getattr(est, method)(X)
    est.save_model(tmp_path / "lender")
    peer.save_model(est.model_id_, tmp_path / "platform")
    fresh = _platform(platform)
    assert fresh.load_model(tmp_path / "platform") == est.model_id_
    loaded = type(est)(peer=fresh).load_model(tmp_path / "lender")
    assert loaded.get_params() == {**est.get_params(), "peer": fresh}
    np.testing.assert_allclose(getattr(loaded, method)(X), before, rtol=1e-6)
    assert list(loaded.feature_names_in_) == list(est.feature_names_in_)


def test_save_and_load_both_roles_secureboost(data, tmp_path) -> None:
    platform, lender, y, _ = data
    peer = _platform(platform)
    clf = fedacq.SecureBoostClassifier(n_estimators=2, peer=peer, **TEST_KEY).fit(lender, y)
    _save_load_roundtrip(clf, peer, platform, lender.iloc[:50], tmp_path, "predict_proba")


def test_hetero_lr_estimators(data, tmp_path) -> None:
    platform, lender, y, score = data
    peer = _platform(platform)
    clf = fedacq.HeteroLogisticRegression(max_iter=3, batch_size=128, peer=peer, **TEST_KEY).fit(lender, y)
    assert clf.predict_proba(lender).shape == (300, 2) and clf.score(lender, y) > 0.7
    assert clf.coef_.shape == (2,)
    _save_load_roundtrip(clf, peer, platform, lender.iloc[:50], tmp_path / "lr", "predict_proba")
    reg = fedacq.HeteroLinearRegression(max_iter=3, batch_size=128, peer=peer, **TEST_KEY)
    assert reg.fit(lender, score).predict(lender).shape == (300,)


def test_split_nn_estimator(data, tmp_path) -> None:
    pytest.importorskip("torch")
    platform, lender, y, _ = data
    peer = _platform(platform)
    clf = fedacq.SplitNNClassifier(max_iter=2, init_seed=3, peer=peer).fit(lender, y)
    assert clf.predict_proba(lender).shape == (300, 2)
    _save_load_roundtrip(clf, peer, platform, lender.iloc[:50], tmp_path, "predict_proba")


def test_split_nn_estimator_imports_without_torch() -> None:
    """The estimator module imports no torch: only a fit does (the ``nn`` extra)."""
    import subprocess
    import sys

    code = ("import sys, fedacq; fedacq.SplitNNClassifier(); "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpc_platform_two_premises(data, tmp_path) -> None:
    """The same estimator against a platform served over mutual TLS on 127.0.0.1."""
    from fedacq.crypto.tls import init_certs
    from fedacq.learn.local_peer import GrpcPlatform, PlatformPeer

    platform, lender, y, _ = data
    certs = init_certs(["lender", "platform"], tmp_path / "ca")
    lender_port = _free_port()
    errors: list[BaseException] = []
    server = PlatformPeer(platform, min_key_bits=512, n_jobs=1)
    endpoint = server.serve_grpc(certs["platform"], "127.0.0.1:0", f"127.0.0.1:{lender_port}", on_error=errors.append)
    try:
        peer = GrpcPlatform(certs["lender"], f"127.0.0.1:{lender_port}", f"127.0.0.1:{endpoint.port}")
        clf = fedacq.SecureBoostClassifier(n_estimators=2, peer=peer, **TEST_KEY).fit(lender, y)
        local = fedacq.SecureBoostClassifier(n_estimators=2, peer=_platform(platform), **TEST_KEY).fit(lender, y)
        np.testing.assert_array_equal(clf.predict_proba(lender.iloc[:20]), local.predict_proba(lender.iloc[:20]))
        assert server.model_ids() == [clf.model_id_] and clone(clf).peer is peer
    finally:
        endpoint.stop()
    assert errors == []
