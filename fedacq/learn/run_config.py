"""What a ``fedacq run`` job is: its settings, the parties' names and the model registry.

Every other ``run_*`` module and the node job (:mod:`fedacq.learn.run_node`)
read a :class:`RunConfig`; it holds names and settings, never data.
"""

from __future__ import annotations

import importlib
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from fedacq.compute.engine import ComputeConfig

if TYPE_CHECKING:
    from fedacq.learn.objectives import Objective

#: model name -> module implementing the role interface (:mod:`fedacq.learn.run_roles`).
MODELS: dict[str, str] = {
    "secureboost": "fedacq.learn.secureboost_roles",
    "hetero_lr": "fedacq.learn.hetero_lr_roles",
    "splitnn": "fedacq.learn.splitnn_roles",
}

TRANSPORTS = ("inproc", "grpc")
LENDER, PLATFORM = "lender", "platform"


@dataclass
class RunConfig:
    """A ``fedacq run`` job. ``params`` are the model's parameters (XGBoost names for trees)."""

    lender_path: Path
    platform_path: Path
    id_column: str
    label_column: str
    out_dir: Path
    model: str = "secureboost"
    params: dict[str, Any] = field(default_factory=dict)
    mode: str = "joint"
    #: the additive HE scheme (:data:`fedacq.crypto.scheme.SCHEMES`); both nodes' policy must list it.
    scheme: str = "paillier"
    key_bits: int = 2048
    insecure_test_key: bool = False
    min_intersection: int = 100
    validation_fraction: float = 0.2
    transport: str = "inproc"
    seed: int = 0
    tracking_dir: str | None = None
    experiment: str = "fedacq-run"
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    progress: bool = True
    #: continue this model (XGBoost's ``xgb_model``): the output folder of an earlier run, whose
    #: ``<party>/model`` each party loads as its own part (a node job: that job's folder in the node's
    #: own store, found by ``xgb_model_id``; never a path from the peer). None: train afresh.
    xgb_model: Path | None = None
    xgb_model_id: str | None = None
    #: where the parties' heavy work runs (``inproc``: one engine both parties share, a single
    #: operator's trial; a node job uses its node's own ``[compute]``, never this).
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def __post_init__(self) -> None:
        from fedacq.crypto.scheme import SCHEMES

        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown scheme {self.scheme!r}; available: {', '.join(sorted(SCHEMES))}")

    def store(self, party: str) -> str:
        """The party's MLflow store: its own folder under the output, or the shared one given."""
        return self.tracking_dir or str(self.out_dir / party / "mlruns")

    def say(self, party: str, text: str) -> None:
        """One progress line on stderr, from the lender only (both run in one terminal)."""
        if self.progress and party == LENDER:
            print(f"[fedacq run] {text}", file=sys.stderr, flush=True)


def model_module(name: str) -> ModuleType:
    """The module driving model ``name``, with a clear error for unknown names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return importlib.import_module(MODELS[name])


def check_scheme(module: ModuleType, scheme: str) -> None:
    """Refuse an additive scheme the model's protocol is not sound on (its ``SCHEMES``, when it
    declares them: hetero LR runs on Paillier only, :data:`fedacq.learn.hetero_lr.SCHEMES` says why)."""
    schemes = getattr(module, "SCHEMES", None)
    if schemes is not None and scheme not in schemes:
        raise ValueError(f"model {module.__name__.rsplit('.', 1)[-1].removesuffix('_roles')!r} runs on "
                         f"scheme(s) {list(schemes)}, not {scheme!r} (see {module.__name__}.SCHEMES)")


def objective_of(params: dict[str, Any]) -> "Objective":
    """The XGBoost objective a model's resolved ``params`` train (``binary:logistic`` for a model
    without one, e.g. the split NN), with its own parameters (``num_class`` ...)."""
    from fedacq.learn import objectives

    return objectives.get(params.get("objective") or "binary:logistic",
                          **{name: params.get(name) for name in objectives.PARAMS})
