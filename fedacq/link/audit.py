"""Check two parties' ledgers: each chain intact, and what one sent is what the other received.

A party's ledger is a directory holding ``egress.jsonl`` and ``ingress.jsonl`` (see
:mod:`fedacq.link.ledger`). :func:`verify` reads both parties' ledgers and

1. checks every chain: each line parses, carries the hash of its own content, and its
   ``prev`` is the hash of the line before (the genesis value for the first); a torn
   last line (no end of line) is named as such;
2. matches A's egress against B's ingress, and B's egress against A's ingress, per
   ``(job, seq)``: a message one side sent and the other has no record of, a message
   received that the sender has no record of, and any difference in type, step, part
   shapes, byte count or digest is named with both files and line numbers.

A ledger may hold several jobs. Lines exchanged with a third party are counted and
left out of the match. Problems are listed in file order, so the first one printed is
the first place where the ledgers diverge. Only the chain's consistency can be checked
without the peer: a ledger cut short at its end, or rewritten as a whole, still chains;
the match against the peer's ledger is what catches that.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedacq.link.ledger import EGRESS_FILE, GENESIS, INGRESS_FILE, line_hash

#: what a ledger line must hold, with its type.
_FIELDS: dict[str, type] = {
    "party": str, "peer": str, "job": str, "seq": int, "type": str, "step": str, "parts": dict,
    "bytes": int, "sha256": str, "prev": str, "hash": str,
}
#: what must agree between a sender's egress line and the receiver's ingress line.
_MATCHED = ("type", "step", "parts", "bytes", "sha256")


@dataclass
class Line:
    number: int  # 1-based, in its file
    entry: dict[str, Any]


@dataclass
class Chain:
    """One ledger file: its well-formed lines and what is wrong with the chain."""

    path: Path
    count: int = 0
    lines: list[Line] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def _short(digest: object) -> str:
    return f"{str(digest)[:16]}…"


def _malformed(entry: Any) -> str | None:
    if not isinstance(entry, dict):
        return "not a JSON object"
    for name, kind in _FIELDS.items():
        if name not in entry:
            return f"no {name!r} field"
        if not isinstance(entry[name], kind) or isinstance(entry[name], bool):
            return f"{name!r} is {type(entry[name]).__name__}, not {kind.__name__}"
    return None


def read_chain(path: Path) -> Chain:
    """Read one ledger file line by line and check its chain."""
    chain = Chain(path)
    expected: str | None = GENESIS  # None: the line before was unreadable, its hash unknown
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, 1):
            chain.count = number
            where = f"{path} line {number}"
            if not raw.endswith(b"\n"):
                chain.problems.append(f"{where}: torn last line (no end of line: a crash while it was "
                                      f"written?); the chain ends at line {number - 1}")
                break
            try:
                entry = json.loads(raw)
            except ValueError as exc:
                entry, reason = None, f"not JSON ({exc})"
            else:
                reason = _malformed(entry)
            if reason is not None:
                chain.problems.append(f"{where}: not a ledger line: {reason}")
                expected = None
                continue
            own = line_hash(entry)
            if entry["hash"] != own:
                chain.problems.append(f"{where}: altered: its hash {_short(entry['hash'])} is not the hash "
                                      f"of its content ({_short(own)})")
            if expected is not None and entry["prev"] != expected:
                before = "the genesis value" if number == 1 else f"the hash of line {number - 1}"
                chain.problems.append(f"{where}: chain broken: prev is {_short(entry['prev'])}, expected "
                                      f"{before} ({_short(expected)}): a line was deleted, inserted or "
                                      "moved here")
            expected = entry["hash"]
            chain.lines.append(Line(number, entry))
    return chain


@dataclass
class PartyRecord:
    """One party's ledger directory, read and chain-checked."""

    directory: Path
    egress: Chain
    ingress: Chain
    party: str | None
    problems: list[str]

    def peers(self) -> set[str]:
        return {line.entry["peer"] for chain in (self.egress, self.ingress) for line in chain.lines}


