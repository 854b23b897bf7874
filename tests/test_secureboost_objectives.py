"""Every XGBoost objective in SecureBoost equals XGBoost 3.2 ``hist``: joint and prospect, memory link and gRPC.

For each objective the federated model's train metric (XGBoost's default
metric, by XGBoost's name) equals ``xgboost.train`` with the same parameters on
the joined data (relative difference <= 1e-4), the predictions agree, and in
prospect mode the platform's XGBoost JSON export predicts the same in stock
XGBoost. The gRPC cases use the real transport (mutual TLS, two endpoints on
127.0.0.1 in this process) - the cheapest route to the same bytes a node sends.

Keys are 512 bits with ``insecure_test_key=True``: speed only, the arithmetic
under test is identical for 2048-bit keys.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import xgboost

from fedacq.learn import objectives
from fedacq.learn.metrics import metric_key
from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.link.memory import memory_pair, run_parties
from fedacq.link.message import Message

KEY_BITS = 512  # test-only size (insecure_test_key=True): speed only
TREE = {"n_estimators": 3, "max_depth": 3, "learning_rate": 0.3, "max_bin": 16}
CASES = {
    "binary:logistic": {},
    "reg:squarederror": {},
    "reg:tweedie": {"tweedie_variance_power": 1.3},
    "count:poisson": {},
    "multi:softprob": {"num_class": 3},
}


def data(objective: str, n: int = 160, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lender features (2), platform features (3, one integer-valued), a target fit for ``objective``; 10 % missing."""
    rng = np.random.default_rng(seed)
    Xl = rng.normal(size=(n, 2))
    Xp = np.column_stack([rng.normal(size=n), rng.integers(0, 5, n), rng.exponential(size=n)])
    z = 0.8 * Xl[:, 0] - Xp[:, 0] + 0.4 * Xp[:, 1] - 0.5
    if objective == "binary:logistic":
        y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(float)
    elif objective == "reg:squarederror":
        y = 3 * z + rng.normal(size=n)
    elif objective == "reg:tweedie":  # drawdown amounts: most users draw nothing
        y = np.where(rng.random(n) < 1 / (1 + np.exp(-z)), rng.gamma(2.0, 150.0 * np.exp(0.3 * z)), 0.0)
    elif objective == "count:poisson":
        y = rng.poisson(np.exp(0.5 * z)).astype(float)
    else:
        y = np.digitize(z + rng.normal(scale=0.5, size=n), [-1.0, 0.5]).astype(float)
    Xl[rng.random(Xl.shape) < 0.1] = np.nan
    Xp[rng.random(Xp.shape) < 0.1] = np.nan
    return Xl, Xp, y


@pytest.fixture(scope="module")
def grpc_pair(tmp_path_factory):
    """Two gRPC endpoints with mutual TLS on 127.0.0.1, started and stopped here."""
    from fedacq.crypto.tls import init_certs
    from fedacq.link.grpc_link import PeerEndpoint

    certs = init_certs(["lender", "platform"], tmp_path_factory.mktemp("certs") / "ca")
    a = PeerEndpoint("lender", "platform", certs["lender"], "127.0.0.1:0", liveness_interval=0.5, retry_for=5.0)
    b = PeerEndpoint("platform", "lender", certs["platform"], "127.0.0.1:0", liveness_interval=0.5, retry_for=5.0)
    a.connect(f"127.0.0.1:{b.port}")
    b.connect(f"127.0.0.1:{a.port}")
    a.start(), b.start()
    yield a, b
    a.stop(), b.stop()


_jobs = itertools.count()


def links(transport: str, grpc_pair=None):
    if transport == "memory":
        return memory_pair("lender", "platform")
    job = f"objectives-{next(_jobs)}"
    return grpc_pair[0].link(job), grpc_pair[1].link(job)


def train(la, pa, Xl, Xp, y, mode: str, **params):
    lender = SecureBoostLender(**TREE, **params, mode=mode, key_bits=KEY_BITS, insecure_test_key=True, n_jobs=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=KEY_BITS, mode=mode, objective=params["objective"],
                                   num_class=params.get("num_class"))
    run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=300)
    pred, _ = run_parties((lender.predict, la, Xl), (platform.serve_predict, pa, Xp), timeout=300)
    return lender, platform, pred


def xgb_train(X, y, weight=None, **params):
    """XGBoost ``hist`` with the same parameters; returns the booster and its train metrics by XGBoost's name."""
    obj = objectives.get(params["objective"], **{k: v for k, v in params.items() if k in objectives.PARAMS})
    p = {"tree_method": "hist", "max_depth": TREE["max_depth"], "eta": TREE["learning_rate"],
         "max_bin": TREE["max_bin"], "eval_metric": list(obj.metrics), **params}
    # the bins are cut from every row, weighted or not: the platform must not learn which rows carry a label
    cuts = xgboost.QuantileDMatrix(X, max_bin=TREE["max_bin"])
    dm = xgboost.QuantileDMatrix(X, label=y, weight=weight, max_bin=TREE["max_bin"], ref=cuts)
    evals: dict = {}
    booster = xgboost.train(p, dm, TREE["n_estimators"], evals=[(dm, "train")], evals_result=evals,
                            verbose_eval=False)
    return booster, {name: values[-1] for name, values in evals["train"].items()}


