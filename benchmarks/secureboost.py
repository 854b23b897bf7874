"""SecureBoost against plaintext XGBoost (same run) and FATE's published/measured times (constants).

Two cases, both with 2048-bit Paillier keys:

* ``default_credit`` - FATE's benchmark settings (5 trees, depth 3, 32 bins,
  learning rate 0.3) on ``datasets/fate/default_credit_hetero_{guest,host}.csv``,
  through the real ``fedacq run`` job (PSI included; the platform file is
  shuffled first so the intersection is not the rows in file order), trained
  and scored on the whole intersection as FATE's benchmark does. Compared with
  XGBoost ``hist`` on the joined data, and with FATE 2.2's 1360 s (2048-bit key)
  and 507 s (1024-bit key) measured on this machine (issue 8).
* ``synthetic`` - ``--rows`` (100k) rows, 30 lender + 300 platform features,
  depth 5, 32 bins: seconds per tree of the SecureBoost protocol with
  ``--scheme`` (Paillier or OU, 2048-bit keys) and the platform's histograms on
  ``--engine`` (local worker processes, or Ray: ``--ray-address`` or a loopback
  cluster of two 1-CPU nodes the benchmark starts, as the tests do). Each party
  runs in a process of its own (``spawn``), rows aligned by construction (no
  PSI), the two connected by a pipe carrying the link's wire frames; each
  generates its own float32 columns from the seed (:func:`synthetic_columns`).
  Peak memory per party (:class:`MemoryWatch`): the largest sum of resident
  memory over the party's process and its worker processes, sampled from
  ``/proc`` (plus, with the loopback Ray cluster, the cluster's processes,
  which then run only the platform's histogram actors); not ``RUSAGE_CHILDREN``,
  which reports one child's peak and misses a pool's grandchildren. Against
  XGBoost ``hist`` on the same data (every core): trees compared split for
  split up to 200k rows, above that its time and AUC only (``--compare``); and
  FATE's published 131 s per tree on 16 cores.

* ``kernel`` - one tree's cryptographic work without the protocol around it,
  per additive scheme (Paillier, OU; 2048-bit keys): the lender's encryption
  of the packed gradients, the platform's histograms (root, then per level the
  smaller child of each split from rows: joint cells of feature pairs,
  :func:`fedacq.learn.histogram.build_histograms`; cumulative and compressed,
  through :class:`fedacq.learn.histogram.HistogramEngine` with every core or
  ``--kernel-jobs``) and the lender's decryption and decoding of the root and
  the built children, each sibling derived as parent - child on the integers.
  Splits are random halves-ish (the smaller child 20-50% of its parent). Run on
  ``--kernel-rows`` x ``--kernel-features`` and extrapolated to 100k x 300:
  histogram products scale with rows x features (pairs gain a little more at
  100k rows than at fewer: the per-pair fold costs cells, not rows),
  compression (timed apart on one core) and decryption with features x nodes
  sent, encryption with rows. ``--kernel-baseline`` also runs the previous
  kernel and protocol (per feature, both children sent and decrypted) in the
  same run; ``--kernel-zero-fraction 0.8`` adds sparse platform features (each
  0 for 80% of users, as ad-platform counts are) BESIDE the dense case, whose
  figures stay the headline.

``--quick`` runs tiny versions with a 1024-bit test-only key to check that the
script works; its numbers mean nothing. Full run::

    python benchmarks/secureboost.py --json benchmarks/results/secureboost.json

The synthetic case at scale (quiet machine; file names as in ``benchmarks/results``): OU against
Paillier, and the local engine against a loopback Ray cluster, each pair in one run::

    python benchmarks/secureboost.py --cases synthetic --rows 100000 --scheme ou,paillier --synthetic-trees 2 \
        --json benchmarks/results/secureboost_scale_100k_local.json
    python benchmarks/secureboost.py --cases synthetic --rows 100000 --scheme ou --engine local,ray \
        --synthetic-trees 2 --json benchmarks/results/secureboost_scale_100k_ou_ray.json
    python benchmarks/secureboost.py --cases synthetic --rows 1000000 --scheme ou --synthetic-trees 1 \
        --json benchmarks/results/secureboost_scale_1m_ou_local.json

The kernel case at full size (the dense headline; ``--kernel-zero-fraction 0.8`` adds the sparse case beside
it; run it alone, quiet)::

    python benchmarks/secureboost.py --cases kernel --kernel-rows 100000 --kernel-features 300 \
        --json benchmarks/results/secureboost_kernel_100k.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import queue
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import proctree

DATA = Path(os.environ.get("FEDACQ_DATASETS", "/work/shared/datasets")) / "fate"

#: FATE 2.2 on default_credit, 5 trees depth 3, 32 bins (issue 8; measured on this machine, quiet).
FATE_SECONDS_2048 = 1360.0
FATE_SECONDS_1024 = 507.0
FATE_TRAIN_AUC = 0.7686
#: FATE's own published SecureBoost figure: 100k rows, 30 + 300 features, depth 5, 16 cores.
FATE_SECONDS_PER_TREE_SYNTHETIC = 131.0


def xgboost_hist(X: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> tuple[float, float, Any]:
    """(seconds, train AUC, booster) of plaintext XGBoost ``hist`` on the joined columns (every core)."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    train = xgb.QuantileDMatrix(X, label=y, max_bin=params["max_bin"])
    booster = xgb.train({"tree_method": "hist", "objective": "binary:logistic", "max_depth": params["max_depth"],
                         "eta": params["learning_rate"], "max_bin": params["max_bin"], "lambda": 1.0,
                         "min_child_weight": 1.0, "nthread": params.get("n_jobs") or os.cpu_count()},
                        train, params["n_estimators"])
    seconds = time.perf_counter() - start
    return seconds, float(roc_auc_score(y, booster.predict(train))), booster


