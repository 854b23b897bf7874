"""``fedacq campaign start|run|status|pause|resume|stop|rollback``: one node operator's commands.

Each operator runs them at their own node (``--config`` their ``party.toml``):

* ``start --campaign FILE [--peer-digest HEX]``: check the campaign file against this node's
  policy and ``[campaigns]`` limits, register this node's own copy
  (:func:`fedacq.campaign.protocol.register_at_node`) and its state (``campaign.json``, status
  running) and print its canonical digest; with ``--peer-digest`` a different campaign is refused
  before anything is recorded (the nodes also compare digests over the link before every job);
* ``run NAME`` (the lender): drive the schedule in real days, every step a job submitted to this
  node (:func:`fedacq.campaign.loop.run_at_node`); the platform's steps run at its node;
* ``status [NAME]``: the campaign(s) and their cycles as this node recorded them;
* ``pause NAME`` / ``resume NAME`` / ``stop NAME``: this node's record first; at the lender, the
  change then reaches the platform's record through a ``campaign`` job that the platform checks
  against its own record (:func:`fedacq.campaign.loop.set_status`; an unreachable or refusing
  platform is reported, the lender's change stands, and the command can be run again). The
  lender's loop reads its status before each day (:mod:`fedacq.campaign.loop`); the platform
  publishes nothing for a campaign its record does not show running;
* ``rollback NAME [--boost-service HOST:PORT] [--to TABLE] [--reason TEXT]`` (the platform): its
  boost service (by default the ``[campaigns] boost_service`` it registered the campaign with)
  serves the previous published table (or ``--to``) and the live cycle is recorded
  ``rolled_back`` with the reason. (The lender's driver asks for a rollback with a
  ``campaign_rollback`` job, which the platform's node checks and records the same way.)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("campaign", help="campaign autopilot: start, status, pause, resume, stop, rollback",
                              description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="action", required=True)
    start = sub.add_parser("start", help="check a campaign file against this node's policy and record it")
    start.add_argument("--campaign", type=Path, required=True, help="the campaign TOML both operators agreed on")
    start.add_argument("--peer-digest", help="the peer's digest of the campaign (refused if it differs)")
    start.set_defaults(func=_start)
    run = sub.add_parser("run", help="(lender) drive the campaign's schedule by jobs at this node")
    run.add_argument("name")
    run.add_argument("--progress", action="store_true", help="echo each job's log")
    run.set_defaults(func=_run)
    status = sub.add_parser("status", help="campaigns and cycles as this node recorded them")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true", help="the records as JSON")
    status.set_defaults(func=_status)
    for action, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
        q = sub.add_parser(action, help=f"set the campaign's status to {state}")
        q.add_argument("name")
        q.set_defaults(func=_set_status, status=state)
    rb = sub.add_parser("rollback", help="(platform) serve the previous published table and record why")
    rb.add_argument("name")
    rb.add_argument("--boost-service", help="HOST:PORT of the platform's boost service (admin; default: the "
                                           "[campaigns] boost_service the campaign was registered with)")
    rb.add_argument("--tls-dir", help="client certificates for a mutual-TLS boost service")
    rb.add_argument("--to", help="the table version to serve (default: the previous published one)")
    rb.add_argument("--reason", default="operator rollback", help="recorded with the rollback")
    rb.set_defaults(func=_rollback)
    for q in (start, run, status, rb, *[sub.choices[a] for a in ("pause", "resume", "stop")]):
        q.add_argument("--config", type=Path, required=True, help="this node's party.toml")


def _root(args: Any) -> tuple[Any, Path]:
    from fedacq.campaign.state import campaigns_dir
    from fedacq.node.config import load_config

    config = load_config(args.config)
    return config, campaigns_dir(config)


def _start(args: Any) -> int:
    from fedacq.campaign.config import load_campaign
    from fedacq.campaign.protocol import register_at_node
    from fedacq.campaign.state import campaigns_dir

    campaign = load_campaign(args.campaign)
    if args.peer_digest is not None and args.peer_digest.lower() != campaign.digest:
        raise SystemExit(f"{args.campaign}: digest {campaign.digest} differs from the peer's {args.peer_digest}: "
                         "the two operators hold different campaign files")
    config = register_at_node(campaign, args.config)
    print(f"campaign {campaign.name} accepted by the {config.party}'s policy; recorded in "
          f"{campaigns_dir(config) / campaign.name}")
    print(f"digest {campaign.digest}")
    return 0


def _run(args: Any) -> int:
    from fedacq.campaign.loop import run_at_node

    run = run_at_node(args.config, args.name, progress=args.progress,
                      say=lambda text: print(f"[campaign {args.name}] {text}", flush=True))
    print(f"campaign {args.name}: {run.state.read()['status']}")
    return 0


def _status(args: Any) -> int:
    from fedacq.campaign.state import CampaignState

    _, root = _root(args)
    names = [args.name] if args.name else sorted(p.name for p in root.iterdir() if (p / "campaign.json").is_file()) \
        if root.is_dir() else []
    records = []
    for name in names:
        state = CampaignState(root, name)
        records.append({**state.read(), "cycles": [state.read_cycle(n) for n in state.cycles()]})
    if args.json:
        print(json.dumps(records, indent=2, default=str))
        return 0
    if not records:
        print(f"no campaigns under {root}")
    for r in records:
        print(f"{r['name']}: {r['status']}, live {r.get('live_version')} (table {r.get('live_table')}), "
              f"digest {str(r.get('digest'))[:16]}")
        for c in r["cycles"]:
            m = c.get("measurement") or {}
            rel = m.get("relative")
            lift = f", {m['kpi']} lift {rel['value']:+.1%} [{rel['ci_low']:+.1%}, {rel['ci_high']:+.1%}]" \
                if rel else ""
            print(f"  cycle {c['cycle']:>3} day {c.get('sim_day')}: {c['outcome']:<11} {c.get('version') or ''}"
                  f"{lift}{' - ' + c['reason'] if c.get('reason') else ''}")
    return 0


def _set_status(args: Any) -> int:
    from fedacq.campaign.state import CampaignState

    config, root = _root(args)
    state = CampaignState(root, args.name)
    if config.party != "lender":  # the platform's operator: its own record only
        record = state.set_status(args.status, by=config.party)
        print(f"campaign {record['name']}: {record['status']} at the {config.party}")
        return 0
    from fedacq.campaign.loop import set_status
    from fedacq.pipeline import SiteParties

    try:
        answer = set_status(SiteParties(args.config), state, args.status)
    except RuntimeError as exc:
        raise SystemExit(f"{exc}; run the command again once the nodes answer") from None
    print(f"campaign {args.name}: {args.status} at the lender; {answer['reason']}")
    return 0


def _rollback(args: Any) -> int:
    from fedacq.activate.service import BoostClient
    from fedacq.campaign.loop import rollback
    from fedacq.campaign.state import CampaignState

    config, root = _root(args)
    if config.party != "platform":
        raise SystemExit("rollback runs at the platform, which serves the boost tables")
    from fedacq.campaign.protocol import registered

    state = CampaignState(root, args.name)
    reg = registered(config.state_dir, args.name)
    limits = reg.policy() if reg is not None else None
    address = args.boost_service or (limits.boost_service if limits else None)
    if address is None:
        raise SystemExit(f"campaign {args.name}: no --boost-service and none registered ([campaigns] boost_service)")
    client = BoostClient(address, tls_dir=args.tls_dir or (limits.boost_tls_dir if limits else None))
    try:  # this node's own record; the lender records it in its own view when told
        table = rollback(state, client, args.reason, to=args.to)
    finally:
        client.close()
    print(f"campaign {args.name}: the boost service now serves {table}")
    return 0
