"""SecureBoost in ``fedacq run``: the two role functions of the model registry (see :mod:`fedacq.learn.run`).

The protocol itself, and what each party learns from it, is in
:mod:`fedacq.learn.secureboost`; this module only maps the run's parameters
onto it, times its phases and saves each party's model part.

Scores for evaluation: in ``joint`` mode the lender gets predictions by
federated inference (the platform answers only which branch its own splits
send each row). In ``prospect`` mode the trees split on platform features only;
the platform holds the released leaf values and exports an XGBoost JSON model,
and the lender's scores for evaluation come from the same federated inference
over the intersection rows it already shares with the platform.

Checkpoints (node jobs): each party saves its own state after every tree and
resumes from the last tree both hold (:class:`fedacq.learn.run.RunCheckpoints`;
what each side stores is listed in ``protocols/secureboost.md``).
"""

from __future__ import annotations

from typing import Any


from fedacq.learn.run import PartyData, RoleContext, RoleResult, fit_lender, model_files, serve_platform
from fedacq.link.link import Link

MODES = ("joint", "prospect")
ITERATION = ("n_estimators", "tree")

#: XGBoost-named parameters ``fedacq run`` accepts for SecureBoost, with their defaults.
DEFAULTS: dict[str, Any] = {
    "n_estimators": 30,
    "max_depth": 3,
    "learning_rate": 0.3,
    "reg_lambda": 1.0,
    "reg_alpha": 0.0,
    "gamma": 0.0,
    "min_child_weight": 1.0,
    "max_bin": 32,
    "subsample": 1.0,
    "colsample_bytree": 1.0,
    "objective": "binary:logistic",
    "base_score": None,
    "early_stopping_rounds": None,
    "n_jobs": None,
    "leaf_noise": None,
}


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``params``; unknown names are an error that lists them."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"secureboost: unknown parameter(s) {', '.join(unknown)}; "
                         f"known: {', '.join(DEFAULTS)}")
    out = {**DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
    if out["objective"] != "binary:logistic":
        raise ValueError("fedacq run evaluates binary classifiers: objective must be binary:logistic")
    return out


def lender_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.secureboost import SecureBoostLender

    lender = SecureBoostLender(**ctx.params, mode=ctx.mode, key_bits=ctx.key_bits,
                               insecure_test_key=ctx.insecure_test_key, random_state=ctx.seed,
                               callback=ctx.on_iteration, checkpoints=ctx.checkpoints)
    train_score, valid_score = fit_lender(lender, link, data, ctx)
    lender.save(ctx.model_dir)
    history = [dict(h) for h in getattr(lender, "history_", []) or []]
    return RoleResult(files=model_files(ctx), train_score=train_score, valid_score=valid_score,
                      history=history, info={"trees": len(history)})


def platform_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.secureboost import SecureBoostPlatform

    # the key size and the mode are this party's own: what the lender's sb.hello claims is checked against them
    platform = SecureBoostPlatform(n_jobs=ctx.params.get("n_jobs"), min_key_bits=ctx.min_key_bits, mode=ctx.mode,
                                   checkpoints=ctx.checkpoints,
                                   on_tree=lambda t: ctx.progress("tree", t + 1, ctx.params["n_estimators"]))
    serve_platform(platform, link, data, ctx)
    info: dict[str, Any] = {}
    if ctx.mode == "prospect":
        path = ctx.model_dir / "prospect_xgboost.json"
        platform.export_xgboost_json(path, feature_names=data.feature_names)
        info["xgboost_json"] = str(path)
    return RoleResult(files=model_files(ctx), info=info)

