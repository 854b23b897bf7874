"""ECDH-PSI against a plain set intersection, priority columns, policies and privacy."""

import json

import numpy as np
import pandas as pd
import pytest

from fedacq.link.ledger import PartyLedger
from fedacq.link.memory import memory_pair, run_parties
from fedacq.psi import LenderSetStore, PlatformCache, PsiError, psi_lender, psi_platform
from fedacq.psi.ids import normalize_value, prepare_ids


def run(lender, platform, cols, lender_kw=None, platform_kw=None, record=False, ledgers=None):
    link_l, link_p = memory_pair("lender", "platform", job="t", record=record, ledgers=ledgers)
    res_l, res_p = run_parties((lambda: psi_lender(link_l, lender, cols, workers=1, **(lender_kw or {})),),
                               (lambda: psi_platform(link_p, platform, cols, workers=1, **(platform_kw or {})),),
                               timeout=120)
    return res_l, res_p, link_l, link_p


def expected_pairs(lender, platform, col):
    """Plain intersection with the 'first occurrence' duplicate policy."""
    def first_rows(df):
        seen = {}
        for i, v in enumerate(df[col]):
            norm = normalize_value(v, "text")
            if norm is not None and norm not in seen:
                seen[norm] = i
        return seen
    fl, fp = first_rows(lender), first_rows(platform)
    return {(fl[v], fp[v]) for v in fl.keys() & fp.keys()}


def random_ids(rng, n, pool):
    alphabet = list("abcxyz019") + ["é", "ß", "中", "文", "🙂", " "]
    words = ["".join(rng.choice(alphabet, size=rng.integers(1, 6))) for _ in range(pool)]
    return [words[i] for i in rng.integers(0, pool, size=n)]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_plain_intersection_with_duplicates_and_unicode(seed):
    rng = np.random.default_rng(seed)
    lender = pd.DataFrame({"uid": random_ids(rng, 400, 600)})
    platform = pd.DataFrame({"uid": random_ids(rng, 700, 600)})
    res_l, res_p, _, _ = run(lender, platform, ["uid"])
    want = expected_pairs(lender, platform, "uid")
    assert set(zip(res_l.rows.tolist(), res_p.rows.tolist())) == want
    assert res_l.size == res_p.size == len(want) > 0
    assert res_l.stats["ids"]["uid"]["duplicates"] > 0


@pytest.mark.parametrize("case", ["empty_lender", "empty_platform", "no_overlap", "full_overlap"])
def test_edge_cases(case):
    ids = [f"id{i}" for i in range(50)]
    lender = pd.DataFrame({"uid": ids})
    platform = pd.DataFrame({"uid": list(reversed(ids))})
    if case == "empty_lender":
        lender = lender.iloc[:0]
    elif case == "empty_platform":
        platform = platform.iloc[:0]
    elif case == "no_overlap":
        platform = pd.DataFrame({"uid": [f"other{i}" for i in range(50)]})
    kw = {"min_intersection": 0}
    res_l, res_p, _, _ = run(lender, platform, ["uid"], kw, kw)
    want = expected_pairs(lender, platform, "uid")
    assert set(zip(res_l.rows.tolist(), res_p.rows.tolist())) == want
    assert res_l.size == (50 if case == "full_overlap" else 0)


def test_priority_columns_match_each_row_once():
    lender = pd.DataFrame({"phone": ["138 0013 8000", None, "13900000000", "13700000000"],
                           "device": ["d1", "d2", "d3", "dX"]})
    platform = pd.DataFrame({"mobile": ["+86 13900000000", "+8613800138000", None, "0086-137-0000-0000"],
                             "device_id": ["d3", "zz", "d2", "d1"]})
    link_l, link_p = memory_pair("lender", "platform")
    res_l, res_p = run_parties((psi_lender, link_l, lender, ["phone", "device"]),
                               (psi_platform, link_p, platform, ["mobile", "device_id"]))
    pairs = dict(zip(res_l.rows.tolist(), res_p.rows.tolist()))
    # phone matches first: lender 0 <-> platform 1, lender 2 <-> platform 0, lender 3 <-> platform 3;
    # lender 1 has no phone and matches platform 2 on device; "d1"/"d3" are not reused.
    assert pairs == {0: 1, 2: 0, 3: 3, 1: 2}
    assert res_l.matched_on.tolist() == res_p.matched_on.tolist()
    assert sorted(res_l.matched_on.tolist()) == [0, 0, 0, 1]


def test_reveal_to_lender_only():
    df = pd.DataFrame({"uid": [f"id{i}" for i in range(20)]})
    res_l, res_p, _, _ = run(df, df.iloc[5:], ["uid"], {"reveal_to": "lender"})
    assert res_l.size == res_p.size == 15
    assert len(res_l.rows) == 15 and len(res_p.rows) == 0 and not res_p.stats["revealed"]


