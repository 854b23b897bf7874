"""``fedacq demo`` end to end at test size: every step runs and leaves what a user looks at.

A 1024-bit test key and a small market keep it around a minute (the key size is a test-only
choice; the demo's default is 2048 bits), and the in-process transport runs the same node jobs
(``run``, ``measure``) over memory links; tests/test_pipeline.py runs them between two node
processes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from fedacq.demo import DemoConfig, run_demo
from fedacq.track import store_uri

#: each new in-process MLflow store starts as a copy of a migrated empty one (tests/conftest.py says why)
pytestmark = pytest.mark.usefixtures("mlflow_stores_from_template")


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    cfg = DemoConfig(out_dir=tmp_path, n_users=40_000, days=5, n_estimators=3, key_bits=1024,
                     insecure_test_key=True, transport="inproc", budget_per_user_day=0.02, progress=False)
    summary = run_demo(cfg)

    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["job_id"] == summary["job_id"]
    assert set(saved["results"]) == {"conversion", "value", "baseline"}
    assert saved["model"]["intersection_size"] > 0 and 0.5 < saved["model"]["validation"]["auc"] <= 1
    headline = {"cost_per_credit_user", "drawdown_per_user", "loan_fee_rate"}
    for result in [*saved["results"].values(), *saved["comparisons"].values()]:
        assert set(result["headline"]) == headline
    assert set(saved["comparisons"]) == {"value_vs_conversion_treatment", "value_vs_conversion_control"}
    # the value's stages: P(credit) on every customer, E[drawdown | credit] on the same intersection
    stages = saved["value"]["stages"]
    assert [stages[s]["objective"] for s in ("credit", "drawdown")] == ["binary:logistic", "reg:tweedie"]
    assert stages["drawdown"]["intersection_size"] == stages["credit"]["intersection_size"] \
        == saved["model"]["intersection_size"]
    drawdown = pd.read_csv(tmp_path / "lender" / "data" / "customers-drawdown.csv")
    granted = pd.read_csv(tmp_path / "lender" / "data" / "customers-credit.csv")["credit_granted"] == 1
    assert drawdown["drawdown_amount"].isna().equals(~granted)
    value = pd.read_parquet(tmp_path / "platform" / "scores" / "value-drawdown.parquet")
    assert len(value) == cfg.n_users and (value["score"] >= 0).all()
    page = (tmp_path / "report.html").read_text()
    for section in ("Did the boost pay?", "Value or conversion targeting?", "What each party learned",
                    "Model quality", "value stage drawdown"):
        assert section in page
    assert page.count("data:image/png;base64,") >= 8   # model plots and lift plots, inlined

    # each party's own store holds its own runs of this demo's jobs, and only its own
    measures = ("measure-prospect", "measure-value", "measure-activity")
    for party, prefixes in (("lender", ("secureboost", *measures)),
                            ("platform", ("secureboost", "activate", *measures))):
        client = MlflowClient(tracking_uri=store_uri(tmp_path / party / "mlruns"))
        runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                  filter_string=f"tags.`fedacq.job_id` LIKE '{summary['job_id']}%'")
        assert {r.data.tags["fedacq.party"] for r in runs} == {party}
        names = {r.info.run_name for r in runs}
        assert all(any(n.startswith(p) for n in names) for p in prefixes), names
    # each party's ledger holds what it sent in the measure jobs: the lender its plan, the platform its spend
    egress = {p: (tmp_path / p / "state" / "egress.jsonl").read_text() for p in ("lender", "platform")}
    assert '"measure.plan"' in egress["lender"] and '"measure.spend"' in egress["platform"]


def test_a_rerun_replaces_the_previous_demo_and_refuses_any_other_folder(tmp_path: Path) -> None:
    import pytest

    from fedacq.demo import _fresh_out_dir

    previous = _fresh_out_dir(tmp_path / "demo")
    (previous / "certs").mkdir()   # a previous run's CA would make the new nodes' certificates fail
    assert _fresh_out_dir(previous) == previous and not (previous / "certs").exists()
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="holds no previous demo run"):
        _fresh_out_dir(other)
    assert (other / "notes.txt").read_text() == "keep"


def test_demo_campaign_flag_runs_the_campaign_demo_with_its_own_defaults(monkeypatch, tmp_path: Path) -> None:
    import argparse

    from fedacq import demo_commands
    from fedacq.campaign.demo import CampaignDemoConfig

    seen = []
    monkeypatch.setattr(demo_commands, "run_campaign_demo", seen.append)
    monkeypatch.setattr(demo_commands, "run_demo", lambda cfg: pytest.fail("the one-shot demo ran"))
    parser = argparse.ArgumentParser()
    demo_commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(["demo", "--campaign", "--out", str(tmp_path), "--users", "5000", "--quiet"])
    assert args.func(args) == 0
    cfg = seen[0]
    default = CampaignDemoConfig()
    assert (cfg.out_dir, cfg.n_users, cfg.days, cfg.n_estimators, cfg.key_bits, cfg.progress) == \
        (tmp_path, 5000, default.days, default.n_estimators, 2048, False)
