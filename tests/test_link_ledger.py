"""A party's ledger: digests, the hash chain, fsynced appends, and when links write lines."""

import json
import threading

import numpy as np
import pytest

from fedacq.link import link as link_module
from fedacq.link.audit import read_chain
from fedacq.link.ledger import GENESIS, LedgerError, PartyLedger, line_hash, message_bytes, payload_digest
from fedacq.link.link import LinkError
from fedacq.link.memory import memory_pair
from fedacq.link.message import BigInts, Message, MessageError, MessageSpec, PartSpec, register

register(MessageSpec("test.ledger", optional_header={"i": int},
                     parts={"x": PartSpec(dtypes=("float64",), optional=True),
                            "c": PartSpec(kind="bigints", optional=True)}),
         MessageSpec("test.ledger.other"))


def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_digest_of_empty_two_dimensional_parts(tmp_path):
    # A SecureBoost histogram request for a level with no node left to split sends (0, k) arrays.
    msg = Message("t", {"a": 1}, {"x": np.zeros((0, 3)), "y": np.zeros((3, 0), dtype=np.int64)})
    digest, nbytes = payload_digest(msg)
    assert nbytes == message_bytes(msg)
    PartyLedger(tmp_path, "lender").record_sent("job", 0, "platform", msg)
    (entry,) = lines(tmp_path / "egress.jsonl")
    assert entry["sha256"] == digest


def test_digest_and_dtype_do_not_depend_on_byte_order(tmp_path):
    # the codec sends little-endian bytes; the receiver's copy is little-endian whatever the sender held
    big, little = np.arange(5, dtype=">i4"), np.arange(5, dtype="<i4")
    assert payload_digest(Message("t", parts={"x": big})) == payload_digest(Message("t", parts={"x": little}))
    ledger = PartyLedger(tmp_path, "lender")
    ledger.record_sent("j", 0, "platform", Message("t", parts={"x": big}))
    ledger.record_received("j", 0, "platform", Message("t", parts={"x": little}))
    (sent,), (got,) = lines(tmp_path / "egress.jsonl"), lines(tmp_path / "ingress.jsonl")
    assert sent["parts"] == got["parts"] == {"x": {"kind": "ndarray", "dtype": "int32", "shape": [5]}}


def test_lines_chain_and_a_reopened_ledger_continues_the_chain(tmp_path):
    ledger = PartyLedger(tmp_path / "state", "lender")
    assert (tmp_path / "state" / "egress.jsonl").exists() and (tmp_path / "state" / "ingress.jsonl").exists()
    for seq in range(3):
        ledger.record_sent("j", seq, "platform", Message("t", {"i": seq}))
    ledger.close()
    reopened = PartyLedger(tmp_path / "state", "lender")  # a restarted node
    reopened.record_sent("j", 3, "platform", Message("t", {"i": 3}))
    entries = lines(tmp_path / "state" / "egress.jsonl")
    assert [e["seq"] for e in entries] == [0, 1, 2, 3]
    assert entries[0]["prev"] == GENESIS
    for before, after in zip(entries, entries[1:]):
        assert after["prev"] == before["hash"]
    assert all(e["hash"] == line_hash(e) for e in entries)
    assert not any("payload" in e for e in entries)
    assert read_chain(tmp_path / "state" / "egress.jsonl").problems == []


