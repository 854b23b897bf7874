"""Incremental unbalanced PSI: the platform's cache updated in place, only the change sent.

Each check compares against a full run on the same tables: the pairs (lender row,
platform row, matched column) must be the same whatever crossed the link.
"""

import json

import numpy as np
import pandas as pd
import pytest

from fedacq.link.memory import memory_pair, run_parties
from fedacq.node.policy import Policy, PolicyError
from fedacq.psi import LenderSetStore, PlatformCache, PsiError, psi_lender, psi_platform
from fedacq.psi.cache import set_digest, table_digest
from fedacq.psi.ids import prepare_ids

COLS = ["phone", "device"]


def run(lender, platform, lender_kw=None, platform_kw=None):
    link_l, link_p = memory_pair("lender", "platform", job="t")
    return run_parties((lambda: psi_lender(link_l, lender, COLS, workers=1, **(lender_kw or {})),),
                       (lambda: psi_platform(link_p, platform, COLS, workers=1, **(platform_kw or {})),),
                       timeout=120)


def pairs(res_l, res_p):
    return set(zip(res_l.rows.tolist(), res_p.rows.tolist(), res_l.matched_on.tolist()))


def users(ids):
    """Rows with a phone and, for most, a device id; some devices repeat (duplicates)."""
    ids = list(ids)
    return pd.DataFrame({"phone": [f"138{i:08d}" for i in ids],
                         "device": [None if i % 7 == 0 else f"dev{i % 450}" for i in ids]})


def days():
    """A platform table over four days: arrivals, churn, and users who leave and come back."""
    rng = np.random.default_rng(7)
    live = list(range(600))
    tables = [users(live)]
    for day in range(1, 4):
        gone = set(rng.choice(live, size=15, replace=False).tolist())
        back = [i for i in range(600) if i not in live][:5]       # left earlier, return today
        live = [i for i in live if i not in gone] + back + list(range(600 + 20 * day, 620 + 20 * day))
        rng.shuffle(live)
        tables.append(users(live))
    return tables


def lender_table(day):
    ids = list(range(500, 700 + 10 * day))
    df = users(ids)
    df.loc[3, "phone"] = None            # matches on the device column only
    return df


def new_ids(before, after, duplicates):
    old, new = prepare_ids(before, COLS, duplicates=duplicates), prepare_ids(after, COLS, duplicates=duplicates)
    return sum(len(set(n.values) - set(o.values)) for o, n in zip(old.columns, new.columns))


@pytest.mark.parametrize("duplicates", ["first", "drop"])
def test_incremental_equals_full_run_day_by_day(tmp_path, duplicates):
    store = LenderSetStore(tmp_path / "lender_sets")
    dup = {"duplicates": duplicates}
    seen_generation = None
    for day, platform in enumerate(days()):
        lender = lender_table(day)
        cache, report = PlatformCache.serve(tmp_path / "cache", platform, COLS, incremental=True, workers=1, **dup)
        seen_generation = seen_generation or cache.fingerprint
        assert cache.fingerprint == seen_generation            # one key across the updates
        res_l, res_p = run(lender, platform, {"mode": "unbalanced", "set_store": store, "incremental": True, **dup},
                           {"cache": cache, **dup})
        full_l, full_p = run(lender, platform, dup, dup)         # balanced: fresh keys, everything crosses
        assert pairs(res_l, res_p) == pairs(full_l, full_p) and res_l.size > 0
        assert (lender.phone.values[res_l.rows[res_l.matched_on == 0]]
                == platform.phone.values[res_p.rows[res_p.matched_on == 0]]).all()
        n_points = sum(len(p) for p in cache.points)
        if day == 0:
            assert report["action"] == "built" and res_p.stats["transfer"] == "full"
            assert res_p.stats["set_points_sent"] == n_points
        else:
            assert report["action"] == "updated" and report["increments"] == day
            assert res_p.stats["transfer"] == res_l.stats["transfer"] == "delta"
            assert not res_l.stats["resent_full_set"]
            # exactly the ids new to a column's set: arrivals, returning users, a device whose holder left
            assert report["ids_blinded"] == new_ids(previous, platform, duplicates) >= 20
            # plus the repeated devices whose first row changed (the day's rows are shuffled)
            assert 0 < res_p.stats["set_points_sent"] == res_l.stats["set_points_received"] < n_points / 5
            assert res_p.stats["set_tokens_removed"] >= 15
        # the same key over the same table gives the same points for the same rows
        same_key = PlatformCache.build(tmp_path / "check", platform, COLS, key=cache.key, salt=cache.salt,
                                       workers=1, **dup)
        for c in range(len(COLS)):
            mine = {(cache.rows_by_token[t], p.tobytes()) for t, p in zip(cache.tokens[c], cache.points[c])}
            fresh = {(same_key.rows_by_token[t], p.tobytes()) for t, p in zip(same_key.tokens[c], same_key.points[c])}
            assert mine == fresh
        assert cache.table_digest == table_digest(prepare_ids(platform, COLS, **dup), duplicates)
        previous = platform
    # nothing changed: nothing crosses
    again_l, again_p = run(lender, platform, {"mode": "unbalanced", "set_store": store, "incremental": True, **dup},
                           {"cache": PlatformCache.load(tmp_path / "cache"), **dup})
    assert again_p.stats["transfer"] == "none" and again_p.stats["set_points_sent"] == 0
    assert pairs(again_l, again_p) == pairs(res_l, res_p)


