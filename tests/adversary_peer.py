"""The malicious peer: a process that holds the *other* party's certificate and misbehaves.

Run as its own process (never imported by the honest node)::

    python tests/adversary_peer.py --config '{"party": "lender", "peer": "platform", ...,
                                              "scenario": "propose", "args": {...}}'

It serves ``PartyLink`` on its own port over mutual TLS with fedacq's own
:class:`~fedacq.link.grpc_link.LinkServicer` (so proposals and messages from
the honest node are authorised exactly as a real node would), but with its own
request deserializer that keeps the *raw* bytes of every frame it receives: the
privacy scenarios compute digests and values from what actually crossed the
wire, not from decoded copies. It talks to the honest node through fedacq's
:class:`~fedacq.link.grpc_link.PeerClient`, and sends hand-built frames (raw
protobuf bytes) where a scenario needs to be malformed.

Each scenario is a function ``name(adv, args) -> dict``; the result is printed
as one JSON line. With ``"serve": true`` in the config the process keeps
running and reads one scenario per line on stdin (``{"scenario": ..., "args":
...}``), printing ``{"event": "started"}`` once a scenario is armed and then one
result line per scenario: the test suite shares one adversary per honest node
instead of paying a process start per case.
"""

from __future__ import annotations

import fedacq.crypto.tls  # noqa: F401 - first: sets gRPC's cipher policy before grpc is imported

import argparse
import hashlib
import json
import os
import random
import sys
import threading
import time
import traceback
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
import numpy as np
import pandas as pd

from fedacq.crypto.tls import TlsFiles
from fedacq.link import codec
from fedacq.link._pb import fedacq_pb2 as pb
from fedacq.link.grpc_link import MAX_FRAME_BYTES, GrpcLink, LinkServicer, PeerClient, Router
from fedacq.link.link import LinkError
from fedacq.link.message import Message, MessageError, header_bytes

_ENVELOPE_TAG, _DATA_TAG = 0x0A, 0x12  # Frame.envelope (1, bytes), Frame.data (2, bytes)


# -- raw frames ---------------------------------------------------------------------------

def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def frame(envelope: bytes | None, data: bytes = b"") -> bytes:
    """A ``Frame`` in its protobuf wire encoding, built by hand (so it can be anything)."""
    out = b"" if envelope is None else bytes([_ENVELOPE_TAG]) + _varint(len(envelope)) + envelope
    return out + bytes([_DATA_TAG]) + _varint(len(data)) + data


def envelope(job: str, msg_type: str, header: bytes, parts: list[dict[str, Any]], sender: str,
             seq: int = 0, step: str = "") -> bytes:
    env = pb.Envelope(job=job, step=step, type=msg_type, seq=seq, header=header, sender=sender)
    for part in parts:
        env.parts.add(**part)
    return env.SerializeToString()


class RawMessage:
    """One message as its frames arrived: digest and parts computed from the raw bytes."""

    def __init__(self, frames: list[bytes]) -> None:
        first = codec.read_frame(frames[0])
        if first.envelope is None:
            raise ValueError(f"captured frame without envelope: {first.error}")
        self.env = first.envelope
        self.payload = b"".join(bytes(codec.read_frame(f).data) for f in frames)

    def part_bytes(self) -> dict[str, bytes]:
        out, pos = {}, 0
        for layout in self.env.parts:
            out[layout.name] = self.payload[pos:pos + layout.nbytes]
            pos += layout.nbytes
        return out

    def digest(self) -> str:
        """sha256 as :func:`fedacq.link.ledger.payload_digest` defines it: the header bytes, then
        for each part in name order its name and its wire bytes."""
        h = hashlib.sha256(self.env.header)
        parts = self.part_bytes()
        for name in sorted(parts):
            h.update(name.encode())
            h.update(parts[name])
        return h.hexdigest()

    def array(self, name: str) -> np.ndarray:
        layout = next(p for p in self.env.parts if p.name == name)
        return np.frombuffer(self.part_bytes()[name], dtype=np.dtype(layout.dtype).newbyteorder("<")) \
            .reshape(tuple(layout.shape))

    def bigints(self, name: str) -> list[int]:
        layout = next(p for p in self.env.parts if p.name == name)
        raw, w = self.part_bytes()[name], layout.width
        return [int.from_bytes(raw[i:i + w], "big") for i in range(0, len(raw), w)]

    def header(self) -> dict[str, Any]:
        return json.loads(self.env.header)

    def summary(self) -> dict[str, Any]:
        return {"job": self.env.job, "seq": self.env.seq, "type": self.env.type, "sha256": self.digest(),
                "bytes": len(self.env.header) + len(self.payload)}


# -- the adversary's node -----------------------------------------------------------------

