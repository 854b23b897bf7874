"""The boost service: gRPC look-ups of (boost, bucket, arm, table version) for batches of users.

Why hot reload by reference swap: bidding calls this service continuously, so a new table
version cannot be loaded by stopping it. A new version is read, validated (manifest,
checksum, columns, duplicates, expiry, allocation) and indexed *off to the side*, in the
thread that asked for it (the ``Reload`` RPC) or in the directory watcher; only when that
succeeded is the registry's campaign -> look-up mapping replaced by a new dict in one
assignment. A request that already fetched the old look-up finishes on it; the next one
sees the new version; none fails. A table that fails validation is refused with its error
(``Reload`` returns FAILED_PRECONDITION, the watcher records it in ``Status``) and the last
good version keeps being served.

Who may do what. The service answers membership questions about the platform's users and
decides the bids, so every call is authorised by the caller's name and role:

* with mutual TLS (``--tls-dir``), the name is the common name of the client certificate,
  which must chain to the CA in ``--tls-dir`` (the platform's own CA in the per-party
  layout of ``fedacq certs``); ``--allow NAME=ROLE[,ROLE]`` lists who may call and as what:
  ``lookup`` (the bidding engine: ``Lookup``) or ``admin`` (the operator: ``Reload``,
  ``Rollback``). Both roles may call ``Status``. A name not listed gets PERMISSION_DENIED on
  every RPC; there is no default allowlist with TLS;
* plaintext is allowed on loopback only, where callers have no certificate: every caller is
  named ``loopback`` and has the roles given to that name (default ``lookup,admin``;
  ``--allow loopback=lookup`` takes admin away).

Versions only move forward. A table is newer than another if its manifest's ``created_at``
is later; ``Reload`` and the watcher refuse anything not newer than what is served for its
campaign. ``Reload`` takes a table *name*: a path relative to the served root
(``--tables``), e.g. ``camp/v2``, resolved and checked to lie under the root (a symlink out
of it is refused). The only way back is ``Rollback`` (``fedacq boosts rollback --to
VERSION``, admin only): it serves an older version found under the root and is logged at
WARNING with the caller's name. A rollback lasts until a newer table is loaded or the
service restarts (the start-up scan serves the newest valid table: move a bad version out
of the tree to retire it for good).

A bad manifest (not JSON, not an object, missing or mistyped keys, a checksum that does not
match) is logged, kept in ``Status`` errors and skipped; it never stops a scan, the
start-up scan included, and a valid table in the same pass still loads.

The loader does its heavy work in Arrow kernels and whole-array numpy operations, which
release the GIL for most of their time (validation, and the hash index of ``lookup.py``),
and the serving process lowers the interpreter switch interval, so request threads are not
stalled for long while a large table loads (1 M users: 0.8 s on a quiet machine, measured
mid-run in ``benchmarks/boost_service.py``). After the start-up load the process freezes
what it holds for the garbage collector (``gc.freeze``), so the full collections that
requests' allocations trigger do not walk the modules and tables on the request path.

Expired tables: past its expiry a table is still used for buckets, but every boost is 1.0
and responses say ``expired``; stale bids are worse than no boost.

``Rollback`` is served as ``/fedacq.activate.BoostService/Rollback`` with a
``google.protobuf.StringValue`` (the version) in and a ``ReloadResponse`` out; it is not
yet declared in ``protocols/boost.proto``.
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
from google.protobuf import wrappers_pb2

from fedacq.activate._pb import boost_pb2 as pb
from fedacq.activate._pb import boost_pb2_grpc as pb_grpc
from fedacq.activate.lookup import BoostLookup
from fedacq.activate.table import MANIFEST_FILE, BoostTable, BoostTableError, parse_time, read_manifest
from fedacq.crypto.tls import TlsFiles, channel_credentials, peer_common_name, server_credentials

log = logging.getLogger(__name__)

#: the largest batch a single Lookup may carry (bounds per-request work and memory).
MAX_BATCH = 10_000
_MAX_MESSAGE = 16 * 1024 * 1024
SERVICE = pb.DESCRIPTOR.services_by_name["BoostService"].full_name

#: roles a client can hold: ``lookup`` asks for boosts (bidding), ``admin`` loads and rolls back tables.
ROLES = ("lookup", "admin")
#: the name of every caller of a plaintext (loopback-only) server, which has no certificate.
LOOPBACK = "loopback"
_CLIENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_TABLE_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_MAX_TABLE_DEPTH = 8
_MAX_VERSION_CHARS = 256


class TableNameError(ValueError):
    """A Reload names no table under the served root (bad name, or it resolves outside)."""


class VersionOrderError(ValueError):
    """A load that would move a campaign's version backward, or a rollback that would not."""


