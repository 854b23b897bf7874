"""PSI benchmark: fedacq ECDH-PSI against openmined-psi, scale runs with peak memory per party.

Cases (full size; ``--quick`` shrinks every size ~50x to check the script works):

* ``100k``: 100k x 100k ids with 50% overlap, fedacq (both parties in one process over an
  in-memory link, two threads, one process pool: what ``fedacq psi`` runs) against
  openmined-psi (C++, P-256; client and server in one process) on the same ids in the same
  run; ratio = openmined seconds / fedacq seconds. The pool's start-up is inside the timing.
* ``1m``, ``10m`` (any ``<N>m``): N million x N million ids, 50% overlap, each party in its
  own process (its own process pool), connected by a local pipe carrying the real wire
  encoding (:mod:`fedacq.link.codec`); a reader thread per party drains the pipe into an
  inbox as the gRPC link's server does. Recorded per party: wall and phase seconds, peak
  resident memory of the party process during the PSI (``VmHWM`` from ``/proc``, reset
  once the party's table is built; the table stays resident and is counted) and of each
  of its worker processes (forkserver and pool). ``peak_rss_mb_upper`` adds them up (an
  upper bound: shared pages count once per process). psutil is not used.
* ``unbalanced``: 100k lender vs 5M platform: offline (platform cache build + first
  transfer of the blinded set) and online (a job reusing both caches) timed apart.
* ``isum``: private intersection-sum of 3 outcome columns (a flag, a second flag, an
  amount), 50k lender ids vs 200k platform ids in 1000 groups, 2048-bit Paillier key:
  one packed run (fedacq) against the peer "one single-column run per outcome" (how
  measurement ran before columns were packed) in the same run;
  ratio = peer seconds / packed seconds. Message counts of both are recorded.

Ids are 12-digit strings held as Arrow strings (``string[pyarrow]``), 17 bytes each in
memory, as a party would load them from Parquet.

Usage: ``python benchmarks/psi.py --json psi.json [--quick] [--cases 100k,1m,unbalanced,isum]``
(``--cases 10m`` alone: ~15 minutes on 2 quiet cores).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform as platform_mod
import queue
import re
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

import proctree
from fedacq.link import codec
from fedacq.link.link import Link, LinkError, LinkTimeout
from fedacq.link.memory import memory_pair, run_parties
from fedacq.psi import (LenderSetStore, PlatformCache, intersection_sum_lender, intersection_sum_platform,
                        psi_lender, psi_platform)

#: the per-party memory bound of issue 15 for 10M x 10M.
MEMORY_LIMIT_MB = 4096
#: an odd multiplier: i -> (i * _MIX + _SHIFT) mod 10^12 is one-to-one, so ids are distinct without a set.
_MIX, _SHIFT, _SPACE = 387_420_489, 91_234_567_891, 10**12


def make_ids(start: int, count: int, seed: int) -> pd.Series:
    """Ids number ``start .. start + count - 1`` of a fixed pseudo-random sequence, shuffled, as Arrow strings."""
    i = np.arange(start, start + count, dtype=np.int64)
    values = (i * _MIX + _SHIFT + seed) % _SPACE
    values = np.random.default_rng(seed + start).permutation(values)
    strings = pa.array(values).cast(pa.string())
    del values
    pa.default_memory_pool().release_unused()  # the int64 staging array: not part of the party's table
    return pd.Series(pd.arrays.ArrowStringArray(strings), name="uid")


def make_sets(n_lender: int, n_platform: int, overlap: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Lender ids ``0 .. n_lender``, platform ids ``n_lender - overlap ..``: exactly ``overlap`` in common."""
    return (pd.DataFrame({"uid": make_ids(0, n_lender, seed)}),
            pd.DataFrame({"uid": make_ids(n_lender - overlap, n_platform, seed)}))


def run_fedacq(lender: pd.DataFrame, platform: pd.DataFrame, workers: int | None,
               lender_kw: dict | None = None, platform_kw: dict | None = None) -> tuple[float, int, dict]:
    link_l, link_p = memory_pair("lender", "platform", job="bench")
    t0 = time.perf_counter()
    res_l, res_p = run_parties(
        (lambda: psi_lender(link_l, lender, ["uid"], workers=workers, min_intersection=0,
                            progress=True, **(lender_kw or {})),),
        (lambda: psi_platform(link_p, platform, ["uid"], workers=workers, progress=True,
                              min_intersection=0, **(platform_kw or {})),))
    return time.perf_counter() - t0, res_l.size, {"lender": res_l.stats, "platform": res_p.stats}


