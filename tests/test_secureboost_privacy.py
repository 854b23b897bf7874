"""What each party actually received, read from ``memory_pair(record=True)``.

512-bit keys (``insecure_test_key=True`` at the lender, ``min_key_bits=512`` at the
platform) only for speed; the refusal tests use small keys because refusing them is the point.
"""

import json

import numpy as np
import pytest

from fedacq.crypto.paillier import generate_keypair
from fedacq.learn.secureboost import SecureBoostLender, SecureBoostPlatform
from fedacq.link.memory import memory_pair, run_parties
from fedacq.link.message import BigInts, Message

TEST_KEY_BITS = 512


def _data(n=400, seed=5):
    rng = np.random.default_rng(seed)
    Xl = rng.normal(size=(n, 2))
    Xp = rng.normal(size=(n, 3))
    y = ((Xl[:, 0] + Xp[:, 0] + rng.normal(size=n)) > 0).astype(float)
    return Xl, Xp, y


def _run(mode):
    Xl, Xp, y = _data()
    la, pa = memory_pair("lender", "platform", record=True)
    lender = SecureBoostLender(n_estimators=3, max_depth=3, mode=mode, key_bits=TEST_KEY_BITS,
                               insecure_test_key=True, n_jobs=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS, mode=mode)
    run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=300)
    if mode == "joint":
        run_parties((lender.predict_proba, la, Xl), (platform.serve_predict, pa, Xp), timeout=300)
    return Xl, Xp, y, lender, platform, la.received, pa.received


def _floats(msg):
    return [name for name, part in msg.parts.items()
            if isinstance(part, np.ndarray) and part.dtype.kind == "f"]


def test_platform_gets_only_ciphertexts_and_split_requests():
    Xl, Xp, y, lender, platform, _, got = _run("joint")
    types = {m.type for m in got}
    assert types == {"sb.hello", "sb.tree", "sb.split", "sb.finish", "sb.predict"}
    n = lender.public_key_.n
    for msg in got:
        assert not _floats(msg), f"{msg.type} carries floats {_floats(msg)}"
        for part in msg.parts.values():
            if isinstance(part, BigInts):
                # ciphertexts live in Z_{n^2}: essentially all exceed n, a plaintext never does
                assert np.mean([v > n for v in part.values]) > 0.99
            else:
                assert part.dtype.kind in "bi"
    config = json.loads(next(m for m in got if m.type == "sb.hello").header["config"])
    # no claim about the key's status crosses: the platform judges the key by its own min_key_bits
    assert set(config) == {"params", "public_key", "layout", "n_rows", "n_eval_rows", "first_tree", "live_trees"}
    assert "d" not in json.loads(config["public_key"]) and "p" not in json.loads(config["public_key"])
    # split requests: lender splits say nothing about the lender's feature or bin
    for msg in (m for m in got if m.type == "sb.split"):
        lender_nodes = msg.parts["kind"] == 1
        assert np.all(msg.parts["feature"][lender_nodes] == -1) and np.all(msg.parts["bin"][lender_nodes] == -1)
    assert any(np.any(m.parts["kind"] == 1) for m in got if m.type == "sb.split"), "no lender split exercised"
    # a joint model's leaf values stay at the lender
    finish = next(m for m in got if m.type == "sb.finish")
    assert "leaf_values" not in finish.parts and "base_margin" not in finish.header


def test_lender_never_gets_platform_thresholds_or_values():
    Xl, Xp, y, lender, platform, got, _ = _run("joint")
    assert {m.type for m in got} == {"sb.hello_reply", "sb.hist", "sb.predict_bits"}
    thresholds = {t for tr in platform.trees_ for t in tr.threshold if not np.isnan(t)}
    assert thresholds, "no platform split exercised"
    for msg in got:
        assert not _floats(msg), f"{msg.type} carries floats {_floats(msg)}"
        assert not any(isinstance(v, float) for v in msg.header.values())
        for part in msg.parts.values():
            if isinstance(part, np.ndarray):
                assert part.dtype.kind in "bi"
                assert not (set(np.unique(part).tolist()) & thresholds)
    # the lender's model knows platform splits only as (feature index, bin index)
    for tr in lender.trees_:
        for i in range(tr.n_nodes):
            if tr.party[i] == 1:
                assert np.isnan(tr.threshold[i]) and tr.bin[i] >= -1
    saved = json.loads(lender.save(__import__("tempfile").mkdtemp()).read_text())
    assert not any(str(t)[:8] in json.dumps(saved["trees"]) for t in thresholds)


def test_prospect_platform_gets_leaf_values_only_at_the_end():
    Xl, Xp, y, lender, platform, _, got = _run("prospect")
    assert [m.type for m in got if _floats(m)] == ["sb.finish"]
    assert all(m.parts["kind"].tolist().count(1) == 0 for m in got if m.type == "sb.split")
    # a prospect model was trained without the lender's features
    assert all(p != 0 for tr in lender.trees_ for p in tr.party)


