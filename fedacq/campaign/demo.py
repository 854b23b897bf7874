"""``fedacq demo --campaign``: an eight-week campaign on simulated days between two node processes.

What runs (the default sizes fit 15 minutes on a 2-core machine with 2048-bit keys):

* **the world**: :class:`fedacq.sim.world.World` with ``n_users`` platform users on day 0 and
  arrivals, churn and drift over ``days`` (56) days; labels mature at the lender over days;
* **two nodes** (``grpc``): a lender and a platform ``fedacq node`` process with mutual TLS,
  each with its console on loopback, its ``[campaigns]`` limits and every data set registered;
* **the campaign file** ``<out>/campaign.toml`` (:data:`CAMPAIGN_TOML`), registered at each node
  as its operator's ``fedacq campaign start`` does (checked against that node's own policy);
  the nodes compare digests over the link (a ``campaign`` job) before anything runs;
* **the boost service**: a :class:`fedacq.activate.service.BoostServer` on loopback over the
  platform's table root, named in the platform's own ``[campaigns] boost_service``; the
  platform's node loads every version by ``Reload`` and withdraws one by ``Rollback``, and the
  simulated bidding serves what the service reports it serves;
* **the schedule**, driven as the lender's ``fedacq campaign run`` drives it
  (:func:`fedacq.campaign.loop.run_at_node`: every job submitted to the lender's node alone): a
  cycle every 10 days (``psi`` job, ``run`` job, the lender's gate, a ``campaign_publish`` job in
  which the platform's node scores, gates, builds and loads the table: days 0, 10, ..., 50), a
  ``measure`` job every 10 days and a ``campaign_rollback`` job when the lift turns bad;
* **two injected faults**, documented as such:
  cycle 2 ``inverted_boosts+lost_treatment_clicks`` — the constructed negative lift. The version
  is good but its table is built (at the platform's node: its operator registered the fault) from
  the negated scores (the lowest-scored users get the highest
  boost, a sign error at activation); it passes the gates (they look at the model) and goes live.
  Its real damage in this market is small against a week's noise (the simulator's expected cost
  per credit user of an inverted table is some 15-20% above control while a week's 95% interval
  at this size is about +-35%: figures in the README text), so the fault also drops the click
  reports of 60% of the treatment arm's clicking users on their way to the lender
  (:meth:`fedacq.campaign.simulated.SimulatedMarket.deliver`): the lender attributes fewer credit
  users to the treatment's spend, the next measurement's lift of cost per credit user lies
  entirely above zero, and the version is rolled back automatically to the previous table;
  cycle 3 ``shuffled_labels`` — the lender's label column is permuted before training (a broken
  label join); its model has no signal and the validation gate refuses it;
* **the comparison**: on the same world and experiment a counterfactual campaign kept the first
  published model (rescored weekly on the day's users); cost per credit user of the refreshed
  campaign over the frozen one, treatment arms, over the last four weeks, with the paired bucket
  interval (:func:`fedacq.sim.days.compare`), reported whatever it shows. The faults sit before
  that window (the inverted table is live on days 10-19), so it compares models, not faults.

Both nodes' state (jobs, ledgers, campaign records, boost tables) stays under ``<out>``; the
demo prints how to open each party's console.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fedacq import pipeline
from fedacq.pipeline import LENDER, PLATFORM

#: the demo's campaign file; ``{...}`` fields are the demo's settings.
CAMPAIGN_TOML = """\
# The campaign both operators agreed on (fedacq demo --campaign). Each node checks it against
# its own policy before anything runs; both record its canonical hash.
[campaign]
name = "{name}"
description = "credit users: weekly refresh on matured labels, gated, measured, rolled back when lift turns bad"
label = "credit_granted"

[datasets]
lender = "customers"
platform = "users"
platform_scoring = "users-scoring"

[model]
model = "secureboost"
mode = "prospect"
objective = "binary:logistic"
key_bits = {key_bits}
insecure_test_key = {insecure_test_key}
update = "retrain"

[model.params]
n_estimators = {n_estimators}
max_depth = {max_depth}
learning_rate = 0.3
max_bin = 16

[schedule]
cycle_days = {cycle_days}
measure_days = {cycle_days}
days = {days}

[gates]
validation_metric = "auc"
min_validation_metric = 0.6
max_score_psi = 0.35           # ten simulated days of drift move an honest version's scores by 0.15-0.3 PSI
min_intersection = 500

[tiers]
cuts = [0.2, 0.5, 0.8]
boosts = [0.3, 1.0, 1.6, 3.0]

[experiment]
layer = "acq"
salt = "{name}-salt"
treatment_share = 0.5

[measurement]
epsilon = 1.0
min_cohort = 10
min_bucket_size = 20
drawdown_bound = 20000.0

