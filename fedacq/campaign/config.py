"""The campaign file both operators agree on, and each node's check of it against its own policy.

A campaign is a TOML file (``campaign.toml``). Both operators hold the same file; each node
checks it against its own ``party.toml`` before anything runs, and both record its canonical
hash (:attr:`Campaign.digest`: SHA-256 of the parsed document as sorted, compact JSON, so
formatting and key order do not matter) so that they know they run the same campaign::

    [campaign]
    name = "acq-2026q1"                 # a fedacq.paths.NAME: the state directory's name
    description = "credit users, weekly refresh"
    label = "credit_granted"            # the lender's label column (only matured labels are used)

    [datasets]                          # registered names (never paths): [datasets] of each node
    lender = "customers"                # the lender's training table (labels as they mature)
    platform = "users"                  # the platform's training table (features)
    platform_scoring = "users-scoring"  # the platform's whole user base (parquet) it scores

    [model]
    model = "secureboost"
    mode = "prospect"                   # the platform must hold the model to score its users
    objective = "binary:logistic"
    key_bits = 2048
    update = "retrain"                  # or "add_trees": XGBoost's xgb_model, trees added to the live model
    value = "drawdown"                  # optional: value stages (a key of fedacq.activate.value.VALUE_MODELS)

    [model.params]                      # XGBoost names
    n_estimators = 10
    max_depth = 3
    learning_rate = 0.3
    max_bin = 16

    [schedule]
    cycle_days = 7                      # a new model version every 7 (simulated or real) days
    measure_days = 7                    # a measurement of the live version every 7 days
    days = 56                           # the campaign's length

    [gates]                             # a version failing any of these is never published
    validation_metric = "auc"           # the lender's validation metric (run job evaluation)
    min_validation_metric = 0.6
    max_score_psi = 0.25                # PSI of the new version's scores vs the live version's (platform)
    min_intersection = 1000

    [tiers]
    cuts = [0.2, 0.5, 0.8]              # score-rank cut points
    boosts = [0.3, 1.0, 1.6, 3.0]       # one boost per tier, lowest first

    [experiment]                        # unchanged for the campaign's life: buckets never move
    layer = "acq"
    salt = "acq-2026q1-salt"
    treatment_share = 0.5

    [measurement]
    epsilon = 1.0                       # the platform's Laplace noise on released aggregates
    min_cohort = 20
    min_bucket_size = 20
    drawdown_bound = 20000.0

    [rollback]                          # automatic: the KPI's lift interval entirely on the bad side
    kpi = "cost_per_credit_user"
    better = "lower"                    # "lower" (a cost) or "higher" (a rate, a value)

Which node refuses what (:func:`check_against`): both the model, mode and key size their
``[policy]`` refuses and a minimum intersection below their ``min_intersection``; the
lender a measurement epsilon above its ``measure_max_epsilon`` and a cohort below its
``measure_min_cohort``; the platform boosts above its ``max_boost``, a score-PSI gate looser
than its own ``max_score_psi`` and a treatment share above its ``max_treatment_share``
(``[campaigns]`` in its ``party.toml``: the campaign-only limits, :class:`CampaignPolicy`).
Each error names the campaign file and the key.
"""

from __future__ import annotations

import hashlib
import json
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedacq.paths import check_name

