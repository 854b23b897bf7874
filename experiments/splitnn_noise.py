"""Split NN on the full default_credit data: the noise parameters' cost in AUC and what they buy.

Why: the split NN's defaults for clipping and noise must keep the federated
model close to the same network trained centrally, while still protecting
what crosses. This script trains, with one seed and one 80/20 split
(``numpy.random.default_rng(--seed)``, as the tests):

* ``central``: :func:`fedacq.learn.splitnn.fit_central` (joined data, no noise);
* one federated run per noise setting (``--setting NAME=clip,noise,clip,noise``
  for ``embedding_clip, embedding_noise, gradient_clip, gradient_noise``, or a
  name from ``SETTINGS``: ``off`` is no clipping and no noise and must equal
  ``central``; ``defaults`` the library's (gradient noise only);
  ``embedding_4_0.02`` adds embedding clipping and noise; ``previous_defaults`` the
  first defaults, 4, 0.05, 0.1, 0.5).

For each federated run it reads what the platform *received* (the recorded
``snn.backward`` gradients) and reports:

* ``valid_auc`` and the drop against ``central``;
* ``gradient_noise_to_signal``: RMS norm of the added noise / RMS norm of the
  clipped gradients (the noise variance is known; the signal's is the received
  mean square norm minus it);
* ``label_leak_auc_norm`` and ``label_leak_auc_direction``: how well the
  platform could rank rows by their label from a received gradient alone, by
  its norm (positives are rarer and get larger gradients) or by its projection
  on the batch's leading principal direction (the gradients of a sigmoid
  output point one way for y=1 and the other for y=0), the two attacks of Li
  et al. 2022. Reported as max(AUC, 1 - AUC): 0.5 is no leak, 1.0 is every
  label. Over the first epoch's batches; see :mod:`fedacq.learn.splitnn_leakage`.

Full run::

    python experiments/splitnn_noise.py --json experiments/results/splitnn_noise.json

``--rows N`` uses the first N rows (a quick check that the script works).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

GUEST = "/work/shared/datasets/fate/default_credit_hetero_guest.csv"
HOST = "/work/shared/datasets/fate/default_credit_hetero_host.csv"

#: named settings: embedding_clip, embedding_noise, gradient_clip, gradient_noise (None: that direction off)
SETTINGS = {"off": (None, 0.0, None, 0.0), "defaults": "defaults", "embedding_4_0.02": (4.0, 0.02, 0.1, 2.0),
            "previous_defaults": (4.0, 0.05, 0.1, 0.5)}


def load(rows: int | None, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    g, h = pd.read_csv(GUEST, nrows=rows), pd.read_csv(HOST, nrows=rows)
    if not (g["id"].to_numpy() == h["id"].to_numpy()).all():
        raise ValueError(f"{GUEST} and {HOST}: ids are not in the same order")
    y = g.pop("y").to_numpy(float)
    tr = np.random.default_rng(seed).random(len(y)) < 0.8
    return g.drop(columns="id").to_numpy(), h.drop(columns="id").to_numpy(), y, tr


def noise_to_signal(received: list, clip: float | None, noise: float, kind: str) -> float | None:
    """RMS norm of the added noise over RMS norm of the clipped vectors, from what was received."""
    if clip is None or noise == 0:
        return None if clip is None else 0.0
    part = {"snn.backward": "gradient", "snn.forward": "embedding"}[kind]
    vs = np.concatenate([m.parts[part].astype(np.float64) for m in received if m.type == kind])
    noise_ms = vs.shape[1] * (noise * clip) ** 2
    signal_ms = max(float(np.mean(np.sum(vs * vs, axis=1))) - noise_ms, 1e-30)
    return float(np.sqrt(noise_ms / signal_ms))


def federated(Xl, Xp, y, tr, seed: int, params: dict) -> dict:
    from sklearn.metrics import roc_auc_score

    from fedacq.learn.splitnn import SplitNNLender, SplitNNPlatform
    from fedacq.learn.splitnn_leakage import label_leakage
    from fedacq.link.memory import memory_pair, run_parties

    L, P = memory_pair("lender", "platform", record=True)
    lender, platform = SplitNNLender(random_state=seed, **params), SplitNNPlatform()

    def lender_side() -> np.ndarray:
        lender.fit(L, Xl[tr], y[tr], eval_set=(Xl[~tr], y[~tr]))
        return lender.predict_proba(L, Xl[~tr])

    def platform_side() -> None:
        platform.fit(P, Xp[tr], Xp[~tr])
        platform.serve_predict(P, Xp[~tr])

    start = time.perf_counter()
    proba, _ = run_parties((lender_side,), (platform_side,))
    p = lender.params
    out = {"params": {k: p[k] for k in ("embedding_clip", "embedding_noise", "gradient_clip", "gradient_noise")},
           "valid_auc": float(roc_auc_score(y[~tr], proba)), "epochs": lender.n_iter_,
           "best_epoch": lender.best_epoch_, "seconds": time.perf_counter() - start,
           "gradient_noise_to_signal": noise_to_signal(P.received, p["gradient_clip"], p["gradient_noise"],
                                                       "snn.backward"),
           "embedding_noise_to_signal": noise_to_signal(L.received, p["embedding_clip"], p["embedding_noise"],
                                                        "snn.forward")}
    out.update(label_leakage(P.received, y[tr], p["batch_size"], seed))
    return out


def parse_setting(text: str) -> tuple[str, dict]:
    name, _, values = text.partition("=")
    if name in SETTINGS and not values:
        spec = SETTINGS[name]
        if spec == "defaults":
            return name, {}
    else:
        try:
            spec = tuple(None if v.strip() in ("", "none", "None") else float(v) for v in values.split(","))
        except ValueError as exc:
            raise SystemExit(f"--setting {text!r}: {exc}") from exc
        if len(spec) != 4:
            raise SystemExit(f"--setting {text!r}: expected NAME=embedding_clip,embedding_noise,"
                             "gradient_clip,gradient_noise")
    ec, en, gc, gn = spec
    return name, {"embedding_clip": ec, "embedding_noise": en or 0.0, "gradient_clip": gc,
                  "gradient_noise": gn or 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--rows", type=int, help="first N rows only (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--setting", action="append",
                        help="NAME=embedding_clip,embedding_noise,gradient_clip,gradient_noise, or 'off' or "
                             "a name from SETTINGS (repeatable; default: all of SETTINGS)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    from sklearn.metrics import roc_auc_score

    from fedacq.learn.splitnn import fit_central

    Xl, Xp, y, tr = load(args.rows, args.seed)
    print(f"default_credit: {tr.sum()} training / {(~tr).sum()} validation rows", flush=True)
    start = time.perf_counter()
    central, history = fit_central(Xl[tr], Xp[tr], y[tr], eval_set=(Xl[~tr], Xp[~tr], y[~tr]),
                                   random_state=args.seed)
    ref = float(roc_auc_score(y[~tr], central))
    print(f"central: valid AUC {ref:.4f} ({len(history)} epochs, {time.perf_counter() - start:.0f}s)", flush=True)
    results = {"data": "default_credit (FATE hetero split)", "rows": len(y), "seed": args.seed,
               "central_valid_auc": ref, "settings": {}}
    for text in args.setting or list(SETTINGS):
        name, params = parse_setting(text)
        r = federated(Xl, Xp, y, tr, args.seed, params)
        r["auc_drop"] = ref - r["valid_auc"]
        results["settings"][name] = r
        fmt = lambda v: "-" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"{name:>12} {r['params']}: valid AUC {r['valid_auc']:.4f} (drop {r['auc_drop']:+.4f}), "
              f"noise/signal grad {fmt(r['gradient_noise_to_signal'])} emb {fmt(r['embedding_noise_to_signal'])}, "
              f"label leak AUC norm {r['label_leak_auc_norm']:.3f} direction {r['label_leak_auc_direction']:.3f}, "
              f"{r['epochs']} epochs {r['seconds']:.0f}s", flush=True)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