[rollback]
kpi = "cost_per_credit_user"
better = "lower"
"""

#: the demo's injected faults by cycle (module docstring).
FAULTS = {2: "inverted_boosts+lost_treatment_clicks", 3: "shuffled_labels"}
#: each node's campaign limits in the demo's party.toml.
#: ``max_score_psi``: between two honest 10-day versions of this simulated world the score PSI was
#: 0.04-0.26 in runs at 0.25 (one refused the injected cycle 2 on drift alone, so no rollback could
#: follow) and up to 0.39 in week 8; 0.35 leaves the honest versions room and still guards the bids.
LIMITS = {"max_boost": 3.0, "max_score_psi": 0.35, "max_treatment_share": 0.5}


@dataclass
class CampaignDemoConfig:
    """Settings of ``fedacq demo --campaign``; the defaults fit 15 minutes on 2 cores."""

    out_dir: Path = Path("fedacq-campaign-demo")
    n_users: int = 100_000
    days: int = 56
    seed: int = 7
    key_bits: int = 2048
    insecure_test_key: bool = False
    transport: str = "grpc"
    n_estimators: int = 8
    max_depth: int = 3
    #: the lender's daily budget per platform user (as the one-shot demo's scale).
    budget_per_user_day: float = 0.02
    progress: bool = True
    name: str = "acq-demo"
    #: days between cycles and between measurements: six cycles in eight weeks (two of them faulty)
    cycle_days: int = 10


def campaign_text(cfg: CampaignDemoConfig) -> str:
    return CAMPAIGN_TOML.format(name=cfg.name, key_bits=cfg.key_bits,
                                insecure_test_key=str(cfg.insecure_test_key).lower(),
                                n_estimators=cfg.n_estimators, max_depth=cfg.max_depth, days=cfg.days,
                                cycle_days=cfg.cycle_days)


def run_campaign_demo(cfg: CampaignDemoConfig) -> dict[str, Any]:
    """Run the campaign (module docstring); writes ``campaign-demo.json`` under ``cfg.out_dir``."""
    from fedacq.activate.service import BoostClient, BoostRegistry, BoostServer
    from fedacq.campaign.config import CampaignPolicy, check_against, load_campaign
    from fedacq.campaign.cycle import CampaignRun
    from fedacq.campaign.loop import drive, run_at_node
    from fedacq.campaign.protocol import PUBLISH_FAULTS, register_at_node, register_campaign
    from fedacq.campaign.simulated import SimulatedMarket
    from fedacq.campaign.state import CampaignState
    from fedacq.demo import _fresh_out_dir
    from fedacq.node.local import free_port
    from fedacq.sim.world import World

    started = time.perf_counter()
    out = _fresh_out_dir(Path(cfg.out_dir).resolve())
    say = (lambda text: print(f"[fedacq demo --campaign] {text}", flush=True)) if cfg.progress else (lambda text: None)
    (out / "campaign.toml").write_text(campaign_text(cfg), encoding="utf-8")
    campaign = load_campaign(out / "campaign.toml")
    say(f"campaign {campaign.name}, digest {campaign.digest[:16]}...; world of {cfg.n_users:,} users, "
        f"{cfg.days} days")
    world = World(cfg.n_users, horizon_days=cfg.days, seed=cfg.seed)
    source = SimulatedMarket(world, out, campaign, cfg.budget_per_user_day * cfg.n_users, seed=cfg.seed)
    table_root = out / PLATFORM / "boost_tables"
    table_root.mkdir(parents=True, exist_ok=True)
    # the platform operator's own injected publication fault (its registration), the rest the world's
    publication = {n: f for n, faults in FAULTS.items() for f in faults.split("+") if f in PUBLISH_FAULTS}
    policy = pipeline.one_operator_policy(cfg.key_bits, cfg.insecure_test_key, min_intersection=100)
    how = "two node processes, mutual TLS" if cfg.transport == "grpc" else "in-process"
    with contextlib.ExitStack() as stack:
        server = BoostServer(BoostRegistry(table_root), "127.0.0.1:0").start()
        stack.callback(server.stop)
        client = BoostClient(server.address)  # the world's view of what bidding is served
        stack.callback(client.close)
        limits = {LENDER: LIMITS, PLATFORM: {**LIMITS, "boost_service": server.address,
                                             "boost_tables": str(table_root)}}
        sections = {p: {"campaigns": limits[p], "console": {"listen": f"127.0.0.1:{free_port()}",
                                                            **({"boost_tables": str(table_root)}
                                                               if p == PLATFORM else {})}}
                    for p in (LENDER, PLATFORM)}
        parties = stack.enter_context(pipeline.start_parties(cfg.transport, out, source.paths,
                                                             {LENDER: policy, PLATFORM: policy}, sections))
        say(f"parties started ({how}); boost service on {server.address}; injected faults: "
            + ", ".join(f"cycle {n} {f}" for n, f in FAULTS.items()))

        def served() -> str | None:
            return next((t.table_version or None for t in client.status().tables if t.layer == campaign.layer), None)

        def on_day(day: int, version: str | None) -> None:
            if (day + 1) % 7 == 0:
                say(f"day {day}: bidding with {version} ({time.perf_counter() - started:.0f} s)")

        for party in (LENDER, PLATFORM):  # each operator's `fedacq campaign start` at its own node
            faults = publication if party == PLATFORM else None
            if cfg.transport == "grpc":
                register_at_node(campaign, parties.pair.nodes[party].config, faults)
            else:
                check_against(campaign, party, parties.policies[party], CampaignPolicy(**LIMITS))
                state_dir = out / party / "state"
                register_campaign(state_dir, campaign, party=party, campaigns_dir=state_dir / "campaigns",
                                  limits=CampaignPolicy(**limits[party]),
                                  table_root=table_root if party == PLATFORM else None, faults=faults)
        if cfg.transport == "grpc":  # the lender's `fedacq campaign run`: jobs at its own node only
            run_at_node(parties.pair.nodes[LENDER].config, campaign.name, source, faults=FAULTS, on_day=on_day,
                        served=served, say=say)
        else:
            run = CampaignRun(campaign, parties, CampaignState(out / LENDER / "state" / "campaigns", campaign.name),
                              served=served, say=say)
            drive(run, source, FAULTS, on_day)
    states = {p: CampaignState(out / p / "state" / "campaigns", campaign.name) for p in (LENDER, PLATFORM)}
    last = cfg.days - 1
    first = max(0, cfg.days - 28)
    comparison = source.compare(first, last)
    summary = _summary(cfg, out, states, comparison, time.perf_counter() - started)
    (out / "campaign-demo.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    if cfg.progress:
        _print(summary, out, cfg.transport)
    return summary


def _summary(cfg: CampaignDemoConfig, out: Path, states: dict[str, Any], comparison: dict[str, Any],
             seconds: float) -> dict[str, Any]:
    lender = states[LENDER]
    cycles = []
    for n in lender.cycles():
        c = lender.read_cycle(n)
        cycles.append({k: c.get(k) for k in ("cycle", "sim_day", "outcome", "reason", "version", "boost_table",
                                             "fault", "gates", "measurements")})
    outcomes = [c["outcome"] for c in cycles]
    settings = asdict(cfg)
    settings["out_dir"] = str(cfg.out_dir)
    return {"settings": settings, "seconds": round(seconds, 1), "cycles": cycles,
            "published": outcomes.count("published") + outcomes.count("rolled_back"),
            "refused": outcomes.count("refused"), "rolled_back": outcomes.count("rolled_back"),
            "live_table": lender.read().get("live_table"), "comparison": comparison,
            # each node's own record: the schedule's end reached the platform's through a campaign job
            "status": {party: state.read()["status"] for party, state in states.items()},
            "consoles": {p: str(out / p / "party.toml") for p in (LENDER, PLATFORM)}}


def _print(summary: dict[str, Any], out: Path, transport: str) -> None:
    say = lambda text: print(f"[fedacq demo --campaign] {text}", flush=True)  # noqa: E731
    for c in summary["cycles"]:
        measured = c.get("measurements") or []
        lifts = ", ".join(f"day {m['sim_day']}: {m['relative']['value']:+.1%} [{m['relative']['ci_low']:+.1%}, "
                          f"{m['relative']['ci_high']:+.1%}]" for m in measured if m["relative"])
        say(f"cycle {c['cycle']} (day {c['sim_day']}): {c['outcome']}"
            + (f" [injected fault: {c['fault']}]" if c.get("fault") else "")
            + (f" - {c['reason']}" if c.get("reason") else "") + (f"; lift of cost per credit user {lifts}"
                                                                   if lifts else ""))
    t = summary["comparison"]["treatment"]
    w = summary["comparison"]["window"]
    say(f"versions published {summary['published']}, refused {summary['refused']}, rolled back "
        f"{summary['rolled_back']}; {summary['seconds']:.0f} s; campaign "
        + ", ".join(f"{status} at the {party}" for party, status in summary["status"].items()))
    say(f"refreshed vs frozen first model, cost per credit user, treatment arms, days {w[0]}..{w[1]}: "
        f"{t['a']:.1f} vs {t['b']:.1f}, {t['relative']:+.1%} [{t['ci_low']:+.1%}, {t['ci_high']:+.1%}] "
        f"(paired bootstrap over {t['n_buckets']} buckets; negative = the refreshed campaign is cheaper)")
    say(f"summary: {out / 'campaign-demo.json'}")
    if transport == "grpc":
        for party, config in summary["consoles"].items():
            say(f"the {party}'s console: fedacq console --config {config}")