def run_openmined(lender: pd.DataFrame, platform: pd.DataFrame) -> tuple[float, int]:
    import private_set_intersection.python as psi

    client_items = lender["uid"].tolist()
    server_items = platform["uid"].tolist()
    t0 = time.perf_counter()
    client = psi.client.CreateWithNewKey(True)
    server = psi.server.CreateWithNewKey(True)
    setup = server.CreateSetupMessage(1e-9, len(client_items), server_items, psi.DataStructure.RAW)
    request = client.CreateRequest(client_items)
    response = server.ProcessRequest(request)
    found = client.GetIntersection(setup, response)
    return time.perf_counter() - t0, len(found)


def run_isum(n_lender: int, n_platform: int, n_groups: int, workers: int | None) -> dict:
    """One packed 3-column intersection-sum against three single-column runs, same data and key."""
    from fedacq.crypto.paillier import generate_keypair

    lender, plat = make_sets(n_lender, n_platform, n_lender // 2, seed=3)
    rng = np.random.default_rng(3)
    values = np.column_stack([rng.integers(0, 2, n_lender), rng.integers(0, 2, n_lender),
                              np.round(rng.gamma(2.0, 3000.0, n_lender), 2)])
    groups = rng.integers(0, n_groups, n_platform).tolist()
    ids_l, ids_p = lender["uid"].tolist(), plat["uid"].tolist()
    _, private_key = generate_keypair(2048)

    def one(columns: np.ndarray) -> tuple[float, dict, dict]:
        link_l, link_p = memory_pair("lender", "platform", job="bench-isum")
        t0 = time.perf_counter()
        res_l, _ = run_parties(
            (lambda: intersection_sum_lender(link_l, ids_l, columns, private_key=private_key, min_group_size=1,
                                             workers=workers, progress=True),),
            (lambda: intersection_sum_platform(link_p, ids_p, groups, min_group_size=1, workers=workers),))
        return time.perf_counter() - t0, res_l.exact, {"lender": link_l.stats(), "platform": link_p.stats()}

    t_packed, exact, links = one(values)
    t_peer, peer_links = 0.0, []
    for j in range(values.shape[1]):
        t, exact_j, links_j = one(values[:, j])
        # fixed-point sums (16 fractional bits) of the same values agree exactly
        if any(exact_j[g].sums[0] != exact[g].sums[j] or exact_j[g].count != exact[g].count for g in exact):
            raise SystemExit(f"isum: column {j} alone gives other sums than the packed run")
        t_peer += t
        peer_links.append(links_j)
    return {"n_lender": n_lender, "n_platform": n_platform, "groups": n_groups, "columns": values.shape[1],
            "key_bits": 2048, "packed_seconds": t_packed, "separate_runs_seconds": t_peer,
            "packed_links": links, "separate_links": peer_links}


class PipeLink(Link):
    """A :class:`Link` between two party processes over a local pipe, in the wire encoding.

    A reader thread decodes incoming messages into an inbox, as the gRPC link's server
    does, so both parties can stream at once without either blocking the other.
    """

    def __init__(self, party: str, peer: str, conn, job: str) -> None:
        super().__init__(party, peer, job)
        self._conn = conn
        self._inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, name=f"{party}-pipe-reader", daemon=True).start()

    def _transmit(self, seq: int, msg) -> None:
        frames = list(codec.encode(msg, self.job, seq, self.party))
        self._conn.send_bytes(len(frames).to_bytes(4, "big") + seq.to_bytes(8, "big"))
        for frame in frames:
            self._conn.send_bytes(frame)

    def _read(self) -> None:
        try:
            while True:
                head = self._conn.recv_bytes()
                frames = [self._conn.recv_bytes() for _ in range(int.from_bytes(head[:4], "big"))]
                self._inbox.put((int.from_bytes(head[4:], "big"), codec.decode(frames)))
        except (EOFError, OSError):
            self._inbox.put(None)

    def _receive(self, timeout: float | None):
        try:
            item = self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise LinkTimeout(f"{self.party}: nothing from {self.peer} within {timeout} s") from None
        if item is None:
            raise LinkError(f"{self.party}: {self.peer} closed the pipe")
        return item


