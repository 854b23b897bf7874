"""README "Two sites": the whole loop as node jobs between two nodes started as two operators would.

Everything after the data runs through the ``fedacq`` command line, as the README writes it:
each party makes its own CA (``certs init-party``) and trusts only the peer's CA certificate
(``certs trust-peer``), writes its party.toml, starts ``fedacq node``; the lender submits the
repository's job files ``psi.toml``, ``prospect.toml`` and ``measure.toml`` with ``fedacq job
submit --wait``; the platform scores (``fedacq score``) and activates (``fedacq boosts build`` /
``export``) on its own; the simulated bidding (``fedacq sim campaign``) stands in for the
campaign. Both nodes listen on 127.0.0.1 with folders of their own.

The nodes run in test mode with a 1024-bit key: the job files ask for 2048 bits, which makes
the SecureBoost and intersection-sum jobs take minutes; the protocols do not depend on the key
size. The test's copies of the job files change only the key size (and the number of trees);
everything else is the repository's files verbatim. A 36 000-user market (seed 1) gives an
intersection of 1 080, above the platform's minimum of 1000 that the job files ask for; every step's
cost grows with the users, none of what the test checks does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedacq.node.local import LocalNode, free_port

ROOT = Path(__file__).resolve().parents[1]
JOBS = ROOT / "parties" / "jobs"
N_USERS = 36_000
#: the test's edits to the repository's job files: (original line, replacement).
TEST_KEY = [("key_bits = 2048", "key_bits = 1024\ninsecure_test_key = true")]
FEW_TREES = [("n_estimators = 20", "n_estimators = 3")]

PARTY_TOML = """\
[node]
party = "{party}"
listen = "127.0.0.1:{port}"
state_dir = "state"
keys_dir = "keys"
mlflow = "mlruns"

[tls]
ca = "certs/{peer}-ca.pem"
cert = "certs/{party}.pem"
key = "certs/{party}.key"

[peer]
name = "{peer}"
address = "127.0.0.1:{peer_port}"

[protocols]
allow = ["psi", "run", "measure"]

[datasets]
{datasets}

