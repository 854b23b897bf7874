"""Benchmark the boost service: batched look-ups over loopback gRPC while a new table version loads.

What is measured: client threads send ``Lookup`` requests of ``--batch-size`` user ids (90 %
in the table, 10 % unknown) to a ``fedacq boost-serve`` process for ``--seconds``; a third of
the way in, a new table version of the same size is moved under the served root and loaded
by name through the admin ``Reload`` RPC.
Reported: ``lookups_per_s`` (user ids answered per second), ``p50_ms``/``p99_ms`` request
latency, ``failed_requests`` (RPC errors or malformed answers), the reload time, the table
versions seen, and ``server_cpu_ms_per_request`` (the serving process's CPU time per request,
which other load on the machine inflates far less than it inflates latency).

The client must not be what is measured: the requests are serialized before the run (a bidder
builds its batch anyway), every response is parsed and checked, and the service and the echo
peer go through exactly the same client code; ``client_cpu_ms_per_request`` (this process)
shows what the client takes from the cores the server shares.

``--baseline TREE`` runs the service a second time from another code tree (a checkout of an
earlier commit, run with ``PYTHONPATH=TREE``) on copies of the same tables, with the same
client and the same reload, straight after: the same-run comparison of two versions.

Named peers, run in the same invocation:

- ``grpc_echo``: a raw grpcio server (its own process, the service's number of worker threads)
  returning a canned ``LookupResponse`` of the same size to the same requests, with the same
  client: the transport floor, so ``saturation_vs_grpc_echo`` is the share of the transport's
  throughput the service keeps.
- ``inprocess_pandas``: the same look-ups as ``pandas.Index.get_indexer`` plus numpy gathers in
  this process, no RPC: what a bidder embedding the table would get.

Targets (issues 5 and 15): >= 50k look-ups/s in batches of 100, p99 <= 5 ms at 60k look-ups/s,
zero failed requests.

    python benchmarks/boost_service.py --json results/boost_service.json          # full
    python benchmarks/boost_service.py --json /tmp/boost_quick.json --quick       # smoke
    git worktree add --detach /tmp/boost-old <commit>                             # same-run A/B
    python benchmarks/boost_service.py --baseline /tmp/boost-old --json /tmp/boost_ab.json
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from fedacq.activate.service import BoostClient
from fedacq.activate.table import ExperimentConfig, build_boost_table

CAMPAIGN = "bench"


def make_tables(root: Path, rows: int) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    ids = pd.Series([f"user-{i:010d}" for i in range(rows)])
    paths = []
    for version in ("v1", "v2"):
        scores = pd.DataFrame({"user_id": ids, "score": rng.random(rows)})
        t = build_boost_table(scores, CAMPAIGN, experiment=ExperimentConfig(layer="bench", salt="b"),
                              version=version, expiry=dt.timedelta(hours=2))
        paths.append(t.write(root / ("tables" if version == "v1" else "staging") / CAMPAIGN / version))
    return paths[0], paths[1]


def batches(rows: int, batch_size: int, n: int, seed: int) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        known = rng.integers(0, rows, size=batch_size)
        ids = [f"user-{i:010d}" for i in known]
        for j in rng.choice(batch_size, size=batch_size // 10, replace=False):
            ids[j] = f"new-{rng.integers(1 << 40)}"
        out.append(ids)
    return out


def _cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) the serving process has used (Linux ``/proc``; None elsewhere).

    Load-robust beside latency: what a request costs the server, whoever else shares the machine.
    The process's own threads only: a table loader child is not counted.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _spawn(args: list[str], port_file: Path, env: dict | None = None) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start within 120 s")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def drive(call, work: list, clients: int, seconds: float, midway=None,
          rate: float | None = None, batch: int | None = None) -> dict:
    """Run ``call(ids)`` from ``clients`` threads for ``seconds``; ``midway`` runs at 1/3.

    With ``rate`` (look-ups/s over all threads) requests are paced like real bidding traffic
    (open loop) and latency counts from each request's *scheduled* send time, so a stalled
    server is not hidden by the clients slowing down (no coordinated omission). Without
    it, each thread sends back to back (closed loop): the saturation throughput.
    """
    latencies: list[list[float]] = [[] for _ in range(clients)]
    starts: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    seen: set[str] = set()
    stop = threading.Event()
    batch = batch or len(work[0])
    interval = clients * batch / rate if rate else 0.0

    def worker(k: int) -> None:
        i = k
        lat, sent = latencies[k], starts[k]
        due = time.perf_counter() + interval * k / clients
        while not stop.is_set():
            if interval:
                wait = due - time.perf_counter()
                if wait > 0:
                    time.sleep(wait)
                t0, due = due, due + interval
            else:
                t0 = time.perf_counter()
            ids = work[i % len(work)]
            i += clients
            try:
                version = call(ids)
                if version is not None:
                    seen.add(version)
            except Exception:
                failures[k] += 1
            lat.append(time.perf_counter() - t0)
            sent.append(t0)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    cpu_start = time.process_time()
    start = time.perf_counter()
    for t in threads:
        t.start()
    extra = {}
    window = None
    if midway is not None:
        time.sleep(seconds / 3)
        w0 = time.perf_counter()
        extra = midway()
        window = (w0, time.perf_counter())
        time.sleep(max(0.0, seconds - (time.perf_counter() - start)))
    else:
        time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    client_cpu = time.process_time() - cpu_start
    lat = np.concatenate([np.asarray(x) for x in latencies]) * 1e3
    n_req = int(lat.size)
    if window is not None:  # requests overlapping the reload vs the rest
        t_sent = np.concatenate([np.asarray(x) for x in starts])
        during = (t_sent <= window[1]) & (t_sent + lat / 1e3 >= window[0])
        extra["requests_during_reload"] = int(during.sum())
        if during.any():
            extra["p99_ms_during_reload"] = round(float(np.percentile(lat[during], 99)), 3)
        if (~during).any():
            extra["p99_ms_outside_reload"] = round(float(np.percentile(lat[~during], 99)), 3)
    return {"mode": f"paced at {rate:,.0f} look-ups/s" if rate else "closed loop (saturation)",
            "requests": n_req, "lookups_per_s": round((n_req - sum(failures)) * batch / elapsed, 1),
            "p50_ms": round(float(np.percentile(lat, 50)), 3), "p99_ms": round(float(np.percentile(lat, 99)), 3),
            "max_ms": round(float(lat.max()), 3), "failed_requests": int(sum(failures)),
            "client_cpu_ms_per_request": round(client_cpu * 1e3 / max(n_req, 1), 3),
            "versions_seen": sorted(seen), **extra}


def serialized(work: list[list[str]]) -> list[bytes]:
    """Each batch as a ``LookupRequest`` on the wire, built before the run."""
    from fedacq.activate._pb import boost_pb2 as pb

    return [pb.LookupRequest(campaign=CAMPAIGN, user_ids=ids).SerializeToString() for ids in work]


def lookup_caller(channel, method: str, batch: int):
    """``call(request_bytes) -> table version``: send, parse the ``LookupResponse``, check its length.

    The one client path for the service and the echo peer, so both pay the same client cost."""
    from fedacq.activate._pb import boost_pb2 as pb

    stub = channel.unary_unary(method, response_deserializer=pb.LookupResponse.FromString)

    def call(request: bytes) -> str:
        r = stub(request, timeout=5.0)
        if len(r.boosts) != batch or len(r.buckets) != batch or len(r.known) != batch:
            raise ValueError("short answer")
        return r.table_version

    return call


def bench_service(root: Path, name: str, requests: list[bytes], args, tree: str | None = None) -> dict:
    """Serve copies of ``root``'s tables from ``tree`` (this checkout if None); paced run with the
    mid-run reload, then a saturation run."""
    import grpc

    from fedacq.activate.service import SERVICE

    served = root / name
    shutil.copytree(root / "tables", served / "tables")
    v2 = shutil.copytree(root / "staging" / CAMPAIGN / "v2", served / "staging" / "v2")
    port_file = served / "service.port"
    env = dict(os.environ, PYTHONPATH=tree) if tree else None
    proc, port = _spawn(["-m", "fedacq.cli", "boost-serve", "--tables", str(served / "tables"),
                         "--address", "127.0.0.1:0", "--port-file", str(port_file), "--watch-interval", "0",
                         "--workers", str(args.workers)], port_file, env)
    admin = BoostClient(f"127.0.0.1:{port}")
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        admin.wait_ready(30)
        grpc.channel_ready_future(channel).result(timeout=30)
        call = lookup_caller(channel, f"/{SERVICE}/Lookup", args.batch_size)
        for r in requests[:200]:  # warm-up: connections, caches
            call(r)

        def reload() -> dict:
            # publish v2 under the served root (one rename), then load it by name: the service
            # loads nothing from outside its root
            os.replace(v2, served / "tables" / CAMPAIGN / v2.name)
            t0 = time.perf_counter()
            rep = admin.reload(f"{CAMPAIGN}/{v2.name}")
            return {"reload_s": round(time.perf_counter() - t0, 3), "reloaded_to": rep.table_version}

        cpu0 = _cpu_seconds(proc.pid)
        paced = drive(call, requests, args.clients, args.seconds, midway=reload, rate=args.rate,
                      batch=args.batch_size)
        cpu1 = _cpu_seconds(proc.pid)
        saturated = drive(call, requests, args.clients, args.saturation_seconds, batch=args.batch_size)
        cpu2 = _cpu_seconds(proc.pid)
        if cpu0 is not None:
            paced["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1e3 / max(paced["requests"], 1), 3)
            saturated["server_cpu_ms_per_request"] = round((cpu2 - cpu1) * 1e3 / max(saturated["requests"], 1), 3)
        return {"tree": tree or str(Path(__file__).resolve().parents[1]), "paced": paced, "saturation": saturated}
    finally:
        channel.close()
        admin.close()
        proc.terminate()
        proc.wait(10)


def canned_response(batch: int) -> bytes:
    """The echo peer's answer: a valid ``LookupResponse`` for ``batch`` ids (the service's size)."""
    from fedacq.activate._pb import boost_pb2 as pb

    return pb.LookupResponse(table_version="v1", layer="bench", boosts=[1.25] * batch, buckets=[999] * batch,
                             treatment=[True] * batch, known=[True] * batch).SerializeToString()


def echo_server(port_file: Path, batch: int, workers: int) -> None:
    """A raw grpcio unary server answering every request with :func:`canned_response` (the
    transport floor peer), with the service's number of worker threads."""
    from concurrent import futures

    import grpc

    payload = canned_response(batch)
    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: payload)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    server.wait_for_termination()


