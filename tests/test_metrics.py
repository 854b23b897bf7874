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