def bench_default_credit(quick: bool, key_bits: int, work: Path) -> dict[str, Any]:
    from fedacq.learn.run import RunConfig, run

    guest = pd.read_csv(DATA / "default_credit_hetero_guest.csv")
    host = pd.read_csv(DATA / "default_credit_hetero_host.csv")
    if quick:
        guest, host = guest.iloc[:1500], host.iloc[:1500]
    host = host.sample(frac=1.0, random_state=42)  # not the guest's order: PSI has work to do
    lender_csv, platform_csv = work / "lender.csv", work / "platform.csv"
    guest.to_csv(lender_csv, index=False)
    host.to_csv(platform_csv, index=False)
    params = {"n_estimators": 2 if quick else 5, "max_depth": 3, "max_bin": 32, "learning_rate": 0.3}

    cfg = RunConfig(lender_csv, platform_csv, "id", "y", work / "run", params=params,
                    key_bits=key_bits, insecure_test_key=key_bits < 2048, validation_fraction=0.0,
                    progress=True)
    start = time.perf_counter()
    out = run(cfg)
    wall = time.perf_counter() - start
    t = out["timings"]
    fedacq_train = t["psi"] + t["train"]

    joined = guest.merge(host, on="id", suffixes=("_lender", "_platform"))
    X = joined.drop(columns=["id", "y"]).to_numpy(dtype=np.float64)
    xgb_seconds, xgb_auc, _ = xgboost_hist(X, joined["y"].to_numpy(), params)
    return {
        "case": "default_credit",
        "rows_lender": len(guest), "rows_platform": len(host),
        "intersection_size": out["intersection_size"],
        "params": params, "key_bits": key_bits,
        "fedacq": {"psi_plus_train_seconds": fedacq_train, "psi_seconds": t["psi"],
                   "train_seconds": t["train"], "predict_seconds": t.get("predict"),
                   "job_wall_seconds": wall, "train_auc": out["train"]["auc"],
                   "train_ks": out["train"]["ks"],
                   "bytes_lender_to_platform": out["bytes"]["lender_to_platform"],
                   "bytes_platform_to_lender": out["bytes"]["platform_to_lender"]},
        "xgboost_hist": {"seconds": xgb_seconds, "train_auc": xgb_auc},
        "fate": {"seconds_2048": FATE_SECONDS_2048, "seconds_1024": FATE_SECONDS_1024,
                 "train_auc": FATE_TRAIN_AUC, "source": "constants from issue 8 (FATE 2.2, this machine)"},
        "ratios": {
            "fate_2048_over_fedacq": FATE_SECONDS_2048 / fedacq_train,
            "fate_1024_over_fedacq": FATE_SECONDS_1024 / fedacq_train,
            "fedacq_over_xgboost": fedacq_train / xgb_seconds,
            "auc_fedacq_minus_xgboost": out["train"]["auc"] - xgb_auc,
        },
    }


def synthetic_columns(role: str, rows: int, lender_features: int, platform_features: int, seed: int = 0
                      ) -> tuple[np.ndarray, np.ndarray | None]:
    """One party's float32 columns (and the lender's labels), generated in that party's own process.

    Every column has its own stream (``default_rng([seed, party, column])``), so a party
    builds only its columns, straight into one float32 array, and the same seed gives the
    same data in the parties and in the XGBoost run. Labels: a logistic model over the
    lender's first 5 and the platform's first 10 columns (the lender regenerates those 10
    from their streams; the benchmark plays both sides, as a shared seed stands for data
    that would really be aligned by PSI).
    """
    def columns(party: int, count: int) -> np.ndarray:
        out = np.empty((rows, count), dtype=np.float32)
        for j in range(count):
            out[:, j] = np.random.default_rng([seed, party, j]).standard_normal(rows, dtype=np.float32)
        return out

    if role == "platform":
        return columns(2, platform_features), None
    X_l = columns(1, lender_features)
    weights = np.random.default_rng([seed, 0])
    w_l, w_p = weights.normal(size=min(5, lender_features)), weights.normal(size=min(10, platform_features))
    logit = X_l[:, :len(w_l)].astype(np.float64) @ w_l + columns(2, len(w_p)).astype(np.float64) @ w_p * 0.5
    y = (np.random.default_rng([seed, 3]).random(rows) < 1.0 / (1.0 + np.exp(-(logit - 1.0)))).astype(np.float32)
    return X_l, y


