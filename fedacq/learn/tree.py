"""Plaintext split finding and tree structure, with XGBoost's exact arithmetic.

Both parties' features end up here at the lender: its own histograms in
plaintext, the platform's after decryption. To reproduce XGBoost ``hist`` tree
for tree, the search mirrors ``src/tree/hist/evaluate_splits.h``:

* gain of a side: ``T(G)^2 / (H + reg_lambda)`` with ``T`` the L1 soft threshold
  (``reg_alpha``), 0 when ``H <= 0``; rounded to float32 as XGBoost does;
* ``loss_chg = float32(gain_left + gain_right) - root_gain`` in float32;
* a candidate needs ``H >= min_child_weight`` on both sides;
* forward scan (missing values go right) over every bin of every feature; a
  backward scan (missing go left) only when the node has missing values for the
  feature. XGBoost decides that by comparing float sums for equality; here
  the exact row counts decide, which gives the same answer without rounding
  noise;
* ties go to the earlier candidate in the order (feature index, forward bins
  ascending, backward bins descending), as XGBoost's ``SplitEntry::Update``;
* a node is split only when ``loss_chg > 1e-6``, ``loss_chg >= gamma`` and both
  children have positive hessian; leaf value ``-T(G) / (H + reg_lambda)`` times
  ``learning_rate`` (0 when ``H < min_child_weight``);
* with ``max_delta_step > 0`` the weight is clipped to ``[-max_delta_step,
  max_delta_step]`` and a side's score becomes ``-(2 G w + (H + reg_lambda) w^2)``
  at the clipped weight ``w``, in float32 (``CalcGainGivenWeight``). XGBoost's
  default is 0 (off), except for ``count:poisson`` where its learner sets 0.7
  for the trees as well as for the objective.

Feature indices here are *global*: the lender's features first, then the
platform's (the joined matrix ``[X_lender | X_platform]``), which is also the
tie-break order.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: XGBoost's ``kRtEps``: smallest loss change that counts as a split.
RT_EPS = 1e-6


@dataclass(frozen=True)
class SplitParams:
    reg_lambda: float = 1.0
    reg_alpha: float = 0.0
    gamma: float = 0.0
    min_child_weight: float = 1.0
    learning_rate: float = 0.3
    max_delta_step: float = 0.0


def _threshold_l1(g: np.ndarray | float, alpha: float) -> np.ndarray | float:
    if alpha == 0.0:
        return g
    return np.where(g > alpha, g - alpha, np.where(g < -alpha, g + alpha, 0.0))


def _weights(g: np.ndarray, h: np.ndarray, p: SplitParams) -> np.ndarray:
    """Optimal weights (before the learning rate), clipped to ``max_delta_step``, float32; 0 where ``h`` is small."""
    with np.errstate(divide="ignore", invalid="ignore"):
        w = -_threshold_l1(g, p.reg_alpha) / (h + p.reg_lambda)
    if p.max_delta_step != 0.0:
        w = np.clip(w, -p.max_delta_step, p.max_delta_step)
    return np.where((h < p.min_child_weight) | (h <= 0.0), 0.0, w).astype(np.float32)


def calc_gain(g: np.ndarray, h: np.ndarray, p: SplitParams) -> np.ndarray:
    """Per-side structure score, float32 (0 where ``h <= 0``)."""
    g = np.asarray(g, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    if p.max_delta_step != 0.0:
        w = _weights(g, h, p)
        g32, h32 = g.astype(np.float32), h.astype(np.float32)
        gain = -(np.float32(2.0) * g32 * w + (h32 + np.float32(p.reg_lambda)) * np.square(w))
        return np.where(h > 0, gain, np.float32(0.0)).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        gain = np.square(_threshold_l1(g, p.reg_alpha)) / (h + p.reg_lambda)
    return np.where(h > 0, gain, 0.0).astype(np.float32)


def calc_weight(g: float, h: float, p: SplitParams) -> float:
    """Optimal leaf weight (before the learning rate), float32 as in XGBoost."""
    return float(_weights(np.array([float(g)]), np.array([float(h)]), p)[0])


@dataclass
class FeatureHistogram:
    """Cumulative (gradient, hessian, count) sums over the bins of one feature in one node."""

    feature: int          # global feature index
    cum_g: np.ndarray     # float64, length n_bins; cum_g[b] = sum over bins 0..b
    cum_h: np.ndarray
    cum_count: np.ndarray  # int64


@dataclass
class Split:
    feature: int       # global feature index
    bin: int           # left = bins 0..bin (-1: only missing values go left)
    default_left: bool
    loss_chg: float
    left_g: float
    left_h: float
    right_g: float
    right_h: float


def best_split(total_g: float, total_h: float, total_count: int,
               hists: list[FeatureHistogram], p: SplitParams) -> Split | None:
    """The best split of a node over ``hists`` (in ascending feature order), or None."""
    root_gain = calc_gain(np.array([total_g]), np.array([total_h]), p)[0]
    best: Split | None = None
    best_loss = np.float32(-np.inf)
    mcw = p.min_child_weight
    for hist in hists:
        if not len(hist.cum_g):
            continue
        gl, hl = hist.cum_g, hist.cum_h
        gr, hr = total_g - gl, total_h - hl
        loss = (calc_gain(gl, hl, p) + calc_gain(gr, hr, p)) - root_gain
        valid = (hl >= mcw) & (hr >= mcw)
        loss = np.where(valid, loss, np.float32(-np.inf)).astype(np.float32)
        i = int(np.argmax(loss))
        if loss[i] > best_loss:
            best_loss = loss[i]
            best = Split(hist.feature, i, False, float(loss[i]), float(gl[i]), float(hl[i]),
                         float(gr[i]), float(hr[i]))
        if int(hist.cum_count[-1]) < total_count:  # the node has missing values here
            # Backward: right = bins i..end, left = missing + bins < i, i = end..0.
            last_g, last_h = gl[-1], hl[-1]
            prev_g = np.concatenate([[0.0], gl[:-1]])
            prev_h = np.concatenate([[0.0], hl[:-1]])
            rg, rh = last_g - prev_g, last_h - prev_h
            lg, lh = total_g - rg, total_h - rh
            loss = (calc_gain(lg, lh, p) + calc_gain(rg, rh, p)) - root_gain
            valid = (lh >= mcw) & (rh >= mcw)
            loss = np.where(valid, loss, np.float32(-np.inf)).astype(np.float32)[::-1]
            j = int(np.argmax(loss))
            i = len(gl) - 1 - j
            if loss[j] > best_loss:
                best_loss = loss[j]
                best = Split(hist.feature, i - 1, True, float(loss[j]), float(lg[i]), float(lh[i]),
                             float(rg[i]), float(rh[i]))
    return best


def is_valid(split: Split | None, p: SplitParams) -> bool:
    """XGBoost's expand condition for a candidate (depth is checked by the caller)."""
    return (split is not None and split.loss_chg > RT_EPS and split.left_h > 0 and split.right_h > 0
            and split.loss_chg >= p.gamma)


