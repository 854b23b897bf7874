"""Split NN in ``fedacq run``: the two role functions of the model registry (see :mod:`fedacq.learn.run`).

The protocol, its noise parameters and what each party learns are in
:mod:`fedacq.learn.splitnn`; this module maps the run's parameters onto it
(MLPClassifier names: ``hidden_layer_sizes``, ``batch_size``, ``max_iter``,
``learning_rate_init``, ``alpha``, ``early_stopping``, ``tol``,
``n_iter_no_change``; plus ``embedding_dim``, ``top_layer_sizes`` and the
clipping/noise parameters), times its phases and saves each party's part.
torch (the ``nn`` extra) is needed only when this model runs.

Checkpoints (node jobs): each party saves its own networks and optimiser state
after every epoch and resumes from the last epoch both hold
(:class:`fedacq.learn.run_checkpoints.RunCheckpoints`; what each side stores is listed in
``protocols/splitnn.md``).
"""

from __future__ import annotations

from typing import Any

from fedacq.learn.run_roles import PartyData, RoleContext, RoleResult, fit_lender, model_files, serve_platform
from fedacq.link.link import Link

MODES = ("joint",)
ITERATION = ("max_iter", "epoch")


def resolve_params(params: dict[str, Any]) -> dict[str, Any]:
    """The defaults overridden by ``params``; also checks that torch is installed."""
    from fedacq.learn.splitnn import resolve_params as resolve

    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise ValueError("splitnn needs torch, the optional 'nn' extra: pip install 'fedacq[nn]' "
                         "(torch==2.13.0, CPU build)") from exc
    return resolve(params)


def lender_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.splitnn import SplitNNLender, gaussian_dp

    lender = SplitNNLender(random_state=ctx.seed, callback=ctx.on_iteration, checkpoints=ctx.checkpoints,
                           **ctx.params)
    train_score, valid_score = fit_lender(lender, link, data, ctx)
    files = lender.save(ctx.model_dir)
    p = ctx.params
    # per-row Gaussian-DP accounting of the noise (scope and caveats: fedacq.learn.splitnn's docstring)
    def dp(direction: str, releases: int = 1) -> dict | None:
        noised = p[f"{direction}_clip"] is not None and p[f"{direction}_noise"] > 0
        return gaussian_dp(p[f"{direction}_noise"], releases) if noised else None

    info = {"epochs": lender.n_iter_, "best_epoch": lender.best_epoch_,
            "lender_categorical_columns": len(lender.columns_.categorical),
            "gaussian_dp_delta_1e-5": {"gradient_per_release": dp("gradient"),
                                       "gradient_over_epochs": dp("gradient", lender.n_iter_),
                                       "embedding_per_release": dp("embedding")}}
    return RoleResult(files=files, train_score=train_score, valid_score=valid_score,
                      history=[dict(h) for h in lender.history_], info=info)


def platform_role(link: Link, data: PartyData, ctx: RoleContext) -> RoleResult:
    from fedacq.learn.splitnn import SplitNNPlatform

    platform = SplitNNPlatform(checkpoints=ctx.checkpoints,
                               on_epoch=lambda e: ctx.progress("epoch", e + 1, ctx.params["max_iter"]))
    serve_platform(platform, link, data, ctx)
    return RoleResult(files=model_files(ctx), info={"categorical_columns": len(platform.columns_.categorical)})
