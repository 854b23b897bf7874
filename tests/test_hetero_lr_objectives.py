"""Hetero LR's objectives (XGBoost's names): the federated run equals plaintext mini-batch descent.

Two checks per objective:

* **exact protocol**: the federated fit (Paillier, masks, packing) ends with the
  weights of the same mini-batch descent run in plaintext numpy on the joined
  data (same batches, optimiser, schedule, residual clipping, the platform's
  features quantised as it quantises them). The only difference left is the
  fixed-point encoding of ``r / residual_bound`` (``residual_frac_bits=24``),
  so weights agree to 1e-6 (absolute, on standardised features with weights of
  order 1);
* **right objective**: that plaintext descent, run to convergence, reaches
  scikit-learn's ``LinearRegression`` / ``PoissonRegressor`` /
  ``TweedieRegressor(link="log")`` optimum (predictions within 1e-4 relative).

Keys are 1024 bits with the explicit ``insecure_test_key`` flag (the platform's
``min_key_bits`` lowered to match), only to keep the test fast: the arithmetic
is the same at 2048 bits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedacq.learn import hetero_lr_objectives
from fedacq.learn import objectives
from fedacq.learn.metrics import metric_key
from fedacq.learn.hetero_lr import (HeteroLRLender, HeteroLRPlatform, Optimizer, Standardizer, batches,
                                    step_size)
from fedacq.link.memory import memory_pair, run_parties
from fedacq.link.message import Message

TEST_KEY_BITS = 1024  # test-only key size (see module docstring)
TWEEDIE_POWER = 1.5


def make_data(objective: str, n: int = 500, seed: int = 0):
    """Lender 3 columns, platform 4 columns; labels from a linear predictor through the objective's link."""
    rng = np.random.default_rng(seed)
    Xl, Xp = rng.normal(size=(n, 3)), rng.normal(size=(n, 4)) * [1.0, 2.0, 0.5, 3.0] + 1.0
    eta = 0.4 * Xl[:, 0] - 0.3 * Xl[:, 2] + 0.5 * (Xp[:, 1] - 1) / 2 - 0.2 * (Xp[:, 3] - 1) / 3
    if objective == "reg:squarederror":
        y = 5.0 + 2.0 * eta + 0.5 * rng.normal(size=n)
    elif objective == "count:poisson":
        y = rng.poisson(np.exp(0.5 + eta)).astype(float)
    elif objective == "reg:tweedie":  # zero-inflated amounts: a conversion, then a gamma amount
        y = (rng.random(n) < 0.4) * rng.gamma(2.0, np.exp(1.0 + eta) / 2.0)
    else:
        y = (rng.random(n) < 1 / (1 + np.exp(-eta))).astype(float)
    tr = np.arange(n) < int(0.8 * n)
    return Xl, Xp, y, tr


def plaintext_descent(Xl, Xp, y, objective, params, epochs):
    """Hetero LR's mini-batch descent on the joined data in numpy: the weights after each epoch."""
    Zl = Standardizer.fit(Xl).transform(Xl)
    frac = params["feature_frac_bits"]
    Zp = np.ldexp(np.rint(np.ldexp(Standardizer.fit(Xp).transform(Xp), frac)), -frac)  # as the platform
    n = len(y)
    obj = objectives.get(objective, tweedie_variance_power=TWEEDIE_POWER)
    b = float(obj.base_margin(y)[0])
    bound = params.get("residual_bound") or hetero_lr_objectives.residual_bound(obj, y, b)
    opt_l = Optimizer(Zl.shape[1] + 1, params["penalty"], 1.0, n, 0.9, intercept_last=True)
    opt_p = Optimizer(Zp.shape[1], params["penalty"], 1.0, n, 0.9)
    w, wp, out = np.zeros(Zl.shape[1]), np.zeros(Zp.shape[1]), []
    for epoch in range(epochs):
        lr = step_size(params["learning_rate"], params["eta0"], 0.5, epoch, params["eta0"])
        for rows in batches(n, params["batch_size"], 0, epoch):
            z = Zl[rows] @ w + b + Zp[rows] @ wp
            r = np.clip(obj.gradients(z, y[rows])[0].astype(np.float64), -bound, bound)
            wb = opt_l.step(np.append(w, b), np.append(Zl[rows].T @ r / len(rows), r.mean()), lr)
            w, b = wb[:-1], float(wb[-1])
            wp = opt_p.step(wp, Zp[rows].T @ r / len(rows), lr)
        out.append((w.copy(), b, wp.copy()))
    return out