class Adversary:
    """A PartyLink server that records raw frames, and a client to the honest node."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        self.cfg = cfg
        self.party, self.peer = cfg["party"], cfg["peer"]
        certs = Path(cfg["certs"])
        self.tls = TlsFiles(certs / "ca.pem", certs / f"{self.party}.pem", certs / f"{self.party}.key")
        self.work = Path(cfg["work_dir"])
        self.work.mkdir(parents=True, exist_ok=True)
        self.router = Router()
        self.servicer = LinkServicer(self.party, self.peer, self.router, on_propose=self._on_propose)
        self.captured: list[list[bytes]] = []
        self.refuse: set[str] = set()  # jobs whose every message this side refuses (as a broken peer would)
        self._lock = threading.Lock()
        self.on_propose: Callable[[str], tuple[bool, str]] = lambda text: (False, "not expecting a job")
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=[("grpc.max_receive_message_length", MAX_FRAME_BYTES),
                                           ("grpc.max_send_message_length", MAX_FRAME_BYTES)])
        self._add_handlers()
        self.port = self.server.add_secure_port(f"127.0.0.1:{cfg['port']}",
                                                fedacq.crypto.tls.server_credentials(self.tls))
        if self.port == 0:
            raise RuntimeError(f"adversary cannot listen on port {cfg['port']}")
        self.server.start()
        self.client = PeerClient(self.party, self.peer, cfg["peer_address"], self.tls)

    def _on_propose(self, text: str) -> tuple[bool, str]:
        return self.on_propose(text)

    def _add_handlers(self) -> None:
        raw_frame = lambda wire: (bytes(wire), codec.read_frame(wire))  # noqa: E731

        def deliver(request: tuple[bytes, codec.WireFrame], context: grpc.ServicerContext) -> pb.Ack:
            env = request[1].envelope
            if env is not None and env.job in self.refuse:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{self.party} refuses {env.type!r} (on purpose)")
            ack = self.servicer.Deliver(request[1], context)
            self._record([request[0]])
            return ack

        def deliver_stream(requests: Iterator[tuple[bytes, codec.WireFrame]],
                           context: grpc.ServicerContext) -> pb.Ack:
            raws: list[bytes] = []

            def frames() -> Iterator[codec.WireFrame]:
                for raw, wire in requests:
                    raws.append(raw)
                    yield wire
            ack = self.servicer.DeliverStream(frames(), context)
            self._record(raws)
            return ack

        unary, stream = grpc.unary_unary_rpc_method_handler, grpc.stream_unary_rpc_method_handler
        handlers = {
            "Deliver": unary(deliver, request_deserializer=raw_frame,
                             response_serializer=pb.Ack.SerializeToString),
            "DeliverStream": stream(deliver_stream, request_deserializer=raw_frame,
                                    response_serializer=pb.Ack.SerializeToString),
            "ProposeJob": unary(self.servicer.ProposeJob, request_deserializer=pb.JobDocument.FromString,
                                response_serializer=pb.JobDecision.SerializeToString),
            "Ping": unary(self.servicer.Ping, request_deserializer=pb.PingRequest.FromString,
                          response_serializer=pb.PingReply.SerializeToString),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("fedacq.v1.PartyLink",
                                                                                   handlers),))

    def _record(self, raws: list[bytes]) -> None:
        with self._lock:
            self.captured.append(raws)

    def received(self, job: str) -> list[RawMessage]:
        with self._lock:
            frames = list(self.captured)
        return [m for m in (RawMessage(f) for f in frames) if m.env.job == job]

    # -- talking to the honest node ------------------------------------------------------
    def propose(self, doc: dict[str, Any] | str) -> dict[str, Any]:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        try:
            decision = self.client.stub.ProposeJob(pb.JobDocument(json=text), timeout=60, wait_for_ready=True)
        except grpc.RpcError as exc:
            return {"accepted": False, "code": exc.code().name, "reason": exc.details()}
        return {"accepted": decision.accepted, "code": "OK", "reason": decision.reason}

    def deliver(self, frames: list[bytes]) -> dict[str, Any]:
        """Send hand-built frames as one message; the honest node's verdict."""
        try:
            if len(frames) == 1:
                self.client.deliver(frames[0], timeout=60, wait_for_ready=True)
            else:
                self.client.deliver_stream(iter(frames), timeout=60, wait_for_ready=True)
        except grpc.RpcError as exc:
            return {"code": exc.code().name, "details": exc.details()}
        return {"code": "OK", "details": ""}

    def health(self, job: str = "") -> dict[str, Any]:
        reply = self.client.ping(job, timeout=10)
        return {"party": reply.party, "job_known": reply.job_known}

    def link(self, job: str) -> GrpcLink:
        inbox = self.router.open(job)
        return GrpcLink(self.party, self.peer, job, self.client, inbox, liveness_interval=0.5)

    def wait_job_gone(self, job: str, timeout: float = 60.0) -> bool:
        """Until the honest node no longer runs ``job`` (it failed or finished)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if not self.health(job)["job_known"]:
                return True
            time.sleep(0.1)
        return False

    def drain(self, link: GrpcLink, timeout: float, limit: int | None = None) -> dict[str, Any]:
        """Receive whatever the honest node still sends until it gives up on the job (or ``limit``
        messages arrived: then this side walks away, and the honest node notices at its next ping)."""
        got: list[str] = []
        try:
            while limit is None or len(got) < limit:
                got.append(link.recv(_all_types(), timeout=timeout).type)
        except (LinkError, MessageError) as exc:
            return {"received": got, "ended": f"{type(exc).__name__}: {exc}"}
        return {"received": got, "ended": f"stopped after {limit} message(s)"}

    def stop(self) -> None:
        self.client.close()
        self.server.stop(0.5).wait()


def _all_types() -> list[str]:
    """Every registered message type (protocol modules register theirs on import)."""
    from fedacq.link import message

    return list(message._REGISTRY)


def _import_protocols() -> None:
    """Every message schema the honest node knows, so this side can build and read them all."""
    for module in ("fedacq.psi.ecdh_psi", "fedacq.learn.secureboost", "fedacq.learn.hetero_lr",
                   "fedacq.node.echo"):
        __import__(module)


# -- scenarios: crafted jobs ----------------------------------------------------------------

def propose(adv: Adversary, args: dict[str, Any]) -> dict[str, Any]:
    """ProposeJob with each of ``args["docs"]`` (a dict, or raw text); ``end_accepted`` ends the
    jobs the honest node accepted with a short ``psi.hello`` (the honest node is a platform)."""
    docs = list(args["docs"])
    if "huge_json_bytes" in args:
        docs.append("{" + " " * int(args["huge_json_bytes"]) + "}")
    if "deep_json" in args:
        depth = int(args["deep_json"])
        docs.append(json.dumps({"id": "deep", "protocol": "psi", "initiator": adv.party})[:-1]
                    + ', "params": {"x": ' + "[" * depth + "]" * depth + "}}")
    decisions = [adv.propose(d) for d in docs]
    ended = []
    for doc, decision in zip(docs, decisions):
        if decision["accepted"] and args.get("end_accepted"):
            job = doc["id"]
            _tiny_hello(adv, job)
            ended.append(adv.wait_job_gone(job))
    return {"decisions": decisions, "ended": ended, "health": adv.health()}


def _tiny_hello(adv: Adversary, job: str, sizes: list[int] | None = None) -> None:
    """End a PSI job at an honest platform: a ``psi.hello`` it must refuse at once (a job that
    ended meanwhile is ended)."""
    link = adv.link(job)
    try:
        link.send(_psi_hello(sizes or [1]))
    except LinkError as exc:
        if "has no running job" not in str(exc):
            raise
    finally:
        adv.router.close(job)


def _psi_hello(sizes: list[int], **override: Any) -> Message:
    header = {"version": 1, "mode": "balanced", "salt": os.urandom(32).hex(), "kinds": ["str"] * len(sizes),
              "sizes": sizes, "reveal_to": "lender", "min_intersection": 100, "have_set": ""}
    header.update(override)
    return Message("psi.hello", header, step="psi/hello")


def psi_lender(adv: Adversary, args: dict[str, Any]) -> dict[str, Any]:
    """Propose ``args["job"]`` to the honest platform, then play the lender: honestly
    (``ids_csv``), or with one crafted first message (``first``: type, header)."""
    from fedacq.psi import LenderSetStore, psi_lender as run_psi

    job = args["job"]
    decision = adv.propose(job)
    if not decision["accepted"]:
        return {"decision": decision}
    link = adv.link(job["id"])
    out: dict[str, Any] = {"decision": decision}
    try:
        if "first" in args:
            first = args["first"]
            header = dict(first["header"])
            if first["type"] == "psi.hello":
                header = _psi_hello(header.pop("sizes"), **header).header
            link.send(Message(first["type"], header, step="crafted"))
            out.update(adv.drain(link, timeout=30, limit=1))
        else:
            p = job["params"]
            table = pd.read_csv(args["ids_csv"], dtype=str)
            store = LenderSetStore(adv.work / "psi_platform_sets")
            result = run_psi(link, table, list(p["id_columns"]), mode=p["mode"], reveal_to=p["reveal_to"],
                             min_intersection=p["min_intersection"], set_store=store)
            out["intersection"] = result.size
    except Exception as exc:  # noqa: BLE001 - what the adversary saw is the result
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        adv.router.close(job["id"])
    out["gone"] = adv.wait_job_gone(job["id"])
    return out


def run_lender_hello(adv: Adversary, args: dict[str, Any]) -> dict[str, Any]:
    """Propose a valid ``run`` job (SecureBoost or hetero LR), run the PSI honestly, then send
    the model's hello with a key of ``hello_key_bits`` (and whatever ``claims`` it adds)."""
    from fedacq.crypto.paillier import generate_keypair
    from fedacq.learn.histogram import PackingLayout
    from fedacq.learn.run import split_positions
    from fedacq.psi import psi_lender as run_psi

    job = args["job"]
    p = job["params"]
    decision = adv.propose(job)
    if not decision["accepted"]:
        return {"decision": decision}
    link = adv.link(job["id"])
    out: dict[str, Any] = {"decision": decision}
    try:
        table = pd.read_csv(args["ids_csv"], dtype={p["id_column"]: str})
        rows = run_psi(link, table[[p["id_column"]]], [p["id_column"]],
                       min_intersection=p["min_intersection"]).rows
        train, valid = split_positions(len(rows), p["validation_fraction"], p["seed"])
        bits = int(args["hello_key_bits"])
        pk, _ = generate_keypair(bits, insecure_test_key=True)  # the attack: a key the job did not agree to
        params = {**p["model_params"], "mode": p["mode"], "key_bits": bits, "random_state": p["seed"],
                  **args.get("claims", {})}
        config = {"params": params, "public_key": pk.to_json(), "n_rows": len(train), "n_eval_rows": len(valid),
                  **args.get("claims", {})}
        if p["model"] == "secureboost":
            config["layout"] = PackingLayout.for_rows(len(train)).to_header()
            hello = Message("sb.hello", {"config": json.dumps(config)}, step="hello")
        else:
            hello = Message("hlr.hello", {"config": json.dumps(config)}, step="hello")
        link.send(hello)
        out.update(adv.drain(link, timeout=30, limit=1))
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        adv.router.close(job["id"])
    out["gone"] = adv.wait_job_gone(job["id"])
    return out


