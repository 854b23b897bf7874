"""Work redone per kill and resume time: a SecureBoost ``run`` job between two node processes, SIGKILLed.

One job runs uninterrupted; the same job (same data, parameters and seed) then
runs again and one node is SIGKILLed at each kill point in turn (during PSI,
in the middle of a tree, right after a tree's checkpoint), restarted, and the
job resumed at the lender's node (``fedacq job resume``). Per kill it reports

* **work redone**: trees the killed attempt had begun that the next attempt
  trains again (``trees_redone``: begun before the kill minus resumed from),
  and the seconds of the killed attempt after the checkpoint it resumed from
  (``seconds_redone``; for a kill during PSI, the PSI seconds lost);
* **resume time**: node restart (launch to answering), resume call to the job
  running again at both nodes, and to the first new tree (a tree checkpoint
  past the resume point at the lender).

and compares the interrupted job's training seconds (kills, dead time and
restarts excluded) with the uninterrupted run's. The model files of the
resumed job are compared with a run trained uninterrupted from the same PSI
result (PSI's shared row order is random per run; see ``tests/test_kill_resume.py``).

The helpers here (data, pair, kill points, reference) are the ones the kill
tests use. Full run (2048-bit keys)::

    python benchmarks/resume.py --json benchmarks/results/resume.json

``--quick`` uses a 1024-bit test-only key and smaller data; it checks the
script, and its figures are indicative only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from fedacq.learn.run import LENDER, PLATFORM, RunConfig, load_table, model_module, party_job
from fedacq.link.memory import memory_pair, run_parties
from fedacq.node.checkpoint import Checkpoints
from fedacq.node.local import LocalPair, start_local_pair

PARTIES = (LENDER, PLATFORM)


# -- data and the pair of nodes ----------------------------------------------------------

def make_data(directory: Path, n_common: int, n_lender_only: int, n_platform_only: int,
              d_lender: int = 4, d_platform: int = 8, seed: int = 0) -> dict[str, Path]:
    """A lender CSV (id, label y, features) and a platform CSV (id, features), shuffled;
    ``n_common`` ids in both. The ``*_only`` rows make PSI take its time; training uses
    the intersection only."""
    rng = np.random.default_rng(seed)
    n = n_common + n_lender_only + n_platform_only
    ids = np.array([f"u{i:07d}" for i in rng.permutation(n)])
    xl = rng.normal(size=(n, d_lender))
    xp = rng.normal(size=(n, d_platform))
    logit = xl[:, 0] - 0.7 * xl[:, 1] + 1.2 * xp[:, 0] + 0.8 * xp[:, 1] * xp[:, 2] - 1.0
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    lender_rows = np.r_[0:n_common, n_common:n_common + n_lender_only]
    platform_rows = np.r_[0:n_common, n_common + n_lender_only:n]
    directory.mkdir(parents=True, exist_ok=True)
    lender = pd.DataFrame(xl[lender_rows], columns=[f"l{j}" for j in range(d_lender)])
    lender.insert(0, "y", y[lender_rows])
    lender.insert(0, "id", ids[lender_rows])
    platform = pd.DataFrame(xp[platform_rows], columns=[f"p{j}" for j in range(d_platform)])
    platform.insert(0, "id", ids[platform_rows])
    paths = {LENDER: directory / "lender.csv", PLATFORM: directory / "platform.csv"}
    lender.sample(frac=1.0, random_state=1).to_csv(paths[LENDER], index=False)
    platform.sample(frac=1.0, random_state=2).to_csv(paths[PLATFORM], index=False)
    return paths


def start_pair(root: Path, data: dict[str, Path], key_bits: int) -> LocalPair:
    """Two nodes allowing ``run``; under 2048 bits both are test nodes accepting that key size."""
    policy: dict[str, Any] = {"min_intersection": 100}
    if key_bits < 2048:
        policy.update(test_mode=True, min_key_bits=key_bits)
    return start_local_pair(root, datasets={p: {"table": data[p]} for p in PARTIES}, allow=["run"],
                            policy={p: dict(policy) for p in PARTIES})


def job(job_id: str, key_bits: int, model_params: dict[str, Any], seed: int = 11) -> dict[str, Any]:
    return {"job": {"protocol": "run", "id": job_id},
            "datasets": {p: {"table": "table"} for p in PARTIES},
            "params": {"id_column": "id", "label_column": "y", "model": "secureboost",
                       "model_params": model_params, "key_bits": key_bits, "insecure_test_key": key_bits < 2048,
                       "min_intersection": 100, "validation_fraction": 0.2, "seed": seed,
                       "experiment": "resume-bench"}}


# -- where a node's job stands -------------------------------------------------------------

def state_dir(pair: LocalPair, party: str) -> Path:
    return pair.root / party / "state"


def checkpoints(pair: LocalPair, party: str, job_id: str) -> list[str]:
    return Checkpoints(state_dir(pair, party) / "jobs" / job_id / "checkpoints").names()


def checkpoint_time(pair: LocalPair, party: str, job_id: str, name: str) -> float | None:
    meta = state_dir(pair, party) / "jobs" / job_id / "checkpoints" / name / "meta.json"
    return meta.stat().st_mtime if meta.exists() else None


def ledger_lines(pair: LocalPair, party: str, direction: str) -> list[dict[str, Any]]:
    """``direction`` is "egress" or "ingress"; a torn last line (a kill while writing) is left out."""
    path = state_dir(pair, party) / f"{direction}.jsonl"
    if not path.exists():
        return []
    out = []
    for raw in path.read_bytes().splitlines(keepends=True):
        if raw.endswith(b"\n"):
            out.append(json.loads(raw))
    return out


def wait_for(what: str, condition: Callable[[], Any], timeout: float = 120.0, poll: float = 0.02) -> Any:
    """Poll ``condition`` until it returns something true; TimeoutError naming ``what``."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            raise TimeoutError(f"waited {timeout} s for {what}")
        time.sleep(poll)


