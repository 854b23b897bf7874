"""Label maturation: when the lender learns each outcome of an application.

A lender does not know on the day of an application whether it was a good one.
Each applicant's outcomes arrive on their own days (delays drawn per person,
:class:`Maturation`):

==========================================  ============================================
outcome                                     known from the end of
==========================================  ============================================
``credit_granted``                          ``decided_day`` = applied + decision delay
                                            (``1 + Poisson(decision_days_mean - 1)``:
                                            review, documents, bureau check)
``first_day_drawdown``, ``drawdown_amount``  ``used_day`` = decided + activation delay for a
                                            granted applicant (the line's first day, when
                                            the user signs and binds a card: geometric, mean
                                            ``activation_days_mean``, at most
                                            ``activation_days_max``); the decision day for a
                                            rejected one (nothing to draw). The amount is
                                            known at the drawdown.
``repaid``, ``fees``                        ``repaid_day`` = used + ``loan_term_days`` for a
                                            drawdown; the used day without one
``high_value``                              the first day that settles it: the decision if
                                            rejected, the used day if no (large enough)
                                            drawdown, else the repayment
==========================================  ============================================

An outcome is *known on day d* when its day is before ``d`` (:func:`as_known`): a
table "as known on day d" is what the lender's books hold at the start of day ``d``.
A model trained on it must treat an unknown outcome as missing, not as "no": a
pending decision is not a rejection (:func:`as_known` gives NaN). A measurement, by
contrast, counts what has happened so far (:func:`as_measured` gives 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from fedacq.sim.funnel import Outcomes

#: outcome column -> the column of the day from whose end it is known.
KNOWN_FROM: dict[str, str] = {
    "credit_granted": "decided_day", "first_day_drawdown": "used_day", "drawdown_amount": "used_day",
    "repaid": "repaid_day", "fees": "repaid_day", "high_value": "high_value_day",
}
DAY_COLUMNS = ("decided_day", "used_day", "repaid_day", "high_value_day")


@dataclass(frozen=True)
class Maturation:
    """Delays from an application to each outcome (see the module docstring), in days."""

    decision_days_mean: float = 3.0
    activation_days_mean: float = 7.0
    activation_days_max: int = 35
    loan_term_days: int = 30

    def __post_init__(self) -> None:
        if not self.decision_days_mean >= 1.0:
            raise ValueError(f"Maturation.decision_days_mean must be >= 1, got {self.decision_days_mean!r}")
        if not self.activation_days_mean >= 1.0:
            raise ValueError(f"Maturation.activation_days_mean must be >= 1, got {self.activation_days_mean!r}")
        if self.activation_days_max < 0 or self.loan_term_days < 1:
            raise ValueError("Maturation.activation_days_max must be >= 0 and loan_term_days >= 1")

    def draw_delays(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Per person: decision delay (>= 1 day) and activation delay (>= 0 days)."""
        decision = 1 + rng.poisson(self.decision_days_mean - 1.0, size=n)
        activation = np.minimum(rng.geometric(1.0 / self.activation_days_mean, size=n) - 1,
                                self.activation_days_max)
        return decision.astype(np.int32), activation.astype(np.int32)

    def event_days(self, applied_day: np.ndarray, out: Outcomes, decision_delay: np.ndarray,
                   activation_delay: np.ndarray, high_value_min_drawdown: float) -> dict[str, np.ndarray]:
        """The day each outcome of each application becomes known (:data:`DAY_COLUMNS`)."""
        decided = applied_day + decision_delay
        used = decided + np.where(out.credit_granted, activation_delay, 0)
        repaid = used + np.where(out.first_day_drawdown, self.loan_term_days, 0)
        big = out.first_day_drawdown & (out.drawdown_amount >= high_value_min_drawdown)
        high = np.where(~out.credit_granted, decided, np.where(big, repaid, used))
        return {"decided_day": decided, "used_day": used, "repaid_day": repaid, "high_value_day": high}


def as_known(table: pd.DataFrame, day: int) -> pd.DataFrame:
    """``table``'s outcomes as the lender knows them at the start of ``day``: NaN where the
    outcome's day (:data:`KNOWN_FROM`) is ``day`` or later, float 0/1 or the amount otherwise.
    Rows whose day columns are NaN (outcomes from before the campaign) are always known."""
    out = table.copy()
    for col, when in KNOWN_FROM.items():
        if col in out.columns:
            pending = out[when].to_numpy(float) >= day
            out[col] = out[col].astype(np.float64).where(~pending)
    return out


def as_measured(table: pd.DataFrame, day: int) -> pd.DataFrame:
    """``table``'s outcomes as a measurement on ``day`` counts them: what has not happened
    by the start of ``day`` has not happened (0), in the dtypes of the static simulator."""
    known = as_known(table, day)
    for col in KNOWN_FROM:
        if col in known.columns:
            filled = known[col].fillna(0.0)
            known[col] = filled.astype(table[col].dtype) if table[col].dtype == bool else filled
    return known