def hetero_lr_lender_rows(adv: Adversary, args: dict[str, Any]) -> dict[str, Any]:
    """Propose a valid hetero LR ``run`` job, run the PSI honestly, then play a lender that encrypts
    ``2^T`` for the first row of the first batch and 0 for the others: with a mask per slot, that
    row's quantised features came back above the masks. Returns what it decrypted (hex), the
    training ids in order and the row's position, ``T`` and how the honest platform reacted to the
    honest decryption it sends back."""
    from fedacq.crypto.paillier import generate_keypair
    from fedacq.learn.hetero_lr import batches
    from fedacq.learn.run import split_positions
    from fedacq.link.message import BigInts
    from fedacq.psi import psi_lender as run_psi

    job, T = args["job"], int(args["T"])
    p = job["params"]
    decision = adv.propose(job)
    if not decision["accepted"]:
        return {"decision": decision}
    link = adv.link(job["id"])
    out: dict[str, Any] = {"decision": decision, "T": T}
    try:
        table = pd.read_csv(args["ids_csv"], dtype={p["id_column"]: str})
        rows = run_psi(link, table[[p["id_column"]]], [p["id_column"]],
                       min_intersection=p["min_intersection"]).rows
        train, valid = split_positions(len(rows), p["validation_fraction"], p["seed"])
        ids = table[p["id_column"]].to_numpy()[np.asarray(rows)[train]]
        pk, sk = generate_keypair(int(p["key_bits"]))
        params = {**p["model_params"], "mode": p["mode"], "key_bits": int(p["key_bits"]), "random_state": p["seed"]}
        config = {"params": params, "public_key": pk.to_json(), "n_rows": len(train), "n_eval_rows": len(valid)}
        link.send(Message("hlr.hello", {"config": json.dumps(config)}, step="hello"))
        d_p = link.recv("hlr.hello_reply").header["n_features"]
        batch = batches(len(train), int(params["batch_size"]), int(p["seed"]), 0)[0]
        link.recv("hlr.logits")
        plain = [1 << T] + [0] * (len(batch) - 1)  # the attack: one row far beyond |r| <= 1
        link.send(Message("hlr.residuals", {"epoch": 0, "batch": 0, "step_size": 0.1},
                          {"residuals": pk.encrypt_raw(plain).to_bigints()}, step="epoch0/batch0"))
        gradient = link.recv("hlr.gradient")
        decrypted = sk.decrypt_raw(pk.vector_from_bigints(gradient.parts["gradient"]))
        out.update({"d_p": d_p, "train_ids": ids.tolist(), "target": int(batch[0]), "n_hex": format(int(pk.n), "x"),
                    "decrypted": [format(v, "x") for v in decrypted],
                    "gradient_header": gradient.header})
        link.send(Message("hlr.unmask", {"epoch": 0, "batch": 0},
                          {"values": BigInts(decrypted, (pk.n_bits + 7) // 8)}, step="epoch0/batch0"))
        out.update(adv.drain(link, timeout=30))
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    finally:
        adv.router.close(job["id"])
    out["gone"] = adv.wait_job_gone(job["id"])
    return out


# -- scenarios: crafted messages --------------------------------------------------------------

def _crafted(case: str, job: str, adv: Adversary) -> list[bytes]:
    """The frames of one malformed message for ``job`` at the honest node."""
    me, rnd = adv.party, random.Random(case)
    result = lambda header, parts=(), data=b"", sender=me: [frame(  # noqa: E731
        envelope(job, "psi.result", header, list(parts), sender), data)]
    tokens = lambda shape, nbytes: {"name": "tokens", "kind": "ndarray", "dtype": "int64",  # noqa: E731
                                    "shape": shape, "nbytes": nbytes}
    if case == "deep_json":
        depth = 30_000
        return result(b'{"size": ' + b"[" * depth + b"]" * depth + b"}")
    if case == "big_int_header":
        return result(b'{"size": 1' + b"0" * 5000 + b"}")
    if case == "dims70":
        return result(b'{"size": 1}', [tokens([1] * 70, 8)], b"\0" * 8)
    if case == "shape_2_62_by_0":
        return result(b'{"size": 0}', [tokens([2 ** 62, 0], 0)])
    if case == "declared_256mib_no_data":
        return result(b'{"size": 1}', [tokens([2 ** 25], 2 ** 28)])
    if case == "bigint_width_16mib":
        part = {"name": "residuals", "kind": "bigints", "width": 2 ** 24, "nbytes": 2 ** 24}
        return [frame(envelope(job, "hlr.residuals", b'{"epoch": 0, "batch": 0, "step_size": 0.1}', [part], me))]
    if case == "unknown_type":
        return [frame(envelope(job, "evil.exec", b"{}", [], me))]
    if case == "sender_is_honest_party":
        return result(b'{"size": 1}', sender=adv.peer)
    if case == "job_not_running":
        return [frame(envelope("no-such-job", "psi.result", b'{"size": 1}', [], me))]
    if case == "header_not_json":
        return result(b"\xff\xfe not json")
    if case == "second_envelope":
        env = envelope(job, "psi.result", b'{"size": 1}', [tokens([2], 16)], me)
        return [frame(env, b"\0" * 8), frame(env, b"\0" * 8)]
    if case == "more_data_than_declared":
        return result(b'{"size": 1}', [tokens([1], 8)], b"\0" * 64)
    if case.startswith("random_bytes"):
        return [rnd.randbytes(rnd.randint(1, 512))]
    raise ValueError(f"unknown crafted case {case!r}")


def crafted_message(adv: Adversary, args: dict[str, Any]) -> dict[str, Any]:
    """Start a PSI job at the honest platform (``args["job"]``) so that messages reach its decoder,
    send the crafted message ``args["case"]`` for it, then end the job and check the node is up."""
    job = args["job"]
    decision = adv.propose(job)
    if not decision["accepted"]:
        return {"decision": decision}
    verdicts = [adv.deliver(_crafted(case, job["id"], adv)) for case in args["cases"]]
    alive = adv.health(job["id"])
    _tiny_hello(adv, job["id"])
    return {"decision": decision, "verdicts": verdicts, "job_known_after": alive["job_known"],
            "gone": adv.wait_job_gone(job["id"]), "health": adv.health()}


def _value_of(typ: Any) -> Any:
    """A value of a header field's declared type (the first, if several)."""
    typ = typ[0] if isinstance(typ, tuple) else typ
    return {int: 1, float: 0.5, str: "x", bool: True, list: [], dict: {}}.get(typ, None)


def _random_envelope(rnd: random.Random, job: str, sender: str) -> list[bytes]:
    """A structurally plausible but random message: registered or unknown type, random parts,
    dtypes, shapes (up to 70 dimensions, huge or zero sizes), widths, headers and payloads."""
    from fedacq.link import message

    types = list(message._REGISTRY)
    msg_type = rnd.choice(types + ["x.unknown", ""])
    spec = message._REGISTRY.get(msg_type)
    names = list(spec.parts) if spec is not None and spec.parts else ["p"]
    fields = dict(spec.header) if spec is not None else {"z": int}
    valid = {k: _value_of(t) for k, t in fields.items()}
    headers = [b"{}", b"[]", b"null", b'{"a": ' + b"[" * 5000 + b"]" * 5000 + b"}", b'{"n": 1' + b"0" * 4400 + b"}",
               json.dumps({k: rnd.choice([0, -1, 2 ** 70, "x", None, [], 1.5]) for k in fields}).encode(),
               rnd.randbytes(rnd.randint(0, 64))] + [header_bytes(valid)] * 7  # mostly past the header checks
    parts = []
    for _ in range(rnd.randint(0, 3)):
        name = rnd.choice(names + ["extra"])
        if rnd.random() < 0.5:
            shape = [rnd.choice([0, 1, 2, 3, 2 ** 31, 2 ** 62]) for _ in range(rnd.choice([0, 1, 2, 3, 64, 65, 70]))]
            parts.append({"name": name, "kind": rnd.choice(["ndarray", "bigints", "object"]),
                          "dtype": rnd.choice(["int64", "uint8", "float64", "object", "V8", "<f8", ""]),
                          "shape": shape, "nbytes": rnd.choice([0, 8, 2 ** 28, 2 ** 40, 2 ** 63 - 1])})
        else:
            parts.append({"name": name, "kind": rnd.choice(["bigints", "ndarray"]),
                          "width": rnd.choice([0, 1, 64, 2 ** 24, 2 ** 31 - 1]),
                          "nbytes": rnd.choice([0, 64, 128, 2 ** 24])})
    data = rnd.randbytes(rnd.choice([0, 8, 64, 1000]))
    return [frame(envelope(job, msg_type, rnd.choice(headers), parts, sender, seq=rnd.randint(0, 3)), data)]


def fuzz_envelopes(adv: Adversary, args: dict[str, Any]) -> dict[str, Any]:
    """``cases`` random envelopes into running PSI jobs at the honest platform (a new job whenever
    one ends, e.g. because a random message happened to be valid); the status codes seen."""
    rnd = random.Random(args.get("seed", 0))
    codes: dict[str, int] = {}
    examples: dict[str, str] = {}
    jobs: list[str] = []

    def new_job() -> str:
        doc = {**args["job"], "id": f"{args['job']['id']}-{len(jobs)}"}
        decision = adv.propose(doc)
        if not decision["accepted"]:
            raise RuntimeError(f"fuzz job refused: {decision}")
        jobs.append(doc["id"])
        return doc["id"]
    job = new_job()
    for _ in range(int(args["cases"])):
        verdict = adv.deliver(_random_envelope(rnd, job, adv.party))
        codes[verdict["code"]] = codes.get(verdict["code"], 0) + 1
        examples.setdefault(verdict["code"], verdict["details"])
        if verdict["code"] in ("OK", "FAILED_PRECONDITION"):  # queued (the job will stop) or the job is gone
            if adv.health(job)["job_known"]:
                _tiny_hello(adv, job)
            adv.wait_job_gone(job)
            job = new_job()
    if adv.health(job)["job_known"]:
        _tiny_hello(adv, job)
    gone = adv.wait_job_gone(job)
    return {"codes": codes, "examples": examples, "jobs": jobs, "gone": gone, "health": adv.health()}


# -- scenarios: the honest node proposes, the adversary plays its role ------------------------

def serve_job(adv: Adversary, args: dict[str, Any], emit: Callable[[dict], None]) -> dict[str, Any]:
    """Accept the honest node's next proposal and play ``args["behaviour"]`` in it."""
    from fedacq.node.jobs import spec_from_json

    accepted: dict[str, Any] = {}
    ready = threading.Event()

    def on_propose(text: str) -> tuple[bool, str]:
        spec = spec_from_json(text, "proposal")
        accepted["spec"] = spec
        accepted["link"] = adv.link(spec.id)  # the inbox exists before the honest node hears "accepted"
        ready.set()
        return True, "accepted"
    adv.on_propose = on_propose
    emit({"event": "started"})
    try:
        if not ready.wait(float(args.get("timeout", 120))):
            return {"error": "no proposal arrived"}
    finally:
        adv.on_propose = lambda text: (False, "not expecting a job")
    spec, link = accepted["spec"], accepted["link"]
    out: dict[str, Any] = {"job": spec.id, "params": spec.params}
    try:
        out.update(BEHAVIOURS[args["behaviour"]](adv, spec, link, args))
    except Exception as exc:  # noqa: BLE001
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    finally:
        adv.router.close(spec.id)
    out["gone"] = adv.wait_job_gone(spec.id)
    out["received"] = [m.summary() for m in adv.received(spec.id)]
    return out


def _bad_fingerprint(adv: Adversary, spec: Any, link: GrpcLink, args: dict[str, Any]) -> dict[str, Any]:
    """Answer an unbalanced PSI's hello with a fingerprint that is not 16 hex digits."""
    hello = link.recv("psi.hello")
    n = sum(hello.header["sizes"])
    link.send(Message("psi.hello_ack", {"sizes": [n], "n_rows": n, "min_intersection": 100,
                                        "fingerprint": args["fingerprint"], "salt": os.urandom(32).hex(),
                                        "send_set": True}, step="psi/hello_ack"))
    return adv.drain(link, timeout=30)


def _refuse_everything(adv: Adversary, spec: Any, link: GrpcLink, args: dict[str, Any]) -> dict[str, Any]:
    """Refuse every message of the job: the honest node's sends fail, so its egress ledger must
    have no line for them."""
    adv.refuse.add(spec.id)
    try:
        return adv.drain(link, timeout=30)
    finally:
        adv.refuse.discard(spec.id)


def _other_protocol(adv: Adversary, spec: Any, link: GrpcLink, args: dict[str, Any]) -> dict[str, Any]:
    """Answer a PSI hello with a valid message of another protocol."""
    link.recv("psi.hello")
    link.send(Message(args["type"], args["header"], step="crafted"))
    return adv.drain(link, timeout=30)


def _role_context(adv: Adversary, spec: Any, link: GrpcLink, table: str) -> Any:
    from fedacq.node.protocols import JobContext

    work = adv.work / spec.id
    return JobContext(party=adv.party, role=adv.party, peer=adv.peer, job_id=spec.id, link=link,
                      datasets={"table": Path(table)}, params=dict(spec.params), work_dir=work / "work",
                      keys_dir=work / "keys", mlflow_store=str(work / "mlruns"), registered={"table": "table"})


def _secureboost_platform(adv: Adversary, spec: Any, link: GrpcLink, args: dict[str, Any]) -> dict[str, Any]:
    """Play the platform of a prospect SecureBoost job honestly, then try to remove the leaf noise
    the way the old code allowed: regenerate it from ``default_rng(random_state)``."""
    from fedacq.learn.run_node import PROTOCOL

    PROTOCOL.roles["platform"](_role_context(adv, spec, link, args["table"]))
    got = {m.env.type: m for m in adv.received(spec.id)}
    config = json.loads(got["sb.hello"].header()["config"])
    params = config["params"]
    finish = got["sb.finish"]
    released = finish.array("leaf_values").astype(np.float64)
    noise = params["leaf_noise"]
    n_trees = finish.header()["n_trees"]
    # the old _leaf_noise: Laplace(lr / reg_lambda / (epsilon / n_trees)) drawn from the training rng,
    # which with subsample = colsample_bytree = 1 drew nothing before it
    scale = params["learning_rate"] / params["reg_lambda"] / (noise["epsilon"] / n_trees)
    regenerated = np.random.default_rng(params["random_state"]).laplace(0.0, scale, released.size)
    return {"released": released.tolist(), "attack": (released - regenerated).tolist(), "scale": scale,
            "config_keys": sorted(config), "param_keys": sorted(params)}


def read_row_above_slots(value: int, n: int, T: int, slot_bits: int, count: int) -> list[int]:
    """The attack of a lender that encrypted ``2^T`` for one row t and 0 for the others: read the
    row's quantised features off what it decrypted, ``low + 2^T * sum_j K_tj 2^(j * slot_bits)``
    (``low`` below ``2^T``: the masked sums), as signed digits of the part above ``2^T``."""
    signed = value - n if value > n // 2 else value  # a negative total wraps to n - |total|
    high, out = signed >> T, []
    for _ in range(count):
        digit = high % (1 << slot_bits)
        digit -= (1 << slot_bits) if digit >= 1 << (slot_bits - 1) else 0
        out.append(int(digit))
        high = (high - digit) >> slot_bits
    return out


class _RecordingSecrets:
    """The platform's own masks, recorded: this side is the adversary, its randomness is its own."""

    def __init__(self) -> None:
        import secrets

        self._secrets = secrets
        self.draws: list[int] = []

    def randbelow(self, n: int) -> int:
        value = self._secrets.randbelow(n)
        self.draws.append(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._secrets, name)


def _hetero_lr_platform(adv: Adversary, spec: Any, link: GrpcLink, args: dict[str, Any]) -> dict[str, Any]:
    """Play the platform of a hetero LR job honestly, keeping its masks (one uniform in Z_n per packed
    gradient ciphertext) and its training rows; then unmask each batch's gradient as the platform
    does, solve ``K_B^T r = g`` for the residuals and read labels off their sign."""
    import fedacq.psi
    from fedacq.crypto.paillier import PublicKey, compress_capacity
    from fedacq.learn import hetero_lr
    from fedacq.link.message import BigInts
    from fedacq.learn.run_node import PROTOCOL

    recorder = _RecordingSecrets()
    hetero_lr.secrets = recorder
    seen: dict[str, Any] = {}
    fit, psi = hetero_lr.HeteroLRPlatform.fit, fedacq.psi.psi_platform

    def fit_and_keep(self: Any, link_: Any, X: np.ndarray, eval_X: np.ndarray | None = None) -> Any:
        seen["X"], seen["model"] = np.asarray(X, dtype=np.float64), self
        return fit(self, link_, X, eval_X)

    def psi_and_keep(*a: Any, **kw: Any) -> Any:
        seen["psi"] = result = psi(*a, **kw)
        return result
    hetero_lr.HeteroLRPlatform.fit, fedacq.psi.psi_platform = fit_and_keep, psi_and_keep
    try:
        PROTOCOL.roles["platform"](_role_context(adv, spec, link, args["table"]))
    finally:
        hetero_lr.HeteroLRPlatform.fit, fedacq.psi.psi_platform = fit, psi
        hetero_lr.secrets = recorder._secrets
    model, X = seen["model"], seen["X"]
    table = pd.read_csv(args["table"], dtype={spec.params["id_column"]: str})
    ids = table[spec.params["id_column"]].to_numpy()[seen["psi"].rows]
    if spec.params["validation_fraction"] != 0:
        raise ValueError("this attack maps rows to ids only without a validation split")
    Kq = model._quantize(X)
    K = Kq.astype(np.float64)
    n, d = K.shape
    config = json.loads(next(m for m in adv.received(spec.id) if m.env.type == "hlr.hello").header()["config"])
    p, pk = config["params"], PublicKey.from_json(config["public_key"])
    batch_size, seed = int(p["batch_size"]), int(p["random_state"])
    offset_bits, slot_bits = hetero_lr.gradient_layout(Kq, max(map(len, hetero_lr.batches(n, batch_size, seed, 0))),
                                                       int(p["residual_frac_bits"]))
    per_batch = -(-d // compress_capacity(pk, slot_bits))  # packed ciphertexts, one mask each
    residuals = [m for m in adv.received(spec.id) if m.env.type == "hlr.residuals"]
    unmasks = [m for m in adv.received(spec.id) if m.env.type == "hlr.unmask"]
    draws = iter(recorder.draws)
    out_batches = []
    for res, unmask in zip(residuals, unmasks):
        h = res.header()
        rows = hetero_lr.batches(n, batch_size, seed, h["epoch"])[h["batch"]]
        masks = [next(draws) for _ in range(per_batch)]
        values = BigInts(unmask.bigints("values"), (pk.n_bits + 7) // 8)
        g = np.array(hetero_lr.unmask_gradient(pk, values, masks, offset_bits, slot_bits, d), dtype=np.float64)
        KB = K[rows]
        r, *_ = np.linalg.lstsq(KB.T, g, rcond=None)
        out_batches.append({"epoch": h["epoch"], "batch": h["batch"], "ciphertexts": len(res.bigints("residuals")),
                            "rows": len(rows), "rank": int(np.linalg.matrix_rank(KB.T)),
                            "ids": ids[rows].tolist(), "labels_guess": (r < 0).astype(int).tolist()})
    return {"n": n, "d_p": d, "batch_size": int(p["batch_size"]), "batches": out_batches}


BEHAVIOURS: dict[str, Callable[..., dict[str, Any]]] = {
    "bad_fingerprint": _bad_fingerprint,
    "other_protocol": _other_protocol,
    "refuse_everything": _refuse_everything,
    "secureboost_platform": _secureboost_platform,
    "hetero_lr_platform": _hetero_lr_platform,
}

SCENARIOS: dict[str, Callable[..., dict[str, Any]]] = {
    "propose": propose,
    "psi_lender": psi_lender,
    "run_lender_hello": run_lender_hello,
    "hetero_lr_lender_rows": hetero_lr_lender_rows,
    "crafted_message": crafted_message,
    "fuzz_envelopes": fuzz_envelopes,
}


def _run(adv: Adversary, request: dict[str, Any], emit: Callable[[dict], None]) -> dict[str, Any]:
    name, args = request["scenario"], request.get("args", {})
    try:
        if name == "serve_job":
            return serve_job(adv, args, emit)
        emit({"event": "started"})
        return SCENARIOS[name](adv, args)
    except Exception as exc:  # noqa: BLE001 - the test reads the failure
        return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="JSON: party, peer, certs, port, peer_address, "
                                                        "work_dir and a scenario (or serve: true)")
    cfg = json.loads(parser.parse_args().config)
    _import_protocols()
    out = sys.stdout
    lock = threading.Lock()

    def emit(doc: dict[str, Any]) -> None:
        with lock:
            out.write(json.dumps(doc, default=str) + "\n")
            out.flush()
    adv = Adversary(cfg)
    try:
        if not cfg.get("serve"):
            emit({"result": _run(adv, cfg, emit)})
            return 0
        emit({"event": "ready", "port": adv.port})
        for line in sys.stdin:
            if line.strip():
                emit({"result": _run(adv, json.loads(line), emit)})
        return 0
    finally:
        adv.stop()


if __name__ == "__main__":
    sys.exit(main())
