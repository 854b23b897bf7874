"""Where the pipeline's cross-party steps run: two node processes, or two threads over memory links.

A step that crosses between the parties is one node job: the JOB.toml document
(``{"job": {"protocol", "id"}, "datasets": {party: {logical: registered}},
"params": {...}}``) that an operator would submit with ``fedacq job submit``.
:meth:`Parties.run` runs it and returns each party's result, or raises naming
the party whose side failed and why.

* :class:`NodeParties` (``transport="grpc"``): two ``fedacq node`` processes on
  127.0.0.1 with mutual TLS, started once (:func:`fedacq.node.local.start_local_pair`)
  with every data set the run will use registered, and every job submitted at
  the lender's node. Each node checks the job against its own policy.
* :class:`SiteParties`: one operator's own node only (``fedacq campaign run``): jobs are
  submitted there and only its own record is read, so a step returns this party's result alone.
* :class:`InProcessParties` (``transport="inproc"``): the same protocol's role
  functions in two threads over :func:`fedacq.link.memory.memory_pair`, after the
  same parameter resolution against each party's policy. For tests and quick runs.

Both lay each party's files out the way a node does, under ``root/<party>/``:
job records and outputs in ``state/jobs/<id>/`` (``job.json``, ``work/``), ledgers
in ``state/``, the MLflow store in ``mlruns/``, keys in ``keys/``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any, Iterator

LENDER, PLATFORM = "lender", "platform"
PARTIES = (LENDER, PLATFORM)
TRANSPORTS = ("grpc", "inproc")

#: a job may run for hours; the pipeline waits for it, not for a link timeout.
JOB_TIMEOUT = 7 * 24 * 3600.0


def one_operator_policy(key_bits: int, insecure_test_key: bool, min_intersection: int) -> dict[str, Any]:
    """``[policy]`` of both nodes when one operator runs both (demo, experiments): the run's own settings.

    A test key needs both nodes in test mode and their key floor at its size.
    """
    policy: dict[str, Any] = {"min_intersection": min_intersection, "test_mode": insecure_test_key}
    if insecure_test_key:
        policy["min_key_bits"] = key_bits
    return policy


class Parties:
    """Runs node jobs between a lender and a platform; see the module docstring."""

    transport: str

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()

    def store(self, party: str) -> str:
        """The party's MLflow store (its node's)."""
        return str(self.root / party / "mlruns")

    def run(self, job: dict[str, Any], progress: bool = False) -> dict[str, dict[str, Any]]:
        """Run one job to the end; ``{party: result}``. ``progress`` echoes the lender's job log."""
        raise NotImplementedError


def _failures(errors: dict[str, str], job_id: str) -> RuntimeError:
    text = "; ".join(f"the {party}'s side failed: {error}" for party, error in errors.items())
    return RuntimeError(f"job {job_id}: {text}")


class NodeParties(Parties):
    """Jobs between two running ``fedacq node`` processes (a :class:`~fedacq.node.local.LocalPair`)."""

    transport = "grpc"

    def __init__(self, root: Path, pair: Any) -> None:
        super().__init__(root)
        self.pair = pair

    def run(self, job: dict[str, Any], progress: bool = False) -> dict[str, dict[str, Any]]:
        job_id = self.pair.submit(job, party=LENDER, wait=False)["id"]
        records = {}
        for party in PARTIES:
            client = self.pair.client(party)
            follow = (lambda line, p=party: print(f"[{p} node] {line}", file=sys.stderr, flush=True)) \
                if progress and party == LENDER else None
            try:
                records[party] = client.wait(job_id, timeout=JOB_TIMEOUT, on_log=follow)
            finally:
                client.close()
        errors = {p: r.get("error") for p, r in records.items() if r["status"] != "succeeded"}
        if errors:
            raise _failures(errors, job_id)
        return {p: r["result"] for p, r in records.items()}


class SiteParties(Parties):
    """Jobs submitted at ONE operator's own node (``fedacq campaign run``, and the campaign demo's
    lender): it waits on that node's record only and never reads the peer's, so ``run`` returns
    ``{party: result}`` of this party alone. ``config`` is the node's party.toml."""

    transport = "grpc"

    def __init__(self, config: str | Path) -> None:
        from fedacq.node.config import load_config

        self.config = load_config(config)
        super().__init__(self.config.state_dir)
        self.party = self.config.party

    def store(self, party: str) -> str:
        """This node's MLflow store; the peer's is the peer's (empty here)."""
        return self.config.mlflow if party == self.party else ""

    def run(self, job: dict[str, Any], progress: bool = False) -> dict[str, dict[str, Any]]:
        from fedacq.node.control import ControlClient
        from fedacq.node.jobs import parse_job

        client = ControlClient(self.config.socket_path)
        follow = (lambda line: print(f"[{self.party} node] {line}", file=sys.stderr, flush=True)) \
            if progress else None
        try:
            job_id = client.submit(parse_job(job, "job"))["id"]
            record = client.wait(job_id, timeout=JOB_TIMEOUT, on_log=follow)
        finally:
            client.close()
        if record["status"] != "succeeded":
            raise _failures({self.party: record.get("error")}, job_id)
        return {self.party: record["result"]}


