"""Paillier/OU/X25519 benchmark: fedacq vs phe vs sf-heu (ZPaillier, OU), same run, same vectors.

    python benchmarks/crypto.py --json results/crypto.json [--quick]

The logic lives in :mod:`fedacq.crypto.bench`, the options in :mod:`fedacq.crypto.commands`
(also ``fedacq bench-crypto``).
"""

import argparse
import sys

from fedacq.crypto.commands import configure_bench

if __name__ == "__main__":
    args = configure_bench(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args()
    sys.exit(args.func(args))
