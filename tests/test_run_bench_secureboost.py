"""``benchmarks/secureboost.py --quick`` runs and writes the fields its full run reports.

Run as a script (a subprocess): the synthetic case starts each party in a process of its
own (``spawn``), which imports the benchmark by its path, as a real run does.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks" / "secureboost.py"
FATE_SECONDS_2048 = 1360.0  # the benchmark's constant (issue 8)


def run_bench(tmp_path: Path, *args: str) -> dict:
    out = tmp_path / "sb.json"
    subprocess.run([sys.executable, str(BENCH), "--quick", "--json", str(out), *args], check=True, cwd=ROOT,
                   timeout=900)
    return json.loads(out.read_text())


def test_quick_benchmark_writes_both_cases(tmp_path):
    doc = run_bench(tmp_path, "--synthetic-trees", "1")
    assert doc["quick"] is True and doc["key_bits"] == 1024
    credit, synthetic = doc["cases"]
    assert credit["case"] == "default_credit" and credit["intersection_size"] == 1500
    assert credit["fedacq"]["psi_seconds"] > 0 and credit["xgboost_hist"]["seconds"] > 0
    assert credit["ratios"]["fate_2048_over_fedacq"] == pytest.approx(
        FATE_SECONDS_2048 / credit["fedacq"]["psi_plus_train_seconds"])
    # same data, same parameters: the federated model matches plaintext XGBoost closely
    assert abs(credit["ratios"]["auc_fedacq_minus_xgboost"]) < 0.01
    assert synthetic["case"] == "synthetic" and len(synthetic["fedacq"]["seconds_each_tree"]) == 1
    assert synthetic["fedacq"]["seconds_per_tree"] > 0 and synthetic["xgboost_hist"]["train_auc"] > 0.5
    assert synthetic["trees_equal_xgboost"] is True


def test_quick_synthetic_case_with_ou_reports_each_partys_memory(tmp_path):
    """The new options: rows, scheme, depth; each party in its own process with its own peak memory."""
    doc = run_bench(tmp_path, "--cases", "synthetic", "--rows", "1200", "--scheme", "ou", "--depth", "2",
                    "--synthetic-trees", "2")
    (case,) = doc["cases"]
    assert (case["rows"], case["scheme"], case["engine"], case["params"]["max_depth"]) == (1200, "ou", "local", 2)
    assert len(case["fedacq"]["seconds_each_tree"]) == 2 and case["trees_equal_xgboost"] is True
    assert case["ratios"]["fedacq_over_xgboost"] > 0
    for role in ("lender", "platform"):
        memory = case["parties"][role]["memory"]
        # the tree's peak includes the party's own process, whose high-water mark is at least its data
        assert case["peak_memory_mb"][role] == memory["tree_peak_mb"] > 0
        assert memory["self_peak_mb"] > case["parties"][role]["data_mb"]
    # the platform's histogram workers are processes of its own, seen by its watch
    assert case["parties"]["platform"]["memory"]["workers_peak_mb"]


def test_quick_kernel_case_compares_schemes(tmp_path):
    doc = run_bench(tmp_path, "--cases", "kernel")
    (kernel,) = doc["cases"]
    assert set(kernel["schemes"]) == {"paillier", "ou"}
    for r in kernel["schemes"].values():
        assert r["encrypt_seconds"] > 0
        variant = r["dense"]["pairs_built_children"]
        assert variant["ciphertexts_decrypted"] > 0 and variant["extrapolated_100k_x_300_seconds"]["tree"] > 0
    assert kernel["schemes"]["ou"]["ciphertext_bytes"] * 2 == kernel["schemes"]["paillier"]["ciphertext_bytes"]
