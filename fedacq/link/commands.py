"""``fedacq audit``: check two parties' ledgers against each other.

``fedacq audit verify LEDGER_A LEDGER_B``: see :mod:`fedacq.link.audit` for what is
checked. Exit status 0 only when everything matches, 1 when a chain breaks or the
ledgers diverge, 2 when an argument is not a party's ledger.
"""

from __future__ import annotations

import argparse
from pathlib import Path

_VERIFY = ("Check both parties' hash chains, then match what each party sent against what the other "
           "received, message by message. A party's ledger is the directory holding its egress.jsonl "
           "and ingress.jsonl: a node's state directory, or the per-party folder a demo or an "
           "in-process run writes. Exit status: 0 when everything matches; 1 when a chain breaks or "
           "the ledgers diverge (the report names the file and line); 2 when an argument is not a "
           "party's ledger.")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="check two parties' ledgers against each other")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    v = actions.add_parser("verify", help="verify both hash chains and match A's traffic with B's",
                           description=_VERIFY)
    v.add_argument("ledger_a", type=Path, metavar="LEDGER_A",
                   help="one party's ledger directory (holding egress.jsonl and ingress.jsonl)")
    v.add_argument("ledger_b", type=Path, metavar="LEDGER_B", help="the other party's ledger directory")
    v.set_defaults(func=run_verify)


def run_verify(args: argparse.Namespace) -> int:
    from fedacq.link.audit import report, verify

    verdict = verify(args.ledger_a, args.ledger_b)
    print(report(verdict))
    return 0 if verdict.ok else 1