def test_two_writers_on_one_directory_keep_one_chain(tmp_path):
    # e.g. two jobs' links in one process, or a second object opened on the same state dir
    a, b = PartyLedger(tmp_path, "lender"), PartyLedger(tmp_path, "lender")

    def write(ledger, job):
        for seq in range(25):
            ledger.record_sent(job, seq, "platform", Message("t", {"i": seq}))

    threads = [threading.Thread(target=write, args=(ledger, job)) for ledger, job in ((a, "j1"), (b, "j2"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    chain = read_chain(tmp_path / "egress.jsonl")
    assert chain.problems == [] and len(chain.lines) == 50


def test_a_torn_last_line_is_reported_not_continued(tmp_path):
    ledger = PartyLedger(tmp_path, "lender")
    for seq in range(2):
        ledger.record_sent("j", seq, "platform", Message("t", {"i": seq}))
    ledger.close()
    path = tmp_path / "egress.jsonl"
    path.write_bytes(path.read_bytes()[:-20])  # a crash in the middle of writing line 2
    with pytest.raises(LedgerError, match=r"egress.jsonl: the last line \(line 2\) is torn"):
        PartyLedger(tmp_path, "lender")


def test_an_altered_last_line_is_not_continued(tmp_path):
    ledger = PartyLedger(tmp_path, "lender")
    ledger.record_sent("j", 0, "platform", Message("t", {"i": 0}))
    ledger.close()
    path = tmp_path / "egress.jsonl"
    path.write_text(path.read_text().replace('"bytes":7', '"bytes":8'))
    with pytest.raises(LedgerError, match=r"line 1\) does not carry the hash of its own content"):
        PartyLedger(tmp_path, "lender")


def ledgered_pair(tmp_path):
    ledgers = {p: PartyLedger(tmp_path / p, p) for p in ("lender", "platform")}
    return (*memory_pair("lender", "platform", job="j", ledgers=ledgers), tmp_path / "lender",
            tmp_path / "platform")


def test_memory_links_record_egress_and_ingress_with_the_same_digest(tmp_path):
    la, lb, a_dir, b_dir = ledgered_pair(tmp_path)
    la.send(Message("test.ledger", {"i": 1}, {"x": np.arange(4.0), "c": BigInts([5, 6], 8)}, step="s"))
    lb.recv("test.ledger", timeout=5)
    (sent,), (got,) = lines(a_dir / "egress.jsonl"), lines(b_dir / "ingress.jsonl")
    assert (sent["party"], sent["peer"], got["party"], got["peer"]) == ("lender", "platform", "platform", "lender")
    for name in ("job", "seq", "type", "step", "parts", "bytes", "sha256"):
        assert sent[name] == got[name], name
    assert lines(a_dir / "ingress.jsonl") == [] and lines(b_dir / "egress.jsonl") == []


def test_a_duplicate_is_recorded_once_and_a_refused_message_is_recorded(tmp_path):
    la, lb, _, b_dir = ledgered_pair(tmp_path)
    msg = Message("test.ledger", {"i": 1})
    la._transmit(0, msg)  # a retry after a lost acknowledgement re-sends the same seq
    la._transmit(0, msg)
    la._transmit(1, Message("test.ledger.other"))
    lb.recv("test.ledger", timeout=5)
    with pytest.raises(MessageError, match="expected \\['test.ledger'\\]"):
        lb.recv("test.ledger", timeout=5)  # it crossed the wire: on record, then refused
    assert [(e["seq"], e["type"]) for e in lines(b_dir / "ingress.jsonl")] == \
        [(0, "test.ledger"), (1, "test.ledger.other")]


@pytest.mark.parametrize("hash_alongside", [False, True])
def test_a_failed_send_leaves_no_egress_line(tmp_path, monkeypatch, hash_alongside):
    if hash_alongside:  # the path where a large payload is hashed while it is sent
        monkeypatch.setattr(link_module, "_HASH_ALONGSIDE_BYTES", 0)
    la, lb, a_dir, _ = ledgered_pair(tmp_path)
    la.send(Message("test.ledger", {"i": 0}, {"x": np.arange(3.0)}))

    def refused(seq, msg):
        raise LinkError("peer gone")

    monkeypatch.setattr(la, "_transmit", refused)
    with pytest.raises(LinkError):
        la.send(Message("test.ledger", {"i": 1}, {"x": np.arange(3.0)}))
    assert [e["seq"] for e in lines(a_dir / "egress.jsonl")] == [0]
