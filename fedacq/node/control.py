"""The operator's client of a node (``fedacq job submit|resume|status|logs``, :mod:`fedacq.node.commands`).

The client talks to the node's control endpoint, a unix socket in the node's
state directory (found through the same party.toml the node runs with), so only
the node's own operator — whoever can open that 0600 socket — can submit jobs.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable

import grpc

from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link._pb import fedacq_pb2_grpc as pb_grpc
from fedacq.node.jobs import FINAL, JobSpec


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
