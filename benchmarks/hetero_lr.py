"""Hetero LR seconds per epoch against plaintext scikit-learn on the same data, in the same run.

Data: a synthetic binary problem (``make_classification``) of ``--rows`` rows,
``--lender-features`` columns at the lender and ``--platform-features`` at the
platform (default 100k x (30 + 300), the size FATE quotes for its LR
benchmark). The federated side runs epochs of :mod:`fedacq.learn.hetero_lr`
over an in-process link with 2048-bit Paillier keys (rows aligned by
construction, no PSI); it reports seconds per epoch and where they go (the
lender's encryption and decryption, the platform's encrypted gradient and
masking). The peers, on the joined columns:

* ``sklearn_sgd_epoch`` - ``SGDClassifier(loss="log_loss")``, one epoch
  (``partial_fit`` over the data once): the plaintext cost of the same work;
* ``sklearn_logreg_fit`` - ``LogisticRegression`` (lbfgs) to convergence.

Printed ratios: federated seconds per epoch / each peer.

``--quick`` runs 3000 rows x (5 + 40) features, still with a 2048-bit key,
only to check that the script works. Full run::

    python benchmarks/hetero_lr.py --json benchmarks/results/hetero_lr.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import sys
import time
from typing import Any

import numpy as np


def data(rows: int, d_lender: int, d_platform: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    d = d_lender + d_platform
    X, y = make_classification(n_samples=rows, n_features=d, n_informative=max(2, d // 5),
                               n_redundant=max(0, d // 10), random_state=seed)
    return X[:, :d_lender], X[:, d_lender:], y.astype(np.float64)


def federated(Xl: np.ndarray, Xp: np.ndarray, y: np.ndarray, epochs: int, batch_size: int,
              key_bits: int, n_jobs: int | None) -> dict[str, Any]:
    from fedacq.learn.hetero_lr import HeteroLRLender, HeteroLRPlatform
    from fedacq.link.memory import memory_pair, run_parties

    L, P = memory_pair("lender", "platform")
    lender = HeteroLRLender(max_iter=epochs, batch_size=batch_size, key_bits=key_bits, n_jobs=n_jobs,
                            n_iter_no_change=epochs, early_stopping=False)
    platform = HeteroLRPlatform(n_jobs=n_jobs, min_key_bits=key_bits)  # both sides are this benchmark
    start = time.perf_counter()
    run_parties((lender.fit, L, Xl, y), (platform.fit, P, Xp))
    seconds = time.perf_counter() - start
    return {"seconds_total": seconds, "epochs": lender.n_iter_, "seconds_per_epoch": seconds / lender.n_iter_,
            "train_auc": lender.history_[-1].get("train_auc"),
            "lender_seconds": {k: round(v, 3) for k, v in lender.timings_.items()},
            "platform_seconds": {k: round(v, 3) for k, v in platform.timings_.items()},
            "bytes": {"lender_to_platform": L.stats()["bytes_sent"], "platform_to_lender": P.stats()["bytes_sent"]}}


def sklearn_peers(X: np.ndarray, y: np.ndarray, batch_size: int) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    Z = StandardScaler().fit_transform(X)
    sgd = SGDClassifier(loss="log_loss", alpha=1.0 / len(y), random_state=0)
    start = time.perf_counter()
    for i in range(0, len(y), batch_size):
        sgd.partial_fit(Z[i:i + batch_size], y[i:i + batch_size], classes=np.array([0.0, 1.0]))
    sgd_seconds = time.perf_counter() - start
    start = time.perf_counter()
    lr = LogisticRegression(C=1.0, max_iter=1000).fit(Z, y)
    lr_seconds = time.perf_counter() - start
    return {"sklearn_sgd_epoch": {"seconds": sgd_seconds,
                                  "train_auc": float(roc_auc_score(y, sgd.decision_function(Z)))},
            "sklearn_logreg_fit": {"seconds": lr_seconds, "iterations": int(lr.n_iter_[0]),
                                   "train_auc": float(roc_auc_score(y, lr.decision_function(Z)))}}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True, help="write the results here")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script works")
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--lender-features", type=int, default=30)
    ap.add_argument("--platform-features", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--key-bits", type=int, default=2048)
    ap.add_argument("--n-jobs", type=int, default=None, help="processes per party (default: all cores)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.lender_features, args.platform_features, args.batch_size = 3000, 5, 40, 512
    Xl, Xp, y = data(args.rows, args.lender_features, args.platform_features, seed=0)
    print(f"hetero LR: {args.rows} rows x ({args.lender_features} + {args.platform_features}) features, "
          f"{args.key_bits}-bit key, batch {args.batch_size}, {args.epochs} epoch(s)", file=sys.stderr)
    fed = federated(Xl, Xp, y, args.epochs, args.batch_size, args.key_bits, args.n_jobs)
    peers = sklearn_peers(np.hstack([Xl, Xp]), y, args.batch_size)
    ratios = {name: fed["seconds_per_epoch"] / max(p["seconds"], 1e-9) for name, p in peers.items()}
    out = {"benchmark": "hetero_lr", "quick": args.quick, "rows": args.rows,
           "lender_features": args.lender_features, "platform_features": args.platform_features,
           "key_bits": args.key_bits, "batch_size": args.batch_size, "fedacq": fed, **peers,
           "ratio_fedacq_epoch_over": ratios,
           "machine": {"cpus": os.cpu_count(), "python": host_platform.python_version()}}
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    print(f"fedacq hetero LR: {fed['seconds_per_epoch']:.2f} s/epoch "
          f"(lender {fed['lender_seconds']}, platform {fed['platform_seconds']})")
    for name, p in peers.items():
        print(f"{name}: {p['seconds']:.3f} s -> fedacq epoch is {ratios[name]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