def parse_allow(entries: Iterable[str]) -> dict[str, frozenset[str]]:
    """``["bidder=lookup", "ops=admin,lookup"]`` -> name -> roles; a name given twice gets both."""
    allow: dict[str, set[str]] = {}
    for entry in entries:
        name, sep, roles = entry.partition("=")
        name = name.strip()
        wanted = {r.strip() for r in roles.split(",") if r.strip()}
        if not sep or not _CLIENT_NAME.match(name) or not wanted:
            raise ValueError(f"--allow {entry!r}: expected NAME=ROLE[,ROLE] with roles from {list(ROLES)}")
        unknown = wanted - set(ROLES)
        if unknown:
            raise ValueError(f"--allow {entry!r}: unknown role(s) {sorted(unknown)}; roles are {list(ROLES)}")
        allow.setdefault(name, set()).update(wanted)
    return {name: frozenset(roles) for name, roles in allow.items()}


def check_allow(allow: dict[str, frozenset[str]] | None, tls: bool) -> dict[str, frozenset[str]]:
    """The allowlist a server runs with: explicit under TLS; ``loopback`` only without."""
    for name, roles in (allow or {}).items():
        if not roles or not set(roles) <= set(ROLES):
            raise ValueError(f"boost service: client {name!r} has roles {sorted(roles)}; roles are {list(ROLES)}")
    if tls:
        if not allow:
            raise ValueError("boost service: mutual TLS needs an allowlist of client certificate names, "
                             "e.g. --allow bidder=lookup --allow ops=admin")
        if LOOPBACK in allow:
            raise ValueError(f"boost service: {LOOPBACK!r} names plaintext callers; with TLS list certificate names")
        return dict(allow)
    if allow is None:
        return {LOOPBACK: frozenset(ROLES)}
    others = sorted(set(allow) - {LOOPBACK})
    if others:
        raise ValueError(f"boost service: without TLS callers have no certificate, so {others} can never match; "
                         f"every caller is {LOOPBACK!r} (e.g. --allow {LOOPBACK}=lookup)")
    return dict(allow)


