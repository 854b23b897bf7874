"""Measurement between two node processes: a curious platform cannot read exact counts off suppression.

Intersection-sum used to decide which buckets to suppress on exact counts, before the
noise, so whether a bucket came back at all told the platform whether its exact count
reached the minimum cohort. Here every one of 40 buckets holds *exactly* the minimum
cohort of matched applicants, and the lender releases with Laplace noise: the decision
is taken on the noisy count, so some buckets are released and others suppressed within
one job (each is a fair coin: all 40 alike has probability 2 * 2^-40). What the platform
received is read from its own output, and both nodes' ledgers must match message for
message (``fedacq.link.audit.verify``).

The nodes run in test mode with a 1024-bit key: the suppression rule does not depend on
the key size, and a 2048-bit key would only slow the job.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from fedacq.link.audit import verify
from fedacq.measure.synthetic import constructed_experiment
from fedacq.pipeline import one_operator_policy, start_parties

MIN_COHORT = 20
N_BUCKETS = 20  # per arm: 40 buckets in all


def exactly_at_the_threshold(root: Path) -> dict[str, dict[str, Path]]:
    """Each party's files; every bucket has exactly MIN_COHORT exposed users in the lender's funnel."""
    funnel, events, spend = constructed_experiment(6000, seed=11, n_buckets=N_BUCKETS)
    clicks = events[events["event_type"] == "click"].drop_duplicates("user_id")
    applied = clicks[clicks["user_id"].isin(funnel["user_id"])]
    keep = applied.groupby("bucket")["user_id"].apply(lambda ids: list(ids)[:MIN_COHORT])
    assert len(keep) == 2 * N_BUCKETS and all(len(ids) == MIN_COHORT for ids in keep), "too few applicants"
    kept = {u for ids in keep for u in ids}
    exposed = set(clicks["user_id"])
    funnel = funnel[funnel["user_id"].isin(kept) | ~funnel["user_id"].isin(exposed)]
    events = events[(events["event_type"] == "click") | events["user_id"].isin(kept)]
    shares = {"lender": {"funnel": funnel, "events": events}, "platform": {"events": events, "spend": spend}}
    out: dict[str, dict[str, Path]] = {}
    for party, tables in shares.items():
        for name, frame in tables.items():
            path = root / "data" / party / f"{name}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            frame.to_parquet(path, index=False)
            out.setdefault(party, {})[f"{name}-boost"] = path
    return out


def test_suppression_is_decided_on_noisy_counts_between_nodes(tmp_path: Path) -> None:
    datasets = exactly_at_the_threshold(tmp_path)
    policy = {**one_operator_policy(1024, True, min_intersection=100), "measure_min_cohort": MIN_COHORT}
    job = {"job": {"protocol": "measure", "id": "measure-at-threshold"},
           "datasets": {"lender": {"funnel": "funnel-boost", "events": "events-boost"},
                        "platform": {"events": "events-boost", "spend": "spend-boost"}},
           "params": {"layer": "boost", "min_cohort": MIN_COHORT, "epsilon": 1.0,
                      "key_bits": 1024, "insecure_test_key": True}}
    with start_parties("grpc", tmp_path / "nodes", datasets, {"lender": policy, "platform": policy}) as parties:
        parties.run(job)
    work = tmp_path / "nodes" / "platform" / "state" / "jobs" / "measure-at-threshold" / "work"
    view = pd.read_parquet(work / "platform_view.parquet")
    assert len(view) == 2 * N_BUCKETS
    suppressed = view["suppressed"].to_numpy(dtype=bool)
    assert 0 < suppressed.sum() < len(view), suppressed  # the decision is a coin per bucket, not the exact count
    released = view[~view["suppressed"]]
    assert np.isfinite(released.filter(like="_sum").to_numpy(dtype=float)).all()
    assert view[view["suppressed"]].filter(like="_sum").isna().all().all()  # no numbers for a suppressed bucket
    report = verify(tmp_path / "nodes" / "lender" / "state", tmp_path / "nodes" / "platform" / "state")
    assert report.ok, report
