"""Message <-> wire frames: the envelope, the payload layout, chunking and limits.

A :class:`~fedacq.link.message.Message` leaves as a sequence of protobuf
``Frame`` values (see ``protocols/fedacq.proto``). The first frame carries the
envelope: job, step, type, sequence number, canonical JSON header and, for every
part, its kind, dtype, shape, width and byte count. The payload is the parts' raw
bytes back to back (arrays little-endian C order, big integers fixed-width
big-endian), cut into ``chunk_size`` slices.

The receiving side is an :class:`Assembler`. It checks the envelope *before* it
allocates or reads any payload — the type must be registered, the header must
parse within its caps and match the schema, the declared parts must match the
type's schema (dtype, dimensions, big-integer width) and fit its size limits —
so an oversized or malformed message is refused early and never becomes state.
Payload memory is allocated as bytes arrive, never from a declared size. When
the last byte has arrived it rebuilds the message (array parts are views of one
buffer, big integers keep their bytes; no extra copy) and validates it against
its schema once more.

Whatever bytes arrive, the only exception that leaves :func:`read_frame`'s
caller, :class:`Assembler` or :func:`decode` is a
:class:`~fedacq.link.message.MessageError` naming the message and the part:
every cause of another one (parser recursion, Python's int-from-text limit,
numpy's 64-dimension limit, a huge protobuf) is capped before it can occur, and
``benchmarks/fuzz.py`` checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from google.protobuf.message import DecodeError

from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link.message import (ALLOWED_DTYPES, MAX_HEADER_BYTES, MAX_NDIM, BigInts, Message, MessageError,
                                 PartSpec, header_bytes, parse_header, spec_for)

_ENVELOPE_TAG = (1 << 3) | 2   # Frame.envelope, length-delimited
_DATA_TAG = (2 << 3) | 2       # Frame.data, length-delimited
#: payload bytes per frame; a message at most this big travels in one unary call.
CHUNK_SIZE = 1024 * 1024
#: upper bound of one message's payload on a link (a spec's per-part limits still apply).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024 * 1024
#: caps on the envelope's own fields, checked on its wire bytes before protobuf parses it:
#: job, step, type and sender names; parts per message; one part's encoded layout.
MAX_NAME_BYTES = 256
MAX_PARTS = 16
MAX_LAYOUT_BYTES = 256
#: room for the envelope on top of a chunk; used to size gRPC's own message limits.
MAX_ENVELOPE_BYTES = MAX_HEADER_BYTES + 64 * 1024
#: Envelope field number -> (name, wire type, byte limit for length-delimited fields).
_ENVELOPE_FIELDS = {1: ("job", 2, MAX_NAME_BYTES), 2: ("step", 2, MAX_NAME_BYTES),
                    3: ("type", 2, MAX_NAME_BYTES), 4: ("seq", 0, 0), 5: ("header", 2, MAX_HEADER_BYTES),
                    6: ("parts", 2, MAX_LAYOUT_BYTES), 7: ("sender", 2, MAX_NAME_BYTES)}


def _raw(part: np.ndarray | BigInts) -> memoryview:
    """The part's wire bytes, without copying a C-contiguous little-endian array."""
    if isinstance(part, BigInts):
        return part.buffer()
    arr = part
    if arr.dtype.byteorder == ">":
        arr = arr.astype(arr.dtype.newbyteorder("<"))
    arr = np.ascontiguousarray(arr)
    return memoryview(arr.reshape(-1)).cast("B")


def envelope_for(msg: Message, job: str, seq: int, sender: str) -> tuple[pb.Envelope, list[memoryview]]:
    """The envelope of ``msg`` and the raw bytes of each of its parts, in envelope order."""
    env = pb.Envelope(job=job, step=msg.step, type=msg.type, seq=seq,
                      header=header_bytes(msg.header), sender=sender)
    raws: list[memoryview] = []
    for name, part in msg.parts.items():
        raw = _raw(part)
        if isinstance(part, BigInts):
            env.parts.add(name=name, kind="bigints", width=part.width, nbytes=raw.nbytes)
        else:
            env.parts.add(name=name, kind="ndarray", dtype=part.dtype.name, shape=list(part.shape),
                          nbytes=raw.nbytes)
        raws.append(raw)
    return env, raws