def bench_echo(root: Path, requests: list[bytes], args) -> dict:
    import grpc

    port_file = root / "echo.port"
    proc, port = _spawn([__file__, "--echo-server", str(port_file), "--batch-size", str(args.batch_size),
                         "--workers", str(args.workers)], port_file)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        call = lookup_caller(channel, "/bench.Echo/Call", args.batch_size)
        for r in requests[:200]:
            call(r)
        cpu0 = _cpu_seconds(proc.pid)
        out = drive(call, requests, args.clients, args.saturation_seconds, batch=args.batch_size)
        if cpu0 is not None:
            out["server_cpu_ms_per_request"] = round((_cpu_seconds(proc.pid) - cpu0) * 1e3 / max(out["requests"], 1), 3)
        out["request_bytes"], out["response_bytes"] = len(requests[0]), len(canned_response(args.batch_size))
        return out
    finally:
        channel.close()
        proc.terminate()
        proc.wait(10)


def bench_inprocess(v1: Path, work, seconds: float) -> dict:
    data = pd.read_parquet(v1 / "boosts.parquet")
    index = pd.Index(data["user_id"].to_numpy(dtype=object))
    boost, bucket = data["boost"].to_numpy(), data["bucket"].to_numpy()

    def call(ids):
        rows = index.get_indexer(ids)
        known = rows >= 0
        np.where(known, boost[rows], 1.0), np.where(known, bucket[rows], 0)

    return drive(call, work, 1, seconds)  # one thread: the GIL allows no more


