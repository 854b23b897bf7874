"""Evaluation metrics: against scikit-learn and against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from fedacq.learn import metrics


def test_auc_hand_computed_with_a_tie():
    # positives at 0.9 and 0.5; negatives at 0.5, 0.3, 0.1.
    # pairs (pos, neg): 0.9 beats all 3; 0.5 ties 0.5 (1/2) and beats 0.3, 0.1 -> 5.5 / 6
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.5, 0.5, 0.3, 0.1])
    assert metrics.roc_auc(y, s) == pytest.approx(5.5 / 6)


def test_ks_hand_computed():
    # sorted by score: 1 1 0 1 0 0 ; after 2 rows TPR = 2/3, FPR = 0 -> gap 2/3;
    # after 4 rows TPR = 1, FPR = 1/3 -> gap 2/3 too; the first maximum is at score 0.8
    y = np.array([1, 1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    ks, threshold = metrics.ks_statistic(y, s)
    assert ks == pytest.approx(2 / 3)
    assert threshold == pytest.approx(0.8)


def test_ks_of_an_inverted_model_is_not_high():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.9, 0.8, 0.7, 0.3, 0.2, 0.1])
    assert metrics.ks_statistic(y, s)[0] == pytest.approx(0.0)
    assert metrics.roc_auc(y, s) == pytest.approx(0.0)


def test_gains_table_hand_computed():
    # 10 rows, 5 bins of 2; positives at ranks 1, 2, 3 and 7 (by descending score)
    s = np.arange(10, 0, -1, dtype=float)
    y = np.array([1, 1, 1, 0, 0, 0, 1, 0, 0, 0])
    t = metrics.gains_table(y, s, n_bins=5)
    assert t["rows"].tolist() == [2, 2, 2, 2, 2]
    assert t["positives"].tolist() == [2, 1, 0, 1, 0]
    assert t["gain"].tolist() == pytest.approx([0.5, 0.75, 0.75, 1.0, 1.0])
    # base rate 0.4: group rates 1.0, 0.5, 0, 0.5, 0
    assert t["lift"].tolist() == pytest.approx([2.5, 1.25, 0.0, 1.25, 0.0])
    assert t["cum_lift"].tolist() == pytest.approx([2.5, 1.875, 1.25, 1.25, 1.0])
    assert t["max_score"].tolist() == [10, 8, 6, 4, 2]


def test_gains_table_uneven_sizes_and_shuffled_input():
    rng = np.random.default_rng(3)
    s = rng.random(23)
    y = (rng.random(23) < 0.4).astype(int)
    y[:2] = [0, 1]
    t = metrics.gains_table(y, s, n_bins=10)
    assert t["rows"].sum() == 23 and t["rows"].max() - t["rows"].min() <= 1
    assert t["positives"].sum() == y.sum()
    assert t["gain"].iloc[-1] == pytest.approx(1.0)
    assert t["cum_lift"].iloc[-1] == pytest.approx(1.0)
    # groups run from high scores to low ones
    assert (t["min_score"].to_numpy()[:-1] >= t["max_score"].to_numpy()[1:]).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=80))
def test_auc_and_curve_match_sklearn(rows):
    y = np.array([r[0] for r in rows])
    s = np.array([r[1] for r in rows], dtype=float) / 7.0  # few distinct values: many ties
    if y.min() == y.max():
        with pytest.raises(ValueError, match="one class"):
            metrics.roc_auc(y, s)
        return
    assert metrics.roc_auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    fpr, tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    c = metrics.roc_curve(y, s)
    np.testing.assert_allclose(c.fpr, fpr)
    np.testing.assert_allclose(c.tpr, tpr)
    ks, _ = metrics.ks_statistic(y, s)
    assert ks == pytest.approx(max(0.0, float(np.max(tpr - fpr))))


def test_evaluate_dict_and_errors():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    s = y * 0.3 + rng.random(500)
    out = metrics.evaluate(y, s)
    assert out["auc"] == pytest.approx(roc_auc_score(y, s))
    assert len(out["lift_by_decile"]) == 10 and len(out["deciles"]) == 10
    assert out["lift_by_decile"][0] > 1.0 > out["lift_by_decile"][-1]
    with pytest.raises(ValueError, match="0/1"):
        metrics.evaluate(np.array([0, 2, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="length"):
        metrics.evaluate(np.array([0, 1]), np.array([0.1, 0.2, 0.3]))
    with pytest.raises(ValueError, match="NaN"):
        metrics.evaluate(np.array([0, 1]), np.array([0.1, np.nan]))


def test_plots_render_to_png(tmp_path):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    s = y * 0.5 + rng.random(300)
    figs = {
        "roc": metrics.plot_roc({"train": (y, s), "validation": (y[:100], s[:100])}),
        "ks": metrics.plot_ks(y, s),
        "gains": metrics.plot_gains(y, s),
    }
    assert len(figs["gains"].axes) == 2
    assert "AUC" in figs["roc"].axes[0].get_legend().get_texts()[0].get_text()
    for name, fig in figs.items():
        path = tmp_path / f"{name}.png"
        fig.savefig(path)
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("objective, params, metric_names", [
    ("binary:logistic", {}, ["logloss", "auc"]),
    ("reg:squarederror", {}, ["rmse"]),
    ("count:poisson", {}, ["poisson-nloglik"]),
    ("reg:tweedie", {"tweedie_variance_power": 1.2}, ["tweedie-nloglik@1.2"]),
    ("multi:softprob", {"num_class": 3}, ["mlogloss", "merror"]),
])
def test_xgboost_metrics_by_name_equal_xgboost(objective, params, metric_names):
    """evaluate_metric(name, ...) gives what XGBoost reports under that name, for its own predictions."""
    import xgboost

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = {"binary:logistic": (X[:, 0] + rng.normal(size=200) > 0).astype(float),
         "reg:squarederror": X[:, 0] * 3 + rng.normal(size=200),
         "count:poisson": rng.poisson(np.exp(0.5 * X[:, 0])).astype(float),
         "reg:tweedie": np.where(rng.random(200) < 0.5, 0.0, rng.gamma(2.0, 40.0, 200)),
         "multi:softprob": np.digitize(X[:, 0] + rng.normal(size=200), [-0.5, 0.5]).astype(float)}[objective]
    dm = xgboost.DMatrix(X, label=y)
    booster = xgboost.train({"objective": objective, "eval_metric": metric_names, "max_depth": 2, **params}, dm, 3)
    reported = dict(item.split(":") for item in booster.eval(dm).split()[1:])
    pred = booster.predict(dm)
    for name in metric_names:
        assert metrics.evaluate_metric(name, y, pred) == pytest.approx(float(reported[f"eval-{name}"]), rel=1e-5)


def test_metric_names_and_keys():
    assert metrics.metric_key("valid", "tweedie-nloglik@1.5") == "valid_tweedie-nloglik_1.5"
    assert metrics.format_rho(1.2) == "1.2" and metrics.format_rho(1.5) == "1.5"
    with pytest.raises(ValueError, match="unknown metric 'mae'"):
        metrics.evaluate_metric("mae", np.zeros(2), np.zeros(2))
    with pytest.raises(ValueError, match=r"Tweedie power must be in \[1, 2\)"):
        metrics.evaluate_metric("tweedie-nloglik@2.5", np.zeros(2), np.ones(2))
    assert metrics.merror(np.array([0, 1]), np.array([[0.5, 0.5], [0.5, 0.5]])) == 0.5  # ties: the first class


def test_early_stopping_as_xgboost():
    from fedacq.learn.early_stopping import EarlyStopping

    stopper = EarlyStopping(rounds=2)
    stops = []
    for i, score in enumerate([0.5, 0.4, 0.4, 0.45, 0.3]):
        stops.append(stopper.update(i, score))
        if stops[-1]:
            break
    assert stops == [False, False, False, True] and stopper.best_iteration == 1  # a tie is no improvement
    again = EarlyStopping.from_state(stopper.state())
    assert again == stopper
    auc = EarlyStopping(rounds=1, maximize=True)
    assert [auc.update(i, s) for i, s in enumerate([0.6, 0.7, 0.65])] == [False, False, True]
    assert EarlyStopping(rounds=None).update(10, 1.0) is False
    with pytest.raises(ValueError, match="early_stopping_rounds"):
        EarlyStopping(rounds=-1)
    with pytest.raises(ValueError, match="scored nan"):
        EarlyStopping(rounds=1).update(0, float("nan"))


def test_early_stopping_tol_restarts_the_patience_only_on_an_improvement_by_more_than_tol():
    """scikit-learn's ``tol``/``n_iter_no_change`` (hetero LR, split NN): the best is still the strictly best."""
    from fedacq.learn.early_stopping import EarlyStopping

    losses = [1.0, 0.95, 0.8, 0.75, 0.85, 0.5]  # 0.95 and 0.75 are better than the best, but by less than 0.1

    def run(stopper):
        seen = []
        for i, loss in enumerate(losses):
            seen.append((stopper.update(i, loss), stopper.best_iteration, stopper.last_reset))
            if seen[-1][0]:
                break
            stopper = EarlyStopping.from_state(stopper.state())  # a checkpoint between any two iterations
        return seen

    assert run(EarlyStopping(rounds=2, tol=0.1)) == [
        (False, 0, 0), (False, 1, 0), (False, 2, 2), (False, 3, 2), (True, 3, 2)]
    assert run(EarlyStopping(rounds=2)) == [  # tol = 0, XGBoost's rule: every new best restarts the patience
        (False, 0, 0), (False, 1, 1), (False, 2, 2), (False, 3, 3), (False, 3, 3), (False, 5, 5)]
    auc = EarlyStopping(rounds=1, maximize=True, tol=0.05)
    assert [auc.update(i, s) for i, s in enumerate([0.6, 0.62])] == [False, True] and auc.best_iteration == 1
    for tol in (-0.1, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ValueError, match="tol must be a finite number >= 0"):
            EarlyStopping(rounds=1, tol=tol)