def link_name(job_id: str, attempt: int) -> str:
    return job_id if attempt == 0 else f"{job_id}#{attempt}"


@dataclass
class KillPoint:
    """Where to kill a node: ``psi`` (PSI begun, no PSI checkpoint yet), ``mid-tree`` (the
    node has sent or received ``sb.tree`` of ``tree`` and not yet checkpointed it),
    ``after-tree`` (right after its checkpoint of ``tree`` appeared)."""

    where: str
    tree: int = 0

    def reached(self, pair: LocalPair, party: str, job_id: str, attempt: int) -> bool:
        if self.where == "psi":
            progress = pair.status(party, job_id).get("progress") or {}
            return progress.get("step") == "psi" and progress.get("done") == 0 \
                and progress.get("attempt") == attempt
        if self.where == "after-tree":
            return f"tree-{self.tree:04d}" in checkpoints(pair, party, job_id)
        direction = "egress" if party == LENDER else "ingress"
        return any(e["job"] == link_name(job_id, attempt) and e["type"] == "sb.tree"
                   and e["step"] == f"tree{self.tree}" for e in ledger_lines(pair, party, direction))

    def held(self, names: list[str]) -> bool:
        """Whether the killed node's checkpoints show it died where this point says."""
        if self.where == "psi":
            return "psi" not in names
        done = f"tree-{self.tree:04d}" in names
        later = any(n.startswith("tree-") and int(n[5:]) > self.tree for n in names)
        return not later and (done if self.where == "after-tree" else not done)

    def __str__(self) -> str:
        return self.where if self.where == "psi" else f"{self.where} {self.tree}"


def kill_and_resume(pair: LocalPair, victim: str, job_id: str, attempt: int, point: KillPoint,
                    timeout: float = 180.0) -> dict[str, Any]:
    """Wait for ``point`` in attempt ``attempt`` at ``victim``, SIGKILL it, restart it and resume
    the job at the lender's node (attempt + 1); timings and what the kill cost."""
    survivor = PLATFORM if victim == LENDER else LENDER
    wait_for(f"{point} at the {victim} (attempt {attempt})", lambda: point.reached(pair, victim, job_id, attempt),
             timeout)
    lender_trees_begun = max((int(e["step"][4:]) + 1 for e in ledger_lines(pair, LENDER, "egress")
                              if e["job"] == link_name(job_id, attempt) and e["type"] == "sb.tree"), default=0)
    attempt_started = float(pair.status(LENDER, job_id)["started"])
    pair.nodes[victim].kill()
    killed = time.time()
    names = checkpoints(pair, victim, job_id)
    client = pair.client(survivor)
    try:  # the survivor notices that its peer is gone and fails the attempt
        survivor_status = client.wait(job_id, timeout)["status"]
    finally:
        client.close()
    noticed = time.time() - killed
    restart = time.monotonic()
    pair.nodes[victim].start(timeout=60)
    restarted = time.monotonic()
    if pair.status(victim, job_id)["status"] != "interrupted":
        raise RuntimeError(f"the restarted {victim} did not mark job {job_id} interrupted")
    client = pair.client(LENDER)
    try:
        client.resume(job_id)
    finally:
        client.close()
    resumed = time.monotonic()
    wait_for("the resumed job running at both nodes",
             lambda: all(pair.status(p, job_id)["status"] in ("running", "succeeded") for p in PARTIES), timeout)
    running = time.monotonic()
    return {"victim": victim, "point": str(point), "attempt_killed": attempt, "killed_at": killed,
            "checkpoints_at_kill": names, "died_where_intended": point.held(names),
            "survivor_status": survivor_status, "lender_trees_begun": lender_trees_begun,
            "attempt_started": attempt_started, "survivor_noticed_seconds": noticed,
            "restart_seconds": restarted - restart, "resume_to_running_seconds": running - resumed,
            "resumed_monotonic": resumed}