@pytest.mark.parametrize("transport", ["memory", "grpc"])
@pytest.mark.parametrize("mode", ["joint", "prospect"])
@pytest.mark.parametrize("objective", list(CASES))
def test_objective_equals_xgboost_hist(objective, mode, transport, grpc_pair, tmp_path):
    params = {"objective": objective, **CASES[objective]}
    Xl, Xp, y = data(objective)
    la, pa = links(transport, grpc_pair)
    lender, platform, pred = train(la, pa, Xl, Xp, y, mode, **params)
    X = np.hstack([Xl, Xp]) if mode == "joint" else Xp
    booster, want = xgb_train(X, y, **params)
    obj = objectives.get(objective, **CASES[objective])
    assert len(lender.trees_) == TREE["n_estimators"] * obj.n_groups
    assert set(want) == set(obj.metrics)
    for name, value in want.items():
        got = lender.history_[-1][metric_key("train", name)]
        assert got == pytest.approx(value, rel=1e-4), name
    config = json.loads(booster.save_config())["learner"]["learner_model_param"]
    base = np.array(json.loads(config["base_score"]), dtype=np.float32)
    np.testing.assert_array_equal(obj.prob_to_margin(base), lender.base_margin_)
    ref = booster.predict(xgboost.DMatrix(X))
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred, ref, rtol=1e-5, atol=1e-5)
    if mode == "prospect":
        np.testing.assert_allclose(platform.predict_local(Xp), pred, rtol=1e-6, atol=1e-7)
        path = platform.export_xgboost_json(tmp_path / "prospect.json")
        exported = xgboost.Booster(model_file=str(path)).predict(xgboost.DMatrix(Xp))
        np.testing.assert_allclose(exported, pred, rtol=1e-5, atol=1e-6)


def test_missing_labels_weigh_zero_as_xgboost_sample_weights():
    """A NaN label is a row outside the stage: XGBoost with weight 0 there (intercept, trees, metrics).

    XGBoost would also leave weight-0 rows out of its quantile cuts; here every row
    shapes the bins (the platform cuts its own features and must not learn which
    rows are labelled), so the reference uses unweighted cuts (``ref=``).
    """
    Xl, Xp, y = data("reg:tweedie", seed=3)
    y[np.random.default_rng(0).random(len(y)) < 0.3] = np.nan
    la, pa = memory_pair("lender", "platform")
    lender, _, pred = train(la, pa, Xl, Xp, y, "joint", objective="reg:tweedie")
    X = np.hstack([Xl, Xp])
    booster, want = xgb_train(X, np.nan_to_num(y), weight=(~np.isnan(y)).astype(float), objective="reg:tweedie")
    assert lender.history_[-1]["train_tweedie-nloglik_1.5"] == pytest.approx(want["tweedie-nloglik@1.5"], rel=1e-4)
    np.testing.assert_allclose(pred, booster.predict(xgboost.DMatrix(X)), rtol=1e-5)


def test_poisson_max_delta_step_also_clips_the_trees_when_set():
    """XGBoost applies a max_delta_step the user sets to the objective and to every leaf weight."""
    Xl, Xp, y = data("count:poisson", seed=5)
    la, pa = memory_pair("lender", "platform")
    params = {"objective": "count:poisson", "max_delta_step": 0.2}
    lender, _, pred = train(la, pa, Xl, Xp, y, "joint", **params)
    X = np.hstack([Xl, Xp])
    booster, want = xgb_train(X, y, **params)
    assert lender.history_[-1]["train_poisson-nloglik"] == pytest.approx(want["poisson-nloglik"], rel=1e-4)
    np.testing.assert_allclose(pred, booster.predict(xgboost.DMatrix(X)), rtol=1e-5)
    top = np.float32(0.2 * TREE["learning_rate"])
    assert max(abs(v) for tr in lender.trees_ for v in tr.value) == pytest.approx(top)  # the clip binds


def test_multiclass_early_stopping_keeps_whole_rounds():
    Xl, Xp, y = data("multi:softprob", seed=7)
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(objective="multi:softprob", num_class=3, n_estimators=4, max_depth=2,
                               early_stopping_rounds=1, learning_rate=2.0, key_bits=KEY_BITS,
                               insecure_test_key=True, n_jobs=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=KEY_BITS)
    eval_set = (Xl[:60], y[:60])
    run_parties((lender.fit, la, Xl, y, eval_set), (platform.fit, pa, Xp, Xp[:60]), timeout=300)
    assert len(lender.trees_) == 3 * (lender.best_iteration_ + 1) == len(platform.trees_)
    assert all("valid_mlogloss" in h and "valid_merror" in h for h in lender.history_)


