"""PSI as a node protocol: each node aligns its own data set with its peer's.

Steps and what each party learns: as in :mod:`fedacq.psi.ecdh_psi` (this module only
reads the data set, calls :func:`~fedacq.psi.psi_lender` / :func:`~fedacq.psi.psi_platform`
and writes the result).

Params (``[params]`` in JOB.toml, seen by both sides): ``dataset`` (logical data-set
name, default ``"ids"``), ``id_columns`` (lender's columns, priority order),
``platform_id_columns`` (the platform's names, default the same), ``reveal_to``
(``"both"``), ``min_intersection`` (the proposing node's policy), ``duplicates``
(``"first"``), ``mode`` (``"balanced"`` or ``"unbalanced"``: the platform keeps its
blinded set in ``keys_dir/psi_cache/<registered data-set name>`` — a name its own
config chose, never one from the job — and the lender its copy in
``keys_dir/psi_platform_sets/<peer>/<dataset>/current``: the peer's name from its own
config and the job's checked data-set name, never anything the platform sent), ``incremental`` (false;
with ``mode = "unbalanced"`` only: the platform updates its cache in place when its
table changed and sends the lender only what changed since the copy the lender holds —
see :mod:`fedacq.psi.cache` for when it rebuilds with a fresh key instead, and
:mod:`fedacq.psi.ecdh_psi` for how both sides agree on what crosses).

Policy (:mod:`fedacq.node.policy`): ``psi_modes``, ``reveal_to`` and
``min_intersection`` of each node. Each side also checks before any blinding
that its own set can reach the minimum, and the platform refuses a
``psi.hello`` whose mode or ``reveal_to`` differ from the agreed job.

Output: ``work_dir/intersection.parquet`` (:data:`OUTPUT`: this side's ``row`` numbers and id
values in the shared order) and the stats as the job result, with ``transfer`` (``none``, ``delta``,
``full``, ``balanced``), ``ids_blinded`` (own ids hashed and blinded in this job: the
platform's cache build or update), ``set_points_sent`` / ``set_points_received`` and
``set_tokens_removed``, and at the platform ``cache`` (action, generation, increments).

For a later ``run`` job that trains on this result (its ``psi_job``, :mod:`fedacq.learn.run_node`)
the result also holds ``order_digest`` and ``ids_digest``. ``order_digest`` is the sha256 of the
``psi.result`` message (the intersection size and, with ``reveal_to = "both"``, the platform's
tokens and matched columns in the shared order), as :func:`fedacq.link.ledger.payload_digest`
computes it: the lender sent that message and the platform received it, so both hold the same
digest of the aligned order without either learning anything new, and two nodes naming results of
different PSI runs see different digests. ``ids_digest`` (:func:`ids_digest`, per id column of this
side) lets this node tell later whether its table still has exactly the ids, in the same rows, that
the row numbers refer to. Both stay in this node's own job record.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd

from fedacq.link.ledger import payload_digest
from fedacq.link.link import Link, PassThroughLink
from fedacq.link.message import Message
from fedacq.node.policy import Policy, PolicyError, complete
from fedacq.node.protocols import JobContext, Protocol
from fedacq.paths import check_name, under

DUPLICATES = ("first", "drop", "error")
#: this side's rows of the intersection in the shared order, in the job's work directory.
OUTPUT = "intersection.parquet"
#: ids per hashed slice in :func:`ids_digest` (part of the digest's definition: both uses must agree).
_IDS_PER_SLICE = 65536


def ids_digest(ids: pd.Series) -> str:
    """sha256 of an id column as read from the table, in row order (each id as a JSON string).

    The psi job records it per id column; a run job naming that psi job recomputes it over the
    table it loads, so row ``i`` of the intersection is the same id now as when it was aligned,
    and no id came or went since (the intersection would then be incomplete). Hashed a slice of
    ids at a time: a user base of 10M ids never becomes one string."""
    h = hashlib.sha256(b"fedacq/psi/ids/v1")
    values = ids.tolist()
    for start in range(0, len(values), _IDS_PER_SLICE):
        text = json.dumps([str(v) for v in values[start:start + _IDS_PER_SLICE]], ensure_ascii=False)
        h.update(text.encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def resolve(params: dict[str, Any], policy: Policy) -> dict[str, Any]:
    """PSI's complete parameters, checked against ``policy`` (see the module docstring)."""
    defaults = {"dataset": "ids", "id_columns": None, "platform_id_columns": None,
                "reveal_to": "both" if "both" in policy.reveal_to else policy.reveal_to[0],
                "min_intersection": policy.min_intersection, "duplicates": "first", "mode": "balanced",
                "incremental": False}
    out = complete(params, defaults, "psi")
    try:
        check_name(out["dataset"], "psi: dataset")
    except ValueError as exc:
        raise PolicyError(str(exc)) from None
    for key in ("id_columns", "platform_id_columns"):
        value = out[key]
        if value is None and key == "platform_id_columns":
            continue
        if not isinstance(value, list) or not value or not all(isinstance(c, str) and c for c in value):
            raise PolicyError(f"psi: {key} must be a non-empty list of column names, got {value!r}")
    if out["duplicates"] not in DUPLICATES:
        raise PolicyError(f"psi: duplicates must be one of {list(DUPLICATES)}, got {out['duplicates']!r}")
    policy.one_of("psi_modes", "mode", out["mode"])
    if not isinstance(out["incremental"], bool):
        raise PolicyError(f"psi: incremental must be true or false, got {out['incremental']!r}")
    if out["incremental"] and out["mode"] != "unbalanced":
        raise PolicyError("psi: incremental = true needs mode = \"unbalanced\" (only the platform's cache is reused)")
    policy.one_of("reveal_to", "reveal_to", out["reveal_to"])
    if not isinstance(out["min_intersection"], int) or isinstance(out["min_intersection"], bool):
        raise PolicyError(f"psi: min_intersection must be an integer, got {out['min_intersection']!r}")
    policy.at_least("min_intersection", "min_intersection", out["min_intersection"])
    return out


