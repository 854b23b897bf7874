"""Synthetic identifiers: phone numbers, raw phone strings with formatting noise, user IDs.

Both parties know a user by phone number. In the market the *canonical* phone
is an 11-digit mainland-China mobile number (``1[3-9]x xxxx xxxx``) and the
shared ``user_id`` is a stable 16-hex-digit hash of it, so the same phone gives
the same ``user_id`` in every market and on both sides. The raw ``phone``
columns each party holds carry the formatting noise real systems have, so that
PSI normalisation is exercised:

========================  ==========================================
format                    example
========================  ==========================================
plain                     ``13812345678``
country code              ``+8613812345678``, ``008613812345678``
spaced                    ``+86 138 1234 5678``
dashed                    ``138-1234-5678``
padded                    `` 13812345678 `` (leading/trailing spaces)
========================  ==========================================

Normalising is: keep digits only, then drop a leading ``0086`` or ``86`` when
that leaves 11 digits. :func:`user_id_from_phone` is the hash both sides apply
to the normalised number (a party that holds real hashed phones uses its own).

Everything is vectorised (numpy / pyarrow compute): a million identifiers take
well under a second.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

#: first phone number of the synthetic range and how many numbers it holds (13x..19x).
PHONE_BASE = 13_000_000_000
PHONE_SPAN = 7_000_000_000

_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
#: salt of the user-ID hash; changing it would change every user_id.
_USER_ID_SALT = np.uint64(0x66656461637131)  # "fedacq1"


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser, elementwise on uint64 (wrapping arithmetic)."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return (z ^ (z >> np.uint64(31))) & _MASK64


def hex64(x: np.ndarray) -> np.ndarray:
    """uint64 values as 16-character lower-case hex strings (numpy ``str`` array)."""
    as_bytes = np.ascontiguousarray(x.astype(">u8")).view(np.uint8).reshape(-1, 8)
    return _HEX[as_bytes].view("S16").ravel().astype(str)


def hex64_to_uint(ids: np.ndarray | list[str]) -> np.ndarray:
    """Inverse of :func:`hex64`: 16-hex-digit strings back to uint64 (raises on bad input)."""
    raw = np.asarray(ids, dtype="S16")
    if raw.size and (np.char.str_len(raw) != 16).any():
        raise ValueError("user_id values must be 16 hex digits")
    nib = raw.view(np.uint8).reshape(-1, 16).astype(np.int16)
    val = np.where(nib >= ord("a"), nib - ord("a") + 10, nib - ord("0"))
    if ((val < 0) | (val > 15)).any():
        raise ValueError("user_id values must be lower-case hex digits")
    out = np.zeros(len(raw), dtype=np.uint64)
    for k in range(16):  # 16 vectorised steps, one per hex digit
        out = (out << np.uint64(4)) | val[:, k].astype(np.uint64)
    return out


def user_id_from_phone(phone: np.ndarray) -> np.ndarray:
    """The shared user ID of normalised 11-digit phone numbers (int64 array) as hex strings."""
    return hex64(splitmix64(np.asarray(phone, dtype=np.uint64) ^ _USER_ID_SALT))


def draw_phones(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct synthetic mobile numbers (int64), in random order."""
    if n > PHONE_SPAN:
        raise ValueError(f"cannot draw {n} distinct phone numbers from a range of {PHONE_SPAN}")
    return PHONE_BASE + rng.choice(PHONE_SPAN, size=n, replace=False, shuffle=True).astype(np.int64)


#: format name -> index used by :func:`raw_phones`.
PHONE_FORMATS = ("plain", "plus86", "0086", "spaced", "dashed", "padded")


def raw_phones(phone: np.ndarray, rng: np.random.Generator, noise_share: float,
               weights: tuple[float, ...] = (1, 1, 1, 1, 1)) -> np.ndarray:
    """Phone numbers as a party stores them: plain, except ``noise_share`` in another format.

    ``weights`` weigh the five non-plain formats of :data:`PHONE_FORMATS` (each
    party has its own habits). Returns an object array of ``str``.
    """
    if not 0.0 <= noise_share <= 1.0:
        raise ValueError(f"noise_share must be in [0, 1], got {noise_share}")
    s = pc.cast(pa.array(np.asarray(phone, dtype=np.int64)), pa.string())
    a = pc.utf8_slice_codeunits(s, 0, 3)
    b = pc.utf8_slice_codeunits(s, 3, 7)
    c = pc.utf8_slice_codeunits(s, 7, 11)
    variants = [
        s,
        pc.binary_join_element_wise("+86", s, ""),
        pc.binary_join_element_wise("0086", s, ""),
        pc.binary_join_element_wise("+86", a, b, c, " "),
        pc.binary_join_element_wise(a, b, c, "-"),
        pc.binary_join_element_wise(" ", s, " ", ""),
    ]
    w = np.asarray(weights, dtype=float)
    if len(w) != len(PHONE_FORMATS) - 1 or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(PHONE_FORMATS) - 1} non-negative numbers")
    noisy = rng.random(len(s)) < noise_share
    which = np.where(noisy, 1 + rng.choice(len(w), size=len(s), p=w / w.sum()), 0).astype(np.int8)
    return pc.choose(pa.array(which), *variants).to_numpy(zero_copy_only=False)
