"""Kill tests: a ``run`` job between two real node processes survives a SIGKILLed node.

One job per victim. The platform's node, then (in another job) the lender's,
is SIGKILLed at three points in turn: during PSI, in the middle of a tree,
right after a tree's checkpoint. Each point is waited for by polling (the job
record's progress, the node's ledger, its checkpoint folder) with a deadline,
and the killed node's checkpoints afterwards show that it died there. Each
time the node is restarted (it marks the job interrupted), the surviving node
has failed its attempt, and ``resume`` at the lender's node runs the next
attempt at both. Then:

* the job succeeds at both nodes;
* its model files are byte for byte those of a run trained without
  interruption from the same PSI result (PSI's shared row order is random per
  PSI run, so the reference resumes from copies of the final PSI checkpoints
  and trains from nothing, in this process; the lender's model file holds no
  timings);
* nothing is recorded twice in either ledger: every (link conversation, seq)
  appears once per file, and :func:`fedacq.link.audit.verify` matches the two.

The nodes are test nodes (``[policy] test_mode = true``, ``min_key_bits =
1024``) with a 1024-bit test key: 2048-bit keys would only make the trees
slower, and the checkpoints and the resumption do not depend on the size.
The machinery (data, kill points, reference) is ``benchmarks/resume.py``'s,
which measures the work each kill costs.
"""

from __future__ import annotations

import importlib.util
import sys
from collections import Counter
from pathlib import Path

import pytest

from fedacq.link.audit import verify

#: each new in-process MLflow store starts as a copy of a migrated empty one (tests/conftest.py says why)
pytestmark = pytest.mark.usefixtures("mlflow_stores_from_template")

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "resume.py"
KEY_BITS = 1024
PARAMS = {"n_estimators": 4, "max_depth": 3, "max_bin": 16, "subsample": 0.9, "colsample_bytree": 0.9}


def _bench():
    spec = importlib.util.spec_from_file_location("bench_resume", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_resume"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


bench = _bench()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """1,200 common ids; 20,000 ids at the platform and 6,000 at the lender keep PSI busy a while."""
    return bench.make_data(tmp_path_factory.mktemp("kill_data"), 1200, 4800, 18800)


@pytest.fixture(scope="module")
def pair(data, tmp_path_factory):
    with bench.start_pair(tmp_path_factory.mktemp("kill_nodes"), data, KEY_BITS) as p:
        yield p


@pytest.mark.parametrize("victim", ["platform", "lender"])
def test_a_killed_node_resumes_and_the_job_ends_as_if_uninterrupted(victim, pair, data, tmp_path):
    job_id = f"kill-{victim}"
    spec = bench.job(job_id, KEY_BITS, PARAMS)
    pair.submit(spec, party="lender", wait=False)
    points = [bench.KillPoint("psi"), bench.KillPoint("mid-tree", 1), bench.KillPoint("after-tree", 2)]
    for attempt, point in enumerate(points):
        kill = bench.kill_and_resume(pair, victim, job_id, attempt, point)
        assert kill["died_where_intended"], (point, kill["checkpoints_at_kill"])
        assert kill["survivor_status"] == "failed"
    records = {p: pair.client(p).wait(job_id, timeout=300) for p in bench.PARTIES}
    for party, record in records.items():
        assert record["status"] == "succeeded", (party, record["error"])
        assert record["spec"]["attempt"] == len(points)
        assert record["progress"]["step"] == "tree" and record["progress"]["done"] == PARAMS["n_estimators"]
    # the last attempt began where the last kill left it: after tree 2 at the killed node
    first = bench.first_tree_of(pair, job_id, len(points))
    assert first in (2, 3)

    expected = bench.reference_models(pair, job_id, spec, data, tmp_path / "reference")
    assert len(expected) == 2 and bench.job_models(pair, job_id) == expected

    names = {bench.link_name(job_id, a) for a in range(len(points) + 1)}
    for party in bench.PARTIES:
        for direction in ("egress", "ingress"):
            keys = Counter((e["job"], e["seq"]) for e in bench.ledger_lines(pair, party, direction)
                           if e["job"] in names)
            assert keys and max(keys.values()) == 1, (party, direction)
    verdict = verify(bench.state_dir(pair, "lender"), bench.state_dir(pair, "platform"))
    assert verdict.ok, verdict.problems
