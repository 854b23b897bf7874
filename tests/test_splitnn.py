"""Split NN: equal to central torch training without noise, what each side receives, DeepFM bottom, CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")

from fedacq.learn.splitnn import SplitNNLender, SplitNNPlatform, fit_central  # noqa: E402
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


def _fit(credit, **params):
    Xl, Xp, y, tr = credit
    L, P = memory_pair("lender", "platform", record=True)
    lender = SplitNNLender(random_state=4, **params)
    platform = SplitNNPlatform()

    def lender_side():
        lender.fit(L, Xl[tr], y[tr], eval_set=(Xl[~tr], y[~tr]))
        return lender.predict_proba(L, Xl[~tr])

    def platform_side():
        platform.fit(P, Xp[tr], Xp[~tr])
        platform.predict(P, Xp[~tr])

    proba, _ = run_parties((lender_side,), (platform_side,))
    return lender, platform, proba, L, P


def test_matches_central_training_without_noise(credit):
    from sklearn.metrics import roc_auc_score

    Xl, Xp, y, tr = credit
    _, platform, proba, _, _ = _fit(credit, **SMALL, **NOISE_OFF)
    central, history = fit_central(Xl[tr], Xp[tr], y[tr], eval_set=(Xl[~tr], Xp[~tr], y[~tr]),
                                   random_state=4, **SMALL)
    fed_auc, central_auc = roc_auc_score(y[~tr], proba), roc_auc_score(y[~tr], central)
    assert abs(fed_auc - central_auc) < 0.01
    assert fed_auc > 0.7
    # the platform's columns with few values went to a DeepFM bottom
    assert platform.columns_.categorical and isinstance(platform.bottom_, DeepFMBottom)


def test_what_each_side_receives_with_noise(credit):
    from sklearn.metrics import roc_auc_score

    Xl, Xp, y, tr = credit
    lender, _, proba, L, P = _fit(credit, **SMALL)
    assert roc_auc_score(y[~tr], proba) > 0.65  # still a useful model under noise
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
    assert 0.5 < m["validation"]["auc"] <= 1 and len(m["lift_by_decile"]) == 10
    assert (out / "lender" / "model" / "splitnn_lender.npz").is_file()
    assert (out / "platform" / "model" / "splitnn_platform.npz").is_file()
    assert m["model_info"]["lender"]["epsilon_per_release_delta_1e-5"]["gradient"] > 0