@dataclass
class Tree:
    """One tree as arrays indexed by node id (XGBoost's numbering: children get the next ids).

    ``party`` is -1 for a leaf, 0 for a lender split, 1 for a platform split;
    ``feature`` is the owning party's own column index. ``threshold`` is only
    known for the splits this party owns (NaN otherwise); ``value`` is the leaf
    value (learning rate applied) where the holder knows it.
    """

    left: list[int] = field(default_factory=lambda: [-1])
    right: list[int] = field(default_factory=lambda: [-1])
    parent: list[int] = field(default_factory=lambda: [-1])
    party: list[int] = field(default_factory=lambda: [-1])
    feature: list[int] = field(default_factory=lambda: [-1])
    bin: list[int] = field(default_factory=lambda: [-1])
    default_left: list[bool] = field(default_factory=lambda: [False])
    threshold: list[float] = field(default_factory=lambda: [float("nan")])
    value: list[float] = field(default_factory=lambda: [0.0])
    gain: list[float] = field(default_factory=lambda: [0.0])
    hess: list[float] = field(default_factory=lambda: [0.0])

    @property
    def n_nodes(self) -> int:
        return len(self.left)

    def split(self, node: int, party: int, feature: int, bin_index: int, default_left: bool,
              threshold: float = float("nan"), gain: float = 0.0) -> tuple[int, int]:
        """Turn leaf ``node`` into a split; returns the new (left, right) ids."""
        left, right = self.n_nodes, self.n_nodes + 1
        for _ in range(2):
            self.left.append(-1)
            self.right.append(-1)
            self.parent.append(node)
            self.party.append(-1)
            self.feature.append(-1)
            self.bin.append(-1)
            self.default_left.append(False)
            self.threshold.append(float("nan"))
            self.value.append(0.0)
            self.gain.append(0.0)
            self.hess.append(0.0)
        self.left[node], self.right[node] = left, right
        self.party[node], self.feature[node], self.bin[node] = party, feature, bin_index
        self.default_left[node], self.threshold[node], self.gain[node] = default_left, threshold, gain
        return left, right

    def leaves(self) -> list[int]:
        return [i for i in range(self.n_nodes) if self.left[i] == -1]

    def to_dict(self) -> dict:
        """Plain JSON (thresholds this party does not hold are null)."""
        d = {k: list(getattr(self, k)) for k in
             ("left", "right", "parent", "party", "feature", "bin", "default_left", "value", "gain", "hess")}
        d["threshold"] = [None if np.isnan(t) else float(t) for t in self.threshold]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Tree":
        fields = {k: list(v) for k, v in d.items()}
        fields["threshold"] = [float("nan") if t is None else float(t) for t in fields["threshold"]]
        return cls(**fields)


def route(tree: Tree, X: np.ndarray, platform_left: dict[int, np.ndarray] | None = None,
          owner: int = 0) -> np.ndarray:
    """Leaf id of every row, applying the splits ``owner`` holds thresholds for.

    Splits of the other party are resolved by ``platform_left[node]`` (bool per
    row: goes left); a missing entry for a needed node raises.
    """
    X32 = np.asarray(X, dtype=np.float32)
    node = np.zeros(X32.shape[0], dtype=np.int32)
    # Nodes are created parent before child, so one pass in id order settles every row.
    for nid in range(tree.n_nodes):
        if tree.left[nid] == -1:
            continue
        rows = np.nonzero(node == nid)[0]
        if not len(rows):
            continue
        if tree.party[nid] == owner:
            x = X32[rows, tree.feature[nid]]
            go_left = np.where(np.isnan(x), tree.default_left[nid], x < np.float32(tree.threshold[nid]))
        else:
            if platform_left is None or nid not in platform_left:
                raise ValueError(f"routing needs the other party's decision for node {nid}")
            go_left = platform_left[nid][rows]
        node[rows] = np.where(go_left, tree.left[nid], tree.right[nid])
    return node