def _table(ctx: JobContext, columns: list[str]):
    from fedacq.psi.commands import _read

    name = ctx.params["dataset"]
    if name not in ctx.datasets:
        raise ValueError(f"psi: the job names no data set {name!r} for {ctx.party} "
                         f"(has {sorted(ctx.datasets)})")
    table = _read(Path(ctx.datasets[name]), columns)
    if len(table) < ctx.params["min_intersection"]:
        raise ValueError(f"psi: {ctx.party}'s data set {ctx.registered.get(name, name)!r} has {len(table)} rows, "
                         f"fewer than the minimum intersection of {ctx.params['min_intersection']}")
    return name, table


class _ResultDigest(PassThroughLink):
    """A side's link during PSI, keeping the :func:`~fedacq.link.ledger.payload_digest`
    of the ``psi.result`` that crosses it (the module docstring's ``order_digest``)."""

    def __init__(self, link: Link) -> None:
        super().__init__(link)
        self.digest = ""

    def _outgoing(self, msg: Message) -> None:
        if msg.type == "psi.result":
            self.digest = payload_digest(msg)[0]

    _incoming = _outgoing


def _finish(ctx: JobContext, table, columns: list[str], result, link: _ResultDigest) -> dict[str, Any]:
    from fedacq.psi.commands import _intersection_table, _write

    out = ctx.work_dir / OUTPUT
    _write(_intersection_table(table, result.rows, columns, result.matched_on), out)
    ctx.logger.info("psi: intersection %d, written to %s", result.size, out)
    return {"intersection": result.size, "output": str(out), "stats": result.stats,
            "order_digest": link.digest, "ids_digest": {c: ids_digest(table[c]) for c in columns}}


def run_lender(ctx: JobContext) -> dict[str, Any]:
    from fedacq.psi import LenderSetStore, psi_lender

    p = ctx.params
    columns = list(p["id_columns"])
    _, table = _table(ctx, columns)
    link = _ResultDigest(ctx.link)
    result = psi_lender(link, table, columns, mode=p["mode"], reveal_to=p["reveal_to"],
                        min_intersection=p["min_intersection"], duplicates=p["duplicates"],
                        incremental=p["incremental"],
                        set_store=LenderSetStore(under(ctx.keys_dir, "psi_platform_sets", ctx.peer, p["dataset"])))
    return _finish(ctx, table, columns, result, link)


def run_platform(ctx: JobContext) -> dict[str, Any]:
    from fedacq.psi import PlatformCache, psi_platform

    p = ctx.params
    columns = list(p["platform_id_columns"] or p["id_columns"])
    name, table = _table(ctx, columns)
    cache, report = None, None
    if p["mode"] == "unbalanced":
        # keyed by the name this node registered the data set under, never the job's logical name
        cache, report = PlatformCache.serve(under(ctx.keys_dir, "psi_cache", ctx.registered[name]), table,
                                            columns, duplicates=p["duplicates"], incremental=p["incremental"],
                                            max_increments=ctx.policy.psi_cache_max_increments,
                                            max_age_days=ctx.policy.psi_cache_max_age_days)
        ctx.logger.info("psi: cache %s (generation %s, %d increments, %d ids blinded)", report["action"],
                        report["generation"], report["increments"], report["ids_blinded"])
    link = _ResultDigest(ctx.link)
    result = psi_platform(link, table, columns, cache=cache, min_intersection=p["min_intersection"],
                          duplicates=p["duplicates"], expect={"mode": p["mode"], "reveal_to": p["reveal_to"],
                                                              "incremental": p["incremental"]})
    if report is not None:
        result.stats["ids_blinded"] = report["ids_blinded"]
        result.stats["cache"] = report
    return _finish(ctx, table, columns, result, link)


PROTOCOL = Protocol("psi", roles={"lender": run_lender, "platform": run_platform}, resolve=resolve,
                    messages=("fedacq.psi.ecdh_psi",), description="ECDH-PSI alignment of the two parties' id columns")
