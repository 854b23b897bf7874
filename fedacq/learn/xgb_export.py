"""Export the platform's prospect model as an XGBoost JSON model.

In prospect mode every split is on a platform feature and the lender has
released the leaf values, so the platform holds a complete gradient-boosted
model. Writing it in XGBoost's own JSON format lets the platform's serving stack
score users with stock ``xgboost.Booster`` and no fedacq at all.

What the file cannot contain: per-node hessian sums ("cover") and loss changes
are the lender's; the platform never saw them, so they are written as 0.
Predictions do not use them (only SHAP contributions would).

Every objective of :mod:`fedacq.learn.objectives` exports: the intercept is
written as XGBoost keeps it (``base_score`` in the objective's output space,
a vector of ``num_class`` margins for ``multi:softprob``), and a multi-class
model lists its trees round after round with ``tree_info[t] = t % num_class``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fedacq.learn.objectives import Objective
    from fedacq.learn.secureboost import SecureBoostPlatform
    from fedacq.learn.tree import Tree

#: XGBoost's "no parent" marker for the root.
_NO_PARENT = 2147483647


def _tree_json(tree: "Tree", tree_id: int, n_features: int) -> dict:
    n = tree.n_nodes
    is_leaf = [tree.left[i] == -1 for i in range(n)]
    return {
        "base_weights": [float(tree.value[i]) if is_leaf[i] else 0.0 for i in range(n)],
        "categories": [], "categories_nodes": [], "categories_segments": [], "categories_sizes": [],
        "default_left": [int(bool(tree.default_left[i]) and not is_leaf[i]) for i in range(n)],
        "id": tree_id,
        "left_children": [int(tree.left[i]) for i in range(n)],
        "loss_changes": [0.0] * n,
        "parents": [_NO_PARENT if tree.parent[i] == -1 else int(tree.parent[i]) for i in range(n)],
        "right_children": [int(tree.right[i]) for i in range(n)],
        "split_conditions": [float(tree.value[i]) if is_leaf[i] else float(tree.threshold[i]) for i in range(n)],
        "split_indices": [0 if is_leaf[i] else int(tree.feature[i]) for i in range(n)],
        "split_type": [0] * n,
        "sum_hessian": [0.0] * n,
        "tree_param": {"num_deleted": "0", "num_feature": str(n_features), "num_nodes": str(n),
                       "size_leaf_vector": "1"},
    }


def _objective_json(obj: "Objective") -> dict:
    """The objective as XGBoost's JSON model names it, with its own parameters."""
    if obj.name == "reg:tweedie":
        rho = repr(obj.tweedie_variance_power)
        return {"name": obj.name, "tweedie_regression_param": {"tweedie_variance_power": rho}}
    if obj.name == "count:poisson":
        return {"name": obj.name, "poisson_regression_param": {"max_delta_step": repr(obj.max_delta_step)}}
    if obj.name == "multi:softprob":
        return {"name": obj.name, "softmax_multiclass_param": {"num_class": str(obj.num_class)}}
    return {"name": obj.name, "reg_loss_param": {"scale_pos_weight": "1"}}


def export_xgboost_json(platform: "SecureBoostPlatform", path: str | Path,
                        feature_names: list[str] | None = None) -> Path:
    """Write ``platform``'s prospect model to ``path`` (XGBoost JSON); returns the path.

    With ``feature_names`` the model scores DataFrames by column name (as
    ``fedacq score`` does), so a user base with reordered columns is still scored right.
    """
    if getattr(platform, "mode", None) != "prospect" or platform.base_margin_ is None:
        raise ValueError("only a finished prospect model can be exported: a joint model's "
                         "splits and leaf values are partly the lender's")
    n_features = platform.binner_.n_features
    if feature_names is not None and len(feature_names) != n_features:
        raise ValueError(f"{len(feature_names)} feature names for a model of {n_features} features")
    for t, tree in enumerate(platform.trees_):
        for i in range(tree.n_nodes):
            if tree.left[i] != -1 and (tree.party[i] != 1 or math.isnan(tree.threshold[i])):
                raise ValueError(f"tree {t} node {i} is not a platform split with a known threshold")
    obj = platform.objective_
    base_score = obj.margin_to_prob(platform.base_margin_)
    trees = [_tree_json(tr, t, n_features) for t, tr in enumerate(platform.trees_)]
    k = len(trees)
    groups = obj.n_groups
    model = {
        "learner": {
            "attributes": {}, "feature_names": list(feature_names or []),
            "feature_types": ["float"] * len(feature_names or []),
            "gradient_booster": {
                "model": {
                    "gbtree_model_param": {"num_parallel_tree": "1", "num_trees": str(k)},
                    # one boosting round = num_class trees, tree t serving class t % num_class
                    "iteration_indptr": list(range(0, k + 1, groups)),
                    "tree_info": [t % groups for t in range(k)],
                    "trees": trees,
                },
                "name": "gbtree",
            },
            "learner_model_param": {"base_score": "[" + ",".join(f"{float(v):.9E}" for v in base_score) + "]",
                                    "boost_from_average": "1",
                                    "num_class": str(groups if obj.name == "multi:softprob" else 0),
                                    "num_feature": str(n_features), "num_target": "1"},
            "objective": _objective_json(obj),
        },
        "version": [3, 2, 0],
    }
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(model))
    return out