def encode(msg: Message, job: str, seq: int, sender: str,
           chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    """Wire bytes of the frames of ``msg``: the envelope with the first slice, then one slice each.

    Frames are written directly in the protobuf encoding of ``Frame`` (the mirror of
    :func:`read_frame`), so each payload byte is copied once on its way out instead of
    into a bytes object, a protobuf message and its serialisation in turn.
    """
    env, raws = envelope_for(msg, job, seq, sender)
    head = env.SerializeToString()
    pending: list[memoryview] = []
    size = 0
    first = True
    for raw in raws:
        pos = 0
        while pos < raw.nbytes:
            take = min(chunk_size - size, raw.nbytes - pos)
            pending.append(raw[pos:pos + take])
            size += take
            pos += take
            if size == chunk_size:
                yield _frame_bytes(head if first else None, pending, size)
                first, pending, size = False, [], 0
    if pending or first:
        yield _frame_bytes(head if first else None, pending, size)


def _frame_bytes(envelope: bytes | None, pieces: list[memoryview], size: int) -> bytes:
    out = [] if envelope is None else [bytes([_ENVELOPE_TAG]), _varint_bytes(len(envelope)), envelope]
    return b"".join([*out, bytes([_DATA_TAG]), _varint_bytes(size), *pieces])


def _varint_bytes(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def payload_bytes(msg: Message) -> int:
    """Bytes the payload of ``msg`` takes on the wire (parts only)."""
    return sum(p.nbytes for p in msg.parts.values())


class Assembler:
    """Rebuilds one message from its frames, refusing bad input as early as possible.

    The envelope is checked completely on construction: header (parsed within the
    caps of :func:`~fedacq.link.message.parse_header` and checked against the
    schema), every part's kind, dtype, dimensions, width and size. Nothing is
    allocated for the payload then: the buffer grows as bytes arrive, so an
    envelope that declares a large payload and sends none costs nothing. Growing
    a ``bytearray`` is cheaper than joining per-frame chunks at the end (large
    buffers grow in place, by ``mremap``; a join copies every byte once more and
    doubles the peak), and it over-allocates by at most an eighth.
    """

    def __init__(self, env: pb.Envelope, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.envelope = env
        where = f"message {env.type!r} (job {env.job!r}, seq {env.seq})"
        self.where = where
        spec = spec_for(env.type)  # unknown type: refused before anything is read
        if env.seq < 0:
            raise MessageError(f"{where}: negative sequence number")
        self.header = parse_header(env.header, where)
        spec.validate_header(self.header, where)
        names = [p.name for p in env.parts]
        if len(set(names)) != len(names):
            raise MessageError(f"{where}: a part name appears twice")
        unknown = set(names) - set(spec.parts)
        if unknown:
            raise MessageError(f"{where}: unexpected part(s) {sorted(unknown)}")
        missing = [n for n, p in spec.parts.items() if not p.optional and n not in names]
        if missing:
            raise MessageError(f"{where}: missing part(s) {missing}")
        total = 0
        for layout in env.parts:
            total += self._check_layout(layout, spec.parts[layout.name], max_message_bytes)
        if total > max_message_bytes:
            raise MessageError(f"{where}: payload is {total} bytes, over the link limit of {max_message_bytes}")
        self.total = total
        self.received = 0
        self._buffer = bytearray()

    def _check_layout(self, layout: pb.PartLayout, spec: PartSpec, max_message_bytes: int) -> int:
        """The part's byte count, once its declared layout is known to fit ``spec``."""
        name = f"{self.where}: part {layout.name!r}"
        if layout.kind != spec.kind:
            raise MessageError(f"{name} is declared {layout.kind!r}, the schema says {spec.kind!r}")
        limit = min(spec.max_bytes, max_message_bytes)
        if layout.nbytes < 0:
            raise MessageError(f"{name} declares a negative size")
        if layout.nbytes > limit:
            raise MessageError(f"{name} is {layout.nbytes} bytes, over its limit of {limit}")
        if spec.kind == "bigints":
            if layout.dtype or layout.shape:
                raise MessageError(f"{name} declares a dtype or shape for big integers")
            problem = spec.width_error(layout.width)
            if problem:
                raise MessageError(f"{name} {problem}")
            if layout.nbytes % layout.width:
                raise MessageError(f"{name}: {layout.nbytes} bytes is not a whole number of "
                                   f"{layout.width}-byte integers")
            return layout.nbytes
        if layout.width:
            raise MessageError(f"{name} declares a big-integer width for an array")
        if layout.dtype not in ALLOWED_DTYPES:
            raise MessageError(f"{name} has dtype {layout.dtype!r}, not allowed on the wire")
        if spec.dtypes and layout.dtype not in spec.dtypes:
            raise MessageError(f"{name} has dtype {layout.dtype}, expected one of {list(spec.dtypes)}")
        shape = list(layout.shape)
        if len(shape) > MAX_NDIM or (spec.ndim is not None and len(shape) != spec.ndim):
            expected = f"at most {MAX_NDIM}" if spec.ndim is None else str(spec.ndim)
            raise MessageError(f"{name} has {len(shape)} dimensions, expected {expected}")
        itemsize = np.dtype(layout.dtype).itemsize
        # Each dimension on its own must fit the limit, or (2**62, 0) would pass as empty.
        longest = limit // itemsize
        if any(not 0 <= d <= longest for d in shape):
            raise MessageError(f"{name} declares shape {shape}: every dimension must lie in 0..{longest} "
                               f"({limit} bytes of {layout.dtype})")
        expected_bytes = math.prod(shape) * itemsize
        if expected_bytes != layout.nbytes:
            raise MessageError(f"{name}: shape {shape} of {layout.dtype} needs {expected_bytes} "
                               f"bytes, the envelope declares {layout.nbytes}")
        return layout.nbytes

    def feed(self, data: bytes | memoryview) -> None:
        """Append the next slice of payload (refused if it runs past the declared size)."""
        end = self.received + len(data)
        if end > self.total:
            raise MessageError(f"{self.where}: more payload than the {self.total} bytes declared")
        self._buffer += data
        self.received = end

    @property
    def complete(self) -> bool:
        return self.received == self.total

    def finish(self) -> Message:
        """The validated message; raises if bytes are missing or it breaks its schema.

        Array parts are views of the buffer and big-integer parts keep their wire
        bytes (see :class:`~fedacq.link.message.BigInts`): nothing is copied here.
        """
        if not self.complete:
            raise MessageError(f"{self.where}: payload ended after {self.received} of {self.total} bytes")
        view = memoryview(self._buffer)
        parts: dict[str, np.ndarray | BigInts] = {}
        offset = 0
        for layout in self.envelope.parts:
            raw = view[offset:offset + layout.nbytes]
            offset += layout.nbytes
            if layout.kind == "bigints":
                parts[layout.name] = BigInts.from_bytes(raw, layout.width)
            else:
                dtype = np.dtype(layout.dtype).newbyteorder("<")
                parts[layout.name] = np.frombuffer(raw, dtype=dtype).reshape(tuple(layout.shape))
        msg = Message(type=self.envelope.type, header=self.header, parts=parts, step=self.envelope.step)
        spec_for(msg.type).validate(msg)
        return msg


@dataclass(frozen=True)
class WireFrame:
    """A ``Frame`` read off the wire: its envelope (if any), a zero-copy view of its data,
    or why it is malformed."""

    envelope: pb.Envelope | None
    data: memoryview
    error: str = ""




def read_frame(wire: bytes) -> WireFrame:
    """Parse the protobuf encoding of a ``Frame`` without copying its ``data`` field.

    Why not ``Frame.FromString``: upb copies a bytes field when it parses it and
    again on every access, and for large payloads those copies cost more than the
    transfer itself. A Frame has exactly two length-delimited fields; any other
    field, a field twice, or a truncated length is a malformed frame, returned as
    ``error`` so that the receiver refuses it with a clear message.
    """
    view = memoryview(wire)
    pos, end = 0, len(view)
    envelope: pb.Envelope | None = None
    data: memoryview | None = None
    try:
        while pos < end:
            tag, pos = _varint(view, pos)
            length, pos = _varint(view, pos)
            stop = pos + length
            if tag not in (_ENVELOPE_TAG, _DATA_TAG) or stop > end:
                raise ValueError(f"unexpected field tag {tag} or a length past the end")
            if tag == _ENVELOPE_TAG:
                if envelope is not None:
                    raise ValueError("the envelope field appears twice")
                _check_envelope_wire(view[pos:stop])
                envelope = pb.Envelope.FromString(view[pos:stop])
            else:
                if data is not None:
                    raise ValueError("the data field appears twice")
                data = view[pos:stop]
            pos = stop
    except (ValueError, DecodeError) as exc:
        return WireFrame(None, view[:0], f"malformed frame: {exc}")
    return WireFrame(envelope, view[:0] if data is None else data)


def _check_envelope_wire(view: memoryview) -> None:
    """Refuse an envelope whose fields break the caps, before protobuf builds objects for it.

    Only the fields of ``Envelope`` with their own wire types are allowed, each
    singular field once, at most ``MAX_PARTS`` parts, every field within its byte
    limit: so parsing it costs a bounded amount whatever the peer sends.
    """
    if view.nbytes > MAX_ENVELOPE_BYTES:
        raise ValueError(f"envelope is {view.nbytes} bytes, over the limit of {MAX_ENVELOPE_BYTES}")
    pos, seen, parts = 0, set(), 0
    while pos < view.nbytes:
        key, pos = _varint(view, pos)
        number, wire = key >> 3, key & 7
        name, expected_wire, limit = _ENVELOPE_FIELDS.get(number, ("", -1, 0))
        if wire != expected_wire:
            raise ValueError(f"envelope has an unexpected field {number} (wire type {wire})")
        if wire == 0:
            _, pos = _varint(view, pos)
        else:
            length, pos = _varint(view, pos)
            if length > limit:
                raise ValueError(f"envelope field {name} is {length} bytes, over its limit of {limit}")
            pos += length
            if pos > view.nbytes:
                raise ValueError(f"envelope field {name} runs past the end")
        if number == 6:
            parts += 1
            if parts > MAX_PARTS:
                raise ValueError(f"envelope has more than {MAX_PARTS} parts")
        elif number in seen:
            raise ValueError(f"envelope field {name} appears twice")
        seen.add(number)


def _varint(view: memoryview, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while shift < 64:
        if pos >= len(view):
            raise ValueError("truncated varint")
        byte = view[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise ValueError("varint longer than 10 bytes")


def decode(wire_frames: Iterable[bytes], max_message_bytes: int = MAX_MESSAGE_BYTES) -> Message:
    """Assemble one message from the wire bytes of its frames (the first carries the envelope)."""
    frames = (read_frame(w) for w in wire_frames)
    first = next(frames, None)
    if first is not None and first.error:
        raise MessageError(first.error)
    if first is None or first.envelope is None:
        raise MessageError("the first frame of a message carries no envelope")
    asm = Assembler(first.envelope, max_message_bytes)
    asm.feed(first.data)
    for frame in frames:
        if frame.error:
            raise MessageError(f"{asm.where}: {frame.error}")
        if frame.envelope is not None:
            raise MessageError(f"{asm.where}: a second envelope arrived inside the message")
        asm.feed(frame.data)
    return asm.finish()
