"""``fedacq audit verify``: broken chains and diverging ledgers are named; real traffic matches."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from fedacq.cli import main
from fedacq.crypto.tls import init_certs
from fedacq.link.audit import read_chain, verify
from fedacq.link.grpc_link import PeerEndpoint
from fedacq.link.ledger import PartyLedger, line_hash
from fedacq.link.link import LinkError
from fedacq.link.memory import memory_pair, run_parties
from fedacq.link.message import BigInts, Message, MessageError, MessageSpec, PartSpec, register

register(MessageSpec("test.audit", optional_header={"i": int},
                     parts={"x": PartSpec(dtypes=("float64",), optional=True),
                            "c": PartSpec(kind="bigints", optional=True)}))


def converse(a, b, rounds: int = 3, big: bool = False) -> None:
    """``a`` asks, ``b`` answers, ``rounds`` times; then ``b`` says goodbye."""
    def asker():
        for i in range(rounds):
            x = np.random.default_rng(i).standard_normal(300_000 if big and i == 0 else 10)
            a.send(Message("test.audit", {"i": i}, {"x": x, "c": BigInts([2 ** 200 + i], 32)}, step=f"r{i}"))
            a.recv("test.audit", timeout=30)
        a.recv("test.audit", timeout=30)

    def answerer():
        for _ in range(rounds):
            got = b.recv("test.audit", timeout=30)
            b.send(Message("test.audit", {"i": got.header["i"]}, {"x": got.parts["x"][:3]}))
        b.send(Message("test.audit", {"i": -1}))

    run_parties((asker,), (answerer,), timeout=60)


@pytest.fixture
def ledgers(tmp_path) -> tuple[Path, Path]:
    """Two parties' ledgers after two jobs over memory links."""
    parties = {p: PartyLedger(tmp_path / p, p) for p in ("lender", "platform")}
    for job in ("job-1", "job-2"):
        converse(*memory_pair("lender", "platform", job=job, ledgers=parties))
    return tmp_path / "lender", tmp_path / "platform"


def test_memory_links_ledgers_verify_and_match(ledgers) -> None:
    verdict = verify(*ledgers)
    assert verdict.ok, verdict.problems
    assert verdict.matched == 2 * (3 + 4)
    assert [(d.sender, d.receiver, d.sent, d.received) for d in verdict.directions] == \
        [("lender", "platform", 6, 6), ("platform", "lender", 8, 8)]


def edit_lines(path: Path, change) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(change(lines)))


def rehash(line: str, **fields) -> str:
    entry = {**json.loads(line), **fields}
    entry["hash"] = line_hash(entry)
    return json.dumps(entry) + "\n"


@pytest.mark.parametrize("change, first", [
    (lambda ls: [ls[0], ls[1].replace('"bytes":', '"bytes":1'), *ls[2:]], r"line 2: altered"),
    (lambda ls: [ls[0], rehash(ls[1], bytes=1), *ls[2:]], r"line 3: chain broken: .*the hash of line 2"),
    (lambda ls: [ls[0], *ls[2:]], r"line 2: chain broken: .*a line was deleted, inserted or moved"),
    (lambda ls: [ls[0], ls[2], ls[1], *ls[3:]], r"line 2: chain broken"),
    (lambda ls: [*ls[:-1], ls[-1][:-30]], r"line 6: torn last line .*the chain ends at line 5"),
    (lambda ls: [rehash(ls[0], prev="1" * 64), *ls[1:]], r"line 1: chain broken: .*the genesis value"),
    (lambda ls: [ls[0], "{not json\n", *ls[2:]], r"line 2: not a ledger line: not JSON"),
])
def test_a_broken_chain_is_named_by_file_and_line(ledgers, change, first) -> None:
    path = ledgers[0] / "egress.jsonl"
    assert not read_chain(path).problems
    edit_lines(path, change)
    problems = read_chain(path).problems
    assert problems and __import__("re").search(first, problems[0]), problems
    assert str(path) in problems[0]
    verdict = verify(*ledgers)
    assert not verdict.ok and verdict.problems[0] == problems[0]


def test_divergence_is_named_on_both_sides(ledgers) -> None:
    lender, platform = ledgers
    # the platform's record of the lender's 2nd message shows other bytes; its last ingress line is gone
    edit_lines(platform / "ingress.jsonl", lambda ls: [ls[0], rehash(ls[1], sha256="0" * 64), *ls[2:-1]])
    problems = read_chain(platform / "ingress.jsonl").problems
    assert "line 3: chain broken" in problems[0]  # the rewrite shows in its own chain first
    verdict = verify(lender, platform)
    match = [p for p in verdict.problems + verdict.unconfirmed if "differ" in p or "missing" in p]
    assert f"{lender / 'egress.jsonl'} line 2 and {platform / 'ingress.jsonl'} line 2 (job 'job-1' seq 1) " \
           "differ: sha256" in match[0]
    assert match[1].startswith(f"{lender / 'egress.jsonl'} line 6: lender sent job 'job-2' seq 2")
    assert match[1].endswith("(missing at platform: after its last line of the job, so either acknowledged "
                             "but never taken by its protocol before the job ended, or cut from its ledger)")
    edit_lines(platform / "ingress.jsonl", lambda ls: [*ls[:3], *ls[4:]])  # a gap, not the end
    assert f"{lender / 'egress.jsonl'} line 4: lender sent job 'job-2' seq 0 ('test.audit'), but " \
           f"{platform / 'ingress.jsonl'} has no line for it (missing at platform)" in verify(lender, platform).problems


