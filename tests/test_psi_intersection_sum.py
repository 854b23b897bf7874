"""Private intersection-sum: per-group counts and sums, minimum group size, noise, privacy."""

import numpy as np
import pytest

from fedacq.crypto.paillier import generate_keypair
from fedacq.link.memory import memory_pair, run_parties
from fedacq.psi.intersection_sum import intersection_sum_lender, intersection_sum_platform

# Test-only 1024-bit key: the protocol logic does not depend on the key size and a
# 2048-bit key would make key generation dominate the test time.
PUB, PRIV = generate_keypair(1024, insecure_test_key=True)


def make_data(seed=0):
    rng = np.random.default_rng(seed)
    lender_ids = [f"user{i}" for i in range(0, 120)]
    values = np.round(rng.uniform(0, 5000, size=len(lender_ids)), 2)
    platform_ids = [f"USER{i}" for i in range(60, 200)]
    groups = ["treatment" if i % 2 else "control" for i in range(60, 200)]
    groups = [("tiny" if i < 63 else g) for i, g in zip(range(60, 200), groups)]
    return lender_ids, values, platform_ids, groups


def expected(lender_ids, values, platform_ids, groups):
    val = {i: v for i, v in zip(lender_ids, values)}
    out = {}
    for pid, g in zip(platform_ids, groups):
        key = pid.lower()
        if key in val:
            c, s = out.get(g, (0, 0.0))
            out[g] = (c + 1, s + val[key])
    return out


def run(lender_kw, platform_kw, data, record=False):
    lender_ids, values, platform_ids, groups = data
    link_l, link_p = memory_pair("lender", "platform", record=record)
    res_l, res_p = run_parties(
        (lambda: intersection_sum_lender(link_l, lender_ids, values, private_key=PRIV, workers=1, **lender_kw),),
        (lambda: intersection_sum_platform(link_p, platform_ids, groups, workers=1, **platform_kw),),
        timeout=120)
    return res_l, res_p, link_l, link_p


def test_exact_counts_and_sums_with_suppression():
    data = make_data()
    res_l, res_p, _, link_p = run({"min_group_size": 5}, {"min_group_size": 2}, data, record=True)
    want = expected(*data)
    assert want["tiny"][0] == 3  # below the lender's minimum of 5
    assert res_p.groups["tiny"].suppressed and res_p.groups["tiny"].count is None
    release = [m for m in link_p.received if m.type == "isum.release"][0]
    assert release.parts["count"][list(sorted(want, key=str)).index("tiny")] == 0.0
    for g in ("control", "treatment"):
        agg = res_p.groups[g]
        assert not agg.suppressed
        assert agg.count == want[g][0]
        assert agg.sum == pytest.approx(want[g][1], abs=1e-3)
    # the platform never received a plaintext value or an id
    for msg in link_p.received:
        assert set(msg.parts) <= {"points", "ciphertexts", "count", "sum", "suppressed"}


def test_platform_minimum_is_applied_by_the_lender():
    data = make_data()
    _, res_p, _, _ = run({"min_group_size": 1}, {"min_group_size": 100}, data)
    assert all(a.suppressed for a in res_p.groups.values())


def test_laplace_noise_is_added_and_values_clipped():
    data = make_data(1)
    res_l, res_p, _, _ = run({"min_group_size": 1, "epsilon": 1.0, "value_bound": 1000.0}, {"min_group_size": 1}, data)
    want = expected(*data)
    exact = {g: res_l.exact[i] for i, g in enumerate(sorted(want, key=str))}
    assert all(s <= 1000.0 * c for c, s in exact.values())  # clipped before summing
    diffs = [abs(res_p.groups[g].sum - exact[g][1]) for g in want]
    assert any(d > 0 for d in diffs)
    with pytest.raises(ValueError, match="value_bound"):
        link_l, _ = memory_pair("lender", "platform")
        intersection_sum_lender(link_l, ["a"], [1.0], private_key=PRIV, epsilon=1.0)


def test_bad_inputs():
    link_l, link_p = memory_pair("lender", "platform")
    with pytest.raises(ValueError, match="non-negative"):
        intersection_sum_lender(link_l, ["a", "b"], [1.0, -2.0], private_key=PRIV)
    with pytest.raises(ValueError, match="occurs twice"):
        intersection_sum_platform(link_p, ["a", "A"], ["g", "g"])
