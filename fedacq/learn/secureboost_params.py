"""SecureBoost's parameters, declared once: XGBoost's names, fedacq's defaults.

Three groups, by who decides them and where they travel:

* :data:`TRAIN` - the model's training parameters. The lender announces them
  to the platform in ``sb.hello`` (the platform builds its bins from
  ``max_bin``, checks ``objective``/``num_class`` against what it agreed to) and
  saves them with its model. XGBoost's names and meaning; the defaults are
  fedacq's where XGBoost's would be costly under encryption (30 trees of depth 3
  and 32 bins, where XGBoost has 100, 6 and 256).
* :data:`JOB` - set by the job rather than by ``--param``: the mode, the
  additive HE scheme (``"paillier"`` or ``"ou"``, :mod:`fedacq.crypto.scheme`)
  and its key size, and the shared seed (it drives row and column sampling
  only). Sent in ``sb.hello`` too.
* :data:`LOCAL` - this machine's own business, never sent: the worker count and
  the explicit test mode for small keys.

``fedacq run --param name=value`` accepts :data:`RUN` (``TRAIN`` and ``n_jobs``);
:data:`SPEC` gives each training parameter's type and help for a command line.
"""

from __future__ import annotations

from typing import Any, NamedTuple

class Param(NamedTuple):
    """A parameter's default, the type a command line reads it as, and a one-line help."""

    default: Any
    type: type
    help: str


#: the training parameters, in XGBoost's order of importance
SPEC: dict[str, Param] = {
    "n_estimators": Param(30, int, "number of boosting rounds (num_class trees each for multi:softprob)"),
    "max_depth": Param(3, int, "maximum tree depth"),
    "learning_rate": Param(0.3, float, "shrinkage per tree (eta)"),
    "reg_lambda": Param(1.0, float, "L2 regularisation on leaf weights"),
    "reg_alpha": Param(0.0, float, "L1 regularisation on leaf weights"),
    "gamma": Param(0.0, float, "minimum loss reduction to split"),
    "min_child_weight": Param(1.0, float, "minimum hessian sum in a child"),
    "max_delta_step": Param(None, float, "clip leaf weights to this (XGBoost: 0 = off, 0.7 for count:poisson)"),
    "max_bin": Param(32, int, "maximum number of bins per feature"),
    "subsample": Param(1.0, float, "row sampling ratio per tree"),
    "colsample_bytree": Param(1.0, float, "feature sampling ratio per tree"),
    "objective": Param("binary:logistic", str, "XGBoost objective: binary:logistic, reg:squarederror, "
                       "reg:tweedie, count:poisson, multi:softprob"),
    "tweedie_variance_power": Param(1.5, float, "reg:tweedie variance power, in [1, 2)"),
    "num_class": Param(None, int, "number of classes (multi:softprob)"),
    "base_score": Param(None, float, "initial prediction (default: XGBoost's estimate from the labels)"),
    "early_stopping_rounds": Param(None, int, "stop after this many rounds without validation improvement"),
    "leaf_noise": Param(None, dict, "prospect mode: DP noise on the released leaf values "
                        "({mechanism: laplace|gaussian, epsilon, [delta], [gradient_bound]})"),
    "top_rate": Param(None, float, "GOSS (LightGBM's name; with other_rate; off when unset): share of rows kept per "
                      "tree by largest |gradient|. Not XGBoost-exact; the platform learns each tree's sample"),
    "other_rate": Param(None, float, "GOSS: share of rows drawn at random from the rest, their g and h amplified"),
}

TRAIN: dict[str, Any] = {name: p.default for name, p in SPEC.items()}

JOB: dict[str, Any] = {
    "mode": "joint",
    "scheme": "paillier",
    "key_bits": 2048,
    "random_state": 0,
}

LOCAL: dict[str, Any] = {
    "insecure_test_key": False,
    "n_jobs": None,
}

#: what ``sb.hello`` carries (and the lender's saved model records)
WIRE = tuple(TRAIN) + tuple(JOB)

#: what ``fedacq run --param`` accepts, with defaults
RUN: dict[str, Any] = {**TRAIN, "n_jobs": None}


def resolve(params: dict[str, Any]) -> dict[str, Any]:
    """:data:`RUN`'s defaults overridden by ``params`` (None keeps the default); unknown names list the known ones."""
    unknown = sorted(set(params) - set(RUN))
    if unknown:
        raise ValueError(f"secureboost: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(RUN)}")
    return {**RUN, **{k: v for k, v in params.items() if v is not None}}
