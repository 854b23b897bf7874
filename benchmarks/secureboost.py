"""SecureBoost against plaintext XGBoost (same run) and FATE's published/measured times (constants).

Two cases, both with 2048-bit Paillier keys:

* ``default_credit`` - FATE's benchmark settings (5 trees, depth 3, 32 bins,
  learning rate 0.3) on ``datasets/fate/default_credit_hetero_{guest,host}.csv``,
  through the real ``fedacq run`` job (PSI included; the platform file is
  shuffled first so the intersection is not the rows in file order), trained
  and scored on the whole intersection as FATE's benchmark does. Compared with
  XGBoost ``hist`` on the joined data, and with FATE 2.2's 1360 s (2048-bit key)
  and 507 s (1024-bit key) measured on this machine (issue 8).
* ``synthetic`` - 100k rows, 30 lender + 300 platform features, depth 5:
  seconds per tree of the SecureBoost protocol over an in-process link (rows
  aligned by construction, no PSI), against FATE's published 131 s per tree on
  16 cores and XGBoost ``hist`` per tree on the same data.

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

The kernel case at full size (the dense headline and the sparse case beside it; run it alone, quiet)::

    python benchmarks/secureboost.py --cases kernel --kernel-rows 100000 --kernel-features 300 \
        --kernel-zero-fraction 0.8 --json benchmarks/results/secureboost_kernel.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

DATA = Path(os.environ.get("FEDACQ_DATASETS", "/work/shared/datasets")) / "fate"

#: FATE 2.2 on default_credit, 5 trees depth 3, 32 bins (issue 8; measured on this machine, quiet).
FATE_SECONDS_2048 = 1360.0
FATE_SECONDS_1024 = 507.0
FATE_TRAIN_AUC = 0.7686
#: FATE's own published SecureBoost figure: 100k rows, 30 + 300 features, depth 5, 16 cores.
FATE_SECONDS_PER_TREE_SYNTHETIC = 131.0


def xgboost_hist(X: np.ndarray, y: np.ndarray, params: dict[str, Any]) -> tuple[float, float, Any]:
    """(seconds, train AUC, booster) of plaintext XGBoost ``hist`` on the joined columns."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    start = time.perf_counter()
    model = xgb.XGBClassifier(tree_method="hist", n_estimators=params["n_estimators"],
                              max_depth=params["max_depth"], learning_rate=params["learning_rate"],
                              max_bin=params["max_bin"], reg_lambda=1.0, min_child_weight=1.0,
                              n_jobs=params.get("n_jobs") or os.cpu_count())
    model.fit(X, y)
    seconds = time.perf_counter() - start
    return seconds, float(roc_auc_score(y, model.predict_proba(X)[:, 1])), model


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


def synthetic_data(rows: int, lender_features: int, platform_features: int, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lender columns, platform columns and labels from a logistic model over a few of each."""
    rng = np.random.default_rng(seed)
    X_l = rng.normal(size=(rows, lender_features))
    X_p = rng.normal(size=(rows, platform_features))
    logit = X_l[:, :5] @ rng.normal(size=min(5, lender_features)) \
        + X_p[:, :10] @ rng.normal(size=min(10, platform_features)) * 0.5
    y = (rng.random(rows) < 1.0 / (1.0 + np.exp(-(logit - 1.0)))).astype(np.float64)
    return X_l, X_p, y


def bench_synthetic(quick: bool, key_bits: int, trees: int) -> dict[str, Any]:
    from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
    from fedacq.link.memory import memory_pair, run_parties

    rows, n_l, n_p = (2000, 5, 20) if quick else (100_000, 30, 300)
    depth = 3 if quick else 5
    X_l, X_p, y = synthetic_data(rows, n_l, n_p)
    params = {"n_estimators": trees, "max_depth": depth, "max_bin": 32, "learning_rate": 0.3}
    tree_done: list[float] = []
    lender = SecureBoostLender(**params, key_bits=key_bits, insecure_test_key=key_bits < 2048,
                               callback=lambda i, m: tree_done.append(time.perf_counter()))
    platform = SecureBoostPlatform(min_key_bits=key_bits)  # both sides are this benchmark
    a, b = memory_pair("lender", "platform", job="bench-synthetic")
    start = time.perf_counter()
    run_parties((lender.fit, a, X_l, y), (platform.fit, b, X_p))
    seconds = time.perf_counter() - start
    per_tree = np.diff(np.r_[start, tree_done]).tolist() if tree_done else []

    xgb_seconds, xgb_auc, _ = xgboost_hist(np.hstack([X_l, X_p]), y, params)
    per_tree_mean = seconds / trees
    return {
        "case": "synthetic",
        "rows": rows, "lender_features": n_l, "platform_features": n_p,
        "params": params, "key_bits": key_bits,
        "fedacq": {"train_seconds": seconds, "seconds_per_tree": per_tree_mean,
                   "seconds_each_tree": per_tree,
                   "bytes_lender_to_platform": a.stats()["bytes_sent"],
                   "bytes_platform_to_lender": a.stats()["bytes_received"]},
        "xgboost_hist": {"seconds": xgb_seconds, "seconds_per_tree": xgb_seconds / trees,
                         "train_auc": xgb_auc},
        "fate": {"seconds_per_tree": FATE_SECONDS_PER_TREE_SYNTHETIC,
                 "source": "FATE's published figure, 16 cores (constant)"},
        "ratios": {"fate_over_fedacq_per_tree": FATE_SECONDS_PER_TREE_SYNTHETIC / per_tree_mean,
                   "fedacq_over_xgboost": seconds / xgb_seconds},
    }


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
            r = bench_synthetic(args.quick, key_bits, args.synthetic_trees)
            results["cases"].append(r)
            print(f"synthetic ({r['rows']} rows, {r['lender_features']}+{r['platform_features']} features, "
                  f"depth {r['params']['max_depth']}): fedacq {r['fedacq']['seconds_per_tree']:.1f} s/tree, "
                  f"xgboost hist {r['xgboost_hist']['seconds_per_tree']:.3f} s/tree; "
                  f"FATE (16 cores) / fedacq = {r['ratios']['fate_over_fedacq_per_tree']:.1f}x")
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
