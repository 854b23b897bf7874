"""Early stopping as XGBoost's ``early_stopping_rounds``: stop when the watched metric has not improved for N rounds.

One helper for every iterative model (SecureBoost trees, hetero LR and split NN
epochs)::

    stopper = EarlyStopping(rounds=5)            # lower is better (maximize=True for AUC)
    for it in range(n):
        ...
        if stopper.update(it, history[-1]["valid_logloss"]):
            break
    keep = stopper.best_iteration                # -1 if update was never called

Like XGBoost's callback: a score counts as an improvement only when strictly
better than the best so far (ties keep the earlier iteration), and training
stops once ``rounds`` iterations have passed since the best one. ``rounds=None``
or 0 never stops (the best iteration is still tracked). :meth:`state` and
:meth:`from_state` carry it through a checkpoint as plain JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """The best score and iteration so far, and whether ``rounds`` have passed without improvement."""

    rounds: int | None = None
    maximize: bool = False
    best_score: float = math.nan
    best_iteration: int = -1
    stopped: bool = False

    def __post_init__(self) -> None:
        if self.rounds is not None and (isinstance(self.rounds, bool) or not isinstance(self.rounds, int)
                                        or self.rounds < 0):
            raise ValueError(f"early_stopping_rounds must be a non-negative integer or None, got {self.rounds!r}")

    def improves(self, score: float) -> bool:
        """Whether ``score`` is strictly better than the best so far (any finite score beats none)."""
        if self.best_iteration < 0:
            return True
        return score > self.best_score if self.maximize else score < self.best_score

    def update(self, iteration: int, score: float) -> bool:
        """Record ``score`` of ``iteration``; True when training should stop now."""
        if not math.isfinite(score):
            raise ValueError(f"early stopping: iteration {iteration} scored {score!r}")
        if self.improves(score):
            self.best_score, self.best_iteration = float(score), int(iteration)
        elif self.rounds and iteration - self.best_iteration >= self.rounds:
            self.stopped = True
        return self.stopped

    def state(self) -> dict[str, Any]:
        """JSON-able state for a checkpoint."""
        return {"rounds": self.rounds, "maximize": self.maximize,
                "best_score": None if self.best_iteration < 0 else self.best_score,
                "best_iteration": self.best_iteration, "stopped": self.stopped}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "EarlyStopping":
        best = state["best_score"]
        return cls(state["rounds"], bool(state["maximize"]), math.nan if best is None else float(best),
                   int(state["best_iteration"]), bool(state["stopped"]))
