"""In-memory link: two parties in one process, connected by queues.

Used by tests, the simulation and the in-process transport of ``fedacq run``.
Messages cross as copies (arrays are copied, big integers re-read) so that a
party can never mutate what the other holds, exactly as over a network.
``received`` keeps every validated message this side got when ``record=True``:
privacy tests read it to check what a party actually learned.
"""

from __future__ import annotations

import queue

import numpy as np

from fedacq.link.ledger import PartyLedger
from fedacq.link.link import Link, LinkTimeout
from fedacq.link.message import BigInts, Message


def _copy(msg: Message) -> Message:
    parts = {k: (BigInts.from_bytes(v.to_bytes(), v.width) if isinstance(v, BigInts) else np.array(v, copy=True))
             for k, v in msg.parts.items()}
    return Message(type=msg.type, header=dict(msg.header), parts=parts, step=msg.step)


class MemoryLink(Link):
    def __init__(self, party: str, peer: str, inbox: "queue.Queue[tuple[int, Message]]",
                 outbox: "queue.Queue[tuple[int, Message]]", job: str = "",
                 ledger: PartyLedger | None = None, record: bool = False) -> None:
        super().__init__(party, peer, job, ledger)
        self._inbox = inbox
        self._outbox = outbox
        self.received: list[Message] | None = [] if record else None

    def _transmit(self, seq: int, msg: Message) -> None:
        self._outbox.put((seq, _copy(msg)))

    def _receive(self, timeout: float | None) -> tuple[int, Message]:
        try:
            return self._inbox.get(timeout=timeout)
        except queue.Empty:
            raise LinkTimeout(f"{self.party}: no message from {self.peer} within {timeout} s") from None

    def recv(self, expected, timeout: float | None = 600.0) -> Message:  # type: ignore[override]
        msg = super().recv(expected, timeout)
        if self.received is not None:
            self.received.append(msg)
        return msg


def memory_pair(a: str, b: str, job: str = "", ledgers: dict[str, PartyLedger] | None = None,
                record: bool = False) -> tuple[MemoryLink, MemoryLink]:
    """Two connected links: ``a``'s view and ``b``'s view."""
    ab: queue.Queue = queue.Queue()
    ba: queue.Queue = queue.Queue()
    ledgers = ledgers or {}
    return (MemoryLink(a, b, inbox=ba, outbox=ab, job=job, ledger=ledgers.get(a), record=record),
            MemoryLink(b, a, inbox=ab, outbox=ba, job=job, ledger=ledgers.get(b), record=record))


def run_parties(*calls: "tuple[object, ...]", timeout: float | None = None) -> list[object]:
    """Run each party's protocol function in its own thread; return their results in order.

    Each call is ``(fn, *args)``. As soon as any party raises, its exception is
    re-raised here: the other parties are blocked on a peer that will never
    answer, and waiting for their link timeouts would only hide the cause (they
    are daemon threads and end with their own timeouts).
    """
    import threading
    import time

    results: list[object] = [None] * len(calls)
    errors: list[BaseException] = []
    finished = threading.Semaphore(0)

    def target(i: int, fn, args) -> None:
        try:
            results[i] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)
        finally:
            finished.release()

    threads = [threading.Thread(target=target, args=(i, c[0], c[1:]), daemon=True)
               for i, c in enumerate(calls)]
    for t in threads:
        t.start()
    deadline = None if timeout is None else time.monotonic() + timeout
    for _ in threads:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        if not finished.acquire(timeout=left):
            raise TimeoutError(f"parties did not finish within {timeout} s")
        if errors:
            raise errors[0]
    return results
