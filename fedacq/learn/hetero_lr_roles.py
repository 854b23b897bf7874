"""Hetero logistic regression in ``fedacq run``: the two role functions of the model registry.

The protocol, and what each party learns from it, is in
:mod:`fedacq.learn.hetero_lr`; this module maps the run's parameters onto it
(``objective`` and ``tweedie_variance_power`` with XGBoost's names and values:
``binary:logistic``, ``reg:squarederror``, ``count:poisson``, ``reg:tweedie``;
``residual_bound``; scikit-learn names: ``penalty``, ``C``, ``max_iter``, ``batch_size``,
``learning_rate`` (the schedule), ``solver`` (adam/sgd), ``eta0``, ``power_t``, ``momentum``, ``tol``,
``n_iter_no_change``), times its phases and saves each party's model part.
Scores for evaluation come from federated inference: the platform sends its
partial logits of the rows asked for.

Checkpoints (node jobs): each party saves its own state after every epoch and
resumes from the last epoch both hold (:class:`fedacq.learn.run_checkpoints.RunCheckpoints`;
what each side stores is listed in ``protocols/hetero_lr.md``).
"""

from __future__ import annotations

from typing import Any

# SCHEMES: the additive schemes hetero LR is sound on (run_node refuses a job proposing another)
from fedacq.learn.hetero_lr import SCHEMES  # noqa: F401
from fedacq.learn.run_roles import PartyData, RoleContext, RoleResult, fit_lender, model_files, serve_platform
from fedacq.link.link import Link

MODES = ("joint",)
ITERATION = ("max_iter", "epoch")

#: parameters ``fedacq run`` accepts for hetero LR, with their defaults (see HeteroLRLender).
DEFAULTS: dict[str, Any] = {
    "objective": "binary:logistic",
    "tweedie_variance_power": 1.5,
    "residual_bound": None,
    "penalty": "l2",
    "C": 1.0,
    "fit_intercept": True,
    "max_iter": 30,
    "batch_size": 512,
    "learning_rate": "invscaling",
    "solver": "adam",
    "eta0": 0.05,
    "power_t": 0.5,
    "momentum": 0.9,
    "tol": 1e-4,
    "n_iter_no_change": 3,
    "early_stopping": True,
    "residual_frac_bits": 24,
    "feature_frac_bits": 8,
    "n_jobs": None,
}


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``params``; unknown names and bad values are errors."""
    from fedacq.learn import hetero_lr_objectives
    from fedacq.learn.hetero_lr import _check_params

    if params.get("objective") in hetero_lr_objectives.REFUSED:  # the reason, before its parameters' names
        raise ValueError(f"hetero_lr: objective {params['objective']!r} is not available for hetero LR: "
                         f"{hetero_lr_objectives.REFUSED[params['objective']]}")
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"hetero_lr: unknown parameter(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    if out["penalty"] in ("none", "None"):
        out["penalty"] = None
    try:
        _check_params(out["penalty"], out["C"], out["max_iter"], out["batch_size"], out["learning_rate"],
                      out["eta0"], out["power_t"], out["momentum"], out["n_iter_no_change"],
                      out["residual_frac_bits"], out["feature_frac_bits"], out["solver"],
                      out["objective"], out["tweedie_variance_power"], out["residual_bound"])
    except ValueError as exc:
        raise ValueError(f"hetero_lr: {exc}") from exc
    return out


def lender_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.hetero_lr import HeteroLRLender

    lender = HeteroLRLender(**ctx.params, scheme=ctx.scheme, key_bits=ctx.key_bits, insecure_test_key=ctx.insecure_test_key,
                            random_state=ctx.seed, callback=ctx.on_iteration, checkpoints=ctx.checkpoints)
    train_score, valid_score = fit_lender(lender, link, data, ctx)
    lender.save(ctx.model_dir)
    return RoleResult(files=model_files(ctx), train_score=train_score, valid_score=valid_score,
                      history=[dict(h) for h in lender.history_],
                      info={"epochs": lender.n_iter_, "best_epoch": getattr(lender, "best_epoch_", None),
                            "crypto_seconds": lender.timings_})


def platform_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.hetero_lr import HeteroLRPlatform

    # the key floor is this party's own: the lender's hlr.hello is checked against it
    # the scheme too: the lender's key is read only as the one the job agreed
    platform = HeteroLRPlatform(n_jobs=ctx.params.get("n_jobs"), min_key_bits=ctx.min_key_bits,
                                schemes=(ctx.scheme,),
                                checkpoints=ctx.checkpoints,
                                on_epoch=lambda e: ctx.progress("epoch", e + 1, ctx.params["max_iter"]))
    serve_platform(platform, link, data, ctx)
    return RoleResult(files=model_files(ctx), info={"crypto_seconds": platform.timings_})

