"""benchmarks/psi.py --quick still runs the intersection-sum case and writes its ratio."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_isum_benchmark_quick(tmp_path):
    out = tmp_path / "psi.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "psi.py"), "--json", str(out), "--quick",
                    "--cases", "isum", "--workers", "1"], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    case = result["cases"]["isum"]
    assert case["columns"] == 3 and case["key_bits"] == 2048
    assert result["ratios"]["isum_packed_speedup_vs_separate_runs"] > 0
    # one packed run sends a handful of messages; the peer sends as many per column
    assert case["packed_links"]["lender"]["messages_sent"] <= 6
    assert len(case["separate_links"]) == 3
