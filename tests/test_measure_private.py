"""What crosses to the platform in measurement: only per-bucket aggregates, never a user's value."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedacq.crypto.paillier import generate_keypair
from fedacq.link.ledger import PartyLedger
from fedacq.link.memory import memory_pair, run_parties
from fedacq.link.message import BigInts
from fedacq.measure.html import page
from fedacq.measure.private import recv_spend, send_spend, share_outcomes_lender, share_outcomes_platform
from fedacq.measure.render import platform_view_sections
from fedacq.measure.report import measure
from fedacq.measure.synthetic import constructed_experiment

# Test-only 1024-bit key (the platform's min_key_bits lowered to match): the protocol does
# not depend on the key size, and generating a 2048-bit key would dominate this test's run time.
_, PRIV = generate_keypair(1024, insecure_test_key=True)
MIN_GROUP = 12


@pytest.fixture(scope="module")
def experiment():
    funnel, events, spend = constructed_experiment(300, seed=3, n_buckets=3)
    # Long, distinctive ids, so that finding one inside a payload cannot happen by chance.
    funnel["user_id"] = "customer-phone-hash-" + funnel["user_id"]
    events["user_id"] = "customer-phone-hash-" + events["user_id"]
    # Bucket 5 (treatment) keeps only a few users: it must be suppressed.
    small = events["bucket"] == 5
    keep = set(events.loc[small, "user_id"].unique()[:4])
    events = events[~small | events["user_id"].isin(keep)].reset_index(drop=True)
    return funnel, events, spend


def _run(funnel, events, tmp_path, epsilon=None, spend=None):
    ledgers = {p: PartyLedger(tmp_path / p, p) for p in ("lender", "platform")}
    link_l, link_p = memory_pair("lender", "platform", job="m1", ledgers=ledgers, record=True)
    res_l, view = run_parties(
        (lambda: share_outcomes_lender(link_l, funnel, private_key=PRIV, layer="boost",
                                       min_group_size=MIN_GROUP, epsilon=epsilon,
                                       value_bounds={"drawdown_amount": 50_000.0}, workers=1),),
        (lambda: share_outcomes_platform(link_p, events, min_group_size=MIN_GROUP, spend=spend,
                                         workers=1, min_key_bits=1024),),
        timeout=300)
    return res_l, view, link_p, ledgers


def _truth(funnel, events):
    clicks = events[events["event_type"] == "click"].drop_duplicates("user_id")
    joined = clicks.merge(funnel, on="user_id")
    return joined.groupby("bucket").agg(applicants=("user_id", "size"),
                                        credit_granted_sum=("credit_granted", "sum"),
                                        first_day_drawdown_sum=("first_day_drawdown", "sum"),
                                        drawdown_amount_sum=("drawdown_amount", "sum"))


def test_platform_learns_exact_per_bucket_aggregates_and_nothing_per_user(experiment, tmp_path):
    funnel, events, spend = experiment
    _, view, link_p, ledgers = _run(funnel, events, tmp_path, spend=spend)
    truth = _truth(funnel, events)
    table = view.buckets.set_index("bucket")
    n_buckets = len(table)

    # Correct where released, suppressed (no numbers at all) where small.
    assert bool(table.loc[5, "suppressed"])
    assert table.loc[5, ["applicants", "credit_granted_sum", "drawdown_amount_sum"]].isna().all()
    released = table[~table["suppressed"]]
    assert len(released) == n_buckets - 1
    for col in truth.columns:
        np.testing.assert_allclose(released[col], truth.loc[released.index, col], rtol=1e-6, atol=1e-3)

    # Per-arm view over released buckets only; the small bucket is counted as suppressed.
    arms = view.by_arm()
    assert arms.loc["treatment", "buckets_suppressed"] == 1 and arms.loc["control", "buckets_suppressed"] == 0
    treat = released[released["arm"] == "treatment"]
    assert arms.loc["treatment", "deep_conversion_rate"] == pytest.approx(
        truth.loc[treat.index, "credit_granted_sum"].sum() / treat["exposed_users"].sum())
    assert arms.loc["control", "cost_per_credit_user"] == pytest.approx(
        spend.loc[spend["arm"] == "control", "spend"].sum()
        / truth.loc[released[released["arm"] == "control"].index, "credit_granted_sum"].sum())

    # The platform's report section shows released numbers only.
    html = page("platform", platform_view_sections(view))
    assert "Platform view, layer boost" in html and html.count("<table>") == 2

    # Everything the platform received: blinded points, ciphertexts, or per-bucket arrays.
    lender_values = set(np.round(funnel["drawdown_amount"][funnel["drawdown_amount"] > 0], 2))
    user_ids = [u.encode() for u in funnel["user_id"]]
    types = set()
    for msg in link_p.received:
        types.add(msg.type)
        for name, part in msg.parts.items():
            if isinstance(part, BigInts):
                assert msg.type == "isum.values" and name == "ciphertexts"
                continue
            if part.dtype == np.uint8:      # blinded curve points: 32 random-looking bytes each
                assert part.ndim == 2 and part.shape[1] == 32
                raw = part.tobytes()
                assert not any(u in raw for u in user_ids)
                continue
            # Any plain number the platform sees is one per bucket (a row of one per outcome
            # for the sums), not one per user.
            assert part.shape in ((n_buckets,), (n_buckets, 3)), (msg.type, name, part.shape)
            if name == "sum":
                assert not set(np.round(part.ravel(), 2)) & lender_values - {0.0}
        header_items = [v for value in msg.header.values()
                        for v in (value if isinstance(value, list) else [value])]
        assert not set(map(str, header_items)) & set(funnel["user_id"])
    assert types == {"measure.plan", "isum.hello", "psi.points", "isum.values", "isum.release"}
    # One private intersection-sum for all three outcomes: the ids are blinded and matched once.
    received = [m.type for m in link_p.received]
    assert received.count("isum.hello") == 1 and received.count("psi.points") == 1

    # The lender's egress ledger says the same: plain arrays it sent are per bucket.
    entries = list(ledgers["lender"].egress.entries())
    assert entries and all(e["job"] == "m1" for e in entries)
    for e in entries:
        for name, part in e["parts"].items():
            if part["kind"] == "ndarray" and part["dtype"] != "uint8":
                assert part["shape"] in ([n_buckets], [n_buckets, 3]), (e["type"], name)
    assert [e["type"] for e in entries].count("isum.release") == 1  # one run for all outcomes


def test_noise_changes_released_sums_and_keeps_the_small_bucket_suppressed(experiment, tmp_path):
    funnel, events, _ = experiment
    # Suppression is decided on the noisy count. Epsilon 2 per outcome, 3 outcomes: count noise
    # Laplace(2 / 6). Bucket 5 has at most 4 applicants against a minimum of 12, so it is released
    # only if the noise exceeds 8: probability exp(-8 * 3) / 2 < 1e-10.
    _, view, _, _ = _run(funnel, events, tmp_path, epsilon=2.0)
    table = view.buckets.set_index("bucket")
    truth = _truth(funnel, events)
    released = table[~table["suppressed"]]
    assert bool(table.loc[5, "suppressed"])
    assert view.epsilon == [2.0, 2.0, 2.0]
    assert not np.allclose(released["credit_granted_sum"], truth.loc[released.index, "credit_granted_sum"])


def test_spend_message_round_trips_and_feeds_the_report(experiment, tmp_path):
    funnel, events, spend = experiment
    link_l, link_p = memory_pair("lender", "platform", record=True)
    send_spend(link_p, spend, layer="boost")
    got = recv_spend(link_l, timeout=5)
    pd.testing.assert_frame_equal(got.drop(columns="layer").reset_index(drop=True),
                                  spend.astype(got.drop(columns="layer").dtypes).reset_index(drop=True))
    report = measure(funnel, events, got, min_bucket_size=50)
    assert report["layers"]["boost"]["arms"]["control"]["spend"]["spend"] == pytest.approx(spend.loc[
        spend["arm"] == "control", "spend"].sum())


def test_plan_with_an_unknown_outcome_is_refused(experiment):
    funnel, _, _ = experiment
    link_l, _ = memory_pair("lender", "platform")
    with pytest.raises(ValueError, match="outcomes"):
        share_outcomes_lender(link_l, funnel, private_key=PRIV, layer="boost", outcomes=["user_id"])
