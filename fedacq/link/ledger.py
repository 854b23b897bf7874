"""A party's ledger: hash-chained, fsynced records of every message it sent and received.

A party's ledger is one directory holding two append-only JSONL files:

* ``egress.jsonl``: one line per message this party sent, written only once the peer
  acknowledged it (for gRPC: the receiver checked and queued it), so a message that
  was refused or never arrived leaves no line;
* ``ingress.jsonl``: one line per message this party received, written when
  :meth:`Link.recv <fedacq.link.link.Link.recv>` takes it from the transport (before
  the protocol's type check, so a refused message is on record too; a retried
  duplicate is recorded once).

Each line holds the time, both parties, the job, the sequence number, the step, the
message type, the shapes and byte size of each part, and the sha256 of the message's
canonical bytes (header and parts) — never the payload. Sender and receiver compute
the digest over the same bytes, so the sender's egress line and the receiver's
ingress line for ``(job, seq)`` match; ``fedacq audit verify`` checks that.

Each line also carries ``prev``, the ``hash`` of the line before it (:data:`GENESIS`
for the first), and its own ``hash``: the sha256 of the line's canonical JSON without
the ``hash`` field. An edited, deleted or reordered line breaks the chain. The chain
alone cannot prove that lines were not dropped from the end or that the whole file
was not rewritten (there is no secret in it); the peer's ledger, matched line by line,
is what makes it evidence.

Durability: each line is one ``write`` on an ``O_APPEND`` file followed by ``fsync``,
under an exclusive ``flock``; the directory is fsynced when a file is created. Every
append chains to the file's current last line (read back and checked whenever the file
is not as this object left it), so a ledger reopened after a restart, or written by two
objects or processes, continues one chain. A torn last line — a crash in the middle of
a write — or a last line that does not carry its own hash is reported as a
:class:`LedgerError` and never continued.

Cost: the fsync is nearly all of it (0.3–3 ms per line on the development machine's
disk, against about 0.1 ms for the rest), once per message at the sender and once at
the receiver.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from fedacq.link.message import BigInts, Message, header_bytes
from fedacq.paths import fsync_dir

#: ``prev`` of the first line of a chain.
GENESIS = "0" * 64
EGRESS_FILE = "egress.jsonl"
INGRESS_FILE = "ingress.jsonl"


class LedgerError(RuntimeError):
    """A ledger file cannot be continued: torn or altered last line, or not a ledger."""


def payload_digest(msg: Message) -> tuple[str, int]:
    """sha256 over the canonical header and every part's wire bytes; and the byte count.

    Arrays are hashed as little-endian C-order bytes (as the codec sends them), so the
    sender's digest and the receiver's digest of the decoded message agree.
    """
    h = hashlib.sha256()
    data = header_bytes(msg.header)
    h.update(data)
    total = len(data)
    for name in sorted(msg.parts):
        part = msg.parts[name]
        h.update(name.encode())
        if isinstance(part, BigInts):
            h.update(part.buffer())
        else:
            arr = np.ascontiguousarray(part, dtype=part.dtype.newbyteorder("<"))
            # memoryview cannot cast an array with a zero in its shape (e.g. no rows of 3 columns).
            h.update(memoryview(arr.reshape(-1)).cast("B") if arr.size else b"")
        total += part.nbytes
    return h.hexdigest(), total


def message_bytes(msg: Message) -> int:
    """The byte count :func:`payload_digest` reports, without hashing (for link counters)."""
    return len(header_bytes(msg.header)) + sum(part.nbytes for part in msg.parts.values())


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes a line's ``hash`` covers: its canonical JSON without the ``hash`` field."""
    body = {k: v for k, v in entry.items() if k != "hash"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


def line_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


class ChainFile:
    """One hash-chained, fsynced JSONL file (thread- and process-safe appends)."""

    #: bytes read back from the end per step when looking for the last line.
    _TAIL_STEP = 4096

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd = -1
        new_dirs = [d for d in (self.path.parent, *self.path.parent.parents) if not d.exists()]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for d in reversed(new_dirs):
            fsync_dir(d.parent)
        try:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_EXCL, 0o600)
            os.fsync(self._fd)
            fsync_dir(self.path.parent)
        except FileExistsError:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND)
        self._lock = threading.Lock()
        self._tail: tuple[int, str] | None = None  # (file size, last hash) after this object's last write
        with self._locked():
            self._prev()  # refuse a torn or altered tail now, not at the first message

    def _locked(self) -> "_FileLock":
        return _FileLock(self._lock, self._fd)

    def _prev(self) -> tuple[int, str]:
        """The file's size and its last line's ``hash`` (read back only if another writer appended since)."""
        size = os.fstat(self._fd).st_size
        if self._tail is not None and self._tail[0] == size:
            return self._tail
        return size, self._last_hash(size)

    def _last_hash(self, size: int) -> str:
        """The ``hash`` of the last line (checked against its content), or :data:`GENESIS`."""
        if size == 0:
            return GENESIS
        if os.pread(self._fd, 1, size - 1) != b"\n":
            raise LedgerError(f"{self.path}: the last line (line {self._count_lines() + 1}) is torn "
                              "(no end of line: a crash while it was written?); the ledger is not "
                              "continued — check it with `fedacq audit verify` and keep it as evidence")
        start = size - 1  # read back from the last line's newline to the one before it
        tail = b""
        while start > 0 and b"\n" not in tail:
            step = min(self._TAIL_STEP, start)
            start -= step
            tail = os.pread(self._fd, step, start) + tail
        last = tail.rsplit(b"\n", 1)[-1]
        try:
            entry = json.loads(last)
            ok = isinstance(entry, dict) and entry.get("hash") == line_hash(entry)
        except (ValueError, TypeError):
            ok = False
        if not ok:
            raise LedgerError(f"{self.path}: the last line (line {self._count_lines()}) does not carry the "
                              "hash of its own content (altered, or not a ledger line); the ledger is not "
                              "continued — check it with `fedacq audit verify`")
        return entry["hash"]

    def _count_lines(self) -> int:
        with self.path.open("rb") as fh:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b""))

    def append(self, fields: dict[str, Any]) -> dict[str, Any]:
        """Chain ``fields`` to the last line, write it in one call and fsync; return the entry."""
        with self._locked():
            size, prev = self._prev()
            entry = {**fields, "prev": prev}
            body = canonical(entry)
            entry["hash"] = hashlib.sha256(body).hexdigest()
            data = body[:-1] + b',"hash":"' + entry["hash"].encode() + b'"}\n'  # the canonical bytes + hash
            if os.write(self._fd, data) != len(data):
                raise LedgerError(f"{self.path}: short write ({len(data)} bytes wanted; disk full?)")
            os.fsync(self._fd)
            self._tail = (size + len(data), entry["hash"])
        return entry

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every line, parsed (no chain check: that is :mod:`fedacq.link.audit`)."""
        with self.path.open(encoding="utf-8") as fh:
            return iter([json.loads(line) for line in fh if line.strip()])

    #: held by the class, so that a ledger collected at interpreter exit can still close its file.
    _close = staticmethod(os.close)

    def close(self) -> None:
        if self._fd >= 0:
            self._close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


class _FileLock:
    """This object's thread lock, then an exclusive ``flock`` against other writers."""

    def __init__(self, lock: threading.Lock, fd: int) -> None:
        self.lock, self.fd = lock, fd

    def __enter__(self) -> None:
        self.lock.acquire()
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except BaseException:
            self.lock.release()
            raise

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        self.lock.release()


