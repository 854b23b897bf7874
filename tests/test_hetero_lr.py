"""Hetero LR: the encrypted gradient, agreement with scikit-learn, what each side receives, the CLI.

Keys are 1024 bits with the explicit ``insecure_test_key`` flag (and the platform's
``min_key_bits`` lowered to match), only to keep CI fast: the protocol's arithmetic is
the same at 2048 bits. The key refusal test uses a short key because refusing it is the point.
"""

from __future__ import annotations

import json
import secrets
import warnings

import numpy as np
import pandas as pd
import pytest
from gmpy2 import mpz

from fedacq.crypto.paillier import FixedPoint, generate_keypair
from fedacq.learn.hetero_lr import (HeteroLRLender, HeteroLRPlatform, encrypted_dot, gradient_layout,
                                   mask_gradient, unmask_gradient)
from fedacq.link.message import BigInts
from fedacq.link.memory import memory_pair, run_parties

GUEST = "/work/shared/datasets/fate/default_credit_hetero_guest.csv"
HOST = "/work/shared/datasets/fate/default_credit_hetero_host.csv"
TEST_KEY_BITS = 1024  # test-only key size (see module docstring)


@pytest.fixture(scope="module")
def keypair():
    return generate_keypair(TEST_KEY_BITS, insecure_test_key=True)


@pytest.fixture(scope="module")
def credit():
    """6000 rows of default_credit: lender (label + 13 columns), platform (10 columns), 80/20 split."""
    g = pd.read_csv(GUEST, nrows=6000)
    h = pd.read_csv(HOST, nrows=6000)
    y = g.pop("y").to_numpy(float)
    Xl, Xp = g.drop(columns="id").to_numpy(), h.drop(columns="id").to_numpy()
    tr = np.random.default_rng(0).random(len(y)) < 0.8
    return Xl, Xp, y, tr


def _dot_case(pk, rows=60):
    """[[m]] and a feature matrix with every kind of column the kernel treats apart."""
    rng = np.random.default_rng(1)
    m = rng.integers(-2**20, 2**20, size=rows)
    K = rng.integers(-300, 300, size=(rows, 6))
    K[:, 1] = 0  # an all-zero column
    K[3, 2] = 2**40  # one large entry: a wide, sparse set of magnitudes
    K[:, 3] = np.where(rng.random(rows) < 0.8, -77, 180)  # binary, standardised: no zero, one frequent value
    K[:, 4] = np.where(rng.random(rows) < 0.9, 5, rng.integers(-900, 900, size=rows))  # sparse around 5
    fp = FixedPoint(0)
    return m, K, pk.encrypt_raw(fp.encode(m, pk), workers=1).ciphertexts


def test_encrypted_dot_matches_plaintext(keypair):
    """Per column: every kind of column, the frequent values taken out by the shared product."""
    from fedacq.learn.hetero_lr import column_defaults

    pk, sk = keypair
    m, K, cts = _dot_case(pk)
    defaults = column_defaults(K)
    assert (defaults[1], defaults[3], defaults[4]) == (0, -77, 5)
    assert column_defaults(np.hstack([K[:, :3], K[:, 5:]])).tolist() == [0, 0, 0, 0]  # the product would not pay
    out = encrypted_dot(pk, cts, K, n_jobs=1)
    fp = FixedPoint(0)
    got = fp.decode_ints(sk.decrypt_raw(pk.vector_from_bigints(BigInts(out, pk.ciphertext_bytes)), workers=1), pk)
    assert got == [int(v) for v in (K.astype(object).T @ m.astype(object))]