def test_a_lender_copy_several_increments_old_gets_the_net_change(tmp_path):
    store = LenderSetStore(tmp_path / "lender_sets")
    tables = days()
    cache, _ = PlatformCache.serve(tmp_path / "cache", tables[0], COLS, incremental=True, workers=1)
    run(lender_table(0), tables[0], {"mode": "unbalanced", "set_store": store, "incremental": True}, {"cache": cache})
    for t in tables[1:]:                                           # the lender skips two cycles
        cache, _ = PlatformCache.serve(tmp_path / "cache", t, COLS, incremental=True, workers=1)
    res_l, res_p = run(lender_table(3), tables[3], {"mode": "unbalanced", "set_store": store, "incremental": True},
                       {"cache": cache})
    assert res_p.stats["transfer"] == "delta" and not res_p.stats["resent_full_set"]
    assert pairs(res_l, res_p) == pairs(*run(lender_table(3), tables[3]))
    assert store.digest(cache.fingerprint) == cache.set_digest


def test_not_incremental_or_bounds_reached_rebuild_with_a_fresh_key(tmp_path):
    tables = days()
    first, _ = PlatformCache.serve(tmp_path / "c", tables[0], COLS, workers=1)
    kept, report = PlatformCache.serve(tmp_path / "c", tables[0], COLS, workers=1)
    assert report["action"] == "kept" and kept.fingerprint == first.fingerprint
    same_rows = tables[0].copy()
    same_rows.loc[0, "phone"] = "13999999999"                   # same row count, other content
    rebuilt, report = PlatformCache.serve(tmp_path / "c", same_rows, COLS, workers=1)
    assert report["action"] == "rebuilt" and rebuilt.fingerprint != first.fingerprint
    updated, report = PlatformCache.serve(tmp_path / "c", tables[1], COLS, incremental=True, max_increments=1,
                                          workers=1)
    assert report["action"] == "updated"
    capped, report = PlatformCache.serve(tmp_path / "c", tables[2], COLS, incremental=True, max_increments=1,
                                         workers=1)
    assert report["action"] == "rebuilt" and "max 1" in report["reason"] and capped.fingerprint != updated.fingerprint
    aged, report = PlatformCache.serve(tmp_path / "c", tables[3], COLS, incremental=True, max_age_days=0.0,
                                       workers=1)
    assert report["action"] == "rebuilt" and "days old" in report["reason"]
    asked, report = PlatformCache.serve(tmp_path / "c", tables[3], COLS, incremental=True, rotate=True, workers=1)
    assert report["action"] == "rebuilt" and asked.fingerprint != aged.fingerprint
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    (tmp_path / "c" / "meta.json").write_text(json.dumps({**meta, "format": 1}))   # written by an older fedacq
    _, report = PlatformCache.serve(tmp_path / "c", tables[3], COLS, incremental=True, workers=1)
    assert report["action"] == "rebuilt" and "format" in report["reason"]


