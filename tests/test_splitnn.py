"""Split NN: equal to central torch training without noise, what each side receives, label leakage, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from fedacq.learn.splitnn import SplitNNLender, SplitNNPlatform, fit_central, gaussian_dp  # noqa: E402
from fedacq.learn.splitnn_leakage import label_leakage  # noqa: E402
from fedacq.learn.splitnn_nets import DeepFMBottom  # noqa: E402
from fedacq.link.memory import memory_pair, run_parties  # noqa: E402

GUEST = "/work/shared/datasets/fate/default_credit_hetero_guest.csv"
HOST = "/work/shared/datasets/fate/default_credit_hetero_host.csv"
NOISE_OFF = {"embedding_clip": None, "gradient_clip": None}
SMALL = {"max_iter": 6, "batch_size": 128}


@pytest.fixture(scope="module")
def credit():
    g = pd.read_csv(GUEST, nrows=3000)
    h = pd.read_csv(HOST, nrows=3000)
    y = g.pop("y").to_numpy(float)
    tr = np.random.default_rng(0).random(len(y)) < 0.8
    return g.drop(columns="id").to_numpy(), h.drop(columns="id").to_numpy(), y, tr


def _fit(credit, init_seed=None, **params):
    Xl, Xp, y, tr = credit
    L, P = memory_pair("lender", "platform", record=True)
    lender = SplitNNLender(random_state=4, init_seed=init_seed, **params)
    platform = SplitNNPlatform(init_seed=init_seed)

    def lender_side():
        lender.fit(L, Xl[tr], y[tr], eval_set=(Xl[~tr], y[~tr]))
        return lender.predict_proba(L, Xl[~tr])

    def platform_side():
        platform.fit(P, Xp[tr], Xp[~tr])
        platform.serve_predict(P, Xp[~tr])

    proba, _ = run_parties((lender_side,), (platform_side,))
    return lender, platform, proba, L, P


def test_matches_central_training_without_noise(credit):
    from sklearn.metrics import roc_auc_score

    Xl, Xp, y, tr = credit
    # the central reference's initial weights: each party's otherwise secret seed set to random_state
    lender, platform, proba, _, P = _fit(credit, init_seed=4, **SMALL, **NOISE_OFF)
    central, history = fit_central(Xl[tr], Xp[tr], y[tr], eval_set=(Xl[~tr], Xp[~tr], y[~tr]),
                                   random_state=4, **SMALL)
    # same seeds, batches and weights: the same model, score for score, not just a close AUC
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-central)), rtol=0, atol=1e-5)
    assert [h["valid_logloss"] for h in lender.history_] == pytest.approx(
        [h["valid_logloss"] for h in history], abs=1e-6)
    assert roc_auc_score(y[~tr], proba) > 0.7
    # the platform's columns with few values went to a DeepFM bottom
    assert platform.columns_.categorical and isinstance(platform.bottom_, DeepFMBottom)
    # without noise the platform reads the labels off its gradients (why the noise is on by default)
    assert label_leakage(P.received, y[tr], SMALL["batch_size"], 4)["label_leak_auc_direction"] > 0.9


def test_what_each_side_receives_with_noise(credit):
    from sklearn.metrics import roc_auc_score

    Xl, Xp, y, tr = credit
    # fixed initial weights (as the central reference's), so only the noise varies between runs
    lender, _, proba, L, P = _fit(credit, init_seed=4, **SMALL)
    assert roc_auc_score(y[~tr], proba) > 0.65  # still a useful model under noise
    # the default gradient noise leaves the platform's two label attacks near chance
    leak = label_leakage(P.received, y[tr], SMALL["batch_size"], 4)
    assert leak["label_leak_auc_norm"] < 0.6 and leak["label_leak_auc_direction"] < 0.6
    dim = lender.params["embedding_dim"]
    # platform: per-row gradients of width embedding_dim, noised; never a label-shaped vector
    assert {m.type for m in P.received} == {"snn.hello", "snn.backward", "snn.epoch_done", "snn.predict"}
    grads = [m.parts["gradient"] for m in P.received if m.type == "snn.backward"]
    assert all(g.ndim == 2 and g.shape[1] == dim for g in grads)
    hello = json.loads(P.received[0].header["config"])
    assert set(hello) == {"params", "random_state", "n_rows", "n_eval_rows"}
    # noise: a clipped gradient has norm <= gradient_clip; the received ones exceed it
    clip = lender.params["gradient_clip"]
    norms = np.concatenate([np.linalg.norm(g, axis=1) for g in grads])
    assert (norms > clip).mean() > 0.5
    # lender: embeddings of width embedding_dim, never the platform's columns
    for msg in L.received:
        for part in msg.parts.values():
            assert part.ndim == 2 and part.shape[1] == dim
            for col in Xp.T:
                assert not any(np.allclose(part[:, j], col[:len(part)].astype(np.float32)) for j in range(dim))


def test_fedacq_run_splitnn(tmp_path, capsys):
    from fedacq.cli import main

    g = pd.read_csv(GUEST, nrows=800)
    h = pd.read_csv(HOST, nrows=800)
    g.to_csv(tmp_path / "lender.csv", index=False)
    h.sample(frac=1.0, random_state=2).to_csv(tmp_path / "platform.csv", index=False)
    out = tmp_path / "out"
    code = main(["run", "--lender", str(tmp_path / "lender.csv"), "--platform", str(tmp_path / "platform.csv"),
                 "--id-column", "id", "--label-column", "y", "--model", "splitnn",
                 "--param", "max_iter=3", "--param", "hidden_layer_sizes=[16]",
                 "--validation-fraction", "0.25", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "splitnn" and m["params"]["hidden_layer_sizes"] == [16]
    # 600 training rows, 3 epochs, default gradient noise and secret initial weights: the AUC is
    # near chance and varies by run (0.46-0.65 measured); quality is checked on 3000 rows above
    assert 0 <= m["validation"]["auc"] <= 1 and len(m["lift_by_decile"]) == 10
    assert (out / "lender" / "model" / "splitnn_lender.npz").is_file()
    assert (out / "platform" / "model" / "splitnn_platform.npz").is_file()
    dp = m["model_info"]["lender"]["gaussian_dp_delta_1e-5"]
    assert dp["gradient_per_release"]["mu"] == pytest.approx(2 / 2.0)  # default gradient_noise=2
    assert dp["gradient_over_epochs"]["epsilon"] > dp["gradient_per_release"]["epsilon"]


def test_gaussian_dp_accounting():
    import math

    from scipy.stats import norm

    one = gaussian_dp(2.0)
    mu, eps = one["mu"], one["epsilon"]
    # the (epsilon, delta) curve of mu-GDP holds at the returned epsilon
    assert norm.cdf(-eps / mu + mu / 2) - math.exp(eps) * norm.cdf(-eps / mu - mu / 2) == pytest.approx(1e-5, rel=1e-3)
    # k releases compose to mu * sqrt(k)
    assert gaussian_dp(2.0, releases=9)["mu"] == pytest.approx(3 * mu)
    # tighter than the classic Gaussian-mechanism bound where that bound is valid (epsilon < 1)
    classic = math.sqrt(2 * math.log(1.25 / 1e-5)) * 2 / 20.0
    assert classic < 1 and gaussian_dp(20.0)["epsilon"] < classic
    assert gaussian_dp(0.0)["epsilon"] == math.inf


def test_gradient_noise_is_not_a_function_of_the_shared_seed(credit):
    """Same data, same random_state: the first batch's clipped gradient is the same in both runs,
    the noise on it is not (it comes from the OS CSPRNG, fedacq.crypto.dp_noise)."""
    Xl, Xp, y, tr = credit
    first = []
    for _ in range(2):
        L, P = memory_pair("lender", "platform", record=True)
        lender = SplitNNLender(random_state=4, init_seed=4, max_iter=1, batch_size=128)
        platform = SplitNNPlatform(init_seed=4)
        run_parties((lender.fit, L, Xl[:600], y[:600]), (platform.fit, P, Xp[:600]))
        first.append(next(m for m in P.received if m.type == "snn.backward").parts["gradient"])
    sigma = lender.params["gradient_noise"] * lender.params["gradient_clip"]
    diff = (first[0] - first[1]).astype(np.float64)
    # the difference of two independent N(0, sigma^2) noises: std sigma * sqrt(2) (1024 values,
    # the sample std is within 20% of it except with probability far below 1e-9)
    assert np.std(diff) == pytest.approx(sigma * np.sqrt(2), rel=0.2)


def test_initial_weights_are_each_partys_secret():
    """The shared random_state drives the batches only: a peer cannot rebuild the other's initial networks."""
    from fedacq.learn import splitnn_nets as nets
    from fedacq.learn.splitnn import PLATFORM_BOTTOM, resolve_params

    a, b = SplitNNPlatform(), SplitNNPlatform()
    assert a.init_seed != b.init_seed
    p = resolve_params({})
    by_seed = nets.bottom(5, [], p, 4 * 10 + PLATFORM_BOTTOM).state_dict()
    secret = nets.bottom(5, [], p, a.init_seed * 10 + PLATFORM_BOTTOM).state_dict()
    assert not any(torch.equal(by_seed[k], secret[k]) for k in by_seed)
    assert SplitNNLender(random_state=4).init_seed != SplitNNLender(random_state=4).init_seed


def test_a_platform_without_feature_columns_trains_a_constant_embedding():
    """A featureless platform (scikit-learn's estimator checks run one): its bottom network is its biases."""
    rng = np.random.default_rng(0)
    Xl = rng.normal(size=(200, 2))
    y = (Xl[:, 0] > 0).astype(float)
    L, P = memory_pair("lender", "platform")
    lender = SplitNNLender(max_iter=2, batch_size=50, hidden_layer_sizes=[4], embedding_dim=2, top_layer_sizes=[4])
    proba, _ = run_parties((lambda: lender.fit(L, Xl, y).predict(L, Xl),),
                           (lambda: SplitNNPlatform().fit(P, np.zeros((200, 0))).serve_predict(P, np.zeros((200, 0))),))
    assert proba.shape == (200,) and len(lender.history_) == 2