class MemoryWatch:
    """Peak memory of this process and every process below it, sampled from ``/proc`` while a party runs.

    ``tree_peak_mb``: the largest SUM of ``VmRSS`` over this process and its live
    descendants (its crypto pool, its histogram workers) seen at one sample (every
    ``interval`` seconds; a peak shorter than that can be missed). ``self_peak_mb``: this
    process's ``VmHWM`` (the kernel's exact high-water mark, = ``ru_maxrss`` of
    ``RUSAGE_SELF``); ``workers_peak_mb``: each descendant's last ``VmHWM`` seen;
    ``sum_of_peaks_mb``: self + workers' high-water marks, an upper bound (their peaks need not
    coincide; pages a worker shares count in each). ``extra_pids`` adds processes outside
    the tree (a Ray cluster's, measured by the benchmark's parent).
    """

    def __init__(self, interval: float = 0.5, extra_pids: Any = None) -> None:
        import threading

        self.interval, self.extra_pids = interval, extra_pids
        self.tree_peak_kb, self.workers_hwm_kb = 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _pids(self) -> list[int]:
        if self.extra_pids is not None:
            return list(self.extra_pids())
        return [os.getpid(), *proctree.descendants(os.getpid())]

    def _sample(self) -> None:
        total = 0
        for pid in self._pids():
            total += proctree.status_kb(pid, "VmRSS")
            if pid != os.getpid():
                self.workers_hwm_kb[pid] = max(self.workers_hwm_kb.get(pid, 0), proctree.status_kb(pid, "VmHWM"))
        self.tree_peak_kb = max(self.tree_peak_kb, total)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> "MemoryWatch":
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def report(self) -> dict[str, Any]:
        workers = {str(pid): round(kb / 1024, 1) for pid, kb in self.workers_hwm_kb.items() if kb}
        own = proctree.status_kb(os.getpid(), "VmHWM") / 1024 if self.extra_pids is None else 0.0
        return {"tree_peak_mb": round(self.tree_peak_kb / 1024, 1), "self_peak_mb": round(own, 1),
                "workers_peak_mb": workers, "sum_of_peaks_mb": round(own + sum(workers.values()), 1)}


def _tree_splits(tree: Any, platform_tree: Any, d_l: int) -> list[tuple[int, int, float]]:
    """(node, joined feature, threshold) of every split: lender features first, as in the joined XGBoost data."""
    out = []
    for i in range(tree.n_nodes):
        if tree.party[i] == 0:
            out.append((i, int(tree.feature[i]), float(tree.threshold[i])))
        elif tree.party[i] == 1:
            out.append((i, d_l + int(platform_tree.feature[i]), float(platform_tree.threshold[i])))
    return out


def synthetic_party(role: str, conn: Any, args: dict[str, Any], out: Any) -> None:
    """One party of the synthetic case in this (spawned) process: its data, its fit, its report on ``out``.

    The platform runs its histograms on ``args["engine"]`` (local worker processes or a Ray
    cluster); the lender's encryption and decryption stay on its local pool.
    """
    import traceback

    from fedacq import compute
    from fedacq.crypto import parallel
    from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
    from hetero_lr import pipe_link

    try:
        with MemoryWatch() as watch:
            X, y = synthetic_columns(role, args["rows"], args["lender_features"], args["platform_features"],
                                     args["seed"])
            data_mb = (X.nbytes + (0 if y is None else y.nbytes)) / 2 ** 20
            link = pipe_link(role, "platform" if role == "lender" else "lender", conn)
            engine = compute.make_engine(compute.ComputeConfig(engine="ray", address=args["ray_address"])) \
                if role == "platform" and args["engine"] == "ray" else compute.LocalEngine()
            marks: list[float] = []
            c0 = proctree.tree_cpu_seconds()
            start = time.perf_counter()
            with compute.using(engine):
                if role == "lender":
                    model = SecureBoostLender(**args["params"], scheme=args["scheme"], key_bits=args["key_bits"],
                                              insecure_test_key=args["key_bits"] < 2048,
                                              callback=lambda i, m: marks.append(time.perf_counter()))
                    model.fit(link, X, y)
                else:  # the key floor is this benchmark's own key size: both sides are this benchmark
                    model = SecureBoostPlatform(min_key_bits=args["key_bits"], schemes=(args["scheme"],)).fit(link, X)
            seconds = time.perf_counter() - start
            cpu = proctree.tree_cpu_seconds() - c0  # the live pool's and this process's; ended workers not counted
        report: dict[str, Any] = {"seconds": seconds, "cpu_seconds_live_tree": round(cpu, 2),
                                  "data_mb": round(data_mb, 1), "memory": watch.report(),
                                  "bytes_sent": link.stats()["bytes_sent"],
                                  "timings": {k: round(v, 3) for k, v in getattr(model, "timings_", {}).items()}}
        if role == "lender":
            report["seconds_each_tree"] = np.diff(np.r_[start, marks]).tolist()
            report["train_auc"] = model.history_[-1].get("train_auc")
            report["trees"] = [t.to_dict() for t in model.trees_]
        else:
            report["trees"] = [t.to_dict() for t in model.trees_]
        parallel.shutdown()
        out.put((role, report))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the run
        out.put((role, {"error": traceback.format_exc()}))


