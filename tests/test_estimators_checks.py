"""scikit-learn's estimator checks (sklearn.utils.estimator_checks) on the fedacq estimators.

Two settings, each with the platform's side run locally (LocalPlatform):

* a platform without features: the protocol runs (keys, encryption, trees, epochs) with
  the lender's features only, and every check passes (the estimator contract holds), but
  for the split NN two that assume two fits give the same model (:data:`SPLITNN_RANDOM`);
* a platform holding features: the checks that fit build numpy X of their own sizes with
  no joint user ids, which no federated model can align with the platform's users. They are
  the expected failures listed in :data:`NEED_ALIGNMENT`, each refused by the platform with
  "cannot be aligned ... pass a pandas DataFrame indexed by the joint user id". The checks
  that need no fit (parameters, clone, repr, tags, NotFittedError ...) pass there too.

Cost: the feature-holding runs are refusals (cheap, about a second each). The featureless
runs fit ~50 small models each: hetero LR about 2 s in all, SecureBoost and the split NN tens
of seconds each (512-bit test keys with ``insecure_test_key=True``: the contract is under test,
not the cryptography; 2 trees, ``n_jobs=1``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.utils.estimator_checks import parametrize_with_checks

import fedacq

TEST_KEY = {"key_bits": 512, "insecure_test_key": True, "n_jobs": 1}
WHY = ("sklearn's generated numpy X carries no joint user ids: its rows cannot be aligned with the platform's "
       "users (fedacq needs X as a DataFrame indexed by the joint user id)")

#: checks a federated estimator cannot pass against a platform holding features, and why
NEED_ALIGNMENT = {name: WHY for name in (
    "check_fit_score_takes_y", "check_estimators_overwrite_params", "check_dont_overwrite_parameters",
    "check_estimators_fit_returns_self", "check_readonly_memmap_input", "check_n_features_in_after_fitting",
    "check_positive_only_tag_during_fit", "check_estimators_dtypes", "check_dtype_object",
    "check_pipeline_consistency", "check_estimators_pickle", "check_f_contiguous_array_estimator",
    "check_supervised_y_2d", "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1feature", "check_dict_unchanged", "check_fit_idempotent", "check_fit_check_is_fitted",
    "check_n_features_in", "check_fit2d_predict1d", "check_estimators_nan_inf")}
#: estimators with ``max_iter`` (hetero LR, split NN): the check fits them
ITERATIVE = {"check_non_transformer_estimators_n_iter": WHY}
CLASSIFIER_ONLY = {name: WHY for name in (
    "check_classifier_data_not_an_array", "check_classifiers_classes", "check_classifiers_train")}
REGRESSOR_ONLY = {name: WHY for name in (
    "check_regressor_data_not_an_array", "check_regressors_train", "check_regressors_int",
    "check_regressors_no_decision_function", "check_fit2d_1sample")}


def _featureless():
    return fedacq.LocalPlatform(min_key_bits=512, n_jobs=1)


def _with_features():
    features = pd.DataFrame(np.random.default_rng(0).normal(size=(7, 2)), columns=["a", "b"])
    return fedacq.LocalPlatform(features, min_key_bits=512, n_jobs=1)


def _expected(estimator) -> dict[str, str]:
    if estimator.peer.server.n_features == 0:
        return {}
    extra = CLASSIFIER_ONLY if estimator.__sklearn_tags__().estimator_type == "classifier" else REGRESSOR_ONLY
    iterative = ITERATIVE if "max_iter" in estimator.get_params() else {}
    return {**NEED_ALIGNMENT, **extra, **iterative}


@parametrize_with_checks([
    fedacq.SecureBoostClassifier(n_estimators=2, peer=_featureless(), **TEST_KEY),
    fedacq.SecureBoostRegressor(n_estimators=2, peer=_featureless(), **TEST_KEY),
    fedacq.HeteroLogisticRegression(max_iter=3, peer=_featureless(), **TEST_KEY),
    fedacq.HeteroLinearRegression(peer=_featureless(), **TEST_KEY),
    fedacq.SecureBoostClassifier(n_estimators=2, peer=_with_features(), **TEST_KEY),
    fedacq.SecureBoostRegressor(n_estimators=2, peer=_with_features(), **TEST_KEY),
    fedacq.HeteroLogisticRegression(max_iter=2, peer=_with_features(), **TEST_KEY),
    fedacq.HeteroLinearRegression(max_iter=2, peer=_with_features(), **TEST_KEY),
    fedacq.SplitNNClassifier(max_iter=2, init_seed=1, peer=_with_features()),
], expected_failed_checks=_expected, xfail_strict=True)
def test_sklearn_estimator_checks(estimator, check) -> None:
    check(estimator)


#: the split NN's fits differ by design: the platform initialises its bottom network from its own secret
#: seed (OS CSPRNG; the lender cannot fix it) and the lender's gradients to it carry noise from the OS CSPRNG
SPLITNN_RANDOM = {name: "two split NN fits differ by design: the platform's secret initial weights and the gradient "
                        "noise come from the OS CSPRNG" for name in (
                            "check_fit_idempotent", "check_classifier_data_not_an_array")}


# Not strict: two random fits may happen to agree on these few rows. A learning rate and batch size
# that let 20 epochs fit sklearn's 300-row blobs (the defaults are sized for real tables).
@parametrize_with_checks([
    fedacq.SplitNNClassifier(init_seed=1, learning_rate_init=0.01, batch_size=64, peer=_featureless()),
], expected_failed_checks=lambda estimator: SPLITNN_RANDOM, xfail_strict=False)
def test_sklearn_estimator_checks_split_nn(estimator, check) -> None:
    check(estimator)
