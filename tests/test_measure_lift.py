"""Lift intervals on a constructed experiment whose true lift is known.

The seeds are fixed, so every run of this test sees the same data: it cannot be
flaky. The thresholds are still set as if the seeds were random, so that a
correct method would pass for (almost) any choice of seeds: with R runs and a
true coverage of 95%, observed coverage has standard deviation
sqrt(0.95 * 0.05 / R) (0.0154 for R = 200); we require coverage above
0.95 - 2.33 SD (a correct method falls below with probability 1%) and below
0.99 (intervals so wide they nearly always cover would be as wrong).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fedacq.measure.kpis import KPIS, ratio_estimate
from fedacq.measure.report import measure
from fedacq.measure.synthetic import CONTROL, _arm, constructed_experiment, true_lift

RUNS = 200
N_PER_ARM = 2000


@pytest.fixture(scope="module")
def repeated_reports() -> list[dict]:
    reports = []
    for seed in range(RUNS):
        funnel, events, spend = constructed_experiment(N_PER_ARM, seed=1000 + seed, n_buckets=2)
        reports.append(measure(funnel, events, spend, min_bucket_size=100)["layers"]["boost"])
    return reports


@pytest.mark.parametrize("kind", ["absolute", "relative"])
@pytest.mark.parametrize("kpi", [k.name for k in KPIS])
def test_interval_covers_true_lift_in_95_percent_of_runs(repeated_reports, kpi: str, kind: str) -> None:
    truth = true_lift()[kpi][kind]
    covered = []
    for report in repeated_reports:
        result = report["lift"][kpi][kind]
        covered.append(result["ci_low"] <= truth <= result["ci_high"])
    coverage = float(np.mean(covered))
    sd = math.sqrt(0.95 * 0.05 / RUNS)
    assert 0.95 - 2.33 * sd <= coverage <= 0.99, f"{kpi} {kind}: coverage {coverage:.3f}"


def test_reported_lift_is_centred_on_the_truth(repeated_reports) -> None:
    """The mean of the point estimates is within 3 standard errors of the mean of the truth."""
    for kpi in (k.name for k in KPIS):
        values = np.array([r["lift"][kpi]["absolute"]["value"] for r in repeated_reports])
        se_mean = values.std(ddof=1) / math.sqrt(len(values))
        assert abs(values.mean() - true_lift()[kpi]["absolute"]) < 3 * se_mean, kpi


def test_interval_narrows_as_data_grows() -> None:
    """Sixteen times the users: intervals about four times narrower (1/sqrt(n))."""
    widths = {}
    for n in (1000, 16000):
        w = []
        for seed in range(5):
            funnel, events, spend = constructed_experiment(n, seed=seed, n_buckets=2)
            lift = measure(funnel, events, spend)["layers"]["boost"]["lift"]
            w.append([lift[k.name]["absolute"]["ci_high"] - lift[k.name]["absolute"]["ci_low"] for k in KPIS])
        widths[n] = np.mean(w, axis=0)
    ratio = widths[1000] / widths[16000]
    assert np.all((ratio > 3.0) & (ratio < 5.3)), dict(zip([k.name for k in KPIS], ratio))


def test_delta_method_standard_error_matches_the_bootstrap() -> None:
    """Cross-check the closed form against 400 bootstrap resamples of one arm."""
    rng = np.random.default_rng(7)
    arm = _arm(rng, CONTROL, 5000)
    for num, den in (("drawdown_amount", "credit_granted"), ("first_day_drawdown", "credit_granted"),
                     ("credit_granted", None)):
        y = arm[num].astype(float)
        x = np.ones_like(y) if den is None else arm[den].astype(float)
        delta = ratio_estimate(y, x).se
        idx = rng.integers(0, len(y), size=(400, len(y)))
        boot = (y[idx].sum(axis=1) / x[idx].sum(axis=1)).std(ddof=1)
        assert abs(delta / boot - 1) < 0.12, (num, delta, boot)

