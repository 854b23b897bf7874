"""Hetero LR seconds per epoch: this tree against an earlier one, and against plaintext scikit-learn, in one run.

Data: a synthetic binary problem (``make_classification``) of ``--rows`` rows,
``--lender-features`` columns at the lender and ``--platform-features`` at the
platform (default 100k x (30 + 300), the size FATE quotes for its LR
benchmark). The federated epochs run with 2048-bit Paillier keys, each party
in its own process (rows aligned by construction, no PSI), the two connected
by a pipe that carries the link's wire frames (:mod:`fedacq.link.codec`), so
each party's peak memory is its own: ``ru_maxrss`` of the party's process and
the largest peak RSS of its crypto worker processes (``/proc``, Linux). Reported per implementation: seconds
per epoch (the lender's fit, hello to last epoch), where they go (the lender's
encryption, decryption and waits; the platform's encrypted gradient, masking
and waits), each party's CPU seconds (its process and its workers, from
``/proc``: the figure to compare on a machine others load), bytes each way and peak RSS
per party.

Implementations, one after the other in this run on the same data:

* ``current`` - :mod:`fedacq.learn.hetero_lr` of this tree;
* ``baseline`` - the same module at git revision ``--baseline`` (default: the
  tree before issue 15's kernel work), read with ``git show`` and run against
  this tree's crypto and link; ``--baseline ""`` skips it.

Plaintext peers on the joined columns: ``sklearn_sgd_epoch``
(``SGDClassifier(loss="log_loss")``, one epoch of ``partial_fit``) and
``sklearn_logreg_fit`` (``LogisticRegression``, lbfgs, to convergence).
Printed ratios: baseline / current seconds per epoch, and current / each peer.

``--quick`` runs 3000 rows x (5 + 40) features, still with 2048-bit keys, only
to check that the script works. Full run (about 5 minutes on 2 cores)::

    python benchmarks/hetero_lr.py --json benchmarks/results/hetero_lr.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform as host_platform
import resource
import struct
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

import proctree

#: the tree before issue 15's work on the hetero LR kernel
BASELINE_REVISION = "3e1c4da"
ROOT = Path(__file__).resolve().parent.parent


def data(rows: int, d_lender: int, d_platform: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import make_classification

    d = d_lender + d_platform
    X, y = make_classification(n_samples=rows, n_features=d, n_informative=max(2, d // 5),
                               n_redundant=max(0, d // 10), random_state=seed)
    return X[:, :d_lender], X[:, d_lender:], y.astype(np.float64)


def implementation(revision: str | None, directory: str) -> types.ModuleType:
    """This tree's hetero LR module, or its source at git ``revision`` as a module of its own.

    The earlier source is written to ``directory`` (put on ``sys.path``) and imported from there,
    so the party's crypto worker processes can import its worker functions too.
    """
    import importlib

    if revision is None:
        from fedacq.learn import hetero_lr

        return hetero_lr
    name = f"hetero_lr_at_{revision}"
    path = Path(directory) / f"{name}.py"
    if not path.exists():
        path.write_text(subprocess.run(["git", "-C", str(ROOT), "show", f"{revision}:fedacq/learn/hetero_lr.py"],
                                       check=True, capture_output=True, text=True).stdout)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return importlib.import_module(name)


def pipe_link(party: str, peer: str, conn: Any) -> Any:
    """A :class:`~fedacq.link.link.Link` over one end of a pipe: each message as its wire frames."""
    from fedacq.link import codec
    from fedacq.link.link import Link, LinkTimeout

    class PipeLink(Link):
        def _transmit(self, seq: int, msg: Any) -> None:
            frames = list(codec.encode(msg, "bench", seq, self.party))
            conn.send_bytes(struct.pack("<qI", seq, len(frames)))
            for frame in frames:
                conn.send_bytes(frame)

        def _receive(self, timeout: float | None) -> tuple[int, Any]:
            if not conn.poll(timeout):
                raise LinkTimeout(f"{self.party}: no message from {self.peer} within {timeout} s")
            seq, count = struct.unpack("<qI", conn.recv_bytes())
            return seq, codec.decode([conn.recv_bytes() for _ in range(count)])

    return PipeLink(party, peer, job="bench")


def party(role: str, revision: str | None, conn: Any, args: dict[str, Any], out: Any) -> None:
    """One party's fit in this (child) process; puts its report (or its error) on ``out``."""
    import traceback

    try:
        out.put((role, fit_party(role, revision, conn, args)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the run
        out.put((role, {"error": traceback.format_exc()}))


def process_tree_usage() -> dict[str, float]:
    """CPU seconds of this process and every live descendant (its crypto pool's fork server and
    workers), and the largest peak RSS among the descendants (:mod:`proctree`)."""
    workers = proctree.workers_peak_rss_mb()
    return {"cpu_seconds": round(proctree.tree_cpu_seconds(), 2),
            "worker_peak_rss_mb": round(max(workers.values(), default=0.0), 1)}


def fit_party(role: str, revision: str | None, conn: Any, args: dict[str, Any]) -> dict[str, Any]:
    from fedacq.crypto import parallel

    module = implementation(revision, args["directory"])
    Xl, Xp, y = data(args["rows"], args["lender_features"], args["platform_features"], seed=0)
    link = pipe_link(role, "platform" if role == "lender" else "lender", conn)
    start = time.perf_counter()
    if role == "lender":
        model = module.HeteroLRLender(max_iter=args["epochs"], batch_size=args["batch_size"],
                                      key_bits=args["key_bits"], n_jobs=args["n_jobs"],
                                      n_iter_no_change=args["epochs"], early_stopping=False).fit(link, Xl, y)
        report = {"epochs": model.n_iter_, "train_auc": model.history_[-1].get("train_auc")}
    else:  # the key floor is this benchmark's own key size: both sides are this benchmark
        model = module.HeteroLRPlatform(n_jobs=args["n_jobs"], min_key_bits=args["key_bits"]).fit(link, Xp)
        report = {}
    seconds = time.perf_counter() - start
    report.update({"seconds": seconds, **process_tree_usage(),
                   "crypto_seconds": {k: round(v, 3) for k, v in model.timings_.items()},
                   "bytes_sent": link.stats()["bytes_sent"],
                   "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)})
    parallel.shutdown()
    return report


def federated(revision: str | None, args: dict[str, Any]) -> dict[str, Any]:
    """Both parties' fits, each in its own process; the lender's seconds per epoch and each party's report."""
    ctx = multiprocessing.get_context("spawn")
    a, b = ctx.Pipe()
    out = ctx.Queue()
    procs = [ctx.Process(target=party, args=(role, revision, conn, args, out))
             for role, conn in (("lender", a), ("platform", b))]
    for p in procs:
        p.start()
    reports: dict[str, Any] = {}
    while len(reports) < len(procs):
        role, report = out.get()
        if "error" in report:
            for p in procs:
                p.kill()
            raise RuntimeError(f"the {role} ({revision or 'this tree'}) failed:\n{report['error']}")
        reports[role] = report
    for p in procs:
        p.join()
    lender = reports["lender"]
    return {"revision": revision or "this tree", "seconds_per_epoch": lender["seconds"] / lender["epochs"],
            "train_auc": lender["train_auc"], "lender": lender, "platform": reports["platform"]}


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
    ap.add_argument("--baseline", default=BASELINE_REVISION,
                    help="git revision of the hetero LR module to compare with ('' to skip)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.lender_features, args.platform_features, args.batch_size = 3000, 5, 40, 512
    sizes = {k: getattr(args, k) for k in ("rows", "lender_features", "platform_features", "epochs", "batch_size",
                                           "key_bits", "n_jobs")}
    print(f"hetero LR: {args.rows} rows x ({args.lender_features} + {args.platform_features}) features, "
          f"{args.key_bits}-bit key, batch {args.batch_size}, {args.epochs} epoch(s)", file=sys.stderr)
    import tempfile

    with tempfile.TemporaryDirectory() as directory:
        sizes_here = {**sizes, "directory": directory}
        runs = {"current": federated(None, sizes_here)}
        if args.baseline:
            runs["baseline"] = federated(args.baseline, sizes_here)
    Xl, Xp, y = data(args.rows, args.lender_features, args.platform_features, seed=0)
    peers = sklearn_peers(np.hstack([Xl, Xp]), y, args.batch_size)
    fed = runs["current"]
    ratios = {name: fed["seconds_per_epoch"] / max(p["seconds"], 1e-9) for name, p in peers.items()}
    out = {"benchmark": "hetero_lr", "quick": args.quick, **sizes, "fedacq": runs, **peers,
           "ratio_fedacq_epoch_over": ratios,
           "machine": {"cpus": os.cpu_count(), "python": host_platform.python_version(),
                       "loadavg_at_end": os.getloadavg()}}
    if "baseline" in runs:
        out["speedup_over_baseline"] = runs["baseline"]["seconds_per_epoch"] / fed["seconds_per_epoch"]
    with open(args.json, "w") as f:
        json.dump(out, f, indent=2)
    for name, run in runs.items():
        print(f"{name} ({run['revision']}): {run['seconds_per_epoch']:.2f} s/epoch, train AUC {run['train_auc']:.4f}; "
              f"lender {run['lender']['crypto_seconds']}, {run['lender']['peak_rss_mb']} MB; "
              f"platform {run['platform']['crypto_seconds']}, {run['platform']['peak_rss_mb']} MB; CPU s "
              f"lender {run['lender']['cpu_seconds']}, platform {run['platform']['cpu_seconds']}")
    if "speedup_over_baseline" in out:
        print(f"baseline / current seconds per epoch: {out['speedup_over_baseline']:.3f}")
    for name, p in peers.items():
        print(f"{name}: {p['seconds']:.3f} s -> fedacq epoch is {ratios[name]:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