def test_a_received_message_the_sender_has_no_record_of_is_extra(ledgers) -> None:
    lender, platform = ledgers
    edit_lines(platform / "egress.jsonl", lambda ls: ls[:-1])  # chain intact: the end is simply cut
    verdict = verify(lender, platform)
    # at the end of the conversation: what a platform killed after the acknowledgement leaves
    assert verdict.ok and verdict.unconfirmed == [
        f"{lender / 'ingress.jsonl'} line 8: lender received job 'job-2' seq 3 ('test.audit'), but "
        f"{platform / 'egress.jsonl'} has no line for it (extra at lender: platform has no record of it "
        "being acknowledged, after its last line of the job: it stopped between the acknowledgement and its "
        "ledger write, or the line was cut)"]
    edit_lines(platform / "egress.jsonl", lambda ls: [*ls[:-2], ls[-1]])  # inside the conversation: a problem
    assert any("extra at lender: platform has no record of it being acknowledged)" in p
               for p in verify(lender, platform).problems)


def test_cli_exit_codes_and_messages(ledgers, tmp_path, capsys) -> None:
    lender, platform = ledgers
    assert main(["audit", "verify", str(lender), str(platform)]) == 0
    out = capsys.readouterr().out
    assert "lender -> platform: 6 sent, 6 received, 6 matched" in out
    assert "OK: 14 messages matched in 2 job(s)" in out

    edit_lines(lender / "egress.jsonl", lambda ls: [ls[0], *ls[2:]])
    assert main(["audit", "verify", str(platform), str(lender)]) == 1
    out = capsys.readouterr().out
    assert "CHAIN BROKEN" in out and "FAILED: " in out
    assert f"{lender / 'egress.jsonl'} line 2: chain broken" in out

    assert main(["audit", "verify", str(lender), str(tmp_path)]) == 2
    assert "not a party's ledger (no egress.jsonl or ingress.jsonl)" in capsys.readouterr().err
    assert main(["audit", "verify", str(lender), str(lender)]) == 2
    assert "are both 'lender''s ledger" in capsys.readouterr().err


# -- over real gRPC links ------------------------------------------------------

@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return init_certs(["lender", "platform"], tmp_path_factory.mktemp("certs") / "ca")


def endpoints(certs, **platform_kw) -> tuple[PeerEndpoint, PeerEndpoint]:
    a = PeerEndpoint("lender", "platform", certs["lender"], "127.0.0.1:0", liveness_interval=0.5, retry_for=0.5)
    b = PeerEndpoint("platform", "lender", certs["platform"], "127.0.0.1:0", liveness_interval=0.5, **platform_kw)
    a.connect(f"127.0.0.1:{b.port}")
    b.connect(f"127.0.0.1:{a.port}")
    a.start(), b.start()
    return a, b


def test_grpc_links_ledgers_verify_and_match(certs, tmp_path) -> None:
    a, b = endpoints(certs)
    ledger_a, ledger_b = PartyLedger(tmp_path / "a", "lender"), PartyLedger(tmp_path / "b", "platform")
    try:
        jobs = [threading.Thread(target=converse, args=(a.link(job, ledger_a), b.link(job, ledger_b), 3, big))
                for job, big in (("g1", True), ("g2", False))]  # two jobs at once, one streamed message
        for t in jobs:
            t.start()
        for t in jobs:
            t.join()
    finally:
        a.stop(), b.stop()
    verdict = verify(tmp_path / "a", tmp_path / "b")
    assert verdict.ok, verdict.problems
    assert verdict.matched == 2 * (3 + 4)


def test_grpc_send_refused_or_unanswered_leaves_no_egress_line(certs, tmp_path) -> None:
    a, b = endpoints(certs, max_message_bytes=1000)  # the platform takes less than the lender sends
    ledger = PartyLedger(tmp_path / "a", "lender")
    la, lb = a.link("g", ledger), b.link("g", PartyLedger(tmp_path / "b", "platform"))
    try:
        la.send(Message("test.audit", {"i": 0}, {"x": np.zeros(10)}))
        assert lb.recv("test.audit", timeout=10).header == {"i": 0}
        with pytest.raises(MessageError, match="platform refused"):
            la.send(Message("test.audit", {"i": 1}, {"x": np.zeros(1000)}))  # INVALID_ARGUMENT
        b.stop()
        with pytest.raises(LinkError, match="UNAVAILABLE"):
            la.send(Message("test.audit", {"i": 2}))  # the peer is gone
    finally:
        a.stop(), b.stop()
    assert [e["seq"] for e in ledger.egress.entries()] == [0]
    verdict = verify(tmp_path / "a", tmp_path / "b")
    assert verdict.ok and verdict.matched == 1
