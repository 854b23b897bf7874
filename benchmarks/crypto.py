"""Paillier/OU/X25519 benchmark: fedacq vs phe vs sf-heu (ZPaillier, OU), same run, same vectors.

    python benchmarks/crypto.py --json results/crypto.json [--quick]
    python benchmarks/crypto.py --decrypt-only --count 400 --repeats 5 --json results/crypto_decrypt.json

The logic lives in :mod:`fedacq.crypto.bench`, the options in :mod:`fedacq.crypto.commands`
(also ``fedacq bench-crypto``). ``--decrypt-only`` measures decryption alone (single
ciphertexts, vectors on one core and on every core, against sf-heu's scalar and numpy
decryptors), about a minute on two cores.
"""

import argparse
import json
import sys

from fedacq.crypto.commands import configure_bench


def _decrypt_only(args: argparse.Namespace) -> int:
    from fedacq.crypto import bench

    result = bench.run_decrypt(key_bits=args.key_bits, count=args.count, repeats=args.repeats, seed=args.seed)
    print(bench.format_decrypt_table(result))
    print("ratios: " + json.dumps({k: round(v, 2) for k, v in result["ratios"].items()}))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=2)
    return 0


if __name__ == "__main__":
    parser = configure_bench(argparse.ArgumentParser(description=__doc__.splitlines()[0]))
    parser.add_argument("--decrypt-only", action="store_true", help="decryption against sf-heu only")
    parser.add_argument("--count", type=int, default=400, help="values per decryption batch (--decrypt-only)")
    args = parser.parse_args()
    sys.exit(_decrypt_only(args) if args.decrypt_only else args.func(args))
