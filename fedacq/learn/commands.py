"""``fedacq run``: PSI then federated training and evaluation, both parties on this machine.

Only argument parsing lives here; the job is :func:`fedacq.learn.run.run`.
Model parameters use XGBoost's names (``--objective reg:tweedie
--tweedie-variance-power 1.3``), one flag per SecureBoost parameter as
:mod:`fedacq.learn.secureboost_params` declares them; models with other
parameters (e.g. logistic regression) take them as ``--param NAME=VALUE``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from fedacq.compute.engine import ENGINES

#: parameter types a command-line flag reads (the others, e.g. SecureBoost's leaf_noise table, by --param).
FLAG_TYPES = (int, float, str)


def model_flags() -> dict[str, Any]:
    """The model parameters with a flag of their own: SecureBoost's XGBoost-named training parameters,
    as :mod:`fedacq.learn.secureboost_params` declares them (name -> its ``Param``: type, help)."""
    from fedacq.learn.secureboost_params import SPEC

    return {name: spec for name, spec in SPEC.items() if spec.type in FLAG_TYPES}


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run", help="PSI then federated training and evaluation, both parties on this machine",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--lender", required=True, type=Path, help="the lender's CSV (ids, label, features)")
    p.add_argument("--platform", required=True, type=Path, help="the platform's CSV (ids, features)")
    p.add_argument("--id-column", required=True, help="identifier column present in both files")
    p.add_argument("--label-column", required=True,
                   help="label column in the lender's file (0/1, a value, a count or a class, as --objective needs)")
    p.add_argument("--model", default="secureboost", help="model to train (see fedacq.learn.run_config.MODELS)")
    p.add_argument("--out", required=True, type=Path, help="output folder (metrics.json, plots, model parts)")
    tree = p.add_argument_group("model parameters (XGBoost names; default: the model's own)")
    for name, spec in model_flags().items():
        tree.add_argument("--" + name.replace("_", "-"), dest=name, type=spec.type, default=None, help=spec.help)
    tree.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                      help="any other model parameter (value read as JSON when it parses, else as text)")
    p.add_argument("--xgb-model", type=Path, default=None, metavar="DIR",
                   help="add --n-estimators rounds to the model of an earlier `fedacq run --out DIR` (XGBoost's "
                        "xgb_model; same objective, mode and feature columns; --transport inproc)")
    p.add_argument("--mode", choices=("joint", "prospect"), default="joint",
                   help="joint: splits on both parties' features; prospect: platform features only")
    p.add_argument("--scheme", choices=("paillier", "ou"), default="paillier",
                   help="additive HE scheme; ou: cheaper histograms (both nodes' [policy] schemes must list it)")
    p.add_argument("--key-bits", type=int, default=2048, help="HE key size (modulus bits, either scheme)")
    p.add_argument("--insecure-test-key", action="store_true",
                   help="allow keys under 2048 bits (tests and quick checks only, never results)")
    p.add_argument("--min-intersection", type=int, default=100,
                   help="stop before training when fewer users are common to both files")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="share of the intersection held out for validation (0: none)")
    p.add_argument("--transport", choices=("inproc", "grpc"), default="inproc",
                   help="inproc: both parties in this process; grpc: two local node processes")
    p.add_argument("--engine", choices=ENGINES, default="local",
                   help="where the heavy work runs (--transport inproc): local (this machine's cores) or ray "
                        "(a Ray cluster both parties share: a trial by one operator)")
    p.add_argument("--ray-address", default=None, metavar="HOST:PORT",
                   help="the Ray cluster for --engine ray (what `ray start --head` prints)")
    p.add_argument("--seed", type=int, default=0, help="seed shared by both parties (split, model)")
    p.add_argument("--tracking-dir", default=None,
                   help="MLflow store for both parties (default: OUT/lender/mlruns and OUT/platform/mlruns)")
    p.add_argument("--experiment", default="fedacq-run", help="MLflow experiment name")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_handle)


def parse_params(args: argparse.Namespace) -> dict[str, Any]:
    """The model parameters given on the command line (unset ones are left to the model)."""
    params = {name: getattr(args, name) for name in model_flags() if getattr(args, name) is not None}
    for item in args.param:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--param {item!r}: expected NAME=VALUE")
        try:
            params[name] = json.loads(text)
        except json.JSONDecodeError:
            params[name] = text
    return params


def _handle(args: argparse.Namespace) -> int:
    import logging

    from fedacq.compute import ComputeConfig
    from fedacq.learn.run import run
    from fedacq.learn.run_config import RunConfig
    from fedacq.learn.run_report import METRICS_FILE, headline

    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its store set-up notices drown the progress

    cfg = RunConfig(lender_path=args.lender, platform_path=args.platform, id_column=args.id_column,
                    label_column=args.label_column, out_dir=args.out, model=args.model,
                    params=parse_params(args), mode=args.mode, scheme=args.scheme, key_bits=args.key_bits,
                    insecure_test_key=args.insecure_test_key, min_intersection=args.min_intersection,
                    validation_fraction=args.validation_fraction, transport=args.transport,
                    seed=args.seed, tracking_dir=args.tracking_dir, experiment=args.experiment,
                    progress=not args.quiet, compute=ComputeConfig(engine=args.engine, address=args.ray_address),
                    xgb_model=args.xgb_model)
    summary = headline(run(cfg))
    print(json.dumps(summary), file=sys.stdout)
    print(f"wrote {args.out / METRICS_FILE}", file=sys.stderr)
    return 0
