"""Run a sweep config: ``python experiments/run.py experiments/sweep_quick.toml --out DIR``.

The same as ``fedacq experiments run CONFIG --out DIR``; the code is in
:mod:`fedacq.experiments` so the installed command can reach it.
"""

from __future__ import annotations

import sys

from fedacq.cli import main

if __name__ == "__main__":
    sys.exit(main(["experiments", "run", *sys.argv[1:]]))
