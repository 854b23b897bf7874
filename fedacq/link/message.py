"""Typed messages and their schemas: what may cross between parties.

A :class:`Message` is a protocol-level value: a message type, a small JSON-able
header and named payload parts. A part is either a numpy array of a plain
numeric or bytes dtype, or a :class:`BigInts` vector (non-negative integers of
a fixed byte width, e.g. Paillier ciphertexts). Nothing else can be carried:
there is no object serialisation, so nothing a peer sends can execute code.

Every message type a protocol uses is declared once with a :class:`MessageSpec`
and registered with :func:`register`. A link validates each received message
against the spec of the type the receiving protocol expects *before* any
protocol code sees it, so a malformed, oversized or unexpected message is
refused with a :class:`MessageError` that names the type and the part.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

#: dtypes that may cross the wire (no object, no void/structured dtypes).
ALLOWED_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float32", "float64"]
)

#: default size limits; a spec may lower or raise them per part.
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_PART_BYTES = 256 * 1024 * 1024


class MessageError(ValueError):
    """A message that does not match its declared schema (nothing was applied)."""


class BigInts:
    """A vector of non-negative integers, each serialised in ``width`` bytes (big-endian).

    Used for Paillier ciphertexts (width = 2 * key bytes) and other group
    elements. Values are plain Python ints (or anything ``int()`` accepts, such as
    ``gmpy2.mpz``); :meth:`to_bytes` raises if a value does not fit the width.
    """

    __slots__ = ("values", "width")

    def __init__(self, values: list[int], width: int) -> None:
        if width <= 0:
            raise MessageError(f"BigInts width must be positive, got {width}")
        self.values = values
        self.width = width

    def __len__(self) -> int:
        return len(self.values)

    @property
    def nbytes(self) -> int:
        return len(self.values) * self.width

    def to_bytes(self) -> bytes:
        w = self.width
        try:
            return b"".join(int(v).to_bytes(w, "big") for v in self.values)
        except OverflowError as exc:
            raise MessageError(f"a big integer does not fit in {w} bytes (or is negative)") from exc

    @classmethod
    def from_bytes(cls, data: bytes, width: int) -> "BigInts":
        if width <= 0 or len(data) % width:
            raise MessageError(f"{len(data)} bytes is not a whole number of {width}-byte integers")
        mv = memoryview(data)
        return cls([int.from_bytes(mv[i:i + width], "big") for i in range(0, len(data), width)], width)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BigInts) and self.width == other.width and \
            [int(v) for v in self.values] == [int(v) for v in other.values]

    def __repr__(self) -> str:
        return f"BigInts(n={len(self.values)}, width={self.width})"


Part = np.ndarray | BigInts


@dataclass
class Message:
    """One typed message. ``step`` names the protocol step (e.g. ``"tree3/level2"``)."""

    type: str
    header: dict[str, Any] = field(default_factory=dict)
    parts: dict[str, Part] = field(default_factory=dict)
    step: str = ""

    def describe(self) -> dict[str, Any]:
        """Shapes and sizes, never content: what the egress ledger records."""
        shapes: dict[str, Any] = {}
        for name, part in self.parts.items():
            if isinstance(part, BigInts):
                shapes[name] = {"kind": "bigints", "count": len(part), "width": part.width}
            else:
                shapes[name] = {"kind": "ndarray", "dtype": str(part.dtype), "shape": list(part.shape)}
        return {"type": self.type, "step": self.step, "parts": shapes}


@dataclass(frozen=True)
class PartSpec:
    """What one payload part must look like.

    ``kind`` is ``"ndarray"`` or ``"bigints"``. For arrays, ``dtypes`` lists the
    accepted dtypes and ``ndim`` the number of dimensions (None: any). For big
    integers, ``width`` fixes the byte width (None: any, e.g. key-dependent, to be
    checked by the protocol against its key). ``max_bytes`` bounds the part.
    """

    kind: str = "ndarray"
    dtypes: tuple[str, ...] = ()
    ndim: int | None = None
    width: int | None = None
    max_bytes: int = DEFAULT_MAX_PART_BYTES
    optional: bool = False


@dataclass(frozen=True)
class MessageSpec:
    """The schema of one message type: header keys and their types, payload parts."""

    type: str
    header: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)
    parts: Mapping[str, PartSpec] = field(default_factory=dict)
    optional_header: Mapping[str, type | tuple[type, ...]] = field(default_factory=dict)

    def validate(self, msg: Message) -> None:
        """Raise :class:`MessageError` unless ``msg`` matches this spec exactly."""
        where = f"message {msg.type!r}"
        if msg.type != self.type:
            raise MessageError(f"expected message type {self.type!r}, got {msg.type!r}")
        if not isinstance(msg.header, dict):
            raise MessageError(f"{where}: header is not a JSON object")
        known = set(self.header) | set(self.optional_header)
        extra = set(msg.header) - known
        if extra:
            raise MessageError(f"{where}: unexpected header field(s) {sorted(extra)}")
        for key, typ in self.header.items():
            if key not in msg.header:
                raise MessageError(f"{where}: missing header field {key!r}")
        for key, value in msg.header.items():
            typ = self.header.get(key) or self.optional_header[key]
            if not _is_instance(value, typ):
                raise MessageError(f"{where}: header field {key!r} has type {type(value).__name__}")
        extra_parts = set(msg.parts) - set(self.parts)
        if extra_parts:
            raise MessageError(f"{where}: unexpected part(s) {sorted(extra_parts)}")
        for name, spec in self.parts.items():
            part = msg.parts.get(name)
            if part is None:
                if spec.optional:
                    continue
                raise MessageError(f"{where}: missing part {name!r}")
            _validate_part(where, name, part, spec)


def _is_instance(value: Any, typ: type | tuple[type, ...]) -> bool:
    # bool is an int in Python; a header declared int must not accept True.
    types = typ if isinstance(typ, tuple) else (typ,)
    if isinstance(value, bool) and bool not in types:
        return False
    if isinstance(value, float) and float in types and not math.isfinite(value):
        return False
    return isinstance(value, types)


def _validate_part(where: str, name: str, part: Part, spec: PartSpec) -> None:
    if spec.kind == "bigints":
        if not isinstance(part, BigInts):
            raise MessageError(f"{where}: part {name!r} must be big integers")
        if spec.width is not None and part.width != spec.width:
            raise MessageError(f"{where}: part {name!r} has width {part.width}, expected {spec.width}")
    else:
        if not isinstance(part, np.ndarray):
            raise MessageError(f"{where}: part {name!r} must be an array")
        dtype = str(part.dtype)
        if dtype not in ALLOWED_DTYPES:
            raise MessageError(f"{where}: part {name!r} has dtype {dtype}, not allowed on the wire")
        if spec.dtypes and dtype not in spec.dtypes:
            raise MessageError(f"{where}: part {name!r} has dtype {dtype}, expected one of {list(spec.dtypes)}")
        if spec.ndim is not None and part.ndim != spec.ndim:
            raise MessageError(f"{where}: part {name!r} has {part.ndim} dimensions, expected {spec.ndim}")
        if part.dtype.kind == "f" and part.size and not _all_finite(part):
            raise MessageError(f"{where}: part {name!r} holds NaN or infinity")
    if part.nbytes > spec.max_bytes:
        raise MessageError(f"{where}: part {name!r} is {part.nbytes} bytes, over its limit of {spec.max_bytes}")


def _all_finite(a: np.ndarray) -> bool:
    """True if no element is NaN or infinite, in one pass and without a temporary array.

    NaN and infinity propagate through a sum, so a finite sum proves every
    element finite; only a sum that overflowed (finite but huge values) needs the
    exact element-wise check. This keeps validating a 512 MB array at memory speed.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(np.add.reduce(a, axis=None, dtype=np.float64)):
            return True
    return bool(np.isfinite(a).all())


def header_bytes(header: Mapping[str, Any]) -> bytes:
    """Canonical JSON encoding of a header, size-checked."""
    data = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    if len(data) > MAX_HEADER_BYTES:
        raise MessageError(f"header is {len(data)} bytes, over the limit of {MAX_HEADER_BYTES}")
    return data


_REGISTRY: dict[str, MessageSpec] = {}


def register(*specs: MessageSpec) -> None:
    """Declare message types. Re-registering an identical spec is a no-op."""
    for spec in specs:
        old = _REGISTRY.get(spec.type)
        if old is not None and old != spec:
            raise ValueError(f"message type {spec.type!r} is already registered with another schema")
        _REGISTRY[spec.type] = spec


def spec_for(msg_type: str) -> MessageSpec:
    try:
        return _REGISTRY[msg_type]
    except KeyError:
        raise MessageError(f"unknown message type {msg_type!r}") from None
