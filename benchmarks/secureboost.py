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
  smaller child of each split from rows and its sibling by subtraction,
  cumulative and compressed, through :class:`fedacq.learn.histogram.HistogramEngine`
  with every core) and the lender's decryption and decoding of all of them.
  Splits are random halves-ish (the smaller child 20-50% of its parent). Run on
  ``--kernel-rows`` x ``--kernel-features`` and extrapolated to 100k x 300:
  histogram products scale with rows x features, compression (timed apart on
  one core) and decryption with features x nodes, encryption with rows. It says what the scheme choice
  buys per tree before the protocols are wired to it.

``--quick`` runs tiny versions with a 1024-bit test-only key to check that the
script works; its numbers mean nothing. Full run::

    python benchmarks/secureboost.py --json benchmarks/results/secureboost.json
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


def bench_kernel(quick: bool, key_bits: int, rows: int, features: int, depth: int) -> dict[str, Any]:
    """One tree's encryption, histograms and decryption per scheme (see the module docstring)."""
    from fedacq.crypto import scheme
    from fedacq.crypto.paillier import EncryptedVector, decompress
    from gmpy2 import mpz

    from fedacq.crypto.parallel import cpu_count
    from fedacq.learn.histogram import GradientCodec, HistogramEngine, PackingLayout, compress, n_compressed

    if quick:
        rows, features, depth = 600, 6, 3
    rng = np.random.default_rng(0)
    bins = rng.integers(0, 32, size=(rows, features)).astype(np.int16)
    n_bins = np.full(features, 32)
    g, h = rng.normal(size=rows), rng.random(rows)
    target_rows, target_features = 100_000, 300
    out: dict[str, Any] = {"case": "kernel", "rows": rows, "features": features, "max_depth": depth,
                           "max_bin": 32, "key_bits": key_bits, "schemes": {}}
    for name in ("paillier", "ou"):
        pk, sk = scheme.generate_keypair(name, key_bits, insecure_test_key=key_bits < 2048)
        layout = PackingLayout.for_rows(target_rows)  # the 100k-row layout: entry size as at scale
        codec = GradientCodec(layout)
        n_bits = pk.plaintext_bits + 1
        t = {"encrypt": 0.0, "histograms": 0.0, "decrypt": 0.0}
        t0 = time.perf_counter()
        cts = sk.encrypt_raw(codec.encode(g, h, np.ones(rows, dtype=bool))).ciphertexts
        t["encrypt"] = time.perf_counter() - t0
        engine = HistogramEngine(bins, n_bins, pk.ciphertext_modulus, n_bits, layout.entry_bits)
        decrypted = 0
        try:
            t0 = time.perf_counter()
            engine.start_tree(cts, np.arange(features))
            outputs = [(engine.root(), 1)]
            blocks = [k for k in engine.block_features if k]
            t["histograms"] += time.perf_counter() - t0
            members = {0: np.arange(rows)}
            next_id = 1
            for _ in range(depth - 1):
                jobs, nodes, new = [], [], {}
                for node, rs in members.items():
                    cut = int(len(rs) * rng.uniform(0.2, 0.5))
                    perm = rng.permutation(rs)
                    small, big = np.sort(perm[:cut]), np.sort(perm[cut:])
                    jobs.append((node, next_id, next_id + 1, small))
                    nodes += [next_id, next_id + 1]
                    new[next_id], new[next_id + 1] = small, big
                    next_id += 2
                t0 = time.perf_counter()
                outputs.append((engine.level(jobs, nodes), len(nodes)))
                t["histograms"] += time.perf_counter() - t0
                members = new
        finally:
            engine.close()
        t0 = time.perf_counter()
        for packed, n_nodes in outputs:  # each feature block's level output is compressed on its own
            plain = sk.decrypt_raw(EncryptedVector(pk, packed))
            pos = 0
            for k in blocks:
                count = k * 32 * n_nodes
                n_ct = n_compressed(count, layout.entry_bits, n_bits)
                codec.decode(decompress(plain[pos:pos + n_ct], layout.entry_bits, count, pk))
                pos += n_ct
            assert pos == len(plain)
            decrypted += len(plain)
        t["decrypt"] = time.perf_counter() - t0
        # The histogram time is products (scale with rows x features) plus compression (features x
        # nodes): compression is timed on its own, one core, and split off (the engine used every core).
        entries = features * 32 * (2 ** depth - 1)
        mod = pk.ciphertext_modulus
        sample = [mpz(int.from_bytes(os.urandom(pk.ciphertext_bytes), "big")) % mod for _ in range(features * 32)]
        t0 = time.perf_counter()
        compress(sample, layout.entry_bits, n_bits, pk.ciphertext_modulus)
        t["compress_estimate"] = (time.perf_counter() - t0) * entries / len(sample) / cpu_count()
        products = max(t["histograms"] - t["compress_estimate"], 0.0)
        extrapolated = {"encrypt": t["encrypt"] * target_rows / rows,
                        "histogram_products": products * target_rows * target_features / (rows * features),
                        "compress": t["compress_estimate"] * target_features / features,
                        "decrypt": t["decrypt"] * target_features / features}
        extrapolated["tree"] = sum(extrapolated.values())
        out["schemes"][name] = {"seconds": t, "ciphertexts_decrypted": decrypted,
                                "ciphertext_bytes": pk.ciphertext_bytes,
                                "values_per_compressed_ciphertext": (n_bits - 1) // layout.entry_bits,
                                "extrapolated_100k_x_300_seconds": extrapolated}
    p_, o_ = (out["schemes"][k]["extrapolated_100k_x_300_seconds"] for k in ("paillier", "ou"))
    out["ratios"] = {f"paillier_over_ou_{k}": p_[k] / o_[k] for k in p_ if o_[k] > 0}
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
            r = bench_kernel(args.quick, key_bits, args.kernel_rows, args.kernel_features, args.kernel_depth)
            results["cases"].append(r)
            for name, sr in r["schemes"].items():
                sec, ext = sr["seconds"], sr["extrapolated_100k_x_300_seconds"]
                print(f"kernel {name} ({r['rows']} rows x {r['features']} features, depth {r['max_depth']}): "
                      f"encrypt {sec['encrypt']:.2f} s, histograms {sec['histograms']:.2f} s, decrypt "
                      f"{sec['decrypt']:.2f} s ({sr['ciphertexts_decrypted']} ciphertexts); at 100k x 300 "
                      f"~{ext['tree']:.0f} s/tree ({', '.join(f'{k} {v:.0f}' for k, v in ext.items() if k != 'tree')})")
            print("  " + json.dumps({k: round(v, 2) for k, v in r["ratios"].items()}))
    results["machine"]["loadavg_at_end"] = list(os.getloadavg())
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
