"""The gRPC link in one process: mutual TLS identities, refusals, duplicates, dead peers."""

from __future__ import annotations

import queue
import time

import grpc
import numpy as np
import pytest

from fedacq.crypto.tls import init_certs
from fedacq.link import codec
from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link.grpc_link import PeerClient, PeerEndpoint
from fedacq.link.ledger import PartyLedger
from fedacq.link.link import LinkError, LinkTimeout
from fedacq.link.message import BigInts, Message, MessageError, MessageSpec, PartSpec, register

register(
    MessageSpec("test.grpc", optional_header={"i": int},
                parts={"x": PartSpec(dtypes=("float64",), optional=True),
                       "c": PartSpec(kind="bigints", optional=True),
                       "small": PartSpec(max_bytes=100, optional=True)}),
)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    root = tmp_path_factory.mktemp("certs")
    files = init_certs(["lender", "platform", "mallory"], root / "ca1")
    files["other-ca"] = init_certs(["platform"], root / "ca2")["platform"]
    return files


@pytest.fixture
def pair(certs):
    a = PeerEndpoint("lender", "platform", certs["lender"], "127.0.0.1:0", liveness_interval=0.5, retry_for=1.0)
    b = PeerEndpoint("platform", "lender", certs["platform"], "127.0.0.1:0", liveness_interval=0.5, retry_for=1.0)
    a.connect(f"127.0.0.1:{b.port}")
    b.connect(f"127.0.0.1:{a.port}")
    a.start(), b.start()
    yield a, b
    a.stop(), b.stop()


def test_messages_cross_both_ways_and_are_ledgered(pair, tmp_path) -> None:
    a, b = pair
    ledger = PartyLedger(tmp_path, "lender")
    la, lb = a.link("j", ledger), b.link("j")
    x = np.random.default_rng(0).standard_normal(300_000)  # 2.4 MB: streamed in chunks
    c = BigInts([2 ** 2047 + i for i in range(50)], 256)
    la.send(Message("test.grpc", {"i": 1}, {"x": x, "c": c}, step="s1"))
    got = lb.recv("test.grpc", timeout=10)
    assert np.array_equal(got.parts["x"], x) and got.parts["c"] == c and got.header == {"i": 1}
    lb.send(Message("test.grpc", {"i": 2}, {"x": got.parts["x"][:10]}))
    assert la.recv("test.grpc", timeout=10).header == {"i": 2}
    (entry,) = list(ledger.egress.entries())
    assert entry["type"] == "test.grpc" and entry["job"] == "j" and entry["bytes"] > x.nbytes
    assert la.stats()["bytes_sent"] == lb.stats()["bytes_received"]


def test_duplicate_sequence_number_is_dropped(pair) -> None:
    a, b = pair
    la, lb = a.link("j"), b.link("j")
    msg = Message("test.grpc", {"i": 1})
    la._transmit(0, msg)  # a retry after a lost acknowledgement re-sends the same seq
    la._transmit(0, msg)
    la._transmit(1, Message("test.grpc", {"i": 2}))
    assert lb.recv("test.grpc", timeout=5).header == {"i": 1}
    assert lb.recv("test.grpc", timeout=5).header == {"i": 2}