PARAMS = {"max_iter": 3, "batch_size": 100, "n_iter_no_change": 10, "penalty": None, "learning_rate": "constant",
          "eta0": 0.1, "feature_frac_bits": 8}


def federated_fit(Xl, Xp, y, tr, objective, n_jobs=1, **extra):
    L, P = memory_pair("lender", "platform")
    lender = HeteroLRLender(objective=objective, tweedie_variance_power=TWEEDIE_POWER, key_bits=TEST_KEY_BITS,
                            insecure_test_key=True, n_jobs=n_jobs, **{**PARAMS, **extra})
    platform = HeteroLRPlatform(n_jobs=n_jobs, min_key_bits=TEST_KEY_BITS)
    pred, _ = run_parties((lambda: lender.fit(L, Xl[tr], y[tr], eval_set=(Xl[~tr], y[~tr])).predict(L, Xl[~tr]),),
                          (lambda: platform.fit(P, Xp[tr], Xp[~tr]).serve_predict(P, Xp[~tr]),))
    return lender, platform, pred


@pytest.mark.parametrize("objective", hetero_lr_objectives.OBJECTIVES)
def test_federated_fit_equals_plaintext_descent(objective):
    Xl, Xp, y, tr = make_data(objective)
    lender, platform, pred = federated_fit(Xl, Xp, y, tr, objective)
    ref = plaintext_descent(Xl[tr], Xp[tr], y[tr], objective, PARAMS, PARAMS["max_iter"])
    w, b, wp = ref[lender.best_epoch_]
    np.testing.assert_allclose(lender.coef_, w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(platform.coef_, wp, rtol=0, atol=1e-6)
    assert lender.intercept_ == pytest.approx(b, abs=1e-6)
    # the history carries XGBoost's default metric of the objective, train and valid
    stop = objectives.get(objective, tweedie_variance_power=TWEEDIE_POWER).stop_metric
    train, valid = metric_key("train", stop), metric_key("valid", stop)
    assert all(train in h and valid in h for h in lender.history_)
    assert len(lender.history_) == PARAMS["max_iter"]
    assert lender.history_[-1][train] < lender.history_[0][train]  # it learns
    assert pred.shape == (int((~tr).sum()),)
    if objective == "binary:logistic":
        assert lender.residual_bound_ == 1.0
    else:
        assert (pred > 0).all() if objective != "reg:squarederror" else True
        assert lender.residual_bound_ >= 1 and np.log2(lender.residual_bound_).is_integer()
        assert all(h["residuals_clipped"] == 0 for h in lender.history_)


def test_federated_fit_on_worker_processes_equals_plaintext_descent():
    """Both parties on two worker processes: the lender's encryption randomness one batch ahead, the
    platform's columns split between workers (a packed ciphertext cut between them): the same weights."""
    Xl, Xp, y, tr = make_data("binary:logistic")
    lender, platform, _ = federated_fit(Xl, Xp, y, tr, "binary:logistic", n_jobs=2, max_iter=2)
    w, b, wp = plaintext_descent(Xl[tr], Xp[tr], y[tr], "binary:logistic", PARAMS, 2)[lender.best_epoch_]
    np.testing.assert_allclose(lender.coef_, w, rtol=0, atol=1e-6)
    np.testing.assert_allclose(platform.coef_, wp, rtol=0, atol=1e-6)
    assert lender.intercept_ == pytest.approx(b, abs=1e-6)


@pytest.mark.parametrize("objective,reference", [
    ("reg:squarederror", lambda: __import__("sklearn.linear_model").linear_model.LinearRegression()),
    ("count:poisson", lambda: __import__("sklearn.linear_model").linear_model.PoissonRegressor(
        alpha=0.0, max_iter=1000, tol=1e-10)),
    ("reg:tweedie", lambda: __import__("sklearn.linear_model").linear_model.TweedieRegressor(
        power=TWEEDIE_POWER, link="log", alpha=0.0, max_iter=1000, tol=1e-10)),
])
def test_plaintext_descent_reaches_the_sklearn_optimum(objective, reference):
    """The descent the protocol runs minimises scikit-learn's loss for that model (plaintext only, no crypto):
    with one batch of all rows (allowed: the platform sees one system of n > d_p rows per epoch) and a
    decaying step, predictions agree to 1e-4 relative (the rest is the features' 16-bit quantisation)."""
    Xl, Xp, y, _ = make_data(objective, n=1000)
    params = {**PARAMS, "feature_frac_bits": 16, "learning_rate": "invscaling", "eta0": 0.3, "batch_size": 1000}
    w, b, wp = plaintext_descent(Xl, Xp, y, objective, params, 300)[-1]
    Z = np.hstack([Standardizer.fit(Xl).transform(Xl), Standardizer.fit(Xp).transform(Xp)])
    ours = Z @ np.r_[w, wp] + b
    ours = ours if objective == "reg:squarederror" else np.exp(ours)
    theirs = reference().fit(Z, y).predict(Z)
    assert np.max(np.abs(ours - theirs) / np.abs(theirs)) < 1e-4


def test_multiclass_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="'multi:softprob' is not available for hetero LR: .*num_class"):
        HeteroLRLender(objective="multi:softprob")
    with pytest.raises(ValueError, match="tweedie_variance_power must be in"):
        HeteroLRLender(objective="reg:tweedie", tweedie_variance_power=2.5)
    with pytest.raises(ValueError, match="hetero_lr: objective 'multi:softprob' is not available"):
        __import__("fedacq.learn.hetero_lr_roles").learn.hetero_lr_roles.resolve_params(
            {"objective": "multi:softprob", "num_class": 3})
    with pytest.raises(ValueError, match="residual_bound must be None or 1"):
        HeteroLRLender(residual_bound=4.0)


