"""The credit funnel: from a person's latent traits to propensities and to outcomes.

Every person has three latent traits (standard-normal scale, see
:mod:`fedacq.sim.market`): ``need`` (how much they want credit now),
``worth`` (creditworthiness) and ``wealth`` (income and spending power), plus
``activity`` (how much they use the app). The funnel turns them into
propensities with logistic links; the coefficients below are the model's
parameters, chosen so that base rates are plausible for consumer credit sold
through feed ads (CTR ~1.5%, apply-per-click ~8%, approval ~40%, first-day
drawdown ~50% of approvals, repayment ~90%):

- ``p_click``  per impression of the lender's ad: need and activity raise it;
- ``p_apply``  per click: need raises it strongly. The platform's pCVR predicts
  ``p_click * p_apply`` — it sees *who applies*, not who is a good borrower;
- ``p_grant``  per application: worth (the lender's underwriting);
- ``credit_limit``: worth and wealth; rounded to 500;
- ``p_first_day_drawdown`` per grant: need;
- ``drawdown_share``: expected share of the limit drawn (need raises it); the
  amount is ``limit * Beta(k*m, k*(1-m))`` rounded to 100, so its mean is exact;
- ``p_repay`` per drawdown: worth;
- fees: ``fee_rate * amount`` if repaid, else 0 (a default earns nothing).

Because need and worth are negatively correlated, the people most likely to
apply are not the ones the lender most wants: that gap is what a jointly
trained high-value model, turned into bid boosts, can close.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

#: fee earned on a repaid drawdown, as a share of the amount (about 24% APR over two months).
FEE_RATE = 0.04
#: concentration of the Beta distribution of the share of the limit drawn.
DRAW_CONCENTRATION = 4.0


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def propensities(need: np.ndarray, worth: np.ndarray, wealth: np.ndarray,
                 activity: np.ndarray) -> pd.DataFrame:
    """Per-person funnel propensities (see module docstring) as a DataFrame."""
    limit = np.round(3000.0 * np.exp(0.6 * worth + 0.4 * wealth) / 500.0) * 500.0
    limit = np.clip(limit, 500.0, 50_000.0)
    return pd.DataFrame({
        "p_click": sigmoid(-4.8 + 0.45 * need + 0.35 * activity),
        "p_apply": sigmoid(-3.3 + 0.9 * need),
        "p_grant": sigmoid(-0.6 + 2.0 * worth),
        "credit_limit": limit,
        "p_first_day_drawdown": sigmoid(0.0 + 0.8 * need - 0.2 * wealth),
        "drawdown_share": sigmoid(-0.2 + 0.5 * need),
        "p_repay": sigmoid(2.3 + 1.3 * worth),
    })


def expected_value(p: pd.DataFrame) -> pd.Series:
    """Expected first-day drawdown per *application* (the latent credit value of a person)."""
    return p["p_grant"] * p["p_first_day_drawdown"] * p["credit_limit"] * p["drawdown_share"]


@dataclass(frozen=True)
class Outcomes:
    """Funnel outcomes of a set of applications (one entry per applicant)."""

    credit_granted: np.ndarray
    first_day_drawdown: np.ndarray
    drawdown_amount: np.ndarray
    repaid: np.ndarray
    fees: np.ndarray


def draw_outcomes(p: pd.DataFrame, rng: np.random.Generator) -> Outcomes:
    """Draw what happens after each application in ``p`` (rows of :func:`propensities`).

    ``repaid`` is False for applicants who drew nothing (there is nothing to repay).
    """
    n = len(p)
    u_grant = rng.random(n)
    u_draw = rng.random(n)
    m = p["drawdown_share"].to_numpy()
    share = rng.beta(DRAW_CONCENTRATION * m, DRAW_CONCENTRATION * (1.0 - m))
    return outcomes_from_draws(p, u_grant, u_draw, share, rng.random(n))


def outcomes_from_draws(p: pd.DataFrame, u_grant: np.ndarray, u_draw: np.ndarray, share: np.ndarray,
                        u_repay: np.ndarray) -> Outcomes:
    """The outcomes of applications in ``p`` given their random draws: uniforms for the grant,
    the first-day drawdown and the repayment, and the share of the limit drawn.

    Why separate from :func:`draw_outcomes`: the day-stepped simulator
    (:mod:`fedacq.sim.world`) fixes each person's draws once, so that the same person
    applying under two boost tables (or in two weeks) meets the same luck, and two
    campaigns on one world differ only by what they bid.
    """
    granted = u_grant < p["p_grant"].to_numpy()
    drew = granted & (u_draw < p["p_first_day_drawdown"].to_numpy())
    amount = np.where(drew, np.maximum(100.0, np.round(p["credit_limit"].to_numpy() * share / 100.0) * 100.0), 0.0)
    repaid = drew & (u_repay < p["p_repay"].to_numpy())
    fees = np.where(repaid, np.round(FEE_RATE * amount, 2), 0.0)
    return Outcomes(granted, drew, amount, repaid, fees)
