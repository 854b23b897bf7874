"""Benchmark population scoring: ``fedacq score`` (record batches) against whole-frame ``Booster.predict``.

Generates a users Parquet file (``--rows`` users, ``--features`` float32 features, a few
percent missing), trains an XGBoost model of ``--n-estimators`` trees on a sample, then
scores the file twice, each in its own child process so that peak memory (ru_maxrss) is
the scorer's own:

- ``fedacq_score``: ``fedacq.activate.scoring.score_parquet`` (iter_batches ->
  inplace_predict -> ParquetWriter), the path ``fedacq score`` runs;
- peer ``whole_frame_predict``: read the whole file into pandas, ``Booster.predict(DMatrix)``,
  write the scores: what one writes without thinking about memory.

Reported: ``rows_per_s`` and ``peak_rss_mb`` of each, and ratios. Targets (issue 5): 10 M
users with a 30-tree model under 4 GB and >= 1 M rows/s on 2 cores.

    python benchmarks/scoring.py --json results/scoring.json                 # 10 M users
    python benchmarks/scoring.py --json /tmp/scoring_quick.json --quick      # smoke
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_users(path: Path, rows: int, features: int, chunk: int = 500_000) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    rng = np.random.default_rng(0)
    names = [f"f{i}" for i in range(features)]
    schema = pa.schema([("user_id", pa.string())] + [(n, pa.float32()) for n in names])
    with pq.ParquetWriter(path, schema, compression="zstd") as w, \
            tqdm(total=rows, unit="rows", unit_scale=True, desc="generate", file=sys.stderr) as bar:
        for start in range(0, rows, chunk):
            n = min(chunk, rows - start)
            X = rng.normal(size=(n, features)).astype(np.float32)
            X[rng.random((n, features)) < 0.03] = np.nan
            ids = pa.array(np.char.add("u", np.arange(start, start + n).astype(str)))
            w.write_table(pa.Table.from_arrays([ids, *[pa.array(X[:, j]) for j in range(features)]], schema=schema))
            bar.update(n)


def make_model(path: Path, users: Path, n_estimators: int, max_depth: int) -> None:
    import pyarrow.parquet as pq
    import xgboost as xgb

    sample = next(pq.ParquetFile(users).iter_batches(batch_size=100_000)).to_pandas().drop(columns="user_id")
    rng = np.random.default_rng(1)
    y = (np.nan_to_num(sample.iloc[:, 0]) + 0.5 * np.nan_to_num(sample.iloc[:, 1]) + rng.normal(size=len(sample)) > 0)
    booster = xgb.train({"max_depth": max_depth, "objective": "binary:logistic", "tree_method": "hist"},
                        xgb.DMatrix(sample, label=y.astype(int)), num_boost_round=n_estimators)
    booster.save_model(path)


def child(mode: str, model: str, users: str, out: str, batch_size: int) -> None:
    """Runs in a fresh process; prints one JSON line with rows, seconds and peak RSS."""
    import pandas as pd
    import xgboost as xgb

    from fedacq.activate.scoring import load_booster, score_parquet

    t0 = time.perf_counter()  # after imports: both sides are timed from loading the model
    if mode == "fedacq_score":
        rows = score_parquet(load_booster(model), users, out, batch_size=batch_size, progress=False).rows
    else:
        booster = xgb.Booster(model_file=model)
        df = pd.read_parquet(users)
        scores = booster.predict(xgb.DMatrix(df[booster.feature_names]))
        pd.DataFrame({"user_id": df["user_id"], "score": scores}).to_parquet(out)
        rows = len(df)
    seconds = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print(json.dumps({"rows": rows, "seconds": round(seconds, 3), "rows_per_s": round(rows / seconds, 1),
                      "peak_rss_mb": round(peak_mb, 1)}))


def run_child(mode: str, model: Path, users: Path, out: Path, batch_size: int) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--model", str(model), "--users", str(users),
                           "--out", str(out), "--batch-size", str(batch_size)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed: {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--json", help="write results here")
    p.add_argument("--quick", action="store_true", help="300k users: checks the script works")
    p.add_argument("--rows", type=int, help="users (default 10,000,000; quick 300,000)")
    p.add_argument("--features", type=int, default=30)
    p.add_argument("--n-estimators", type=int, default=30)
    p.add_argument("--max-depth", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=262_144)
    p.add_argument("--skip-peer", action="store_true", help="do not run the whole-frame peer (it needs RAM)")
    p.add_argument("--child", choices=("fedacq_score", "whole_frame_predict"), help=argparse.SUPPRESS)
    p.add_argument("--model", help=argparse.SUPPRESS)
    p.add_argument("--users", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.model, args.users, args.out, args.batch_size)
        return 0
    rows = args.rows or (300_000 if args.quick else 10_000_000)
    with tempfile.TemporaryDirectory(prefix="fedacq-score-bench-") as tmp:
        d = Path(tmp)
        make_users(d / "users.parquet", rows, args.features)
        make_model(d / "model.json", d / "users.parquet", args.n_estimators, args.max_depth)
        ours = run_child("fedacq_score", d / "model.json", d / "users.parquet", d / "s1.parquet", args.batch_size)
        peer = None if args.skip_peer else run_child("whole_frame_predict", d / "model.json", d / "users.parquet",
                                                     d / "s2.parquet", args.batch_size)
        if peer is not None:
            import pyarrow.parquet as pq

            a = pq.read_table(d / "s1.parquet", columns=["score"]).column(0).to_numpy()
            b = pq.read_table(d / "s2.parquet", columns=["score"]).column(0).to_numpy()
            max_diff = float(np.max(np.abs(a - b))) if len(a) else 0.0
    result = {"benchmark": "scoring", "quick": args.quick, "rows": rows, "features": args.features,
              "n_estimators": args.n_estimators, "max_depth": args.max_depth, "batch_size": args.batch_size,
              "rows_per_s": ours["rows_per_s"], "peak_rss_mb": ours["peak_rss_mb"], "fedacq_score": ours,
              "targets_met": {"rows_per_s>=1e6": ours["rows_per_s"] >= 1e6, "peak_rss_mb<4096": ours["peak_rss_mb"] < 4096},
              "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "loadavg_1m": round(os.getloadavg()[0], 2)}}
    print(f"fedacq score: {rows:,} users in {ours['seconds']} s = {ours['rows_per_s']:,.0f} rows/s, "
          f"peak RSS {ours['peak_rss_mb']:,.0f} MB")
    if peer is not None:
        result["peers"] = {"whole_frame_predict": peer}
        result["ratios"] = {"rows_per_s_vs_whole_frame": round(ours["rows_per_s"] / peer["rows_per_s"], 3),
                            "peak_rss_vs_whole_frame": round(ours["peak_rss_mb"] / peer["peak_rss_mb"], 3)}
        result["max_abs_score_diff"] = max_diff
        print(f"whole-frame predict: {peer['rows_per_s']:,.0f} rows/s, peak RSS {peer['peak_rss_mb']:,.0f} MB "
              f"-> speed ratio {result['ratios']['rows_per_s_vs_whole_frame']}, memory ratio "
              f"{result['ratios']['peak_rss_vs_whole_frame']}, max |score diff| {max_diff:.2e}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
