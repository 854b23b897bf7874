"""fedacq: privacy-preserving joint modeling for credit customer acquisition.

Two parties — a lender (labels, Paillier private key) and an ad platform (features,
whole user base) — align users, train models on encrypted gradients, score, activate
and measure, without either side's raw data leaving its premises. See DESIGN.md.

The scikit-learn estimators (``fedacq.SecureBoostClassifier``, ``fedacq.LocalPlatform`` ...,
listed in :mod:`fedacq.learn`) are importable from here and load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

# gRPC reads its TLS 1.2 cipher suites when grpc is first imported: set them before anything can.
from fedacq.crypto import tls as _tls  # noqa: E402,F401
from fedacq.learn import __all__ as _learn_exports  # noqa: E402

__all__ = ["__version__", *_learn_exports]


def __getattr__(name: str) -> Any:
    if name in _learn_exports:
        import fedacq.learn

        return getattr(fedacq.learn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
