"""``fedacq campaign start|status|pause|resume|stop`` at one node, on its own party.toml."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fedacq.campaign import commands
from fedacq.campaign.config import load_campaign
from fedacq.campaign.demo import CampaignDemoConfig, campaign_text
from fedacq.node.local import write_party_config


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers())
    args = parser.parse_args(["campaign", *argv])
    return args.func(args)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path]:
    campaign = tmp_path / "campaign.toml"
    campaign.write_text(campaign_text(CampaignDemoConfig()))
    party = write_party_config(tmp_path / "lender" / "party.toml", "lender", "platform", 1, 2, tmp_path, ["psi"],
                               {"customers": tmp_path / "c.csv"}, tmp_path / "mlruns")
    return campaign, party


def test_start_records_the_campaign_and_status_shows_it(setup, capsys) -> None:
    campaign, party = setup
    digest = load_campaign(campaign).digest
    with pytest.raises(SystemExit, match="different campaign files"):
        _cli("start", "--config", str(party), "--campaign", str(campaign), "--peer-digest", "0" * 64)
    assert not (party.parent / "state" / "campaigns" / "acq-demo").exists()  # nothing recorded
    assert _cli("start", "--config", str(party), "--campaign", str(campaign), "--peer-digest", digest) == 0
    assert digest in capsys.readouterr().out
    record = json.loads((party.parent / "state" / "campaigns" / "acq-demo" / "campaign.json").read_text())
    assert record["status"] == "running" and record["digest"] == digest and record["party"] == "lender"
    # at the lender a change also goes to the platform's record through its node; with no node
    # running the lender's change stands and the command says the platform's record did not change
    for action, status in (("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
        with pytest.raises(SystemExit, match=f"{status} at the lender, but the platform's record did not change: "
                                             ".*no node is listening.*run the command again"):
            _cli(action, "--config", str(party), "acq-demo")
        _cli("status", "--config", str(party), "--json")
        assert json.loads(capsys.readouterr().out)[0]["status"] == status
    # a stopped campaign stays stopped (nothing is sent)
    with pytest.raises(ValueError, match="is stopped: it cannot become running"):
        _cli("resume", "--config", str(party), "acq-demo")
    # the same name with another campaign is refused: a changed campaign needs a new name
    campaign.write_text(campaign.read_text().replace("max_score_psi = 0.35", "max_score_psi = 0.2"))
    with pytest.raises(ValueError, match="already exists .* with digest"):
        _cli("start", "--config", str(party), "--campaign", str(campaign))


def test_start_refuses_a_campaign_the_node_policy_refuses(setup) -> None:
    campaign, party = setup
    campaign.write_text(campaign.read_text().replace('lender = "customers"', 'lender = "outcomes"'))
    with pytest.raises(ValueError, match=r"\[datasets\] lender = 'outcomes' is not registered at the lender"):
        _cli("start", "--config", str(party), "--campaign", str(campaign))


def test_start_registers_this_nodes_own_copy_and_run_drives_only_from_the_lender(setup, tmp_path: Path) -> None:
    campaign, party = setup
    assert _cli("start", "--config", str(party), "--campaign", str(campaign)) == 0
    registration = json.loads((party.parent / "state" / "campaign-registry" / "acq-demo.json").read_text())
    assert registration["digest"] == load_campaign(campaign).digest and registration["party"] == "lender"
    with pytest.raises(ValueError, match="'other' is not registered at this node"):
        _cli("run", "--config", str(party), "other")
    # the platform publishes through its own boost service: its start needs one in its own config
    platform = write_party_config(tmp_path / "platform" / "party.toml", "platform", "lender", 2, 1, tmp_path, ["psi"],
                                  {"users": tmp_path / "u.csv", "users-scoring": tmp_path / "u.parquet"},
                                  tmp_path / "mlruns", sections={"campaigns": {"max_score_psi": 0.35}})
    with pytest.raises(ValueError, match=r"\[campaigns\] boost_service"):
        _cli("start", "--config", str(platform), "--campaign", str(campaign))
    with pytest.raises(ValueError, match="driven from the lender's node"):
        _cli("run", "--config", str(platform), "acq-demo")
