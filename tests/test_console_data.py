"""The console's data views and the population stability index, on a node state built here.

:func:`build_state` writes what a node, a boost service and a campaign loop leave on disk
(job records from the real evaluation code, real ledger chains, real boost tables, a
campaign in the layout of :mod:`fedacq.console.data`); the HTTP and browser tests reuse it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fedacq.activate.table import build_boost_table
from fedacq.console import pages, stability
from fedacq.console.data import NodeState, Sources, binary_curves, curves
from fedacq.learn import metrics
from fedacq.learn.run_report import value_by_decile
from fedacq.link.ledger import ChainFile

#: text with markup, in names and reasons the console must escape.
NASTY = "<script>alert('x')</script> & \"quoted\""
T0 = 1_760_000_000.0


def _job(state: Path, job_id: str, protocol: str, status: str, *, submitted: float, result: dict | None = None,
         progress: dict | None = None, error: str | None = None, params: dict | None = None) -> Path:
    d = state / "jobs" / job_id
    (d / "work").mkdir(parents=True)
    record = {"id": job_id, "spec": {"id": job_id, "protocol": protocol, "initiator": "lender", "attempt": 0,
                                     "datasets": {"lender": {"table": "applicants"}}, "params": params or {}},
              "policy": {}, "status": status, "submitted": submitted, "started": submitted + 1,
              "finished": None if status in ("running", "submitted") else submitted + 60,
              "result": result, "error": error, "progress": progress}
    (d / "job.json").write_text(json.dumps(record), encoding="utf-8")
    return d


def _binary_result(seed: int, n_rounds: int, strength: float) -> dict:
    rng = np.random.default_rng(seed)
    out = {"objective": "binary:logistic", "objective_params": {}, "evaluated_on": "validation",
           "intersection_size": 2000, "history": []}
    for split, n in (("train", 1500), ("validation", 500)):
        y = (rng.random(n) < 0.3).astype(float)
        p = 1 / (1 + np.exp(-(strength * (y - 0.3) + rng.normal(0, 1, n))))
        out[split] = metrics.evaluate(y, p)
        out[split]["logloss"] = metrics.logloss(y, p)
    for i in range(n_rounds):
        out["history"].append({"train_logloss": 0.6 - 0.02 * i, "valid_logloss": 0.62 - 0.015 * i,
                               "train_auc": 0.6 + 0.02 * i, "valid_auc": 0.58 + 0.015 * i, "seconds": 1.0})
    return out


def _regression_result(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    out = {"objective": "reg:squarederror", "objective_params": {}, "evaluated_on": "validation",
           "intersection_size": 800, "history": [{"train_rmse": 3 - 0.1 * i, "valid_rmse": 3.1 - 0.08 * i}
                                                  for i in range(8)]}
    for split, n in (("train", 600), ("validation", 200)):
        y = rng.gamma(2.0, 2.0, n)
        pred = y + rng.normal(0, 1, n)
        out[split] = {"rows": n, "rmse": metrics.rmse(y, pred), "mean_label": float(y.mean()),
                      "mean_prediction": float(pred.mean()), "value_by_decile": value_by_decile(y, pred)}
    return out


def _measure_report(value: float) -> dict:
    kpi = {"value": value, "se": 0.02, "ci_low": value - 0.04, "ci_high": value + 0.04}
    return {"settings": {"confidence": 0.95, "min_bucket_size": 100, "min_events": 10, "method": "delta"},
            "kpis": {"credit_rate": {"label": "credit rate"},
                     "cost_per_credit_user": {"label": "cost per credit user"}},
            "layers": {"acq": {"arms": {}, "buckets": [],
                               "lift": {"credit_rate": {"absolute": kpi, "relative": kpi},
                                        "cost_per_credit_user": {"status": "not enough data", "reason": "few"}}}}}


def _ledger(state: Path) -> None:
    egress, ingress = ChainFile(state / "egress.jsonl"), ChainFile(state / "ingress.jsonl")
    for seq, (kind, nbytes) in enumerate([("psi.blinded", 64_000), ("psi.blinded", 64_000), ("sb.gradients", 512_000),
                                          ("sb.split", 200), ("measure.plan", 90)]):
        egress.append({"time": T0 + seq, "party": "lender", "peer": "platform", "job": "run-v1", "seq": seq,
                       "type": kind, "step": "x", "parts": {}, "bytes": nbytes, "sha256": "0" * 64})
    ingress.append({"time": T0, "party": "lender", "peer": "platform", "job": "run-v1", "seq": 0,
                    "type": "sb.histograms", "step": "x", "parts": {}, "bytes": 1_000_000, "sha256": "0" * 64})
    egress.close()
    ingress.close()


def _tables(root: Path) -> None:
    rng = np.random.default_rng(5)
    now = dt.datetime.now(dt.timezone.utc)
    for i, (version, shift) in enumerate((("camp-v1", 0.0), ("camp-v2", 0.15))):
        scores = pd.DataFrame({"user_id": [f"u{j}" for j in range(3000)],
                               "score": np.clip(rng.beta(2, 5, 3000) + shift, 0, 1)})
        table = build_boost_table(scores, "camp", model_version=f"run-v{i + 1}", version=version,
                                  now=now - dt.timedelta(hours=2 - i))
        table.write(root / "camp" / version)


def _measured(n: int, day: int, value: float) -> dict:
    """A campaign cycle's measurement taken on simulated ``day`` over the week before it."""
    return {"time": T0 + day * 86400, "layer": "acq", "kpi": "credit_rate", "job": None, "confidence": 0.95,
            "sim_day": day, "first_day": day - 7, "last_day": day - 1,
            "relative": {"value": value, "ci_low": value - 0.06, "ci_high": value + 0.06}}


