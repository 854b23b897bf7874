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

from fedacq.learn import objectives
from fedacq.learn import secureboost_params as sb_params
from fedacq.learn.run import PartyData, RoleContext, RoleResult, fit_lender, model_files, serve_platform
from fedacq.link.link import Link

MODES = ("joint", "prospect")
ITERATION = ("n_estimators", "tree")
#: the lender's labels may have empty cells: such a row weighs 0 (:class:`~fedacq.learn.secureboost.SecureBoostLender`)
EMPTY_LABELS = True

#: XGBoost-named parameters ``fedacq run`` accepts for SecureBoost, with their defaults (declared in
#: :mod:`fedacq.learn.secureboost_params`)
DEFAULTS: dict[str, Any] = sb_params.RUN


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``params``; unknown names are an error that lists them.

    The objective and its own parameters are checked here, before any work
    (:func:`fedacq.learn.objectives.get`); every objective of
    :data:`fedacq.learn.objectives.OBJECTIVES` is accepted.
    """
    out = sb_params.resolve(params)
    objectives.get(out["objective"], tweedie_variance_power=out["tweedie_variance_power"],
                   max_delta_step=out["max_delta_step"], num_class=out["num_class"])
    return out


def lender_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.secureboost import SecureBoostLender

    lender = SecureBoostLender(**ctx.params, mode=ctx.mode, scheme=ctx.scheme, key_bits=ctx.key_bits,
                               insecure_test_key=ctx.insecure_test_key, random_state=ctx.seed,
                               callback=ctx.on_iteration, checkpoints=ctx.checkpoints)
    train_score, valid_score = fit_lender(lender, link, data, ctx)
    lender.save(ctx.model_dir)
    history = [dict(h) for h in getattr(lender, "history_", []) or []]
    return RoleResult(files=model_files(ctx), train_score=train_score, valid_score=valid_score,
                      history=history, info={"trees": len(history)})


def platform_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.secureboost import SecureBoostPlatform

    # the scheme, key size, mode and objective are this party's own: what sb.hello claims is checked against them
    objective = objectives.get(ctx.params["objective"], tweedie_variance_power=ctx.params["tweedie_variance_power"],
                               max_delta_step=ctx.params["max_delta_step"], num_class=ctx.params["num_class"])
    n_trees = ctx.params["n_estimators"] * objective.n_groups
    platform = SecureBoostPlatform(n_jobs=ctx.params.get("n_jobs"), min_key_bits=ctx.min_key_bits,
                                   schemes=(ctx.scheme,), mode=ctx.mode,
                                   objective=objective.name, num_class=ctx.params["num_class"],
                                   checkpoints=ctx.checkpoints,
                                   on_tree=lambda t: ctx.progress("tree", t + 1, n_trees))
    serve_platform(platform, link, data, ctx)
    info: dict[str, Any] = {}
    if ctx.mode == "prospect":
        path = ctx.model_dir / "prospect_xgboost.json"
        platform.export_xgboost_json(path, feature_names=data.feature_names)
        info["xgboost_json"] = str(path)
    return RoleResult(files=model_files(ctx), info=info)

