"""The gRPC transport of :class:`~fedacq.link.link.Link`, with mutual TLS.

Each node runs one :class:`PeerEndpoint`: a ``PartyLink`` server (see
``protocols/fedacq.proto``) that its one configured peer sends to, and a client
channel to that peer's server. Both directions are mutual TLS; a connection is
accepted only from a certificate naming the configured peer, and the client
only talks to a server whose certificate names it (see :mod:`fedacq.crypto.tls`).
There is no insecure channel anywhere in fedacq.

Sending is one call per message (a unary ``Deliver`` when the message fits in
one frame, a client-streaming ``DeliverStream`` otherwise), acknowledged only
after the receiving side has checked and queued it. So a refused message
(unknown type, over a size limit, malformed) raises on the *sender* with the
receiver's reason, and nothing reaches the receiving protocol. Received
messages go into a per-job inbox; :class:`GrpcLink` reads it. Sends are retried
with the same sequence number while the peer is briefly unavailable; the
receiving link drops the duplicate if a retry follows a lost acknowledgement.

While a link waits for a message it pings the peer every ``liveness_interval``
seconds, so a killed peer (or one that no longer runs the job) is reported as a
:class:`~fedacq.link.link.LinkError` long before the receive timeout; a peer
killed in the middle of a streamed message is reported at once.

What a peer can make a node hold is bounded: calls in progress
(``max_concurrent_rpcs``; more are refused by gRPC with RESOURCE_EXHAUSTED), and
per job the messages queued or arriving and their declared payload bytes (see
:class:`JobInbox`; a message over the budget is refused with RESOURCE_EXHAUSTED
and nothing is queued). A sender treats RESOURCE_EXHAUSTED as back-pressure and
re-sends after a pause until its send timeout: two protocol sides that both send
more than the other's budget before reading would wait on each other, so the
budgets are sized above what fedacq's protocols queue ahead (PSI queues its
largest run ahead: a few hundred 2 MiB messages).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent import futures
from typing import Any, Callable, Iterator, NamedTuple

import grpc

from fedacq.crypto.tls import TlsFiles, channel_credentials, peer_common_name, server_credentials
from fedacq.link import codec
from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link._pb import fedacq_pb2_grpc as pb_grpc
from fedacq.link.ledger import PartyLedger
from fedacq.link.link import Link, LinkError, LinkTimeout
from fedacq.link.message import Message, MessageError

#: gRPC's own per-message limits, set explicitly: one frame, never a whole payload.
MAX_FRAME_BYTES = codec.CHUNK_SIZE + codec.MAX_ENVELOPE_BYTES
#: defaults of the resource bounds (see the module docstring); a node may lower them.
MAX_INBOX_MESSAGES = 4096
MAX_JOB_BYTES = codec.MAX_MESSAGE_BYTES
MAX_CONCURRENT_RPCS = 16

_OPTIONS = [
    ("grpc.max_send_message_length", MAX_FRAME_BYTES),
    ("grpc.max_receive_message_length", MAX_FRAME_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.http2.max_pings_without_data", 0),
    # a restarted peer is back within seconds; do not let gRPC back off for minutes
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]
_SERVER_OPTIONS = _OPTIONS + [
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.so_reuseport", 0),
]

log = logging.getLogger(__name__)

ProposeHandler = Callable[[str], tuple[bool, str]]
Item = tuple[int, Message] | LinkError


class _Queued(NamedTuple):
    seq: int
    msg: Message
    nbytes: int


class JobInbox(queue.Queue):
    """One job's inbox, bounded in messages and in payload bytes, queued or still arriving.

    The server reserves room for a message (its declared payload size) when the
    envelope arrives, before any payload, and refuses the message when the job's
    budget is spent. The reservation ends when the protocol takes the message
    (:meth:`get`) or when the message fails on its way in (:meth:`cancel`). So the
    memory a peer can make one job hold is ``max_bytes`` at most.
    """

    def __init__(self, max_messages: int = MAX_INBOX_MESSAGES, max_bytes: int = MAX_JOB_BYTES) -> None:
        super().__init__()
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.reserved_messages = 0
        self.reserved_bytes = 0

    def reserve(self, nbytes: int) -> str:
        """Room for one message of ``nbytes``: '' if reserved, else why not."""
        with self.mutex:
            if self.reserved_messages >= self.max_messages:
                return f"job inbox full: {self.reserved_messages} messages queued or arriving " \
                       f"(limit {self.max_messages})"
            if self.reserved_bytes + nbytes > self.max_bytes:
                return f"job inbox full: {self.reserved_bytes} bytes queued or arriving, " \
                       f"{nbytes} more would pass the limit of {self.max_bytes}"
            self.reserved_messages += 1
            self.reserved_bytes += nbytes
            return ""

    def cancel(self, nbytes: int) -> None:
        """Give back a reservation whose message never arrived whole."""
        with self.mutex:
            self.reserved_messages -= 1
            self.reserved_bytes -= nbytes

    def deliver(self, seq: int, msg: Message, nbytes: int) -> None:
        """Queue a message for which :meth:`reserve` returned ''."""
        self.put(_Queued(seq, msg, nbytes))

    def _get(self) -> Item:  # called by Queue.get with self.mutex held
        item = self.queue.popleft()
        if isinstance(item, _Queued):
            self.reserved_messages -= 1
            self.reserved_bytes -= item.nbytes
            return item.seq, item.msg
        return item


class Router:
    """Per-job inboxes: the server puts received messages in, links take them out."""

    def __init__(self, max_inbox_messages: int = MAX_INBOX_MESSAGES, max_job_bytes: int = MAX_JOB_BYTES) -> None:
        self._inboxes: dict[str, JobInbox] = {}
        self._lock = threading.Lock()
        self.max_inbox_messages, self.max_job_bytes = max_inbox_messages, max_job_bytes

    def open(self, job: str) -> JobInbox:
        with self._lock:
            if job in self._inboxes:
                raise ValueError(f"job {job!r} already has an open link")
            self._inboxes[job] = JobInbox(self.max_inbox_messages, self.max_job_bytes)
            return self._inboxes[job]

    def close(self, job: str) -> None:
        with self._lock:
            self._inboxes.pop(job, None)

    def get(self, job: str) -> JobInbox | None:
        with self._lock:
            return self._inboxes.get(job)


class LinkServicer(pb_grpc.PartyLinkServicer):
    """Accepts messages and job proposals from the one configured peer."""

    def __init__(self, party: str, peer: str, router: Router,
                 on_propose: ProposeHandler | None = None,
                 max_message_bytes: int = codec.MAX_MESSAGE_BYTES,
                 logger: logging.Logger | None = None) -> None:
        self.party, self.peer, self.router = party, peer, router
        self.on_propose = on_propose
        self.max_message_bytes = max_message_bytes
        self.log = logger or log

    def _authorize(self, context: grpc.ServicerContext) -> None:
        name = peer_common_name(context)
        if name != self.peer:
            self.log.warning("refused a connection from certificate %r (only %r is accepted)", name, self.peer)
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{self.party} accepts only its peer {self.peer!r}; "
                          f"the client certificate names {name!r}")

    def _start(self, frame: codec.WireFrame, context: grpc.ServicerContext) -> tuple[codec.Assembler, JobInbox]:
        """Check the envelope and reserve room for the message in its job's inbox."""
        if frame.error:
            self._refuse(context, frame.error)
        if frame.envelope is None:
            self._refuse(context, "the first frame of a message carries no envelope")
        env = frame.envelope
        if env.sender != self.peer:
            context.abort(grpc.StatusCode.PERMISSION_DENIED,
                          f"{self.party} refused a message claiming sender {env.sender!r}")
        inbox = self.router.get(env.job)
        if inbox is None:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                          f"{self.party} has no running job {env.job!r} (message {env.type!r}, seq {env.seq})")
        try:
            asm = codec.Assembler(env, self.max_message_bytes)
        except MessageError as exc:
            self._refuse(context, str(exc))
        full = inbox.reserve(asm.total)
        if full:
            self.log.warning("refused %s from %s: %s", asm.where, self.peer, full)
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, f"{self.party} refused {asm.where}: {full}")
        return asm, inbox

    def _refuse(self, context: grpc.ServicerContext, reason: str) -> None:
        self.log.warning("refused a message from %s: %s", self.peer, reason)
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.party} refused: {reason}")

    def _assemble(self, first: codec.WireFrame, rest: Iterator[codec.WireFrame],
                  context: grpc.ServicerContext) -> pb.Ack:
        """Receive one message; queue it whole and valid, or queue nothing and give its room back."""
        asm, inbox = self._start(first, context)
        queued = False
        try:
            try:
                asm.feed(first.data)
                for frame in rest:
                    if frame.error:
                        self._refuse(context, f"{asm.where}: {frame.error}")
                    if frame.envelope is not None:
                        self._refuse(context, f"{asm.where}: a second envelope inside the message")
                    asm.feed(frame.data)
            except MessageError as exc:
                self._refuse(context, str(exc))
            except grpc.RpcError:
                self._peer_went_away(asm, inbox)
                raise
            if not asm.complete and not context.is_active():
                # A cancelled stream can also just end: the sender is gone, not merely wrong.
                self._peer_went_away(asm, inbox)
                return pb.Ack(seq=asm.envelope.seq)
            try:
                msg = asm.finish()
            except MessageError as exc:
                self._refuse(context, str(exc))
            inbox.deliver(asm.envelope.seq, msg, asm.total)
            queued = True
            return pb.Ack(seq=asm.envelope.seq)
        finally:
            if not queued:
                inbox.cancel(asm.total)

    def Deliver(self, request: codec.WireFrame, context: grpc.ServicerContext) -> pb.Ack:
        self._authorize(context)
        return self._assemble(request, iter(()), context)

    def DeliverStream(self, request_iterator: Iterator[codec.WireFrame],
                      context: grpc.ServicerContext) -> pb.Ack:
        self._authorize(context)
        first = next(request_iterator, None)
        if first is None:
            self._refuse(context, "an empty message stream")
        return self._assemble(first, request_iterator, context)

    def _peer_went_away(self, asm: codec.Assembler, inbox: JobInbox) -> None:
        """The sender vanished mid-stream: tell the waiting protocol now, not at its timeout."""
        inbox.put(LinkError(f"{self.party}: peer {self.peer} went away in the middle of {asm.where} "
                            f"({asm.received} of {asm.total} bytes arrived)"))

    def ProposeJob(self, request: pb.JobDocument, context: grpc.ServicerContext) -> pb.JobDecision:
        self._authorize(context)
        if self.on_propose is None:
            return pb.JobDecision(accepted=False, reason=f"{self.party} does not take jobs")
        accepted, reason = self.on_propose(request.json)
        return pb.JobDecision(accepted=accepted, reason=reason)

    def Ping(self, request: pb.PingRequest, context: grpc.ServicerContext) -> pb.PingReply:
        self._authorize(context)
        return pb.PingReply(party=self.party, job_known=bool(request.job) and self.router.get(request.job) is not None)