def test_a_crash_mid_update_leaves_the_old_cache(tmp_path, monkeypatch):
    tables = days()
    cache, _ = PlatformCache.serve(tmp_path / "c", tables[0], COLS, workers=1)
    digest = cache.set_digest

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", crash)                     # dies writing the increment's delta
    with pytest.raises(OSError, match="disk full"):
        PlatformCache.serve(tmp_path / "c", tables[1], COLS, incremental=True, workers=1)
    monkeypatch.undo()
    old = PlatformCache.load(tmp_path / "c")
    assert old.set_digest == digest and old.increments == 0
    # a crash between the two renames of a swap: the old folder is put back
    (tmp_path / "c").rename(tmp_path / "c.old")
    assert PlatformCache.load(tmp_path / "c").set_digest == digest


def test_lender_copy_that_does_not_match_gets_the_full_set(tmp_path):
    tables = days()
    store = LenderSetStore(tmp_path / "lender_sets")
    kw = {"mode": "unbalanced", "set_store": store, "incremental": True}
    cache, _ = PlatformCache.serve(tmp_path / "c", tables[0], COLS, incremental=True, workers=1)
    run(lender_table(0), tables[0], kw, {"cache": cache})
    points, tokens = store.get(cache.fingerprint)
    points[0] = points[0].copy()
    points[0][0, 0] ^= 1                                          # the lender's copy went bad (and says so)
    store.put(cache.fingerprint, points, tokens)
    cache, _ = PlatformCache.serve(tmp_path / "c", tables[1], COLS, incremental=True, workers=1)
    res_l, res_p = run(lender_table(1), tables[1], kw, {"cache": cache})
    assert res_p.stats["transfer"] == "full"                     # its digest is no state of the platform's set
    assert pairs(res_l, res_p) == pairs(*run(lender_table(1), tables[1]))


@pytest.mark.parametrize("attack", ["extra_point", "wrong_removal", "altered_point"])
def test_a_platform_sending_a_wrong_delta_cannot_change_the_result(tmp_path, monkeypatch, attack):
    """The platform's delta is checked against the digest it announced: a delta that does not
    give exactly that set makes the lender ask for the full set (and the digest is over the
    whole set, so a delta plus a digest that agree with each other but not with the points the
    platform answers online only changes which of the platform's own rows match)."""
    tables = days()
    store = LenderSetStore(tmp_path / "lender_sets")
    kw = {"mode": "unbalanced", "set_store": store, "incremental": True}
    cache, _ = PlatformCache.serve(tmp_path / "c", tables[0], COLS, incremental=True, workers=1)
    run(lender_table(0), tables[0], kw, {"cache": cache})
    cache, _ = PlatformCache.serve(tmp_path / "c", tables[1], COLS, incremental=True, workers=1)
    honest = PlatformCache.delta_since

    def tampered(self, digest):
        removed, points, tokens = honest(self, digest)
        if attack == "extra_point":
            points[0] = np.concatenate([points[0], points[0][:1]])
            tokens[0] = np.concatenate([tokens[0], [10**9]])
        elif attack == "wrong_removal":                          # more removals than the lender holds
            removed[0] = np.arange(10**6)
        else:
            points[0] = points[0].copy()
            points[0][0, 5] ^= 1
        return removed, points, tokens
    monkeypatch.setattr(PlatformCache, "delta_since", tampered)
    try:
        res_l, res_p = run(lender_table(1), tables[1], kw, {"cache": cache})
    except PsiError as exc:
        assert attack == "wrong_removal" and "removed" in str(exc)
        assert store.digest(cache.fingerprint) != cache.set_digest   # the copy was not touched
        return
    assert attack != "wrong_removal"
    assert res_l.stats["resent_full_set"] and res_p.stats["resent_full_set"]
    assert pairs(res_l, res_p) == pairs(*run(lender_table(1), tables[1]))
    assert store.digest(cache.fingerprint) == cache.set_digest == set_digest(*store.get(cache.fingerprint))