def first_tree_of(pair: LocalPair, job_id: str, attempt: int) -> int | None:
    """The first tree the lender sent in ``attempt`` (None if it sent none)."""
    for e in ledger_lines(pair, LENDER, "egress"):
        if e["job"] == link_name(job_id, attempt) and e["type"] == "sb.tree":
            return int(e["step"][4:])
    return None


# -- the uninterrupted reference ------------------------------------------------------------

def model_files(directory: Path) -> dict[str, bytes]:
    """The model files under a job's work folder (or a reference's output), by name."""
    return {p.name: p.read_bytes() for p in sorted(directory.glob("*/model/secureboost_*.json"))}


def job_models(pair: LocalPair, job_id: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for party in PARTIES:
        out.update(model_files(state_dir(pair, party) / "jobs" / job_id / "work"))
    return out


def reference_models(pair: LocalPair, job_id: str, spec: dict[str, Any], data: dict[str, Path],
                     directory: Path) -> dict[str, bytes]:
    """The models of a run trained without interruption from the same PSI result as ``job_id``.

    Each party's PSI checkpoint (its rows in the shared order) is copied to a
    fresh folder and both run their job in this process, resuming from it: PSI
    is not run again and training starts from nothing, uninterrupted.
    """
    p = spec["params"]
    cfg = RunConfig(lender_path=data[LENDER], platform_path=data[PLATFORM], id_column=p["id_column"],
                    label_column=p["label_column"], out_dir=directory / "out", params=p["model_params"],
                    key_bits=p["key_bits"], insecure_test_key=p["insecure_test_key"],
                    min_intersection=p["min_intersection"], validation_fraction=p["validation_fraction"],
                    seed=p["seed"], progress=False)
    params = model_module("secureboost").resolve_params(dict(p["model_params"]))
    calls = []
    links = memory_pair(LENDER, PLATFORM, job="reference")
    for party, link in zip(PARTIES, links):
        folder = directory / "checkpoints" / party
        folder.mkdir(parents=True)
        shutil.copytree(state_dir(pair, party) / "jobs" / job_id / "checkpoints" / "psi", folder / "psi")
        table = load_table(data[party], p["id_column"], p["label_column"] if party == LENDER else None, party=party)
        calls.append((party_job, party, link, table, cfg, params, None, Checkpoints(folder), True))
    run_parties(*calls, timeout=1800)
    return model_files(cfg.out_dir)


# -- the benchmark ----------------------------------------------------------------------------

def _run(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="fq-resume-"))
    key_bits = 1024 if args.quick else 2048
    n_common = 1500 if args.quick else 6000
    n_trees = 5 if args.quick else 8
    data = make_data(root / "data", n_common, n_common * 4, n_common * 8)
    params = {"n_estimators": n_trees, "max_depth": 3, "max_bin": 32, "subsample": 0.9, "colsample_bytree": 0.9}
    points = [("platform", KillPoint("psi")), ("platform", KillPoint("mid-tree", 1)),
              ("lender", KillPoint("after-tree", 2)), ("lender", KillPoint("mid-tree", 3)),
              ("platform", KillPoint("after-tree", n_trees - 2))]
    with start_pair(root / "nodes", data, key_bits) as pair:
        spec = job("uninterrupted", key_bits, params)
        started = time.monotonic()
        record = pair.submit(spec, party=LENDER, wait=True, timeout=3600)
        if record["status"] != "succeeded":
            raise RuntimeError(f"uninterrupted job: {record['error']}")
        plain_seconds = time.monotonic() - started
        plain_times = [checkpoint_time(pair, LENDER, "uninterrupted", f"tree-{t:04d}") for t in (n_trees - 2, n_trees - 1)]
        per_tree = plain_times[1] - plain_times[0]

        spec = job("killed", key_bits, params)
        started = time.monotonic()
        pair.submit(spec, party=LENDER, wait=False)
        kills = []
        for attempt, (victim, point) in enumerate(points):
            kill = kill_and_resume(pair, victim, "killed", attempt, point, timeout=3600)
            resumed_from = wait_for("the lender's first tree of the resumed attempt",
                                    lambda a=attempt: _resume_point(pair, "killed", a + 1), timeout=3600)
            kills.append(_summarise(pair, kill, resumed_from, per_tree))
        final = {p: pair.client(p).wait("killed", timeout=3600) for p in PARTIES}
        killed_seconds = time.monotonic() - started
        if any(r["status"] != "succeeded" for r in final.values()):
            raise RuntimeError(f"killed job: {[r['error'] for r in final.values()]}")
        same = job_models(pair, "killed") == reference_models(pair, "killed", spec, data, root / "reference")
    shutil.rmtree(root, ignore_errors=True)
    return {"quick": args.quick, "key_bits": key_bits, "intersection": n_common, "trees": n_trees,
            "params": params, "uninterrupted_seconds": round(plain_seconds, 2),
            "seconds_per_tree": round(per_tree, 3), "kills": kills,
            "killed_job_seconds_wall": round(killed_seconds, 2),
            "models_equal_uninterrupted_from_same_psi": same,
            "ratios": {"killed_wall_over_uninterrupted": round(killed_seconds / plain_seconds, 3),
                       "trees_redone_per_kill": round(float(np.mean([k["trees_redone"] for k in kills])), 3)}}