class PeerClient:
    """The client half: a mutual-TLS channel to the peer's server, pinned to its name."""

    def __init__(self, party: str, peer: str, address: str, tls: TlsFiles) -> None:
        self.party, self.peer, self.address = party, peer, address
        options = _OPTIONS + [("grpc.ssl_target_name_override", peer)]
        self.channel = grpc.secure_channel(address, channel_credentials(tls), options=options)
        self.stub = pb_grpc.PartyLinkStub(self.channel)
        # Frames go out as the wire bytes codec.encode writes (no protobuf serialiser).
        self.deliver = self.channel.unary_unary("/fedacq.v1.PartyLink/Deliver",
                                                response_deserializer=pb.Ack.FromString)
        self.deliver_stream = self.channel.stream_unary("/fedacq.v1.PartyLink/DeliverStream",
                                                        response_deserializer=pb.Ack.FromString)

    def ping(self, job: str = "", timeout: float = 2.0) -> pb.PingReply:
        return self.stub.Ping(pb.PingRequest(job=job), timeout=timeout)

    def wait_ready(self, timeout: float) -> None:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise LinkError(f"{self.party}: peer {self.peer} at {self.address} not reachable "
                            f"within {timeout} s") from None

    def propose(self, job_json: str, timeout: float = 15.0) -> pb.JobDecision:
        """Offer a job to the peer, waiting up to ``timeout`` s for it to be reachable."""
        try:
            return self.stub.ProposeJob(pb.JobDocument(json=job_json), timeout=timeout, wait_for_ready=True)
        except grpc.RpcError as exc:
            raise LinkError(f"{self.party}: could not propose the job to {self.peer} at {self.address}: "
                            f"{exc.code().name}: {exc.details()}") from None

    def close(self) -> None:
        self.channel.close()


