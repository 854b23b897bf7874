"""The operator's side of a node: ``fedacq job submit|resume|status|logs`` and its client.

The client talks to the node's control endpoint, a unix socket in the node's
state directory (found through the same party.toml the node runs with), so only
the node's own operator — whoever can open that 0600 socket — can submit jobs.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any, Callable

import grpc

from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link._pb import fedacq_pb2_grpc as pb_grpc
from fedacq.node.config import load_config
from fedacq.node.jobs import FINAL, JobSpec, load_job_file


class ControlClient:
    """Submit jobs to, and read job state from, the local node at ``socket_path``."""

    def __init__(self, socket_path: str | Path, timeout: float = 60.0) -> None:
        self.socket_path = str(socket_path)
        self.timeout = timeout
        creds = grpc.local_channel_credentials(grpc.LocalConnectionType.UDS)
        self.channel = grpc.secure_channel(f"unix:{self.socket_path}", creds)
        self.stub = pb_grpc.NodeControlStub(self.channel)

    def _call(self, method: str, request: Any) -> Any:
        try:
            return getattr(self.stub, method)(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                raise RuntimeError(f"no node is listening on {self.socket_path} (is `fedacq node` running?)") from None
            raise ValueError(exc.details()) from None

    def health(self) -> str:
        return self._call("Health", pb.PingRequest()).party

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        return json.loads(self._call("SubmitJob", pb.JobDocument(json=spec.to_json())).json)

    def resume(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._call("ResumeJob", pb.JobRef(id=job_id)).json)

    def status(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._call("GetJob", pb.JobRef(id=job_id)).json)

    def logs(self, job_id: str) -> str:
        return self._call("GetLogs", pb.JobRef(id=job_id)).text

    def wait(self, job_id: str, timeout: float = 600.0, poll: float = 0.2,
             on_log: Callable[[str], None] | None = None) -> dict[str, Any]:
        """Block until the job is succeeded or failed; TimeoutError after ``timeout`` s.

        With ``on_log``, every new line of the job's log is passed to it while
        waiting, so an operator sees the job's progress as it happens.
        """
        end = time.monotonic() + timeout
        seen = 0
        while True:
            record = self.status(job_id)
            if on_log is not None:
                lines = self.logs(job_id).splitlines()
                for line in lines[seen:]:
                    on_log(line)
                seen = len(lines)
            if record["status"] in FINAL:
                return record
            if time.monotonic() > end:
                raise TimeoutError(f"job {job_id} still {record['status']} after {timeout} s")
            time.sleep(poll)

    def close(self) -> None:
        self.channel.close()


# -- CLI: fedacq job ---------------------------------------------------------------
def add_parser(sub: argparse._SubParsersAction) -> None:
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
    if not args.config:
        raise ValueError("give the node's config: fedacq job --config parties/<party>/party.toml ...")
    return ControlClient(load_config(args.config).socket_path)


def _cmd_submit(args: argparse.Namespace) -> int:
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
    if not args.wait:
        return 0
    from tqdm import tqdm

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
