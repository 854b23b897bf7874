"""``fedacq demo`` end to end at test size: every step runs and leaves what a user looks at.

A 1024-bit test key and a small market keep it under a minute (the key size is a test-only
choice; the demo's default is 2048 bits), and the in-process transport runs the same node jobs
(``run``, ``measure``) over memory links; tests/test_pipeline.py runs them between two node
processes.
"""

from __future__ import annotations

import json
from pathlib import Path

from mlflow.tracking import MlflowClient

from fedacq.demo import DemoConfig, run_demo
from fedacq.track import store_uri


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    cfg = DemoConfig(out_dir=tmp_path, n_users=60_000, days=7, n_estimators=3, key_bits=1024,
                     insecure_test_key=True, transport="inproc", budget_per_user_day=0.02, progress=False)
    summary = run_demo(cfg)

    saved = json.loads((tmp_path / "demo.json").read_text())
    assert saved["job_id"] == summary["job_id"]
    assert set(saved["results"]) == {"model", "baseline"}
    assert saved["model"]["intersection_size"] > 0 and 0.5 < saved["model"]["validation"]["auc"] <= 1
    for result in saved["results"].values():
        assert set(result["headline"]) == {"cost_per_credit_user", "drawdown_per_user"}
    page = (tmp_path / "report.html").read_text()
    for section in ("Did the boost pay?", "What each party learned", "Model quality"):
        assert section in page
    assert page.count("data:image/png;base64,") >= 5   # model plots and lift plots, inlined

    # each party's own store holds its own runs of this demo's jobs, and only its own
    for party, prefixes in (("lender", ("secureboost", "measure-prospect", "measure-activity")),
                            ("platform", ("secureboost", "activate", "measure-prospect", "measure-activity"))):
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
