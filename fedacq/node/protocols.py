"""The node's protocol registry: which protocols a job may run, and the contract.

Contract for a protocol that nodes can run
------------------------------------------
A protocol module defines a module-level :class:`Protocol` value and adds one
line to :data:`PROTOCOLS` below (``"name": "module.path:ATTRIBUTE"``; modules
are imported only when a job uses them, so a heavy or optional dependency never
slows a node down). A :class:`Protocol` has one entry function per role::

    PROTOCOL = Protocol("echo", roles={"lender": run_lender, "platform": run_platform},
                        description="...")

    def run_lender(ctx: JobContext) -> dict: ...

Each node calls the function of its own configured role (``[node] role``,
by default the party name) in a thread of its own, with a :class:`JobContext`:

* ``ctx.link`` — the :class:`~fedacq.link.link.Link` to the peer, already
  connected, bound to this job and writing the node's egress ledger. Use it
  exactly like a memory link: ``send`` / ``recv(expected_type, timeout)``.
  One thread per job talks through it.
* ``ctx.datasets`` — ``{logical name: Path}``: the data sets the job names for
  this party (``[datasets.<party>]`` in JOB.toml), resolved through the node's
  own registry. A protocol reads only these; the peer can never name a path.
* ``ctx.params`` — the job's effective ``[params]`` (resolved against both
  nodes' policies, JSON-able; both sides see the same params, so never put a
  secret in them).
* ``ctx.policy`` — this node's own :class:`~fedacq.node.policy.Policy`.
* ``ctx.registered`` — ``{logical name: registered name}`` of ``ctx.datasets``:
  names this node chose itself, safe to key its own caches by.
* ``ctx.checkpoints`` — this party's :class:`~fedacq.node.checkpoint.Checkpoints`
  for the job; ``ctx.resume`` is true when the job runs again after an
  interruption (``fedacq job resume``) and should continue from the last
  checkpoint both parties hold.
* ``ctx.progress(step, done, total)`` — report progress (``fedacq job status``
  shows it with an estimate of the time left).
* ``ctx.work_dir`` — an empty directory for this job's outputs (models, scores).
* ``ctx.keys_dir`` — the node's key store; ``ctx.mlflow_store`` — the node's
  MLflow store (pass it to :class:`fedacq.track.PartyRun`).
* ``ctx.logger`` — writes to the job's log (``fedacq job logs ID``).

The function returns a JSON-able dict: the job's result as this party sees it
(``fedacq job status ID``). Raising marks the job failed with the exception's
message; the peer learns only that the job stopped (its link raises).

Two more fields make a protocol safe to accept from a peer:

* ``resolve(params, policy)`` returns the job's complete parameters: every
  parameter the proposal leaves out filled from the node's own
  :class:`~fedacq.node.policy.Policy`, unknown names refused, and each value
  checked against that policy (:class:`~fedacq.node.policy.PolicyError`
  names the key, the proposed and the allowed value). The proposing node sends
  the resolved parameters; the other node accepts them only if resolving them
  against its own policy changes nothing.
* ``messages``: the modules whose import registers every message type the
  protocol sends. A node imports them for every protocol it allows when it
  starts, so a message never arrives before its schema, however much faster
  the peer is (the protocol's own entry functions may import lazily).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from fedacq.link.link import Link
from fedacq.node.checkpoint import Checkpoints
from fedacq.node.policy import Policy


@dataclass
class JobContext:
    """Everything one party's side of a job may use."""

    party: str
    role: str
    peer: str
    job_id: str
    link: Link
    datasets: dict[str, Path]
    params: dict[str, Any]
    work_dir: Path
    keys_dir: Path
    mlflow_store: str
    policy: Policy = field(default_factory=Policy)
    registered: dict[str, str] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("fedacq.job"))
    checkpoints: Checkpoints | None = None
    resume: bool = False
    progress: Callable[[str, int, int | None], None] = lambda step, done, total=None: None


RoleFunction = Callable[[JobContext], dict[str, Any]]
ParamResolver = Callable[[dict[str, Any], Policy], dict[str, Any]]


@dataclass(frozen=True)
class Protocol:
    """A protocol a node can run: its entry functions, parameter resolver and message modules."""

    name: str
    roles: Mapping[str, RoleFunction]
    resolve: ParamResolver
    messages: tuple[str, ...] = ()
    description: str = ""


#: protocol name -> "module:attribute" of its :class:`Protocol`.
PROTOCOLS: dict[str, str] = {
    "echo": "fedacq.node.echo:PROTOCOL",
    "psi": "fedacq.psi.node_protocol:PROTOCOL",
    "run": "fedacq.learn.run_node:PROTOCOL",
    "measure": "fedacq.measure.node_protocol:PROTOCOL",
    "campaign": "fedacq.campaign.protocol:AGREE",
    "campaign_publish": "fedacq.campaign.protocol:PUBLISH",
    "campaign_rollback": "fedacq.campaign.protocol:ROLLBACK",
}


def load_protocol(name: str) -> Protocol:
    """Import and return the registered protocol ``name`` (ValueError if unknown)."""
    target = PROTOCOLS.get(name)
    if target is None:
        raise ValueError(f"unknown protocol {name!r}; registered: {sorted(PROTOCOLS)}")
    module, _, attr = target.partition(":")
    protocol = getattr(importlib.import_module(module), attr)
    if not isinstance(protocol, Protocol) or protocol.name != name:
        raise ValueError(f"{target} is not the Protocol {name!r}")
    for messages in protocol.messages:
        importlib.import_module(messages)
    return protocol
