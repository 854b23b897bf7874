"""Fuzz the message codec and every registered message schema (coverage-guided, atheris).

Each case is a byte string, read one of three ways:

* raw, one frame: the bytes go to ``codec.decode`` as the only wire frame;
* raw, several frames: the bytes are cut into length-prefixed wire frames;
* structure-aware: the bytes choose a registered message type, a valid message of
  it (header values and parts drawn from its schema), a chunk size, and up to four
  mutations of its encoded frames: envelope fields set to edge values (shapes,
  sizes, widths, dtypes, kinds, names, part counts, sequence numbers, types),
  hostile headers (deep nesting, 5,000-digit integers, NaN, repeated keys, lone
  surrogates, too many tokens, text that is not UTF-8), "declares the part's
  limit, sends a few bytes", payload bytes flipped, frames dropped, repeated,
  swapped, truncated or extended, and bytes of the encoded envelope flipped.

The property, for every case: ``codec.decode`` returns a message that its schema
accepts (and whose header re-encodes) or raises ``MessageError``; any other
exception is a crash, recorded by type and place. Memory: tracemalloc's peak
over the decode call (tracing starts just before it), divided by the input's
size (the fuzz bytes for raw cases, the mutated frames' bytes for structured
ones), where inputs under ``--floor`` bytes (64 KiB) count as that floor: one
message has a fixed cost that does not shrink with its input (the parsed header,
bounded by its caps; error text). tracemalloc sees Python objects, bytearrays
and numpy buffers; it does not see protobuf's C arena, which the envelope's
wire caps bound (128 KiB of envelope at most). The limit is 2x.

The engine is atheris (libFuzzer's coverage guidance over ``fedacq.link``, seeded
with a corpus of valid encoded messages of every type); where atheris will not
install, ``--engine random`` mutates the same corpus at random.

    python benchmarks/fuzz.py --cases 1000000 --json benchmarks/results/fuzz.json
    python benchmarks/fuzz.py --cases 50000 --json /tmp/fuzz.json        # what CI runs
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
import tracemalloc
import traceback
from pathlib import Path
from typing import Any, Callable

try:
    import atheris
except ImportError:  # the random engine still runs
    atheris = None

LIMIT = 2.0
INT64 = [0, 1, -1, 2, 3, 7, 8, 255, 256, 65535, 2 ** 20, 2 ** 28, 2 ** 28 + 1, 2 ** 31 - 1, 2 ** 31,
         2 ** 32, 2 ** 40, 2 ** 62, 2 ** 63 - 1, -(2 ** 63), 10 ** 9]
INT32 = [v for v in INT64 if -(2 ** 31) <= v < 2 ** 31]
DTYPES = ["bool", "int8", "uint8", "int16", "int32", "int64", "uint64", "float32", "float64", "float16",
          "complex128", "object", "V8", "<f8", ">i4", "", "U4", "datetime64"]


# -- inputs -----------------------------------------------------------------------------
class Choices:
    """Decisions read from the fuzz input (zeros once it runs out), so libFuzzer steers them."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def below(self, n: int) -> int:
        if n <= 1:
            return 0
        size = (n.bit_length() + 7) // 8
        chunk = self.data[self.pos:self.pos + size]
        self.pos += size
        return int.from_bytes(chunk, "little") % n

    def pick(self, items: list) -> Any:
        return items[self.below(len(items))]

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def register_all() -> tuple[list[str], list[str]]:
    """Import every fedacq module that registers message types; (imported, skipped: why).

    Modules are found by their source (a ``register(`` of ``MessageSpec``), so that
    a protocol added later is fuzzed without being named here.
    """
    import fedacq
    root = Path(fedacq.__file__).parent
    imported, skipped = [], []
    for path in sorted(root.rglob("*.py")):
        name = ".".join(("fedacq",) + path.relative_to(root).with_suffix("").parts)
        text = path.read_text(encoding="utf-8")
        if "MessageSpec(" not in text or "register(" not in text or name.startswith("fedacq.link."):
            continue
        try:
            importlib.import_module(name)
            imported.append(name)
        except ImportError as exc:  # an optional extra (torch for split NN) is missing
            skipped.append(f"{name}: {exc}")
    return imported, skipped