class BoostRegistry:
    """campaign -> current ``BoostLookup``; readers take one reference, writers swap the mapping.

    ``root`` is the served tree: ``Reload`` names tables relative to it, ``Rollback`` and the
    watcher look for versions in it.
    """

    def __init__(self, root: str | Path | None = None, max_errors: int = 20) -> None:
        self.root = Path(root).resolve() if root is not None else None
        self._tables: dict[str, BoostLookup] = {}
        self._loaded_at: dict[str, str] = {}
        self._write = threading.Lock()
        self.errors: deque[str] = deque(maxlen=max_errors)

    def get(self, campaign: str) -> BoostLookup | None:
        return self._tables.get(campaign)

    def campaigns(self) -> dict[str, BoostLookup]:
        return dict(self._tables)

    def loaded_at(self, campaign: str) -> str:
        return self._loaded_at.get(campaign, "")

    def refuse(self, message: str) -> None:
        """Record a table that was not served (``Status`` errors) and log it."""
        self.errors.append(message)
        log.warning("refused: %s", message)

    def inside_root(self, path: Path) -> bool:
        return self.root is not None and path.resolve().is_relative_to(self.root)

    def table_dir(self, name: str) -> Path:
        """The table directory ``name`` (relative to the root) names, resolved and checked to lie under it."""
        if self.root is None:
            raise TableNameError("this boost service has no table root, so it loads no table by name")
        parts = name.split("/")
        if len(parts) > _MAX_TABLE_DEPTH or not all(_TABLE_PART.match(p) for p in parts):
            raise TableNameError(f"table name {name[:100]!r}: expected a path relative to the served root such as "
                                 "CAMPAIGN/VERSION, of names made of letters, digits, '.', '_' and '-' that do not "
                                 "start with '.' or '-'")
        path = self.root / name
        if not self.inside_root(path):
            raise TableNameError(f"table name {name!r} resolves outside the served root")
        return path.resolve()

    def find_version(self, version: str) -> Path:
        """The one table directory under the root whose manifest has ``version``."""
        if self.root is None:
            raise TableNameError("this boost service has no table root to find versions in")
        found = []
        for manifest in sorted(self.root.glob(f"**/{MANIFEST_FILE}")):
            try:
                if self.inside_root(manifest.parent) and read_manifest(manifest.parent)["version"] == version:
                    found.append(manifest.parent)
            except BoostTableError:
                continue  # a bad manifest is the watcher's to report; it is not this version
        if not found:
            raise VersionOrderError(f"no table with version {version!r} under the served root")
        if len(found) > 1:
            raise VersionOrderError(f"version {version!r} is in {len(found)} tables: "
                                    f"{[str(p.relative_to(self.root)) for p in found]}")
        return found[0]

    def _prepare(self, table_dir: str | Path) -> BoostLookup:
        """Validate and index a table off to the side; any fault refuses the table, never the service."""
        try:
            return BoostLookup(BoostTable.load(table_dir))
        except BoostTableError as exc:
            self.refuse(str(exc))
            raise
        except Exception as exc:  # a malformed table must not surface as a server error
            err = BoostTableError(f"boost table {table_dir}: {type(exc).__name__}: {exc}")
            self.refuse(str(err))
            raise err from None

    def _swap(self, lookup: BoostLookup) -> None:
        tables = dict(self._tables)
        tables[lookup.campaign] = lookup
        self._loaded_at[lookup.campaign] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._tables = tables  # the one atomic step readers can observe

    def load(self, table_dir: str | Path) -> BoostLookup:
        """Validate and index ``table_dir``, then swap it in if it is newer than the campaign's
        current table; on any refusal the current stays."""
        lookup = self._prepare(table_dir)
        with self._write:
            current = self._tables.get(lookup.campaign)
            if current is not None and lookup.created_at <= current.created_at:
                message = (f"boost table {table_dir}: version {lookup.version} "
                           f"(created {lookup.created_at.isoformat()}) is not newer than {current.version} (created {current.created_at.isoformat()}), served "
                           f"for campaign {lookup.campaign!r}: versions only move forward; an admin goes back "
                           f"with: fedacq boosts rollback --to {lookup.version}")
                self.refuse(message)
                raise VersionOrderError(message)
            self._swap(lookup)
        log.info("serving %s for campaign %s (%d users)", lookup.version, lookup.campaign, lookup.rows)
        return lookup

    def rollback(self, version: str, by: str) -> BoostLookup:
        """Serve the older ``version`` (found under the root) instead of its campaign's current table."""
        lookup = self._prepare(self.find_version(version))
        with self._write:
            current = self._tables.get(lookup.campaign)
            if current is None:
                raise VersionOrderError(f"rollback to {version}: nothing is served for campaign {lookup.campaign!r} "
                                        "to roll back from; load it with reload")
            if lookup.created_at >= current.created_at:
                raise VersionOrderError(f"rollback to {version}: not older than {current.version}, served for "
                                        f"campaign {lookup.campaign!r}; reload moves forward")
            self._swap(lookup)
        log.warning("ROLLBACK of campaign %s from %s to %s (%d users) by %r", lookup.campaign, current.version,
                    lookup.version, lookup.rows, by)
        return lookup


