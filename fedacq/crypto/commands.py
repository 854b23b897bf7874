"""``fedacq certs``: make TLS certificates, per party (production) or from one dev CA (trying it out).

Per party, each on its own machine::

    fedacq certs init-party --party lender --out certs/lender        # ca.pem, ca.key, lender.pem, lender.key
    # send certs/lender/ca.pem to the platform; receive the platform's ca.pem
    fedacq certs trust-peer --dir certs/lender --peer platform --ca platform-ca-received.pem

One machine, both parties (docker compose): ``fedacq certs init --per-party --out certs``.
The shared dev CA of earlier versions: ``fedacq certs init --out certs``.

``fedacq bench-crypto``: the crypto benchmark of :mod:`fedacq.crypto.bench`
(``benchmarks/crypto.py`` builds its own parser with :func:`configure_bench`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from fedacq.crypto import tls


def _parties(value: str) -> list[str]:
    return [p.strip() for p in value.split(",") if p.strip()]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("certs", help="make TLS certificates: a CA per party, or one dev CA",
                       description=__doc__.splitlines()[0])
    certs_sub = p.add_subparsers(dest="certs_command", required=True, metavar="ACTION")

    init = certs_sub.add_parser("init", help="certificates for several parties on one machine (dev)")
    init.add_argument("--parties", type=_parties, default=["lender", "platform"],
                      help="comma-separated party names (default: lender,platform)")
    init.add_argument("--out", required=True, help="directory to write the certificates to")
    init.add_argument("--per-party", action="store_true",
                      help="a CA per party in OUT/<party>/, each folder trusting only the others' CA "
                           "certificates (<peer>-ca.pem); default: one shared dev CA in OUT")
    init.add_argument("--days", type=int, default=825, help="validity in days (default: 825)")
    init.add_argument("--keep-existing", action="store_true",
                      help="keep existing CAs and issue only missing party certificates")
    init.set_defaults(func=_cmd_init)

    party = certs_sub.add_parser("init-party", help="this party's own CA and certificate (production)")
    party.add_argument("--party", required=True, help="party name (certificate CN and DNS name)")
    party.add_argument("--out", required=True, help="directory for ca.pem, ca.key, <party>.pem, <party>.key")
    party.add_argument("--days", type=int, default=825, help="validity in days (default: 825)")
    party.add_argument("--keep-existing", action="store_true",
                       help="keep an existing CA in --out and issue the certificate only if missing")
    party.set_defaults(func=_cmd_init_party)

    trust = certs_sub.add_parser("trust-peer", help="install the peer's CA certificate as <peer>-ca.pem")
    trust.add_argument("--dir", required=True, help="this party's certificate directory")
    trust.add_argument("--peer", required=True, help="the peer's party name")
    trust.add_argument("--ca", required=True, help="the CA certificate (ca.pem) the peer sent")
    trust.add_argument("--replace", action="store_true", help="replace a different installed CA certificate")
    trust.set_defaults(func=_cmd_trust_peer)

    issue = certs_sub.add_parser("issue", help="issue one more certificate from an existing CA")
    issue.add_argument("--ca", required=True, help="directory holding ca.pem and ca.key")
    issue.add_argument("--party", required=True, help="certificate name (CN and DNS name), e.g. bidder")
    issue.add_argument("--out", help="directory for the certificate, key and a copy of ca.pem (default: --ca)")
    issue.add_argument("--days", type=int, default=825, help="validity in days (default: 825)")
    issue.set_defaults(func=_cmd_issue)


def _cmd_init(args: argparse.Namespace) -> int:
    if args.per_party:
        files = tls.init_per_party(args.parties, args.out, days=args.days, keep_existing=args.keep_existing)
        for party, f in files.items():
            print(f"{party}: CA {f.ca}, {f.cert} {f.key}; trusts "
                  + ", ".join(str(Path(args.out) / party / f"{peer}-ca.pem") for peer in files if peer != party))
        return 0
    files = tls.init_certs(args.parties, args.out, days=args.days, keep_existing=args.keep_existing)
    print(f"CA: {Path(args.out) / 'ca.pem'}")
    for party, f in files.items():
        print(f"{party}: {f.cert} {f.key}")
    return 0


def _cmd_init_party(args: argparse.Namespace) -> int:
    f = tls.init_party(args.party, args.out, days=args.days, keep_existing=args.keep_existing)
    print(f"{args.party}: {f.cert} {f.key}; send only {f.ca} to the peer")
    return 0


def _cmd_trust_peer(args: argparse.Namespace) -> int:
    target = tls.trust_peer(args.dir, args.peer, args.ca, replace=args.replace)
    print(f"{args.peer}: trusted CA certificate {target}")
    return 0


def _cmd_issue(args: argparse.Namespace) -> int:
    files = tls.issue_cert(args.ca, args.party, out=args.out, days=args.days)
    print(f"{args.party}: {files.cert} {files.key}")
    return 0


# -- fedacq bench-crypto -------------------------------------------------------------

def add_bench_parser(sub: argparse._SubParsersAction) -> None:
    from fedacq.crypto import bench

    configure_bench(sub.add_parser("bench-crypto", help="Paillier/OU/X25519 benchmark vs phe and sf-heu",
                                   description=bench.__doc__.splitlines()[0]))


def configure_bench(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The benchmark's options on ``parser`` (``fedacq bench-crypto`` or ``benchmarks/crypto.py``)."""
    parser.add_argument("--json", metavar="FILE", help="write rates and ratios to FILE")
    parser.add_argument("--quick", action="store_true", help="small sizes: checks the benchmark runs")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per operation (best kept)")
    parser.add_argument("--key-bits", type=int, default=2048, help="Paillier modulus size (>= 2048)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the benchmark plaintexts")
    parser.set_defaults(func=_cmd_bench)
    return parser


def _cmd_bench(args: argparse.Namespace) -> int:
    from fedacq.crypto import bench

    result = bench.run(key_bits=args.key_bits, quick=args.quick, repeats=args.repeats, seed=args.seed)
    print(bench.format_table(result))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
        print(f"wrote {args.json}")
    return 0
