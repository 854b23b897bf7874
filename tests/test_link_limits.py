"""What a peer's bytes can cost a node: decoder caps, lazy allocation, and gRPC resource bounds.

Each case below was observed before the caps existed: a RecursionError or ValueError
instead of a MessageError (seen by the peer as UNKNOWN), shape (2**62, 0) accepted,
256 MiB allocated for an envelope that sent nothing, a 16 MiB big-integer payload
costing +320 MiB, unbounded inboxes and calls.
"""

from __future__ import annotations

import threading
import time
import tracemalloc

import grpc
import numpy as np
import pytest

from fedacq.crypto.tls import init_certs
from fedacq.link import codec
from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link.grpc_link import PeerEndpoint
from fedacq.link.message import BigInts, Message, MessageError, MessageSpec, PartSpec, register, spec_for

register(
    MessageSpec("test.limits", optional_header={"i": int, "x": float, "a": list, "s": str},
                parts={"x": PartSpec(optional=True), "m": PartSpec(ndim=2, optional=True),
                       "c": PartSpec(kind="bigints", optional=True),
                       "w": PartSpec(kind="bigints", width=256, optional=True),
                       "n": PartSpec(kind="bigints", max_width=64, optional=True)}),
)
MiB = 1024 * 1024


def wire(header: bytes = b"{}", parts: list[dict] = (), data: bytes = b"", **env_fields) -> bytes:
    env = pb.Envelope(**{"job": "j", "type": "test.limits", "seq": 0, "header": header, "sender": "lender",
                         **env_fields})
    for p in parts:
        env.parts.add(**p)
    return pb.Frame(envelope=env, data=data).SerializeToString()


def array(name: str, shape: list[int], dtype: str = "uint8", nbytes: int | None = None) -> dict:
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize if nbytes is None else nbytes
    return {"name": name, "kind": "ndarray", "dtype": dtype, "shape": shape, "nbytes": size}


HOSTILE = [
    (wire(header=b"[" * 60_000), "nests deeper than 8"),
    (wire(header=b'{"a":' * 5000 + b"1" + b"}" * 5000), "nests deeper than 8"),
    (wire(header=b'{"i":' + b"9" * 5000 + b"}"), "outside int64"),
    (wire(header=b'{"i":9223372036854775808}'), "outside int64"),
    (wire(header=b'{"x":1e999}'), "overflows a float"),
    (wire(header=b'{"x":NaN}'), "NaN"),
    (wire(header=b'{"i":1,"i":2}'), "repeats a key"),
    (wire(header=b'{"s":"\\ud800"}'), "lone surrogate"),
    (wire(header='{"s":"é"}'.encode()), "not ASCII"),
    (wire(header=b'{"a":[' + b"1," * 5000 + b"1]}"), "more than 4096 JSON tokens"),
    (wire(header=b'{"a":[' + b"1e15," * 4000 + b"1]}"), "re-encoded"),
    (wire(parts=[array("x", [1] * 70)]), "70 dimensions"),
    (wire(parts=[array("x", [2 ** 62, 0], nbytes=0)]), r"shape \[4611686018427387904, 0\]"),
    (wire(parts=[array("x", [0, 2 ** 40], "float64", nbytes=0)]), "every dimension must lie in"),
    (wire(parts=[array("m", [3])]), "1 dimensions, expected 2"),
    (wire(parts=[{"name": "c", "kind": "bigints", "width": 5000, "nbytes": 5000}]), "width 5000, expected 1 to 2048"),
    (wire(parts=[{"name": "n", "kind": "bigints", "width": 65, "nbytes": 65}]), "expected 1 to 64"),
    (wire(parts=[{"name": "w", "kind": "bigints", "width": 128, "nbytes": 128}]), "width 128, expected 256"),
    (wire(parts=[{"name": "c", "kind": "bigints", "width": 0, "nbytes": 0}]), "width 0"),
    (wire(parts=[{"name": "c", "kind": "bigints", "width": 4, "nbytes": 4, "shape": [1]}]), "dtype or shape"),
    (wire(parts=[array("x", [1]) | {"width": 8}]), "width for an array"),
    (wire(parts=[array("x", [1])] * 20), "more than 16 parts"),
    (wire(parts=[array("x" * 300, [1])]), "field parts is"),
    (wire(job="j" * 300), "field job is 300 bytes"),
    (wire(seq=-1), "negative sequence number"),
    (wire(header=b"{}") + b"\x0a\x02\x38\x01", "envelope field appears twice"),
    (b"\x0a\x03\x40\x01\x00", "unexpected field 8"),
    (b"\x0a\x04\x2a\x00\x2a\x00", "envelope field header appears twice"),
]


