"""Ad auctions: competing bidders, second-price clearing, budget pacing.

Every ad opportunity (one user, one moment, one slot where the lender's ad is
eligible) is sold in a sealed-bid second-price auction with a reserve price.
The competition is a handful of advertiser types (:data:`COMPETITORS`); each
takes part in an auction with its own probability and bids a value that
depends on the user's traits (e-commerce and brands pay more for wealthy,
active users; games for young, active ones; other lenders for needy and
creditworthy ones — good credit users are contested). Bids are per impression,
in currency units (CNY; ``0.03`` is a CPM of 30).

The lender bids ``target_cpa * pcvr * boost * alpha``: ``pcvr`` is the
platform's predicted probability that an impression leads to an application,
``boost`` the multiplier from the boost table, and ``alpha <= 1`` the pacing
multiplier of :class:`Pacer`, which throttles bids so that the daily budget
lasts the whole day. The winner pays the highest competing bid (or the reserve).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Competitor:
    """An advertiser type: how often it competes and what a user is worth to it.

    Its bid is ``scale * exp(loadings . (need, worth, wealth, activity, young) + sigma * eps)``.
    """

    name: str
    participation: float
    scale: float
    loadings: tuple[float, float, float, float, float]
    sigma: float


COMPETITORS: tuple[Competitor, ...] = (
    Competitor("ecommerce", 0.9, 0.030, (0.0, 0.0, 0.5, 0.25, 0.0), 0.5),
    Competitor("games", 0.6, 0.025, (0.1, 0.0, 0.0, 0.4, 0.4), 0.7),
    Competitor("local_services", 0.5, 0.020, (0.0, 0.0, 0.3, 0.1, 0.0), 0.5),
    Competitor("other_lenders", 0.4, 0.035, (0.35, 0.35, 0.1, 0.0, 0.0), 0.6),
    Competitor("brand", 0.7, 0.020, (0.0, 0.0, 0.3, 0.1, 0.0), 0.3),
)


def competing_bids(traits: np.ndarray, rng: np.random.Generator,
                   competitors: tuple[Competitor, ...] = COMPETITORS) -> np.ndarray:
    """Highest competing bid per opportunity (0 where nobody else bids).

    ``traits``: (n, 5) array of need, worth, wealth, activity, young (0/1) of each opportunity's user.
    """
    n = len(traits)
    best = np.zeros(n)
    for c in competitors:  # a handful of advertiser types, each vectorised over opportunities
        bid = c.scale * np.exp(traits @ np.asarray(c.loadings) + c.sigma * rng.standard_normal(n))
        bid[rng.random(n) >= c.participation] = 0.0
        np.maximum(best, bid, out=best)
    return best


def clear(bids: np.ndarray, competing: np.ndarray, reserve: float) -> tuple[np.ndarray, np.ndarray]:
    """Second-price clearing: which opportunities the bidder wins and the price it pays for each."""
    price = np.maximum(competing, reserve)
    return bids > price, price


class Pacer:
    """Budget pacing by a multiplicative bid throttle.

    The day is cut into ``n_slots`` equal slots. After each slot, ``alpha`` is
    multiplied by ``(planned / spent) ** gain`` where ``planned`` is the budget
    share the day has used up so far, and kept within ``[alpha_min, alpha_max]``.
    ``alpha_max = 1`` means the lender never bids above its target CPA (times the
    boost): pacing only slows spend down. ``alpha`` carries over to the next day,
    as a real pacer's learned state does.
    """

    def __init__(self, n_slots: int = 24, gain: float = 0.5, alpha: float = 1.0,
                 alpha_min: float = 0.02, alpha_max: float = 1.0) -> None:
        if n_slots < 1:
            raise ValueError(f"n_slots must be positive, got {n_slots}")
        self.n_slots, self.gain = n_slots, gain
        self.alpha, self.alpha_min, self.alpha_max = alpha, alpha_min, alpha_max

    def update(self, planned: float, spent: float) -> None:
        ratio = planned / max(spent, 1e-9 * max(planned, 1.0))
        self.alpha = float(np.clip(self.alpha * ratio ** self.gain, self.alpha_min, self.alpha_max))


def run_day(base_bid: np.ndarray, competing: np.ndarray, slot: np.ndarray, budget: float,
            pacer: Pacer, reserve: float) -> tuple[np.ndarray, np.ndarray, float]:
    """One day of one budget: opportunities sorted by time, ``slot`` their slot index.

    Returns the indices of won opportunities, their prices, and the mean pacing
    multiplier over the day's slots. Once the budget is spent, the rest of the
    day's opportunities are lost.
    """
    won_idx, won_price, alphas = [], [], []
    spent = 0.0
    bounds = np.searchsorted(slot, np.arange(pacer.n_slots + 1))
    for s in range(pacer.n_slots):
        lo, hi = bounds[s], bounds[s + 1]
        alphas.append(pacer.alpha)
        if spent < budget and hi > lo:
            win, price = clear(base_bid[lo:hi] * pacer.alpha, competing[lo:hi], reserve)
            idx = np.flatnonzero(win)
            cost = np.cumsum(price[idx])
            keep = spent + cost <= budget
            won_idx.append(lo + idx[keep])
            won_price.append(price[idx[keep]])
            spent += float(cost[keep][-1]) if keep.any() else 0.0
            if not keep.all():
                spent = budget  # exhausted: the remaining opportunities of the day are lost
        pacer.update(budget * (s + 1) / pacer.n_slots, spent)
    if not won_idx:
        return np.empty(0, dtype=np.int64), np.empty(0), float(np.mean(alphas))
    return np.concatenate(won_idx), np.concatenate(won_price), float(np.mean(alphas))