class PartyLedger:
    """A party's ledger: ``directory/egress.jsonl`` and ``directory/ingress.jsonl``.

    One object serves every link of the party (links of concurrent jobs share it); pass
    it to links as ``ledger=``.
    """

    def __init__(self, directory: str | Path, party: str) -> None:
        self.directory = Path(directory)
        self.party = party
        self.egress = ChainFile(self.directory / EGRESS_FILE)
        self.ingress = ChainFile(self.directory / INGRESS_FILE)

    def _entry(self, job: str, seq: int, peer: str, msg: Message, digest: tuple[str, int] | None) -> dict:
        sha, nbytes = digest or payload_digest(msg)
        described = msg.describe()
        for name, part in described["parts"].items():
            if part["kind"] == "ndarray":  # byte order aside, as on the wire: both sides write the same
                part["dtype"] = msg.parts[name].dtype.name
        return {"time": time.time(), "party": self.party, "peer": peer, "job": job, "seq": seq,
                **described, "bytes": nbytes, "sha256": sha}

    def record_sent(self, job: str, seq: int, peer: str, msg: Message,
                    digest: tuple[str, int] | None = None) -> dict[str, Any]:
        """Record a message the peer acknowledged (``digest``: a :func:`payload_digest` already made)."""
        return self.egress.append(self._entry(job, seq, peer, msg, digest))

    def record_received(self, job: str, seq: int, peer: str, msg: Message) -> dict[str, Any]:
        """Record a message taken from the peer (once per sequence number)."""
        return self.ingress.append(self._entry(job, seq, peer, msg, None))

    def close(self) -> None:
        self.egress.close()
        self.ingress.close()

