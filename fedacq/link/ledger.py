"""Egress ledger: an append-only JSONL record of every message a party sent.

Each line holds the time, job, step, message type, the shapes and byte size of
each part, and the sha256 of the encoded payload — never the payload itself — so
an auditor can check what left the premises, and match it against the peer's
copy of the same digest, without the ledger becoming a second copy of the data.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any, Iterator

from fedacq.link.message import BigInts, Message, header_bytes


def payload_digest(msg: Message) -> tuple[str, int]:
    """sha256 over the canonical header and every part's raw bytes; and the byte count."""
    h = hashlib.sha256()
    data = header_bytes(msg.header)
    h.update(data)
    total = len(data)
    for name in sorted(msg.parts):
        part = msg.parts[name]
        # memoryview cannot cast an array with a zero in its shape (e.g. no rows of 3 columns).
        raw = part.to_bytes() if isinstance(part, BigInts) else memoryview(part).cast("B") \
            if part.flags.c_contiguous and part.size else part.tobytes()
        h.update(name.encode())
        h.update(raw)
        total += part.nbytes
    return h.hexdigest(), total


def message_bytes(msg: Message) -> int:
    """The byte count :func:`payload_digest` reports, without hashing (for link counters)."""
    return len(header_bytes(msg.header)) + sum(part.nbytes for part in msg.parts.values())


class EgressLedger:
    """Appends one JSON line per sent message to ``path`` (thread-safe)."""

    def __init__(self, path: str | Path, party: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.party = party
        self._lock = threading.Lock()

    def record(self, job: str, seq: int, peer: str, msg: Message) -> dict[str, Any]:
        digest, nbytes = payload_digest(msg)
        entry = {
            "time": time.time(),
            "party": self.party,
            "peer": peer,
            "job": job,
            "seq": seq,
            **msg.describe(),
            "bytes": nbytes,
            "sha256": digest,
        }
        line = json.dumps(entry, sort_keys=True)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        if not self.path.exists():
            return iter(())
        with self.path.open(encoding="utf-8") as fh:
            return iter([json.loads(line) for line in fh if line.strip()])
