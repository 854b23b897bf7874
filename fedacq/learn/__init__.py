"""learn: binning, the federated learners (SecureBoost, hetero LR, split NN), metrics, ``fedacq run``.

The scikit-learn estimators and the platform's counterparts are importable from here (and from
``fedacq``); they load on first use, so ``import fedacq.learn`` stays light (no scikit-learn, no torch).
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS = {
    "SecureBoostClassifier": "fedacq.learn.secureboost_estimator",
    "SecureBoostRegressor": "fedacq.learn.secureboost_estimator",
    "HeteroLogisticRegression": "fedacq.learn.hetero_lr_estimator",
    "HeteroLinearRegression": "fedacq.learn.hetero_lr_estimator",
    "SplitNNClassifier": "fedacq.learn.splitnn_estimator",
    "PlatformPeer": "fedacq.learn.local_peer",
    "LocalPlatform": "fedacq.learn.local_peer",
    "GrpcPlatform": "fedacq.learn.local_peer",
    "PeerRefused": "fedacq.learn.estimator_base",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
