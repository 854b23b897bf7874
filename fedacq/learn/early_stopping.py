"""Early stopping as XGBoost's ``early_stopping_rounds``, with scikit-learn's ``tol``.

One helper for every iterative model (SecureBoost trees, hetero LR and split NN
epochs)::

    stopper = EarlyStopping(rounds=5)            # lower is better (maximize=True for AUC)
    for it in range(n):
        ...
        if stopper.update(it, history[-1]["valid_logloss"]):
            break
    keep = stopper.best_iteration                # -1 if update was never called

Like XGBoost's callback: a score is the best so far only when strictly better
than the best before it (ties keep the earlier iteration). The patience runs
from :attr:`EarlyStopping.last_reset`, the last iteration that beat the best
before it by more than ``tol`` (the first score always does), and training
stops once ``rounds`` iterations have passed since then. With ``tol = 0``
(SecureBoost's) that is XGBoost's rule exactly; ``tol > 0`` is scikit-learn's
``tol`` / ``n_iter_no_change`` (hetero LR and split NN), where a small
improvement still becomes the best but does not restart the patience.
``rounds=None`` or 0 never stops (the best iteration is still tracked).
:meth:`state` and :meth:`from_state` carry it through a checkpoint as plain JSON.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass
class EarlyStopping:
    """The best score and iteration so far, and whether ``rounds`` have passed without an improvement by ``tol``.

    After ``update(it, score)``: ``best_iteration == it`` says ``score`` is the
    best so far (keep this iteration's model), ``last_reset == it`` that it beat
    the best before it by more than ``tol`` (hetero LR's adaptive learning rate
    shrinks on an epoch that did not).
    """

    rounds: int | None = None
    maximize: bool = False
    tol: float = 0.0
    best_score: float = math.nan
    best_iteration: int = -1
    last_reset: int = -1
    stopped: bool = False

    def __post_init__(self) -> None:
        if self.rounds is not None and (isinstance(self.rounds, bool) or not isinstance(self.rounds, int)
                                        or self.rounds < 0):
            raise ValueError(f"early_stopping_rounds must be a non-negative integer or None, got {self.rounds!r}")
        if isinstance(self.tol, bool) or not isinstance(self.tol, (int, float)) or not 0 <= self.tol < math.inf:
            raise ValueError(f"early stopping tol must be a finite number >= 0, got {self.tol!r}")

    def improves(self, score: float, by: float = 0.0) -> bool:
        """Whether ``score`` beats the best so far by more than ``by`` (any finite score beats none)."""
        if self.best_iteration < 0:
            return True
        return score > self.best_score + by if self.maximize else score < self.best_score - by

    def update(self, iteration: int, score: float) -> bool:
        """Record ``score`` of ``iteration``; True when training should stop now."""
        if not math.isfinite(score):
            raise ValueError(f"early stopping: iteration {iteration} scored {score!r}")
        if self.improves(score, self.tol):
            self.last_reset = int(iteration)
        if self.improves(score):
            self.best_score, self.best_iteration = float(score), int(iteration)
        if self.rounds and iteration - self.last_reset >= self.rounds:
            self.stopped = True
        return self.stopped

    def state(self) -> dict[str, Any]:
        """JSON-able state for a checkpoint."""
        return {"rounds": self.rounds, "maximize": self.maximize, "tol": self.tol,
                "best_score": None if self.best_iteration < 0 else self.best_score,
                "best_iteration": self.best_iteration, "last_reset": self.last_reset, "stopped": self.stopped}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "EarlyStopping":
        """The stopper :meth:`state` described (this party's own checkpoint)."""
        best = state["best_score"]
        return cls(rounds=state["rounds"], maximize=bool(state["maximize"]), tol=float(state["tol"]),
                   best_score=math.nan if best is None else float(best), best_iteration=int(state["best_iteration"]),
                   last_reset=int(state["last_reset"]), stopped=bool(state["stopped"]))
