"""The campaign file: its schema, its canonical digest, and each node's refusal by its own policy."""

from __future__ import annotations

from pathlib import Path

import pytest

from fedacq.campaign.config import (CampaignError, CampaignPolicy, check_against, check_at_node, load_campaign,
                                    load_campaign_policy, parse_campaign, run_job_adds_trees)
from fedacq.campaign.demo import CampaignDemoConfig, campaign_text
from fedacq.node.local import write_party_config
from fedacq.node.policy import load_policy


@pytest.fixture
def campaign_file(tmp_path: Path) -> Path:
    path = tmp_path / "campaign.toml"
    path.write_text(campaign_text(CampaignDemoConfig()), encoding="utf-8")
    return path


def _edit(path: Path, old: str, new: str) -> Path:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    return path


def test_the_demo_campaign_parses(campaign_file: Path) -> None:
    c = load_campaign(campaign_file)
    assert (c.name, c.label, c.layer, c.update, c.key_bits) == ("acq-demo", "credit_granted", "acq", "retrain", 2048)
    assert c.model_params()["objective"] == "binary:logistic" and c.model_params()["max_depth"] == 3
    assert c.boosts == (0.3, 1.0, 1.6, 3.0) and c.cuts == (0.2, 0.5, 0.8)
    assert c.rollback_kpi == "cost_per_credit_user" and c.bad_side == "higher"


def test_the_digest_ignores_formatting_and_key_order(campaign_file: Path, tmp_path: Path) -> None:
    c = load_campaign(campaign_file)
    lines = campaign_file.read_text().splitlines()
    # comments and key order inside a table do not change the campaign
    reordered = tmp_path / "other.toml"
    text = "\n".join(line for line in lines if not line.startswith("#"))
    text = text.replace('label = "credit_granted"\n', "").replace("[campaign]\n", '[campaign]\nlabel = "credit_granted"\n')
    reordered.write_text(text)
    assert load_campaign(reordered).digest == c.digest
    changed = _edit(reordered, "max_score_psi = 0.35", "max_score_psi = 0.2")
    assert load_campaign(changed).digest != c.digest


@pytest.mark.parametrize("old, new, message", [
    ('lender = "customers"', 'lender = "../customers.csv"', "[datasets] lender"),
    ('update = "retrain"', 'update = "finetune"', "[model] update"),
    ('mode = "prospect"', 'mode = "joint"', "[model] mode"),
    ("cycle_days = 10", "cycle_days = 0", "[schedule] cycle_days"),
    ("cuts = [0.2, 0.5, 0.8]", "cuts = [0.5, 0.2, 0.8]", "[tiers] cuts"),
    ('kpi = "cost_per_credit_user"', 'kpi = "clicks"', "[rollback] kpi"),
    ("max_score_psi = 0.35", 'max_score_psi = "low"', "[gates] max_score_psi"),
    ("[rollback]", "[rollbacks]", "unknown table"),
    ("treatment_share = 0.5", "treatment_share = 0.5\nshare = 1", "unknown key [experiment] share"),
    ('name = "acq-demo"\n', "", "missing [campaign] name"),
])
def test_a_bad_campaign_file_is_refused_naming_the_file_and_key(campaign_file: Path, old: str, new: str,
                                                                 message: str) -> None:
    _edit(campaign_file, old, new)
    with pytest.raises(CampaignError) as err:
        load_campaign(campaign_file)
    assert str(campaign_file) in str(err.value) and message in str(err.value)


def test_add_trees_only_when_the_run_job_takes_the_live_model(campaign_file: Path, monkeypatch) -> None:
    from fedacq.campaign import config

    _edit(campaign_file, 'update = "retrain"', 'update = "add_trees"')
    assert run_job_adds_trees()  # the run job's xgb_model (fedacq.learn.run_node)
    assert load_campaign(campaign_file).update == "add_trees"
    with_value = _edit(campaign_file, 'update = "add_trees"', 'update = "add_trees"\nvalue = "drawdown"')
    with pytest.raises(CampaignError, match=r"\[model\] update.*value stages"):
        load_campaign(with_value)
    _edit(campaign_file, 'value = "drawdown"', "")
    monkeypatch.setattr(config, "run_job_adds_trees", lambda: False)  # an older node's run job
    with pytest.raises(CampaignError, match=r"\[model\] update.*xgb_model"):
        load_campaign(campaign_file)


