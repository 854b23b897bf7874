"""Paillier/X25519 benchmark: fedacq vs phe vs sf-heu ZPaillier, same run, same vectors.

    python benchmarks/crypto.py --json results/crypto.json [--quick]

The logic lives in :mod:`fedacq.crypto.bench` (also ``fedacq bench-crypto``).
"""

import argparse
import sys

from fedacq.crypto.bench import configure

if __name__ == "__main__":
    args = configure(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args()
    sys.exit(args.func(args))