def test_packed_dot_is_the_same_cut_anywhere(keypair):
    """Packed: slot j of ciphertext j // capacity holds column j's signed sum; a packed ciphertext
    cut between blocks (workers) is the product of the blocks' parts, wherever the cut falls."""
    from fedacq.crypto.paillier import compress_capacity
    from fedacq.learn.hetero_lr import _inverses, _packed_columns

    pk, sk = keypair
    m, K, cts = _dot_case(pk)
    K = np.hstack([K, K[:, ::-1], K])  # 18 columns: several packed ciphertexts at 70-bit slots
    slot_bits = 70
    capacity = compress_capacity(pk, slot_bits)
    sums = [int(v) for v in (K.astype(object).T @ m.astype(object))]
    n = int(pk.n)
    want = [sum(g << (slot_bits * (j - k * capacity)) for j, g in enumerate(sums) if j // capacity == k) % n
            for k in range(-(-len(sums) // capacity))]
    assert len(want) > 1
    whole = encrypted_dot(pk, cts, K, n_jobs=1, slot_bits=slot_bits)
    assert sk.decrypt_raw(pk.vector_from_bigints(BigInts(whole, pk.ciphertext_bytes)), workers=1) == want
    inverses, nsq = _inverses(pk, cts), pk.ciphertext_modulus
    for cut in (1, capacity - 1, capacity + 3):
        parts = (_packed_columns(int(nsq), cts, inverses, K[:, :cut], 0, capacity, slot_bits)
                 + _packed_columns(int(nsq), cts, inverses, K[:, cut:], cut, capacity, slot_bits))
        joined = [mpz(1)] * len(want)
        for k, c in parts:
            joined[k] = joined[k] * c % nsq
        assert sk.decrypt_raw(pk.vector_from_bigints(BigInts(joined, pk.ciphertext_bytes)), workers=1) == want


def _masked_round(keypair, K, residuals):
    """The platform's masked gradient of ``[[residuals]]`` (any integers, honest or not), what the
    lender decrypts from it, and the masks and layout the platform keeps."""
    pk, sk = keypair
    offset_bits, slot_bits = gradient_layout(K, len(K), 24)
    cts = pk.encrypt_raw([int(r) % int(pk.n) for r in residuals], workers=1).ciphertexts
    packed = encrypted_dot(pk, cts, K, n_jobs=1, slot_bits=slot_bits)
    packed, masks = mask_gradient(pk, packed, offset_bits, slot_bits, K.shape[1])
    return sk.decrypt_raw(packed, workers=1), masks, offset_bits, slot_bits


def test_masked_gradient_unmasks_exactly_at_the_platform(keypair):
    """Honest residuals (|R| <= 2^24): the platform gets exactly K^T R back from the lender's answer."""
    pk, _ = keypair
    rng = np.random.default_rng(2)
    K = rng.integers(-900, 900, size=(50, 7))
    R = rng.integers(-2**24, 2**24 + 1, size=50)
    R[:3] = [2**24, -2**24, 0]
    decrypted, masks, offset_bits, slot_bits = _masked_round(keypair, K, R)
    got = unmask_gradient(pk, BigInts(decrypted, (pk.n_bits + 7) // 8), masks, offset_bits, slot_bits, 7)
    assert got == [int(v) for v in (K.astype(object).T @ R.astype(object))]


def test_a_lender_pushing_a_row_above_the_slots_decrypts_noise(keypair):
    """The attack: ``[[2^T]]`` for one row and ``[[0]]`` for the others, T above the slots.

    With a mask per slot (64 bits wider than a sum: the protocol before) the lender decrypted
    ``sum_j (K_tj 2^T + m_j) 2^(j s)`` and read row t's features above the masks: the control below
    shows the same reader recovering them from that plaintext. With one mask uniform in Z_n per
    packed ciphertext, two decryptions of the same attack on the same features share nothing, the
    reader gets no feature right, and the platform refuses the answer."""
    from adversary_peer import read_row_above_slots

    pk, _ = keypair
    K = np.random.default_rng(3).integers(-900, 900, size=(40, 4))
    d, t = K.shape[1], 7
    offset_bits, slot_bits = gradient_layout(K, len(K), 24)
    T = d * (offset_bits + 65)  # above the old protocol's masked slots (and the new, narrower ones)
    R = np.zeros(40, dtype=object)
    R[t] = 1 << T
    old_masks = [(1 << offset_bits) + secrets.randbits(offset_bits + 64) for _ in range(d)]
    old_plaintext = sum((int(K[t, j]) * 2**T + m) << (j * (offset_bits + 65)) for j, m in enumerate(old_masks))
    assert read_row_above_slots(old_plaintext, int(pk.n), T, offset_bits + 65, d) == K[t].tolist()
    first, masks, _, _ = _masked_round(keypair, K, R)
    second, _, _, _ = _masked_round(keypair, K, R)
    assert len(first) == len(second) == 1 and first != second
    for value in first + second:
        assert value.bit_length() > pk.n_bits - 64  # uniform in [0, n), not a small sum
        read = read_row_above_slots(value, int(pk.n), T, slot_bits, d)
        assert not np.equal(read, K[t]).any(), read
    with pytest.raises(ValueError, match="hlr.unmask: value 0 does not unmask to 4 sums of honest residuals"):
        unmask_gradient(pk, BigInts(first, (pk.n_bits + 7) // 8), masks, offset_bits, slot_bits, d)


@pytest.mark.parametrize("change, message", [
    (lambda vals, pk: BigInts(vals, 8), "hlr.unmask: values of 8 bytes, expected"),
    (lambda vals, pk: BigInts(vals + vals, (pk.n_bits + 7) // 8), "hlr.unmask: 2 values for 1 packed"),
    (lambda vals, pk: BigInts([int(pk.n)], (pk.n_bits + 7) // 8), "hlr.unmask: value 0 is not below the key's n"),
    (lambda vals, pk: BigInts([(vals[0] - (1 << 400)) % int(pk.n)], (pk.n_bits + 7) // 8),
     "hlr.unmask: value 0 does not unmask to 5 sums of honest residuals"),
], ids=["width", "count", "not-below-n", "wrong-decryption"])
def test_unmask_refuses_answers_an_honest_lender_never_sends(keypair, change, message):
    pk, _ = keypair
    K = np.random.default_rng(4).integers(-900, 900, size=(30, 5))
    decrypted, masks, offset_bits, slot_bits = _masked_round(keypair, K, np.full(30, 1 << 20))
    with pytest.raises(ValueError, match=message):
        unmask_gradient(pk, change(decrypted, pk), masks, offset_bits, slot_bits, 5)


def test_a_residual_ciphertext_that_is_not_a_unit_is_refused(keypair):
    """``[[r]]`` with ``gcd(c, n) > 1`` decrypts mod p the same whatever mask multiplies it."""
    from fedacq.learn.hetero_lr import _inverses

    pk, sk = keypair
    with pytest.raises(ValueError, match="hlr.residuals: ciphertext 1 is not invertible"):
        _inverses(pk, [pk.encrypt_raw([1], workers=1).ciphertexts[0], mpz(sk.p)])


def _fit(credit, record=False, **params):
    Xl, Xp, y, tr = credit
    L, P = memory_pair("lender", "platform", record=record)
    lender = HeteroLRLender(key_bits=TEST_KEY_BITS, insecure_test_key=True, n_jobs=1, **params)
    platform = HeteroLRPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS)

    def lender_side():
        lender.fit(L, Xl[tr], y[tr], eval_set=(Xl[~tr], y[~tr]))
        return lender.predict_proba(L, Xl[~tr])

    def platform_side():
        platform.fit(P, Xp[tr], Xp[~tr])
        platform.serve_predict(P, Xp[~tr])

    proba, _ = run_parties((lender_side,), (platform_side,))
    return lender, platform, proba, L, P


@pytest.mark.parametrize("penalty,C", [("l2", 1.0), ("l1", 0.05)])
def test_validation_auc_within_0005_of_sklearn(credit, penalty, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.preprocessing import StandardScaler

    Xl, Xp, y, tr = credit
    lender, platform, proba, _, _ = _fit(credit, penalty=penalty, C=C, max_iter=10)
    X = np.hstack([Xl, Xp])
    scaler = StandardScaler().fit(X[tr])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scikit-learn >= 1.8 deprecates `penalty`
        ref = LogisticRegression(penalty=penalty, C=C, solver="saga" if penalty == "l1" else "lbfgs",
                                 max_iter=5000).fit(scaler.transform(X[tr]), y[tr])
    ref_auc = roc_auc_score(y[~tr], ref.predict_proba(scaler.transform(X[~tr]))[:, 1])
    assert abs(roc_auc_score(y[~tr], proba) - ref_auc) < 0.005
    assert lender.history_ and "valid_auc" in lender.history_[-1]
    if penalty == "l1":  # the proximal step makes exact zeros, as saga does
        assert (np.r_[lender.coef_, platform.coef_] == 0).any()


def test_what_each_side_receives(credit):
    Xl, Xp, y, tr = credit
    lender, platform, _, L, P = _fit(credit, record=True, max_iter=2)
    # the platform gets ciphertexts, masked values and control headers: no float array at all
    types = {m.type for m in P.received}
    assert types == {"hlr.hello", "hlr.residuals", "hlr.unmask", "hlr.epoch_done", "hlr.predict"}
    for msg in P.received:
        for part in msg.parts.values():
            assert isinstance(part, BigInts)
        assert "y" not in json.loads(msg.header["config"]).get("params", {}) if msg.type == "hlr.hello" else True
    pk = lender.public_key_
    cts = [m for m in P.received if m.type == "hlr.residuals"]
    assert all(c.parts["residuals"].width == pk.ciphertext_bytes for c in cts)
    # residual ciphertexts are fresh: no two equal, even for equal plaintexts
    first = [int(v) for v in cts[0].parts["residuals"].values]
    assert len(set(first)) == len(first)
    # what the lender decrypts and returns is P + M mod n, M uniform in Z_n: n-byte integers spread over
    # [0, n), not sums of a few dozen bits (each is below n / 2^64 with probability 2^-64)
    unmasks = [m.parts["values"] for m in P.received if m.type == "hlr.unmask"]
    assert all(v.width == (pk.n_bits + 7) // 8 for v in unmasks)
    values = [int(v) for part in unmasks for v in part.values]
    assert all(v < pk.n for v in values) and min(v.bit_length() for v in values) > pk.n_bits - 64
    # the lender gets partial logits (documented) and compressed ciphertexts, never the features or w_p
    for msg in L.received:
        for name, part in msg.parts.items():
            if isinstance(part, BigInts):
                assert part.width == pk.ciphertext_bytes
                continue
            assert part.ndim == 1 and name in ("logits", "train_logits", "eval_logits")
            for col in Xp.T:
                assert not np.isin(np.round(col, 6), np.round(part, 6)).all()
    assert not any(np.allclose(part, platform.coef_) for m in L.received for part in m.parts.values()
                   if isinstance(part, np.ndarray) and part.shape == platform.coef_.shape)


def test_refuses_batches_the_platform_could_solve(credit):
    with pytest.raises(ValueError, match="batch_size=8 must exceed the platform's 10 features"):
        _fit(credit, batch_size=8, max_iter=1)


def test_platform_refuses_a_key_under_its_own_minimum(keypair):
    from fedacq.link.message import Message

    pk, _ = keypair
    L, P = memory_pair("lender", "platform", record=True)
    params = HeteroLRLender(key_bits=TEST_KEY_BITS).get_params()
    L.send(Message("hlr.hello", {"config": json.dumps({"params": params, "public_key": pk.to_json(),
                                                       "n_rows": 100, "n_eval_rows": 0,
                                                       "insecure_test_key": True})}))  # a claim, ignored
    with pytest.raises(ValueError, match="hlr.hello: the lender's key has 1024 bits; this party accepts at least 2048"):
        HeteroLRPlatform(n_jobs=1).fit(P, np.zeros((100, 3)))
    assert L.received == []  # refused before answering


def test_ou_is_refused_by_both_parties_with_the_reason(keypair):
    """Hetero LR runs on Paillier only (fedacq.learn.hetero_lr.SCHEMES): under OU the platform cannot draw
    a mask uniform over Z_p, p being the lender's secret. The lender refuses to make an OU key; the
    platform refuses an OU announcement even when its policy lists OU, and reads a key only as the
    announced scheme (a Paillier key announced as OU is not guessed at)."""
    from fedacq.link.message import Message

    with pytest.raises(ValueError, match=r"hetero LR: hetero LR runs on \['paillier'\] only, not scheme 'ou': "
                                         r"the platform's gradient mask must be uniform"):
        HeteroLRLender(scheme="ou", key_bits=TEST_KEY_BITS, insecure_test_key=True)
    pk, _ = keypair
    for announced, schemes, message in (
            ("ou", ("paillier", "ou"), r"hlr.hello: hetero LR runs on \['paillier'\] only, not scheme 'ou'"),
            ("paillier", ("ou",), r"hlr.hello: scheme 'paillier' is not in this node's policy schemes \['ou'\]")):
        L, P = memory_pair("lender", "platform", record=True)
        params = {**HeteroLRLender(key_bits=TEST_KEY_BITS).get_params(), "scheme": announced}
        L.send(Message("hlr.hello", {"config": json.dumps({"params": params, "public_key": pk.to_json(),
                                                           "n_rows": 100, "n_eval_rows": 0})}))
        with pytest.raises(ValueError, match=message):
            HeteroLRPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS, schemes=schemes).fit(P, np.zeros((100, 3)))
        assert L.received == []  # refused before answering


def test_learning_rate_is_a_schedule_name():
    with pytest.raises(ValueError, match="eta0"):
        HeteroLRLender(learning_rate=0.1)


def test_an_epoch_checkpoint_of_other_stopping_settings_is_refused():
    """A resumed job continues the stopper it saved, with its own n_iter_no_change and tol, or not at all."""
    from fedacq.learn.early_stopping import EarlyStopping
    from fedacq.learn.hetero_lr import Optimizer

    d = 2
    opt = Optimizer(d + 1, "l2", 1.0, 10, 0.9, intercept_last=True)
    opt_meta, opt_arrays = opt.state()
    meta = {**opt_meta, "history": [{"epoch": 0}], "intercept": 0.0, "best_intercept": 0.0, "adaptive_eta": 0.05,
            "stop": False, "early_stopping": EarlyStopping(3, tol=1e-4).state()}
    arrays = {**opt_arrays, "coef": np.zeros(d), "best_coef": np.zeros(d)}
    assert HeteroLRLender()._restore((0, meta, arrays), opt, d)[4] == EarlyStopping(3, tol=1e-4)
    with pytest.raises(ValueError, match="epoch checkpoint 0: early stopping with n_iter_no_change=3, tol=0.0001"):
        HeteroLRLender(tol=1e-3)._restore((0, meta, arrays), opt, d)


def test_fedacq_run_hetero_lr(tmp_path, capsys):
    from fedacq.cli import main

    g = pd.read_csv(GUEST, nrows=900)
    h = pd.read_csv(HOST, nrows=900)
    g.to_csv(tmp_path / "lender.csv", index=False)
    h.sample(frac=1.0, random_state=2).to_csv(tmp_path / "platform.csv", index=False)
    out = tmp_path / "out"
    code = main(["run", "--lender", str(tmp_path / "lender.csv"), "--platform", str(tmp_path / "platform.csv"),
                 "--id-column", "id", "--label-column", "y", "--model", "hetero_lr",
                 "--param", "max_iter=3", "--param", "batch_size=128", "--param", "penalty=l1",
                 "--key-bits", str(TEST_KEY_BITS), "--insecure-test-key",  # test-only key size
                 "--validation-fraction", "0.25", "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    m = json.loads((out / "metrics.json").read_text())
    assert m["model"] == "hetero_lr" and m["intersection_size"] == 900
    assert m["params"]["penalty"] == "l1" and m["params"]["max_iter"] == 3
    assert 0.6 < m["validation"]["auc"] < 1 and len(m["lift_by_decile"]) == 10
    assert 1 <= len(m["history"]) <= 3
    assert (out / "lender" / "model" / "hetero_lr_lender.json").is_file()
    assert (out / "platform" / "model" / "hetero_lr_platform.json").is_file()


def test_a_platform_without_feature_columns_gets_no_residuals():
    """A featureless platform (scikit-learn's estimator checks run one) trains nothing; the lender fits alone
    and sends no ciphertext at all: there is no platform gradient to compute."""
    rng = np.random.default_rng(0)
    Xl = rng.normal(size=(200, 2))
    y = (Xl[:, 0] > 0).astype(float)
    L, P = memory_pair("lender", "platform", record=True)
    lender = HeteroLRLender(max_iter=2, batch_size=50, key_bits=TEST_KEY_BITS, insecure_test_key=True, n_jobs=1)
    platform = HeteroLRPlatform(n_jobs=1, min_key_bits=TEST_KEY_BITS)
    proba, _ = run_parties((lambda: lender.fit(L, Xl, y).predict_proba(L, Xl),),
                           (lambda: platform.fit(P, np.zeros((200, 0))).serve_predict(P, np.zeros((200, 0))),))
    assert lender.history_[-1]["train_auc"] > 0.95 and proba.shape == (200,)
    assert {m.type for m in P.received} == {"hlr.hello", "hlr.epoch_done", "hlr.predict"}