class _RssTrace:
    """Resident memory of this process once a second: where in the job the peak falls."""

    def __init__(self) -> None:
        self.points: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._t0 = time.time()
        threading.Thread(target=self._run, name="rss-trace", daemon=True).start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.points.append((round(time.time() - self._t0, 1), round(proctree.status_kb("self", "VmRSS") / 1024)))

    def stop(self) -> list[tuple[float, float]]:
        self._stop.set()
        return self.points


def _party(role: str, n: int, seed: int, workers: int | None, conn, barrier, results) -> None:
    """One party of a scale case, in its own process: build its table, run PSI, report time and memory."""
    table = pd.DataFrame({"uid": make_ids(0 if role == "lender" else n // 2, n, seed)})
    table_mb = proctree.status_kb("self", "VmRSS") / 1024
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on: the PSI job (table included)
    link = PipeLink(role, "platform" if role == "lender" else "lender", conn, job=f"bench-{n}")
    run = psi_lender if role == "lender" else psi_platform
    barrier.wait()
    t0, cpu0, trace = time.time(), proctree.tree_cpu_seconds(), _RssTrace()
    res = run(link, table, ["uid"], workers=workers, min_intersection=0)
    t1, cpu, rss_trace_mb = time.time(), proctree.tree_cpu_seconds() - cpu0, trace.stop()
    workers_mb = proctree.workers_peak_rss_mb()
    peak_mb = proctree.status_kb("self", "VmHWM") / 1024
    results.put({"role": role, "start": t0, "end": t1, "size": res.size, "stats": res.stats, "cpu_seconds": cpu,
                 "table_rss_mb": table_mb, "peak_rss_mb": peak_mb, "workers_peak_rss_mb": workers_mb,
                 "peak_rss_mb_upper": peak_mb + sum(workers_mb.values()), "rss_trace_mb": rss_trace_mb,
                 "ru_maxrss_mb_incl_table_build": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})


def run_parties_apart(n: int, workers: int | None, seed: int = 1) -> dict:
    """An ``n x n`` balanced PSI with each party in its own process; see the module docstring."""
    ctx = multiprocessing.get_context("spawn")
    conn_l, conn_p = ctx.Pipe(duplex=True)
    barrier, results = ctx.Barrier(2), ctx.Queue()
    load = os.getloadavg()
    procs = [ctx.Process(target=_party, args=(role, n, seed, workers, conn, barrier, results), name=role)
             for role, conn in (("lender", conn_l), ("platform", conn_p))]
    for p in procs:
        p.start()
    got = {}
    while len(got) < 2:
        try:
            item = results.get(timeout=5)
        except queue.Empty:
            if any(p.exitcode not in (None, 0) for p in procs):
                raise SystemExit(f"a party failed: exit codes {[p.exitcode for p in procs]}")
            continue
        got[item.pop("role")] = item
    for p in procs:
        p.join()
    if got["lender"]["size"] != n // 2 or got["platform"]["size"] != n // 2:
        raise SystemExit(f"{n}x{n}: intersection {got['lender']['size']}, expected {n // 2}")
    wall = max(g["end"] for g in got.values()) - min(g["start"] for g in got.values())
    return {"n_lender": n, "n_platform": n, "intersection": n // 2, "fedacq_seconds": wall,
            "loadavg_start": load, "loadavg_end": os.getloadavg(), "memory_limit_mb": MEMORY_LIMIT_MB,
            "within_memory_limit": all(g["peak_rss_mb_upper"] <= MEMORY_LIMIT_MB for g in got.values()),
            "parties": got}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write results here")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script works")
    ap.add_argument("--cases", default="100k,1m,unbalanced,isum",
                    help="comma-separated: 100k, <N>m (e.g. 1m, 10m), unbalanced, isum")
    ap.add_argument("--workers", type=int, default=None, help="processes per party (default: all cores)")
    args = ap.parse_args(argv)
    scale = 50 if args.quick else 1
    cases = args.cases.split(",")
    out: dict = {"quick": args.quick, "machine": {"python": sys.version.split()[0],
                                                   "platform": platform_mod.platform(),
                                                   "cpus": os.cpu_count()},
                 "cases": {}, "ratios": {}}
    if "100k" in cases:
        n = 100_000 // scale
        lender, plat = make_sets(n, n, n // 2)
        load = os.getloadavg()
        cpu0 = proctree.tree_cpu_seconds()
        t_fed, size_fed, stats = run_fedacq(lender, plat, args.workers)
        cpu_fed = proctree.tree_cpu_seconds() - cpu0
        cpu0 = time.process_time()
        t_om, size_om = run_openmined(lender, plat)
        cpu_om = time.process_time() - cpu0
        if size_fed != size_om:
            raise SystemExit(f"intersection sizes differ: fedacq {size_fed}, openmined-psi {size_om}")
        out["cases"]["100k"] = {"n_lender": n, "n_platform": n, "intersection": size_fed,
                                "fedacq_seconds": t_fed, "openmined_psi_seconds": t_om,
                                # CPU seconds (all processes): what the run costs whatever else runs
                                "fedacq_cpu_seconds": cpu_fed, "openmined_psi_cpu_seconds": cpu_om,
                                "loadavg_start": load, "loadavg_end": os.getloadavg(),
                                "peak_rss_mb_both_parties_one_process":
                                    resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                                "fedacq_stats": stats}
        out["ratios"]["100k_speedup_vs_openmined"] = t_om / t_fed
        out["ratios"]["100k_cpu_ratio_openmined_over_fedacq"] = cpu_om / cpu_fed
        print(f"100k {n}x{n}: fedacq {t_fed:.1f} s, openmined-psi {t_om:.1f} s, "
              f"speed-up {t_om / t_fed:.2f}x")
    for case in cases:
        match = re.fullmatch(r"(\d+)m", case)
        if match is None:
            continue
        n = int(match.group(1)) * 1_000_000 // scale
        res = run_parties_apart(n, args.workers)
        out["cases"][case] = res
        peaks = {role: round(p["peak_rss_mb_upper"]) for role, p in res["parties"].items()}
        print(f"{case} {n}x{n}: fedacq {res['fedacq_seconds']:.1f} s, peak MB per party (upper) {peaks}")
    if "unbalanced" in cases:
        n_l, n_p = 100_000 // scale, 5_000_000 // scale
        lender, plat = make_sets(n_l, n_p, n_l // 2, seed=2)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            cache = PlatformCache.build(f"{tmp}/cache", plat, ["uid"], workers=args.workers, progress=True)
            t_build = time.perf_counter() - t0
            store = LenderSetStore(f"{tmp}/lender_sets")
            kw_l = {"mode": "unbalanced", "set_store": store}
            t_first, size1, stats1 = run_fedacq(lender, plat, args.workers, kw_l, {"cache": cache})
            t_online, size2, stats2 = run_fedacq(lender, plat, args.workers, kw_l, {"cache": cache})
        assert size1 == size2
        transfer = stats1["lender"]["seconds"].get("offline_receive_set", 0.0)
        out["cases"]["unbalanced"] = {
            "n_lender": n_l, "n_platform": n_p, "intersection": size2,
            "offline_cache_build_seconds": t_build, "offline_first_job_seconds": t_first,
            "offline_transfer_seconds": transfer, "online_seconds": t_online,
            "online_stats": stats2}
        out["ratios"]["unbalanced_first_job_vs_online"] = t_first / t_online
        print(f"unbalanced {n_l} vs {n_p}: offline build {t_build:.1f} s + first job {t_first:.1f} s "
              f"(set transfer {transfer:.1f} s); online {t_online:.1f} s")
    if "isum" in cases:
        res = run_isum(50_000 // scale, 200_000 // scale, 1000 // min(scale, 10), args.workers)
        out["cases"]["isum"] = res
        out["ratios"]["isum_packed_speedup_vs_separate_runs"] = res["separate_runs_seconds"] / res["packed_seconds"]
        print(f"isum {res['n_lender']} vs {res['n_platform']} in {res['groups']} groups, 3 columns: packed "
              f"{res['packed_seconds']:.1f} s, one run per column {res['separate_runs_seconds']:.1f} s")
    target = Path(args.json)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(out, indent=2, default=str))
    os.replace(tmp, target)
    print(json.dumps(out["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