def sample_value(typ: Any, rnd: random.Random) -> Any:
    typ = rnd.choice(typ) if isinstance(typ, tuple) else typ
    if typ is bool:
        return rnd.random() < 0.5
    if typ is int:
        return rnd.choice([0, 1, 3, 1000, rnd.randrange(-10 ** 6, 10 ** 6)])
    if typ is float:
        return rnd.uniform(-1e3, 1e3)
    if typ is str:
        return rnd.choice(["", "a", "lender", "x" * 40, "é€"])
    if typ is list:
        return [rnd.randrange(1000) for _ in range(rnd.randrange(4))]
    if typ is dict:
        return {"k": rnd.randrange(10)}
    raise TypeError(f"no sampler for header type {typ}")


def sample_message(spec: Any, rnd: random.Random, big: bool) -> Any:
    """A message that ``spec`` accepts (``big``: one array part of up to 2 MiB)."""
    import numpy as np
    from fedacq.link.message import ALLOWED_DTYPES, BigInts, Message
    header = {k: sample_value(t, rnd) for k, t in spec.header.items()}
    header.update({k: sample_value(t, rnd) for k, t in spec.optional_header.items() if rnd.random() < 0.5})
    parts: dict[str, Any] = {}
    for name, ps in spec.parts.items():
        if ps.optional and rnd.random() < 0.4:
            continue
        if ps.kind == "bigints":
            width = ps.width or rnd.choice([1, 8, 32, 256, min(512, ps.max_width)])
            count = min(rnd.randrange(5), ps.max_bytes // width)
            parts[name] = BigInts([rnd.getrandbits(8 * width) for _ in range(count)], width)
            continue
        dtype = np.dtype(rnd.choice(sorted(ps.dtypes or ALLOWED_DTYPES)))
        ndim = ps.ndim if ps.ndim is not None else rnd.randrange(4)
        budget = max(0, ps.max_bytes // dtype.itemsize)
        lead = rnd.randrange(1, 2 ** 21 // dtype.itemsize) if big else rnd.randrange(6)
        shape = [min(lead, budget)] + [rnd.randrange(4) for _ in range(ndim - 1)] if ndim else []
        while shape and int(np.prod(shape)) > budget:
            shape[0] //= 2
        size = int(np.prod(shape)) if shape else 1
        if dtype.kind == "f":
            arr = np.linspace(-3, 3, size, dtype=dtype)
        elif dtype.kind == "b":
            arr = np.arange(size) % 2 == 0
        else:
            arr = (np.arange(size) % 100).astype(dtype)
        parts[name] = arr.reshape(shape)
    return Message(spec.type, header, parts, step=rnd.choice(["", "s/1", "tree3/level2"]))


def hostile_header(ch: Choices, rnd: random.Random) -> bytes:
    kinds: list[Callable[[], bytes]] = [
        lambda: b"[" * rnd.choice([9, 100, 5000, 60000]) + b"]" * rnd.randrange(3),
        lambda: b'{"a":' * 9 + b"1" + b"}" * 9,
        lambda: b'{"n":' + b"9" * rnd.choice([19, 20, 21, 4301, 5000]) + b"}",
        lambda: b'{"n":-' + b"9" * rnd.choice([19, 20, 40]) + b"}",
        lambda: rnd.choice([b'{"x":NaN}', b'{"x":Infinity}', b'{"x":-Infinity}', b'{"x":1e999}', b'{"x":-1e400}']),
        lambda: b'{"x":1.' + b"5" * rnd.choice([30, 2000]) + b"}",
        lambda: b'{"a":1,"a":2}',
        lambda: b'{"a":"\\ud800"}',
        lambda: b'{"' + b"\\udfff" * rnd.randrange(1, 5) + b'":1}',
        lambda: b"\xff\xfe" + ch.take(8),
        lambda: b'"never ends' + b"\\" * rnd.randrange(3),
        lambda: b"[" + b"1," * rnd.choice([100, 4095, 5000, 30000]) + b"1]",
        lambda: b'{"a":[' + b'"ab",' * 3000 + b'""]}',
        lambda: b'{"a":"' + "é".encode() * rnd.choice([100, 30000]) + b'"}',
        lambda: rnd.choice([b"[]", b'"x"', b"1", b"null", b"true", b"", b" ", b"{}" * 2]),
        lambda: json.dumps({"n": "three", "round": True, "epoch": 1.5, "tree": None}).encode(),
        lambda: ch.take(ch.below(64)),
    ]
    return ch.pick(kinds)()


def mutate(frames: list[bytes], ch: Choices, rnd: random.Random, types: list[str]) -> list[bytes]:
    """One structural mutation of a message's wire frames."""
    from fedacq.link import codec
    from fedacq.link._pb import fedacq_pb2 as pb
    from fedacq.link.message import _REGISTRY
    kind = ch.below(12)
    if kind <= 5:  # the envelope
        first = codec.read_frame(frames[0])
        if first.envelope is None:
            return frames
        env, data = first.envelope, bytes(first.data)
        parts = list(env.parts)
        part = parts[ch.below(len(parts))] if parts else None
        if kind == 0 and part is not None:
            what = ch.below(4)
            if what == 0:
                part.shape[:] = [ch.pick(INT64) for _ in range(ch.pick([0, 1, 2, 3, 9, 70]))]
            elif what == 1:
                part.nbytes = ch.pick(INT64)
            elif what == 2:
                part.width = ch.pick(INT32)
            else:
                part.dtype = ch.pick(DTYPES)
        elif kind == 1 and part is not None:
            what = ch.below(4)
            if what == 0:
                part.kind = ch.pick(["ndarray", "bigints", "", "pickle"])
            elif what == 1:
                part.name = ch.pick(["", "x" * 300, parts[0].name, "zzz", "é"])
            elif what == 2:
                env.parts.add(name=ch.pick(["extra", part.name]), kind="ndarray", dtype="uint8", shape=[1], nbytes=1)
            else:
                del env.parts[ch.below(len(parts))]
        elif kind == 1:
            for _ in range(ch.pick([1, 17, 200])):
                env.parts.add(name="p", kind="ndarray", dtype="uint8", shape=[0], nbytes=0)
        elif kind == 2:
            env.header = hostile_header(ch, rnd)
        elif kind == 3 and part is not None:
            # "declares the part's whole limit, sends a few bytes"
            known = _REGISTRY[env.type].parts if env.type in _REGISTRY else {}
            limit = known[part.name].max_bytes if part.name in known else codec.MAX_MESSAGE_BYTES
            if part.kind == "bigints" and part.width > 0:
                part.nbytes = limit // part.width * part.width
            elif part.dtype:
                import numpy as np
                try:
                    item = np.dtype(part.dtype).itemsize
                except TypeError:
                    item = 1
                n = limit // max(item, 1)
                part.shape[:] = [n] + [1] * max(0, len(part.shape) - 1)
                part.nbytes = n * item
        elif kind == 4:
            what = ch.below(5)
            if what == 0:
                env.seq = ch.pick(INT64)
            elif what == 1:
                env.type = ch.pick(types + ["no.such.type", "", "x" * 300])
            elif what == 2:
                env.job = "j" * ch.pick([0, 256, 257, 5000])
            elif what == 3:
                env.step = "s" * ch.pick([256, 257])
            else:
                env.sender = "\u00e9" * ch.pick([1, 200])
        else:
            header = bytearray(env.header)
            for _ in range(1 + ch.below(4)):
                if header:
                    header[ch.below(len(header))] = ch.below(256)
            env.header = bytes(header)
        return [pb.Frame(envelope=env, data=data).SerializeToString()] + frames[1:]
    i = ch.below(len(frames))
    frame = frames[i]
    if kind == 6:  # flip payload or envelope bytes
        buf = bytearray(frame)
        for _ in range(1 + ch.below(4)):
            if buf:
                buf[ch.below(len(buf))] ^= 1 + ch.below(255)
        frames = frames[:i] + [bytes(buf)] + frames[i + 1:]
    elif kind == 7:
        frames = frames[:i] + [frame[:ch.below(len(frame) + 1)]] + frames[i + 1:]
    elif kind == 8:
        frames = frames[:i] + frames[i + 1:] if len(frames) > 1 else frames
    elif kind == 9:
        frames = frames[:i + 1] + [frames[ch.below(len(frames))]] + frames[i + 1:]
    elif kind == 10:
        j = ch.below(len(frames))
        frames = list(frames)
        frames[i], frames[j] = frames[j], frames[i]
    else:
        extra = pb.Frame(data=ch.take(ch.below(300))).SerializeToString()
        frames = frames + [extra if ch.below(2) else ch.take(ch.below(40))]
    return frames


def split_frames(data: bytes) -> list[bytes]:
    """Raw bytes as length-prefixed wire frames (2-byte little-endian lengths)."""
    frames, pos = [], 0
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 2], "little")
        frames.append(data[pos + 2:pos + 2 + n])
        pos += 2 + n
    return frames


# -- the harness ----------------------------------------------------------------------
class Harness:
    """Runs cases and keeps the tally: outcomes, crashes, the worst memory ratio."""

    def __init__(self, floor: int) -> None:
        from fedacq.link.message import _REGISTRY
        self.types = sorted(_REGISTRY)
        self.floor = floor
        self.cases = 0
        self.outcomes = {"accepted": 0, "refused": 0, "crashed": 0}
        self.by_mode = {"raw": 0, "frames": 0, "structured": 0}
        self.by_type = {t: 0 for t in self.types}
        self.crashes: dict[str, dict[str, Any]] = {}
        self.worst = {"ratio": 0.0}
        self.worst_large = {"ratio": 0.0}
        self.largest_input = 0
        self.pool = {t: encoded_variants(t) for t in self.types}

    def frames_for(self, data: bytes) -> tuple[str, list[bytes], int]:
        mode = data[0] % 3 if data else 0
        if mode == 0:
            return "raw", [data[1:]], len(data)
        if mode == 1:
            frames = split_frames(data[1:])
            return "frames", frames, len(data)
        ch = Choices(data[1:])
        msg_type = ch.pick(self.types)
        self.by_type[msg_type] += 1
        frames = ch.pick(self.pool[msg_type])
        rnd = random.Random(ch.below(2 ** 16))
        for _ in range(ch.below(5)):
            frames = mutate(frames, ch, rnd, self.types)
        return "structured", frames, sum(len(f) for f in frames)

    def run(self, data: bytes) -> None:
        from fedacq.link import codec
        from fedacq.link.message import MessageError, header_bytes
        self.cases += 1
        try:
            mode, frames, size = self.frames_for(data)
        except Exception as exc:  # a harness bug, not a codec finding: stop loudly
            raise RuntimeError(f"fuzz harness failed to build a case from {data[:64].hex()}") from exc
        self.by_mode[mode] += 1
        failure: Exception | None = None
        tracemalloc.start()  # traces only what the decode allocates (and the harness is not slowed)
        try:
            msg = codec.decode(frames)
            msg.describe()
            header_bytes(msg.header)
            self.outcomes["accepted"] += 1
        except MessageError:
            self.outcomes["refused"] += 1
        except Exception as exc:  # noqa: BLE001 - anything but MessageError is the finding
            failure = exc
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        if failure is not None:
            self.outcomes["crashed"] += 1
            self.record_crash(failure, data)
        ratio = peak / max(size, self.floor)
        self.largest_input = max(self.largest_input, size)
        if ratio > self.worst["ratio"]:
            self.worst = {"ratio": ratio, "input_bytes": size, "peak_bytes": peak, "mode": mode,
                          "input_hex": data[:256].hex()}
        if size >= self.floor and peak / size > self.worst_large["ratio"]:
            self.worst_large = {"ratio": peak / size, "input_bytes": size, "peak_bytes": peak, "mode": mode}

    def record_crash(self, exc: Exception, data: bytes) -> None:
        tb = traceback.extract_tb(exc.__traceback__)
        where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(tb) if "fedacq" in f.filename),
                     f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else "?")
        key = f"{type(exc).__name__} at {where}"
        entry = self.crashes.setdefault(key, {"count": 0, "message": str(exc)[:300],
                                              "input_hex": data[:2048].hex()})
        entry["count"] += 1

    def result(self, engine: str, seconds: float, imported: list[str], skipped: list[str]) -> dict[str, Any]:
        return {
            "engine": engine,
            "cases": self.cases,
            "seconds": round(seconds, 2),
            "cases_per_s": round(self.cases / seconds, 1) if seconds else None,
            "distinct_crashes": len(self.crashes),
            "crashes": self.crashes,
            "outcomes": self.outcomes,
            "by_mode": self.by_mode,
            "by_type": self.by_type,
            "memory": {
                "measure": "tracemalloc peak over codec.decode (tracing started just before it), over the "
                           f"input's bytes, inputs under {self.floor} bytes counted as {self.floor}; "
                           "protobuf's C arena is not traced (the envelope is capped at 128 KiB)",
                "floor_bytes": self.floor,
                "limit_ratio": LIMIT,
                "worst_ratio": round(self.worst["ratio"], 4),
                "worst_case": self.worst,
                "worst_ratio_inputs_at_least_floor": round(self.worst_large["ratio"], 4),
                "worst_case_at_least_floor": self.worst_large,
                "largest_input_bytes": self.largest_input,
            },
            "schemas": self.types,
            "modules": imported,
            "skipped_modules": skipped,
            "ok": not self.crashes and self.worst["ratio"] <= LIMIT,
        }


