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

The loader does its heavy work in Arrow kernels, which release the GIL (validation, and
the sorted id index of ``lookup.py``), and the serving process lowers the interpreter
switch interval, so request threads are not stalled for long while a large table loads
(1 M users: 0.65 s, measured mid-run in ``benchmarks/boost_service.py``).

Expired tables: past its expiry a table is still used for buckets, but every boost is 1.0
and responses say ``expired``; stale bids are worse than no boost.

Addresses default to loopback (``127.0.0.1``); ``--tls-dir`` turns on mutual TLS with
certificates from ``fedacq certs init`` (the bidding client needs its own certificate).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
import time
from collections import deque
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from fedacq.activate._pb import boost_pb2 as pb
from fedacq.activate._pb import boost_pb2_grpc as pb_grpc
from fedacq.activate.lookup import BoostLookup
from fedacq.activate.table import MANIFEST_FILE, BoostTable, parse_time

log = logging.getLogger(__name__)

#: the largest batch a single Lookup may carry (bounds per-request work and memory).
MAX_BATCH = 10_000
_MAX_MESSAGE = 16 * 1024 * 1024


class BoostRegistry:
    """campaign -> current ``BoostLookup``; readers take one reference, writers swap the mapping."""

    def __init__(self, max_errors: int = 20) -> None:
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

    def load(self, table_dir: str | Path) -> BoostLookup:
        """Validate and index ``table_dir``, then swap it in; on error the current stays."""
        try:
            lookup = BoostLookup(BoostTable.load(table_dir))
        except (ValueError, OSError) as exc:
            self.errors.append(str(exc))
            log.warning("refused %s: %s", table_dir, exc)
            raise
        with self._write:
            tables = dict(self._tables)
            tables[lookup.campaign] = lookup
            self._loaded_at[lookup.campaign] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            self._tables = tables  # the one atomic step readers can observe
        log.info("serving %s for campaign %s (%d users)", lookup.version, lookup.campaign, lookup.rows)
        return lookup


class TableWatcher:
    """Poll a directory tree for table manifests and load, per campaign, the newest valid one.

    A manifest is considered once per (path, modification time); a refused table is not
    retried until it changes. Tables created before the one being served are ignored.
    """

    def __init__(self, registry: BoostRegistry, root: str | Path, interval: float = 2.0) -> None:
        self.registry, self.root, self.interval = registry, Path(root), interval
        self._seen: set[tuple[str, float]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def scan(self) -> list[str]:
        """One pass; returns the versions loaded."""
        candidates: dict[str, list[tuple[dt.datetime, Path]]] = {}
        for manifest in self.root.glob(f"**/{MANIFEST_FILE}"):
            try:
                key = (str(manifest), manifest.stat().st_mtime)
            except FileNotFoundError:
                continue
            if key in self._seen:
                continue
            self._seen.add(key)
            try:
                m = json.loads(manifest.read_text())
                candidates.setdefault(m["campaign"], []).append((parse_time(m["created_at"]), manifest.parent))
            except (ValueError, KeyError, OSError) as exc:
                self.registry.errors.append(f"boost table {manifest.parent}: unreadable manifest ({exc})")
        loaded = []
        for campaign, found in candidates.items():
            current = self.registry.get(campaign)
            for created, table_dir in sorted(found, key=lambda c: c[0], reverse=True):
                if current is not None and created <= current.created_at:
                    break
                try:
                    loaded.append(self.registry.load(table_dir).version)
                    break
                except (ValueError, OSError):
                    continue  # recorded by the registry; try the next newest
        return loaded

    def start(self) -> "TableWatcher":
        self._thread = threading.Thread(target=self._run, name="boost-table-watcher", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.scan()
            except Exception:  # the watcher must outlive any one bad directory
                log.exception("table watcher scan failed")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class BoostServicer(pb_grpc.BoostServiceServicer):
    def __init__(self, registry: BoostRegistry, allow_reload: bool = True) -> None:
        self.registry = registry
        self.allow_reload = allow_reload

    def Lookup(self, request: pb.LookupRequest, context: grpc.ServicerContext) -> pb.LookupResponse:
        lookup = self.registry.get(request.campaign)  # one reference for the whole request
        if lookup is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no boost table loaded for campaign {request.campaign!r}")
        n = len(request.user_ids)
        if n > MAX_BATCH:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"batch of {n} user ids exceeds {MAX_BATCH}")
        res = lookup.lookup(list(request.user_ids))
        expired = lookup.expired()
        boosts = np.ones(n, dtype=np.float32) if expired else res.boost
        return pb.LookupResponse(table_version=lookup.version, layer=lookup.layer, boosts=boosts.tolist(),
                                 buckets=res.bucket.tolist(), treatment=res.treatment.tolist(),
                                 known=res.known.tolist(), expired=expired)

    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.ReloadResponse:
        if not self.allow_reload:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "the Reload RPC is disabled on this server")
        try:
            lookup = self.registry.load(request.table_dir)
        except (ValueError, OSError) as exc:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"refused, still serving the last good table: {exc}")
        return pb.ReloadResponse(campaign=lookup.campaign, table_version=lookup.version, rows=lookup.rows)

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        tables = [pb.TableStatus(campaign=c, table_version=t.version, rows=t.rows, layer=t.layer,
                                 expires_at=t.expires_at.isoformat(), loaded_at=self.registry.loaded_at(c))
                  for c, t in sorted(self.registry.campaigns().items())]
        return pb.StatusResponse(tables=tables, errors=list(self.registry.errors))


