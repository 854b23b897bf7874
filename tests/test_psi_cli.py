"""``fedacq psi`` end to end on small files, and PSI as a node protocol."""

import json

import pandas as pd

from fedacq.cli import main
from fedacq.link.memory import memory_pair, run_parties
from fedacq.node.policy import Policy
from fedacq.node.protocols import JobContext, load_protocol


def write_inputs(tmp_path):
    lender = pd.DataFrame({"phone": ["13800000001", "13800000002", "", "13800000004"],
                           "device": ["d1", "d2", "d3", "d4"], "label": [1, 0, 1, 0]})
    platform = pd.DataFrame({"mobile": ["+86 138 0000 0004", "x", "8613800000001", None, "y"],
                             "device_id": ["q", "r", "s", "d3", "d2"]})
    lender.to_csv(tmp_path / "A.csv", index=False)
    platform.to_parquet(tmp_path / "B.parquet")
    return lender, platform


def test_cli_writes_intersections_and_stats(tmp_path):
    write_inputs(tmp_path)
    code = main(["psi", "--lender", str(tmp_path / "A.csv"), "--platform", str(tmp_path / "B.parquet"),
                 "--id-column", "phone", "--id-column", "device", "--platform-id-column", "mobile",
                 "--platform-id-column", "device_id", "--out", str(tmp_path / "out"),
                 "--lender-out", str(tmp_path / "out" / "l.parquet"), "--workers", "1"])
    assert code == 0
    left = pd.read_parquet(tmp_path / "out" / "l.parquet")
    right = pd.read_csv(tmp_path / "out" / "platform_intersection.csv", dtype=str)
    pairs = set(zip(left["row"].tolist(), right["row"].astype(int).tolist()))
    assert pairs == {(0, 2), (3, 0), (2, 3), (1, 4)}
    rank = {"phone": 0, "mobile": 0, "device": 1, "device_id": 1}
    assert [rank[c] for c in left["matched_on"]] == [rank[c] for c in right["matched_on"]]
    stats = json.loads((tmp_path / "out" / "psi_stats.json").read_text())
    assert stats["intersection"] == 4
    assert stats["lender"]["bytes_sent"] == stats["platform"]["bytes_received"] > 0
    assert "blind_own" in stats["platform"]["seconds"]


def test_cli_reports_bad_column(tmp_path, capsys):
    write_inputs(tmp_path)
    code = main(["psi", "--lender", str(tmp_path / "A.csv"), "--platform", str(tmp_path / "B.parquet"),
                 "--id-column", "email", "--out", str(tmp_path / "out")])
    assert code == 2 and "'email'" in capsys.readouterr().err


def test_psi_node_protocol_unbalanced_twice(tmp_path):
    write_inputs(tmp_path)
    proto = load_protocol("psi")
    policy = Policy(min_intersection=4)  # four users in common in these files
    params = proto.resolve({"id_columns": ["phone", "device"], "platform_id_columns": ["mobile", "device_id"],
                            "mode": "unbalanced"}, policy)

    def ctx(party, link, data):
        work = tmp_path / party / "work"
        work.mkdir(parents=True, exist_ok=True)
        return JobContext(party=party, role=party, peer="x", job_id="j", link=link,
                          datasets={"ids": data}, params=params, work_dir=work, policy=policy,
                          registered={"ids": f"{party}_ids"},
                          keys_dir=tmp_path / party / "keys", mlflow_store=str(tmp_path / "ml"))

    for _ in range(2):
        link_l, link_p = memory_pair("lender", "platform")
        res_l, res_p = run_parties((proto.roles["lender"], ctx("lender", link_l, tmp_path / "A.csv")),
                                   (proto.roles["platform"], ctx("platform", link_p, tmp_path / "B.parquet")),
                                   timeout=120)
        assert res_l["intersection"] == res_p["intersection"] == 4
    assert "offline_receive_set" not in res_l["stats"]["seconds"]  # second job reused the set
    out = pd.read_parquet(tmp_path / "platform" / "work" / "intersection.parquet")
    assert len(out) == 4
    # the platform's cache is keyed by the name its own config registered, not the job's logical name
    assert [p.name for p in (tmp_path / "platform" / "keys" / "psi_cache").iterdir()] == ["platform_ids"]
