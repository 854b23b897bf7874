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
import re
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

#: dtypes that may cross the wire (no object, no void/structured dtypes).
ALLOWED_DTYPES = frozenset(
    ["bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
     "float32", "float64"]
)

#: default size limits; a spec may lower or raise them per part.
MAX_HEADER_BYTES = 64 * 1024
DEFAULT_MAX_PART_BYTES = 256 * 1024 * 1024
#: widest big integer a key-dependent part may declare: the ciphertext (n^2) of an
#: 8192-bit Paillier key, 2 * 8192 / 8 bytes. A spec may set a fixed or a smaller bound.
DEFAULT_MAX_WIDTH = 2 * 8192 // 8
#: a header is a small JSON object: fedacq's own headers nest at most 2 deep and hold at
#: most a few thousand numbers (one group size per bucket). The caps keep the parser's
#: recursion and the Python objects it builds bounded by constants.
MAX_HEADER_DEPTH = 8
MAX_HEADER_TOKENS = 4096
#: every header integer is a count, an index or a size: int64, parsed from at most 20 digits.
HEADER_INT_RANGE = (-(2 ** 63), 2 ** 63 - 1)
_MAX_NUMBER_CHARS = 40
#: most dimensions of an array part (numpy itself stops at 64, with a ValueError).
MAX_NDIM = 8


class MessageError(ValueError):
    """A message that does not match its declared schema (nothing was applied)."""


class BigInts:
    """A vector of non-negative integers, each serialised in ``width`` bytes (big-endian).

    Used for Paillier ciphertexts (width = 2 * key bytes) and other group
    elements. Values are plain Python ints (or anything ``int()`` accepts, such as
    ``gmpy2.mpz``); :meth:`to_bytes` raises if a value does not fit the width.

    A received vector keeps its wire bytes and turns them into ints only when
    :attr:`values` is first read: a Python int costs up to 28 bytes more than its
    width, so decoding on arrival would let a payload of narrow integers cost many
    times its size before the protocol has checked the width against its key.
    """

    __slots__ = ("_values", "_raw", "width")

    def __init__(self, values: list[int], width: int) -> None:
        if width <= 0:
            raise MessageError(f"BigInts width must be positive, got {width}")
        self._values: list[int] | None = values
        self._raw: memoryview | None = None
        self.width = width

    @classmethod
    def from_bytes(cls, data: bytes | memoryview, width: int) -> "BigInts":
        """A vector over ``data`` (not copied; decoded on first use of :attr:`values`)."""
        raw = memoryview(data).cast("B")
        if width <= 0 or raw.nbytes % width:
            raise MessageError(f"{raw.nbytes} bytes is not a whole number of {width}-byte integers")
        out = cls.__new__(cls)
        out._values, out._raw, out.width = None, raw, width
        return out

    @property
    def values(self) -> list[int]:
        if self._values is None:
            raw, w = self._raw, self.width
            self._values = [int.from_bytes(raw[i:i + w], "big") for i in range(0, raw.nbytes, w)]
        return self._values

    def __len__(self) -> int:
        return self._raw.nbytes // self.width if self._raw is not None else len(self._values)

    @property
    def nbytes(self) -> int:
        return len(self) * self.width

    def buffer(self) -> memoryview:
        """The wire bytes, without a copy when the vector was received."""
        return self._raw if self._raw is not None else memoryview(self.to_bytes())

    def to_bytes(self) -> bytes:
        if self._raw is not None:
            return self._raw.tobytes()
        w = self.width
        try:
            return b"".join(int(v).to_bytes(w, "big") for v in self._values)
        except OverflowError as exc:
            raise MessageError(f"a big integer does not fit in {w} bytes (or is negative)") from exc

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BigInts) or self.width != other.width:
            return False
        if self._raw is not None and other._raw is not None:
            return self._raw == other._raw
        return [int(v) for v in self.values] == [int(v) for v in other.values]

    def __repr__(self) -> str:
        return f"BigInts(n={len(self)}, width={self.width})"


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
    accepted dtypes and ``ndim`` the number of dimensions (None: any up to
    ``MAX_NDIM``). For big integers, ``width`` fixes the byte width; None means
    key-dependent, to be checked by the protocol against its key, and bounded here
    by ``max_width`` so that the receiver refuses an absurd width from the envelope
    alone, before any payload. ``max_bytes`` bounds the part.
    """

    kind: str = "ndarray"
    dtypes: tuple[str, ...] = ()
    ndim: int | None = None
    width: int | None = None
    max_bytes: int = DEFAULT_MAX_PART_BYTES
    optional: bool = False
    max_width: int = DEFAULT_MAX_WIDTH

    def width_error(self, width: int) -> str | None:
        """Why a big-integer part of ``width`` bytes breaks this spec, or None."""
        if self.width is not None:
            return None if width == self.width else f"has width {width}, expected {self.width}"
        if not 1 <= width <= self.max_width:
            return f"has width {width}, expected 1 to {self.max_width} bytes"
        return None


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
        self.validate_header(msg.header, where)
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


    def validate_header(self, header: Any, where: str) -> None:
        """The header part of :meth:`validate` (a receiver checks it before any payload)."""
        if not isinstance(header, dict):
            raise MessageError(f"{where}: header is not a JSON object")
        known = set(self.header) | set(self.optional_header)
        extra = set(header) - known
        if extra:
            raise MessageError(f"{where}: unexpected header field(s) {sorted(extra)}")
        for key in self.header:
            if key not in header:
                raise MessageError(f"{where}: missing header field {key!r}")
        for key, value in header.items():
            typ = self.header.get(key) or self.optional_header[key]
            if not _is_instance(value, typ):
                raise MessageError(f"{where}: header field {key!r} has type {type(value).__name__}")


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
        problem = spec.width_error(part.width)
        if problem:
            raise MessageError(f"{where}: part {name!r} {problem}")
    else:
        if not isinstance(part, np.ndarray):
            raise MessageError(f"{where}: part {name!r} must be an array")
        dtype = str(part.dtype)
        if dtype not in ALLOWED_DTYPES:
            raise MessageError(f"{where}: part {name!r} has dtype {dtype}, not allowed on the wire")
        if spec.dtypes and dtype not in spec.dtypes:
            raise MessageError(f"{where}: part {name!r} has dtype {dtype}, expected one of {list(spec.dtypes)}")
        if part.ndim > MAX_NDIM:
            raise MessageError(f"{where}: part {name!r} has {part.ndim} dimensions, more than {MAX_NDIM}")
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


class _HeaderRefused(MessageError):
    """Raised by the JSON parser's hooks; :func:`parse_header` adds where it happened."""