def _campaign(root: Path) -> None:
    c = root / "autumn"
    (c / "cycles").mkdir(parents=True)
    (c / "campaign.json").write_text(json.dumps({
        "name": "autumn", "status": "running", "created": T0, "updated": T0 + 4 * 86400, "live_version": "run-v1",
        "live_table": "camp-v1", "description": "eight simulated weeks", "settings": {"min_validation_auc": 0.6,
                                                                                    "max_psi": 0.25}}))
    rng = np.random.default_rng(9)
    cycles = [("published", None, True, 0.0), ("refused", "gate max_psi: 0.41 > 0.25 " + NASTY, False, 0.3),
              ("published", None, True, 0.02), ("rolled_back", "lift of cost per credit user significantly negative",
                                                 True, 0.03)]
    for n, (outcome, reason, passed, shift) in enumerate(cycles, start=1):
        d = c / "cycles" / f"{n:04d}"
        d.mkdir()
        doc = {"cycle": n, "started": T0 + n * 86400, "finished": T0 + n * 86400 + 3600, "sim_day": 7 * n,
               "version": f"run-v{n}", "model_job": "run-v1" if n == 1 else None, "update": "add_trees",
               "gates": [{"name": "min_validation_auc", "value": 0.7, "op": ">=", "threshold": 0.6, "passed": True},
                         {"name": "max_psi", "value": 0.41 if not passed else 0.05, "op": "<=", "threshold": 0.25,
                          "passed": passed}],
               "outcome": outcome, "reason": reason, "boost_table": f"camp-v{n}" if passed else None,
               "measurement": None if not passed else _measured(n, {1: 21, 3: 28, 4: 35}[n], 0.08 - 0.06 * n)}
        if n == 1:  # live days 7..20 (cycle 2 was refused): measured on days 14 and 21
            doc["measurements"] = [_measured(n, 14, 0.05), doc["measurement"]]
        elif n == 3:  # a measurement with too little data in an arm: listed, not plotted
            doc["measurements"] = [_measured(n, 28, 0.0) | {"relative": None}, doc["measurement"]]
            # published on the second attempt: the boost service was down the first time
            doc["attempts"] = [{"job": "c3-publish", "time": T0, "outcome": "failed", "table": "camp-x",
                                "reason": "publication failed: boost service unavailable"},
                               {"job": "c3-publish2", "time": T0 + 60, "outcome": "published", "table": "camp-v3",
                                "reason": None}]
        (d / "cycle.json").write_text(json.dumps(doc))
        np.save(d / "scores.npy", np.clip(rng.beta(2, 5, 2000) + shift, 0, 1))
    bad = c / "cycles" / "0005"
    bad.mkdir()
    (bad / "cycle.json").write_text("{not json")