def _add_party_link(servicer: LinkServicer, server: grpc.Server) -> None:
    """Serve ``PartyLink`` as generated, except that frames are read with
    :func:`codec.read_frame`, which hands the payload over without copying it."""
    unary, stream = grpc.unary_unary_rpc_method_handler, grpc.stream_unary_rpc_method_handler
    handlers = {
        "Deliver": unary(servicer.Deliver, request_deserializer=codec.read_frame,
                         response_serializer=pb.Ack.SerializeToString),
        "DeliverStream": stream(servicer.DeliverStream, request_deserializer=codec.read_frame,
                                response_serializer=pb.Ack.SerializeToString),
        "ProposeJob": unary(servicer.ProposeJob, request_deserializer=pb.JobDocument.FromString,
                            response_serializer=pb.JobDecision.SerializeToString),
        "Ping": unary(servicer.Ping, request_deserializer=pb.PingRequest.FromString,
                      response_serializer=pb.PingReply.SerializeToString),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("fedacq.v1.PartyLink", handlers),))


class PeerServer:
    """The server half: serves ``PartyLink`` over mutual TLS on ``address``."""

    def __init__(self, servicer: LinkServicer, address: str, tls: TlsFiles, max_workers: int = 16,
                 max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS) -> None:
        # Calls beyond max_concurrent_rpcs are refused by gRPC at once (RESOURCE_EXHAUSTED),
        # not queued for a worker thread: a flooding peer cannot pile up streams.
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                             thread_name_prefix="fedacq-link"),
                                  options=_SERVER_OPTIONS, maximum_concurrent_rpcs=max_concurrent_rpcs)
        _add_party_link(servicer, self.server)
        self.port = self.server.add_secure_port(address, server_credentials(tls))
        if self.port == 0:
            raise LinkError(f"cannot listen on {address} (address in use?)")

    def start(self) -> None:
        self.server.start()

    def stop(self, grace: float | None = 1.0) -> None:
        self.server.stop(grace).wait()


