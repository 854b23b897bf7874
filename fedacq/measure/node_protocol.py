"""Private measurement as a node protocol (``measure``): one experiment layer per job.

Steps, and what each party learns (the messages are those of :mod:`fedacq.measure.private`):

1. **spend** (platform -> lender, ``measure.spend``): the platform's per-bucket
   impressions, clicks and spend of the job's layer. The lender learns what the
   platform paid per bucket (it needs it for cost per credit user); no user appears.
2. **outcome aggregates** (lender -> platform, ``measure.plan`` then one private
   intersection-sum, :mod:`fedacq.psi.intersection_sum`): the platform learns,
   per bucket of its exposed (clicked) users, the Laplace-noised sums of the
   shared outcomes over those in the lender's funnel; buckets whose noisy count of
   them is under the minimum cohort are suppressed and carry no numbers. From its
   own side of the matching it also knows the exact number of its users per bucket
   that matched (``protocols/measure.md``): the cohort and the noise protect the
   outcome sums. The lender learns the platform's per-bucket exposed counts. The
   lender's Paillier key is fresh for every job (OS CSPRNG) and never leaves its
   memory.
3. **the lender's report**, locally: :func:`fedacq.measure.report.measure` on its
   funnel, the click events it was reported (with bucket and arm) and the spend of
   step 1 — KPIs per arm and bucket, lift with intervals. Nothing crosses.

Data sets (``[datasets.<party>]`` of the job, by the names each node registered):
lender ``funnel`` (one row per applicant: :data:`fedacq.measure.kpis.FUNNEL_COLUMNS`)
and ``events`` (the click and conversion events it received, carrying bucket and
arm); platform ``events`` (its own ad log of the campaign) and ``spend`` (its
per-bucket spend). Parquet or CSV, by suffix. Only rows of the job's ``layer`` are
used; the platform selects them *before* the lender's plan arrives, so a plan for
another layer finds none of its users, and is refused.

Params (both nodes see them): ``layer``; ``outcomes`` (shared with the platform,
default :data:`fedacq.measure.private.DEFAULT_OUTCOMES`); ``min_cohort`` (the
intersection-sum minimum group size); ``epsilon`` (Laplace epsilon per outcome;
0 = no noise); ``value_bounds`` (clipping bound of each amount outcome, needed
with noise); ``scheme`` (``"paillier"`` or ``"ou"``; the proposer's default is its
policy's first scheme), ``key_bits``, ``insecure_test_key``; the lender's own
report settings ``min_bucket_size``, ``min_events``, ``confidence``; ``experiment``
(MLflow).

Policy (:mod:`fedacq.node.policy`), checked by each node: ``schemes``,
``min_key_bits`` and ``test_mode`` (key size; the platform also checks the key
it receives, parsed only as the agreed scheme), ``measure_min_cohort`` (``min_cohort`` may not be lower) and
``measure_max_epsilon`` (when set, ``epsilon`` must be above 0 and at most it).
Both guard the lender's outcomes, and the lender enforces them after decryption,
where the platform cannot skip them.

Checkpoints (a node job; ``protocols/measure.md``): each party saves a step
once it holds it: ``spend`` (lender: the spend it received; platform: that it
sent it) and ``release`` (lender: the release, saved *before* it is sent, and
after the run its exact per-bucket sums; platform: the view it received). A
resumed job exchanges ``measure.checkpoints`` (the steps each holds) and
continues after the last step both hold, with one exception that protects the
noise: once the lender has saved a release it never draws another one. If the
platform lacks the view, the lender sends the saved release again, unchanged
(``isum.release``), so the platform can never average two noisy releases; a
platform holding a view the lender has no record of is refused. No step needs
generation tags (as the ``run`` job's do): the spend is a function of the
platform's data, and a job has at most one release. The lender's report is
recomputed from its data and the saved spend. Progress: ``measure``, 0 to 3.

Outputs in the job's work folder: the lender's ``report.json``, ``report.html``
and figures; the platform's ``platform_view.parquet`` (per bucket: its exposed
users and spend beside the released aggregates). Each party logs a run
``measure-<layer>`` to its own MLflow store.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedacq.link.link import Link, PassThroughLink
from fedacq.link.message import Message, MessageSpec, register
from fedacq.node.policy import Policy, PolicyError, complete
from fedacq.node.protocols import JobContext, Protocol

#: the Laplace epsilon per outcome proposed when the job names none (noise on by default).
DEFAULT_EPSILON = 1.0
#: clipping bound of the drawdown amount proposed when the job names none.
DEFAULT_DRAWDOWN_BOUND = 20_000.0
_AMOUNTS = ("drawdown_amount", "fees")
_DATASETS = {"lender": ("funnel", "events"), "platform": ("events", "spend")}

#: the one message of a resumption: which steps (checkpoint names) this party holds.
CHECKPOINTS_MESSAGE = "measure.checkpoints"
register(MessageSpec(CHECKPOINTS_MESSAGE, header={"held": list}))
#: the steps a party checkpoints, in order (the lender's report is the third, and crosses nothing).
SPEND, RELEASE = "spend", "release"
STEPS = (SPEND, RELEASE)
_SPEND_COLUMNS = ("bucket", "impressions", "clicks", "spend")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def resolve(params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """The measure job's complete parameters, checked against ``policy`` (module docstring)."""
    from fedacq.measure.kpis import FUNNEL_COLUMNS
    from fedacq.measure.private import DEFAULT_OUTCOMES
    from fedacq.paths import check_name

    shareable = [c for c in FUNNEL_COLUMNS if c != "user_id"]

    cap = policy.measure_max_epsilon
    defaults = {"layer": None, "outcomes": list(DEFAULT_OUTCOMES), "min_cohort": policy.measure_min_cohort,
                "epsilon": DEFAULT_EPSILON if cap is None else min(DEFAULT_EPSILON, cap),
                "value_bounds": {"drawdown_amount": DEFAULT_DRAWDOWN_BOUND}, "scheme": policy.schemes[0],
                "key_bits": 2048, "insecure_test_key": False, "min_bucket_size": 100, "min_events": 10,
                "confidence": 0.95, "experiment": "fedacq-measure"}
    out = complete(params, defaults, "measure")
    try:
        check_name(out["layer"], "measure: layer")
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    outcomes = out["outcomes"]
    if (not isinstance(outcomes, list) or not outcomes or len(set(map(str, outcomes))) != len(outcomes)
            or not all(isinstance(o, str) and o in shareable for o in outcomes)):
        raise PolicyError(f"measure: outcomes must be a non-empty list of distinct names from "
                          f"{shareable}, got {outcomes!r}")
    policy.one_of("schemes", "scheme", out["scheme"])
    policy.key_size(out["key_bits"], out["insecure_test_key"])
    if not _integer(out["min_cohort"]) or out["min_cohort"] < 1:
        raise PolicyError(f"measure: min_cohort must be a positive integer, got {out['min_cohort']!r}")
    policy.at_least("measure_min_cohort", "min_cohort", out["min_cohort"], policy.measure_min_cohort)
    epsilon = out["epsilon"]
    if not _number(epsilon) or epsilon < 0:
        raise PolicyError(f"measure: epsilon must be a number >= 0 (0: no noise), got {epsilon!r}")
    if cap is not None and not 0 < epsilon <= cap:
        raise policy.refuse("measure_max_epsilon", f"epsilon={epsilon!r}", f"0 < epsilon <= {cap}")
    bounds = out["value_bounds"]
    if not isinstance(bounds, dict) or not all(k in _AMOUNTS and _number(v) and v > 0 for k, v in bounds.items()):
        raise PolicyError(f"measure: value_bounds must map amount outcomes {list(_AMOUNTS)} to positive "
                          f"numbers, got {bounds!r}")
    unbounded = [o for o in outcomes if o in _AMOUNTS and o not in bounds]
    if epsilon > 0 and unbounded:
        raise PolicyError(f"measure: Laplace noise on an amount needs its clipping bound: value_bounds lacks "
                          f"{unbounded}")
    for key in ("min_bucket_size", "min_events"):
        if not _integer(out[key]) or out[key] < 2:
            raise PolicyError(f"measure: {key} must be an integer >= 2, got {out[key]!r}")
    if not _number(out["confidence"]) or not 0 < out["confidence"] < 1:
        raise PolicyError(f"measure: confidence must be in (0, 1), got {out['confidence']!r}")
    if not isinstance(out["experiment"], str) or not out["experiment"]:
        raise PolicyError(f"measure: experiment must be a non-empty string, got {out['experiment']!r}")
    return out