@pytest.mark.parametrize("frame, reason", HOSTILE, ids=[reason for _, reason in HOSTILE])
def test_hostile_envelopes_are_message_errors(frame: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        codec.decode([frame])


def peak_of(fn) -> int:
    """Bytes tracemalloc saw allocated at the peak of ``fn()`` (tracing starts just before it)."""
    tracemalloc.start()
    try:
        fn()
    except MessageError:
        pass
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_a_declared_size_costs_nothing_until_bytes_arrive() -> None:
    env = codec.read_frame(wire(parts=[array("x", [256 * MiB])])).envelope
    asm = codec.Assembler(env)
    assert peak_of(lambda: asm.feed(b"abc")) < 64 * 1024
    assert peak_of(lambda: codec.decode([wire(parts=[array("x", [256 * MiB])], data=b"abc")])) < 64 * 1024


def test_payload_memory_follows_the_bytes_received() -> None:
    x = np.arange(2 * MiB, dtype=np.float64)  # 16 MiB in 1 MiB frames
    frames = list(codec.encode(Message("test.limits", parts={"x": x}), "j", 0, "lender"))
    half = frames[:len(frames) // 2]

    def feed_half() -> None:
        first = codec.read_frame(half[0])
        asm = codec.Assembler(first.envelope)
        for f in half:
            asm.feed(codec.read_frame(f).data)

    assert peak_of(feed_half) < 0.6 * x.nbytes                   # about half arrived, about half held
    assert peak_of(lambda: codec.decode(frames)) < 1.2 * x.nbytes  # the whole: one buffer, arrays are views


def test_big_integers_cost_their_size_until_the_protocol_reads_them() -> None:
    payload = bytes(range(256)) * (16 * MiB // 256)
    frames = list(codec.encode(Message("test.limits", parts={"c": BigInts.from_bytes(payload, 1)}), "j", 0, "l"))
    got: list[Message] = []
    assert peak_of(lambda: got.append(codec.decode(frames))) < 1.2 * len(payload)
    c = got[0].parts["c"]
    assert len(c) == len(payload) and c.nbytes == len(payload) and c.buffer() == payload
    small = codec.decode(codec.encode(Message("test.limits", parts={"c": BigInts([7, 2 ** 40], 8)}), "j", 0, "l"))
    assert small.parts["c"].values == [7, 2 ** 40] and small.parts["c"] == BigInts([7, 2 ** 40], 8)


def test_width_is_refused_from_the_envelope_before_any_payload() -> None:
    env = codec.read_frame(wire(parts=[{"name": "c", "kind": "bigints", "width": 4096, "nbytes": 4096 * 1000}])).envelope
    with pytest.raises(MessageError, match="part 'c' has width 4096"):
        codec.Assembler(env)


def test_the_sending_side_checks_the_same_bounds() -> None:
    spec = spec_for("test.limits")
    with pytest.raises(MessageError, match="has 9 dimensions, more than 8"):
        spec.validate(Message("test.limits", parts={"x": np.zeros([1] * 9)}))
    with pytest.raises(MessageError, match="part 'n' has width 65, expected 1 to 64"):
        spec.validate(Message("test.limits", parts={"n": BigInts([1], 65)}))


# -- over real gRPC ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return init_certs(["lender", "platform"], tmp_path_factory.mktemp("certs") / "ca")


def endpoints(certs, **limits):
    a = PeerEndpoint("lender", "platform", certs["lender"], "127.0.0.1:0", liveness_interval=0.5, retry_for=1.0)
    b = PeerEndpoint("platform", "lender", certs["platform"], "127.0.0.1:0", liveness_interval=0.5,
                     retry_for=1.0, **limits)
    a.connect(f"127.0.0.1:{b.port}")
    b.connect(f"127.0.0.1:{a.port}")
    a.start(), b.start()
    return a, b


@pytest.fixture
def limited(certs, request):
    a, b = endpoints(certs, **request.param)
    yield a, b
    a.stop(), b.stop()


def frame_of(i: int, nbytes: int = 0, chunk: int = codec.CHUNK_SIZE) -> list[bytes]:
    parts = {"x": np.zeros(nbytes, dtype=np.uint8)} if nbytes else {}
    return list(codec.encode(Message("test.limits", {"i": i}, parts), "j", i, "lender", chunk))


def wait_until(condition, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.parametrize("limited", [{}], indirect=True)
@pytest.mark.parametrize("frame, reason", [HOSTILE[i] for i in (0, 2, 11, 12, 15, 21, 26)],
                         ids=[HOSTILE[i][1] for i in (0, 2, 11, 12, 15, 21, 26)])
def test_peer_sees_hostile_envelopes_as_invalid_argument(limited, frame: bytes, reason: str) -> None:
    a, b = limited
    a.link("j")
    b.link("j")
    inbox = b.router.get("j")
    with pytest.raises(grpc.RpcError) as err:
        a.client.deliver(frame, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert __import__("re").search(reason, err.value.details())
    assert inbox.qsize() == 0 and inbox.reserved_messages == 0 and inbox.reserved_bytes == 0


@pytest.mark.parametrize("limited", [{"max_inbox_messages": 3}], indirect=True)
def test_a_flooding_sender_is_refused_and_nothing_is_queued(limited) -> None:
    a, b = limited
    a.link("j")
    lb = b.link("j")
    inbox = b.router.get("j")
    for i in range(3):
        a.client.deliver(frame_of(i)[0], timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        a.client.deliver(frame_of(3)[0], timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "job inbox full: 3 messages" in err.value.details() and inbox.qsize() == 3
    assert lb.recv("test.limits", timeout=5).header == {"i": 0}  # reading makes room again
    a.client.deliver(frame_of(3)[0], timeout=5)
    assert [lb.recv("test.limits", timeout=5).header["i"] for _ in range(3)] == [1, 2, 3]


@pytest.mark.parametrize("limited", [{"max_job_bytes": 1000}], indirect=True)
def test_bytes_queued_per_job_are_bounded(limited) -> None:
    a, b = limited
    a.link("j")
    lb = b.link("j")
    with pytest.raises(grpc.RpcError) as err:  # larger than the job's whole budget: never
        a.client.deliver(frame_of(0, 1001)[0], timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "over its limit of 1000" in err.value.details()
    a.client.deliver(frame_of(0, 800)[0], timeout=5)
    with pytest.raises(grpc.RpcError) as err:
        a.client.deliver(frame_of(1, 300)[0], timeout=5)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "800 bytes queued or arriving, 300 more" in err.value.details()
    assert lb.recv("test.limits", timeout=5).parts["x"].nbytes == 800
    a.client.deliver(frame_of(1, 300)[0], timeout=5)
    assert lb.recv("test.limits", timeout=5).header == {"i": 1}


@pytest.mark.parametrize("limited", [{"max_concurrent_rpcs": 2, "max_job_bytes": 1000}], indirect=True)
def test_calls_and_bytes_in_flight_are_bounded(limited) -> None:
    """Two streams arriving slowly hold their reservations; a third call is refused by gRPC."""
    a, b = limited
    a.link("j")
    b.link("j")
    inbox = b.router.get("j")
    go = threading.Event()

    def slow(frames):
        yield frames[0]
        go.wait(30)
        yield from frames[1:]

    calls = [a.client.deliver_stream.future(slow(frame_of(i, 400, chunk=100)), timeout=30) for i in range(2)]
    wait_until(lambda: inbox.reserved_messages == 2, "both streams to be reserved")
    assert inbox.reserved_bytes == 800 and inbox.qsize() == 0
    with pytest.raises(grpc.RpcError) as err:
        a.client.ping("j")
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    go.set()
    assert sorted(call.result().seq for call in calls) == [0, 1]
    assert sorted(inbox.get(timeout=5)[0] for _ in range(2)) == [0, 1]  # in either order
    assert inbox.reserved_messages == 0 and inbox.reserved_bytes == 0


@pytest.mark.parametrize("limited", [{"max_job_bytes": 1000}], indirect=True)
def test_a_stream_that_fails_gives_its_room_back(limited) -> None:
    a, b = limited
    a.link("j")
    b.link("j")
    inbox = b.router.get("j")
    frames = frame_of(0, 900, chunk=100)
    bad = frames[:3] + [frames[3][:-1] + b"\xff\xff"] + frames[4:]  # a malformed frame mid-stream
    with pytest.raises(grpc.RpcError) as err:
        a.client.deliver_stream(iter(bad), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert inbox.reserved_messages == 0 and inbox.reserved_bytes == 0 and inbox.qsize() == 0
    a.client.deliver_stream(iter(frames), timeout=5)  # the whole budget is free again
    assert inbox.qsize() == 1


@pytest.mark.parametrize("limited", [{"max_inbox_messages": 2}], indirect=True)
def test_an_honest_sender_waits_for_room(limited) -> None:
    """RESOURCE_EXHAUSTED is back-pressure to a GrpcLink: it re-sends until the peer reads."""
    a, b = limited
    la, lb = a.link("j"), b.link("j")
    sent = threading.Thread(target=lambda: [la.send(Message("test.limits", {"i": i})) for i in range(6)])
    sent.start()
    wait_until(lambda: b.router.get("j").qsize() == 2, "the inbox to fill")
    assert [lb.recv("test.limits", timeout=10).header["i"] for _ in range(6)] == list(range(6))
    sent.join(10)
    assert not sent.is_alive() and la.stats()["messages_sent"] == 6
