"""The crypto benchmark runs end to end through the CLI and writes the ratios it promises.

Nothing here is timed or compared: speed is the benchmark's job, not the tests'.
"""

from __future__ import annotations

import json

from fedacq.cli import main

REQUIRED_RATIOS = {"encrypt_vs_heu", "decrypt_vs_heu", "packed_decrypt_vs_heu", "add_vs_heu",
                   "encrypt_multicore_vs_single", "scalar_multiply_vs_heu"}


def test_bench_crypto_quick_writes_json(tmp_path, capsys):
    out = tmp_path / "crypto.json"
    assert main(["bench-crypto", "--quick", "--repeats", "1", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["key_bits"] == 2048 and result["quick"] is True
    assert REQUIRED_RATIOS <= set(result["ratios"])
    assert all(v > 0 for v in result["ratios"].values())
    assert result["packing"]["slots"] > 2
    printed = capsys.readouterr().out
    assert "packed_decrypt" in printed and "ratios:" in printed


def test_bench_crypto_refuses_small_keys(capsys):
    assert main(["bench-crypto", "--quick", "--key-bits", "1024"]) == 2
    assert "below 2048 bits" in capsys.readouterr().err