[policy]
test_mode = true                  # this test only: 1024-bit keys (see the module docstring)
min_key_bits = 1024
{policy}
"""
DATASETS = {"lender": {"customers": "data/customers.csv",
                       "funnel-prospect": "campaigns/prospect/funnel.parquet",
                       "events-prospect": "campaigns/prospect/events.parquet"},
            "platform": {"users": "data/users.csv",
                         "events-prospect": "campaigns/prospect/events.parquet",
                         "spend-prospect": "campaigns/prospect/spend.parquet"}}
POLICY = {"lender": "min_intersection = 100\nleaf_noise_max_epsilon = 10.0",
          "platform": "min_intersection = 1000\nreveal_to = [\"both\", \"lender\"]"}


def fedacq(*args: str | Path, cwd: Path, timeout: float = 300.0) -> str:
    """One ``fedacq`` command; its standard output. A failure shows the command's own output."""
    done = subprocess.run([sys.executable, "-m", "fedacq.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert done.returncode == 0, f"fedacq {' '.join(map(str, args))}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def job_record(output: str) -> dict:
    """The job record ``fedacq job submit --wait`` / ``status`` prints (after any status line)."""
    return json.loads(output[output.index("{"):])


def job_file(tmp: Path, name: str, edits: list[tuple[str, str]]) -> Path:
    text = (JOBS / name).read_text()
    for old, new in edits:
        assert text.count(old) == 1, (name, old)
        text = text.replace(old, new)
    path = tmp / "jobs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def sites(tmp_path_factory):
    """Two party folders (``lender/``, ``platform/``) with certificates, configs, data and running nodes."""
    from fedacq.pipeline import write_party_files
    from fedacq.sim import Market

    tmp = tmp_path_factory.mktemp("sites")
    fedacq("sim", "market", "--n-users", N_USERS, "--seed", 1, "--out", "world/market", cwd=tmp)
    write_party_files(Market.load(tmp / "world" / "market"), tmp)  # each party's own export of its data
    ports = {"lender": free_port(), "platform": free_port()}
    for party in ports:
        out = fedacq("certs", "init-party", "--party", party, "--out", f"{party}/certs", cwd=tmp)
        assert "send only" in out
    # only CA certificates change hands
    shutil.copyfile(tmp / "platform" / "certs" / "ca.pem", tmp / "from-platform-ca.pem")
    shutil.copyfile(tmp / "lender" / "certs" / "ca.pem", tmp / "from-lender-ca.pem")
    fedacq("certs", "trust-peer", "--dir", "lender/certs", "--peer", "platform", "--ca", "from-platform-ca.pem",
           cwd=tmp)
    fedacq("certs", "trust-peer", "--dir", "platform/certs", "--peer", "lender", "--ca", "from-lender-ca.pem",
           cwd=tmp)
    nodes = {}
    for party, peer in (("lender", "platform"), ("platform", "lender")):
        config = tmp / party / "party.toml"
        config.write_text(PARTY_TOML.format(
            party=party, peer=peer, port=ports[party], peer_port=ports[peer], policy=POLICY[party],
            datasets="\n".join(f'{name} = "{path}"' for name, path in DATASETS[party].items())))
        nodes[party] = LocalNode(party, config, tmp / party / "state" / "control.sock")  # runs `fedacq node`
    try:
        for node in nodes.values():
            node.launch()
        for node in nodes.values():
            node.wait_ready(60.0)
        yield tmp
    finally:
        for node in nodes.values():
            node.stop()


def test_the_whole_loop_as_node_jobs_between_two_sites(sites):
    tmp = sites
    lender_cfg, platform_cfg = "lender/party.toml", "platform/party.toml"

    # align: both learn the overlap
    psi = job_record(fedacq("job", "--config", lender_cfg, "submit", JOBS / "psi.toml", "--wait", cwd=tmp))
    assert psi["status"] == "succeeded" and psi["result"]["intersection"] >= 1000
    seen = job_record(fedacq("job", "--config", platform_cfg, "status", psi["id"], cwd=tmp))
    assert seen["status"] == "succeeded" and seen["result"]["intersection"] == psi["result"]["intersection"]
    assert Path(seen["result"]["output"]).is_relative_to(tmp / "platform" / "state")

    # train the prospect model; the platform finds its XGBoost model in its own job record
    prospect = job_file(tmp, "prospect.toml", TEST_KEY + FEW_TREES)
    run = job_record(fedacq("job", "--config", lender_cfg, "submit", prospect, "--wait", cwd=tmp, timeout=600))
    assert run["status"] == "succeeded", run.get("error")
    assert 0.5 < run["result"]["validation"]["auc"] <= 1
    assert run["spec"]["params"]["model_params"]["leaf_noise"] == {"mechanism": "laplace", "epsilon": 10.0}
    mine = job_record(fedacq("job", "--config", platform_cfg, "status", run["id"], cwd=tmp))["result"]
    model = next(f for f in mine["files"] if f.endswith("prospect_xgboost.json"))
    assert Path(model).is_relative_to(tmp / "platform")

    # score and activate at the platform alone
    fedacq("score", "--model", model, "--users", "platform/data/users.parquet", "--out", "platform/scores.parquet",
           cwd=tmp)
    assert len(pd.read_parquet(tmp / "platform" / "scores.parquet")) == N_USERS
    fedacq("boosts", "build", "--scores", "platform/scores.parquet", "--campaign", "lender-acq-prospect",
           "--layer", "prospect", "--salt", "two-sites", "--treatment", "0-499", "--control", "500-999",
           "--cuts", "0.2,0.5,0.8", "--boosts", "0.3,1,1.6,3", "--model-version", run["id"],
           "--out", "platform/boost_tables/prospect/v1", cwd=tmp)
    fedacq("boosts", "export", "--table", "platform/boost_tables/prospect/v1", "--out", "platform/boosts.parquet",
           cwd=tmp)

    # the campaign (simulated), and each party's share of what it produced
    fedacq("sim", "campaign", "--market", "world/market", "--boost-table", "platform/boosts.parquet",
           "--days", 7, "--out", "world/campaign", cwd=tmp)
    deliveries = {"lender/campaigns/prospect/funnel.parquet": "lender_funnel.parquet",
                  "lender/campaigns/prospect/events.parquet": "events.parquet",
                  "platform/campaigns/prospect/events.parquet": "events.parquet",
                  "platform/campaigns/prospect/spend.parquet": "spend_by_bucket.parquet"}
    for target, source in deliveries.items():
        (tmp / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tmp / "world" / "campaign" / source, tmp / target)

    # measure: the lender's report; the platform's released per-bucket aggregates
    measure = job_file(tmp, "measure.toml", TEST_KEY)
    done = job_record(fedacq("job", "--config", lender_cfg, "submit", measure, "--wait", cwd=tmp, timeout=600))
    assert done["status"] == "succeeded", done.get("error")
    report = json.loads(Path(done["result"]["report"]).read_text())
    assert set(report["layers"]) == {"prospect"}
    assert {"treatment", "control"} <= set(report["layers"]["prospect"]["arms"])
    released = job_record(fedacq("job", "--config", platform_cfg, "status", done["id"], cwd=tmp))["result"]
    view = pd.read_parquet(released["view"])
    assert released["epsilon"] == [1.0, 1.0, 1.0] and len(view) > 0
    assert released["buckets_released"] == done["result"]["buckets_released"]
    # what the platform holds of the lender's outcomes: per-bucket sums only, nothing under the cohort
    assert set(view.columns) >= {"bucket", "suppressed", "applicants", "credit_granted_sum"}
    assert "user_id" not in view.columns and view.loc[view["suppressed"], "applicants"].isna().all()

    # either party's auditor checks both ledgers against each other
    fedacq("audit", "verify", "lender/state", "platform/state", cwd=tmp)