class TableWatcher:
    """Poll the registry's root for table manifests and load, per campaign, the newest valid one.

    A manifest is considered once per (path, modification time); a refused table is not
    retried until it changes. Tables not newer than the one being served are ignored.
    """

    def __init__(self, registry: BoostRegistry, interval: float = 2.0) -> None:
        if registry.root is None:
            raise ValueError("table watcher: the registry has no root to watch")
        self.registry, self.interval = registry, interval
        self._seen: set[tuple[str, int]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(self) -> list[str]:
        """One pass; returns the versions loaded. A bad manifest or table is recorded and skipped."""
        root = self.registry.root
        candidates: dict[str, list[tuple[dt.datetime, Path]]] = {}
        for manifest in sorted(root.glob(f"**/{MANIFEST_FILE}")):
            try:
                key = (str(manifest), manifest.stat().st_mtime_ns)
            except OSError:
                continue
            if key in self._seen:
                continue
            self._seen.add(key)
            table_dir = manifest.parent
            try:
                if not self.registry.inside_root(table_dir):
                    raise BoostTableError(f"boost table {table_dir}: resolves outside the served root")
                m = read_manifest(table_dir)
            except BoostTableError as exc:
                self.registry.refuse(str(exc))
                continue
            candidates.setdefault(m["campaign"], []).append((parse_time(m["created_at"]), table_dir))
        loaded = []
        for campaign, found in candidates.items():
            current = self.registry.get(campaign)
            for created, table_dir in sorted(found, key=lambda c: c[0], reverse=True):
                if current is not None and created <= current.created_at:
                    break
                try:
                    loaded.append(self.registry.load(table_dir).version)
                    break
                except ValueError:
                    continue  # recorded by the registry; try the next newest
        return loaded

    def scan_logged(self) -> list[str]:
        """``scan``, with anything unforeseen logged instead of raised: the service outlives any one pass."""
        try:
            return self.scan()
        except Exception:
            log.exception("boost table scan of %s failed", self.registry.root)
            return []

    def start(self) -> "TableWatcher":
        self._thread = threading.Thread(target=self._run, name="boost-table-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.scan_logged()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class BoostServicer(pb_grpc.BoostServiceServicer):
    """The RPCs, each authorised by the caller's name and role first (module docstring)."""

    def __init__(self, registry: BoostRegistry, allow: dict[str, frozenset[str]], tls: bool) -> None:
        self.registry, self.allow, self.tls = registry, allow, tls

    def _caller(self, context: grpc.ServicerContext, rpc: str, roles: tuple[str, ...]) -> str:
        name = (peer_common_name(context) or "") if self.tls else LOOPBACK
        granted = self.allow.get(name, frozenset())
        if not granted:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{rpc}: client {name!r} is not allowed on this boost service")
        if not granted & set(roles):
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{rpc}: client {name!r} has role(s) {sorted(granted)}; {rpc} needs {' or '.join(roles)}")
        return name

    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> pb.LookupResponse:
        self._caller(context, "Lookup", ("lookup",))
        lookup = self.registry.get(request.campaign)  # one reference for the whole request
        if lookup is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no boost table loaded for campaign {request.campaign!r}")
        n = len(request.user_ids)
        if n > MAX_BATCH:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batch of {n} user ids exceeds {MAX_BATCH}")
        res = lookup.lookup(request.user_ids)  # the repeated field itself: no copy into a list
        expired = lookup.expired()
        boosts = np.ones(n, dtype=np.float32) if expired else res.boost
        return pb.LookupResponse(table_version=lookup.version, layer=lookup.layer, boosts=boosts.tolist(),
                                 buckets=res.bucket.tolist(), treatment=res.treatment.tolist(),
                                 known=res.known.tolist(), expired=expired)

    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.ReloadResponse:
        who = self._caller(context, "Reload", ("admin",))
        try:
            table_dir = self.registry.table_dir(request.table_dir)
        except TableNameError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            lookup = self.registry.load(table_dir)
        except ValueError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused, still serving the last good table: {exc}")
        log.info("Reload of %s by %r", request.table_dir, who)
        return pb.ReloadResponse(campaign=lookup.campaign, table_version=lookup.version, rows=lookup.rows)

    def Rollback(self, request: wrappers_pb2.StringValue, context: grpc.ServicerContext) -> pb.ReloadResponse:
        who = self._caller(context, "Rollback", ("admin",))
        version = request.value
        if not version or len(version) > _MAX_VERSION_CHARS:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                          f"Rollback: a version of 1 to {_MAX_VERSION_CHARS} characters is required")
        try:
            lookup = self.registry.rollback(version, by=who)
        except ValueError as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"rollback refused, serving as before: {exc}")
        return pb.ReloadResponse(campaign=lookup.campaign, table_version=lookup.version, rows=lookup.rows)

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        self._caller(context, "Status", ROLES)
        tables = [pb.TableStatus(campaign=c, table_version=t.version, rows=t.rows, layer=t.layer,
                                 expires_at=t.expires_at.isoformat(), loaded_at=self.registry.loaded_at(c))
                  for c, t in sorted(self.registry.campaigns().items())]
        return pb.StatusResponse(tables=tables, errors=list(self.registry.errors))


