"""``benchmarks/secureboost.py --quick`` runs and writes the fields its full run reports."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "secureboost.py"


def test_quick_benchmark_writes_both_cases(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_secureboost", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "sb.json"
    assert bench.main(["--quick", "--json", str(out), "--synthetic-trees", "1"]) == 0
    doc = json.loads(out.read_text())
    assert doc["quick"] is True and doc["key_bits"] == 1024
    credit, synthetic = doc["cases"]
    assert credit["case"] == "default_credit" and credit["intersection_size"] == 1500
    assert credit["fedacq"]["psi_seconds"] > 0 and credit["xgboost_hist"]["seconds"] > 0
    assert credit["ratios"]["fate_2048_over_fedacq"] == pytest.approx(
        bench.FATE_SECONDS_2048 / credit["fedacq"]["psi_plus_train_seconds"])
    # same data, same parameters: the federated model matches plaintext XGBoost closely
    assert abs(credit["ratios"]["auc_fedacq_minus_xgboost"]) < 0.01
    assert synthetic["case"] == "synthetic" and len(synthetic["fedacq"]["seconds_each_tree"]) == 1
    assert synthetic["fedacq"]["seconds_per_tree"] > 0 and synthetic["xgboost_hist"]["train_auc"] > 0.5


def test_quick_kernel_case_compares_schemes(tmp_path):
    spec = importlib.util.spec_from_file_location("bench_secureboost", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "kernel.json"
    assert bench.main(["--quick", "--cases", "kernel", "--json", str(out)]) == 0
    (kernel,) = json.loads(out.read_text())["cases"]
    assert set(kernel["schemes"]) == {"paillier", "ou"}
    for r in kernel["schemes"].values():
        assert r["ciphertexts_decrypted"] > 0 and r["extrapolated_100k_x_300_seconds"]["tree"] > 0
    assert kernel["schemes"]["ou"]["ciphertext_bytes"] * 2 == kernel["schemes"]["paillier"]["ciphertext_bytes"]