def _read(ctx: JobContext, logical: str) -> pd.DataFrame:
    """One of this party's data sets; errors name the party and the registered name, not the path."""
    from fedacq.measure.commands import read_table

    if logical not in ctx.datasets:
        raise ValueError(f"measure: the job names no data set {logical!r} for {ctx.party} "
                         f"(it needs {list(_DATASETS[ctx.role])}, has {sorted(ctx.datasets)})")
    return read_table(Path(ctx.datasets[logical]),
                      f"{ctx.party}'s data set {ctx.registered.get(logical, logical)!r} ({logical})")


def _layer_rows(table: pd.DataFrame, layer: str, what: str) -> pd.DataFrame:
    if "layer" not in table.columns:
        return table
    rows = table[table["layer"].astype(str) == layer]
    if rows.empty:
        raise ValueError(f"measure: {what} has no rows of layer {layer!r}")
    return rows.reset_index(drop=True)


def _key_floor(ctx: JobContext) -> int:
    """The smallest lender key the platform takes: its policy's, or the agreed test key on a test node."""
    p = ctx.params
    if p["insecure_test_key"] and ctx.policy.test_mode:
        return min(p["key_bits"], ctx.policy.min_key_bits)
    return ctx.policy.min_key_bits


def _agree(ctx: JobContext) -> tuple[set[str], set[str]]:
    """(steps this party holds, steps the peer holds): both empty unless the job resumes."""
    if ctx.checkpoints is None or not ctx.resume:
        return set(), set()
    mine = {name for name in ctx.checkpoints.names() if name in STEPS}
    ctx.link.send(Message(CHECKPOINTS_MESSAGE, {"held": sorted(mine)}, step="resume"))
    held = ctx.link.recv(CHECKPOINTS_MESSAGE).header["held"]
    if len(held) > len(STEPS) or not all(isinstance(h, str) and h in STEPS for h in held) \
            or len(set(held)) != len(held):
        raise ValueError(f"message {CHECKPOINTS_MESSAGE!r}: not distinct steps of {list(STEPS)}: "
                         f"{str(held)[:200]}")
    theirs = set(held)
    ctx.logger.info("measure: resuming; this party holds %s, the peer %s", sorted(mine), sorted(theirs))
    if RELEASE in theirs - mine and ctx.role == "lender":
        raise ValueError("measure: the platform holds a release this lender has no record of; "
                         "refusing to release noisy aggregates again")
    if RELEASE in mine - theirs and ctx.role == "platform":
        raise ValueError("measure: this platform holds a release the lender has no record of; "
                         "the lender would not release again")
    return mine, theirs


