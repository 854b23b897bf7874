"""How much of the labels the platform could read off the split NN gradients it received.

Why: the split NN's gradient noise is there to stop the platform from inferring
the lender's labels; these two attacks (Li et al., "Label leakage and
protection in two-party split learning", 2022) measure whether it does, from
exactly what the platform received (``memory_pair(record=True)``), so the
noise defaults are checked against an attack rather than asserted.

* norm: positives are the rarer class and get larger gradients, so ranking
  rows by their gradient's norm ranks them by label;
* direction: for a sigmoid output every row's gradient is ``(p - y)`` times
  nearly one shared direction, so the projection on the batch's leading
  principal direction splits y=1 from y=0. Its sign is arbitrary per batch;
  each batch is oriented so that its minority side (the rarer label) is the
  high side.

Each score is reported as max(AUC, 1 - AUC): 0.5 is chance, 1.0 is every label.
Used by ``experiments/splitnn_noise.py`` and the split NN privacy test.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from fedacq.learn.hetero_lr import batches
from fedacq.link.message import Message


def _leak_auc(y: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, score))
    return max(auc, 1.0 - auc)


def _oriented(projection: np.ndarray) -> np.ndarray:
    """The projection with its sign chosen so the side with fewer rows is the high side."""
    return projection if np.mean(projection > np.median(projection)) <= 0.5 and \
        projection.max() - np.median(projection) >= np.median(projection) - projection.min() else -projection


def label_leakage(received: Sequence[Message], y_train: np.ndarray, batch_size: int, random_state: int,
                  epoch: int = 0) -> dict[str, float]:
    """Both attacks on the ``snn.backward`` gradients of one epoch the platform received.

    ``y_train`` are the lender's training labels (the attacker's ground truth,
    known only to the evaluator); ``batch_size`` and ``random_state`` rebuild
    the epoch's batches, as the platform itself does.
    """
    grads = [m.parts["gradient"].astype(np.float64) for m in received
             if m.type == "snn.backward" and m.header["epoch"] == epoch]
    if not grads:
        raise ValueError(f"no snn.backward message of epoch {epoch} among the received messages")
    rows = batches(len(y_train), batch_size, random_state, epoch)[:len(grads)]
    norm, direction = [], []
    for g in grads:
        norm.append(np.linalg.norm(g, axis=1))
        lead = np.linalg.svd(g - g.mean(axis=0), full_matrices=False)[2][0]
        direction.append(_oriented(g @ lead))
    y = np.concatenate([y_train[r] for r in rows])
    return {"label_leak_auc_norm": _leak_auc(y, np.concatenate(norm)),
            "label_leak_auc_direction": _leak_auc(y, np.concatenate(direction))}
