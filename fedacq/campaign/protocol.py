"""The campaign's node protocols: the platform's steps run at the platform's node, under its policy.

Three protocols, each initiated by the lender's driver (:mod:`fedacq.campaign.loop`) at its own node:

* ``campaign`` — the agreement: each node looks up the campaign by name among the ones
  ITS operator registered (``fedacq campaign start``, :func:`register_at_node`) and the two
  compare canonical digests over the link (:func:`agree`). A mismatch (or a campaign one node
  does not hold) fails the job at both with both digests named; nothing is written. The peer
  never sends a campaign's content: each node runs its own copy. With ``status`` (the lender's
  ``pause``, ``resume``, ``stop``, and ``finished`` when its schedule ends) the platform then
  moves ITS record of the campaign (:meth:`fedacq.campaign.state.CampaignState.set_status`)
  if its own record allows the transition; the lender cannot resume a campaign the platform's
  own operator paused (``status_by``), nor revive a stopped or finished one. The platform
  answers ``campaign.outcome`` ``recorded`` (or ``failed`` with the reason, and nothing changed).
* ``campaign_publish`` — after the agreement, the platform checks the cycle number, day and
  version against its own record (:func:`_check_cycle`: a new cycle after those it holds and
  within the schedule, days never going back, a version in one cycle only; a cycle it holds is
  published again only if its publication failed, with the same version and day), resolves the
  cycle's run job(s) in its OWN job store (by id; never a path; a prospect run job of this
  campaign on its platform data set, exactly the models the campaign has), enforces its own
  count of the intersection, scores its whole user base (the job's ``scoring``
  data set, which must be the campaign's ``platform_scoring`` as this node registered it) with
  its own part of the model, computes the score-PSI gate against its live version with the
  stricter of the campaign's and its own ``[campaigns] max_score_psi``, and only if the lender's
  gates and its own pass builds the versioned boost table (the campaign's layer and salt) under
  its own table root and loads it into its own boost service (``Reload``; the address is its own
  ``[campaigns] boost_service``). It records its view of the cycle and answers the lender with
  ``campaign.outcome``: the outcome, the gate records (values and pass/fail; nothing about a
  user), the table version. A paused or stopped campaign at the platform publishes nothing.
  A table that cannot be built or loaded (the service down or refusing it) is withdrawn from the
  table root and the cycle recorded ``failed`` with the reason in its ``attempts``; a later job
  may publish the same cycle (a new table version). A lender asking again for a cycle published
  with that version and still live gets the same answer. The lender checks the answer against
  what it asked (the version it sent; a table exactly when published).
* ``campaign_rollback`` — the lender's measured lift turned significantly bad: the platform
  checks that the campaign exists and that the named cycle is its live one, rolls back to the
  previous published table through its boost service and records the reason. The lender accepts
  the answer only if that table is one it recorded published for an earlier cycle.

Params (both nodes see them): ``campaign`` (a :data:`fedacq.paths.NAME`); the agreement also
``status`` (None or one of :data:`RELAYED_STATUSES`); publish also ``cycle``,
``day`` (simulated day or None), ``models`` (``{"model" or stage: run job id}``),
``lender_passed`` and ``lender_reason`` (the lender's verdict on its own gates; its metric never
crosses); rollback ``cycle`` and ``reason`` (at most :data:`MAX_REASON` characters).

A registration (``<state_dir>/campaign-registry/<name>.json``) is written only by the node's own
operator: the campaign document it checked against its own policy, its digest, where its
console reads campaign state, its ``[campaigns]`` limits, its boost service and table root,
and (the demo only) the faults its operator injects at publication.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from fedacq.campaign.config import Campaign, CampaignError, CampaignPolicy, parse_campaign
from fedacq.link.message import Message, MessageSpec, register
from fedacq.node.policy import Policy, PolicyError, complete
from fedacq.node.protocols import JobContext, Protocol
from fedacq.paths import check_name

REGISTRY_DIR = "campaign-registry"
DIGEST_MESSAGE, OUTCOME_MESSAGE = "campaign.digest", "campaign.outcome"
register(MessageSpec(DIGEST_MESSAGE, header={"name": str, "digest": str}),
         MessageSpec(OUTCOME_MESSAGE, header={"outcome": str, "gates": list, "table": str, "version": str,
                                              "reason": str}))
#: the longest reason text a rollback job may carry (it is recorded, so it is bounded).
MAX_REASON = 2000
#: outcomes the platform may answer with.
OUTCOMES = ("published", "refused", "rolled_back", "recorded", "failed")
#: the status changes the lender's node relays to the platform's record (a ``campaign`` job).
RELAYED_STATUSES = ("paused", "running", "stopped", "finished")
#: faults an operator may inject at its own publication (the demo's constructed negative lift).
PUBLISH_FAULTS = ("inverted_boosts",)
#: a cycle the platform recorded with these outcomes may be published again (same cycle, same version).
RETRYABLE = ("running", "failed")
#: the platform scores its whole user base before it answers; the lender waits that long at most.
OUTCOME_TIMEOUT = 6 * 3600.0


@dataclass(frozen=True)
class Registration:
    """What a node's operator registered for one campaign (module docstring)."""

    document: dict[str, Any]
    digest: str
    party: str
    campaigns_dir: str
    limits: dict[str, Any]
    table_root: str | None = None
    faults: dict[str, str] = field(default_factory=dict)

    def campaign(self, source: str) -> Campaign:
        return parse_campaign(self.document, source)

    def policy(self) -> CampaignPolicy:
        return CampaignPolicy(**self.limits)