UPDATES = ("retrain", "add_trees")
BETTER = ("lower", "higher")
#: the run job's parameter that continues a model (XGBoost's ``xgb_model``): ``update = "add_trees"``.
ADD_TREES_PARAM = "xgb_model"
#: every table and key a campaign file may have: table -> {key: type(s)}; None: a free table.
SCHEMA: dict[str, dict[str, Any] | None] = {
    "campaign": {"name": str, "description": str, "label": str},
    "datasets": {"lender": str, "platform": str, "platform_scoring": str},
    "model": {"model": str, "mode": str, "objective": str, "key_bits": int, "update": str, "value": str,
              "insecure_test_key": bool, "params": dict},
    "schedule": {"cycle_days": int, "measure_days": int, "days": int},
    "gates": {"validation_metric": str, "min_validation_metric": float, "max_score_psi": float,
              "min_intersection": int},
    "tiers": {"cuts": list, "boosts": list},
    "experiment": {"layer": str, "salt": str, "treatment_share": float},
    "measurement": {"epsilon": float, "min_cohort": int, "min_bucket_size": int, "drawdown_bound": float},
    "rollback": {"kpi": str, "better": str},
}
REQUIRED = {"campaign": ("name", "label"), "datasets": ("lender", "platform", "platform_scoring"),
            "model": ("model", "mode"), "schedule": ("cycle_days", "days"),
            "gates": ("min_validation_metric", "max_score_psi", "min_intersection"),
            "tiers": ("cuts", "boosts"), "experiment": ("layer", "salt"), "rollback": ("kpi",)}


class CampaignError(ValueError):
    """A campaign file that is malformed or that this node's policy refuses (nothing ran)."""


@dataclass(frozen=True)
class Campaign:
    """A checked campaign file; see the module docstring for each key."""

    source: str
    name: str
    label: str
    datasets: dict[str, str]
    model: str
    mode: str
    objective: str
    key_bits: int
    update: str
    params: dict[str, Any]
    cycle_days: int
    measure_days: int
    days: int
    validation_metric: str
    min_validation_metric: float
    max_score_psi: float
    min_intersection: int
    cuts: tuple[float, ...]
    boosts: tuple[float, ...]
    layer: str
    salt: str
    treatment_share: float
    epsilon: float
    min_cohort: int
    min_bucket_size: int
    drawdown_bound: float
    rollback_kpi: str
    rollback_better: str
    description: str = ""
    value: str | None = None
    insecure_test_key: bool = False
    document: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def digest(self) -> str:
        """The canonical hash both nodes compare (module docstring)."""
        return canonical_digest(self.document)

    @property
    def bad_side(self) -> str:
        """Which way the rollback KPI moves when the boost hurts: ``higher`` for a cost."""
        return "higher" if self.rollback_better == "lower" else "lower"

    def model_params(self) -> dict[str, Any]:
        """The run job's ``model_params``: the campaign's XGBoost parameters and objective."""
        return {**self.params, "objective": self.objective}

    def settings(self) -> dict[str, str | int | float | bool]:
        """Flat settings for the console's campaign page."""
        return {"label": self.label, "model": self.model, "mode": self.mode, "objective": self.objective,
                "key_bits": self.key_bits, "update": self.update, "value": self.value or "",
                "cycle_days": self.cycle_days, "measure_days": self.measure_days, "days": self.days,
                f"gate min validation {self.validation_metric}": self.min_validation_metric,
                "gate max score PSI": self.max_score_psi, "gate min intersection": self.min_intersection,
                "tiers": " / ".join(f"{b:g}" for b in self.boosts), "layer": self.layer,
                "treatment_share": self.treatment_share, "measurement epsilon": self.epsilon,
                "rollback": f"{self.rollback_kpi} significantly {self.bad_side}",
                "digest": self.digest[:16], **{f"param {k}": v for k, v in sorted(self.params.items())
                                               if isinstance(v, (str, int, float, bool))}}


