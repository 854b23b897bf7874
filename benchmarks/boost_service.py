"""Benchmark the boost service: batched look-ups over loopback gRPC while a new table version loads.

What is measured: client threads send ``Lookup`` requests of ``--batch-size`` user ids (90 %
in the table, 10 % unknown) to a ``fedacq boost-serve`` process for ``--seconds``; a third of
the way in, a new table version of the same size is moved under the served root and loaded
by name through the admin ``Reload`` RPC.
Reported: ``lookups_per_s`` (user ids answered per second), ``p50_ms``/``p99_ms`` request
latency, ``failed_requests`` (RPC errors or malformed answers), the reload time, the table
versions seen, and ``server_cpu_ms_per_request`` (the serving process's CPU time per request,
which other load on the machine inflates far less than it inflates latency).

Named peers, run in the same invocation:

- ``grpc_echo``: a raw grpcio server (its own process) returning a canned response of the same
  size to a request of the same size, with the same client threads: the transport floor, so
  ``ratio_vs_grpc_echo`` is the share of the transport's throughput the service keeps.
- ``inprocess_pandas``: the same look-ups as ``pandas.Index.get_indexer`` plus numpy gathers in
  this process, no RPC: what a bidder embedding the table would get.

Targets (issue 5): >= 50k look-ups/s in batches of 100, p99 <= 5 ms, zero failed requests.

    python benchmarks/boost_service.py --json results/boost_service.json          # full
    python benchmarks/boost_service.py --json /tmp/boost_quick.json --quick       # smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
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


def _spawn(args: list[str], port_file: Path) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not port_file.exists() or not port_file.read_text().strip():
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {proc.stderr.read().decode()[-2000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("server did not start within 120 s")
        time.sleep(0.05)
    return proc, int(port_file.read_text())


def drive(call, work: list[list[str]], clients: int, seconds: float, midway=None,
          rate: float | None = None) -> dict:
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
    batch = len(work[0])
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
            "versions_seen": sorted(seen), **extra}


def bench_service(root: Path, v2: Path, work, args) -> dict:
    port_file = root / "service.port"
    proc, port = _spawn(["-m", "fedacq.cli", "boost-serve", "--tables", str(root / "tables"),
                         "--address", "127.0.0.1:0", "--port-file", str(port_file), "--watch-interval", "0",
                         "--workers", str(args.workers)], port_file)
    client = BoostClient(f"127.0.0.1:{port}")
    try:
        client.wait_ready(30)
        batch = len(work[0])

        def call(ids):
            r = client.lookup(CAMPAIGN, ids, timeout=5.0)
            if len(r.boosts) != batch or len(r.buckets) != batch:
                raise ValueError("short answer")
            return r.table_version

        for ids in work[:200]:  # warm-up: connections, caches
            call(ids)

        def reload() -> dict:
            # publish v2 under the served root (one rename), then load it by name: the service
            # loads nothing from outside its root
            os.replace(v2, root / "tables" / CAMPAIGN / v2.name)
            t0 = time.perf_counter()
            rep = client.reload(f"{CAMPAIGN}/{v2.name}")
            return {"reload_s": round(time.perf_counter() - t0, 3), "reloaded_to": rep.table_version}

        cpu0 = _cpu_seconds(proc.pid)
        paced = drive(call, work, args.clients, args.seconds, midway=reload, rate=args.rate)
        cpu1 = _cpu_seconds(proc.pid)
        saturated = drive(call, work, args.clients, args.saturation_seconds)
        cpu2 = _cpu_seconds(proc.pid)
        if cpu0 is not None:
            paced["server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1e3 / max(paced["requests"], 1), 3)
            saturated["server_cpu_ms_per_request"] = round((cpu2 - cpu1) * 1e3 / max(saturated["requests"], 1), 3)
        return {"paced": paced, "saturation": saturated}
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)


def echo_server(port_file: Path, response_size: int) -> None:
    """A raw grpcio unary echo returning ``response_size`` bytes (the transport floor peer)."""
    from concurrent import futures

    import grpc

    payload = os.urandom(response_size)
    handler = grpc.method_handlers_generic_handler("bench.Echo", {
        "Call": grpc.unary_unary_rpc_method_handler(lambda req, ctx: payload)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    port_file.write_text(str(port))
    server.wait_for_termination()


def bench_echo(root: Path, work, args) -> dict:
    import grpc

    from fedacq.activate._pb import boost_pb2 as pb

    batch = len(work[0])
    request = pb.LookupRequest(campaign=CAMPAIGN, user_ids=work[0]).SerializeToString()
    response = pb.LookupResponse(table_version="v1", layer="bench", boosts=[1.25] * batch,
                                 buckets=[999] * batch, treatment=[True] * batch,
                                 known=[True] * batch).SerializeToString()
    port_file = root / "echo.port"
    proc, port = _spawn([__file__, "--echo-server", str(port_file), "--echo-size", str(len(response))], port_file)
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
        stub = channel.unary_unary("/bench.Echo/Call")

        def call(ids):
            stub(request, timeout=5.0)

        for _ in range(200):
            call(None)
        out = drive(call, work, args.clients, args.saturation_seconds)
        out["request_bytes"], out["response_bytes"] = len(request), len(response)
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write results here")
    p.add_argument("--quick", action="store_true", help="small table, short runs: checks the script works")
    p.add_argument("--rows", type=int, help="users per table (default 1,000,000; quick 50,000)")
    p.add_argument("--seconds", type=float, help="duration per measured run (default 30; quick 3)")
    p.add_argument("--rate", type=float, default=60_000.0, help="paced look-ups/s for the latency run")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--clients", type=int, default=4, help="client threads issuing requests")
    p.add_argument("--workers", type=int, default=8, help="server worker threads")
    p.add_argument("--echo-server", help=argparse.SUPPRESS)
    p.add_argument("--echo-size", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.echo_server:
        echo_server(Path(args.echo_server), args.echo_size)
        return 0
    args.rows = args.rows or (50_000 if args.quick else 1_000_000)
    args.seconds = args.seconds or (3.0 if args.quick else 30.0)
    args.saturation_seconds = min(args.seconds, 10.0)
    with tempfile.TemporaryDirectory(prefix="fedacq-boost-bench-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        v1, v2 = make_tables(root, args.rows)
        print(f"built two tables of {args.rows:,} users in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        work = batches(args.rows, args.batch_size, 2000, seed=1)
        service = bench_service(root, v2, work, args)
        echo = bench_echo(root, work, args)
        inproc = bench_inprocess(v1, work, args.saturation_seconds)
    paced, sat = service["paced"], service["saturation"]
    result = {
        "benchmark": "boost_service", "quick": args.quick, "rows": args.rows, "batch_size": args.batch_size,
        "clients": args.clients, "server_workers": args.workers, "seconds": args.seconds, "rate": args.rate,
        **{k: paced[k] for k in ("lookups_per_s", "p50_ms", "p99_ms", "max_ms", "failed_requests")},
        "saturation_lookups_per_s": sat["lookups_per_s"],
        "service": service,
        "peers": {"grpc_echo": echo, "inprocess_pandas": inproc},
        "ratios": {"saturation_vs_grpc_echo": round(sat["lookups_per_s"] / echo["lookups_per_s"], 3),
                   "saturation_vs_inprocess_pandas": round(sat["lookups_per_s"] / inproc["lookups_per_s"], 3)},
        "targets_met": {"lookups_per_s>=50000": paced["lookups_per_s"] >= 50_000,
                        "p99_ms<=5": paced["p99_ms"] <= 5.0,
                        "failed_requests==0": paced["failed_requests"] + sat["failed_requests"] == 0,
                        "reloaded_mid_run": set(paced["versions_seen"]) == {"v1", "v2"}},
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "loadavg_1m": round(os.getloadavg()[0], 2)},
    }
    print(f"boost service, {paced['mode']}: {paced['lookups_per_s']:,.0f} look-ups/s, p50 {paced['p50_ms']} ms, "
          f"p99 {paced['p99_ms']} ms, {paced['failed_requests']} failed, reload {paced.get('reload_s')} s, "
          f"versions {paced['versions_seen']}; p99 outside/during reload {paced.get('p99_ms_outside_reload')}"
          f"/{paced.get('p99_ms_during_reload')} ms")
    print(f"boost service, saturation: {sat['lookups_per_s']:,.0f} look-ups/s, p99 {sat['p99_ms']} ms; "
          f"server CPU per request {paced.get('server_cpu_ms_per_request')} ms paced, "
          f"{sat.get('server_cpu_ms_per_request')} ms saturated")
    print(f"grpc echo (same payload), saturation: {echo['lookups_per_s']:,.0f} look-ups/s, p99 {echo['p99_ms']} ms "
          f"-> service/echo = {result['ratios']['saturation_vs_grpc_echo']}")
    print(f"in-process pandas (1 thread): {inproc['lookups_per_s']:,.0f} look-ups/s "
          f"-> service/in-process = {result['ratios']['saturation_vs_inprocess_pandas']}")
    print(f"targets: {result['targets_met']} (load average {result['machine']['loadavg_1m']})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