def _tls_files(tls_dir: str | Path, name: str):
    from fedacq.crypto.tls import TlsFiles

    d = Path(tls_dir)
    return TlsFiles(ca=d / "ca.pem", cert=d / f"{name}.pem", key=d / f"{name}.key")


class BoostServer:
    """A gRPC server around a registry; ``port`` is known after construction (use port 0 in tests)."""

    def __init__(self, registry: BoostRegistry, address: str = "127.0.0.1:0", max_workers: int = 8,
                 tls_dir: str | Path | None = None, tls_name: str = "platform", allow_reload: bool = True) -> None:
        self.registry = registry
        opts = [("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)]
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers), options=opts)
        pb_grpc.add_BoostServiceServicer_to_server(BoostServicer(registry, allow_reload), self.server)
        if tls_dir:
            from fedacq.crypto.tls import server_credentials

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
    """Client for bidding (and for the admin Reload): ``lookup(campaign, ids)``."""

    def __init__(self, address: str, tls_dir: str | Path | None = None, tls_name: str = "bidder",
                 server_name: str = "platform") -> None:
        self.address = address
        opts = [("grpc.max_receive_message_length", _MAX_MESSAGE), ("grpc.max_send_message_length", _MAX_MESSAGE)]
        if tls_dir:
            from fedacq.crypto.tls import channel_credentials

            opts.append(("grpc.ssl_target_name_override", server_name))
            self.channel = grpc.secure_channel(address, channel_credentials(_tls_files(tls_dir, tls_name)), opts)
        else:
            self.channel = grpc.insecure_channel(address, opts)
        self.stub = pb_grpc.BoostServiceStub(self.channel)

    def lookup(self, campaign: str, user_ids: list[str], timeout: float = 1.0) -> pb.LookupResponse:
        return self.stub.Lookup(pb.LookupRequest(campaign=campaign, user_ids=user_ids), timeout=timeout)

    def reload(self, table_dir: str | Path, timeout: float = 600.0) -> pb.ReloadResponse:
        return self.stub.Reload(pb.ReloadRequest(table_dir=str(table_dir)), timeout=timeout)

    def status(self, timeout: float = 5.0) -> pb.StatusResponse:
        return self.stub.Status(pb.StatusRequest(), timeout=timeout)

    def wait_ready(self, timeout: float = 10.0) -> None:
        grpc.channel_ready_future(self.channel).result(timeout=timeout)

    def close(self) -> None:
        self.channel.close()


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("boost-serve", help="serve boost tables over gRPC (hot reload, loopback by default)",
                              description=__doc__.splitlines()[0])
    p.add_argument("--tables", required=True, help="directory tree of boost tables (watched for new versions)")
    p.add_argument("--address", default="127.0.0.1:50071", help="host:port to bind (default loopback)")
    p.add_argument("--watch-interval", type=float, default=2.0, help="seconds between directory scans; 0 disables")
    p.add_argument("--workers", type=int, default=8, help="gRPC worker threads")
    p.add_argument("--no-reload-rpc", action="store_true", help="disable the admin Reload RPC")
    p.add_argument("--tls-dir", help="mutual TLS: directory with ca.pem and <tls-name>.pem/.key (fedacq certs init)")
    p.add_argument("--tls-name", default="platform", help="certificate name of this server")
    p.add_argument("--port-file", help="write the bound port here once serving (for scripts using port 0)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    # 1 ms instead of 5 ms: a thread loading a new table yields the GIL to request threads sooner
    sys.setswitchinterval(0.001)
    root = Path(args.tables)
    if not root.is_dir():
        raise FileNotFoundError(f"tables {root}: no such directory")
    registry = BoostRegistry()
    watcher = TableWatcher(registry, root, args.watch_interval or 2.0)
    loaded = watcher.scan()
    if not loaded:
        log.warning("no valid boost table under %s yet; errors: %s", root, list(registry.errors))
    server = BoostServer(registry, args.address, args.workers, args.tls_dir, args.tls_name,
                         allow_reload=not args.no_reload_rpc).start()
    if args.watch_interval > 0:
        watcher.start()
    if args.port_file:
        Path(args.port_file).write_text(str(server.port))
    log.info("boost service on %s (%s), serving %s", server.address, "mTLS" if args.tls_dir else "plaintext",
             {c: t.version for c, t in registry.campaigns().items()})
    try:
        server.server.wait_for_termination()
    finally:
        watcher.stop()
        server.stop()
    return 0
