"""``fedacq node`` (run this party's node daemon) and ``fedacq job`` (its operator's commands).

Only argument parsing and console output live here; the daemon is
:mod:`fedacq.node.daemon`, the operator's client :class:`fedacq.node.control.ControlClient`.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from fedacq.node.control import ControlClient


# -- fedacq node -------------------------------------------------------------------

def add_node_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("node", help="run this party's node daemon (peer link + job control)")
    p.add_argument("--config", required=True, help="the party's TOML config, e.g. parties/lender/party.toml")
    p.set_defaults(func=_cmd_node)


def _cmd_node(args: argparse.Namespace) -> int:
    from fedacq.node.daemon import serve

    return serve(args.config)


# -- fedacq job --------------------------------------------------------------------

def add_job_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("job", help="submit a job to this party's node, or read its status and log")
    p.add_argument("--config", default=os.environ.get("FEDACQ_NODE_CONFIG"),
                   help="the node's party.toml (default: $FEDACQ_NODE_CONFIG)")
    jobs = p.add_subparsers(dest="job_command", required=True, metavar="ACTION")
    submit = jobs.add_parser("submit", help="propose JOB.toml to both nodes and start it")
    submit.add_argument("job_file", metavar="JOB.toml")
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish and print its result")
    submit.add_argument("--timeout", type=float, default=3600.0, help="seconds to --wait (default 3600)")
    submit.set_defaults(func=_cmd_submit)
    resume = jobs.add_parser("resume", help="run an interrupted or failed job again from the last checkpoint "
                                            "both nodes hold (at the node that submitted it)")
    resume.add_argument("job_id", metavar="ID")
    resume.add_argument("--wait", action="store_true", help="wait for the job to finish and print its result")
    resume.add_argument("--timeout", type=float, default=3600.0, help="seconds to --wait (default 3600)")
    resume.set_defaults(func=_cmd_resume)
    for name, func, text in (("status", _cmd_status, "print the job's state and result as JSON"),
                             ("logs", _cmd_logs, "print the job's log at this node")):
        cmd = jobs.add_parser(name, help=text)
        cmd.add_argument("job_id", metavar="ID")
        cmd.set_defaults(func=func)


def _client(args: argparse.Namespace) -> ControlClient:
    from fedacq.node.config import load_config

    if not args.config:
        raise ValueError("give the node's config: fedacq job --config parties/<party>/party.toml ...")
    return ControlClient(load_config(args.config).socket_path)


def _cmd_submit(args: argparse.Namespace) -> int:
    from fedacq.node.jobs import load_job_file

    client = _client(args)
    record = client.submit(load_job_file(args.job_file))
    print(f"job {record['id']} accepted by both nodes", flush=True)
    return _follow(client, record, args)


def _cmd_resume(args: argparse.Namespace) -> int:
    client = _client(args)
    record = client.resume(args.job_id)
    print(f"job {record['id']} resumed by both nodes (attempt {record['spec']['attempt']})", flush=True)
    return _follow(client, record, args)


def _follow(client: ControlClient, record: dict[str, Any], args: argparse.Namespace) -> int:
    """With ``--wait``: a status line until the job ends, then its record; exit 1 unless it succeeded."""
    from tqdm import tqdm

    from fedacq.node.jobs import FINAL

    if not args.wait:
        return 0
    with tqdm(desc=f"job {record['id']}", bar_format="{desc}: {elapsed} {postfix}") as bar:
        end = time.monotonic() + args.timeout
        while record["status"] not in FINAL:
            if time.monotonic() > end:
                raise RuntimeError(f"job {record['id']} still {record['status']} after {args.timeout} s")
            time.sleep(0.5)
            record = client.status(record["id"])
            bar.set_postfix_str(_describe(record))
            bar.update(0)
    print(json.dumps(record, indent=2))
    return 0 if record["status"] == "succeeded" else 1


def _describe(record: dict[str, Any]) -> str:
    """The status line: state, step, how far, and the time left when known."""
    progress = record.get("progress") or {}
    text = record["status"]
    if progress and record["status"] == "running":
        text += f", {progress['step']} {progress['done']}" + (f"/{progress['total']}" if progress.get("total") else "")
        if "eta_seconds" in progress:
            text += f", about {progress['eta_seconds']:.0f} s left"
    return text


def _cmd_status(args: argparse.Namespace) -> int:
    print(json.dumps(_client(args).status(args.job_id), indent=2))
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    print(_client(args).logs(args.job_id), end="")
    return 0