def build_state(root: Path, *, running: bool = True) -> Sources:
    """A lender's node state with every kind of thing the console shows."""
    state = root / "state"
    state.mkdir(parents=True)
    _job(state, "run-v1", "run", "succeeded", submitted=T0, result=_binary_result(1, 12, 1.5),
         params={"model": "secureboost"})
    _job(state, "run-v2", "run", "succeeded", submitted=T0 + 100, result=_binary_result(2, 20, 2.5))
    _job(state, "run-value", "run", "succeeded", submitted=T0 + 150, result=_regression_result(3))
    _job(state, "psi-bad", "psi", "failed", submitted=T0 + 200, error="ValueError: " + NASTY)
    if running:
        _job(state, "run-live", "run", "running", submitted=T0 + 300,
             progress={"step": "tree", "done": 3, "total": 10, "attempt": 0, "updated": T0 + 310, "eta_seconds": 7.0})
    for i, value in enumerate((0.1, 0.04, -0.03)):
        d = _job(state, f"measure-{i}", "measure", "succeeded", submitted=T0 + 400 + i * 86400)
        (d / "work" / "report.json").write_text(json.dumps(_measure_report(value)))
    _ledger(state)
    _tables(root / "tables")
    _campaign(state / "campaigns")
    return Sources(party="lender", peer="platform", state_dir=state, boost_tables=root / "tables")


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the sha256 of its content (and directories as such)."""
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def node(tmp_path: Path) -> NodeState:
    return NodeState(build_state(tmp_path))


# -- PSI ------------------------------------------------------------------------------------

def test_psi_zero_for_same_distribution_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 20_000)
    assert stability.population_stability_index(ref, ref) == pytest.approx(0.0, abs=1e-12)
    same = stability.population_stability_index(ref, rng.normal(0, 1, 20_000))
    small = stability.population_stability_index(ref, rng.normal(0.2, 1, 20_000))
    large = stability.population_stability_index(ref, rng.normal(1.0, 1, 20_000))
    assert same < 0.01 < small < large
    assert stability.verdict(same) == "stable" and stability.verdict(large) == "significant shift"


def test_psi_matches_the_formula_by_hand() -> None:
    e = np.array([0.25, 0.25, 0.25, 0.25])
    a = np.array([0.1, 0.2, 0.3, 0.4])
    expected = sum((ai - ei) * np.log(ai / ei) for ai, ei in zip(a, e))
    assert stability.psi_from_shares(e, a) == pytest.approx(expected)
    # the reference's deciles hold a tenth of it each
    ref = np.arange(1000, dtype=float)
    assert stability.shares(ref, stability.reference_cuts(ref)) == pytest.approx(np.full(10, 0.1))


def test_psi_empty_group_is_floored_not_infinite_and_ties_merge() -> None:
    ref = np.linspace(0, 1, 1000)
    moved = np.full(500, 2.0)  # every row in the top group
    psi = stability.population_stability_index(ref, moved)
    assert np.isfinite(psi) and psi > 1
    assert stability.population_stability_index(np.ones(100), np.ones(50)) == 0.0
    with pytest.raises(ValueError, match="finite"):
        stability.population_stability_index(ref, [np.nan])
    with pytest.raises(ValueError, match="no scores"):
        stability.population_stability_index([], ref)
    with pytest.raises(ValueError, match="bins"):
        stability.reference_cuts(ref, bins=1)


# -- views ----------------------------------------------------------------------------------

def test_empty_node_has_nothing_and_no_errors(tmp_path: Path) -> None:
    st = NodeState(Sources(party="platform", peer="lender", state_dir=tmp_path / "missing"))
    assert st.jobs() == [] and st.model_versions() == []
    assert st.campaigns()["campaigns"] == [] and st.boost_tables() == {"configured": False, "tables": [], "errors": []}
    assert st.lift()["series"] == [] and st.ledger("egress")["present"] is False
    assert st.drift() == {"sets": []}
    ov = st.overview()
    assert ov["jobs"] == 0 and ov["egress_bytes"] == 0
    assert not (tmp_path / "missing").exists()  # a view never creates anything


def test_jobs_newest_first_with_progress(node: NodeState) -> None:
    jobs = node.jobs()
    assert jobs[0]["id"] == "measure-2" and {j["id"] for j in jobs} >= {"run-v1", "psi-bad", "run-live"}
    live = next(j for j in jobs if j["id"] == "run-live")
    assert live["progress"]["fraction"] == pytest.approx(0.3) and live["progress"]["eta_seconds"] == 7.0
    assert node.job("../etc") is None and node.job("nope") is None


def test_model_versions_curves_and_quality(node: NodeState) -> None:
    versions = node.model_versions()
    assert [v["id"] for v in versions] == ["run-v1", "run-v2", "run-value"]
    assert versions[0]["metrics"]["auc"] < versions[1]["metrics"]["auc"]
    tr = node.training("run-v2")
    assert tr["rounds"] == 20 and set(tr["curves"]) == {"logloss", "auc"}
    assert set(tr["curves"]["auc"]) == {"train", "validation"} and tr["curves"]["auc"]["train"][0] == (1, 0.6)
    q = node.quality("run-v2")
    assert q["kind"] == "binary"
    val = q["splits"]["validation"]
    assert val["fpr"][0] == val["tpr"][0] == 0.0 and val["fpr"][-1] == pytest.approx(1.0)
    assert val["tpr"][-1] == pytest.approx(1.0) and len(val["tpr"]) == 11
    assert 0 < val["ks_at_cuts"] <= val["ks"] + 1e-9
    reg = node.quality("run-value")
    assert reg["kind"] == "regression" and len(reg["splits"]["validation"]["deciles"]) == 10
    assert node.quality("psi-bad") == {"kind": "none"}


def test_binary_curves_are_the_roc_at_decile_cuts() -> None:
    rng = np.random.default_rng(3)
    y = (rng.random(4000) < 0.2).astype(float)
    p = rng.random(4000) + y * 0.5
    c = binary_curves(metrics.evaluate(y, p))
    ranked = y[np.argsort(-p, kind="mergesort")]
    for k in range(1, 11):  # the top k deciles selected: the ROC point at that cut
        top = ranked[:round(k * 400)]
        assert c["tpr"][k] == pytest.approx(top.sum() / y.sum())
        assert c["fpr"][k] == pytest.approx((top.size - top.sum()) / (y.size - y.sum()))
        assert c["share"][k] == pytest.approx(k / 10)
    assert curves([{"train_auc": 0.5, "valid_auc": 0.4, "seconds": 2}, "junk"]) == \
        {"auc": {"train": [(1, 0.5)], "validation": [(1, 0.4)]}}


def test_boost_tables_live_from_the_campaign_state_else_newest(node: NodeState, tmp_path: Path) -> None:
    bt = node.boost_tables()
    assert [t["version"] for t in bt["tables"]] == ["camp-v2", "camp-v1"]
    assert [t["live"] for t in bt["tables"]] == [False, True]  # the campaign pins camp-v1 (rolled back to)
    assert "campaign state" in bt["tables"][1]["live_by"]
    bare = NodeState(Sources(party="platform", peer="lender", state_dir=tmp_path / "none",
                             boost_tables=tmp_path / "tables"))
    assert [t["live"] for t in bare.boost_tables()["tables"]] == [True, False]
    (tmp_path / "tables" / "camp" / "broken").mkdir()
    (tmp_path / "tables" / "camp" / "broken" / "manifest.json").write_text("[]")
    assert any("broken" in e for e in bare.boost_tables()["errors"])
    manifest = json.loads((tmp_path / "tables" / "camp" / "camp-v1" / "manifest.json").read_text())
    (tmp_path / "tables" / "camp" / "sneaky").mkdir()
    (tmp_path / "tables" / "camp" / "sneaky" / "manifest.json").write_text(json.dumps({**manifest, "data_file": ".."}))
    assert any("is not a file name" in e for e in bare.boost_tables()["errors"])
    assert len(bare.boost_tables()["tables"]) == 2


def test_drift_between_score_sets(node: NodeState) -> None:
    sets = node.score_sets()
    ids = [s["id"] for s in sets]
    assert ids[:2] == ["table:camp/camp-v1", "table:camp/camp-v2"] and "cycle:autumn/2" in ids
    d = node.drift("table:camp/camp-v1", "table:camp/camp-v2")
    assert d["psi"] > 0.1 and len(d["reference_shares"]) == len(d["cuts"]) + 1
    assert sum(d["reference_shares"]) == pytest.approx(1.0)
    same = node.drift("cycle:autumn/1", "cycle:autumn/3")
    assert same["psi"] < 0.05 and same["verdict"] == "stable"
    assert node.drift("cycle:autumn/1", "cycle:autumn/2")["verdict"] == "significant shift"
    default = node.drift()
    assert (default["reference"], default["other"]) == (ids[-2], ids[-1])
    with pytest.raises(KeyError):
        node.drift("table:../../etc/passwd", "cycle:autumn/1")


def test_lift_series_from_measure_jobs_and_campaign(node: NodeState) -> None:
    lf = node.lift()
    by = {(s["source"], s["scope"], s["kpi"]): s for s in lf["series"]}
    jobs = by[("measure job", "acq", "credit_rate")]["points"]
    assert [round(p["value"], 2) for p in jobs] == [0.1, 0.04, -0.03] and jobs[0]["ci_low"] < jobs[0]["value"]
    assert ("measure job", "acq", "cost_per_credit_user") not in by  # "not enough data" has no point
    camp = by[("campaign", "autumn", "credit_rate")]
    assert lf["confidence"] == 0.95
    # each measurement at the day it was taken (not the cycle's start day), with the days it covers
    assert [(p["cycle"], p["version"], p["sim_day"], p["first_day"], p["last_day"]) for p in camp["points"]] == \
        [(1, "run-v1", 14, 7, 13), (1, "run-v1", 21, 14, 20), (3, "run-v3", 28, 21, 27), (4, "run-v4", 35, 28, 34)]
    # the plot: one curve per live version, points at those days, intervals as error bars
    curves, x_label, _, _ = pages.lift_curves(camp)
    assert x_label == "simulated day"
    assert [(c.name, list(c.xs)) for c in curves] == [("run-v1", [14.0, 21.0]), ("run-v3", [28.0]),
                                                       ("run-v4", [35.0])]
    assert curves[0].ys == pytest.approx([5.0, 2.0]) and curves[0].lows == pytest.approx([-1.0, -4.0])
    assert curves[2].highs == pytest.approx([-10.0]) and "days 28..34 (taken day 35)" in curves[2].labels[0]
    jobs_curves, job_x, _, _ = pages.lift_curves(by[("measure job", "acq", "credit_rate")])
    assert [c.name for c in jobs_curves] == ["credit rate"] and job_x.startswith("days since")
    # measurements minutes apart (a simulated campaign's measure jobs) are placed in minutes, not 0.0005 days
    series = by[("measure job", "acq", "credit_rate")]
    t0 = series["points"][0]["time"]
    close = dict(series, points=[dict(p, time=t0 + 90 * i) for i, p in enumerate(series["points"])])
    (close_curve,), close_x, _, _ = pages.lift_curves(close)
    assert close_x.startswith("minutes since") and list(close_curve.xs) == pytest.approx([0.0, 1.5, 3.0])


def test_ledger_summary(node: NodeState) -> None:
    eg = node.ledger("egress")
    assert eg["messages"] == 5 and eg["bytes"] == 64_000 * 2 + 512_000 + 200 + 90
    top = eg["by_type"][0]
    assert (top["type"], top["peer"], top["count"], top["bytes"]) == ("sb.gradients", "platform", 1, 512_000)
    psi = next(r for r in eg["by_type"] if r["type"] == "psi.blinded")
    assert psi["count"] == 2 and psi["bytes"] == 128_000
    assert node.ledger("ingress")["bytes"] == 1_000_000
    with pytest.raises(ValueError):
        node.ledger("../x")


def test_ledger_summary_follows_appends_and_replacement(node: NodeState) -> None:
    path = node.src.state_dir / "egress.jsonl"
    assert node.ledger("egress")["messages"] == 5
    chain = ChainFile(path)
    chain.append({"time": T0 + 9, "party": "lender", "peer": "platform", "job": "run-v2", "seq": 0,
                  "type": "sb.split", "step": "x", "parts": {}, "bytes": 10, "sha256": "0" * 64})
    chain.close()
    with path.open("ab") as fh:
        fh.write(b'{"type": "half a line')  # being written: not counted until whole
    eg = node.ledger("egress")
    assert eg["messages"] == 6 and eg["errors"] == []
    assert {r["job"]: r["count"] for r in eg["by_job"]} == {"run-v1": 5, "run-v2": 1}
    with path.open("ab") as fh:
        fh.write(b' and the rest"}\n')
    assert node.ledger("egress")["errors"]  # a whole line, but not a ledger entry
    path.write_text(path.read_text().splitlines()[0] + "\n")  # replaced by a shorter file
    assert node.ledger("egress")["messages"] == 1


def test_campaign_layout(node: NodeState) -> None:
    cs = node.campaigns()
    assert [c["name"] for c in cs["campaigns"]] == ["autumn"] and cs["errors"] == []
    c = cs["campaigns"][0]
    assert c["cycles"] == 5 and c["bad_cycles"] == 1
    assert c["outcomes"] == {"running": 0, "published": 2, "refused": 1, "rolled_back": 1, "failed": 0}
    one = node.campaign("autumn")
    assert [cy["outcome"] for cy in one["cycles"][:4]] == ["published", "refused", "published", "rolled_back"]
    assert "cycle.json: not valid JSON" in one["cycles"][4]["error"]
    assert one["cycles"][1]["gates"][1] == {"name": "max_psi", "value": 0.41, "op": "<=", "threshold": 0.25,
                                            "passed": False}
    assert [(a["job"], a["outcome"]) for a in one["cycles"][2]["attempts"]] == [("c3-publish", "failed"),
                                                                             ("c3-publish2", "published")]
    page = "\n".join(str(x) for x in pages.campaign(one, []))  # the failed attempt's reason is on the page
    assert "publication attempt 1 failed: publication failed: boost service unavailable" in page
    with pytest.raises(KeyError):
        node.campaign("nope")


@pytest.mark.parametrize("change, message", [
    ({"outcome": "refused", "reason": None}, "needs a reason"),
    ({"outcome": "exploded"}, "not one of"),
    ({"cycle": 9}, "cycle 9 in directory 0001"),
    ({"gates": [{"name": "x"}]}, "gates[0]"),
    ({"started": "yesterday"}, "'started' is str"),
    ({"update": "boost"}, "update 'boost'"),
    ({"measurement": {"time": 1, "kpi": "k", "relative": {"value": 1}}}, "measurement needs"),
])
def test_bad_cycle_files_are_named_errors(tmp_path: Path, change: dict, message: str) -> None:
    d = tmp_path / "state" / "campaigns" / "c1"
    (d / "cycles" / "0001").mkdir(parents=True)
    (d / "campaign.json").write_text(json.dumps({"name": "c1", "status": "running", "created": 1, "updated": 2}))
    doc = {"cycle": 1, "started": 1.0, "outcome": "published", "gates": []}
    (d / "cycles" / "0001" / "cycle.json").write_text(json.dumps({**doc, **change}))
    st = NodeState(Sources(party="lender", peer="platform", state_dir=tmp_path / "state"))
    cycle = st.campaign("c1")["cycles"][0]
    assert message in cycle["error"] and "0001/cycle.json" in cycle["error"]


def test_views_never_write(tmp_path: Path) -> None:
    src = build_state(tmp_path)
    before = snapshot(tmp_path)
    st = NodeState(src)
    st.overview(), st.jobs(), st.model_versions(), st.lift(), st.campaigns(), st.ledger("ingress")
    for v in ("run-v1", "run-v2", "run-value", "run-live", "psi-bad"):
        st.training(v), st.quality(v), st.job(v)
    st.drift(), st.campaign("autumn"), st.boost_tables()
    assert snapshot(tmp_path) == before



def test_svg_marks_stay_inside_the_axes() -> None:
    import re

    from fedacq.console import svg

    chart = svg.line_chart([svg.Series("lift", [1, 2, 3], [2.0, -10.0, -16.0], lows=[-4.0, -16.0, -22.3],
                                       highs=[8.1, -4.0, -10.0], markers=True)],
                           title="t <&>", x_label="x", y_label="y", zero_line=True)
    top, bottom = svg.MARGIN["top"], svg.HEIGHT - svg.MARGIN["bottom"]
    marks = re.findall(r'<line class="interval"[^>]*|<circle[^>]*', chart)
    ys = [float(v) for m in marks for v in re.findall(r'(?:cy|y1|y2)="(-?[0-9.]+)"', m)]
    assert ys and all(top - 0.05 <= y <= bottom + 0.05 for y in ys)
    assert "<title>t &lt;&amp;&gt;</title>" in chart
    for lo, hi in [(0, 1), (-10.2, 14.3), (0.58, 0.87), (5, 5), (3e-5, 7e-5)]:
        ticks = svg.nice_ticks(lo, hi)
        assert ticks[0] <= lo and ticks[-1] >= hi and len(ticks) <= 12