def _save(ctx: JobContext, name: str, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
    if ctx.checkpoints is not None:
        ctx.checkpoints.save(name, meta, arrays)


def _array(column: pd.Series) -> np.ndarray:
    """A view column as a plain numpy array (checkpoints never pickle; pandas' own dtypes restored on load)."""
    if isinstance(column.dtype, np.dtype) and column.dtype != object:
        return column.to_numpy()
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    return column.astype(str).to_numpy(dtype=str)


class _CommitBeforeRelease(PassThroughLink):
    """The lender's link during the intersection-sum: saves the release before it is sent.

    Whatever happens after the save (a kill before, during or after the send), a
    resumed job finds the release and sends exactly it again instead of drawing
    new noise. Every other message passes through unchanged.
    """

    def __init__(self, link: Link, commit: Any) -> None:
        super().__init__(link)
        self._commit = commit

    def _outgoing(self, msg: Message) -> None:
        if msg.type == "isum.release":
            self._commit(msg.parts)


def run_lender(ctx: JobContext) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    from fedacq.crypto.scheme import generate_keypair
    from fedacq.measure.commands import flat_metrics
    from fedacq.measure.private import recv_spend, share_outcomes_lender, spend_parts, spend_table
    from fedacq.measure.render import figures, report_html
    from fedacq.measure.report import measure
    from fedacq.track import PartyRun

    p = ctx.params
    layer = p["layer"]
    mine, theirs = _agree(ctx)
    ctx.progress("measure", 0, 3)
    funnel = _read(ctx, "funnel")
    events = _layer_rows(_read(ctx, "events"), layer, f"{ctx.party}'s events")
    if SPEND in mine & theirs:
        _, arrays = ctx.checkpoints.load(SPEND)
        spend = spend_table(layer, arrays, f"{ctx.party}'s checkpoint of the platform's spend")
        ctx.logger.info("measure: spend of %d buckets from this party's checkpoint", len(spend))
    else:
        spend = recv_spend(ctx.link)
        if not set(spend["layer"].astype(str)) <= {layer}:
            raise ValueError(f"message 'measure.spend': spend of layer {spend['layer'].iloc[0]!r}, "
                             f"not the job's {layer!r}")
        _save(ctx, SPEND, {"layer": layer}, spend_parts(spend))
        ctx.logger.info("measure: spend of %d buckets received", len(spend))
    ctx.progress("measure", 1, 3)
    if RELEASE in mine:
        _, release = ctx.checkpoints.load(RELEASE)
        if RELEASE not in theirs:  # the platform may or may not have it: the same values again, no new noise
            ctx.link.send(Message("isum.release", parts={k: release[k] for k in ("count", "sum", "suppressed")},
                                  step="isum/release"))
        ctx.logger.info("measure: the release this party saved before sending it%s",
                        "" if RELEASE in theirs else ", sent again unchanged")
    else:
        ctx.logger.info("measure: private intersection-sum with %d funnel users", len(funnel))
        release = {}

        def commit(parts: dict[str, np.ndarray]) -> None:
            release.update(parts)
            _save(ctx, RELEASE, {"layer": layer}, release)

        _, private_key = generate_keypair(p["scheme"], p["key_bits"], insecure_test_key=p["insecure_test_key"])
        shared = share_outcomes_lender(_CommitBeforeRelease(ctx.link, commit), funnel, private_key=private_key,
                                       layer=layer, outcomes=p["outcomes"], min_group_size=p["min_cohort"],
                                       epsilon=p["epsilon"] or None, value_bounds=p["value_bounds"])
        exact = list(shared.exact.values())
        release.update(exact_count=np.array([g.count for g in exact], dtype=np.float64),
                       exact_sum=np.array([g.sums for g in exact], dtype=np.float64).reshape(len(exact), -1))
        _save(ctx, RELEASE, {"layer": layer}, release)
    suppressed = int(np.sum(release["suppressed"]))
    released = len(release["suppressed"]) - suppressed
    ctx.logger.info("measure: %d bucket(s) released to the platform, %d suppressed", released, suppressed)
    ctx.progress("measure", 2, 3)
    report = measure(funnel, events, spend, min_bucket_size=p["min_bucket_size"], min_events=p["min_events"],
                     confidence=p["confidence"])
    figs = figures(report)
    paths = {"report": ctx.work_dir / "report.json", "html": ctx.work_dir / "report.html"}
    paths["report"].write_text(json.dumps(report, indent=2), encoding="utf-8")
    paths["html"].write_text(report_html(report, figs), encoding="utf-8")
    figure_paths = []
    for name, fig in figs.items():
        figure_paths.append(ctx.work_dir / name)
        fig.savefig(figure_paths[-1], dpi=110, bbox_inches="tight")
        plt.close(fig)  # a node runs for months: its figures must not pile up
    with PartyRun(ctx.mlflow_store, ctx.party, p["experiment"], f"measure-{layer}", ctx.job_id,
                  params={**p, **report["settings"]}) as run:
        run.log_metrics(flat_metrics(report))
        run.log_metrics({"buckets_released": released, "buckets_suppressed": suppressed})
        run.log_artifact(paths["report"])
        run.log_artifact(paths["html"])
        for path in figure_paths:
            run.log_artifact(path, "figures")
    ctx.logger.info("measure: report written to %s", paths["report"])
    ctx.progress("measure", 3, 3)
    return {"layer": layer, "report": str(paths["report"]), "html": str(paths["html"]),
            "figures": [str(f) for f in figure_paths], "buckets_released": released,
            "buckets_suppressed": suppressed}


def run_platform(ctx: JobContext) -> dict[str, Any]:
    from fedacq.measure.kpis import validate_spend
    from fedacq.measure.private import PlatformView, receive_release, send_spend, share_outcomes_platform
    from fedacq.track import PartyRun

    p = ctx.params
    layer = p["layer"]
    mine, theirs = _agree(ctx)
    ctx.progress("measure", 0, 3)
    events = _layer_rows(_read(ctx, "events"), layer, f"{ctx.party}'s events")
    spend = _layer_rows(validate_spend(_read(ctx, "spend"), source=f"{ctx.party}'s spend"), layer,
                        f"{ctx.party}'s spend")
    if SPEND not in mine & theirs:
        send_spend(ctx.link, spend, layer)
        _save(ctx, SPEND, {"layer": layer}, {})
        ctx.logger.info("measure: spend of %d buckets sent", len(spend))
    ctx.progress("measure", 1, 3)
    if RELEASE in mine:  # both hold it (_agree refused the rest)
        meta, arrays = ctx.checkpoints.load(RELEASE)
        view = PlatformView(layer, pd.DataFrame({c: arrays[c] for c in meta["columns"]}).astype(meta["dtypes"]),
                            meta["epsilon"])
        ctx.logger.info("measure: the released aggregates from this party's checkpoint")
    else:
        epsilon = [float(p["epsilon"])] * len(p["outcomes"])
        if RELEASE in theirs:
            view = receive_release(ctx.link, events, layer=layer, outcomes=p["outcomes"], epsilon=epsilon,
                                   spend=spend)
        else:
            ctx.logger.info("measure: private intersection-sum over %d events", len(events))
            agreed = {"layer": layer, "outcomes": list(p["outcomes"]), "epsilon": epsilon}
            view = share_outcomes_platform(ctx.link, events, min_group_size=p["min_cohort"], spend=spend,
                                           min_key_bits=_key_floor(ctx), schemes=(p["scheme"],), expect=agreed)
        columns = [str(c) for c in view.buckets.columns]
        _save(ctx, RELEASE, {"layer": layer, "columns": columns, "epsilon": view.epsilon,
                             "dtypes": {c: str(view.buckets[c].dtype) for c in columns}},
              {c: _array(view.buckets[c]) for c in columns})
    ctx.progress("measure", 2, 3)
    out = ctx.work_dir / "platform_view.parquet"
    view.buckets.to_parquet(out, index=False)
    released = int((~view.buckets["suppressed"]).sum())
    suppressed = int(view.buckets["suppressed"].sum())
    with PartyRun(ctx.mlflow_store, ctx.party, p["experiment"], f"measure-{layer}", ctx.job_id, params=p) as run:
        run.log_dict({"layer": view.layer, "epsilon": view.epsilon,
                      "buckets": view.buckets.to_dict(orient="records")}, "released_aggregates.json")
        run.log_metrics({"buckets_released": released, "buckets_suppressed": suppressed})
    ctx.logger.info("measure: %d bucket(s) released, %d suppressed; written to %s", released, suppressed, out)
    ctx.progress("measure", 3, 3)
    return {"layer": layer, "view": str(out), "epsilon": view.epsilon, "buckets_released": released,
            "buckets_suppressed": suppressed}


PROTOCOL = Protocol("measure", roles={"lender": run_lender, "platform": run_platform}, resolve=resolve,
                    messages=("fedacq.measure.private", "fedacq.psi.intersection_sum", "fedacq.psi.ecdh_psi"),
                    description="private measurement: the lender's KPIs, the platform's per-bucket aggregates")