class GrpcLink(Link):
    """A :class:`Link` for one job over a :class:`PeerClient` and the job's inbox."""

    def __init__(self, party: str, peer: str, job: str, client: PeerClient,
                 inbox: "queue.Queue[Item]", ledger: PartyLedger | None = None,
                 send_timeout: float = 600.0, retry_for: float = 10.0,
                 liveness_interval: float = 5.0, chunk_size: int = codec.CHUNK_SIZE) -> None:
        super().__init__(party, peer, job, ledger)
        self.client = client
        self._inbox = inbox
        self.send_timeout = send_timeout
        self.retry_for = retry_for
        self.liveness_interval = liveness_interval
        self.chunk_size = chunk_size

    def _transmit(self, seq: int, msg: Message) -> None:
        nbytes = codec.payload_bytes(msg)
        start = time.monotonic()
        # UNAVAILABLE: the peer is briefly away. RESOURCE_EXHAUSTED: its inbox for this job
        # (or its call limit) is full until its protocol reads: back-pressure, not failure.
        patience = {grpc.StatusCode.UNAVAILABLE: self.retry_for,
                    grpc.StatusCode.RESOURCE_EXHAUSTED: self.send_timeout}
        delay = 0.05
        while True:
            try:
                if nbytes <= self.chunk_size:
                    frame = next(codec.encode(msg, self.job, seq, self.party, self.chunk_size))
                    self.client.deliver(frame, timeout=self.send_timeout)
                else:
                    self.client.deliver_stream(codec.encode(msg, self.job, seq, self.party, self.chunk_size),
                                                   timeout=self.send_timeout)
                return
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                if code in patience and time.monotonic() + delay < start + patience[code]:
                    time.sleep(delay)
                    delay = min(delay * 2, 1.0)
                    continue
                where = f"{self.party} -> {self.peer} ({self.client.address}), job {self.job!r}, " \
                        f"message {msg.type!r} seq {seq}"
                if code == grpc.StatusCode.INVALID_ARGUMENT:
                    raise MessageError(f"{where}: {details}") from None
                raise LinkError(f"{where}: {code.name}: {details}") from None

    def _receive(self, timeout: float | None) -> tuple[int, Message]:
        end = None if timeout is None else time.monotonic() + timeout
        failures = 0
        while True:
            wait = self.liveness_interval if end is None else min(self.liveness_interval, end - time.monotonic())
            if wait <= 0:
                raise LinkTimeout(f"{self.party}: no message from {self.peer} within {timeout} s (job {self.job!r})")
            try:
                item = self._inbox.get(timeout=wait)
            except queue.Empty:
                failures = self._check_peer(failures)
                continue
            if isinstance(item, LinkError):
                raise item
            return item

    def _check_peer(self, failures: int) -> int:
        """Ping the peer; raise once it is clearly gone or no longer runs this job."""
        try:
            reply = self.client.ping(self.job, timeout=min(2.0, self.liveness_interval))
        except grpc.RpcError as exc:
            failures += 1
            if failures >= 2:
                raise LinkError(f"{self.party}: peer {self.peer} at {self.client.address} is unreachable "
                                f"while job {self.job!r} waits for it ({exc.code().name}: {exc.details()})") from None
            return failures
        if not reply.job_known:
            raise LinkError(f"{self.party}: peer {self.peer} is no longer running job {self.job!r} "
                            "(it failed, finished early or restarted)")
        return 0