def encoded_variants(msg_type: str) -> list[list[bytes]]:
    """Valid messages of ``msg_type``, encoded: the starting points of structured cases.

    Built once (encoding per case would cost more than decoding it): eight seeds,
    chunk sizes from one byte to a whole message but at most 32 frames (time goes to
    more cases, not to more frames of one), the last with a part of up to 2 MiB.
    """
    from fedacq.link import codec
    from fedacq.link.message import spec_for
    out = []
    for k, chunk in enumerate([1, 7, 64, 300, 4096, codec.CHUNK_SIZE, 16, 1]):
        msg = sample_message(spec_for(msg_type), random.Random(k), big=k == 7)
        size = max(chunk, -(-codec.payload_bytes(msg) // 32))
        out.append(list(codec.encode(msg, "job-1", k, "lender", chunk_size=size)))
    return out


def seed_corpus(harness: Harness) -> list[bytes]:
    """Inputs that start every mode off from valid messages of every registered type."""
    seeds = []
    width = (len(harness.types).bit_length() + 7) // 8
    for t, msg_type in enumerate(harness.types):
        for k, frames in enumerate(harness.pool[msg_type]):
            seeds.append(bytes([2]) + t.to_bytes(width, "little") + bytes([k]))  # as built, no mutation
            if sum(map(len, frames)) < 4096:
                seeds.append(bytes([0]) + frames[0])
                seeds.append(bytes([1]) + b"".join(len(f).to_bytes(2, "little") + f for f in frames))
    return seeds


def random_inputs(seeds: list[bytes], rnd: random.Random):
    """The fallback engine: seeds mutated at random (flips, cuts, splices, fresh bytes)."""
    while True:
        data = bytearray(rnd.choice(seeds))
        for _ in range(rnd.randrange(1, 6)):
            op = rnd.randrange(5)
            if op == 0 and data:
                data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
            elif op == 1 and data:
                del data[rnd.randrange(len(data)):][:rnd.randrange(1, 64)]
            elif op == 2:
                pos = rnd.randrange(len(data) + 1)
                data[pos:pos] = rnd.randbytes(rnd.randrange(1, 32))
            elif op == 3:
                other = rnd.choice(seeds)
                data += other[rnd.randrange(len(other) + 1):]
            elif len(data) > 1:
                data[1 + rnd.randrange(len(data) - 1)] = rnd.randrange(256)
        yield bytes(data)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", type=int, default=100_000, help="fuzz cases to run (default 100000)")
    ap.add_argument("--json", required=True, help="write the results here")
    ap.add_argument("--engine", choices=["atheris", "random"], default="atheris" if atheris else "random",
                    help="atheris (coverage-guided; default when installed) or random mutation")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the engine")
    ap.add_argument("--floor", type=int, default=None,
                    help="inputs smaller count as this many bytes (default: twice the header limit)")
    args = ap.parse_args(argv)
    if args.engine == "atheris" and atheris is None:
        ap.error("atheris is not installed (pip install atheris), use --engine random")

    if args.engine == "atheris":
        with atheris.instrument_imports(include=["fedacq.link"]):
            import fedacq.link.codec  # noqa: F401 - instrumented for coverage
    from fedacq.link.message import MAX_HEADER_BYTES
    imported, skipped = register_all()
    harness = Harness(args.floor or 2 * MAX_HEADER_BYTES)
    seeds = seed_corpus(harness)
    out = Path(args.json)
    engine = f"atheris {getattr(atheris, '__version__', '')}".strip() if args.engine == "atheris" else "random"
    start = time.monotonic()

    def finish() -> int:
        seconds = time.monotonic() - start
        result = harness.result(engine, seconds, imported, skipped)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"{result['cases']} cases in {seconds:.0f} s ({result['cases_per_s']} cases/s, {engine}); "
              f"distinct crashes: {result['distinct_crashes']}; worst memory ratio "
              f"{result['memory']['worst_ratio']} (limit {LIMIT}; {result['memory']['worst_ratio_inputs_at_least_floor']} "
              f"for inputs of {harness.floor} bytes or more); accepted {harness.outcomes['accepted']}, "
              f"refused {harness.outcomes['refused']}", flush=True)
        for key, crash in harness.crashes.items():
            print(f"  crash x{crash['count']}: {key}: {crash['message'][:160]}", flush=True)
        return 0 if result["ok"] else 1

    if args.engine == "random":
        inputs = random_inputs(seeds, random.Random(args.seed))
        while harness.cases < args.cases:
            harness.run(next(inputs))
        return finish()

    def one_input(data: bytes) -> None:
        harness.run(data)
        if harness.cases >= args.cases:
            code = finish()
            shutil.rmtree(corpus, ignore_errors=True)
            os._exit(code)  # libFuzzer has no way back from Fuzz(); the results are written

    corpus = Path(tempfile.mkdtemp(prefix="fedacq-fuzz-"))
    for i, seed in enumerate(seeds):
        (corpus / f"seed{i:04d}").write_bytes(seed)
    atheris.Setup([sys.argv[0], f"-seed={args.seed}", "-max_len=8192", f"-runs={args.cases + len(seeds) + 10}",
                   "-rss_limit_mb=4096", "-print_final_stats=0", str(corpus)], one_input)
    atheris.Fuzz()
    return finish()  # libFuzzer ran out of runs before the count (corpus inputs it skipped)


if __name__ == "__main__":
    sys.exit(main())
