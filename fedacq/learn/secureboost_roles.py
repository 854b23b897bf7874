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

Continuing a live model (the ``run`` job's ``xgb_model``, XGBoost's): each party
loads its own part of it from its own files (:func:`load_live_model`); the lender
starts from the live model's margins, which the platform's live splits give it
through the joint prediction protocol, and both save the live trees followed by
the new ones, so the result exports and scores like any model.

Checkpoints (node jobs): each party saves its own state after every tree and
resumes from the last tree both hold (:class:`fedacq.learn.run.RunCheckpoints`;
what each side stores is listed in ``protocols/secureboost.md``).
"""

from __future__ import annotations

from pathlib import Path
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
    from fedacq.learn.secureboost import check_goss

    out = sb_params.resolve(params)
    objectives.get(out["objective"], tweedie_variance_power=out["tweedie_variance_power"],
                   max_delta_step=out["max_delta_step"], num_class=out["num_class"])
    if (out["top_rate"], out["other_rate"]) != (None, None):
        check_goss(out["top_rate"], out["other_rate"])
    return out


def load_live_model(directory: Path, party: str, params: dict[str, Any], mode: str,
                    feature_names: list[str]) -> Any:
    """This party's part of the live model a job continues (XGBoost's ``xgb_model``), from its own ``directory``.

    Refused (ValueError; nothing else is read or written) unless it is a
    SecureBoost model part of this job's ``mode``, objective and objective
    parameters, trained on the same feature columns, in the same order, as this
    party's table has now.
    """
    from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform

    cls = SecureBoostLender if party == "lender" else SecureBoostPlatform
    try:
        live = cls.load(directory)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"xgb_model: no usable SecureBoost {party} model part ({exc})") from None
    wanted = objectives.get(params["objective"], tweedie_variance_power=params["tweedie_variance_power"],
                            max_delta_step=params["max_delta_step"], num_class=params["num_class"])
    if (live.mode, live.objective_.name, live.objective_.params) != (mode, wanted.name, wanted.params):
        raise ValueError(f"xgb_model: the live model is a {live.mode} {live.objective_.name} model "
                         f"{live.objective_.params}; this job trains a {mode} {wanted.name} model {wanted.params}")
    if live.feature_names_ != list(feature_names):
        raise ValueError(f"xgb_model: the live model was trained on the {party}'s features {live.feature_names_}; "
                         f"this job's table has {list(feature_names)}")
    return live


def _continued(ctx: RoleContext, n_trees: int) -> dict[str, Any]:
    """What a continued model's result adds: the model it continues and its trees in all."""
    return {} if ctx.xgb_model is None else {"xgb_model": ctx.xgb_model_job, "n_trees": n_trees}


def lender_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.secureboost import SecureBoostLender

    lender = SecureBoostLender(**ctx.params, mode=ctx.mode, scheme=ctx.scheme, key_bits=ctx.key_bits,
                               insecure_test_key=ctx.insecure_test_key, random_state=ctx.seed,
                               callback=ctx.on_iteration, checkpoints=ctx.checkpoints)
    train_score, valid_score = fit_lender(lender, link, data, ctx)
    lender.feature_names_ = list(data.feature_names)
    lender.save(ctx.model_dir)
    history = [dict(h) for h in getattr(lender, "history_", []) or []]
    return RoleResult(files=model_files(ctx), train_score=train_score, valid_score=valid_score,
                      history=history, info={"trees": len(history), **_continued(ctx, len(lender.trees_))})


def platform_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.secureboost import SecureBoostPlatform

    # the scheme, key size, mode and objective are this party's own: what sb.hello claims is checked against them
    objective = objectives.get(ctx.params["objective"], tweedie_variance_power=ctx.params["tweedie_variance_power"],
                               max_delta_step=ctx.params["max_delta_step"], num_class=ctx.params["num_class"])
    n_trees = ctx.params["n_estimators"] * objective.n_groups
    platform = SecureBoostPlatform(n_jobs=ctx.params.get("n_jobs"), min_key_bits=ctx.min_key_bits,
                                   schemes=(ctx.scheme,), mode=ctx.mode,
                                   objective=objective.name, num_class=ctx.params["num_class"],
                                   goss=(ctx.params["top_rate"], ctx.params["other_rate"]),
                                   checkpoints=ctx.checkpoints,
                                   on_tree=lambda t: ctx.progress("tree", t + 1, n_trees))
    platform.feature_names_ = list(data.feature_names)
    serve_platform(platform, link, data, ctx)
    info: dict[str, Any] = _continued(ctx, len(platform.trees_))
    if ctx.mode == "prospect":
        path = ctx.model_dir / "prospect_xgboost.json"
        platform.export_xgboost_json(path, feature_names=data.feature_names)
        info["xgboost_json"] = str(path)
    return RoleResult(files=model_files(ctx), info=info)

