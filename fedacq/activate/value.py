"""Expected-value scores: the lender's staged prospect models combined into one score per user.

Why stages
----------
A lender's funnel is a chain of events, each with its own model: an application is
granted credit or not, a credit user draws down an amount or nothing. Modelling each
step on its own population (the amount only over credit users) keeps each model's
target simple, lets each be checked on its own, and lets the platform rank users by
what they are *worth* to the lender rather than by how likely they convert:

    value = P(credit granted | application) * E[drawdown amount | credit granted]
          = E[drawdown amount per application]

(the amount is 0 without credit, so the product is the unconditional expectation).
:data:`VALUE_MODELS` holds the two values the demo offers: expected *drawdown* (the
default: drawdown per credit user and the loan fee rate, spend over drawdown, are the
KPIs the business judges a campaign by) and expected *fees* (the same chain with the
fees earned in the last stage; a default earns none, so it adds repayment risk).

The bid already carries the platform's pCVR (who clicks and applies), so a value per
*application* is the right multiplier: the boost moves the bid from "likely to apply"
towards "worth the most when they apply".

Who runs what, and what each party learns
-----------------------------------------
* The lender trains each stage as a **prospect** SecureBoost model (splits on platform
  features only; the lender releases leaf values). A conditional stage is trained on
  the lender's *whole* customer table with an empty label outside the stage
  (:meth:`Stage.labels`): the run job gives those rows zero gradient and hessian, so
  they take no part in the model, and the platform still receives a ciphertext for
  every row of the same intersection. A table of granted customers only would tell the
  platform, through PSI, which of its users the lender granted credit.
* The platform scores its whole user base with each released stage model and combines
  the scores here (:func:`combine`); nothing crosses. Tiers and boosts are built from
  the combined score like from any score (:mod:`fedacq.activate.tiers`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: objectives whose prediction is a probability (a stage others may be conditional on).
PROBABILITY_OBJECTIVES = ("binary:logistic",)
#: objectives whose prediction is a non-negative expected amount or count.
AMOUNT_OBJECTIVES = ("reg:tweedie", "count:poisson")


@dataclass(frozen=True)
class Stage:
    """One step of the lender's funnel, trained as one prospect model.

    ``label_column`` is the lender's outcome column the stage predicts; ``given`` the
    lender's 0/1 column a customer must have to be in the stage (``None``: every customer).
    ``objective`` is an XGBoost objective: a probability or a non-negative amount, since a
    value is a product of them.
    """

    name: str
    label_column: str
    objective: str
    given: str | None = None

    def __post_init__(self) -> None:
        if self.objective not in PROBABILITY_OBJECTIVES + AMOUNT_OBJECTIVES:
            raise ValueError(f"stage {self.name!r}: objective must be one of "
                             f"{', '.join(PROBABILITY_OBJECTIVES + AMOUNT_OBJECTIVES)}, got {self.objective!r}")

    def labels(self, customers: pd.DataFrame) -> pd.Series:
        """The stage's label over all ``customers`` (the lender's table): empty (NaN) for a
        customer outside the stage, so every customer stays in the run job's PSI."""
        for col in (self.label_column, self.given):
            if col is not None and col not in customers.columns:
                raise ValueError(f"stage {self.name!r}: the lender's table has no column {col!r}")
        y = customers[self.label_column].astype(np.float64)
        if self.given is None:
            return y
        given = customers[self.given]
        if not given.isin([0, 1, True, False]).all():
            raise ValueError(f"stage {self.name!r}: column {self.given!r} must be 0/1")
        return y.where(given.astype(bool))


@dataclass(frozen=True)
class ValueModel:
    """A business value as a chain of stages: the product of their predictions.

    Every stage but the last predicts a probability, and each stage after the first is
    conditional on the previous stage's event; then the product is the expectation of the
    last stage's label per customer of the first stage.
    """

    name: str
    stages: tuple[Stage, ...]
    description: str = ""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError(f"value {self.name!r}: needs at least one stage")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"value {self.name!r}: stage names must be distinct, got {names}")
        if self.stages[0].given is not None:
            raise ValueError(f"value {self.name!r}: the first stage covers every customer (given=None)")
        for before, stage in zip(self.stages, self.stages[1:]):
            if before.objective not in PROBABILITY_OBJECTIVES:
                raise ValueError(f"value {self.name!r}: stage {before.name!r} is followed by another stage, "
                                 f"so it must predict a probability ({', '.join(PROBABILITY_OBJECTIVES)})")
            if stage.given != before.label_column:
                raise ValueError(f"value {self.name!r}: stage {stage.name!r} must be conditional on the "
                                 f"previous stage's event (given={before.label_column!r}), got {stage.given!r}")


CREDIT = Stage("credit", "credit_granted", "binary:logistic")
VALUE_MODELS: dict[str, ValueModel] = {
    "drawdown": ValueModel("drawdown", (CREDIT, Stage("drawdown", "drawdown_amount", "reg:tweedie",
                                                      given="credit_granted")),
                           "expected drawdown per application: P(credit) x E[drawdown amount | credit]"),
    "fees": ValueModel("fees", (CREDIT, Stage("fees", "fees", "reg:tweedie", given="credit_granted")),
                       "expected fees per application: P(credit) x E[fees | credit] (a default earns none)"),
}


def combine(model: ValueModel, scores: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """The value score (``user_id``, ``score``) from each stage's scores (``user_id``, ``score``).

    The stages' frames must score the same users in the same order (the platform scores one
    user file with each model); a missing, negative or non-finite score is an error that
    names the stage, since a value built on it would rank users wrongly without a sign.
    """
    missing = [s.name for s in model.stages if s.name not in scores]
    if missing:
        raise ValueError(f"value {model.name!r}: no scores for stage(s) {missing}")
    first = scores[model.stages[0].name]
    ids = first["user_id"].to_numpy()
    value = np.ones(len(first), dtype=np.float64)
    for stage in model.stages:
        frame = scores[stage.name]
        if len(frame) != len(ids) or not np.array_equal(frame["user_id"].to_numpy(), ids):
            raise ValueError(f"value {model.name!r}: stage {stage.name!r} scores other users (or another order) "
                             f"than stage {model.stages[0].name!r}")
        s = frame["score"].to_numpy(dtype=np.float64)
        bad = ~np.isfinite(s) | (s < 0)
        if bad.any():
            raise ValueError(f"value {model.name!r}: stage {stage.name!r} has a negative or non-finite score "
                             f"for user {ids[np.flatnonzero(bad)[0]]!r}")
        value *= s
    return pd.DataFrame({"user_id": ids, "score": value})