def _resume_point(pair: LocalPair, job_id: str, attempt: int) -> dict[str, Any] | None:
    """Once the resumed attempt has begun its first tree: which, and when (None before)."""
    first = first_tree_of(pair, job_id, attempt)
    if first is None:
        return None
    return {"first_tree": first, "at": time.monotonic()}


def _summarise(pair: LocalPair, kill: dict[str, Any], resumed: dict[str, Any], per_tree: float) -> dict[str, Any]:
    first = resumed["first_tree"]
    if kill["point"] == "psi":
        redone_trees, since = 0, kill["killed_at"] - kill["attempt_started"]
    else:
        redone_trees = max(kill["lender_trees_begun"] - first, 0)
        mark = [checkpoint_time(pair, p, "killed", f"tree-{first - 1:04d}") if first else
                checkpoint_time(pair, p, "killed", "psi") for p in PARTIES]
        # work of the killed attempt only: a checkpoint from an earlier attempt counts from this one's start
        since = kill["killed_at"] - max([t for t in mark if t is not None] + [kill["attempt_started"]])
    return {"victim": kill["victim"], "point": kill["point"], "died_where_intended": kill["died_where_intended"],
            "resumed_from_tree": first, "trees_redone": redone_trees, "seconds_redone": round(max(since, 0.0), 3),
            "trees_redone_equivalent": round(max(since, 0.0) / per_tree, 3),
            "survivor_noticed_seconds": round(kill["survivor_noticed_seconds"], 3),
            "restart_seconds": round(kill["restart_seconds"], 3),
            "resume_to_running_seconds": round(kill["resume_to_running_seconds"], 3),
            # until the lender has sent the first tree of the resumed attempt (its gradients)
            "resume_to_first_new_tree_seconds": round(resumed["at"] - kill["resumed_monotonic"], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1024-bit test-only key, small data")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    result = _run(args)
    result["machine"] = {"python": sys.version.split()[0], "platform": host_platform.platform(),
                         "cpus": os.cpu_count(), "load_average_1m_at_end": round(os.getloadavg()[0], 2)}
    for k in result["kills"]:
        print(f"{k['victim']:>8} killed {k['point']:<14} resumed from tree {k['resumed_from_tree']}: "
              f"{k['trees_redone']} tree(s) begun again, {k['seconds_redone']:.2f} s redone "
              f"({k['trees_redone_equivalent']:.2f} trees' worth); peer noticed {k['survivor_noticed_seconds']:.2f} s, "
              f"restart {k['restart_seconds']:.2f} s, "
              f"resume->running {k['resume_to_running_seconds']:.2f} s, "
              f"resume->first new tree {k['resume_to_first_new_tree_seconds']:.2f} s")
    print(f"uninterrupted {result['uninterrupted_seconds']} s ({result['seconds_per_tree']} s/tree); "
          f"killed {len(result['kills'])} times: {result['killed_job_seconds_wall']} s wall "
          f"(x{result['ratios']['killed_wall_over_uninterrupted']}); models equal: "
          f"{result['models_equal_uninterrupted_from_same_psi']}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