def canonical_digest(document: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def load_campaign(path: str | Path) -> Campaign:
    """Read and check a campaign file; every error names the file and the key."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CampaignError(f"cannot read campaign file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CampaignError(f"{path}: not valid TOML ({exc})") from None
    return parse_campaign(doc, str(path))


def _check_types(doc: dict[str, Any], source: str) -> None:
    unknown = sorted(set(doc) - set(SCHEMA))
    if unknown:
        raise CampaignError(f"{source}: unknown table(s) {unknown}; known: {sorted(SCHEMA)}")
    for table, keys in SCHEMA.items():
        value = doc.get(table, {})
        if not isinstance(value, dict):
            raise CampaignError(f"{source}: [{table}] must be a table")
        for key in REQUIRED.get(table, ()):
            if key not in value:
                raise CampaignError(f"{source}: missing [{table}] {key}")
        for key, v in value.items():
            if key not in keys:
                raise CampaignError(f"{source}: unknown key [{table}] {key}; known: {sorted(keys)}")
            kind = keys[key]
            ok = (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)) if kind is float \
                else (isinstance(v, int) and not isinstance(v, bool)) if kind is int else isinstance(v, kind)
            if not ok:
                raise CampaignError(f"{source}: [{table}] {key} must be a{'n' if kind is int else ''} "
                                    f"{kind.__name__}, got {v!r}")


def parse_campaign(doc: dict[str, Any], source: str) -> Campaign:
    """The checked :class:`Campaign` of a parsed campaign document (errors name ``source``)."""
    if not isinstance(doc, dict):
        raise CampaignError(f"{source}: a campaign must be a table")
    _check_types(doc, source)
    c, d, m = doc["campaign"], doc["datasets"], doc["model"]
    s, g, t, e = doc["schedule"], doc["gates"], doc["tiers"], doc["experiment"]
    meas, rb = doc.get("measurement", {}), doc["rollback"]

    def fail(key: str, why: str) -> CampaignError:
        return CampaignError(f"{source}: {key} {why}")

    def name(table: str, key: str, value: str) -> str:
        try:
            return check_name(value, f"{source}: [{table}] {key}")
        except ValueError as exc:
            raise CampaignError(str(exc)) from None

    for key, value in d.items():
        name("datasets", key, value)
    update = m.get("update", "retrain")
    if update not in UPDATES:
        raise fail("[model] update", f"must be one of {list(UPDATES)}, got {update!r}")
    if update == "add_trees" and not run_job_adds_trees():
        raise fail("[model] update", f"= \"add_trees\" needs the run job's {ADD_TREES_PARAM!r} parameter, which "
                                     "this fedacq's run job does not take yet; use \"retrain\"")
    if m["mode"] != "prospect":
        raise fail("[model] mode", f"must be \"prospect\": the platform scores its whole user base with the "
                                   f"model it holds, got {m['mode']!r}")
    value = m.get("value")
    if value is not None and update == "add_trees":
        raise fail("[model] update", "= \"add_trees\" continues one live model; with value stages use \"retrain\"")
    if value is not None:
        from fedacq.activate.value import VALUE_MODELS

        if value not in VALUE_MODELS:
            raise fail("[model] value", f"must be one of {sorted(VALUE_MODELS)}, got {value!r}")
    for key in ("cycle_days", "days"):
        if s[key] < 1:
            raise fail(f"[schedule] {key}", f"must be positive, got {s[key]}")
    measure_days = s.get("measure_days", s["cycle_days"])
    if measure_days < 1:
        raise fail("[schedule] measure_days", f"must be positive, got {measure_days}")
    if not 0 < g["max_score_psi"]:
        raise fail("[gates] max_score_psi", f"must be positive, got {g['max_score_psi']}")
    if g["min_intersection"] < 1:
        raise fail("[gates] min_intersection", f"must be positive, got {g['min_intersection']}")
    cuts, boosts = t["cuts"], t["boosts"]
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in [*cuts, *boosts]):
        raise fail("[tiers]", "cuts and boosts must be lists of numbers")
    if len(boosts) != len(cuts) + 1 or list(cuts) != sorted(cuts) or not all(0 < x < 1 for x in cuts):
        raise fail("[tiers] cuts", f"must be increasing ranks in (0, 1), one fewer than boosts ({cuts}, {boosts})")
    if not all(b > 0 for b in boosts):
        raise fail("[tiers] boosts", f"must be positive, got {boosts}")
    share = e.get("treatment_share", 0.5)
    if not 0 < share < 1:
        raise fail("[experiment] treatment_share", f"must be in (0, 1), got {share}")
    from fedacq.measure.kpis import KPI_BY_NAME

    if rb["kpi"] not in KPI_BY_NAME:
        raise fail("[rollback] kpi", f"must be one of {sorted(KPI_BY_NAME)}, got {rb['kpi']!r}")
    better = rb.get("better", "lower")
    if better not in BETTER:
        raise fail("[rollback] better", f"must be one of {list(BETTER)}, got {better!r}")
    epsilon = meas.get("epsilon", 1.0)
    if not epsilon > 0:
        raise fail("[measurement] epsilon", f"must be positive, got {epsilon}")
    params = dict(m.get("params", {}))
    if "objective" in params:
        raise fail("[model.params] objective", "goes in [model] objective")
    return Campaign(
        source=source, name=name("campaign", "name", c["name"]), label=c["label"], datasets=dict(d),
        model=m["model"], mode=m["mode"], objective=m.get("objective", "binary:logistic"),
        key_bits=m.get("key_bits", 2048), update=update, params=params, cycle_days=s["cycle_days"],
        measure_days=measure_days, days=s["days"], validation_metric=g.get("validation_metric", "auc"),
        min_validation_metric=float(g["min_validation_metric"]), max_score_psi=float(g["max_score_psi"]),
        min_intersection=g["min_intersection"], cuts=tuple(float(x) for x in cuts),
        boosts=tuple(float(x) for x in boosts), layer=name("experiment", "layer", e["layer"]), salt=e["salt"],
        treatment_share=float(share), epsilon=float(epsilon), min_cohort=meas.get("min_cohort", 20),
        min_bucket_size=meas.get("min_bucket_size", 20), drawdown_bound=float(meas.get("drawdown_bound", 20_000.0)),
        rollback_kpi=rb["kpi"], rollback_better=better, description=c.get("description", ""), value=value,
        insecure_test_key=m.get("insecure_test_key", False), document=json.loads(json.dumps(doc)))


def run_job_adds_trees() -> bool:
    """Whether this fedacq's ``run`` job takes :data:`ADD_TREES_PARAM` (the live model to add trees to)."""
    from fedacq.learn.run_node import resolve
    from fedacq.node.policy import Policy, PolicyError

    try:
        resolve({"id_column": "id", "label_column": "y", ADD_TREES_PARAM: ""}, Policy())
    except PolicyError as exc:
        return f"'{ADD_TREES_PARAM}'" not in str(exc)
    return True


# -- each node's own check ---------------------------------------------------------------------

@dataclass(frozen=True)
class CampaignPolicy:
    """``[campaigns]`` of a ``party.toml``: the campaign-only limits of this node (the
    platform's protect its bidding; the defaults are the safe ones)::

        [campaigns]
        max_boost = 3.0             # no tier's boost above this
        max_score_psi = 0.25        # a campaign's score-PSI gate may be no looser
        max_treatment_share = 0.5   # at most this share of users in treatment
        boost_service = "127.0.0.1:50070"   # (platform) its boost service's admin address
        boost_tls_dir = "certs/boost"       # (platform) client certificates for it, if mutual TLS
        boost_tables = "boost-tables"       # (platform) the service's table root (default: [console] boost_tables)

    The platform's campaign node jobs (:mod:`fedacq.campaign.protocol`) publish through these,
    never through an address or path the peer names.
    """

    max_boost: float = 3.0
    max_score_psi: float = 0.25
    max_treatment_share: float = 0.5
    boost_service: str | None = None
    boost_tls_dir: str | None = None
    boost_tables: str | None = None


def load_campaign_policy(party_toml: str | Path) -> CampaignPolicy:
    """``[campaigns]`` of ``party_toml`` (defaults when absent); errors name the file and the key."""
    path = Path(party_toml)
    try:
        table = tomllib.loads(path.read_text(encoding="utf-8")).get("campaigns", {})
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise CampaignError(f"cannot read node config {path}: {exc}") from None
    if not isinstance(table, dict):
        raise CampaignError(f"{path}: [campaigns] must be a table")
    numbers = {"max_boost", "max_score_psi", "max_treatment_share"}
    texts = {"boost_service", "boost_tls_dir", "boost_tables"}
    unknown = sorted(set(table) - numbers - texts)
    if unknown:
        raise CampaignError(f"{path}: unknown [campaigns] key(s) {unknown}; known: {sorted(numbers | texts)}")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key in texts:
            if not isinstance(value, str) or not value:
                raise CampaignError(f"{path}: [campaigns] {key} must be a non-empty string, got {value!r}")
            out[key] = value if key == "boost_service" else str((path.parent / value).resolve())
        elif not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0:
            raise CampaignError(f"{path}: [campaigns] {key} must be a positive number, got {value!r}")
        else:
            out[key] = float(value)
    return CampaignPolicy(**out)


def check_against(campaign: Campaign, party: str, policy: Any, limits: CampaignPolicy) -> None:
    """Refuse ``campaign`` if ``party``'s node policy (:class:`fedacq.node.policy.Policy`) or its
    campaign limits refuse any part of it; the error names the campaign file, the key and the policy."""
    from fedacq.node.policy import PolicyError

    src = campaign.source

    def refuse(key: str, why: str) -> CampaignError:
        return CampaignError(f"{src}: {key}: the {party}'s policy refuses it ({why})")

    try:
        policy.one_of("models", "model", campaign.model)
        policy.one_of("modes", "mode", campaign.mode)
        policy.key_size(campaign.key_bits, campaign.insecure_test_key)
    except PolicyError as exc:
        raise refuse("[model]", str(exc)) from None
    if campaign.min_intersection < policy.min_intersection:
        raise refuse("[gates] min_intersection", f"{campaign.min_intersection} < policy min_intersection "
                                                 f"{policy.min_intersection}")
    if party == "lender":
        cap = policy.measure_max_epsilon
        if cap is not None and campaign.epsilon > cap:
            raise refuse("[measurement] epsilon", f"{campaign.epsilon} > policy measure_max_epsilon {cap}")
        if campaign.min_cohort < policy.measure_min_cohort:
            raise refuse("[measurement] min_cohort", f"{campaign.min_cohort} < policy measure_min_cohort "
                                                     f"{policy.measure_min_cohort}")
    if party == "platform":
        if max(campaign.boosts) > limits.max_boost:
            raise refuse("[tiers] boosts", f"{max(campaign.boosts):g} > [campaigns] max_boost {limits.max_boost:g}")
        if campaign.max_score_psi > limits.max_score_psi:
            raise refuse("[gates] max_score_psi", f"{campaign.max_score_psi:g} is looser than [campaigns] "
                                                  f"max_score_psi {limits.max_score_psi:g}")
        if campaign.treatment_share > limits.max_treatment_share:
            raise refuse("[experiment] treatment_share", f"{campaign.treatment_share:g} > [campaigns] "
                                                         f"max_treatment_share {limits.max_treatment_share:g}")


def check_at_node(campaign: Campaign, party_toml: str | Path) -> Any:
    """The node config of ``party_toml`` after checking ``campaign`` against its policy and limits."""
    from fedacq.node.config import load_config

    config = load_config(party_toml)
    check_against(campaign, config.party, config.policy, load_campaign_policy(party_toml))
    for role, key in (("lender", "lender"), ("platform", "platform"), ("platform", "platform_scoring")):
        if config.party == role and campaign.datasets[key] not in config.datasets:
            raise CampaignError(f"{campaign.source}: [datasets] {key} = {campaign.datasets[key]!r} is not "
                                f"registered at the {role} ({config.path} [datasets])")
    return config