@pytest.mark.parametrize("objective,y,error", [
    ("binary:logistic", [0.0, 2.0], "binary:logistic needs labels 0/1"),
    ("count:poisson", [1.0, -1.0], "count:poisson needs non-negative labels"),
    ("reg:tweedie", [0.0, 0.0], "every label is 0"),
    ("reg:squarederror", [1.0, np.nan], "NaN"),
])
def test_the_lender_refuses_labels_outside_the_objective(objective, y, error):
    with pytest.raises(ValueError, match=error):
        HeteroLRLender(objective=objective).fit(None, np.zeros((2, 1)), np.array(y))  # before any message


@pytest.mark.parametrize("bound", [3.0, 2.0 ** 50, -1.0, "1"])
def test_platform_refuses_a_residual_bound_that_is_not_a_sane_power_of_two(bound):
    from fedacq.crypto.paillier import generate_keypair

    pk, _ = generate_keypair(TEST_KEY_BITS, insecure_test_key=True)
    L, P = memory_pair("lender", "platform", record=True)
    params = HeteroLRLender(objective="reg:squarederror").get_params()
    L.send(Message("hlr.hello", {"config": json.dumps({"params": params, "public_key": pk.to_json(),
                                                       "n_rows": 100, "n_eval_rows": 0, "residual_bound": bound})}))
    with pytest.raises(ValueError, match="hlr.hello: malformed config: residual_bound must be a power of two"):
        HeteroLRPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS).fit(P, np.zeros((100, 3)))
    assert L.received == []  # refused before answering


@pytest.mark.parametrize("objective", ["reg:squarederror", "count:poisson", "reg:tweedie"])
def test_batch_guards_hold_for_every_objective(objective):
    """The label guards do not depend on the objective: batches the platform could solve are refused by the
    protocol (both parties) and by the lender node's hetero_lr_min_batch_size policy."""
    from fedacq.learn.hetero_lr_roles import resolve_params
    from fedacq.learn.run_node import _label_protection
    from fedacq.node.policy import Policy, PolicyError

    Xl, Xp, y, tr = make_data(objective, n=200)
    with pytest.raises(ValueError, match="batch_size=4 must exceed the platform's 4 features"):
        federated_fit(Xl, Xp, y, tr, objective, batch_size=4)
    params = resolve_params({"objective": objective, "batch_size": 32})
    with pytest.raises(PolicyError, match="hetero_lr_min_batch_size: proposed batch_size=32"):
        _label_protection("hetero_lr", "joint", params, Policy(party="lender", hetero_lr_min_batch_size=64))