@pytest.mark.parametrize("objective, y, error", [
    ("reg:tweedie", [1.0, -2.0, 0.0], "reg:tweedie needs non-negative labels"),
    ("count:poisson", [0.0, 0.0, 0.0], "count:poisson: every label is 0"),
    ("multi:softprob", [0.0, 1.5, 2.0], r"multi:softprob needs integer class labels in \[0, num_class=3\)"),
    ("multi:softprob", [0.0, 3.0, 2.0], r"multi:softprob needs integer class labels"),
    ("binary:logistic", [0.0, 2.0, 1.0], "binary:logistic needs labels 0/1"),
])
def test_labels_are_checked_per_objective(objective, y, error):
    with pytest.raises(ValueError, match=error):
        objectives.get(objective, num_class=3).check_labels(np.array(y))


def test_objective_parameters_are_checked():
    with pytest.raises(ValueError, match="tweedie_variance_power must be in"):
        objectives.get("reg:tweedie", tweedie_variance_power=2.0)
    with pytest.raises(ValueError, match="multi:softprob needs num_class"):
        objectives.get("multi:softprob")
    with pytest.raises(ValueError, match="num_class, an integer in"):
        objectives.get("multi:softprob", num_class=objectives.MAX_NUM_CLASS + 1)
    la, pa = memory_pair("lender", "platform")
    with pytest.raises(ValueError, match="leaf_noise is not available for reg:tweedie"):
        SecureBoostLender(objective="reg:tweedie", mode="prospect",
                          leaf_noise={"mechanism": "laplace", "epsilon": 1.0}).fit(la, np.zeros((3, 1)), np.ones(3))


def test_leaf_noise_per_objective():
    """Noise where the sensitivity argument holds (multi-class: every class's tree), a bound asked where needed."""
    la, pa = memory_pair("lender", "platform")
    with pytest.raises(ValueError, match="leaf_noise for count:poisson needs 'gradient_bound'"):
        SecureBoostLender(objective="count:poisson", mode="prospect",
                          leaf_noise={"mechanism": "laplace", "epsilon": 1.0}).fit(la, np.zeros((3, 1)), np.ones(3))
    Xl, Xp, y = data("multi:softprob", seed=9)
    lender = SecureBoostLender(**{**TREE, "n_estimators": 1}, objective="multi:softprob", num_class=3,
                               mode="prospect", leaf_noise={"mechanism": "laplace", "epsilon": 1.0},
                               key_bits=KEY_BITS, insecure_test_key=True, n_jobs=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=KEY_BITS, mode="prospect")
    run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=300)
    exact = np.concatenate([[tr.value[i] for i in tr.leaves()] for tr in lender.trees_])
    held = np.concatenate([[tr.value[i] for i in tr.leaves()] for tr in platform.trees_])
    assert len(platform.trees_) == 3
    np.testing.assert_array_equal(held, lender.released_leaf_values_)
    assert np.all(held != exact)


def _hello(**params) -> Message:
    from fedacq.crypto.paillier import generate_keypair

    pk, _ = generate_keypair(KEY_BITS, insecure_test_key=True)  # test-only size
    lender = SecureBoostLender(key_bits=KEY_BITS, **params)
    config = {"params": lender.get_params(), "public_key": pk.to_json(),
              "layout": {"frac_bits": 40, "slot_bits": 50, "count_bits": 8}, "n_rows": 3, "n_eval_rows": 0}
    return Message("sb.hello", {"config": json.dumps(config)})


@pytest.mark.parametrize("params, agreed, error", [
    ({"objective": "multi:softprob", "num_class": 5}, {"objective": "multi:softprob", "num_class": 3},
     "sb.hello: the lender asks for num_class 5; this party agreed to 3"),
    ({"objective": "reg:tweedie"}, {"objective": "binary:logistic"},
     "sb.hello: the lender asks for objective 'reg:tweedie'; this party agreed to 'binary:logistic'"),
    ({"objective": "multi:softprob", "num_class": 10 ** 9}, {}, "sb.hello: multi:softprob needs num_class"),
    ({"objective": "reg:tweedie", "tweedie_variance_power": "1.5"}, {}, "sb.hello: reg:tweedie: tweedie_variance"),
])
def test_platform_checks_the_objective_against_what_it_agreed(params, agreed, error):
    """A lender cannot switch the objective or make the platform size arrays by a huge num_class."""
    la, pa = memory_pair("lender", "platform")
    la.send(_hello(**params))
    with pytest.raises(ValueError, match=error):
        SecureBoostPlatform(n_jobs=1, min_key_bits=KEY_BITS, **agreed).fit(pa, np.zeros((3, 1)))
