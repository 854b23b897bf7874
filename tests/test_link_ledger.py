"""Egress ledger digests: every payload shape a protocol may send can be recorded."""

import json

import numpy as np

from fedacq.link.ledger import EgressLedger, message_bytes, payload_digest
from fedacq.link.message import Message


def test_digest_of_empty_two_dimensional_parts(tmp_path):
    # A SecureBoost histogram request for a level with no node left to split sends (0, k) arrays.
    msg = Message("t", {"a": 1}, {"x": np.zeros((0, 3)), "y": np.zeros((3, 0), dtype=np.int64)})
    digest, nbytes = payload_digest(msg)
    assert nbytes == message_bytes(msg)
    EgressLedger(tmp_path / "egress.jsonl", "lender").record("job", 0, "platform", msg)
    entry = json.loads((tmp_path / "egress.jsonl").read_text())
    assert entry["sha256"] == digest
