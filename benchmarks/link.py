"""Benchmark: the fedacq gRPC link against a raw grpcio echo, in one run.

Both sides of each transport run in separate processes on 127.0.0.1 (the
peer is a child process of this script), so the numbers are not a single
process fighting its own GIL.

* small round trip: a 64-byte message there and back. fedacq: a typed,
  validated ``Message`` through :class:`~fedacq.link.grpc_link.GrpcLink` with
  mutual TLS and the egress ledger on, echoed by the peer's protocol thread.
  raw: a unary grpcio call echoing 64 bytes on an *insecure* channel (the raw
  baseline only; fedacq itself never uses insecure channels), and the same raw
  calls over fedacq's mutual TLS, to tell the cost of TLS from fedacq's own.
* large payload: one ``--payload-mb`` float64 array, sender to receiver, until
  the receiver has it as an array and has acknowledged. raw: the same bytes
  streamed in 1 MiB chunks to a handler that joins them.

Targets (issue 2): small round trip <= 2 ms; throughput >= 0.7x raw grpcio.

    python benchmarks/link.py --json results/link.json           # full size
    python benchmarks/link.py --json /tmp/link.json --quick      # a smoke run
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np

from fedacq.crypto.tls import TlsFiles, channel_credentials, init_certs, server_credentials
from fedacq.link.grpc_link import PeerEndpoint
from fedacq.link.ledger import PartyLedger
from fedacq.link.message import Message, MessageSpec, PartSpec, register

register(
    MessageSpec("bench.blob", optional_header={"stop": bool},
                parts={"x": PartSpec(dtypes=("float64",), ndim=1, max_bytes=4 * 1024 ** 3, optional=True)}),
    MessageSpec("bench.ack", header={"n": int}),
)
CHUNK = 1024 * 1024
RAW_OPTIONS = [("grpc.max_send_message_length", 2 * CHUNK), ("grpc.max_receive_message_length", 2 * CHUNK)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the peer processes ---------------------------------------------------------------
def serve_raw(port: int, certs: str = "") -> None:
    def echo(request: bytes, context) -> bytes:
        return request

    def sink(request_iterator, context) -> bytes:
        data = b"".join(request_iterator)
        return len(data).to_bytes(8, "big")

    handler = grpc.method_handlers_generic_handler("bench.Raw", {
        "Echo": grpc.unary_unary_rpc_method_handler(echo),
        "Sink": grpc.stream_unary_rpc_method_handler(sink)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=RAW_OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    if certs:
        c = Path(certs)
        server.add_secure_port(f"127.0.0.1:{port}", server_credentials(
            TlsFiles(c / "ca.pem", c / "platform.pem", c / "platform.key")))
    else:
        server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print("ready", flush=True)
    sys.stdin.read()  # parent closes stdin to stop us
    server.stop(0)


def serve_fedacq(certs: str, port: int, peer_port: int) -> None:
    c = Path(certs)
    tls = TlsFiles(c / "ca.pem", c / "platform.pem", c / "platform.key")
    endpoint = PeerEndpoint("platform", "lender", tls, f"127.0.0.1:{port}").start()
    endpoint.connect(f"127.0.0.1:{peer_port}")
    link = endpoint.link("bench")
    print("ready", flush=True)
    while True:
        msg = link.recv(["bench.blob"], timeout=600)
        if msg.header.get("stop"):
            break
        x = msg.parts.get("x")
        if x is not None and x.size > 16:
            link.send(Message("bench.ack", {"n": int(x.size)}))
        else:
            link.send(msg)
    endpoint.stop()


def spawn(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    if proc.stdout.readline().strip() != "ready":
        raise RuntimeError(f"benchmark peer {args[0]} did not start")
    return proc


# -- measurements -------------------------------------------------------------------
def measure_raw(round_trips: int, payload: bytes, reps: int, certs: Path | None = None) -> tuple[float, float]:
    """Raw grpcio; insecure unless ``certs`` is given (then the same mutual TLS as fedacq)."""
    port = free_port()
    if certs is None:
        proc = spawn("--serve-raw", str(port))
        channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=RAW_OPTIONS)
    else:
        proc = spawn("--serve-raw", str(port), str(certs))
        tls = TlsFiles(certs / "ca.pem", certs / "lender.pem", certs / "lender.key")
        channel = grpc.secure_channel(f"127.0.0.1:{port}", channel_credentials(tls),
                                      options=RAW_OPTIONS + [("grpc.ssl_target_name_override", "platform")])
    echo = channel.unary_unary("/bench.Raw/Echo")
    sink = channel.stream_unary("/bench.Raw/Sink")
    small = b"\1" * 64
    for _ in range(50):
        echo(small)
    t = time.perf_counter()
    for _ in range(round_trips):
        echo(small)
    rtt = (time.perf_counter() - t) / round_trips
    mv = memoryview(payload)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        sink(bytes(mv[i:i + CHUNK]) for i in range(0, len(payload), CHUNK))
        times.append(time.perf_counter() - t)
    channel.close()
    proc.stdin.close()
    proc.wait(10)
    return rtt, len(payload) / min(times)


def measure_fedacq(round_trips: int, payload: np.ndarray, reps: int, work: Path) -> tuple[float, float]:
    certs = {p: TlsFiles(work / "certs" / "ca.pem", work / "certs" / f"{p}.pem", work / "certs" / f"{p}.key")
             for p in ("lender", "platform")}
    port, peer_port = free_port(), free_port()
    endpoint = PeerEndpoint("lender", "platform", certs["lender"], f"127.0.0.1:{port}").start()
    endpoint.connect(f"127.0.0.1:{peer_port}")
    link = endpoint.link("bench", PartyLedger(work / "ledger", "lender"))
    proc = spawn("--serve-fedacq", str(work / "certs"), str(peer_port), str(port))
    small = Message("bench.blob", parts={"x": np.arange(8, dtype=np.float64)})
    for _ in range(50):
        link.send(small)
        link.recv("bench.blob")
    t = time.perf_counter()
    for _ in range(round_trips):
        link.send(small)
        link.recv("bench.blob")
    rtt = (time.perf_counter() - t) / round_trips
    big = Message("bench.blob", parts={"x": payload})
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        link.send(big)
        link.recv("bench.ack")
        times.append(time.perf_counter() - t)
    link.send(Message("bench.blob", {"stop": True}))
    proc.wait(30)
    endpoint.stop()
    return rtt, payload.nbytes / min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here (required)")
    parser.add_argument("--quick", action="store_true", help="small sizes: check that the benchmark works")
    parser.add_argument("--payload-mb", type=int, default=None, help="large payload size (default 512; quick 32)")
    parser.add_argument("--round-trips", type=int, default=None, help="small round trips (default 2000; quick 200)")
    parser.add_argument("--reps", type=int, default=None, help="large transfers per transport (best counts)")
    parser.add_argument("--serve-raw", nargs="+", help=argparse.SUPPRESS)
    parser.add_argument("--serve-fedacq", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_raw:
        serve_raw(int(args.serve_raw[0]), *args.serve_raw[1:])
        return 0
    if args.serve_fedacq:
        serve_fedacq(args.serve_fedacq[0], int(args.serve_fedacq[1]), int(args.serve_fedacq[2]))
        return 0

    if not args.json:
        parser.error("--json FILE is required")
    mb = args.payload_mb or (32 if args.quick else 512)
    trips = args.round_trips or (200 if args.quick else 2000)
    reps = args.reps or (2 if args.quick else 5)
    payload = np.random.default_rng(0).standard_normal(mb * 1024 * 1024 // 8)
    from tqdm import tqdm

    with tempfile.TemporaryDirectory() as tmp, tqdm(total=3, desc="link benchmark") as bar:
        init_certs(["lender", "platform"], Path(tmp) / "certs")
        raw_rtt, raw_tp = measure_raw(trips, payload.tobytes(), reps)
        bar.update()
        tls_rtt, tls_tp = measure_raw(trips, payload.tobytes(), reps, Path(tmp) / "certs")
        bar.update()
        fq_rtt, fq_tp = measure_fedacq(trips, payload, reps, Path(tmp))
        bar.update()
    result = {
        "small_rtt_ms": round(fq_rtt * 1e3, 4),
        "raw_grpc_small_rtt_ms": round(raw_rtt * 1e3, 4),
        "throughput_mb_s": round(fq_tp / 2 ** 20, 1),
        "raw_grpc_throughput_mb_s": round(raw_tp / 2 ** 20, 1),
        "throughput_vs_grpc": round(fq_tp / raw_tp, 3),
        "rtt_vs_grpc": round(fq_rtt / raw_rtt, 3),
        # the same raw grpcio with fedacq's mutual TLS: separates the cost of TLS from fedacq's own
        "raw_grpc_tls_small_rtt_ms": round(tls_rtt * 1e3, 4),
        "raw_grpc_tls_throughput_mb_s": round(tls_tp / 2 ** 20, 1),
        "throughput_vs_grpc_tls": round(fq_tp / tls_tp, 3),
        "payload_mb": mb, "round_trips": trips, "reps": reps, "quick": args.quick,
        "peer": f"raw grpcio {grpc.__version__} echo, insecure channel, same machine",
        "fedacq": "GrpcLink, mutual TLS (ECDSA P-256), egress ledger on",
        "targets": {"small_rtt_ms_max": 2.0, "throughput_vs_grpc_min": 0.7},
    }
    result["meets_targets"] = result["small_rtt_ms"] <= 2.0 and result["throughput_vs_grpc"] >= 0.7
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(f"small round trip: fedacq {result['small_rtt_ms']:.3f} ms, raw grpcio {result['raw_grpc_small_rtt_ms']:.3f} ms "
          f"(ratio {result['rtt_vs_grpc']:.2f}x)")
    print(f"{mb} MB payload: fedacq {result['throughput_mb_s']:.0f} MB/s, raw grpcio "
          f"{result['raw_grpc_throughput_mb_s']:.0f} MB/s (ratio {result['throughput_vs_grpc']:.2f}x of raw), "
          f"raw grpcio with the same mTLS {result['raw_grpc_tls_throughput_mb_s']:.0f} MB/s "
          f"(ratio {result['throughput_vs_grpc_tls']:.2f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