def _add_rollback(servicer: BoostServicer, server: grpc.Server) -> None:
    """Serve ``Rollback`` beside the generated methods (it is not in boost.proto yet)."""
    handler = grpc.unary_unary_rpc_method_handler(servicer.Rollback,
                                                  request_deserializer=wrappers_pb2.StringValue.FromString,
                                                  response_serializer=pb.ReloadResponse.SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"Rollback": handler}),))


def _tls_files(tls_dir: str | Path, name: str) -> TlsFiles:
    d = Path(tls_dir)
    return TlsFiles(ca=d / "ca.pem", cert=d / f"{name}.pem", key=d / f"{name}.key")


class BoostServer:
    """A gRPC server around a registry; ``port`` is known after construction (use port 0 in tests).

    ``allow`` maps client names to roles (:func:`parse_allow`); required with ``tls_dir``,
    ``{"loopback": {"lookup", "admin"}}`` by default without (module docstring).

    Why 2 worker threads by default: a request is Python under the GIL, so more threads do
    not run more requests at once; they only hand the GIL around more. On this 2-core machine
    the same service answered 1.2-1.3x more look-ups per second with 2 threads than with 8, and
    so did a bare gRPC echo server (same runs, alternating). A ``Reload`` holds one thread while
    it indexes; look-ups go on in the other.
    """

    def __init__(self, registry: BoostRegistry, address: str = "127.0.0.1:0", max_workers: int = 2,
                 tls_dir: str | Path | None = None, tls_name: str = "platform",
                 allow: dict[str, frozenset[str]] | None = None) -> None:
        self.registry = registry
        self.allow = check_allow(allow, tls=bool(tls_dir))
        opts = [("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=opts)
        servicer = BoostServicer(registry, self.allow, tls=bool(tls_dir))
        pb_grpc.add_BoostServiceServicer_to_server(servicer, self.server)
        _add_rollback(servicer, self.server)
        if tls_dir:
            self.port = self.server.add_secure_port(address, server_credentials(_tls_files(tls_dir, tls_name)))
        else:
            # Plaintext only on loopback: look-ups carry the platform's user ids, so a service
            # reachable from other hosts must use mutual TLS.
            host = address.rsplit(":", 1)[0].strip("[]")
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError(f"boost service: {address} is not a loopback address; serve it with "
                                 "mutual TLS (--tls-dir) or bind 127.0.0.1")
            self.port = self.server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"boost service: cannot bind {address}")
        self.host = address.rsplit(":", 1)[0]

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "BoostServer":
        self.server.start()
        return self

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()


class BoostClient:
    """Client for bidding (``lookup``) and for the operator (``reload``, ``rollback``, ``status``)."""

    def __init__(self, address: str, tls_dir: str | Path | None = None, tls_name: str = "bidder",
                 server_name: str = "platform") -> None:
        self.address = address
        opts = [("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)]
        if tls_dir:
            opts.append(("grpc.ssl_target_name_override", server_name))
            self.channel = grpc.secure_channel(address, channel_credentials(_tls_files(tls_dir, tls_name)), opts)
        else:
            self.channel = grpc.insecure_channel(address, opts)
        self.stub = pb_grpc.BoostServiceStub(self.channel)
        self._rollback = self.channel.unary_unary(f"/{SERVICE}/Rollback",
                                                  request_serializer=wrappers_pb2.StringValue.SerializeToString,
                                                  response_deserializer=pb.ReloadResponse.FromString)

    def lookup(self, campaign: str, user_ids: list[str], timeout: float = 1.0) -> pb.LookupResponse:
        return self.stub.Lookup(pb.LookupRequest(campaign=campaign, user_ids=user_ids), timeout=timeout)

    def reload(self, table: str, timeout: float = 600.0) -> pb.ReloadResponse:
        """Load the table ``table`` names, relative to the server's root (e.g. ``camp/v2``)."""
        return self.stub.Reload(pb.ReloadRequest(table_dir=table), timeout=timeout)

    def rollback(self, version: str, timeout: float = 600.0) -> pb.ReloadResponse:
        return self._rollback(wrappers_pb2.StringValue(value=version), timeout=timeout)

    def status(self, timeout: float = 5.0) -> pb.StatusResponse:
        return self.stub.Status(pb.StatusRequest(), timeout=timeout)

    def wait_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def serve(tables: str | Path, address: str = "127.0.0.1:50071", workers: int = 2, watch_interval: float = 2.0,
          tls_dir: str | Path | None = None, tls_name: str = "platform",
          allow: dict[str, frozenset[str]] | None = None, port_file: str | Path | None = None) -> int:
    """Serve the boost tables under ``tables`` until the process is stopped (``fedacq boost-serve``).

    ``watch_interval`` 0 loads the tables once and never rescans; ``allow`` is
    checked by :func:`check_allow` (required with ``tls_dir``); ``port_file``
    receives the bound port once serving (for scripts binding port 0).
    """
    root = Path(tables)
    if not root.is_dir():
        raise FileNotFoundError(f"tables {root}: no such directory")
    allow = check_allow(allow, tls=bool(tls_dir))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # 1 ms instead of 5 ms: a thread loading a new table yields the GIL to request threads sooner
    sys.setswitchinterval(0.001)
    registry = BoostRegistry(root)
    watcher = TableWatcher(registry, watch_interval or 2.0)
    if not watcher.scan_logged():
        log.warning("no valid boost table under %s yet; errors: %s", root, list(registry.errors))
    # everything alive now (modules, the first tables) lives as long as the process: out of the
    # collector's sight, a full collection walks only what requests and reloads allocate since
    gc.collect()
    gc.freeze()
    server = BoostServer(registry, address, workers, tls_dir, tls_name, allow).start()
    if watch_interval > 0:
        watcher.start()
    if port_file:
        Path(port_file).write_text(str(server.port))
    log.info("boost service on %s (%s), allowing %s, serving %s", server.address,
             "mTLS" if tls_dir else "plaintext", {n: sorted(r) for n, r in allow.items()},
             {c: t.version for c, t in registry.campaigns().items()})
    try:
        server.server.wait_for_termination()
    finally:
        watcher.stop()
        server.stop()
    return 0
