"""Per-bucket KPIs, minimum sizes, input errors, the HTML report in a real browser, and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess

import pandas as pd
import pytest

from fedacq.cli import main
from fedacq.measure.kpis import KPIS, exposed_outcomes, validate_funnel
from fedacq.measure.lift import NOT_ENOUGH
from fedacq.measure.render import report_html
from fedacq.measure.report import measure
from fedacq.measure.synthetic import constructed_experiment


@pytest.fixture(scope="module")
def data():
    return constructed_experiment(1500, seed=11, n_buckets=4)


def _shrink_bucket(events: pd.DataFrame, bucket: int, keep: int) -> pd.DataFrame:
    users = events.loc[events["bucket"] == bucket, "user_id"].unique()[:keep]
    return events[(events["bucket"] != bucket) | events["user_id"].isin(users)].reset_index(drop=True)


def test_kpis_match_a_direct_computation(data):
    funnel, events, spend = data
    report = measure(funnel, events, spend, min_bucket_size=50)
    arm = report["layers"]["boost"]["arms"]["treatment"]
    users = events[(events["arm"] == "treatment") & (events["event_type"] == "click")]["user_id"].unique()
    f = funnel[funnel["user_id"].isin(users)]
    credit = f["credit_granted"].sum()
    total_spend = spend.loc[spend["arm"] == "treatment", "spend"].sum()
    expected = {"application_rate": f["applied"].sum() / len(users), "deep_conversion_rate": credit / len(users),
                "credit_rate": credit / f["applied"].sum(),
                "first_day_usage_rate": f["first_day_drawdown"].sum() / credit,
                "drawdown_per_user": f["drawdown_amount"].sum() / credit,
                "value_per_converted_user": f["fees"].sum() / credit,
                "cost_per_credit_user": total_spend / credit,
                "loan_fee_rate": total_spend / f["drawdown_amount"].sum()}
    assert arm["exposed_users"] == len(users) and arm["credit_users"] == credit
    for name, value in expected.items():
        assert arm["kpis"][name]["value"] == pytest.approx(value), name
        assert arm["kpis"][name]["ci_low"] < value < arm["kpis"][name]["ci_high"]
    assert report["diagnostics"]["funnel_users_not_exposed"] == 20


def test_small_bucket_is_reported_as_not_enough_data_never_as_numbers(data):
    funnel, events, spend = data
    events = _shrink_bucket(events, 6, keep=30)
    report = measure(funnel, events, spend, min_bucket_size=100)
    buckets = {b["bucket"]: b for b in report["layers"]["boost"]["buckets"]}
    small = buckets[6]
    assert small == {"bucket": 6, "arm": "treatment", "status": NOT_ENOUGH,
                     "reason": "fewer than 100 exposed users"}
    assert all("kpis" in b for k, b in buckets.items() if k != 6)
    # The arm still counts those users: suppression is of the report, not of the data.
    arm = report["layers"]["boost"]["arms"]["treatment"]
    assert arm["exposed_users"] == events.loc[events["arm"] == "treatment", "user_id"].nunique()
    page = report_html(report)
    assert NOT_ENOUGH in page


def test_small_arm_gives_no_lift(data):
    funnel, events, spend = data
    for b in (4, 5, 6, 7):
        events = _shrink_bucket(events, b, keep=10)
    report = measure(funnel, events, spend, min_bucket_size=100)
    layer = report["layers"]["boost"]
    assert layer["arms"]["treatment"]["status"] == NOT_ENOUGH
    assert set(layer["arms"]["treatment"]) == {"status", "reason"}
    for kpi in KPIS:
        assert layer["lift"][kpi.name]["status"] == NOT_ENOUGH
    text = json.dumps(layer["arms"]["treatment"]) + json.dumps(layer["lift"])
    assert not any(ch.isdigit() for ch in text.replace("100", ""))


def test_kpi_with_too_few_events_is_not_reported(data):
    funnel, events, spend = data
    funnel = funnel.copy()
    # Only 5 credit users in control draw on the first day.
    control_first = funnel["user_id"].str.startswith("c") & (funnel["first_day_drawdown"] == 1)
    funnel.loc[control_first[control_first].index[5:], "first_day_drawdown"] = 0
    report = measure(funnel, events, spend, min_bucket_size=100, min_events=10)
    layer = report["layers"]["boost"]
    assert layer["arms"]["control"]["kpis"]["first_day_usage_rate"]["status"] == NOT_ENOUGH
    assert layer["lift"]["first_day_usage_rate"]["status"] == NOT_ENOUGH
    assert "value" in layer["lift"]["deep_conversion_rate"]["absolute"]


def test_conflicting_bucket_assignments_are_excluded_and_counted(data):
    funnel, events, _ = data
    extra = events[events["event_type"] == "click"].head(3).copy()
    extra["event_id"] = extra["event_id"] + "-x"
    extra["bucket"] = 7
    extra["arm"] = "treatment"
    exp = exposed_outcomes(funnel, pd.concat([events, extra], ignore_index=True))
    assert exp.conflicting_users == 3
    assert not exp.users["user_id"].isin(extra["user_id"]).any()


@pytest.mark.parametrize("change, message", [
    (lambda f: f.drop(columns="fees"), "missing column"),
    (lambda f: f.assign(applied=2), "'applied' must be 0/1"),
    (lambda f: f.assign(drawdown_amount=-1.0), "'drawdown_amount' must be a non-negative"),
    (lambda f: pd.concat([f, f.head(1)]), "duplicate user_id"),
    (lambda f: f.assign(applied=0), "credit_granted=1 but applied=0"),
])
def test_bad_funnel_is_refused_with_a_clear_error(data, change, message):
    with pytest.raises(ValueError, match=message):
        validate_funnel(change(data[0]), source="funnel.parquet")


def test_spend_with_a_bucket_in_the_wrong_arm_is_refused(data):
    funnel, events, spend = data
    spend = spend.copy()
    spend.loc[0, "arm"] = "treatment"
    with pytest.raises(ValueError, match="spend: bucket 0"):
        measure(funnel, events, spend)


def test_cli_writes_json_html_and_mlflow(data, tmp_path):
    funnel, events, spend = data
    funnel.to_parquet(tmp_path / "funnel.parquet")
    events.to_parquet(tmp_path / "events.parquet")
    spend.to_csv(tmp_path / "spend.csv", index=False)
    out = tmp_path / "out"
    rc = main(["measure", "--funnel", str(tmp_path / "funnel.parquet"), "--events", str(tmp_path / "events.parquet"),
               "--spend", str(tmp_path / "spend.csv"), "--out", str(out), "--min-bucket-size", "50",
               "--tracking-dir", str(tmp_path / "mlruns"), "--job-id", "job-42"])
    assert rc == 0
    report = json.loads((out / "report.json").read_text())
    assert report["settings"]["min_bucket_size"] == 50
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<script" not in html
    from mlflow.tracking import MlflowClient
    from fedacq.track import store_uri
    client = MlflowClient(tracking_uri=store_uri(tmp_path / "mlruns"))
    runs = client.search_runs([client.get_experiment_by_name("fedacq-measure").experiment_id])
    assert len(runs) == 1 and runs[0].data.tags["fedacq.job_id"] == "job-42"
    assert runs[0].data.metrics["boost.treatment.credit_rate"] == pytest.approx(
        report["layers"]["boost"]["arms"]["treatment"]["kpis"]["credit_rate"]["value"])
    assert {a.path for a in client.list_artifacts(runs[0].info.run_id)} >= {"report.json", "report.html", "figures"}


def test_cli_names_the_missing_file(tmp_path, capsys):
    rc = main(["measure", "--funnel", str(tmp_path / "nope.parquet"), "--events", str(tmp_path / "e.parquet"),
               "--out", str(tmp_path / "o")])
    assert rc == 2 and "nope.parquet" in capsys.readouterr().err


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)")
def test_html_report_renders_in_headless_chromium(data, tmp_path):
    funnel, events, spend = data
    report = measure(funnel, _shrink_bucket(events, 2, keep=20), spend, min_bucket_size=100)
    page = tmp_path / "report.html"
    page.write_text(report_html(report), encoding="utf-8")
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         f"--screenshot={shot}", "--window-size=1200,2000", page.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    # Console errors (a broken image, a script error) are logged as CONSOLE lines.
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    import matplotlib.image as mpimg
    pixels = mpimg.imread(shot)
    assert pixels.shape[:2] == (2000, 1200)
    # Not a blank page: plenty of non-white pixels (text, tables, plots).
    assert (pixels[..., :3] < 0.9).any(axis=-1).mean() > 0.02


def test_spend_missing_a_bucket_with_users_is_refused(data):
    funnel, events, spend = data
    with pytest.raises(ValueError, match=r"spend: no row for bucket\(s\) \[3\]"):
        measure(funnel, events, spend[spend["bucket"] != 3])


def test_html_helpers_escape_text_and_show_status_not_numbers():
    from fedacq.measure.html import page, table_html
    table = table_html([{"name": "<script>x</script>", "n": 1234567, "kpi": {"status": NOT_ENOUGH}}],
                       caption="a & b")
    assert "<script>" not in table and "&lt;script&gt;" in table and "a &amp; b" in table
    assert "1,234,567" in table and NOT_ENOUGH in table
    doc = page("T <1>", [("Section", table)])
    assert doc.startswith("<!DOCTYPE html>") and "<title>T &lt;1&gt;</title>" in doc and "<h2>Section</h2>" in doc
