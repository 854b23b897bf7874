"""SecureBoost under Okamoto–Uchiyama: the same trees as under Paillier and as XGBoost's, and the
platform's policy decides whether it takes an OU key at all.

Keys are test keys (``insecure_test_key=True``) only to keep the suite fast: Paillier 512 bits,
OU 1024 bits (the smallest whose plaintext space, 212 bits, holds the 114-bit packed gradient entry
of 600 rows; 768 bits would leave 127). The arithmetic under test is the same at 2048 bits.
"""

import re

import numpy as np
import pytest
import xgboost

from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.link.memory import memory_pair, run_parties

KEY_BITS = {"paillier": 512, "ou": 1024}


def synthetic(n=600, seed=3):
    rng = np.random.default_rng(seed)
    Xl = rng.normal(size=(n, 2))
    Xp = np.column_stack([rng.normal(size=n), rng.integers(0, 5, n)])
    logit = Xl[:, 0] - Xp[:, 0] + 0.5 * Xp[:, 1] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    Xp[rng.random(Xp.shape) < 0.1] = np.nan
    return Xl, Xp, y


def train(scheme, Xl, Xp, y, **params):
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(scheme=scheme, key_bits=KEY_BITS[scheme], insecure_test_key=True, n_jobs=1,
                               **params)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=KEY_BITS[scheme], schemes=(scheme,))
    run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=600)
    pred, _ = run_parties((lender.predict, la, Xl), (platform.serve_predict, pa, Xp), timeout=600)
    return lender, platform, pred


def splits(lender, platform, d_l):
    """(node, global feature, threshold) of every split of every tree, and the leaf values."""
    out = []
    for tree, ptree in zip(lender.trees_, platform.trees_):
        nodes = [(i, tree.feature[i], tree.threshold[i]) if tree.party[i] == 0 else
                 (i, d_l + ptree.feature[i], ptree.threshold[i])
                 for i in range(tree.n_nodes) if tree.party[i] in (0, 1)]
        out.append((nodes, [tree.value[leaf] for leaf in tree.leaves()]))
    return out


def test_ou_trees_equal_paillier_and_xgboost():
    Xl, Xp, y = synthetic()
    params = {"n_estimators": 2, "max_depth": 3, "learning_rate": 0.3, "max_bin": 16}
    runs = {scheme: train(scheme, Xl, Xp, y, **params) for scheme in ("paillier", "ou")}
    assert runs["ou"][0].public_key_.scheme == "ou" and runs["ou"][0].get_params()["scheme"] == "ou"
    assert splits(*runs["ou"][:2], 2) == splits(*runs["paillier"][:2], 2)
    np.testing.assert_array_equal(runs["ou"][2], runs["paillier"][2])

    X = np.hstack([Xl, Xp])
    dm = xgboost.QuantileDMatrix(X, label=y, max_bin=16)
    booster = xgboost.train({"tree_method": "hist", "objective": "binary:logistic", "max_depth": 3,
                             "learning_rate": 0.3, "max_bin": 16}, dm, 2)
    np.testing.assert_allclose(runs["ou"][2], booster.predict(xgboost.DMatrix(X)), rtol=0, atol=2e-6)
    for (nodes, _), dump in zip(splits(*runs["ou"][:2], 2), booster.get_dump()):
        want = sorted((int(n), int(f)) for n, f in re.findall(r"(\d+):\[f(\d+)<", dump))
        assert sorted((i, f) for i, f, _ in nodes) == want


def test_an_ou_key_is_refused_when_the_platform_does_not_list_ou():
    Xl, Xp, y = synthetic(n=50)
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(scheme="ou", key_bits=1024, insecure_test_key=True, n_jobs=1, n_estimators=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=1024)  # its policy: Paillier only
    with pytest.raises(ValueError, match=r"sb.hello: scheme 'ou' is not in this node's policy schemes "
                                         r"\['paillier'\]"):
        run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=120)


def test_too_many_rows_for_the_ou_plaintext_are_refused_before_anything_is_sent():
    """A 768-bit test key has 127 plaintext bits; 32,000 rows need 129-bit gradient entries: the lender
    refuses with the numbers before sending anything (at 2048 bits OU holds 553: never hit)."""
    n = 32_000
    la, _pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(scheme="ou", key_bits=768, insecure_test_key=True, n_jobs=1, n_estimators=1)
    with pytest.raises(ValueError, match=r"secureboost: 32000 rows need 129 plaintext bits; the ou key has 127"):
        lender.fit(la, np.zeros((n, 1)), np.arange(n) % 2)
    assert la.stats()["messages_sent"] == 0