def _hello(key_bits, mode="joint", **extra):
    """A lender's sb.hello as a curious or careless lender could send it."""
    pk, _ = generate_keypair(key_bits, insecure_test_key=True)  # small on purpose: the point of the test
    params = SecureBoostLender(key_bits=key_bits, mode=mode).get_params()
    config = {"params": params, "public_key": pk.to_json(),
              "layout": {"frac_bits": 40, "slot_bits": 50, "count_bits": 8}, "n_rows": 3, "n_eval_rows": 0,
              **extra}
    return Message("sb.hello", {"config": json.dumps(config)})


@pytest.mark.parametrize("claim", [{}, {"insecure_test_key": True}, {"insecure_test_key": False}])
def test_platform_refuses_a_short_key_whatever_the_lender_claims(claim):
    la, pa = memory_pair("lender", "platform", record=True)
    la.send(_hello(1024, **claim))
    with pytest.raises(ValueError, match="sb.hello: the lender's key has 1024 bits; this party accepts at least 2048"):
        SecureBoostPlatform(n_jobs=1).fit(pa, np.zeros((3, 1)))
    assert la.received == []  # refused before answering anything


def test_platform_test_node_accepts_down_to_its_own_minimum_only():
    la, pa = memory_pair("lender", "platform")
    la.send(_hello(512, insecure_test_key=True))
    with pytest.raises(ValueError, match="has 512 bits; this party accepts at least 1024"):
        SecureBoostPlatform(n_jobs=1, min_key_bits=1024).fit(pa, np.zeros((3, 1)))


def test_platform_refuses_a_mode_it_did_not_agree_to():
    la, pa = memory_pair("lender", "platform", record=True)
    la.send(_hello(TEST_KEY_BITS, mode="prospect"))
    with pytest.raises(ValueError, match="sb.hello: the lender asks for mode 'prospect'; this party agreed to 'joint'"):
        SecureBoostPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS, mode="joint").fit(pa, np.zeros((3, 1)))
    assert la.received == []
    with pytest.raises(ValueError, match="mode"):
        SecureBoostPlatform(mode="both")


def _tampered_fit(monkeypatch, tamper):
    """A platform whose level replies (depth >= 1) pass through ``tamper(nodes, packed) -> (nodes, packed)``."""
    honest = SecureBoostPlatform._hist_message

    def forged(tree, depth, nodes, packed, *rest, **kw):
        if depth >= 1 and nodes:
            nodes, packed = tamper(list(nodes), list(packed))
        return honest(tree, depth, nodes, packed, *rest, **kw)

    monkeypatch.setattr(SecureBoostPlatform, "_hist_message", staticmethod(forged))
    Xl, Xp, y = _data()
    la, pa = memory_pair("lender", "platform")
    lender = SecureBoostLender(n_estimators=1, max_depth=3, key_bits=TEST_KEY_BITS, insecure_test_key=True,
                               n_jobs=1)
    platform = SecureBoostPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS)
    run_parties((lender.fit, la, Xl, y), (platform.fit, pa, Xp), timeout=300)


def test_platform_sends_only_the_built_children_and_the_lender_derives_the_rest():
    Xl, Xp, y, lender, platform, got, _ = _run("joint")
    hist = [m for m in got if m.type == "sb.hist"]
    sent = [m.parts["nodes"].tolist() for m in hist]
    assert sent[0] == [0]
    # children are numbered in pairs (left odd, right = left + 1): never both children of a split
    for nodes in sent[1:]:
        assert not any(n % 2 and n + 1 in nodes for n in nodes), nodes
    assert sum(len(n) for n in sent[1:]) > 0


@pytest.mark.parametrize("tamper, error", [
    (lambda nodes, packed: ([n + 1 if n % 2 else n - 1 for n in nodes], packed),  # the derived siblings instead
     r"sb.hist: histograms of nodes \[.*\], expected"),
    (lambda nodes, packed: (nodes + [max(nodes) + 1], packed),  # one node more
     r"sb.hist: histograms of nodes \[.*\], expected"),
    (lambda nodes, packed: (nodes, packed + packed[:1]),  # one ciphertext more
     "sb.hist: .* compressed ciphertexts, expected"),
])
def test_lender_refuses_histograms_it_did_not_expect(monkeypatch, tamper, error):
    with pytest.raises(ValueError, match=error):
        _tampered_fit(monkeypatch, tamper)


def test_lender_refuses_a_built_child_larger_than_its_parent():
    # honest subset sums never exceed the parent's: a negative difference is a forged histogram
    assert SecureBoostLender._sibling_entries([5, 9], [2, 9]) == [3, 0]
    with pytest.raises(ValueError, match="sb.hist: a built child's histogram exceeds its parent's"):
        SecureBoostLender._sibling_entries([5, 3], [2, 4])