def _campaign(campaign_file: Path, **edits: tuple[str, str]):
    for old, new in edits.values():
        _edit(campaign_file, old, new)
    return load_campaign(campaign_file)


def test_the_platform_refuses_boosts_and_a_psi_gate_beyond_its_own(campaign_file: Path) -> None:
    platform, limits = load_policy(None, "platform.toml", "platform"), CampaignPolicy(max_boost=2.0)
    c = load_campaign(campaign_file)
    with pytest.raises(CampaignError, match=r"campaign.toml: \[tiers\] boosts: the platform's policy refuses it "
                                            r"\(3 > \[campaigns\] max_boost 2\)"):
        check_against(c, "platform", platform, limits)
    check_against(c, "lender", load_policy(None, "lender.toml", "lender"), limits)  # boosts are not the lender's
    looser = _campaign(campaign_file, psi=("max_score_psi = 0.35", "max_score_psi = 0.4"))
    with pytest.raises(CampaignError, match=r"\[gates\] max_score_psi: .*looser"):
        check_against(looser, "platform", platform, CampaignPolicy())


def test_each_node_refuses_what_its_policy_refuses(campaign_file: Path) -> None:
    c = load_campaign(campaign_file)
    with pytest.raises(CampaignError, match=r"\[model\].*policy models"):
        check_against(c, "platform", load_policy({"models": ["hetero_lr"]}, "p", "platform"), CampaignPolicy())
    with pytest.raises(CampaignError, match=r"\[measurement\] epsilon: the lender's policy refuses it"):
        check_against(c, "lender", load_policy({"measure_max_epsilon": 0.5}, "l", "lender"), CampaignPolicy())
    with pytest.raises(CampaignError, match=r"\[gates\] min_intersection"):
        check_against(c, "lender", load_policy({"min_intersection": 5000}, "l", "lender"), CampaignPolicy())
    # a test key only on a node in test mode (the demo's tests use one; the reason is the test's speed)
    small = _campaign(campaign_file, key=("key_bits = 2048", "key_bits = 1024"),
                      test=("insecure_test_key = false", "insecure_test_key = true"))
    with pytest.raises(CampaignError, match="test_mode"):
        check_against(small, "lender", load_policy(None, "l", "lender"), CampaignPolicy())
    check_against(small, "lender", load_policy({"test_mode": True, "min_key_bits": 1024}, "l", "lender"),
                  CampaignPolicy())


def test_the_check_at_a_node_reads_its_party_toml(campaign_file: Path, tmp_path: Path) -> None:
    c = load_campaign(campaign_file)
    toml = write_party_config(tmp_path / "platform" / "party.toml", "platform", "lender", 1, 2, tmp_path, ["psi"],
                              {"users": tmp_path / "u.csv", "users-scoring": tmp_path / "u.parquet"}, tmp_path,
                              sections={"campaigns": {"max_boost": 2.5, "max_score_psi": 0.35}})
    assert load_campaign_policy(toml) == CampaignPolicy(max_boost=2.5, max_score_psi=0.35)
    with pytest.raises(CampaignError, match="max_boost 2.5"):
        check_at_node(c, toml)
    toml = write_party_config(toml, "platform", "lender", 1, 2, tmp_path, ["psi"], {"users": tmp_path / "u.csv"},
                              tmp_path, sections={"campaigns": {"max_score_psi": 0.35}})
    with pytest.raises(CampaignError, match=r"\[datasets\] platform_scoring = 'users-scoring' is not registered"):
        check_at_node(c, toml)
    bad = write_party_config(toml, "platform", "lender", 1, 2, tmp_path, ["psi"], {}, tmp_path,
                             sections={"campaigns": {"max_boost": "high"}})
    with pytest.raises(CampaignError, match=r"party.toml: \[campaigns\] max_boost must be a positive number"):
        load_campaign_policy(bad)


def test_parse_refuses_a_non_table() -> None:
    with pytest.raises(CampaignError, match="src: a campaign must be a table"):
        parse_campaign([], "src")  # type: ignore[arg-type]