def registration_path(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / REGISTRY_DIR / f"{check_name(name, 'campaign name')}.json"


def register_campaign(state_dir: Path, campaign: Campaign, *, party: str, campaigns_dir: Path,
                      limits: CampaignPolicy, table_root: Path | None = None,
                      faults: dict[int, str] | None = None) -> Registration:
    """Record this node's own copy of ``campaign`` (already checked against its policy) and start
    its campaign state; refused if the name is registered with another digest."""
    from fedacq.campaign.state import CampaignState, write_json

    for n, fault in (faults or {}).items():
        if fault not in PUBLISH_FAULTS:
            raise CampaignError(f"cycle {n}: unknown publication fault {fault!r}; known: {PUBLISH_FAULTS}")
    CampaignState(campaigns_dir, campaign.name).create(party=party, digest=campaign.digest,
                                                       description=campaign.description, settings=campaign.settings())
    path = registration_path(state_dir, campaign.name)
    if path.is_file():
        current = json.loads(path.read_text(encoding="utf-8"))
        if current.get("digest") != campaign.digest:
            raise CampaignError(f"campaign {campaign.name!r} is registered at {path} with digest "
                                f"{str(current.get('digest'))[:16]}..., this file's is {campaign.digest[:16]}...; "
                                "a changed campaign needs a new name")
    reg = Registration(document=campaign.document, digest=campaign.digest, party=party,
                       campaigns_dir=str(Path(campaigns_dir).resolve()), limits=asdict(limits),
                       table_root=str(Path(table_root).resolve()) if table_root else None,
                       faults={str(n): f for n, f in (faults or {}).items()})
    write_json(path, asdict(reg))
    return reg


def register_at_node(campaign: Campaign, party_toml: str | Path, faults: dict[int, str] | None = None) -> Any:
    """``fedacq campaign start`` at one node: check ``campaign`` against ``party_toml``'s policy and
    ``[campaigns]`` limits, then register it (:func:`register_campaign`). Returns the node config."""
    from fedacq.campaign.config import check_at_node, load_campaign_policy
    from fedacq.campaign.state import campaigns_dir

    config = check_at_node(campaign, party_toml)
    limits = load_campaign_policy(party_toml)
    table_root = limits.boost_tables or (config.console.boost_tables if config.console else None)
    if config.party == "platform" and (limits.boost_service is None or table_root is None):
        raise CampaignError(f"{config.path}: the platform publishes through its own boost service: set "
                            "[campaigns] boost_service (HOST:PORT) and boost_tables (or [console] boost_tables)")
    register_campaign(config.state_dir, campaign, party=config.party, campaigns_dir=campaigns_dir(config),
                      limits=limits, table_root=Path(table_root) if table_root else None, faults=faults)
    return config


def registered(state_dir: Path, name: str) -> Registration | None:
    """This node's registration of campaign ``name``, or None."""
    path = registration_path(state_dir, name)
    if not path.is_file():
        return None
    return Registration(**json.loads(path.read_text(encoding="utf-8")))


# -- parameters ---------------------------------------------------------------------------------

def _int(value: Any, key: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PolicyError(f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def _name(value: Any, key: str) -> str:
    try:
        return check_name(value, key)
    except (TypeError, ValueError) as exc:
        raise PolicyError(str(exc)) from None


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_REASON or not value.isprintable():
        raise PolicyError(f"{key} must be printable text of at most {MAX_REASON} characters")
    return value


def resolve_agree(params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    out = complete(params, {"campaign": None, "status": None}, "campaign")
    out["campaign"] = _name(out["campaign"], "campaign: campaign")
    if out["status"] is not None and out["status"] not in RELAYED_STATUSES:
        raise PolicyError(f"campaign: status must be one of {list(RELAYED_STATUSES)}, got {str(out['status'])[:40]!r}")
    return out


def resolve_publish(params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    out = complete(params, {"campaign": None, "cycle": None, "day": None, "models": None, "lender_passed": None,
                            "lender_reason": ""}, "campaign_publish")
    out["campaign"] = _name(out["campaign"], "campaign_publish: campaign")
    _int(out["cycle"], "campaign_publish: cycle", 1)
    if out["day"] is not None:
        _int(out["day"], "campaign_publish: day", 0)
    models = out["models"]
    if not isinstance(models, dict) or not models or len(models) > 16:
        raise PolicyError("campaign_publish: models must map 1 to 16 model names to run job ids")
    for key, job in models.items():
        _name(key, "campaign_publish: models key")
        _name(job, f"campaign_publish: models[{key!r}] (a run job id)")
    if not isinstance(out["lender_passed"], bool):
        raise PolicyError("campaign_publish: lender_passed must be true or false")
    _text(out["lender_reason"], "campaign_publish: lender_reason")
    return out


def resolve_rollback(params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    out = complete(params, {"campaign": None, "cycle": None, "reason": None}, "campaign_rollback")
    out["campaign"] = _name(out["campaign"], "campaign_rollback: campaign")
    _int(out["cycle"], "campaign_rollback: cycle", 1)
    _text(out["reason"], "campaign_rollback: reason")
    return out


# -- the agreement ------------------------------------------------------------------------------

def _state_dir(ctx: JobContext) -> Path:
    """The node's state directory: a node gives a job ``<state_dir>/jobs/<id>/work``."""
    if ctx.work_dir.name != "work" or ctx.work_dir.parent.name != ctx.job_id:
        raise RuntimeError(f"{ctx.job_id}: the job's folder {ctx.work_dir} is not in a node's job store")
    return ctx.work_dir.parent.parent.parent


def agree(ctx: JobContext) -> tuple[Registration, Campaign]:
    """Compare this node's registered digest of the job's campaign with the peer's (lender first).
    Both fail with both digests named when they differ or either node has no such campaign."""
    name = ctx.params["campaign"]
    reg = registered(_state_dir(ctx), name)
    mine = reg.digest if reg is not None else ""
    if ctx.role == "lender":
        ctx.link.send(Message(DIGEST_MESSAGE, header={"name": name, "digest": mine}))
        theirs = ctx.link.recv(DIGEST_MESSAGE)
    else:
        theirs = ctx.link.recv(DIGEST_MESSAGE)
        ctx.link.send(Message(DIGEST_MESSAGE, header={"name": name, "digest": mine}))
    peer = str(theirs.header["digest"])
    if theirs.header["name"] != name:
        raise CampaignError(f"campaign.digest: the {ctx.peer} answered for campaign {theirs.header['name']!r}, "
                            f"not {name!r}")
    if not mine or not peer:
        who = ctx.party if not mine else ctx.peer
        raise CampaignError(f"campaign {name!r}: the {who} has no such campaign registered (fedacq campaign start)")
    if peer != mine:
        raise CampaignError(f"campaign {name!r}: the {ctx.party}'s digest {mine[:16]}... differs from the "
                            f"{ctx.peer}'s {peer[:16]}...: the operators registered different campaign files")
    ctx.logger.info("campaign %s: both nodes hold digest %s", name, mine)
    return reg, reg.campaign(str(registration_path(_state_dir(ctx), name)))


def agree_lender(ctx: JobContext) -> dict[str, Any]:
    reg, _ = agree(ctx)
    out = {"campaign": ctx.params["campaign"], "digest": reg.digest}
    if ctx.params["status"] is None:
        return out
    answer = _receive_outcome(ctx)
    if answer["outcome"] != "recorded":
        raise ValueError(f"{OUTCOME_MESSAGE}: the {ctx.peer} answered a status change with {answer['outcome']!r}")
    return {**out, **answer}


def agree_platform(ctx: JobContext) -> dict[str, Any]:
    if ctx.params["status"] is None:
        reg, _ = agree(ctx)
        return {"campaign": ctx.params["campaign"], "digest": reg.digest}
    return _answering(ctx, _set_status)


def _set_status(ctx: JobContext, reg: Registration, c: Campaign) -> dict[str, Any]:
    """The lender's status change, checked against this node's own record of the campaign."""
    from fedacq.campaign.state import CampaignState

    status = ctx.params["status"]
    state = CampaignState(Path(reg.campaigns_dir), c.name)
    record = state.read()
    if record.get("digest") != reg.digest:
        raise ValueError(f"campaign {c.name!r}: the {ctx.party}'s campaign record is of another digest")
    if record["status"] == "paused" and status == "running" and record.get("status_by", ctx.party) != ctx.peer:
        raise ValueError(f"campaign {c.name!r} was paused by the {ctx.party}'s own operator: only it resumes it")
    state.set_status(status, by=ctx.peer)
    ctx.logger.info("campaign %s: %s at the %s's request", c.name, status, ctx.peer)
    return _answer(ctx, "recorded", reason=f"the {ctx.party}'s campaign is {status}")


# -- publication (platform) ---------------------------------------------------------------------

def _answer(ctx: JobContext, outcome: str, gates: list[dict[str, Any]] | None = None, table: str = "",
            version: str = "", reason: str = "") -> dict[str, Any]:
    ctx.link.send(Message(OUTCOME_MESSAGE, header={"outcome": outcome, "gates": gates or [], "table": table,
                                                   "version": version, "reason": reason[:MAX_REASON]}))
    return {"outcome": outcome, "gates": gates or [], "table": table, "version": version, "reason": reason}


def _own_run_jobs(ctx: JobContext, c: Campaign, models: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each named run job's result in THIS node's job store: a prospect run job of this campaign
    (its tracking experiment, the campaign's platform data set) that succeeded here, one per
    model the campaign has (``model``, or each value stage)."""
    from fedacq.node.jobs import JobStore

    store = JobStore(_state_dir(ctx))
    out = {}
    for key, job in models.items():
        what = f"campaign_publish: models[{key!r}] = {job!r}"
        if not store.exists(job):
            raise ValueError(f"{what}: the {ctx.party} has no such job")
        record = store.get(job)
        spec = record.get("spec") or {}
        if spec.get("protocol") != "run" or record.get("status") != "succeeded":
            raise ValueError(f"{what}: at the {ctx.party} it is a {spec.get('protocol')!r} job that "
                             f"{record.get('status')}, not a run job that succeeded")
        if (spec.get("params") or {}).get("mode") != "prospect":
            raise ValueError(f"{what}: not a prospect model (the platform scores with its own part)")
        if (spec.get("params") or {}).get("experiment") != f"campaign-{c.name}" or \
                ((spec.get("datasets") or {}).get(ctx.party) or {}).get("table") != c.datasets["platform"]:
            raise ValueError(f"{what}: not a run job of campaign {c.name!r} on its platform data set "
                             f"{c.datasets['platform']!r}")
        result = record.get("result") or {}
        model = next((f for f in result.get("files", []) if str(f).endswith("prospect_xgboost.json")), None)
        if model is None or not Path(model).resolve().is_relative_to(store.dir(job).resolve()):
            raise ValueError(f"{what}: its prospect model is not in the job's own folder at the {ctx.party}")
        out[key] = {"model": str(model), "intersection_size": int(result.get("intersection_size", 0))}
    return out


def _version(c: Campaign, models: dict[str, str]) -> str:
    """The version a cycle's models are known by (the run job of ``model``, or of the first value
    stage), once the names are exactly the models the campaign has."""
    from fedacq.activate.value import VALUE_MODELS

    expected = ["model"] if c.value is None else [stage.name for stage in VALUE_MODELS[c.value].stages]
    if sorted(models) != sorted(expected):
        raise ValueError(f"campaign_publish: models names {sorted(models)}; campaign {c.name!r} has {sorted(expected)}")
    return models[expected[0]]


def _check_cycle(c: Campaign, state: Any, n: int, day: int | None, version: str) -> dict[str, Any] | None:
    """The lender's cycle number, day and version against this node's own record of the campaign:
    a new cycle comes after every cycle recorded here and within the schedule; a cycle recorded
    here is retried only if its publication failed, with the same version and day; a version
    belongs to one cycle. Days never go back. Returns this node's record of cycle ``n`` when it
    already published that very version and it is still live (the lender lost the answer and
    asks again: it gets the same answer, nothing is built again); else None."""
    recorded = state.cycles()
    last = max(recorded, default=0)
    most = -(-c.days // c.cycle_days)
    if n in recorded:
        cycle = state.read_cycle(n)
        if (cycle["outcome"], cycle.get("version"), cycle.get("sim_day")) == ("published", version, day) \
                and cycle.get("boost_table") == state.read().get("live_table"):
            return cycle
        if cycle["outcome"] not in RETRYABLE:
            raise ValueError(f"campaign_publish: cycle {n} of {c.name!r} is already {cycle['outcome']}")
        if cycle.get("version") not in (None, version):
            raise ValueError(f"campaign_publish: cycle {n} of {c.name!r} is version {cycle['version']!r} at the "
                             f"platform, not {version!r}: a new version is a new cycle")
        if cycle.get("sim_day") not in (None, day):
            raise ValueError(f"campaign_publish: cycle {n} of {c.name!r} ran on day {cycle['sim_day']} at the "
                             f"platform, not day {day}")
    elif n < last or n > most:
        raise ValueError(f"campaign_publish: cycle {n} of {c.name!r}: a new cycle comes after cycle {last} "
                         f"and at most {most} fit the schedule ({c.days} days, one every {c.cycle_days})")
    others = [m for m in recorded if m != n]
    if any(state.read_cycle(m).get("version") == version for m in others):
        raise ValueError(f"campaign_publish: version {version!r} belongs to another cycle of {c.name!r}")
    if day is not None:
        days = [d for m in others if m < n and isinstance(d := state.read_cycle(m).get("sim_day"), int)]
        if day >= c.days or (days and day < max(days)):
            raise ValueError(f"campaign_publish: day {day} of cycle {n} is outside {c.name!r}'s schedule "
                             f"(days 0..{c.days - 1}, not before day {max(days, default=0)})")
    return None


def _score(campaign: Campaign, models: dict[str, str], scoring: Path, out: Path, prefix: str) -> Any:
    """The whole user base scored with ``models`` (``{"model" or stage: model file}``)."""
    from fedacq import pipeline

    if campaign.value is None:
        return pipeline.score(Path(models["model"]), scoring, out / f"{prefix}scores.parquet")
    from fedacq.activate.value import VALUE_MODELS, combine

    scores = {name: pipeline.score(Path(path), scoring, out / f"{prefix}scores-{name}.parquet")
              for name, path in models.items()}
    return combine(VALUE_MODELS[campaign.value], scores)


def _answering(ctx: JobContext, step: Callable[[JobContext, Registration, Campaign], dict[str, Any]]) -> dict[str, Any]:
    """Agree the campaign, run the platform's ``step``; a failure is answered to the lender, then raised."""
    reg, c = agree(ctx)
    try:
        return step(ctx, reg, c)
    except Exception as exc:
        _answer(ctx, "failed", reason=f"{type(exc).__name__}: {exc}")
        raise


def publish_platform(ctx: JobContext) -> dict[str, Any]:
    return _answering(ctx, _publish)


def _publish(ctx: JobContext, reg: Registration, c: Campaign) -> dict[str, Any]:
    from fedacq.campaign import gates
    from fedacq.campaign.cycle import reference_mask
    from fedacq.campaign.state import CampaignState

    p = ctx.params
    n, version = p["cycle"], _version(c, p["models"])
    state = CampaignState(Path(reg.campaigns_dir), c.name)
    if ctx.registered.get("scoring") != c.datasets["platform_scoring"]:
        raise ValueError(f"campaign_publish: the job's scoring data set {ctx.registered.get('scoring')!r} is not the "
                         f"campaign's platform_scoring {c.datasets['platform_scoring']!r}")
    repeat = _check_cycle(c, state, n, p["day"], version)
    if repeat is not None:
        return _answer(ctx, "published", repeat["gates"], table=repeat["boost_table"], version=version)
    runs = _own_run_jobs(ctx, c, p["models"])  # before anything is written: an unknown job changes nothing
    record = state.read()
    inter = gates.intersection_gate(min(r["intersection_size"] for r in runs.values()), c.min_intersection)
    shared = {"sim_day": p["day"], "update": c.update, "version": version, "model_job": version,
              "intersection_size": int(inter["value"] or 0)}
    if record["status"] != "running":
        reason = f"the platform's campaign is {record['status']}: nothing is published"
        return _answer(ctx, "refused", [inter], version=version, reason=reason)
    if not p["lender_passed"]:
        state.write_cycle(n, **shared, gates=[inter], outcome="refused",
                          reason="the lender refused the version: its validation gate failed")
        return _answer(ctx, "refused", [inter], version=version, reason="lender: " + p["lender_reason"])
    if not inter["passed"]:  # the platform's own count, whatever the lender's verdict says
        reason = f"platform: {gates.failures([inter])}"
        state.write_cycle(n, **shared, gates=[inter], outcome="refused", reason=reason)
        return _answer(ctx, "refused", [inter], version=version, reason=reason)
    out = ctx.work_dir
    out.mkdir(parents=True, exist_ok=True)
    model_files = {name: r["model"] for name, r in runs.items()}
    ctx.logger.info("campaign %s cycle %d: score the whole user base with %s", c.name, n, version)
    scores = _score(c, model_files, ctx.datasets["scoring"], out, "")
    live_version = record.get("live_version")
    live_models = record.get("models", {}).get(live_version) if live_version else None
    live_scores = _score(c, live_models, ctx.datasets["scoring"], out, "live-")["score"].to_numpy() \
        if live_models else None
    threshold = min(c.max_score_psi, reg.policy().max_score_psi)
    psi = gates.score_psi_gate(scores["score"].to_numpy(), live_scores, threshold)
    state.write_cycle(n, **shared, outcome="running", reason=None, finished=None)  # a retry starts afresh
    state.write_scores(n, scores["score"].to_numpy()[reference_mask(scores["user_id"], c)])
    state.update(models={**record.get("models", {}), version: model_files})
    if not psi["passed"]:
        reason = f"platform: {gates.failures([psi])}"
        state.write_cycle(n, gates=[inter, psi], outcome="refused", reason=reason)
        return _answer(ctx, "refused", [inter, psi], version=version, reason=reason)
    if reg.faults.get(str(n)) == "inverted_boosts":  # the platform operator's own injected fault (demo)
        ctx.logger.warning("campaign %s cycle %d: injected fault inverted_boosts", c.name, n)
        scores = scores.assign(score=-scores["score"])
    attempts = state.read_cycle(n).get("attempts", [])
    table = _load_new_table(ctx, reg, c, state, n, version, scores, [inter, psi], attempts)
    state.write_cycle(n, gates=[inter, psi], outcome="published", boost_table=table, live_since_day=p["day"],
                      attempts=[*attempts, {"job": ctx.job_id, "time": time.time(), "outcome": "published",
                                            "table": table, "reason": None}])
    state.update(live_version=version, live_table=table,
                 published=[*state.read().get("published", []), {"cycle": n, "table": table,
                                                                  "version": version}])
    ctx.logger.info("campaign %s cycle %d: published %s", c.name, n, table)
    return _answer(ctx, "published", [inter, psi], table=table, version=version)


def _load_new_table(ctx: JobContext, reg: Registration, c: Campaign, state: Any, n: int, version: str,
                    scores: Any, checked: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> str:
    """Build the cycle's boost table (a new version: versions are ordered by their creation time)
    and load it into this node's boost service; the table version the service now serves.

    If the table cannot be built or the service does not take it (down, refusing), the table is
    withdrawn from the table root, so no service or watcher ever loads a table the campaign did
    not publish; the cycle is recorded ``failed`` with the reason (and the attempt), and the same
    cycle can be published again by a later ``campaign_publish`` job, under a new table version."""
    from fedacq import pipeline
    from fedacq.activate.service import BoostClient

    limits = reg.policy()
    root = Path(reg.table_root or "")
    built = None
    try:
        table = pipeline.activate(scores, layer=c.layer, tiers=pipeline.tier_config(c.cuts, c.boosts),
                                  experiment=pipeline.experiment_config(c.layer, c.salt, c.treatment_share),
                                  model_version=version, table_root=root, store=ctx.mlflow_store, job_id=version,
                                  tracking=f"campaign-{c.name}", versioned=True)
        built = table.version
        client = BoostClient(limits.boost_service, tls_dir=limits.boost_tls_dir)
        try:
            client.reload(f"{c.layer}/{built}")
        except Exception:
            if _serves(client, c.layer) != built:  # not an answer lost after the service took the table
                raise
        finally:
            client.close()
        return built
    except Exception as exc:
        reason = f"publication failed: {type(exc).__name__}: {str(exc)[:500]}"
        if built is not None:
            shutil.rmtree(root / c.layer / built, ignore_errors=True)  # the name is this node's own table's
        state.write_cycle(n, gates=checked, outcome="failed", reason=reason,
                          attempts=[*attempts, {"job": ctx.job_id, "time": time.time(), "outcome": "failed",
                                                "table": built, "reason": reason}])
        ctx.logger.warning("campaign %s cycle %d: %s (the cycle can be published again)", c.name, n, reason)
        raise RuntimeError(f"campaign {c.name!r} cycle {n}: {reason}") from exc


def _serves(client: Any, layer: str) -> str | None:
    """The table version the boost service serves for ``layer``, or None (also when it cannot tell)."""
    try:
        return next((t.table_version for t in client.status().tables if t.layer == layer), None)
    except Exception:
        return None


def _check_gate(g: Any) -> dict[str, Any]:
    ok = (isinstance(g, dict) and set(g) == {"name", "value", "op", "threshold", "passed"}
          and isinstance(g["name"], str) and g["name"] in ("min_intersection", "max_score_psi")
          and g["op"] in (">=", "<=") and isinstance(g["passed"], bool)
          and isinstance(g["threshold"], (int, float)) and not isinstance(g["threshold"], bool)
          and (g["value"] is None or (isinstance(g["value"], (int, float)) and not isinstance(g["value"], bool)
                                      and math.isfinite(g["value"]))))
    if not ok:
        raise ValueError(f"{OUTCOME_MESSAGE}: a malformed gate record from the platform: {str(g)[:200]}")
    return {k: g[k] for k in ("name", "value", "op", "threshold", "passed")}


def _receive_outcome(ctx: JobContext) -> dict[str, Any]:
    """The platform's answer, checked: a known outcome, gate records of the platform's own gates,
    names (never paths) for the table and version; a ``failed`` answer fails this side too."""
    msg = ctx.link.recv(OUTCOME_MESSAGE, timeout=OUTCOME_TIMEOUT)
    h = msg.header
    if h["outcome"] not in OUTCOMES:
        raise ValueError(f"{OUTCOME_MESSAGE}: unknown outcome {h['outcome']!r}")
    if h["outcome"] == "failed":
        raise RuntimeError(f"the {ctx.peer} refused the job: {h['reason'][:MAX_REASON]}")
    if len(h["gates"]) > 4:
        raise ValueError(f"{OUTCOME_MESSAGE}: {len(h['gates'])} gate records, at most 4")
    for key in ("table", "version"):
        if h[key]:
            _name(h[key], f"{OUTCOME_MESSAGE}: {key}")
    return {"outcome": h["outcome"], "gates": [_check_gate(g) for g in h["gates"]], "table": h["table"],
            "version": h["version"], "reason": _text(h["reason"], f"{OUTCOME_MESSAGE}: reason")}


def publish_lender(ctx: JobContext) -> dict[str, Any]:
    """The platform's answer, checked against what this node asked: a publication or refusal of
    the version it sent, with a table exactly when published."""
    _, c = agree(ctx)
    answer = _receive_outcome(ctx)
    asked = _version(c, ctx.params["models"])
    if answer["outcome"] not in ("published", "refused") or answer["version"] != asked \
            or bool(answer["table"]) != (answer["outcome"] == "published"):
        raise ValueError(f"{OUTCOME_MESSAGE}: the {ctx.peer} answered cycle {ctx.params['cycle']} (version {asked!r}) "
                         f"with {answer['outcome']!r} of version {answer['version']!r}, table {answer['table']!r}")
    return answer


# -- rollback (platform) ------------------------------------------------------------------------

def rollback_platform(ctx: JobContext) -> dict[str, Any]:
    return _answering(ctx, _rollback)


def _rollback(ctx: JobContext, reg: Registration, c: Campaign) -> dict[str, Any]:
    from fedacq.activate.service import BoostClient
    from fedacq.campaign.loop import live_cycle, rollback
    from fedacq.campaign.state import CampaignState

    n = ctx.params["cycle"]
    state = CampaignState(Path(reg.campaigns_dir), c.name)
    if n not in state.cycles():
        raise ValueError(f"campaign_rollback: campaign {c.name!r} has no cycle {n} at the {ctx.party}")
    live = live_cycle({"platform": state})
    if live != n:
        raise ValueError(f"campaign_rollback: cycle {n} of {c.name!r} is not live at the {ctx.party} "
                         f"(live: {live})")
    limits = reg.policy()
    client = BoostClient(limits.boost_service, tls_dir=limits.boost_tls_dir)
    try:
        table = rollback(state, client, f"the lender's measurement: {ctx.params['reason']}")
    finally:
        client.close()
    record = state.read()
    return _answer(ctx, "rolled_back", table=table, version=record["live_version"] or "",
                   reason=state.read_cycle(n)["reason"])


def rollback_lender(ctx: JobContext) -> dict[str, Any]:
    """The platform's answer, checked against this node's own record: the table it now serves
    must be one this node recorded published for an earlier cycle that was not rolled back."""
    from fedacq.campaign.state import CampaignState

    reg, c = agree(ctx)
    answer = _receive_outcome(ctx)
    n = ctx.params["cycle"]
    state = CampaignState(Path(reg.campaigns_dir), c.name)
    known = [p for p in state.read().get("published", [])
             if p["cycle"] < n and (p["table"], p["version"]) == (answer["table"], answer["version"])
             and state.read_cycle(p["cycle"])["outcome"] == "published"]
    if answer["outcome"] != "rolled_back" or not known:
        raise ValueError(f"{OUTCOME_MESSAGE}: the {ctx.peer} answered the rollback of cycle {n} with "
                         f"{answer['outcome']!r} to table {answer['table']!r} (version {answer['version']!r}), "
                         f"which is no earlier version the {ctx.party} recorded published")
    return answer


_MESSAGES = ("fedacq.campaign.protocol",)
AGREE = Protocol("campaign", roles={"lender": agree_lender, "platform": agree_platform}, resolve=resolve_agree,
                 messages=_MESSAGES, description="compare the two nodes' registered campaign digests; "
                                                 "relay the lender's status change to the platform's record")
PUBLISH = Protocol("campaign_publish", roles={"lender": publish_lender, "platform": publish_platform},
                   resolve=resolve_publish, messages=_MESSAGES,
                   description="the platform scores, gates, builds and loads a campaign cycle's boost table")
ROLLBACK = Protocol("campaign_rollback", roles={"lender": rollback_lender, "platform": rollback_platform},
                    resolve=resolve_rollback, messages=_MESSAGES,
                    description="the platform rolls a campaign's live version back through its boost service")
