"""The ``Link`` interface that every protocol talks through.

Protocols are sans-I/O: they build :class:`~fedacq.link.message.Message` values
and hand them to a link; they never open sockets. A link connects *one* party to
*one* peer for *one* job. Multi-party protocols take a mapping of peer name to
link. Two transports implement it: :mod:`fedacq.link.memory` (tests, simulation,
the demo) and :mod:`fedacq.link.grpc_link` (node daemons).

Common behaviour lives here so that both transports behave identically:

* ``send`` stamps a sequence number, hands the message to the transport and,
  once the peer acknowledged it, records it in the party's egress ledger (if
  any): a send that fails leaves no line;
* ``recv`` takes the next message, drops duplicates (a retry re-sends the same
  sequence number), records it in the ingress ledger, then checks that its type
  is one the caller expects and validates it against its registered schema
  before returning it. Recording before the checks puts a refused message on
  record too: it did cross the wire. Recording here rather than in a transport's
  receive path keeps one place for both transports and for the duplicate rule;
  a message the peer acknowledged but this side never took (its job ended
  first) is therefore absent from the ingress ledger, which an audit shows;
* byte counters per direction, for the stats every job reports.
"""

from __future__ import annotations

import abc
from concurrent.futures import ThreadPoolExecutor
from typing import Iterable

from fedacq.link.ledger import PartyLedger, message_bytes, payload_digest
from fedacq.link.message import Message, MessageError, spec_for


#: payloads from this size on are hashed for the egress ledger while they are being sent.
_HASH_ALONGSIDE_BYTES = 8 * 1024 * 1024


class LinkError(RuntimeError):
    """The link itself failed: peer gone, timed out, closed."""


class LinkTimeout(LinkError):
    """No message arrived within the timeout."""


class Link(abc.ABC):
    """Send typed messages to one peer and receive expected ones from it."""

    def __init__(self, party: str, peer: str, job: str = "",
                 ledger: PartyLedger | None = None) -> None:
        self.party = party
        self.peer = peer
        self.job = job
        self.ledger = ledger
        self.bytes_sent = 0
        self.bytes_received = 0
        self.messages_sent = 0
        self.messages_received = 0
        self._next_seq = 0
        self._last_seq_seen = -1

    # -- transport hooks -------------------------------------------------
    @abc.abstractmethod
    def _transmit(self, seq: int, msg: Message) -> None:
        """Deliver ``msg`` with sequence number ``seq`` to the peer."""

    @abc.abstractmethod
    def _receive(self, timeout: float | None) -> tuple[int, Message]:
        """Block for the next (seq, message) from the peer; raise LinkTimeout."""

    def close(self) -> None:
        """Release transport resources (no-op by default)."""

    # -- protocol-facing API ----------------------------------------------
    def send(self, msg: Message) -> None:
        """Validate ``msg`` against its schema, send it and, once acknowledged, record it."""
        spec_for(msg.type).validate(msg)
        seq = self._next_seq
        self._next_seq += 1
        nbytes = message_bytes(msg)
        if self.ledger is None:
            self._transmit(seq, msg)
        elif nbytes < _HASH_ALONGSIDE_BYTES:
            self._transmit(seq, msg)
            self.ledger.record_sent(self.job, seq, self.peer, msg)
        else:
            # Hashing a large payload for the ledger costs as much as sending it; hashlib
            # releases the GIL, so do both at once. The line is written only after the ack.
            with ThreadPoolExecutor(1, thread_name_prefix="fedacq-ledger") as pool:
                digest = pool.submit(payload_digest, msg)
                self._transmit(seq, msg)
                self.ledger.record_sent(self.job, seq, self.peer, msg, digest.result())
        self.bytes_sent += nbytes
        self.messages_sent += 1

    def recv(self, expected: str | Iterable[str], timeout: float | None = 600.0) -> Message:
        """Return the next message, which must be of an ``expected`` type and valid.

        Raises :class:`MessageError` (message refused) or :class:`LinkError`.
        """
        wanted = {expected} if isinstance(expected, str) else set(expected)
        while True:
            seq, msg = self._receive(timeout)
            if seq <= self._last_seq_seen:
                continue  # a retried duplicate: already delivered once
            self._last_seq_seen = seq
            break
        if self.ledger is not None:
            self.ledger.record_received(self.job, seq, self.peer, msg)
        if msg.type not in wanted:
            raise MessageError(
                f"{self.party} expected {sorted(wanted)} from {self.peer}, got {msg.type!r}")
        spec_for(msg.type).validate(msg)
        self.bytes_received += message_bytes(msg)
        self.messages_received += 1
        return msg

    def stats(self) -> dict[str, int]:
        return {"bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
                "messages_sent": self.messages_sent, "messages_received": self.messages_received}

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PassThroughLink(Link):
    """A job's own view of another link: every message goes through ``link`` unchanged
    (its sequence numbers, ledgers and checks), and a job-side hook sees each one on
    the way out (:meth:`_outgoing`, before it is sent) and in (:meth:`_incoming`).

    Why a wrapper and not a transport: protocol code keeps talking to "a link", while
    a node job watches or commits what crosses without the protocol knowing.
    """

    def __init__(self, link: Link) -> None:
        super().__init__(link.party, link.peer, link.job)
        self._link = link

    def _transmit(self, seq: int, msg: Message) -> None:  # pragma: no cover - send is delegated
        raise NotImplementedError

    def _receive(self, timeout: float | None) -> tuple[int, Message]:  # pragma: no cover - recv is delegated
        raise NotImplementedError

    def _outgoing(self, msg: Message) -> None:
        """Called with each message before it is sent (no-op by default)."""

    def _incoming(self, msg: Message) -> None:
        """Called with each message received and checked (no-op by default)."""

    def send(self, msg: Message) -> None:
        self._outgoing(msg)
        self._link.send(msg)

    def recv(self, expected: str | Iterable[str], timeout: float | None = 600.0) -> Message:
        msg = self._link.recv(expected, timeout)
        self._incoming(msg)
        return msg

    def stats(self) -> dict[str, int]:
        return self._link.stats()


__all__ = ["Link", "LinkError", "LinkTimeout", "MessageError", "PassThroughLink"]
