"""Private set intersection (ECDH over X25519) and private intersection-sum.

Protocol entry points other modules call: :func:`psi_lender` / :func:`psi_platform`
(alignment; both return a :class:`PsiResult` whose ``rows`` are that side's row
numbers in one shared order) and :func:`intersection_sum_lender` /
:func:`intersection_sum_platform` (per-group aggregates of the lender's values).
"""

from fedacq.psi.cache import LenderSetStore, PlatformCache
from fedacq.psi.ecdh_psi import PsiError, PsiResult, psi_lender, psi_platform
from fedacq.psi.ids import prepare_ids
from fedacq.psi.intersection_sum import (IntersectionSumResult, intersection_sum_lender,
                                         intersection_sum_platform)

__all__ = ["psi_lender", "psi_platform", "PsiResult", "PsiError", "PlatformCache",
           "LenderSetStore", "prepare_ids", "intersection_sum_lender",
           "intersection_sum_platform", "IntersectionSumResult"]
