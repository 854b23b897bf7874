"""experiments/: config parsing, and the quick sweep end to end through the CLI (~1 minute)."""

import json
from pathlib import Path

import pandas as pd
import pytest

from fedacq.cli import main
from fedacq.experiments import load_config
from fedacq.experiments.runner import hanley_mcneil_interval

#: each new in-process MLflow store starts as a copy of a migrated empty one (tests/conftest.py says why)
pytestmark = pytest.mark.usefixtures("mlflow_stores_from_template")

ROOT = Path(__file__).resolve().parents[1]
QUICK = ROOT / "experiments" / "sweep_quick.toml"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep")
    assert main(["experiments", "run", str(QUICK), "--out", str(out), "--quiet"]) == 0
    return out, pd.read_csv(out / "results.csv"), json.loads((out / "results.json").read_text())


def _row(table, sweep, label):
    rows = table[(table["sweep"] == sweep) & (table["label"].astype(str) == label)]
    assert len(rows) == 1, (sweep, label)
    return rows.iloc[0]


def test_quick_sweep_tables_every_point(quick):
    out, table, summary = quick
    cfg = load_config(QUICK)
    assert len(table) == len(cfg.points)
    # Each distinct model is trained once and each distinct campaign simulated once.
    assert summary["models_trained"] == 3 and summary["campaigns_simulated"] == 7
    assert table.loc[table["targeting"] == "prospect", "model_id"].nunique() == 2
    md = (out / "results.md").read_text()
    assert "Cost per credit user lift [95% CI]" in md and md.count("\n| leaf noise |") == 4  # two tables
    assert "<img" in (out / "results.html").read_text()


def test_points_sharing_settings_share_one_campaign(quick):
    _, table, _ = quick
    same = [_row(table, "boost strength", "default"), _row(table, "treatment share", "50%"),
            _row(table, "model mode", "prospect"), _row(table, "leaf noise", "no noise")]
    assert len({r["campaign_id"] for r in same}) == 1
    strong = _row(table, "boost strength", "strong")
    assert strong["campaign_id"] != same[0]["campaign_id"] and strong["boosts"] == "0.09 1 2.56 9"
    assert _row(table, "boost strength", "off (A/A)")["boosts"] == "1 1 1 1"
    for r in same + [strong]:
        assert r["treatment_exposed_users"] > 0 and r["control_exposed_users"] > 0
    share = _row(table, "treatment share", "30%")
    assert share["treatment_exposed_users"] < share["control_exposed_users"]


def test_model_modes_report_what_each_can(quick):
    _, table, _ = quick
    joint = _row(table, "model mode", "joint")
    assert 0.5 < joint["valid_auc"] <= 1 and joint["valid_auc_ci_low"] < joint["valid_auc"]
    assert pd.isna(joint["cost_per_credit_user_lift"]) and pd.isna(joint.get("holdout_auc"))
    activity = _row(table, "model mode", "activity")
    assert pd.isna(activity["valid_auc"]) and 0 <= activity["holdout_auc"] <= 1
    assert not pd.isna(activity["application_rate_lift"])
    prospect = _row(table, "model mode", "prospect")
    low, high = prospect["cost_per_credit_user_lift_ci_low"], prospect["cost_per_credit_user_lift_ci_high"]
    assert low < prospect["cost_per_credit_user_lift"] < high


def test_leaf_noise_reaches_the_lender_model(quick):
    out, table, _ = quick
    def lender_model(model_id: str) -> dict:
        # the run job's output at the lender (its node's job folder under the model's folder)
        path, = (out / "models" / model_id / "lender" / "state" / "jobs").rglob("secureboost_lender.json")
        return json.loads(path.read_text())

    noisy = _row(table, "leaf noise", "eps 10")
    assert lender_model(noisy["model_id"])["params"]["leaf_noise"] == {"mechanism": "laplace", "epsilon": 10.0}
    plain = _row(table, "leaf noise", "no noise")
    assert lender_model(plain["model_id"])["params"]["leaf_noise"] is None


def test_hanley_mcneil_interval_narrows_with_rows():
    small = hanley_mcneil_interval(0.7, 20, 80)
    large = hanley_mcneil_interval(0.7, 2000, 8000)
    assert small[0] < large[0] < 0.7 < large[1] < small[1]


@pytest.mark.parametrize("text, message", [
    ("[base]\nn_user = 5\n[[sweep]]\nname='a'\nsetting='seed'\nvalues=[1]\n", "unknown setting"),
    ("[[sweep]]\nname='a'\nsetting='targeting'\nvalues=['lookalike']\n", "targeting must be one of"),
    ("[base]\ntargeting='joint'\n[[sweep]]\nname='a'\nsetting='leaf_epsilon'\nvalues=[1.0]\n", "leaf_epsilon applies"),
    ("[[sweep]]\nname='a'\nsetting='treatment_share'\nvalues=[1.0]\n", "treatment_share"),
    ("[[sweep]]\nname='a'\nsetting='leaf_epsilon'\nvalues=['off']\n", "must be a number or"),
    ("[base]\nseed = 1\n", r"no \[\[sweep\]\]"),
])
def test_config_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as err:
        load_config(path)
    assert str(path) in str(err.value)
