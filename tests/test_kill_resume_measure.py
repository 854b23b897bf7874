"""Kill test: a ``measure`` job between two real node processes survives a SIGKILLed platform node.

The platform's node is SIGKILLed during measurement, after the spend step and
inside the private intersection-sum (its ``spend`` checkpoint is written and it
has received ``isum.hello`` of the attempt; the point is polled with a deadline
from its checkpoint folder and ingress ledger). It is restarted (it marks the
job interrupted), the lender's node has failed its attempt, and ``resume`` at
the lender's node runs the next attempt at both, which skips the spend both
hold and runs the intersection-sum again (no release had been sent). Then the
job succeeds at both nodes; with noise off the lender's report equals its report
computed directly and the platform's released counts and sums equal the truth;
every (conversation, seq) appears once per ledger and
:func:`fedacq.link.audit.verify` matches the two state folders.

The nodes are test nodes (``test_mode``, ``min_key_bits = 1024``) with a
1024-bit test key: a 2048-bit key only makes the intersection-sum slower, and
the checkpoints and the resumption do not depend on the key size. The kill and
resume machinery is ``benchmarks/resume.py``'s, as in ``test_kill_resume.py``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from fedacq.link.audit import verify
from fedacq.measure.report import measure
from fedacq.measure.synthetic import constructed_experiment
from fedacq.node.local import start_local_pair
from fedacq.pipeline import one_operator_policy
from test_kill_resume import bench
from test_measure_node import _job


class InIntersectionSum:
    """The platform has saved its spend step and received ``isum.hello`` of this attempt."""

    def reached(self, pair, party: str, job_id: str, attempt: int) -> bool:
        return "spend" in bench.checkpoints(pair, party, job_id) and any(
            e["job"] == bench.link_name(job_id, attempt) and e["type"] == "isum.hello"
            for e in bench.ledger_lines(pair, party, "ingress"))

    def held(self, names: list[str]) -> bool:
        return names == ["spend"]

    def __str__(self) -> str:
        return "in the intersection-sum"


def test_a_platform_killed_during_measurement_resumes_and_the_job_succeeds(tmp_path):
    funnel, events, spend = constructed_experiment(3000, seed=5, n_buckets=3)
    files: dict[str, dict[str, Path]] = {}
    for party, tables in {"lender": {"funnel": funnel, "events": events},
                          "platform": {"events": events, "spend": spend}}.items():
        for name, frame in tables.items():
            path = tmp_path / "data" / party / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
            files.setdefault(party, {})[f"{name}-boost"] = path
    policy = one_operator_policy(1024, True, min_intersection=100)
    job_id = "measure-kill"
    with start_local_pair(tmp_path / "nodes", datasets=files, allow=["measure"],
                          policy={p: dict(policy) for p in bench.PARTIES}) as pair:
        pair.submit(_job(job_id, epsilon=0, min_cohort=10), party="lender", wait=False)
        kill = bench.kill_and_resume(pair, "platform", job_id, 0, InIntersectionSum())
        assert kill["died_where_intended"], kill["checkpoints_at_kill"]
        assert kill["survivor_status"] == "failed"
        records = {p: pair.client(p).wait(job_id, timeout=300) for p in bench.PARTIES}
        for party, record in records.items():
            assert record["status"] == "succeeded", (party, record["error"])
            assert record["spec"]["attempt"] == 1
            assert record["progress"]["step"] == "measure" and record["progress"]["done"] == 3

        report = json.loads(Path(records["lender"]["result"]["report"]).read_text())
        assert report == json.loads(json.dumps(measure(funnel, events, spend, min_bucket_size=20)))
        view = pd.read_parquet(records["platform"]["result"]["view"]).set_index("bucket")
        clicks = events[events["event_type"] == "click"].drop_duplicates("user_id").merge(funnel, on="user_id")
        truth = clicks.groupby("bucket").agg(applicants=("user_id", "size"), credit=("credit_granted", "sum"))
        np.testing.assert_array_equal(view.loc[truth.index, "applicants"], truth["applicants"])
        np.testing.assert_array_equal(view.loc[truth.index, "credit_granted_sum"], truth["credit"])

        # the resumed attempt did not send the spend again: both held it
        resumed = [e["type"] for e in bench.ledger_lines(pair, "platform", "egress")
                   if e["job"] == bench.link_name(job_id, 1)]
        assert resumed[0] == "measure.checkpoints" and "measure.spend" not in resumed
        names = {bench.link_name(job_id, a) for a in (0, 1)}
        for party in bench.PARTIES:
            for direction in ("egress", "ingress"):
                keys = Counter((e["job"], e["seq"]) for e in bench.ledger_lines(pair, party, direction)
                               if e["job"] in names)
                assert keys and max(keys.values()) == 1, (party, direction)
        verdict = verify(bench.state_dir(pair, "lender"), bench.state_dir(pair, "platform"))
        assert verdict.ok, verdict.problems