def test_job_parameter_and_node_decisions(tmp_path):
    from fedacq.node.protocols import JobContext, load_protocol

    proto = load_protocol("psi")
    policy = Policy(min_intersection=10)
    with pytest.raises(PolicyError, match="unbalanced"):
        proto.resolve({"id_columns": COLS, "incremental": True}, policy)
    with pytest.raises(PolicyError, match="true or false"):
        proto.resolve({"id_columns": COLS, "mode": "unbalanced", "incremental": "yes"}, policy)
    params = proto.resolve({"id_columns": COLS, "mode": "unbalanced", "incremental": True}, policy)
    tables = days()
    lender_path = tmp_path / "lender.parquet"
    lender_table(1).to_parquet(lender_path)

    def ctx(party, link, data, job):
        work = tmp_path / party / job
        work.mkdir(parents=True, exist_ok=True)
        return JobContext(party=party, role=party, peer="x", job_id=job, link=link,
                          datasets={"ids": data}, params=params, work_dir=work, policy=policy,
                          registered={"ids": f"{party}_ids"},
                          keys_dir=tmp_path / party / "keys", mlflow_store=str(tmp_path / "ml"))

    results = []
    for day in (0, 1):
        platform_path = tmp_path / f"platform{day}.parquet"
        tables[day].to_parquet(platform_path)
        link_l, link_p = memory_pair("lender", "platform")
        results.append(run_parties((proto.roles["lender"], ctx("lender", link_l, lender_path, f"j{day}")),
                                   (proto.roles["platform"], ctx("platform", link_p, platform_path, f"j{day}")),
                                   timeout=120))
    (l0, p0), (l1, p1) = results
    assert p0["stats"]["cache"]["action"] == "built" and p0["stats"]["transfer"] == "full"
    assert p1["stats"]["cache"]["action"] == "updated" and p1["stats"]["transfer"] == "delta"
    assert p1["stats"]["ids_blinded"] < p0["stats"]["ids_blinded"] / 5
    assert p1["stats"]["set_points_sent"] < p0["stats"]["set_points_sent"] / 5
    assert l1["intersection"] == p1["intersection"]
    full_l, full_p = run(lender_table(1), tables[1])
    assert l1["intersection"] == full_l.size


def test_lender_store_names_are_its_own_and_a_stopped_swap_keeps_the_copy(tmp_path):
    store = LenderSetStore(tmp_path / "sets")
    points, tokens = [np.zeros((2, 32), np.uint8)], [np.array([5, 1])]
    digest = store.put("00112233aabbccdd", points, tokens)
    assert [p.name for p in (tmp_path / "sets").iterdir()] == ["current"]
    assert store.fingerprints() == ["00112233aabbccdd"] and store.digest("00112233aabbccdd") == digest
    assert store.get("ffffffffffffffff") is None and store.digest("ffffffffffffffff") == ""
    with pytest.raises(ValueError, match="16 hex"):
        store.put("../../etc", points, tokens)
    (tmp_path / "sets" / "current").rename(tmp_path / "sets" / "current.old")   # stopped mid-swap
    assert store.get("00112233aabbccdd")[1][0].tolist() == [1, 5]
    (tmp_path / "sets" / "current" / "tokens_0.npy").write_bytes(b"")   # a copy damaged on disk
    assert store.get("00112233aabbccdd") is None                      # -> the platform's full set
    store.put("00112233aabbccdd", points, [np.array([9, 1])])
    assert store.get("00112233aabbccdd")[1][0].tolist() == [1, 9]
