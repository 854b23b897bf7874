"""Message <-> wire frames: the envelope, the payload layout, chunking and limits.

A :class:`~fedacq.link.message.Message` leaves as a sequence of protobuf
``Frame`` values (see ``protocols/fedacq.proto``). The first frame carries the
envelope: job, step, type, sequence number, canonical JSON header and, for every
part, its kind, dtype, shape, width and byte count. The payload is the parts' raw
bytes back to back (arrays little-endian C order, big integers fixed-width
big-endian), cut into ``chunk_size`` slices.

The receiving side is an :class:`Assembler`. It checks the envelope *before* it
allocates or reads any payload — the type must be registered, the declared parts
must match the type's schema and fit its size limits — so an oversized or
malformed message is refused early and never becomes state. When the last byte
has arrived it rebuilds the message (array parts are views of one buffer, no
extra copy) and validates it against its schema once more. Every failure is a
:class:`~fedacq.link.message.MessageError` naming the message and the part.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
from google.protobuf.message import DecodeError

from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link.message import (ALLOWED_DTYPES, MAX_HEADER_BYTES, BigInts, Message, MessageError,
                                 header_bytes, spec_for)

_ENVELOPE_TAG = (1 << 3) | 2   # Frame.envelope, length-delimited
_DATA_TAG = (2 << 3) | 2       # Frame.data, length-delimited
#: payload bytes per frame; a message at most this big travels in one unary call.
CHUNK_SIZE = 1024 * 1024
#: upper bound of one message's payload on a link (a spec's per-part limits still apply).
MAX_MESSAGE_BYTES = 4 * 1024 * 1024 * 1024
#: room for the envelope on top of a chunk; used to size gRPC's own message limits.
MAX_ENVELOPE_BYTES = MAX_HEADER_BYTES + 64 * 1024


def _raw(part: np.ndarray | BigInts) -> memoryview:
    """The part's wire bytes, without copying a C-contiguous little-endian array."""
    if isinstance(part, BigInts):
        return memoryview(part.to_bytes())
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
    """Rebuilds one message from its frames, refusing bad input as early as possible."""

    def __init__(self, env: pb.Envelope, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self.envelope = env
        where = f"message {env.type!r} (job {env.job!r}, seq {env.seq})"
        self.where = where
        spec = spec_for(env.type)  # unknown type: refused before anything is read
        if len(env.header) > MAX_HEADER_BYTES:
            raise MessageError(f"{where}: header is {len(env.header)} bytes, over the limit of {MAX_HEADER_BYTES}")
        names = [p.name for p in env.parts]
        if len(set(names)) != len(names):
            raise MessageError(f"{where}: a part name appears twice")
        unknown = set(names) - set(spec.parts)
        if unknown:
            raise MessageError(f"{where}: unexpected part(s) {sorted(unknown)}")
        total = 0
        for layout in env.parts:
            part_spec = spec.parts[layout.name]
            self._check_layout(layout, part_spec.kind)
            if layout.nbytes > part_spec.max_bytes:
                raise MessageError(f"{where}: part {layout.name!r} is {layout.nbytes} bytes, "
                                   f"over its limit of {part_spec.max_bytes}")
            total += layout.nbytes
        if total > max_message_bytes:
            raise MessageError(f"{where}: payload is {total} bytes, over the link limit of {max_message_bytes}")
        self.total = total
        self.received = 0
        self._buffer = bytearray(total)
        self._view = memoryview(self._buffer)

    def _check_layout(self, layout: pb.PartLayout, kind: str) -> None:
        name = f"{self.where}: part {layout.name!r}"
        if layout.kind != kind:
            raise MessageError(f"{name} is declared {layout.kind!r}, the schema says {kind!r}")
        if layout.nbytes < 0:
            raise MessageError(f"{name} declares a negative size")
        if kind == "bigints":
            if layout.width <= 0 or layout.nbytes % layout.width:
                raise MessageError(f"{name}: {layout.nbytes} bytes is not a whole number of "
                                   f"{layout.width}-byte integers")
            return
        if layout.dtype not in ALLOWED_DTYPES:
            raise MessageError(f"{name} has dtype {layout.dtype!r}, not allowed on the wire")
        if any(d < 0 for d in layout.shape):
            raise MessageError(f"{name} declares a negative dimension {list(layout.shape)}")
        expected = math.prod(layout.shape) * np.dtype(layout.dtype).itemsize
        if expected != layout.nbytes:
            raise MessageError(f"{name}: shape {list(layout.shape)} of {layout.dtype} needs {expected} "
                               f"bytes, the envelope declares {layout.nbytes}")

    def feed(self, data: bytes | memoryview) -> None:
        end = self.received + len(data)
        if end > self.total:
            raise MessageError(f"{self.where}: more payload than the {self.total} bytes declared")
        self._view[self.received:end] = data
        self.received = end

    @property
    def complete(self) -> bool:
        return self.received == self.total

    def finish(self) -> Message:
        """The validated message; raises if bytes are missing or it breaks its schema."""
        if not self.complete:
            raise MessageError(f"{self.where}: payload ended after {self.received} of {self.total} bytes")
        try:
            header = json.loads(self.envelope.header.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MessageError(f"{self.where}: header is not valid JSON ({exc})") from None
        if not isinstance(header, dict):
            raise MessageError(f"{self.where}: header is not a JSON object")
        parts: dict[str, np.ndarray | BigInts] = {}
        offset = 0
        for layout in self.envelope.parts:
            raw = np.frombuffer(self._buffer, dtype=np.uint8, count=layout.nbytes, offset=offset)
            offset += layout.nbytes
            if layout.kind == "bigints":
                parts[layout.name] = BigInts.from_bytes(raw.tobytes(), layout.width)
            else:
                dtype = np.dtype(layout.dtype).newbyteorder("<")
                parts[layout.name] = raw.view(dtype).reshape(tuple(layout.shape))
        msg = Message(type=self.envelope.type, header=header, parts=parts, step=self.envelope.step)
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
                envelope = pb.Envelope.FromString(bytes(view[pos:stop]))
            else:
                if data is not None:
                    raise ValueError("the data field appears twice")
                data = view[pos:stop]
            pos = stop
    except (ValueError, DecodeError) as exc:
        return WireFrame(None, view[:0], f"malformed frame: {exc}")
    return WireFrame(envelope, view[:0] if data is None else data)


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