class InProcessParties(Parties):
    """Jobs as two threads of this process over memory links, each party with its own policy and folders."""

    transport = "inproc"

    def __init__(self, root: Path, datasets: dict[str, dict[str, Path]], policy: dict[str, dict[str, Any]]) -> None:
        from fedacq.link.ledger import PartyLedger
        from fedacq.node.policy import load_policy

        super().__init__(root)
        self.datasets = {p: {name: Path(path) for name, path in datasets.get(p, {}).items()} for p in PARTIES}
        self.policies = {p: load_policy(policy.get(p), f"{p} policy", p) for p in PARTIES}
        for party in PARTIES:
            (self.root / party / "keys").mkdir(parents=True, exist_ok=True)
        self.ledgers = {p: PartyLedger(self.root / p / "state", p) for p in PARTIES}

    def close(self) -> None:
        for ledger in self.ledgers.values():
            ledger.close()

    def _paths(self, spec: Any, party: str) -> dict[str, Path]:
        """The job's data sets for ``party``, looked up in that party's registry (names only, as a node does)."""
        out = {}
        for logical, name in spec.datasets.get(party, {}).items():
            path = self.datasets[party].get(name)
            if path is None:
                raise ValueError(f"{party} has no registered data set {name!r} (job {spec.id!r} names it "
                                 f"as {logical!r})")
            if not path.exists():
                raise ValueError(f"{party}: registered data set {name!r} is missing its file {path}")
            out[logical] = path
        return out

    def run(self, job: dict[str, Any], progress: bool = False) -> dict[str, dict[str, Any]]:
        from fedacq.link.memory import memory_pair, run_parties
        from fedacq.node.jobs import JobStore, parse_job
        from fedacq.node.protocols import JobContext, load_protocol
        from fedacq.paths import under

        spec = parse_job(job, "job")
        protocol = load_protocol(spec.protocol)
        params = protocol.resolve(dict(spec.params), self.policies[LENDER])
        if protocol.resolve(dict(params), self.policies[PLATFORM]) != params:
            raise ValueError(f"job {spec.id}: the platform's policy would change the lender's parameters")
        datasets = {party: self._paths(spec, party) for party in PARTIES}
        work_dirs = {party: under(self.root / party / "state", "jobs", spec.id, "work") for party in PARTIES}
        for party, work_dir in work_dirs.items():
            if work_dir.exists():
                raise ValueError(f"job {spec.id!r} already exists at {party}")
        # each party's job record, as its node keeps it (a later job may name this one, e.g. xgb_model)
        stores = {party: JobStore(self.root / party / "state") for party in PARTIES}
        agreed = dataclasses.replace(spec, params=dict(params), initiator=LENDER)
        for party in PARTIES:
            stores[party].create(agreed, dataclasses.asdict(self.policies[party]))
            stores[party].update(spec.id, status="running", started=time.time())
        links = dict(zip(PARTIES, memory_pair(LENDER, PLATFORM, job=spec.id, ledgers=self.ledgers)))
        contexts, handlers = {}, []
        for party, peer in (PARTIES, PARTIES[::-1]):
            work_dirs[party].mkdir(parents=True, exist_ok=True)
            logger = logging.getLogger(f"fedacq.job.{party}.{spec.id}")
            logger.setLevel(logging.INFO)
            logger.propagate = False
            outputs = [logging.FileHandler(work_dirs[party].parent / "job.log", encoding="utf-8")]
            if progress and party == LENDER:
                outputs.append(logging.StreamHandler(sys.stderr))
            for handler in outputs:
                handler.setFormatter(logging.Formatter(f"%(asctime)s {party} %(message)s"))
                logger.addHandler(handler)
                handlers.append((logger, handler))
            contexts[party] = JobContext(
                party=party, role=party, peer=peer, job_id=spec.id, link=links[party],
                datasets=datasets[party], params=dict(params), work_dir=work_dirs[party],
                keys_dir=self.root / party / "keys", mlflow_store=self.store(party),
                policy=self.policies[party], registered=dict(spec.datasets.get(party, {})), logger=logger)
        def side(party: str) -> dict[str, Any]:
            try:
                result = protocol.roles[party](contexts[party])
            except Exception as exc:
                stores[party].update(spec.id, status="failed", finished=time.time(),
                                     error=f"{type(exc).__name__}: {exc}")
                raise _failures({party: f"{type(exc).__name__}: {exc}"}, spec.id) from exc
            stores[party].update(spec.id, status="succeeded", finished=time.time(), result=result)
            return result

        try:
            results = run_parties(*((side, p) for p in PARTIES), timeout=JOB_TIMEOUT)
        finally:
            for logger, handler in handlers:
                logger.removeHandler(handler)
                handler.close()
        return dict(zip(PARTIES, results))


@contextlib.contextmanager
def start_parties(transport: str, root: str | Path, datasets: dict[str, dict[str, Path]],
                  policy: dict[str, dict[str, Any]],
                  sections: dict[str, dict[str, dict[str, Any]]] | None = None) -> Iterator[Parties]:
    """The two parties for a run under ``root``: ``datasets[party]`` is that party's registry
    (name -> file; files may appear later, before the job that names them), ``policy[party]``
    its ``[policy]`` table, ``sections[party]`` more tables of a node's party.toml (``grpc``
    only: ``[console]``, ``[campaigns]``). Nodes (``grpc``) are stopped on exit."""
    if transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r}; use one of {', '.join(TRANSPORTS)}")
    root = Path(root).resolve()
    if transport == "inproc":
        parties = InProcessParties(root, datasets, policy)
        try:
            yield parties
        finally:
            parties.close()
        return
    from fedacq.node.local import start_local_pair

    with start_local_pair(root, datasets={p: {k: Path(v).resolve() for k, v in datasets.get(p, {}).items()}
                                          for p in PARTIES}, policy=policy, sections=sections) as pair:
        yield NodeParties(root, pair)
