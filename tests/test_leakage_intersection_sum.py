"""Intersection-sum's suppression, played by the platform as an attacker.

The platform chooses the groups. It knows ids the lender holds (e.g. from a modeling
PSI), so it can fill a group with ``minimum - 1`` of them and one target: if the lender
decided suppression on the exact count, the released flag alone would say whether the
target is a lender customer. The lender now decides on the noisy count, and the exact
count is never compared with anything, so the release is DP for counts and sums.

What the release cannot change, and a test below shows: the platform does the matching,
so it knows every group's exact match count from its own computation. Suppression and
noise protect the lender's *values* (and the counts against anyone who sees only the
release), not the counts against the platform. 1024-bit test-only key (platform
``min_key_bits`` lowered to match) for speed.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedacq.crypto import dp_noise
from fedacq.crypto.paillier import generate_keypair
from fedacq.link.memory import memory_pair, run_parties
from fedacq.psi.intersection_sum import intersection_sum_lender, intersection_sum_platform, release

_, PRIV = generate_keypair(1024, insecure_test_key=True)
MINIMUM = 5


def _attack_run(epsilon, n_groups, target_in_lender):
    """Every group: MINIMUM - 1 ids the lender has, plus a target that it has or not."""
    lender_ids = [f"known-{g}-{i}" for g in range(n_groups) for i in range(MINIMUM - 1)]
    platform_ids, groups = list(lender_ids), [g for g in range(n_groups) for _ in range(MINIMUM - 1)]
    for g in range(n_groups):
        platform_ids.append(f"target-{g}")
        groups.append(g)
        if target_in_lender:
            lender_ids.append(f"target-{g}")
    link_l, link_p = memory_pair("lender", "platform", record=True)
    res_l, _ = run_parties(
        (lambda: intersection_sum_lender(link_l, lender_ids, np.ones(len(lender_ids)), private_key=PRIV,
                                         min_group_size=MINIMUM, epsilon=epsilon,
                                         value_bound=None if epsilon is None else 1.0, workers=1),),
        (lambda: intersection_sum_platform(link_p, platform_ids, groups, min_group_size=1, workers=1,
                                           min_key_bits=1024),),
        timeout=300)
    wire = next(m for m in link_p.received if m.type == "isum.release").parts  # what crossed, as received
    return res_l, wire, link_p.received


def test_without_noise_the_flag_gives_the_target_away():
    """epsilon=None keeps the exact rule (documented): the minimum alone is no privacy guarantee."""
    for present in (True, False):
        _, wire, _ = _attack_run(None, 3, present)
        assert (~wire["suppressed"]).all() if present else wire["suppressed"].all()


def test_a_group_at_exactly_the_threshold_is_sometimes_released_sometimes_suppressed():
    """With noise the flag of a group whose exact count equals the minimum is a fair coin.

    Each group's count is MINIMUM exactly and the noise is continuous and symmetric, so
    each group is suppressed with probability 1/2, independently. With 40 groups all
    flags agree with probability 2 * 2^-40 < 2e-12: this cannot fail by chance.
    """
    n_groups = 40
    res_l, wire, _ = _attack_run(1.0, n_groups, True)
    assert all(res_l.exact[g].count == MINIMUM for g in range(n_groups))
    flags = wire["suppressed"]
    assert 0 < flags.sum() < n_groups
    # what was released is the noisy count the decision used: at least the minimum, never the exact 5.0
    released = wire["count"][~flags]
    assert (released >= MINIMUM).all() and not np.isin(released, [float(MINIMUM)]).any()
    assert (wire["count"][flags] == 0).all() and (wire["sum"][flags] == 0).all()


def test_the_decision_follows_the_noisy_count_never_the_exact_one(monkeypatch):
    counts = np.array([MINIMUM - 1, MINIMUM, MINIMUM + 1])
    sums = np.array([[1.0], [2.0], [3.0]])
    # noise chosen so that the noisy order inverts the exact one around the minimum
    offsets = {counts.shape: np.array([1.5, -0.5, -1.5]), sums.shape: np.zeros((3, 1))}
    monkeypatch.setattr(dp_noise, "laplace", lambda scale, size: offsets[tuple(np.atleast_1d(size))])
    count, total, suppressed = release(counts, sums, MINIMUM, np.array([1.0]), np.array([1.0]))
    assert suppressed.tolist() == [False, True, True]  # exact 4 released, exact 5 and 6 suppressed
    assert count.tolist() == [MINIMUM + 0.5, 0.0, 0.0] and total.ravel().tolist() == [1.0, 0.0, 0.0]


def test_without_epsilon_the_rule_is_exact():
    counts = np.array([MINIMUM - 1, MINIMUM, MINIMUM + 1])
    count, total, suppressed = release(counts, np.array([[1.0], [2.0], [3.0]]), MINIMUM, None, None)
    assert suppressed.tolist() == [True, False, False]
    assert count.tolist() == [0.0, MINIMUM, MINIMUM + 1] and total.ravel().tolist() == [0.0, 2.0, 3.0]


def test_the_platform_knows_every_groups_exact_match_count_anyway(monkeypatch):
    """What noise and suppression cannot hide: the platform matches the points itself.

    It knows which group each re-blinded point of its own belongs to (the lender keeps
    the groups in order to let it sum per group), so raising the lender's points to its
    key and looking them up gives the exact number of matches per group, suppressed or
    not. Played here from the platform's own key and the messages it received.
    """
    from fedacq.crypto.ecdh import BlindingKey
    from fedacq.psi import intersection_sum as isum

    keys = []
    generate = BlindingKey.generate
    monkeypatch.setattr(isum.BlindingKey, "generate", classmethod(lambda cls: keys.append(generate()) or keys[-1]))
    n_groups = 6
    _, wire, received = _attack_run(1.0, n_groups, True)
    table = np.concatenate([m.parts["points"] for m in received
                            if m.type == "psi.points" and m.header["phase"] == "isum_platform_reblinded"])
    group_of = np.repeat(np.arange(n_groups), MINIMUM)  # the platform's own group sizes, in order
    lender_points = np.concatenate([m.parts["points"] for m in received if m.type == "isum.values"])
    table_v = {bytes(p): g for p, g in zip(table, group_of)}
    # two keys were drawn (lender's and platform's); only the platform's turns H(x)^a into table entries
    counts = max((np.bincount([table_v[bytes(p)] for p in key.reblind(lender_points, workers=1)
                               if bytes(p) in table_v], minlength=n_groups) for key in keys),
                 key=lambda c: c.sum())
    assert counts.tolist() == [MINIMUM] * n_groups  # exact, whatever the release says
    assert (wire["count"][~wire["suppressed"]] != MINIMUM).all()  # the release itself is noisy


@pytest.mark.parametrize("present", [True, False])
def test_with_noise_the_released_flag_is_not_a_function_of_membership(present):
    """The attack's group sits at minimum - 1 or minimum: either way both flags occur across groups.

    present: P(suppressed) = 1/2 per group. absent: count MINIMUM - 1, P(released) =
    P(Laplace(2) >= 1) = exp(-1/2) / 2 = 0.30 per group. With 60 groups the chance that all
    flags agree is below 0.7^60 + 0.3^60 < 1e-9.
    """
    _, wire, _ = _attack_run(1.0, 60, present)
    assert 0 < wire["suppressed"].sum() < 60
