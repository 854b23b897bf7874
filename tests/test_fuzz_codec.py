"""The codec fuzz harness (benchmarks/fuzz.py): a short run, and proof that it would notice.

The short run is 50,000 cases in two processes side by side: atheris (coverage-guided)
and the random mutator, each over every registered message schema. Nothing but
MessageError may escape, and no case may allocate more than twice its input.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedacq.link import codec
from fedacq.link.message import MAX_HEADER_BYTES

ROOT = Path(__file__).resolve().parents[1]
FUZZ = ROOT / "benchmarks" / "fuzz.py"
CASES = 25_000  # per process; two processes


def load_harness():
    spec = importlib.util.spec_from_file_location("fedacq_fuzz_harness", FUZZ)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_short_fuzz_run_finds_nothing(tmp_path) -> None:
    engines = ["atheris" if importlib.util.find_spec("atheris") else "random", "random"]
    runs = []
    for i, engine in enumerate(engines):
        out = tmp_path / f"fuzz{i}.json"
        cmd = [sys.executable, str(FUZZ), "--cases", str(CASES), "--json", str(out), "--engine", engine,
               "--seed", str(i + 1)]
        runs.append((out, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    total = 0
    for out, proc in runs:
        stdout, stderr = proc.communicate(timeout=600)
        assert out.exists(), f"no results written:\n{stdout}\n{stderr[-3000:]}"
        result = json.loads(out.read_text())
        assert result["distinct_crashes"] == 0, json.dumps(result["crashes"], indent=1)[:3000]
        assert result["memory"]["worst_ratio"] <= 2.0, result["memory"]["worst_case"]
        assert proc.returncode == 0 and result["ok"], stdout
        assert result["cases"] == CASES
        assert result["outcomes"]["accepted"] > 0 and result["outcomes"]["refused"] > 0
        # every registered schema was fuzzed, from every protocol module
        assert all(n > 0 for n in result["by_type"].values()), result["by_type"]
        assert {"psi.hello", "isum.values", "sb.hist", "hlr.gradient", "measure.spend", "echo.data"} \
            <= set(result["schemas"])
        total += result["cases"]
    assert total >= 50_000


@pytest.fixture
def harness():
    fuzz = load_harness()
    fuzz.register_all()
    h = fuzz.Harness(floor=2 * MAX_HEADER_BYTES)  # the benchmark's default
    return fuzz, h, fuzz.seed_corpus(h)


def test_harness_records_anything_but_message_error(harness, monkeypatch) -> None:
    fuzz, h, seeds = harness

    def broken(self):
        raise KeyError("planted")

    monkeypatch.setattr(codec.Assembler, "finish", broken)
    for seed in seeds[:30]:
        h.run(seed)
    assert h.outcomes["crashed"] > 0
    (key,) = h.crashes
    assert key.startswith("KeyError at codec.py:") and h.crashes[key]["message"] == "'planted'"
    assert not h.result("test", 1.0, [], [])["ok"]


def test_harness_measures_what_the_decoder_allocates(harness, monkeypatch) -> None:
    fuzz, h, seeds = harness
    feed = codec.Assembler.feed

    def greedy(self, data):
        self.hoard = bytearray(4 * 1024 * 1024)  # what an eager decoder would do
        feed(self, data)

    for seed in seeds[:30]:
        h.run(seed)
    assert h.worst["ratio"] <= 2.0
    monkeypatch.setattr(codec.Assembler, "feed", greedy)
    for seed in seeds[:30]:
        h.run(seed)
    assert h.worst["ratio"] > 2.0 and h.worst["peak_bytes"] >= 4 * 1024 * 1024
    assert not h.result("test", 1.0, [], [])["ok"]
