"""Message <-> frames: round trips, chunking, and refusal of malformed envelopes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedacq.link import codec
from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link.message import BigInts, Message, MessageError, MessageSpec, PartSpec, register

register(
    MessageSpec("test.codec", optional_header={"n": int, "tag": str},
                parts={"x": PartSpec(optional=True), "y": PartSpec(optional=True),
                       "c": PartSpec(kind="bigints", optional=True),
                       "small": PartSpec(max_bytes=1000, optional=True),
                       "big": PartSpec(max_bytes=2 ** 31, optional=True)}),
)


def roundtrip(msg: Message, chunk_size: int = codec.CHUNK_SIZE) -> Message:
    return codec.decode(codec.encode(msg, "job1", 7, "lender", chunk_size))


def same(a: Message, b: Message) -> bool:
    if (a.type, a.header, a.step, list(a.parts)) != (b.type, b.header, b.step, list(b.parts)):
        return False
    for name, part in a.parts.items():
        other = b.parts[name]
        if isinstance(part, BigInts):
            if part != other:
                return False
        elif part.dtype != other.dtype or part.shape != other.shape or not np.array_equal(part, other):
            return False
    return True


@settings(max_examples=60, deadline=None)
@given(dtype=st.sampled_from(["bool", "int8", "uint16", "int32", "int64", "uint64", "float32", "float64"]),
       shape=st.lists(st.integers(0, 7), min_size=0, max_size=3),
       n_big=st.integers(0, 20), width=st.integers(1, 40), chunk=st.integers(1, 300))
def test_roundtrip_any_layout_and_chunking(dtype: str, shape: list[int], n_big: int, width: int, chunk: int) -> None:
    rng = np.random.default_rng(len(shape) + n_big)
    x = (rng.random(shape) * 100).astype(dtype)
    c = BigInts([int(v) for v in rng.integers(0, 2 ** 8, n_big)], width)
    msg = Message("test.codec", {"n": 3, "tag": "é"}, {"x": x, "c": c, "y": np.arange(5.0)}, step="s/1")
    assert same(msg, roundtrip(msg, chunk))


def test_noncontiguous_and_big_endian_arrays_arrive_in_order() -> None:
    base = np.arange(24, dtype=np.int64).reshape(4, 6)
    msg = Message("test.codec", parts={"x": base[:, ::2], "y": np.arange(3, dtype=">f8").astype("<f8")})
    got = roundtrip(msg)
    assert np.array_equal(got.parts["x"], base[:, ::2])


def test_one_gigabyte_payload_streams_in_bounded_frames() -> None:
    big = np.ones(2 ** 27, dtype=np.float64)  # 1 GiB
    frames = codec.encode(Message("test.codec", parts={"big": big}), "j", 0, "lender")
    sizes = []

    def counted():
        for f in frames:
            sizes.append(len(codec.read_frame(f).data))
            yield f

    got = codec.decode(counted(), max_message_bytes=2 ** 31)
    assert got.parts["big"].shape == big.shape and got.parts["big"][-1] == 1.0
    assert max(sizes) == codec.CHUNK_SIZE and sum(sizes) == big.nbytes


def envelope(**kw) -> pb.Envelope:
    env = pb.Envelope(job="j", type="test.codec", seq=0, header=b"{}", sender="lender")
    for name, value in kw.items():
        if name == "parts":
            for p in value:
                env.parts.add(**p)
        else:
            setattr(env, name, value)
    return env


@pytest.mark.parametrize("env, data, reason", [
    (envelope(type="no.such.type"), b"", "unknown message type"),
    (envelope(parts=[{"name": "small", "kind": "ndarray", "dtype": "uint8", "shape": [5000], "nbytes": 5000}]),
     b"", "over its limit"),
    (envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "float64", "shape": [3], "nbytes": 16}]),
     b"\0" * 16, "needs 24 bytes"),
    (envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "object", "shape": [1], "nbytes": 8}]),
     b"\0" * 8, "not allowed"),
    (envelope(parts=[{"name": "c", "kind": "bigints", "width": 7, "nbytes": 10}]), b"\0" * 10, "whole number"),
    (envelope(parts=[{"name": "c", "kind": "ndarray", "dtype": "uint8", "shape": [1], "nbytes": 1}]),
     b"\0", "schema says"),
    (envelope(parts=[{"name": "zzz", "kind": "ndarray", "dtype": "uint8", "shape": [1], "nbytes": 1}]),
     b"\0", "unexpected part"),
    (envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "uint8", "shape": [4], "nbytes": 4}]),
     b"\0" * 3, "ended after 3 of 4"),
    (envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "uint8", "shape": [4], "nbytes": 4}]),
     b"\0" * 5, "more payload"),
    (envelope(header=b"{not json"), b"", "not valid JSON"),
    (envelope(header=b"[1]"), b"", "not a JSON object"),
    (envelope(header=b'{"n": "three"}'), b"", "header field 'n'"),
    (envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "float64", "shape": [1], "nbytes": 8}]),
     np.array([np.nan]).tobytes(), "NaN"),
])
def test_malformed_messages_are_refused(env: pb.Envelope, data: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        codec.decode([pb.Frame(envelope=env, data=data).SerializeToString()])


def test_link_limit_checked_before_allocating() -> None:
    env = envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "uint8", "shape": [2 ** 40],
                           "nbytes": 2 ** 40}])
    with pytest.raises(MessageError, match="over"):
        codec.Assembler(env)


def test_missing_or_repeated_envelope() -> None:
    with pytest.raises(MessageError, match="no envelope"):
        codec.decode([pb.Frame(data=b"x").SerializeToString()])
    env = envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "uint8", "shape": [2], "nbytes": 2}])
    with pytest.raises(MessageError, match="second envelope"):
        codec.decode([pb.Frame(envelope=env, data=b"a").SerializeToString(),
                      pb.Frame(envelope=env, data=b"b").SerializeToString()])


@pytest.mark.parametrize("wire, reason", [
    (b"\x1a\x01x", "unexpected field tag"),                     # field 3: not in Frame
    (b"\x12\x05ab", "past the end"),                             # data shorter than its length
    (b"\x12\x01a\x12\x01b", "data field appears twice"),
    (b"\x12" + b"\xff" * 11, "varint"),
    (b"\x0a\x02\xff\xff", "malformed frame"),                   # an envelope that is not one
])
def test_malformed_frames_are_refused(wire: bytes, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        codec.decode([wire])


def test_frame_reader_matches_protobuf() -> None:
    env = envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "uint8", "shape": [3], "nbytes": 3}])
    frame = codec.read_frame(pb.Frame(envelope=env, data=b"abc").SerializeToString())
    assert frame.envelope == env and bytes(frame.data) == b"abc" and not frame.error


def test_written_frames_are_protobuf_frames() -> None:
    """encode writes the Frame encoding by hand; protobuf must read it as the same frames."""
    msg = Message("test.codec", {"n": 3}, {"a": np.arange(300, dtype=np.int64), "b": BigInts([5, 7], 4)})
    frames = [pb.Frame.FromString(f) for f in codec.encode(msg, "job1", 7, "lender", chunk_size=1000)]
    assert frames[0].envelope.type == "test.codec" and frames[0].envelope.seq == 7
    assert not any(f.HasField("envelope") for f in frames[1:])
    assert b"".join(f.data for f in frames) == np.arange(300, dtype=np.int64).tobytes() + BigInts([5, 7], 4).to_bytes()


def test_received_big_integers_keep_their_wire_bytes() -> None:
    sent = BigInts([0, 1, 2 ** 63 + 5], 9)
    got = roundtrip(Message("test.codec", parts={"c": sent})).parts["c"]
    assert len(got) == 3 and got.nbytes == 27 and got.buffer() == sent.to_bytes() == got.to_bytes()
    assert got == sent and got.values == [0, 1, 2 ** 63 + 5]


@pytest.mark.parametrize("env, reason", [
    (envelope(header=b'{"n":"three"}'), "header field 'n'"),
    (envelope(header=b'{"zz":1}'), "unexpected header field"),
    (envelope(parts=[{"name": "x", "kind": "ndarray", "dtype": "uint8", "shape": [8], "nbytes": 8}] * 2),
     "appears twice"),
])
def test_envelope_is_refused_before_any_payload(env: pb.Envelope, reason: str) -> None:
    with pytest.raises(MessageError, match=reason):
        codec.Assembler(env)


def test_required_parts_are_checked_from_the_envelope() -> None:
    register(MessageSpec("test.codec.required", parts={"must": PartSpec()}))
    with pytest.raises(MessageError, match=r"missing part\(s\) \['must'\]"):
        codec.Assembler(envelope(type="test.codec.required"))
