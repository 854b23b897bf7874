"""Tiers and boosts: cut scores into tiers, give each tier a bid multiplier within a floor and cap.

Why tiers rather than a boost proportional to the score: a bidding engine and the people who
approve budgets reason in a handful of segments ("top 5 % gets +60 %"), a tier's boost can be
tuned without retraining, and the per-tier outcome can be measured. Cut points are either
score quantiles (a fixed share of the population per tier whatever the score scale of this
model version) or absolute score thresholds (a fixed meaning of "high value" across model
versions). The floor and cap bound what any configuration can do to spend.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

METHODS = ("quantile", "threshold")


@dataclass(frozen=True)
class TierConfig:
    """``len(cuts) + 1`` tiers, tier 0 lowest; ``boosts[i]`` is tier i's multiplier.

    ``method="quantile"``: cuts are quantiles in (0, 1) of this population's scores.
    ``method="threshold"``: cuts are scores. Boosts are clipped to ``[floor, cap]``.
    """

    cuts: tuple[float, ...] = (0.5, 0.8, 0.95)
    boosts: tuple[float, ...] = (1.0, 1.1, 1.3, 1.6)
    method: str = "quantile"
    floor: float = 1.0
    cap: float = 2.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "cuts", tuple(float(c) for c in self.cuts))
        object.__setattr__(self, "boosts", tuple(float(b) for b in self.boosts))
        if self.method not in METHODS:
            raise ValueError(f"tiers: method must be one of {METHODS}, got {self.method!r}")
        if len(self.boosts) != len(self.cuts) + 1:
            raise ValueError(f"tiers: {len(self.cuts)} cut(s) make {len(self.cuts) + 1} tiers, "
                             f"but {len(self.boosts)} boost(s) were given")
        if any(b >= a for a, b in zip(self.cuts[1:], self.cuts)):
            raise ValueError(f"tiers: cuts must be strictly increasing, got {list(self.cuts)}")
        if self.method == "quantile" and any(not 0.0 < c < 1.0 for c in self.cuts):
            raise ValueError(f"tiers: quantile cuts must be in (0, 1), got {list(self.cuts)}")
        if not 0.0 < self.floor <= self.cap:
            raise ValueError(f"tiers: need 0 < floor <= cap, got floor={self.floor}, cap={self.cap}")
        if any(not np.isfinite(b) or b <= 0 for b in self.boosts):
            raise ValueError(f"tiers: boosts must be positive numbers, got {list(self.boosts)}")

    @classmethod
    def from_dict(cls, d: dict) -> "TierConfig":
        unknown = set(d) - {"cuts", "boosts", "method", "floor", "cap"}
        if unknown:
            raise ValueError(f"tiers: unknown key(s) {sorted(unknown)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def clipped_boosts(self) -> np.ndarray:
        return np.clip(np.asarray(self.boosts, dtype=np.float64), self.floor, self.cap)


@dataclass(frozen=True)
class Tiers:
    """Tiers fitted to one population: the score thresholds actually used and each tier's boost."""

    thresholds: np.ndarray
    boosts: np.ndarray
    config: TierConfig = field(default_factory=TierConfig)

    def tier_of(self, scores: np.ndarray) -> np.ndarray:
        """Tier index (int8) of each score: the number of thresholds the score reaches."""
        return np.searchsorted(self.thresholds, np.asarray(scores), side="right").astype(np.int8)

    def boost_of(self, scores: np.ndarray) -> np.ndarray:
        return self.boosts[self.tier_of(scores)].astype(np.float32)

    def to_dict(self) -> dict:
        return {**self.config.to_dict(), "thresholds": [float(t) for t in self.thresholds],
                "tier_boosts": [float(b) for b in self.boosts]}


def fit_tiers(scores: np.ndarray, config: TierConfig) -> Tiers:
    """Turn the configured cuts into score thresholds for this population."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.size == 0:
        raise ValueError("tiers: no scores to cut into tiers")
    if not np.isfinite(scores).all():
        raise ValueError("tiers: scores contain NaN or infinite values")
    if config.method == "quantile":
        thresholds = np.quantile(scores, config.cuts)
    else:
        thresholds = np.asarray(config.cuts, dtype=np.float64)
    return Tiers(thresholds=thresholds, boosts=config.clipped_boosts(), config=config)