def test_min_intersection_stops_both_sides():
    df = pd.DataFrame({"uid": [f"id{i}" for i in range(20)]})
    link_l, link_p = memory_pair("lender", "platform")
    errors = []

    def side(fn, *args, **kw):
        try:
            fn(*args, workers=1, **kw)
        except PsiError as exc:
            errors.append(str(exc))
    run_parties((side, psi_lender, link_l, df, ["uid"]),
                (lambda: side(psi_platform, link_p, df.iloc[:3], ["uid"], min_intersection=10),))
    assert len(errors) == 2 and all("below the minimum of 10" in e for e in errors)


def test_duplicate_policies():
    df = pd.DataFrame({"uid": ["a", "A ", "b", "c", "b"]})
    assert prepare_ids(df, ["uid"]).columns[0].rows.tolist() == [0, 2, 3]
    assert prepare_ids(df, ["uid"], duplicates="drop").columns[0].rows.tolist() == [3]
    with pytest.raises(ValueError, match="'uid' has 2 duplicate"):
        prepare_ids(df, ["uid"], duplicates="error", source="lender.csv")
    with pytest.raises(ValueError, match="'nope' not found"):
        prepare_ids(df, ["nope"])


def test_phone_normalisation():
    forms = ["13800138000", "+86 138-0013-8000", "0086 13800138000", "8613800138000", "013800138000"]
    assert {normalize_value(f, "phone") for f in forms} == {"8613800138000"}
    assert normalize_value("  ", "text") is None and normalize_value(float("nan"), "text") is None
    assert normalize_value("ÅB", "text") == normalize_value("åb", "text")


def test_only_blinded_points_cross(tmp_path):
    ids = [f"+86138{i:08d}" for i in range(60)]
    lender = pd.DataFrame({"phone": ids[:40]})
    platform = pd.DataFrame({"phone": ids[20:]})
    ledgers = {p: PartyLedger(tmp_path / p, p) for p in ("lender", "platform")}
    salt = b"job-salt-0123456789"
    res_l, res_p, link_l, link_p = run(lender, platform, ["phone"], {"salt": salt}, record=True,
                                       ledgers=ledgers)
    assert res_l.size == 20
    import hashlib
    from fedacq.crypto.ecdh import hash_to_points
    from fedacq.psi.cache import column_domain
    norm = [normalize_value(v, "phone").encode() for v in ids]
    forbidden = set(norm)
    for h in (hashlib.sha256, hashlib.md5, hashlib.sha1):
        forbidden |= {h(v).digest() for v in norm} | {h(v).hexdigest().encode() for v in norm}
    forbidden |= {bytes(p) for p in hash_to_points(norm, salt, column_domain(0, "phone"))}
    for link in (link_l, link_p):
        assert link.received
        for msg in link.received:
            blob = json.dumps(msg.header).encode() + b"".join(
                np.ascontiguousarray(p).tobytes() for p in msg.parts.values())
            assert not any(f in blob for f in forbidden), msg.type
            for v in ids:
                assert v.encode() not in blob and v[3:].encode() not in blob
    for party in ("lender", "platform"):
        entries = list(ledgers[party].egress.entries())
        assert entries and {e["type"] for e in entries} <= {"psi.hello", "psi.hello_ack", "psi.points",
                                                            "psi.result"}
        text = "".join(f.read_text() for f in (tmp_path / party).iterdir())
        assert not any(v[3:] in text for v in ids)
        for e in entries:
            if e["type"] == "psi.points":
                assert e["parts"]["points"]["shape"][1] == 32


def test_unbalanced_cache_reuse_and_rotation(tmp_path):
    platform = pd.DataFrame({"uid": [f"id{i}" for i in range(300)]})
    lender = pd.DataFrame({"uid": [f"id{i}" for i in range(250, 400)]})
    cache = PlatformCache.build(tmp_path / "cache", platform, ["uid"], workers=1)
    store = LenderSetStore(tmp_path / "lender_sets")
    kw = {"mode": "unbalanced", "set_store": store}
    first = run(lender, platform, ["uid"], kw, {"cache": tmp_path / "cache"})
    assert "offline_receive_set" in first[0].stats["seconds"]
    second = run(lender, platform, ["uid"], kw, {"cache": cache})
    assert "offline_receive_set" not in second[0].stats["seconds"]
    for res_l, res_p, _, _ in (first, second):
        assert res_l.size == 50
        assert (lender.uid.values[res_l.rows] == platform.uid.values[res_p.rows]).all()
    rotated = cache.rotate(platform, workers=1)
    assert rotated.fingerprint != cache.fingerprint
    third = run(lender, platform, ["uid"], kw, {"cache": PlatformCache.load(tmp_path / "cache")})
    assert "offline_receive_set" in third[0].stats["seconds"] and third[0].size == 50
    assert store.fingerprints() == [rotated.fingerprint]
    with pytest.raises(ValueError, match="rebuild"):
        rotated.check_table(platform.iloc[:10], ["uid"])


from hypothesis import given, settings, strategies as st  # noqa: E402


@settings(max_examples=50, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=8)), max_size=20))
def test_vectorised_normalisation_equals_per_value(values):
    from fedacq.psi.ids import _normalize_series
    series = pd.Series(values, dtype=object)
    for kind in ("text", "hash"):
        assert _normalize_series(series, kind, "86").tolist() == [normalize_value(v, kind) for v in values]