#: the JSON text's structural tokens: a whole string (escapes included), a bracket, a
#: separator, or a quote that opens a string which never ends. Possessive repeats keep
#: the regex engine from backtracking (or stacking state) inside a long string.
_JSON_TOKEN = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|[\[\]{},:]|"', re.DOTALL)


def _check_structure(data: bytes) -> None:
    """Refuse a header nested deeper than MAX_HEADER_DEPTH or with more than
    MAX_HEADER_TOKENS tokens, before the (recursive) JSON parser sees it."""
    opens = data.count(b"[") + data.count(b"{")
    if opens <= MAX_HEADER_DEPTH and \
            opens + data.count(b",") + data.count(b":") + data.count(b'"') <= MAX_HEADER_TOKENS:
        return  # counting every bracket and separator, even inside strings, cannot break a cap
    depth = tokens = 0
    for match in _JSON_TOKEN.finditer(data):
        token = match.group()
        tokens += 1
        if tokens > MAX_HEADER_TOKENS:
            raise _HeaderRefused(f"has more than {MAX_HEADER_TOKENS} JSON tokens")
        if token in (b"[", b"{"):
            depth += 1
            if depth > MAX_HEADER_DEPTH:
                raise _HeaderRefused(f"nests deeper than {MAX_HEADER_DEPTH} levels")
        elif token in (b"]", b"}"):
            depth -= 1
        elif token == b'"':
            raise _HeaderRefused("is not valid JSON (a string never ends)")


def _parse_int(text: str) -> int:
    if len(text) > _MAX_NUMBER_CHARS:
        raise _HeaderRefused(f"integer of {len(text)} digits is outside int64")
    value = int(text)
    if not HEADER_INT_RANGE[0] <= value <= HEADER_INT_RANGE[1]:
        raise _HeaderRefused(f"integer {value} is outside int64")
    return value


def _refuse_constant(text: str) -> None:
    raise _HeaderRefused(f"holds {text}, which JSON does not allow")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise _HeaderRefused("repeats a key in one object")
    return out


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        yield from value
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


class _Floats:
    """parse_float hook: finite floats, and how many bytes their canonical form adds.

    The sender writes floats as ``repr`` does; another spelling (``1e9``) may be
    longer once re-encoded for the ledger, so the growth is counted, not guessed.
    """

    def __init__(self) -> None:
        self.growth = 0

    def __call__(self, text: str) -> float:
        if len(text) > _MAX_NUMBER_CHARS:
            raise _HeaderRefused(f"number of {len(text)} characters is too long")
        value = float(text)
        if not math.isfinite(value):
            raise _HeaderRefused(f"number {text} overflows a float")
        self.growth += len(repr(value)) - len(text)
        return value


def parse_header(data: bytes, where: str, what: str = "header") -> dict[str, Any]:
    """The header object of a received message, within the caps above.

    The inverse of :func:`header_bytes`, for bytes from the peer: ASCII (as
    :func:`header_bytes` writes it; other text travels as ``\\u`` escapes), a JSON
    object, nesting and token count bounded before parsing, int64 integers, finite
    floats, no repeated keys, no lone surrogates (text that could not be written
    out again), and no larger than the limit once re-encoded canonically (what
    the ledger and the link's counters do; only floats can grow, and they are
    counted as they are parsed). Anything else is a :class:`MessageError` naming
    ``where`` and ``what`` was parsed (a message header; a job document).
    """
    if len(data) > MAX_HEADER_BYTES:
        raise MessageError(f"{where}: {what} is {len(data)} bytes, over the limit of {MAX_HEADER_BYTES}")
    if not data.isascii():
        raise MessageError(f"{where}: {what} is not valid JSON as fedacq writes it (not ASCII)")
    floats = _Floats()
    try:
        _check_structure(data)
        header = json.loads(data.decode("ascii"), parse_int=_parse_int, parse_float=floats,
                            parse_constant=_refuse_constant, object_pairs_hook=_unique_keys)
    except _HeaderRefused as exc:
        raise MessageError(f"{where}: {what} {exc}") from None
    except json.JSONDecodeError as exc:
        raise MessageError(f"{where}: {what} is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise MessageError(f"{where}: {what} is not a JSON object")
    if len(data) + floats.growth > MAX_HEADER_BYTES:
        raise MessageError(f"{where}: {what} would be {len(data) + floats.growth} bytes re-encoded, "
                           f"over the limit of {MAX_HEADER_BYTES}")
    for text in _strings(header):
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise MessageError(f"{where}: {what} holds a lone surrogate (not text)") from None
    return header


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