class PeerEndpoint:
    """Server + client + inboxes for one party talking to one peer; makes per-job links.

    ``listen`` may use port 0 (see :attr:`port`); :meth:`connect` names the peer's
    address, which may only be known once the peer's own server is up.
    """

    def __init__(self, party: str, peer: str, tls: TlsFiles, listen: str,
                 on_propose: ProposeHandler | None = None, logger: logging.Logger | None = None,
                 max_message_bytes: int = codec.MAX_MESSAGE_BYTES, max_inbox_messages: int = MAX_INBOX_MESSAGES,
                 max_job_bytes: int = MAX_JOB_BYTES, max_concurrent_rpcs: int = MAX_CONCURRENT_RPCS,
                 **link_options: Any) -> None:
        self.party, self.peer, self.tls = party, peer, tls
        self.router = Router(max_inbox_messages, max_job_bytes)
        # a message larger than a job's whole budget could never be queued: refuse it as too big
        self.servicer = LinkServicer(party, peer, self.router, on_propose,
                                     min(max_message_bytes, max_job_bytes), logger)
        self.server = PeerServer(self.servicer, listen, tls, max_concurrent_rpcs=max_concurrent_rpcs)
        self.port = self.server.port
        self.client: PeerClient | None = None
        self.link_options = link_options

    def start(self) -> "PeerEndpoint":
        self.server.start()
        return self

    def connect(self, peer_address: str) -> PeerClient:
        self.client = PeerClient(self.party, self.peer, peer_address, self.tls)
        return self.client

    def link(self, job: str, ledger: PartyLedger | None = None) -> GrpcLink:
        """Open the inbox of ``job`` and return its link (close with :meth:`release`)."""
        if self.client is None:
            raise LinkError(f"{self.party}: connect() to {self.peer} before opening a link")
        inbox = self.router.open(job)
        return GrpcLink(self.party, self.peer, job, self.client, inbox, ledger, **self.link_options)

    def release(self, job: str) -> None:
        self.router.close(job)

    def stop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.server.stop()