def test_wrong_certificate_is_refused(pair, certs) -> None:
    a, b = pair
    b.link("j")
    mallory = PeerClient("mallory", "platform", f"127.0.0.1:{b.port}", certs["mallory"])
    with pytest.raises(grpc.RpcError) as err:
        mallory.ping("j")
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED and "'mallory'" in err.value.details()
    # a certificate from another CA does not even complete the handshake
    stranger = PeerClient("platform", "lender", f"127.0.0.1:{a.port}", certs["other-ca"])
    with pytest.raises(grpc.RpcError) as err:
        stranger.ping("j", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    # the lender will not talk to a server whose certificate names someone else
    wrong_server = PeerClient("lender", "mallory", f"127.0.0.1:{b.port}", certs["lender"])
    with pytest.raises(grpc.RpcError) as err:
        wrong_server.ping("j", timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    for client in (mallory, stranger, wrong_server):
        client.close()


def raw_frame(env_kw: dict, data: bytes = b"", header: bytes = b"{}") -> pb.Frame:
    env = pb.Envelope(job="j", type="test.grpc", seq=0, header=header, sender="lender")
    for p in env_kw.pop("parts", []):
        env.parts.add(**p)
    for key, value in env_kw.items():
        setattr(env, key, value)
    return pb.Frame(envelope=env, data=data)


@pytest.mark.parametrize("frame, reason", [
    (raw_frame({"type": "evil.type"}), "unknown message type 'evil.type'"),
    (raw_frame({"parts": [{"name": "small", "kind": "ndarray", "dtype": "uint8", "shape": [500],
                           "nbytes": 500}]}, b"\0" * 500), "over its limit of 100"),
    (raw_frame({"parts": [{"name": "x", "kind": "ndarray", "dtype": "float64", "shape": [2],
                           "nbytes": 16}]}, b"\0" * 7), "more payload|ended after"),
    (raw_frame({}, header=b"\xff\xfe"), "not valid JSON"),
])
def test_bad_messages_are_refused_with_no_state_change(pair, frame: pb.Frame, reason: str) -> None:
    a, b = pair
    a.link("j")
    lb = b.link("j")
    with pytest.raises(grpc.RpcError) as err:
        a.client.stub.Deliver(frame, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("platform refused")
    assert __import__("re").search(reason, err.value.details())
    with pytest.raises(LinkTimeout):
        lb.recv("test.grpc", timeout=0.2)  # nothing reached the protocol


def test_sender_gets_the_refusal_as_message_error(pair) -> None:
    a, b = pair
    la, _ = a.link("j"), b.link("j")
    # the receiving side registered a tighter limit than this sender believes: simulate by skipping
    # the sender's own validation and sending an oversized part directly
    with pytest.raises(MessageError, match="platform refused.*over its limit"):
        la._transmit(0, Message("test.grpc", parts={"small": np.zeros(1000, dtype=np.uint8)}))


def test_message_for_a_job_the_peer_does_not_run(pair) -> None:
    a, _ = pair
    la = a.link("only-here")
    with pytest.raises(LinkError, match="no running job 'only-here'"):
        la.send(Message("test.grpc", {"i": 1}))


def test_peer_dying_mid_stream_is_reported_at_once(pair) -> None:
    a, b = pair
    a.link("j")
    lb = b.link("j")
    msg = Message("test.grpc", parts={"x": np.zeros(1_000_000)})  # 8 MB, 8 frames

    def dies_after_two_frames():
        for i, frame in enumerate(codec.encode(msg, "j", 0, "lender")):
            if i == 2:
                # die the way a killed node does: its server and channel go away (an
                # exception in the request iterator alone can end the stream cleanly, which
                # is a truncated message, refused as such). Wait until the receiver holds
                # room for this message, so that there is a message in flight to report.
                inbox = b.router.get("j")
                deadline = time.monotonic() + 60
                while inbox.reserved_bytes == 0:
                    assert time.monotonic() < deadline, "the receiver never started reading the message"
                    time.sleep(0.01)
                a.stop()
                raise ConnectionError("sender crashed")
            yield frame

    with pytest.raises(Exception):
        a.client.deliver_stream(dies_after_two_frames(), timeout=5)
    # the fast path names the message; failing that, the liveness ping finds the peer gone. Either
    # error means the loss was noticed: a receive that waited out its timeout says "no message ... within".
    with pytest.raises(LinkError, match="went away in the middle of message 'test.grpc'|unreachable"):
        lb.recv("test.grpc", timeout=120)


def test_dead_peer_is_reported_before_the_timeout(certs) -> None:
    a = PeerEndpoint("lender", "platform", certs["lender"], "127.0.0.1:0", liveness_interval=0.3, retry_for=0.5)
    b = PeerEndpoint("platform", "lender", certs["platform"], "127.0.0.1:0")
    a.connect(f"127.0.0.1:{b.port}")
    b.connect(f"127.0.0.1:{a.port}")
    a.start(), b.start()
    la = a.link("j")
    b.link("j")
    b.stop()  # the peer goes away while the lender waits
    with pytest.raises(LinkError, match="unreachable"):  # not LinkTimeout: the ping noticed
        la.recv("test.grpc", timeout=120)
    with pytest.raises(LinkError, match="UNAVAILABLE"):
        la.send(Message("test.grpc", {"i": 1}))
    a.stop()


def test_peer_that_forgot_the_job_is_reported(pair) -> None:
    a, b = pair
    la = a.link("j")
    b.link("j")
    b.release("j")  # e.g. the peer's side of the job failed
    with pytest.raises(LinkError, match="no longer running job 'j'"):
        la.recv("test.grpc", timeout=30)


def test_an_open_job_cannot_be_opened_twice(pair) -> None:
    a, _ = pair
    a.link("j")
    with pytest.raises(ValueError, match="already has an open link"):
        a.link("j")
    assert isinstance(a.router.get("j"), queue.Queue)