def read_ledger(directory: str | Path) -> PartyRecord:
    """Read a party's ledger directory; raise FileNotFoundError unless it holds both files."""
    directory = Path(directory)
    missing = [name for name in (EGRESS_FILE, INGRESS_FILE) if not (directory / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{directory}: not a party's ledger (no {' or '.join(missing)}); give the "
                                f"directory holding {EGRESS_FILE} and {INGRESS_FILE}, e.g. a node's state "
                                "directory")
    egress, ingress = read_chain(directory / EGRESS_FILE), read_chain(directory / INGRESS_FILE)
    problems = egress.problems + ingress.problems
    parties = Counter(line.entry["party"] for chain in (egress, ingress) for line in chain.lines)
    if len(parties) > 1:
        problems.append(f"{directory}: holds lines written by several parties: "
                        + ", ".join(f"{name!r} ({n} lines)" for name, n in parties.most_common()))
    party = parties.most_common(1)[0][0] if parties else None
    return PartyRecord(directory, egress, ingress, party, problems)


def _index(chain: Chain, peer: str, problems: list[str]) -> dict[tuple[str, int], Line]:
    """``chain``'s lines exchanged with ``peer``, by (job, seq); a repeated key is a problem."""
    out: dict[tuple[str, int], Line] = {}
    for line in chain.lines:
        e = line.entry
        if e["peer"] != peer:
            continue
        key = (e["job"], e["seq"])
        if key in out:
            problems.append(f"{chain.path} line {line.number}: job {e['job']!r} seq {e['seq']} again "
                            f"(first at line {out[key].number})")
            continue
        out[key] = line
    return out


@dataclass
class Direction:
    """One direction of traffic, sender's egress against receiver's ingress."""

    sender: str
    receiver: str
    sent: int
    received: int
    matched: int
    jobs: set[str]


def match(sender: PartyRecord, receiver: PartyRecord, s_name: str, r_name: str,
          problems: list[str], unconfirmed: list[str]) -> Direction:
    """Match ``sender``'s egress lines to ``r_name`` against ``receiver``'s ingress lines from ``s_name``.

    A message recorded on one side only, *after the other side's last line of that
    conversation*, is what a party killed at that moment leaves: the receiver had
    acknowledged it but its protocol had not taken it yet, or the sender died between
    the acknowledgement and its ledger write. It goes to ``unconfirmed``, reported but
    not a failure. Anywhere else a one-sided line is a problem.
    """
    sent = _index(sender.egress, r_name, problems)
    got = _index(receiver.ingress, s_name, problems)
    last_taken: dict[str, int] = {}  # per job, the receiver's highest recorded seq
    for job, seq in got:
        last_taken[job] = max(seq, last_taken.get(job, -1))
    last_sent: dict[str, int] = {}  # per job, the sender's highest recorded seq
    for job, seq in sent:
        last_sent[job] = max(seq, last_sent.get(job, -1))
    matched = 0
    for key, out in sent.items():
        e = out.entry
        into = got.get(key)
        here = f"{sender.egress.path} line {out.number}"
        if into is None:
            # Ingress lines are written when the protocol takes a message: one acknowledged just
            # before the receiver's job ended (killed, failed) is absent too, and only at the end.
            at_end = e["seq"] > last_taken.get(e["job"], -1)
            why = f"missing at {r_name}" if not at_end else \
                f"missing at {r_name}: after its last line of the job, so either acknowledged but never " \
                "taken by its protocol before the job ended, or cut from its ledger"
            (unconfirmed if at_end else problems).append(
                f"{here}: {s_name} sent job {e['job']!r} seq {e['seq']} ({e['type']!r}), but "
                f"{receiver.ingress.path} has no line for it ({why})")
            continue
        differs = [f"{name} {e[name]!r} != {into.entry[name]!r}" for name in _MATCHED
                   if e[name] != into.entry[name]]
        if differs:
            problems.append(f"{here} and {receiver.ingress.path} line {into.number} (job {e['job']!r} seq "
                            f"{e['seq']}) differ: " + "; ".join(differs))
        else:
            matched += 1
    for key, into in got.items():
        if key not in sent:
            e = into.entry
            at_end = e["seq"] > last_sent.get(e["job"], -1)
            why = f"extra at {r_name}: {s_name} has no record of it being acknowledged" + \
                (", after its last line of the job: it stopped between the acknowledgement and its "
                 "ledger write, or the line was cut" if at_end else "")
            (unconfirmed if at_end else problems).append(
                f"{receiver.ingress.path} line {into.number}: {r_name} received job {e['job']!r} seq "
                f"{e['seq']} ({e['type']!r}), but {sender.egress.path} has no line for it ({why})")
    jobs = {job for job, _ in sent} | {job for job, _ in got}
    return Direction(s_name, r_name, len(sent), len(got), matched, jobs)


def _name(record: PartyRecord, other: PartyRecord) -> str | None:
    """A party's name from its own lines, or else the one peer the other ledger names."""
    if record.party is not None:
        return record.party
    peers = other.peers()
    return next(iter(peers)) if len(peers) == 1 else None


@dataclass
class Verdict:
    a: PartyRecord
    b: PartyRecord
    directions: list[Direction]
    problems: list[str]
    others: int  # lines exchanged with a third party, left out of the match
    unconfirmed: list[str]  # one-sided at the end of a conversation (see match)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def matched(self) -> int:
        return sum(d.matched for d in self.directions)


def verify(ledger_a: str | Path, ledger_b: str | Path) -> Verdict:
    """Check both chains and match the two parties' traffic; see the module docstring."""
    a, b = read_ledger(ledger_a), read_ledger(ledger_b)
    a_name, b_name = _name(a, b), _name(b, a)
    if a_name is not None and a_name == b_name:
        raise ValueError(f"{a.directory} and {b.directory} are both {a_name!r}'s ledger; give the two "
                         "parties' ledgers")
    problems = a.problems + b.problems
    unconfirmed: list[str] = []
    directions = []
    if a_name is not None and b_name is not None:
        directions = [match(a, b, a_name, b_name, problems, unconfirmed),
                      match(b, a, b_name, a_name, problems, unconfirmed)]
    others = sum(1 for rec, peer in ((a, b_name), (b, a_name)) for chain in (rec.egress, rec.ingress)
                 for line in chain.lines if line.entry["peer"] != peer)
    return Verdict(a, b, directions, problems, others, unconfirmed)


def report(verdict: Verdict, limit: int = 20) -> str:
    """The text ``fedacq audit verify`` prints."""
    out = []
    for label, rec in (("A", verdict.a), ("B", verdict.b)):
        intact = "chains intact" if not (rec.egress.problems or rec.ingress.problems) else "CHAIN BROKEN"
        out.append(f"ledger {label}: {rec.party or '(empty)'} at {rec.directory}: {EGRESS_FILE} "
                   f"{rec.egress.count} lines, {INGRESS_FILE} {rec.ingress.count} lines, {intact}")
    jobs: set[str] = set()
    for d in verdict.directions:
        jobs |= d.jobs
        out.append(f"{d.sender} -> {d.receiver}: {d.sent} sent, {d.received} received, {d.matched} matched")
    if verdict.others:
        out.append(f"{verdict.others} lines exchanged with other parties left out")
    if verdict.unconfirmed:
        out.append(f"NOTE: {len(verdict.unconfirmed)} message(s) recorded on one side only, each after the "
                   "other side's last line of its conversation (a party stopped right then, or its ledger's "
                   "end was cut):")
        out += [f"  {p}" for p in verdict.unconfirmed[:limit]]
    if verdict.ok:
        out.append(f"OK: {verdict.matched} messages matched in {len(jobs)} job(s); both ledgers' chains intact")
    else:
        out.append(f"FAILED: {len(verdict.problems)} problem(s), chains first, then the match in file order:")
        out += [f"  {p}" for p in verdict.problems[:limit]]
        if len(verdict.problems) > limit:
            out.append(f"  … and {len(verdict.problems) - limit} more")
    return "\n".join(out)
