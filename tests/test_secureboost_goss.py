"""GOSS (LightGBM's ``top_rate`` / ``other_rate``) in SecureBoost: it trains, the platform's work drops with the
sample, the platform checks the sample, and a lender's node refuses it unless its policy opts in.

Not XGBoost-exact by design (the trees are those of the sampled, reweighted gradients); with rates
that keep every row it gives the exact trees, which checks the plumbing. Keys are 512 bits with the
explicit test-only flag: speed only.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedacq.learn import histogram
from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform, goss_sizes
from fedacq.link.memory import MemoryLink, memory_pair, run_parties
from fedacq.link.message import Message
from test_secureboost_continue import fit, joint_predict
from test_secureboost_exact import synthetic


def test_rates_that_keep_every_row_give_the_exact_trees():
    Xl, Xp, y = synthetic(n=300, seed=1)
    lender, _ = fit(2, Xl, Xp, y, top_rate=0.5, other_rate=0.5)
    exact, _ = fit(2, Xl, Xp, y)
    assert [t.to_dict() for t in lender.trees_] == [t.to_dict() for t in exact.trees_]


def test_goss_trains_and_the_platform_multiplies_only_the_sampled_rows(monkeypatch):
    """Counts, not time: rows fed to the histogram kernel and the products it plans, with and without GOSS."""
    from sklearn.metrics import roc_auc_score

    counted: list[tuple[int, int]] = []
    build = histogram.build_histograms

    def counting(cts, nsq, bins, n_bins, rows, pair_features=True):
        counted.append((len(rows), histogram.planned_products(bins, n_bins, rows, pair_features)))
        return build(cts, nsq, bins, n_bins, rows, pair_features)
    monkeypatch.setattr(histogram, "build_histograms", counting)
    Xl, Xp, y = synthetic(n=600, seed=2)
    totals = {}
    for name, goss in (("all rows", {}), ("goss", {"top_rate": 0.2, "other_rate": 0.1})):
        counted.clear()
        lender, platform = fit(3, Xl, Xp, y, **goss)
        totals[name] = np.sum(counted, axis=0)
        assert roc_auc_score(y, joint_predict(lender, platform, Xl, Xp)) > 0.7
    top_k, other_k = goss_sizes(600, 0.2, 0.1)
    assert (top_k, other_k) == (120, 60)
    rows_ratio, products_ratio = totals["goss"] / totals["all rows"]
    assert rows_ratio <= (top_k + other_k) / 600 + 0.05  # every build is on sampled rows only
    assert products_ratio < 0.45


class TamperLink(MemoryLink):
    """The lender's link, adding one row to each GOSS sample it sends."""

    def __init__(self, link: MemoryLink) -> None:
        super().__init__(link.party, link.peer, link._inbox, link._outbox, job=link.job)

    def _transmit(self, seq: int, msg: Message) -> None:
        if msg.type == "sb.tree":
            sample = msg.parts["sample"].copy()
            sample[np.nonzero(~sample)[0][0]] = True
            msg = Message(msg.type, msg.header, {**msg.parts, "sample": sample})
        super()._transmit(seq, msg)


@pytest.mark.parametrize("agreed, tamper, error", [
    ((0.2, 0.1), True, "GOSS sample \\(shape, rows\\) \\(\\(300,\\), 91\\), expected 90 of 300 rows"),
    ((0.3, 0.1), False, "asks for GOSS \\(top_rate, other_rate\\) \\(0.2, 0.1\\); this party agreed to \\(0.3, 0.1\\)"),
    ((None, None), False, "asks for GOSS"),
])
def test_the_platform_checks_the_sample_against_the_agreed_rates(agreed, tamper, error):
    Xl, Xp, y = synthetic(n=300, seed=3)
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(n_estimators=1, top_rate=0.2, other_rate=0.1, key_bits=512, insecure_test_key=True,
                               n_jobs=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=512, goss=agreed)
    with pytest.raises(ValueError, match=error):
        run_parties((lender.fit, TamperLink(la) if tamper else la, Xl, y), (platform.fit, pa, Xp), timeout=300)
    assert platform.trees_ == []


def test_the_sample_shows_the_platform_the_minority_class():
    """The leak GOSS brings, which is why it is opt-in: in a binary model's first tree |g| takes two values, so
    with the positives' share under top_rate every positive row is in the sample the platform receives."""
    Xl, Xp, _ = synthetic(n=400, seed=4)
    y = np.random.default_rng(4).permutation(np.repeat([1.0, 0.0], [100, 300]))  # 25% positives
    la, pa = memory_pair("lender", "platform", record=True)
    lender = SecureBoostLender(n_estimators=1, top_rate=0.4, other_rate=0.1, key_bits=512, insecure_test_key=True,
                               n_jobs=1)
    run_parties((lender.fit, la, Xl, y), (SecureBoostPlatform(n_jobs=1, min_key_bits=512).fit, pa, Xp), timeout=300)
    (first,) = [m for m in pa.received if m.type == "sb.tree"]
    sample = first.parts["sample"]
    assert sample[y == 1].all()  # the platform holds a 200-row set containing every positive


def test_a_lenders_node_refuses_goss_unless_its_policy_opts_in(tmp_path):
    from fedacq.learn.run_node import PROTOCOL
    from fedacq.node.policy import PolicyError, load_policy
    from fedacq.node.protocols import JobContext

    params = {"id_column": "id", "label_column": "y", "key_bits": 512, "insecure_test_key": True,
              "model_params": {"top_rate": 0.2, "other_rate": 0.1}}
    test_node = {"test_mode": True, "min_key_bits": 512}
    for party in ("lender", "platform"):  # both nodes accept the proposal; the rates are checked here already
        resolved = PROTOCOL.resolve(dict(params), load_policy(test_node, "test", party))
    with pytest.raises(PolicyError, match="other_rate must be a number in \\(0, 1\\) \\(GOSS needs both"):
        PROTOCOL.resolve({**params, "model_params": {"top_rate": 0.2}}, load_policy(test_node, "test", "lender"))
    la, _ = memory_pair("lender", "platform")
    ctx = JobContext(party="lender", role="lender", peer="platform", job_id="goss", link=la,
                     datasets={"table": tmp_path / "never-read.csv"}, params=resolved, work_dir=tmp_path / "work",
                     keys_dir=tmp_path / "keys", mlflow_store=str(tmp_path / "mlruns"),
                     policy=load_policy(test_node, "test", "lender"))
    with pytest.raises(PolicyError, match="policy secureboost_goss: proposed top_rate=0.2"):
        PROTOCOL.roles["lender"](ctx)
    assert la.stats()["messages_sent"] == 0
    assert not (tmp_path / "work").exists()
    assert load_policy({"secureboost_goss": True}, "test", "lender").secureboost_goss
    with pytest.raises(ValueError, match="secureboost_goss must be true or false"):
        load_policy({"secureboost_goss": "yes"}, "test", "lender")