def synthetic_federated(args: dict[str, Any], cluster: Any = None) -> dict[str, Any]:
    """Both parties of the synthetic case, each in its own process, connected by a pipe of wire frames."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    a, b = ctx.Pipe()
    out = ctx.Queue()
    procs = [ctx.Process(target=synthetic_party, args=(role, conn, args, out))
             for role, conn in (("lender", a), ("platform", b))]
    watch = MemoryWatch(extra_pids=cluster.pids) if cluster is not None else None
    if watch is not None:
        watch.__enter__()
    try:
        for proc in procs:
            proc.start()
        reports: dict[str, Any] = {}
        while len(reports) < len(procs):
            try:
                role, report = out.get(timeout=5.0)
            except queue.Empty:  # a party that dies without a report (a signal, the OOM killer) ends the run
                dead = [f"{r} (exit code {p.exitcode})" for r, p in zip(("lender", "platform"), procs)
                        if p.exitcode is not None and r not in reports]
                if dead:
                    raise RuntimeError(f"party process ended without a report: {', '.join(dead)}") from None
                continue
            if "error" in report:
                raise RuntimeError(f"the {role} failed:\n{report['error']}")
            reports[role] = report
    finally:
        if watch is not None:
            watch.__exit__()
        for proc in procs:
            if proc.is_alive() and len(reports) < len(procs):
                proc.kill()
            proc.join()
    if watch is not None:
        reports["platform"]["memory"]["ray_cluster"] = watch.report()
    return reports


def bench_synthetic(quick: bool, key_bits: int, trees: int, rows: int | None = None, scheme: str = "paillier",
                    engine: str = "local", ray_address: str | None = None, depth: int | None = None,
                    platform_features: int | None = None, compare: str = "auto", seed: int = 0,
                    xgb: dict[str, Any] | None = None) -> dict[str, Any]:
    """The synthetic case: per tree seconds, each party's peak memory, and XGBoost on the same data.

    ``xgb``: where XGBoost's run is kept between configurations of one benchmark run (same data).
    """
    from fedacq.learn.tree import Tree

    rows = rows or (2000 if quick else 100_000)
    n_l, n_p = (5, 20) if quick else (30, 300)
    n_p = platform_features or n_p
    depth = depth or (3 if quick else 5)
    params = {"n_estimators": trees, "max_depth": depth, "max_bin": 32, "learning_rate": 0.3}
    args = {"rows": rows, "lender_features": n_l, "platform_features": n_p, "seed": seed, "params": params,
            "scheme": scheme, "key_bits": key_bits, "engine": engine, "ray_address": ray_address}
    cluster = None
    with tempfile.TemporaryDirectory() as tmp:
        if engine == "ray" and ray_address is None:  # a loopback cluster of this benchmark's own
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from ray_cluster import cluster_env, start_cluster

            cluster = start_cluster(Path(tmp) / "ray")
            args["ray_address"] = cluster.address
            os.environ.update(cluster_env(Path(tmp) / "ray"))  # the platform's driver inherits it (spawn)
        try:
            reports = synthetic_federated(args, cluster)
        finally:
            if cluster is not None:
                cluster.close()
    lender, platform = reports["lender"], reports["platform"]
    l_trees = [Tree.from_dict(t) for t in lender.pop("trees")]
    p_trees = [Tree.from_dict(t) for t in platform.pop("trees")]
    per_tree = lender["seconds_each_tree"]
    out: dict[str, Any] = {
        "case": "synthetic", "rows": rows, "lender_features": n_l, "platform_features": n_p, "seed": seed,
        "params": params, "key_bits": key_bits, "scheme": scheme, "engine": engine,
        "fedacq": {"train_seconds": lender["seconds"], "seconds_per_tree": lender["seconds"] / trees,
                   "seconds_each_tree": per_tree, "train_auc": lender["train_auc"],
                   "note": "seconds_each_tree[0] includes the setup (keys, the platform's binning and workers); "
                           "with 2+ trees the last one is the steady per-tree figure",
                   "bytes_lender_to_platform": lender["bytes_sent"],
                   "bytes_platform_to_lender": platform["bytes_sent"]},
        "parties": {"lender": lender, "platform": platform},
        "peak_memory_mb": {"lender": lender["memory"]["tree_peak_mb"],
                           "platform": platform["memory"]["tree_peak_mb"]
                           + platform["memory"].get("ray_cluster", {}).get("tree_peak_mb", 0.0)},
        "fate": {"seconds_per_tree": FATE_SECONDS_PER_TREE_SYNTHETIC,
                 "source": "FATE's published figure, 100k x (30 + 300), 16 cores (constant)"},
        "ratios": {"fate_over_fedacq_per_tree": FATE_SECONDS_PER_TREE_SYNTHETIC / (lender["seconds"] / trees)},
    }
    if compare == "none":
        return out
    xgb = {} if xgb is None else xgb
    if "booster" not in xgb:
        X_l, y = synthetic_columns("lender", rows, n_l, n_p, seed)
        X = np.hstack([X_l, synthetic_columns("platform", rows, n_l, n_p, seed)[0]])
        del X_l
        xgb["seconds"], xgb["auc"], xgb["booster"] = xgboost_hist(X, y, params)
        del X
    xgb_seconds, xgb_auc, booster = xgb["seconds"], xgb["auc"], xgb["booster"]
    out["xgboost_hist"] = {"seconds": xgb_seconds, "seconds_per_tree": xgb_seconds / trees, "train_auc": xgb_auc}
    out["ratios"]["fedacq_over_xgboost"] = lender["seconds"] / xgb_seconds
    out["ratios"]["auc_fedacq_minus_xgboost"] = lender["train_auc"] - xgb_auc
    if compare == "trees" or (compare == "auto" and rows <= 200_000):
        import re

        dumps = booster.get_dump()
        same = len(dumps) == len(l_trees)
        for t, dump in enumerate(dumps[:len(l_trees)]):
            want = sorted((int(n), int(f), float(c)) for n, f, c in re.findall(r"(\d+):\[f(\d+)<([^\]]+)\]", dump))
            got = sorted(_tree_splits(l_trees[t], p_trees[t], n_l))
            same = same and [g[:2] for g in got] == [w[:2] for w in want] and \
                np.allclose([g[2] for g in got], [w[2] for w in want], rtol=1e-6)
        out["trees_equal_xgboost"] = bool(same)
    return out


def _kernel_splits(rng: np.random.Generator, rows: int, depth: int) -> list[list[tuple[int, int, int, np.ndarray]]]:
    """Random splits, level by level: (parent, smaller child, bigger child, rows of the smaller child).

    The smaller child holds 20-50% of its parent's rows; every node is split down to ``depth``.
    """
    members = {0: np.arange(rows)}
    levels, next_id = [], 1
    for _ in range(depth - 1):
        jobs, new = [], {}
        for node, rs in members.items():
            cut = int(len(rs) * rng.uniform(0.2, 0.5))
            perm = rng.permutation(rs)
            small, big = np.sort(perm[:cut]), np.sort(perm[cut:])
            jobs.append((node, next_id, next_id + 1, small))
            new[next_id], new[next_id + 1] = small, big
            next_id += 2
        levels.append(jobs)
        members = new
    return levels


def _kernel_run(pk, sk, codec, cts, bins: np.ndarray, n_bins: np.ndarray, levels, pair_features: bool,
                send_siblings: bool, jobs: int | None) -> dict[str, Any]:
    """One tree's platform histograms and lender decryption under one kernel and protocol variant.

    ``send_siblings``: the previous protocol (the platform emits both children of
    every split, the lender decrypts both); otherwise only the built children are
    emitted and the lender derives each sibling as parent - child on the integers.
    ``*_cpu`` seconds are this process's CPU time: the whole work with ``jobs=1``
    (and far less sensitive to other processes' load than wall time).
    """
    from fedacq.crypto.paillier import EncryptedVector, decompress
    from fedacq.learn.histogram import HistogramEngine, n_compressed, planned_products

    layout, n_bits = codec.layout, pk.plaintext_bits + 1
    engine = HistogramEngine(bins, n_bins, pk.ciphertext_modulus, n_bits, layout.entry_bits,
                             n_jobs=jobs, pair_features=pair_features)
    t = {"histograms": 0.0, "decrypt": 0.0}
    c0 = time.process_time()
    try:
        t0 = time.perf_counter()
        engine.start_tree(cts, np.arange(bins.shape[1]))
        outputs = [(engine.root(), [0], [])]
        blocks = [k for k in engine.block_features if k]
        t["histograms"] += time.perf_counter() - t0
        for level in levels:
            built = sorted(j[1] for j in level)
            nodes = sorted(built + [j[2] for j in level]) if send_siblings else built
            t0 = time.perf_counter()
            outputs.append((engine.level(level, nodes), nodes, [] if send_siblings else level))
            t["histograms"] += time.perf_counter() - t0
    finally:
        engine.close()
    t["histograms_cpu"] = time.process_time() - c0
    width = int(n_bins.sum())
    decrypted = emitted = 0
    entries: dict[int, list[int]] = {}
    t0, c0 = time.perf_counter(), time.process_time()
    for packed, nodes, derive in outputs:  # each feature block's output is compressed on its own
        plain = sk.decrypt_raw(EncryptedVector(pk, packed), workers=jobs)
        per_node: dict[int, list[int]] = {nd: [] for nd in nodes}
        pos, start = 0, 0
        for k in blocks:
            w = int(n_bins[start:start + k].sum())
            start += k
            count = w * len(nodes)
            n_ct = n_compressed(count, layout.entry_bits, n_bits)
            flat = decompress(plain[pos:pos + n_ct], layout.entry_bits, count, pk)
            for i, nd in enumerate(nodes):
                per_node[nd].extend(flat[i * w:(i + 1) * w])
            pos += n_ct
        assert pos == len(plain)
        for parent, small, big, _ in derive:
            per_node[big] = [p - c for p, c in zip(entries[parent], per_node[small])]
        for nd, e in per_node.items():
            assert len(e) == width
            codec.decode(e)
        entries = per_node
        decrypted += len(plain)
        emitted += len(nodes)
    t["decrypt"] = time.perf_counter() - t0
    t["decrypt_cpu"] = time.process_time() - c0
    products = planned_products(bins, n_bins, np.arange(bins.shape[0]), pair_features) + sum(
        planned_products(bins, n_bins, job[3], pair_features) for level in levels for job in level)
    return {"seconds": t, "ciphertexts_decrypted": decrypted, "nodes_emitted": emitted,
            "planned_products": products}


def bench_kernel(quick: bool, key_bits: int, rows: int, features: int, depth: int,
                 zero_fraction: float | None = None, baseline: bool = False,
                 jobs: int | None = None) -> dict[str, Any]:
    """One tree's encryption, histograms and decryption per scheme (see the module docstring)."""
    from fedacq.crypto import scheme
    from fedacq.crypto.parallel import cpu_count
    from fedacq.learn.histogram import GradientCodec, PackingLayout, compress
    from gmpy2 import mpz

    if quick:
        rows, features, depth = 600, 6, 3
    rng = np.random.default_rng(0)
    dense = rng.integers(0, 32, size=(rows, features)).astype(np.int16)
    data = {"dense": dense}
    if zero_fraction is not None:  # each feature 0 (one bin) for that fraction of users, as count features are
        sparse = dense.copy()
        sparse[rng.random((rows, features)) < zero_fraction] = 0
        data[f"zero_fraction_{zero_fraction:g}"] = sparse
    n_bins = np.full(features, 32)
    g, h = rng.normal(size=rows), rng.random(rows)
    levels = _kernel_splits(rng, rows, depth)
    variants = {"pairs_built_children": (True, False)}
    if baseline:
        variants["per_feature_both_children"] = (False, True)
    target_rows, target_features = 100_000, 300
    out: dict[str, Any] = {"case": "kernel", "rows": rows, "features": features, "max_depth": depth,
                           "max_bin": 32, "key_bits": key_bits, "schemes": {}, "ratios": {}}
    for name in ("paillier", "ou"):
        pk, sk = scheme.generate_keypair(name, key_bits, insecure_test_key=key_bits < 2048)
        layout = PackingLayout.for_rows(target_rows)  # the 100k-row layout: entry size as at scale
        codec = GradientCodec(layout)
        n_bits = pk.plaintext_bits + 1
        t0 = time.perf_counter()
        cts = sk.encrypt_raw(codec.encode(g, h, np.ones(rows, dtype=bool))).ciphertexts
        encrypt = time.perf_counter() - t0
        # compression cost per emitted bin sum, timed on its own on one core (the engine uses every core)
        sample = [mpz(int.from_bytes(os.urandom(pk.ciphertext_bytes), "big")) % pk.ciphertext_modulus
                  for _ in range(features * 32)]
        t0, c0 = time.perf_counter(), time.process_time()
        compress(sample, layout.entry_bits, n_bits, pk.ciphertext_modulus)
        per_entry = (time.perf_counter() - t0) / len(sample) / (jobs or cpu_count())
        per_entry_cpu = (time.process_time() - c0) / len(sample)
        res: dict[str, Any] = {"encrypt_seconds": encrypt, "ciphertext_bytes": pk.ciphertext_bytes,
                               "values_per_compressed_ciphertext": (n_bits - 1) // layout.entry_bits}
        for dname, bins in data.items():
            res[dname] = {}
            for vname, (pair_features, send_siblings) in variants.items():
                r = _kernel_run(pk, sk, codec, cts, bins, n_bins, levels, pair_features, send_siblings, jobs)
                sec = r["seconds"]
                sec["compress_estimate"] = per_entry * features * 32 * r["nodes_emitted"]
                if jobs == 1:  # CPU seconds: the whole work, in this process
                    sec["compress_cpu"] = per_entry_cpu * features * 32 * r["nodes_emitted"]
                    sec["products_cpu"] = max(sec["histograms_cpu"] - sec["compress_cpu"], 0.0)
                    scale = {"products_cpu": target_rows * target_features / (rows * features),
                             "compress_cpu": target_features / features, "decrypt_cpu": target_features / features}
                    r["extrapolated_100k_x_300_core_seconds"] = {k: sec[k] * v for k, v in scale.items()}
                products = max(sec["histograms"] - sec["compress_estimate"], 0.0)
                ext = {"encrypt": encrypt * target_rows / rows,
                       "histogram_products": products * target_rows * target_features / (rows * features),
                       "compress": sec["compress_estimate"] * target_features / features,
                       "decrypt": sec["decrypt"] * target_features / features}
                ext["tree"] = sum(ext.values())
                r["extrapolated_100k_x_300_seconds"] = ext
                res[dname][vname] = r
            if baseline:
                old = res[dname]["per_feature_both_children"]["extrapolated_100k_x_300_seconds"]
                new = res[dname]["pairs_built_children"]["extrapolated_100k_x_300_seconds"]
                out["ratios"][f"{name}/{dname}/per_feature_over_pairs"] = \
                    {k: old[k] / new[k] for k in old if new[k] > 0 and k != "encrypt"}
                old_s = res[dname]["per_feature_both_children"]["seconds"]
                new_s = res[dname]["pairs_built_children"]["seconds"]
                out["ratios"][f"{name}/{dname}/per_feature_over_pairs_counts"] = {
                    k: res[dname]["per_feature_both_children"][k] / res[dname]["pairs_built_children"][k]
                    for k in ("planned_products", "nodes_emitted", "ciphertexts_decrypted")}
                out["ratios"][f"{name}/{dname}/per_feature_over_pairs_cpu"] = \
                    {k: old_s[k] / new_s[k] for k in ("histograms_cpu", "products_cpu", "compress_cpu", "decrypt_cpu")
                     if new_s.get(k)}
        out["schemes"][name] = res
    for dname in data:
        p_, o_ = (out["schemes"][k][dname]["pairs_built_children"]["extrapolated_100k_x_300_seconds"]
                  for k in ("paillier", "ou"))
        out["ratios"][f"{dname}/paillier_over_ou"] = {k: p_[k] / o_[k] for k in p_ if o_[k] > 0}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", required=True, type=Path, help="write the results here")
    p.add_argument("--quick", action="store_true", help="tiny sizes and a 1024-bit test key: checks the script only")
    p.add_argument("--cases", default="default_credit,synthetic", help="comma-separated cases to run")
    p.add_argument("--synthetic-trees", type=int, default=2, help="trees to time on the synthetic case")
    p.add_argument("--rows", type=int, default=None, help="rows of the synthetic case (default 100000)")
    p.add_argument("--platform-features", type=int, default=None,
                   help="platform features of the synthetic case (default 300; the lender has 30)")
    p.add_argument("--depth", type=int, default=None, help="max_depth of the synthetic case (default 5)")
    p.add_argument("--scheme", default="paillier",
                   help="additive scheme(s) of the synthetic case: paillier, ou or paillier,ou (ratios in one run)")
    p.add_argument("--engine", default="local",
                   help="the platform's compute engine(s) in the synthetic case (histograms): local, ray or "
                        "local,ray (ratios in one run)")
    p.add_argument("--ray-address", default=None,
                   help="with --engine ray: the platform's Ray cluster (default: start a loopback one)")
    p.add_argument("--compare", choices=("auto", "trees", "auc", "none"), default="auto",
                   help="XGBoost on the synthetic data: trees split for split (auto: up to 200k rows), "
                        "time and AUC only (auto: above), or not at all")
    p.add_argument("--key-bits", type=int, default=None,
                   help="key size of the synthetic case; below 2048 only to measure memory scaling "
                        "(an insecure test key, never a result)")
    p.add_argument("--kernel-rows", type=int, default=20_000, help="rows of the kernel case")
    p.add_argument("--kernel-features", type=int, default=30, help="platform features of the kernel case")
    p.add_argument("--kernel-depth", type=int, default=5, help="max_depth of the kernel case")
    p.add_argument("--kernel-zero-fraction", type=float, default=None,
                   help="also run the kernel case on sparse platform features: each is 0 for this fraction of "
                        "users (ad-platform counts); reported beside the dense case, never instead of it")
    p.add_argument("--kernel-baseline", action="store_true",
                   help="also run the previous kernel (per feature, both children sent and decrypted) in the "
                        "same run, for ratios")
    p.add_argument("--kernel-jobs", type=int, default=None,
                   help="processes of the kernel case (default: every core); 1 makes its CPU seconds the whole work")
    args = p.parse_args(argv)

    # --quick is a smoke check of this script; 1024 bits keeps it fast and is never a result.
    key_bits = 1024 if args.quick else 2048
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    if args.quick:
        print("--quick: tiny sizes and a 1024-bit test key; the ratios below mean nothing")
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not set(args.scheme.split(",")) <= {"paillier", "ou"} or not set(args.engine.split(",")) <= {"local", "ray"}:
        p.error("--scheme takes paillier and/or ou, --engine local and/or ray (comma-separated)")
    unknown = set(cases) - {"default_credit", "synthetic", "kernel"}
    if unknown:
        p.error(f"unknown case(s): {', '.join(sorted(unknown))}")
    results: dict[str, Any] = {
        "benchmark": "secureboost", "quick": args.quick, "key_bits": key_bits,
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                    "platform": host_platform.platform()},
        "cases": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        if "default_credit" in cases:
            r = bench_default_credit(args.quick, key_bits, Path(tmp))
            results["cases"].append(r)
            f, x = r["fedacq"], r["xgboost_hist"]
            print(f"default_credit ({r['intersection_size']} rows, {r['params']['n_estimators']} trees, "
                  f"{key_bits}-bit key): fedacq {f['psi_plus_train_seconds']:.1f} s "
                  f"(psi {f['psi_seconds']:.1f} + train {f['train_seconds']:.1f}), AUC {f['train_auc']:.4f}; "
                  f"xgboost hist {x['seconds']:.2f} s, AUC {x['train_auc']:.4f}")
            print(f"  FATE 2048-bit / fedacq = {r['ratios']['fate_2048_over_fedacq']:.1f}x, "
                  f"FATE 1024-bit / fedacq = {r['ratios']['fate_1024_over_fedacq']:.1f}x, "
                  f"fedacq / xgboost = {r['ratios']['fedacq_over_xgboost']:.0f}x, "
                  f"AUC fedacq - xgboost = {r['ratios']['auc_fedacq_minus_xgboost']:+.4f}")
        if "synthetic" in cases:
            xgb: dict[str, Any] = {}
            runs: dict[tuple[str, str], dict[str, Any]] = {}
            for engine in args.engine.split(","):
                for scheme_name in args.scheme.split(","):
                    r = bench_synthetic(args.quick, args.key_bits or key_bits, args.synthetic_trees, args.rows,
                                        scheme_name, engine, args.ray_address, args.depth, args.platform_features,
                                        args.compare, xgb=xgb)
                    results["cases"].append(r)
                    runs[engine, scheme_name] = r
                    x = r.get("xgboost_hist")
                    print(f"synthetic ({r['rows']} rows, {r['lender_features']}+{r['platform_features']} features, "
                          f"depth {r['params']['max_depth']}, {r['scheme']}-{r['key_bits']}, {r['engine']}): "
                          f"fedacq {r['fedacq']['seconds_per_tree']:.1f} s/tree (each: "
                          f"{', '.join(f'{v:.1f}' for v in r['fedacq']['seconds_each_tree'])}), AUC "
                          f"{r['fedacq']['train_auc']:.4f}; peak MB lender {r['peak_memory_mb']['lender']:.0f}, "
                          f"platform {r['peak_memory_mb']['platform']:.0f}")
                    if x:
                        print(f"  xgboost hist {x['seconds_per_tree']:.3f} s/tree, AUC {x['train_auc']:.4f}; "
                              f"fedacq / xgboost = {r['ratios']['fedacq_over_xgboost']:.0f}x; trees equal: "
                              f"{r.get('trees_equal_xgboost', 'not compared')}")
            # the last tree: the first one also holds the setup (keys, the platform's binning, its workers)
            per_tree = {k: v["fedacq"]["seconds_each_tree"][-1] for k, v in runs.items()}
            ratios = {f"{e}/paillier_over_ou_last_tree": per_tree[e, "paillier"] / per_tree[e, "ou"]
                      for e, _ in per_tree if (e, "paillier") in per_tree and (e, "ou") in per_tree}
            ratios.update({f"{sc}/ray_over_local_last_tree": per_tree["ray", sc] / per_tree["local", sc]
                           for _, sc in per_tree if ("ray", sc) in per_tree and ("local", sc) in per_tree})
            if ratios:  # contenders of this one run, same data
                results["synthetic_ratios"] = ratios
                print("  " + json.dumps({k: round(v, 2) for k, v in ratios.items()}))
        if "kernel" in cases:
            if args.kernel_zero_fraction is not None and not 0 <= args.kernel_zero_fraction < 1:
                p.error("--kernel-zero-fraction must be in [0, 1)")
            r = bench_kernel(args.quick, key_bits, args.kernel_rows, args.kernel_features, args.kernel_depth,
                             args.kernel_zero_fraction, args.kernel_baseline, args.kernel_jobs)
            results["cases"].append(r)
            for name, sr in r["schemes"].items():
                for dname, variants in sr.items():
                    if not isinstance(variants, dict) or "pairs_built_children" not in variants:
                        continue
                    for vname, vr in variants.items():
                        sec, ext = vr["seconds"], vr["extrapolated_100k_x_300_seconds"]
                        print(f"kernel {name} {dname} {vname} ({r['rows']} rows x {r['features']} features, "
                              f"depth {r['max_depth']}): encrypt {sr['encrypt_seconds']:.2f} s, histograms "
                              f"{sec['histograms']:.2f} s, decrypt {sec['decrypt']:.2f} s "
                              f"({vr['ciphertexts_decrypted']} ciphertexts); at 100k x 300 ~{ext['tree']:.0f} "
                              f"s/tree ({', '.join(f'{k} {v:.0f}' for k, v in ext.items() if k != 'tree')})")
                        core = vr.get("extrapolated_100k_x_300_core_seconds")
                        if core:
                            print(f"    CPU, one process: at 100k x 300 ~{sum(core.values()):.0f} core-s/tree "
                                  f"({', '.join(f'{k} {v:.0f}' for k, v in core.items())}; encryption apart)")
            for k, v in r["ratios"].items():
                print(f"  {k}: " + json.dumps({kk: round(vv, 2) for kk, vv in v.items()}))
    results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
