"""PSI benchmark: fedacq ECDH-PSI against openmined-psi, large balanced and unbalanced runs.

Cases (full size; ``--quick`` shrinks every size ~50x to check the script works):

* ``balanced``: n x n ids with 50% overlap, fedacq (two parties over an in-memory link,
  two threads, process pools) against openmined-psi (C++, P-256; client and server in
  one process) on the same ids in the same run; ratio = openmined seconds / fedacq seconds.
* ``large``: 1M x 1M balanced, fedacq wall time (target <= 120 s on 2 cores).
* ``unbalanced``: 100k lender vs 5M platform: offline (platform cache build + first
  transfer of the blinded set) and online (a job reusing both caches) timed apart.
* ``isum``: private intersection-sum of 3 outcome columns (a flag, a second flag, an
  amount), 50k lender ids vs 200k platform ids in 1000 groups, 2048-bit Paillier key:
  one packed run (fedacq) against the peer "one single-column run per outcome" (how
  measurement ran before columns were packed) in the same run;
  ratio = peer seconds / packed seconds. Message counts of both are recorded.

Usage: ``python benchmarks/psi.py --json psi.json [--quick] [--cases balanced,large,unbalanced,isum]``
"""

from __future__ import annotations

import argparse
import json
import platform as platform_mod
import sys
import tempfile
import time

import numpy as np
import pandas as pd

from fedacq.link.memory import memory_pair, run_parties
from fedacq.psi import (LenderSetStore, PlatformCache, intersection_sum_lender, intersection_sum_platform,
                        psi_lender, psi_platform)


def make_sets(n_lender: int, n_platform: int, overlap: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    universe = rng.choice(10**12, size=n_lender + n_platform - overlap, replace=False)
    ids = np.char.mod("%012d", universe)
    lender = ids[:n_lender]
    platform = np.concatenate([ids[:overlap], ids[n_lender:]])
    return (pd.DataFrame({"uid": rng.permutation(lender)}), pd.DataFrame({"uid": rng.permutation(platform)}))


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write results here")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the script works")
    ap.add_argument("--cases", default="balanced,large,unbalanced,isum")
    ap.add_argument("--workers", type=int, default=None, help="processes per party (default: all cores)")
    args = ap.parse_args(argv)
    scale = 50 if args.quick else 1
    cases = set(args.cases.split(","))
    out: dict = {"quick": args.quick, "machine": {"python": sys.version.split()[0],
                                                   "platform": platform_mod.platform()},
                 "cases": {}, "ratios": {}}
    if "balanced" in cases:
        n = 100_000 // scale
        lender, plat = make_sets(n, n, n // 2)
        t_fed, size_fed, stats = run_fedacq(lender, plat, args.workers)
        t_om, size_om = run_openmined(lender, plat)
        if size_fed != size_om:
            raise SystemExit(f"intersection sizes differ: fedacq {size_fed}, openmined-psi {size_om}")
        out["cases"]["balanced"] = {"n_lender": n, "n_platform": n, "intersection": size_fed,
                                    "fedacq_seconds": t_fed, "openmined_psi_seconds": t_om,
                                    "fedacq_stats": stats}
        out["ratios"]["balanced_speedup_vs_openmined"] = t_om / t_fed
        print(f"balanced {n}x{n}: fedacq {t_fed:.1f} s, openmined-psi {t_om:.1f} s, "
              f"speed-up {t_om / t_fed:.2f}x")
    if "large" in cases:
        n = 1_000_000 // scale
        lender, plat = make_sets(n, n, n // 2, seed=1)
        t_fed, size, stats = run_fedacq(lender, plat, args.workers)
        out["cases"]["large"] = {"n_lender": n, "n_platform": n, "intersection": size,
                                 "fedacq_seconds": t_fed, "target_seconds": 120 if not args.quick else None,
                                 "fedacq_stats": stats}
        print(f"large {n}x{n}: fedacq {t_fed:.1f} s")
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
    with open(args.json, "w") as fh:
        json.dump(out, fh, indent=2, default=str)
    print(json.dumps(out["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
