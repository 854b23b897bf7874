"""A bad manifest is logged and skipped: it never stops a directory scan, the start-up scan of
``fedacq boost-serve`` included, and a valid table found in the same pass still loads."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from fedacq.activate.service import BoostClient, BoostRegistry, TableWatcher
from fedacq.activate.table import MANIFEST_FILE, ExperimentConfig, build_boost_table

NOW = dt.datetime.now(dt.timezone.utc)


def _write(root, campaign: str, version: str, created: dt.datetime):
    scores = pd.DataFrame({"user_id": [f"u{i}" for i in range(100)], "score": np.random.default_rng(1).random(100)})
    t = build_boost_table(scores, campaign, experiment=ExperimentConfig(layer="acq", salt="s"), version=version,
                          expiry=dt.timedelta(hours=2), now=created)
    return t.write(root / campaign / version)


def _manifest(table_dir) -> dict:
    return json.loads((table_dir / MANIFEST_FILE).read_text())


BAD = {  # name -> (manifest text, from a valid manifest m; reason in the error)
    "not-json": (lambda m: "{not json", "not valid JSON"),
    "a-list": (lambda m: json.dumps([m]), "JSON list, not an object"),
    "a-string": (lambda m: json.dumps("camp"), "JSON str, not an object"),
    "keys-as-list": (lambda m: json.dumps(list(m)), "JSON list, not an object"),
    "missing-keys": (lambda m: json.dumps({k: v for k, v in m.items() if k not in ("campaign", "sha256")}),
                     "lacks key(s) ['campaign', 'sha256']"),
    "mistyped": (lambda m: json.dumps({**m, "created_at": 5, "rows": "100", "experiment": []}), "wrong type"),
    "bad-time": (lambda m: json.dumps({**m, "created_at": "yesterday"}), "bad created_at"),
    "deep": (lambda m: "[" * 100_000 + "]" * 100_000, "not valid JSON"),
    "digest": (lambda m: json.dumps({**m, "sha256": "0" * 64}), "checksum mismatch"),
    "not-utf8": (lambda m: b"\xff\xfe{}", "cannot read"),
}


def _plant_bad_tables(root) -> None:
    """Every kind of bad manifest, each newer than the good table, in its own campaign and in the good one."""
    for i, (name, (make, _)) in enumerate(BAD.items()):
        for campaign in ("camp", f"other-{i}"):
            d = _write(root, campaign, f"bad-{name}", NOW + dt.timedelta(seconds=10 + i))
            text = make(_manifest(d))
            (d / MANIFEST_FILE).write_bytes(text if isinstance(text, bytes) else text.encode())


def test_one_scan_skips_every_bad_manifest_and_loads_the_valid_table(tmp_path) -> None:
    root = tmp_path / "tables"
    _write(root, "camp", "good", NOW)
    _plant_bad_tables(root)
    registry = BoostRegistry(root)
    assert TableWatcher(registry).scan() == ["good"]
    assert {c: t.version for c, t in registry.campaigns().items()} == {"camp": "good"}
    errors = "\n".join(registry.errors)
    for name, (_, reason) in BAD.items():
        assert f"bad-{name}" in errors, f"{name} not reported"
        assert reason in errors, f"{name}: {reason!r} not in the errors"


def test_bad_manifests_written_later_do_not_stop_the_watcher(tmp_path) -> None:
    root = tmp_path / "tables"
    _write(root, "camp", "v1", NOW)
    registry = BoostRegistry(root)
    watcher = TableWatcher(registry)
    assert watcher.scan() == ["v1"]
    _plant_bad_tables(root)
    _write(root, "camp", "v2", NOW + dt.timedelta(seconds=5))
    assert watcher.scan() == ["v2"]  # the bad ones are newer still, and skipped
    assert watcher.scan() == []


def test_boost_serve_starts_despite_bad_manifests_and_serves_the_valid_table(tmp_path) -> None:
    root = tmp_path / "tables"
    _write(root, "camp", "good", NOW)
    _plant_bad_tables(root)
    port_file = tmp_path / "port"
    proc = subprocess.Popen([sys.executable, "-m", "fedacq.cli", "boost-serve", "--tables", str(root),
                             "--address", "127.0.0.1:0", "--port-file", str(port_file), "--watch-interval", "0"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text()):
            if proc.poll() is not None:
                pytest.fail(f"boost-serve exited {proc.returncode}: {proc.stderr.read().decode()[-3000:]}")
            assert time.monotonic() < deadline, "boost-serve did not start"
            time.sleep(0.05)
        client = BoostClient(f"127.0.0.1:{port_file.read_text()}")
        try:
            assert client.lookup("camp", ["u1"]).table_version == "good"
            status = client.status()
            assert [t.campaign for t in status.tables] == ["camp"]
            assert status.errors and all("bad-" in e for e in status.errors)
        finally:
            client.close()
    finally:
        proc.terminate()
        proc.wait(10)
