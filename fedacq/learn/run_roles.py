"""The role interface of ``fedacq run``: what a model's two role functions get and give.

:data:`fedacq.learn.run_config.MODELS` maps a model name to the module that drives
it. Adding a model is one entry there plus a module that defines:

* ``MODES``: the modes it supports (e.g. ``("joint",)``);
* ``resolve_params(params: dict) -> dict``: fill defaults, reject unknown names
  (``ValueError`` naming them), before any party starts;
* ``ITERATION``: ``(param name giving the number of iterations, unit)`` for
  the progress bar, e.g. ``("n_estimators", "tree")``, or ``None``;
* ``lender_role(link, data: PartyData, ctx: RoleContext) -> RoleResult`` and
  ``platform_role(link, data: PartyData, ctx: RoleContext) -> RoleResult``:
  train over the link, time the phases with ``ctx.phase("train")`` and
  ``ctx.phase("predict")``, report per-iteration metrics through
  ``ctx.on_iteration(i, metrics)``, save the party's model part under
  ``ctx.model_dir`` and list its files in ``RoleResult.files``. The lender's
  result carries ``train_score`` and ``valid_score``: the objective's
  predictions for ``data.X_train`` / ``data.X_valid`` rows, in order, as
  XGBoost's ``Booster.predict`` gives them (probabilities of label 1 for
  ``binary:logistic``, the predicted value or mean for a regression, ``(n,
  num_class)`` class probabilities for ``multi:softprob``); the platform's never
  does. :func:`fit_lender` and :func:`serve_platform` do the fit/predict part of
  each side, so a role only builds its model and saves it.

A model that can continue a model (XGBoost's ``xgb_model``: the ``run`` job's
``xgb_model`` parameter, :mod:`fedacq.learn.run_node`) also defines
``load_live_model(directory, party, params, mode, feature_names)``: this party's
part of the live model from ``directory`` (its own files), checked against the
job, or ``ValueError`` saying why it cannot be continued. The role then gets it
as ``ctx.xgb_model``.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from fedacq.link.link import Link

if TYPE_CHECKING:
    from fedacq.learn.run_checkpoints import RunCheckpoints


@dataclass
class PartyData:
    """One party's rows of the intersection, split into training and validation rows."""

    X_train: np.ndarray
    X_valid: np.ndarray | None
    feature_names: list[str]
    y_train: np.ndarray | None = None
    y_valid: np.ndarray | None = None


@dataclass
class RoleContext:
    """Everything a role function needs besides its link and data."""

    party: str
    params: dict[str, Any]
    mode: str
    key_bits: int
    insecure_test_key: bool
    seed: int
    model_dir: Path
    on_iteration: Callable[[int, dict[str, float]], None]
    timings: dict[str, float] = field(default_factory=dict)
    #: this party's checkpoints of the job (a node job), None in-process (``fedacq run``).
    checkpoints: "RunCheckpoints | None" = None
    #: ``progress(step, done, total)``: shown by ``fedacq job status`` with an ETA.
    progress: Callable[[str, int, int | None], None] = lambda step, done, total=None: None
    #: the additive HE scheme the job agreed (each node's policy checked it): the only one accepted from the peer.
    scheme: str = "paillier"
    #: this party's part of the live model the job continues (``load_live_model``), None to train afresh,
    #: and the name it was given by (the earlier job's id, or folder for ``fedacq run``).
    xgb_model: Any = None
    xgb_model_job: str | None = None

    @property
    def min_key_bits(self) -> int:
        """The smallest peer key this party accepts: the key size it agreed to (its own
        policy accepted it: at least 2048 bits, or a test key only in a node's test mode)."""
        return self.key_bits

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase (wall clock, waiting for the peer included); repeated phases add up."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def model_files(ctx: RoleContext) -> list[Path]:
    """Every file of the party's model part, for ``RoleResult.files``."""
    return sorted(p for p in ctx.model_dir.rglob("*") if p.is_file())


def fit_lender(lender: Any, link: Link, data: PartyData,
               ctx: RoleContext) -> tuple[np.ndarray, np.ndarray | None]:
    """The lender's side of every model: fit (with the validation rows as eval set), then ask for
    the objective's predictions (``predict``: what XGBoost's ``Booster.predict`` returns) on the
    training and validation rows, in that order."""
    eval_set = (data.X_valid, data.y_valid) if data.X_valid is not None else None
    continued = {} if ctx.xgb_model is None else {"xgb_model": ctx.xgb_model}
    with ctx.phase("train"):
        lender.fit(link, data.X_train, data.y_train, eval_set=eval_set, **continued)
    with ctx.phase("predict"):
        train_score = np.asarray(lender.predict(link, data.X_train), dtype=np.float64)
        valid_score = (np.asarray(lender.predict(link, data.X_valid), dtype=np.float64)
                       if data.X_valid is not None else None)
    return train_score, valid_score


def serve_platform(platform: Any, link: Link, data: PartyData, ctx: RoleContext) -> None:
    """The platform's side of every model: fit, answer the lender's predictions, save.

    The lender asks for predictions on the training rows, then on the validation
    rows (if any), in that order; the platform only answers, it gets no scores.
    """
    continued = {} if ctx.xgb_model is None else {"xgb_model": ctx.xgb_model}
    with ctx.phase("train"):
        platform.fit(link, data.X_train, eval_X=data.X_valid, **continued)
    with ctx.phase("predict"):
        platform.serve_predict(link, data.X_train)
        if data.X_valid is not None:
            platform.serve_predict(link, data.X_valid)
    platform.save(ctx.model_dir)


@dataclass
class RoleResult:
    """What a role function returns (see the module docstring)."""

    files: list[Path]
    train_score: np.ndarray | None = None
    valid_score: np.ndarray | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

