"""Value scores: stages, their labels at the lender, the platform's combination, and the
head-to-head comparison of two measured campaigns."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fedacq.activate.value import CREDIT, VALUE_MODELS, Stage, ValueModel, combine
from fedacq.measure.report import compare_arms

DRAWDOWN = VALUE_MODELS["drawdown"]


def _customers() -> pd.DataFrame:
    return pd.DataFrame({"user_id": ["a", "b", "c", "d"], "credit_granted": [1, 0, 1, 0],
                         "drawdown_amount": [1200.0, 0.0, 0.0, 0.0], "fees": [48.0, 0.0, 0.0, 0.0]})


def test_a_conditional_stage_keeps_every_customer_with_an_empty_label_outside_it():
    customers = _customers()
    first, second = DRAWDOWN.stages
    assert first.labels(customers).tolist() == [1.0, 0.0, 1.0, 0.0]
    y = second.labels(customers)
    assert len(y) == len(customers)            # the same PSI as the first stage: no customer left out
    assert y.iloc[0] == 1200.0 and y.iloc[2] == 0.0  # granted without a drawdown is a 0, in the stage
    assert y.isna().tolist() == [False, True, False, True]
    with pytest.raises(ValueError, match="no column 'repaid'"):
        Stage("r", "repaid", "binary:logistic", given="credit_granted").labels(customers)
    with pytest.raises(ValueError, match="'credit_granted' must be 0/1"):
        second.labels(customers.assign(credit_granted=[2, 0, 1, 0]))


def test_a_value_model_is_a_chain_of_probabilities_ending_in_an_amount():
    amount = Stage("drawdown", "drawdown_amount", "reg:tweedie", given="credit_granted")
    with pytest.raises(ValueError, match="objective must be one of"):
        Stage("x", "drawdown_amount", "reg:squarederror")   # can go negative: no expected value
    with pytest.raises(ValueError, match="first stage covers every customer"):
        ValueModel("v", (amount,))
    with pytest.raises(ValueError, match="must predict a probability"):
        ValueModel("v", (Stage("d", "drawdown_amount", "reg:tweedie"), amount))
    with pytest.raises(ValueError, match="conditional on the previous stage's event"):
        ValueModel("v", (CREDIT, Stage("d", "drawdown_amount", "reg:tweedie", given="repaid")))
    with pytest.raises(ValueError, match="distinct"):
        ValueModel("v", (CREDIT, Stage("credit", "drawdown_amount", "reg:tweedie", given="credit_granted")))
    assert ValueModel("one", (Stage("d", "drawdown_amount", "reg:tweedie"),)).stages[0].given is None


def test_the_platform_combines_stage_scores_into_their_product():
    ids = np.array(["u1", "u2", "u3"])
    scores = {"credit": pd.DataFrame({"user_id": ids, "score": np.float32([0.5, 0.1, 0.0])}),
              "drawdown": pd.DataFrame({"user_id": ids, "score": np.float32([2000.0, 9000.0, 5000.0])})}
    value = combine(DRAWDOWN, scores)
    assert value["user_id"].tolist() == ids.tolist()
    np.testing.assert_allclose(value["score"], [1000.0, 900.0, 0.0], rtol=1e-6)
    with pytest.raises(ValueError, match="no scores for stage"):
        combine(DRAWDOWN, {"credit": scores["credit"]})
    with pytest.raises(ValueError, match="scores other users"):
        combine(DRAWDOWN, {**scores, "drawdown": scores["drawdown"].iloc[::-1]})
    bad = scores["drawdown"].assign(score=np.float32([1.0, np.nan, 1.0]))
    with pytest.raises(ValueError, match="stage 'drawdown' has a negative or non-finite score for user 'u2'"):
        combine(DRAWDOWN, {**scores, "drawdown": bad})


def _report(layer: str, treatment: dict, control: dict) -> dict:
    def arm(kpis: dict) -> dict:
        return {"kpis": {k: ({"value": v, "se": se} if v is not None else {"status": "not enough data"})
                         for k, (v, se) in kpis.items()}}
    return {"settings": {"confidence": 0.95},
            "layers": {layer: {"arms": {"treatment": arm(treatment), "control": arm(control)}}}}


def test_two_campaigns_compare_arm_to_arm_with_intervals():
    value = _report("value", {"drawdown_per_user": (1200.0, 30.0), "cost_per_credit_user": (None, 0)},
                    {"drawdown_per_user": (1000.0, 30.0)})
    conversion = _report("prospect", {"drawdown_per_user": (1000.0, 40.0), "cost_per_credit_user": (50.0, 2.0)},
                         {"drawdown_per_user": (1000.0, 30.0)})
    out = compare_arms(value, "value", conversion, "prospect")
    rel = out["drawdown_per_user"]["relative"]
    assert rel["value"] == pytest.approx(0.2)
    se_log = math.hypot(30 / 1200, 40 / 1000)
    assert rel["ci_low"] == pytest.approx(1.2 * math.exp(-1.959964 * se_log) - 1, rel=1e-5)
    assert out["drawdown_per_user"]["absolute"]["value"] == pytest.approx(200.0)
    assert out["cost_per_credit_user"]["status"] == "not enough data"
    placebo = compare_arms(value, "value", conversion, "prospect", arm="control")["drawdown_per_user"]["relative"]
    assert placebo["value"] == pytest.approx(0.0) and placebo["ci_low"] < 0 < placebo["ci_high"]
    with pytest.raises(ValueError, match="no layer 'activity'"):
        compare_arms(value, "activity", conversion, "prospect")
