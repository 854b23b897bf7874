"""The node daemon: ``fedacq node --config parties/<party>/party.toml`` (:mod:`fedacq.node.commands`).

One long-lived process per party. It owns the party's state directory (job
records and logs, the hash-chained ledgers ``egress.jsonl`` and ``ingress.jsonl``,
the node log), its key store and its MLflow store; it serves the peer link (mutual TLS, only the
configured peer's certificate) and a control endpoint for its own operator on a
unix socket (mode 0600, gRPC local credentials), which ``fedacq job`` talks to.

A job runs only when *both* nodes accept it. The operator's node checks it
first, then proposes it to the peer, which checks it against its own config:

* the protocol is in the node's ``[protocols] allow`` list and known to
  :data:`fedacq.node.protocols.PROTOCOLS`, with a role for this node;
* every data set the job names for this party is registered in the node's
  ``[datasets]`` (names only cross the link, never paths) and its file exists;
* the parameters satisfy the node's ``[policy]`` (:mod:`fedacq.node.policy`):
  the proposing node completes them from its own policy, the other node
  accepts them only if they are complete and nothing is weaker than its own;
* fewer than ``max_concurrent_jobs`` jobs are running, and the job id is new.

A refusal on either side leaves no job record on either side. The schemas of
every message of every allowed protocol are loaded when the node starts, so a
peer that is faster than this node never sends a message this node cannot yet
check. Every file the node writes is created under umask 0077 (its party's
alone, the control socket included). Accepted jobs run in a thread per job;
their state persists, and a restarted node marks jobs it was running as
interrupted (``fedacq job resume ID`` at the submitting node continues them)
and takes new ones. A job's heavy work (PSI blinding, encryption, histograms)
runs on the node's own compute engine (``[compute]``: :mod:`fedacq.compute`). With a
``[console]`` section the node also serves its read-only web console (:mod:`fedacq.console`),
started and stopped with it; the console only reads the state directory. Checkpoints stay in
the job's folder (this party's own disk, 0600; the lender's hold its Paillier key pair) until
the operator removes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import sys
import threading
import time
from concurrent import futures
from typing import Any

import grpc

from fedacq.compute import make_engine, using
from fedacq.link.grpc_link import GrpcLink, PeerEndpoint
from fedacq.link.ledger import PartyLedger
from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link._pb import fedacq_pb2_grpc as pb_grpc
from fedacq.node.config import NodeConfig, load_config
from fedacq.node.checkpoint import Checkpoints
from fedacq.node.jobs import JobSpec, JobStore, spec_from_json
from fedacq.node.protocols import JobContext, Protocol, load_protocol

#: AF_UNIX socket paths are limited to 107 bytes on Linux.
MAX_SOCKET_PATH = 107


class Node:
    """One party's node: peer link, control endpoint, job runner."""

    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        os.umask(0o077)  # state, keys, ledgers and the control socket are this party's alone
        try:
            self.protocols: dict[str, Protocol] = {name: load_protocol(name) for name in cfg.allow}
        except ValueError as exc:
            raise ValueError(f"{cfg.path}: [protocols] allow: {exc}") from None
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        cfg.keys_dir.mkdir(parents=True, exist_ok=True)
        socket = str(cfg.socket_path)
        if len(socket) > MAX_SOCKET_PATH:
            raise ValueError(f"{cfg.path}: control socket path {socket} is longer than {MAX_SOCKET_PATH} "
                             "bytes; set [node] control_socket to a shorter path")
        self.log = _node_logger(cfg)
        self.store = JobStore(cfg.state_dir)
        self.ledger = PartyLedger(cfg.state_dir, cfg.party)
        self.endpoint = PeerEndpoint(cfg.party, cfg.peer, cfg.tls, cfg.listen,
                                     on_propose=self._on_propose, logger=self.log)
        self.endpoint.connect(cfg.peer_address)
        self.control = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fedacq-ctl"))
        pb_grpc.add_NodeControlServicer_to_server(ControlServicer(self), self.control)
        if os.path.exists(socket):
            os.unlink(socket)  # left by a killed node; we own the state dir
        self.control.add_secure_port(f"unix:{socket}", grpc.local_server_credentials(grpc.LocalConnectionType.UDS))
        self._accept = threading.Lock()
        self._threads: dict[str, threading.Thread | None] = {}
        # this node's own compute engine ([compute] in party.toml; a Ray engine connects on first use,
        # so a node whose cluster is down starts and fails its first job with the reason)
        self.engine = make_engine(cfg.compute)
        self.console = _console(cfg, cfg.console, self.log) if cfg.console is not None else None

    def start(self) -> None:
        for job_id in self.store.recover():
            self.log.warning("job %s was running when the node stopped; marked interrupted", job_id)
        if self.console is not None:  # first: a console that cannot bind stops the node before it serves anything
            self.console.start()
        self.endpoint.start()
        self.control.start()
        self.log.info("node %s up: peer link on port %d (peer %s at %s), control on %s",
                      self.cfg.party, self.endpoint.port, self.cfg.peer, self.cfg.peer_address,
                      self.cfg.socket_path)

    def stop(self) -> None:
        if self.console is not None:
            self.console.stop()
        self.control.stop(1.0).wait()
        self.endpoint.stop()
        self.ledger.close()

    # -- admission ------------------------------------------------------
    def check(self, spec: JobSpec, proposed_by_peer: bool) -> JobSpec:
        """The job with its effective parameters; ValueError unless this node agrees to run it.

        A job this node proposes gets its missing parameters from this node's
        policy; a job the peer proposes must arrive complete, and is refused if
        this node's policy would change any value (it never weakens or fills
        one silently: both nodes must run the same parameters).
        """
        me = self.cfg.party
        protocol = self.protocols.get(spec.protocol)
        if protocol is None:
            raise ValueError(f"{me} does not allow protocol {spec.protocol!r} "
                             f"(allowed: {list(self.cfg.allow)}; see [protocols] allow in its party.toml)")
        if self.cfg.role not in protocol.roles:
            raise ValueError(f"protocol {spec.protocol!r} has no role {self.cfg.role!r} for {me}")
        strangers = sorted(set(spec.datasets) - {me, self.cfg.peer})
        if strangers:
            raise ValueError(f"job {spec.id!r} names data sets of {strangers}, who take no part in a job "
                             f"between {me} and {self.cfg.peer}")
        for logical, name in spec.datasets.get(me, {}).items():
            path = self.cfg.datasets.get(name)
            if path is None:
                raise ValueError(f"{me} has no registered data set {name!r} (job {spec.id!r} names it "
                                 f"as {logical!r}); register it under [datasets] in its party.toml")
            if not path.exists():
                self.log.warning("registered data set %r is missing its file %s", name, path)
                raise ValueError(f"{me}: registered data set {name!r} is missing its file")
        if spec.id in self._threads:
            raise ValueError(f"job {spec.id!r} is running at {me}")
        if spec.attempt == 0 and self.store.exists(spec.id):
            raise ValueError(f"job {spec.id!r} already exists at {me}")
        if spec.attempt > 0:
            self._check_resumable(spec)
        limit = self.cfg.policy.max_concurrent_jobs
        if len(self._threads) >= limit:
            raise ValueError(f"policy max_concurrent_jobs: {me} already runs {len(self._threads)} job(s), "
                             f"its limit is {limit}")
        params = protocol.resolve(dict(spec.params), self.cfg.policy)
        if proposed_by_peer:
            missing = sorted(set(params) - set(spec.params))
            changed = sorted(k for k in spec.params if k in params and _canonical(params[k]) != _canonical(spec.params[k]))
            if missing or changed:
                raise ValueError(f"{me} needs a complete job from {self.cfg.peer}: missing {missing}, "
                                 f"not in resolved form {changed}")
        return dataclasses.replace(spec, params=params)

    def _check_resumable(self, spec: JobSpec) -> None:
        """A resumption must be the job this node already agreed to, unchanged, and not running."""
        me = self.cfg.party
        try:
            record = self.store.get(spec.id)
        except ValueError:
            raise ValueError(f"{me} has no job {spec.id!r} to resume") from None
        if record["status"] not in ("interrupted", "failed"):
            raise ValueError(f"job {spec.id!r} is {record['status']} at {me}; only an interrupted or failed job resumes")
        agreed = record["spec"]
        for key in ("protocol", "datasets", "params", "initiator"):
            if _canonical(agreed[key]) != _canonical(getattr(spec, key)):
                raise ValueError(f"resuming job {spec.id!r}: its {key} differ from what {me} agreed to")
        if spec.attempt != agreed.get("attempt", 0) + 1:
            raise ValueError(f"resuming job {spec.id!r}: attempt {spec.attempt}, {me} expects "
                             f"{agreed.get('attempt', 0) + 1}")

    def resume(self, job_id: str) -> dict[str, Any]:
        """The operator's resumption of a job this node submitted: the next attempt, at both nodes."""
        record = self.store.get(job_id)
        agreed = record["spec"]
        if agreed["initiator"] != self.cfg.party:
            raise ValueError(f"job {job_id!r} was submitted by {agreed['initiator']}; resume it there")
        spec = spec_from_json(json.dumps({**agreed, "attempt": agreed.get("attempt", 0) + 1}),
                              f"job {job_id} at {self.cfg.party}")
        return self.submit(spec)

    def submit(self, spec: JobSpec) -> dict[str, Any]:
        """The operator's submission: check here, then at the peer, then run."""
        spec = dataclasses.replace(spec, initiator=self.cfg.party)
        with self._accept:
            spec = self.check(spec, proposed_by_peer=False)
            self._threads[spec.id] = None  # reserve the id while the peer decides
            link = self.endpoint.link(spec.link_name, self.ledger)
        try:
            decision = self.endpoint.client.propose(spec.to_json())
            if not decision.accepted:
                self.log.info("job %s refused by %s: %s", spec.id, self.cfg.peer, decision.reason)
                raise ValueError(f"{self.cfg.peer} refused job {spec.id!r}: {decision.reason}")
        except Exception:
            self.endpoint.release(spec.link_name)
            self._threads.pop(spec.id, None)
            raise
        return self._launch(spec, link)

    def _on_propose(self, text: str) -> tuple[bool, str]:
        try:
            spec = spec_from_json(text, f"job proposed by {self.cfg.peer}")
            if spec.initiator != self.cfg.peer:
                raise ValueError(f"job initiator {spec.initiator!r} is not the peer {self.cfg.peer!r}")
            with self._accept:
                spec = self.check(spec, proposed_by_peer=True)
                link = self.endpoint.link(spec.link_name, self.ledger)
                self._launch(spec, link)
        except ValueError as exc:
            self.log.warning("refused a job from %s: %s", self.cfg.peer, exc)
            return False, str(exc)
        except Exception as exc:  # noqa: BLE001 - whatever the peer sent, it gets a refusal, never a crash
            self.log.exception("refused a job from %s that could not be checked", self.cfg.peer)
            return False, f"{self.cfg.party} could not check the job ({type(exc).__name__}: {exc})"
        return True, "accepted"

    def _launch(self, spec: JobSpec, link: GrpcLink) -> dict[str, Any]:
        policy = dataclasses.asdict(self.cfg.policy)
        if spec.attempt == 0:
            record = self.store.create(spec, policy=policy)
        else:
            record = self.store.update(spec.id, spec=json.loads(spec.to_json()), policy=policy, status="submitted",
                                       error=None, result=None, finished=None)
        thread = threading.Thread(target=self._run, args=(spec, link), name=f"job-{spec.id}", daemon=True)
        self._threads[spec.id] = thread
        self.log.info("job %s (%s) accepted, initiated by %s", spec.id, spec.protocol, spec.initiator)
        thread.start()
        return record

    # -- running ----------------------------------------------------------
    def _run(self, spec: JobSpec, link: GrpcLink) -> None:
        job_dir = self.store.dir(spec.id)
        logger = logging.getLogger(f"fedacq.job.{self.cfg.party}.{spec.id}")
        logger.setLevel(logging.INFO)
        logger.propagate = False
        handler = logging.FileHandler(self.store.log_path(spec.id), encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        started = time.time()
        self.store.update(spec.id, status="running", started=started, progress=None)
        logger.info("%s runs %s as %s with peer %s%s", self.cfg.party, spec.protocol, self.cfg.role, self.cfg.peer,
                    f" (attempt {spec.attempt}: resuming from its checkpoints)" if spec.attempt else "")

        def progress(step: str, done: int, total: int | None = None) -> None:
            self.store.update(spec.id, progress=_progress(step, done, total, started, spec.attempt))
        try:
            protocol = self.protocols[spec.protocol]
            mine = spec.datasets.get(self.cfg.party, {})
            ctx = JobContext(
                party=self.cfg.party, role=self.cfg.role, peer=self.cfg.peer, job_id=spec.id, link=link,
                datasets={logical: self.cfg.datasets[name] for logical, name in mine.items()},
                params=dict(spec.params), work_dir=job_dir / "work", keys_dir=self.cfg.keys_dir,
                mlflow_store=self.cfg.mlflow, policy=self.cfg.policy, registered=dict(mine), logger=logger,
                checkpoints=Checkpoints(self.store.checkpoint_dir(spec.id)), resume=spec.attempt > 0,
                progress=progress)
            with using(self.engine):  # the job's heavy work runs on this node's engine, never the peer's choice
                result = protocol.roles[self.cfg.role](ctx)
            json.dumps(result, allow_nan=False)
        except Exception as exc:  # noqa: BLE001 - any protocol failure becomes the job's error
            logger.exception("job failed")
            self.store.update(spec.id, status="failed", finished=time.time(), error=f"{type(exc).__name__}: {exc}")
            self.log.warning("job %s failed: %s: %s", spec.id, type(exc).__name__, exc)
        else:
            logger.info("job succeeded")
            self.store.update(spec.id, status="succeeded", finished=time.time(), result=result)
            self.log.info("job %s succeeded", spec.id)
        finally:
            self.endpoint.release(spec.link_name)
            self._threads.pop(spec.id, None)
            logger.removeHandler(handler)
            handler.close()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _progress(step: str, done: int, total: int | None, started: float, attempt: int) -> dict[str, Any]:
    """What ``fedacq job status`` shows while a job runs: the step, how far, and an estimate of
    the time left from this attempt's pace (work a resumed attempt skipped is not counted)."""
    out: dict[str, Any] = {"step": step, "done": done, "total": total, "attempt": attempt,
                           "updated": time.time()}
    if total and done:
        out["eta_seconds"] = round((time.time() - started) / done * max(total - done, 0), 1)
    return out


class ControlServicer(pb_grpc.NodeControlServicer):
    """The operator's endpoint (local unix socket only)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def ResumeJob(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.JobDocument:
        try:
            record = self.node.resume(request.id)
        except (ValueError, RuntimeError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.JobDocument(json=json.dumps(record))

    def SubmitJob(self, request: pb.JobDocument, context: grpc.ServicerContext) -> pb.JobDocument:
        try:
            record = self.node.submit(spec_from_json(request.json, "submitted job"))
        except (ValueError, RuntimeError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        return pb.JobDocument(json=json.dumps(record))

    def GetJob(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.JobDocument:
        try:
            return pb.JobDocument(json=json.dumps(self.node.store.get(request.id)))
        except ValueError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))

    def GetLogs(self, request: pb.JobRef, context: grpc.ServicerContext) -> pb.LogChunk:
        try:
            self.node.store.get(request.id)
            path = self.node.store.log_path(request.id)
        except ValueError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return pb.LogChunk(text=path.read_text(encoding="utf-8") if path.exists() else "")

    def Health(self, request: pb.PingRequest, context: grpc.ServicerContext) -> pb.PingReply:
        return pb.PingReply(party=self.node.cfg.party, job_known=False)


def _console(cfg: NodeConfig, settings: Any, log: logging.Logger) -> Any:
    """The node's console (:mod:`fedacq.console`) on ``settings``, reading this node's state; not yet started."""
    from fedacq.console.server import console_for

    return console_for(cfg, settings, log)


def _node_logger(cfg: NodeConfig) -> logging.Logger:
    logger = logging.getLogger(f"fedacq.node.{cfg.party}")
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        fmt = logging.Formatter(f"%(asctime)s {cfg.party} %(levelname)s %(message)s")
        for handler in (logging.FileHandler(cfg.state_dir / "node.log", encoding="utf-8"),
                        logging.StreamHandler(sys.stderr)):
            handler.setFormatter(fmt)
            logger.addHandler(handler)
    return logger


def serve(config_path: str) -> int:
    """Run the node of ``config_path`` until SIGTERM or SIGINT, then stop it cleanly."""
    node = Node(load_config(config_path))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    print(f"fedacq node {node.cfg.party} ready", flush=True)
    stop.wait()
    node.log.info("stopping")
    node.stop()
    return 0