def _summary(name: str, run: dict) -> str:
    paced, sat = run["paced"], run["saturation"]
    return (f"{name}: paced ({paced['mode']}) {paced['lookups_per_s']:,.0f} look-ups/s, p50 {paced['p50_ms']} ms, "
            f"p99 {paced['p99_ms']} ms (outside/during reload {paced.get('p99_ms_outside_reload')}/"
            f"{paced.get('p99_ms_during_reload')} ms, {paced.get('requests_during_reload')} requests in the "
            f"{paced.get('reload_s')} s reload), {paced['failed_requests']} failed, versions {paced['versions_seen']}; "
            f"saturation {sat['lookups_per_s']:,.0f} look-ups/s, p99 {sat['p99_ms']} ms; server CPU per request "
            f"{paced.get('server_cpu_ms_per_request')} ms paced / {sat.get('server_cpu_ms_per_request')} ms saturated; "
            f"client CPU per request {paced['client_cpu_ms_per_request']} / {sat['client_cpu_ms_per_request']} ms")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write results here")
    p.add_argument("--quick", action="store_true", help="small table, short runs: checks the script works")
    p.add_argument("--rows", type=int, help="users per table (default 1,000,000; quick 50,000)")
    p.add_argument("--seconds", type=float, help="duration per measured run (default 30; quick 3)")
    p.add_argument("--rate", type=float, default=60_000.0, help="paced look-ups/s for the latency run")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--clients", type=int, default=4, help="client threads issuing requests")
    p.add_argument("--workers", type=int, default=2,
                   help="server worker threads (of the service and the echo peer; 2: more threads on 2 cores "
                        "only fight over the GIL)")
    p.add_argument("--baseline", metavar="TREE", help="also run the service from this code tree, same run")
    p.add_argument("--baseline-workers", type=int, default=8, help="its worker threads (8: its CLI default)")
    p.add_argument("--echo-server", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo_server:
        echo_server(Path(args.echo_server), args.batch_size, args.workers)
        return 0
    args.rows = args.rows or (50_000 if args.quick else 1_000_000)
    args.seconds = args.seconds or (3.0 if args.quick else 30.0)
    args.saturation_seconds = min(args.seconds, 10.0)
    load = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory(prefix="fedacq-boost-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        v1, _ = make_tables(root, args.rows)
        print(f"built two tables of {args.rows:,} users in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        work = batches(args.rows, args.batch_size, 2000, seed=1)
        requests = serialized(work)
        service = bench_service(root, "service", requests, args)
        baseline = None
        if args.baseline:
            base_args = argparse.Namespace(**{**vars(args), "workers": args.baseline_workers})
            baseline = bench_service(root, "baseline", requests, base_args, tree=args.baseline)
            baseline["server_workers"] = args.baseline_workers
        echo = bench_echo(root, requests, args)
        inproc = bench_inprocess(v1, work, args.saturation_seconds)
        load.append(os.getloadavg()[0])
    paced, sat = service["paced"], service["saturation"]
    ratios = {"saturation_vs_grpc_echo": round(sat["lookups_per_s"] / echo["lookups_per_s"], 3),
              "saturation_vs_inprocess_pandas": round(sat["lookups_per_s"] / inproc["lookups_per_s"], 3)}
    if baseline:
        ratios["saturation_vs_baseline"] = round(sat["lookups_per_s"] / baseline["saturation"]["lookups_per_s"], 3)
        ratios["paced_p99_baseline_over_service"] = round(baseline["paced"]["p99_ms"] / paced["p99_ms"], 3)
    result = {
        "benchmark": "boost_service", "quick": args.quick, "rows": args.rows, "batch_size": args.batch_size,
        "clients": args.clients, "server_workers": args.workers, "seconds": args.seconds, "rate": args.rate,
        **{k: paced[k] for k in ("lookups_per_s", "p50_ms", "p99_ms", "max_ms", "failed_requests")},
        "saturation_lookups_per_s": sat["lookups_per_s"],
        "service": service,
        "peers": {"grpc_echo": echo, "inprocess_pandas": inproc, **({"baseline": baseline} if baseline else {})},
        "ratios": ratios,
        "targets_met": {"lookups_per_s>=50000": paced["lookups_per_s"] >= 50_000,
                        "p99_ms<=5": paced["p99_ms"] <= 5.0,
                        "failed_requests==0": paced["failed_requests"] + sat["failed_requests"] == 0,
                        "reloaded_mid_run": set(paced["versions_seen"]) == {"v1", "v2"}},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_1m_start_end": [round(x, 2) for x in load]},
    }
    print(_summary(f"boost service ({args.workers} workers)", service))
    if baseline:
        print(_summary(f"baseline {args.baseline} ({args.baseline_workers} workers)", baseline))
        print(f"-> service/baseline saturation = {ratios['saturation_vs_baseline']}, "
              f"baseline/service paced p99 = {ratios['paced_p99_baseline_over_service']}")
    print(f"grpc echo (same client, same payload, {args.workers} workers), saturation: "
          f"{echo['lookups_per_s']:,.0f} look-ups/s, p99 {echo['p99_ms']} ms, server CPU per request "
          f"{echo.get('server_cpu_ms_per_request')} ms -> service/echo = {ratios['saturation_vs_grpc_echo']}")
    print(f"in-process pandas (1 thread): {inproc['lookups_per_s']:,.0f} look-ups/s "
          f"-> service/in-process = {ratios['saturation_vs_inprocess_pandas']}")
    print(f"targets: {result['targets_met']} (load average {load[0]:.2f} -> {load[1]:.2f})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
