"""Population stability index (PSI): how far one score distribution has moved from another.

The one implementation in fedacq: the console's score-drift page uses it, and the campaign's
drift gate (a new model version against the live one) is meant to call the same function.

Definition. Cut the *reference* scores (the live version's) into ``bins`` groups of equal
size at their quantiles; let ``e_i`` be the reference's share of rows in group ``i`` and
``a_i`` the other distribution's share in the same group (same cut points). Then

.. math::

    \\mathrm{PSI} = \\sum_i (a_i - e_i) \\ln\\frac{a_i}{e_i}

which is the symmetrised Kullback–Leibler divergence :math:`KL(a\\|e) + KL(e\\|a)` of the two
binned distributions: 0 for identical shares, growing with any shift, never negative. A share
of 0 would make the logarithm infinite, so every share is floored at :data:`FLOOR` (one row
in ten thousand) before the sum: an empty group then counts as "very rare", not "impossible".

Reading it (the credit-scoring convention): below 0.1 the population is stable, 0.1 to 0.25
it has shifted moderately (look at why), above 0.25 it has shifted enough that the model's
score means something else than it did (:func:`verdict`).

Why quantile cuts of the reference: each group then holds the same share of the reference,
so no group's term is dominated by a handful of rows; equal-width cuts of a skewed score put
most rows in one group and hide a shift inside it. Tied reference scores can merge cut
points; the duplicated ones are dropped, so a constant score has one group and a PSI of 0.
"""

from __future__ import annotations

import numpy as np

#: the smallest share a group is given in the sum (an empty group would make PSI infinite).
FLOOR = 1e-4
#: (upper bound, verdict) in increasing order; above the last bound: "significant shift".
THRESHOLDS = ((0.1, "stable"), (0.25, "moderate shift"))


def _finite(scores: np.ndarray | list[float], what: str) -> np.ndarray:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.size == 0:
        raise ValueError(f"{what}: no scores")
    if not np.isfinite(s).all():
        raise ValueError(f"{what}: scores must be finite numbers")
    return s


def reference_cuts(reference: np.ndarray | list[float], bins: int = 10) -> np.ndarray:
    """The interior cut points: the reference's quantiles at 1/bins, ..., (bins-1)/bins, ties merged."""
    if not isinstance(bins, int) or bins < 2:
        raise ValueError(f"bins must be an integer of at least 2, got {bins!r}")
    s = _finite(reference, "reference")
    return np.unique(np.quantile(s, np.arange(1, bins) / bins))


def shares(scores: np.ndarray | list[float], cuts: np.ndarray) -> np.ndarray:
    """Each group's share of ``scores``: group ``i`` holds ``cuts[i-1] < s <= cuts[i]`` (open ends)."""
    s = _finite(scores, "scores")
    counts = np.bincount(np.searchsorted(cuts, s, side="left"), minlength=len(cuts) + 1)
    return counts / s.size


def psi_from_shares(expected: np.ndarray, actual: np.ndarray, floor: float = FLOOR) -> float:
    """PSI of two share vectors over the same groups (module docstring), shares floored at ``floor``."""
    e = np.maximum(np.asarray(expected, dtype=np.float64), floor)
    a = np.maximum(np.asarray(actual, dtype=np.float64), floor)
    if e.shape != a.shape or e.ndim != 1:
        raise ValueError(f"PSI needs two share vectors of one length, got shapes {e.shape} and {a.shape}")
    return float(np.sum((a - e) * np.log(a / e)))


def population_stability_index(reference: np.ndarray | list[float], other: np.ndarray | list[float],
                               bins: int = 10) -> float:
    """PSI of ``other`` against ``reference``, cut at the reference's quantiles into ``bins`` groups."""
    cuts = reference_cuts(reference, bins)
    return psi_from_shares(shares(reference, cuts), shares(other, cuts))


def verdict(psi: float) -> str:
    """"stable", "moderate shift" or "significant shift" (module docstring)."""
    for bound, name in THRESHOLDS:
        if psi < bound:
            return name
    return "significant shift"
