"""A node's own policy: the weakest job it will take part in, whoever proposes it.

A job is a proposal. The node that proposes it fills every parameter the job
leaves out from its own policy and sends the job complete; the peer resolves
the same parameters against *its* policy and accepts only if nothing is missing
and nothing is weaker than it allows. Neither side ever weakens a value
silently: a refusal names the policy key, the proposed value and what the node
allows, e.g. ``policy min_key_bits: proposed key_bits=1024, platform allows
>= 2048``. The parameters both nodes then run with (the *effective*
parameters) are the proposal itself, and go into each node's job record and
MLflow run.

``[policy]`` in ``party.toml`` (every key optional; the defaults are the
safe ones)::

    [policy]
    test_mode = false                 # only a test node takes insecure_test_key / keys < 2048 bits
    min_key_bits = 2048               # smallest HE key (modulus bits, either scheme); the received key is checked too
    schemes = ["paillier"]            # additive HE schemes accepted, preferred first: "paillier", "ou"
    models = ["secureboost", "hetero_lr", "splitnn"]
    modes = ["joint", "prospect"]     # prospect releases leaf values to the platform
    psi_modes = ["balanced", "unbalanced"]
    reveal_to = ["both", "lender"]    # who may learn the intersection rows
    min_intersection = 100            # PSI and training stop below this many common users
    leaf_noise_max_epsilon = 10.0     # prospect SecureBoost must noise released leaves (unset: no floor)
    hetero_lr_min_batch_size = 64     # hetero LR batch floor (the protocol also needs every batch > d_p)
    splitnn_min_gradient_noise = 0.0  # split NN gradient noise multiplier floor
    secureboost_goss = false          # lender: allow GOSS (top_rate/other_rate), which shows the platform each tree's sample
    measure_min_cohort = 10           # smallest per-bucket cohort the lender releases to the platform
    measure_max_epsilon = 1.0         # measurement's Laplace epsilon must be > 0 and <= this (unset: noise optional)
    psi_cache_max_increments = 30     # platform: incremental PSI updates under one cache key before a fresh key
    psi_cache_max_age_days = 30.0     # platform: the cache key's age (days) before a fresh key
    psi_job_max_age_days = 1.0        # a run job's psi_job: finished at most this long before the run job
    max_concurrent_jobs = 4           # jobs running at once with the peer

Which key protects whom: the lender's node guards its labels with the leaf-noise
floor, the hetero LR batch floor, the split NN noise floor and ``secureboost_goss``
(GOSS sends the platform each tree's sample, the rows of largest gradients: in the
first tree of a binary model, the minority class; checked by the lender's node when
its side of the job starts, before anything crosses), and its outcomes in
measurement with the minimum cohort and the epsilon cap; the platform's
node guards its users and features with the minimum intersection,
``reveal_to``, the models and modes it allows and the life of its PSI cache key
(``psi_cache_max_increments``, ``psi_cache_max_age_days``: under one key the lender
can link tokens across jobs, i.e. count how many of the platform's users came and
went, so the key is renewed after that many incremental updates or days); both guard
the key size, and both bound how old an alignment they train on (``psi_job_max_age_days``:
a ``run`` job's ``psi_job``, :mod:`fedacq.learn.run_node`; each node also checks that its own
table still holds the ids that alignment was made on, whatever its age).

``schemes``: the additive homomorphic schemes (:mod:`fedacq.crypto.scheme`) this
node takes part in; a job it proposes uses the first one unless the job names
another. Okamoto–Uchiyama (``"ou"``) is opt-in: faster SecureBoost histograms,
but newer in fedacq and not interoperable with ``phe``, so a node operator turns
it on (``schemes = ["paillier", "ou"]``) rather than finding it on. One
``min_key_bits`` serves both: equal modulus sizes give equal security.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterable

SCHEMES = ("paillier", "ou")
#: what a node without ``[policy] schemes`` accepts: OU is opt-in (module docstring).
DEFAULT_SCHEMES = ("paillier",)
MODELS = ("secureboost", "hetero_lr", "splitnn")
MODES = ("joint", "prospect")
PSI_MODES = ("balanced", "unbalanced")
REVEAL_TO = ("both", "lender")


class PolicyError(ValueError):
    """A proposal weaker than this node's policy allows (nothing was started)."""


@dataclass(frozen=True)
class Policy:
    """``[policy]`` of one node; see the module docstring for each key."""

    party: str = ""
    test_mode: bool = False
    min_key_bits: int = 2048
    schemes: tuple[str, ...] = DEFAULT_SCHEMES
    models: tuple[str, ...] = MODELS
    modes: tuple[str, ...] = MODES
    psi_modes: tuple[str, ...] = PSI_MODES
    reveal_to: tuple[str, ...] = REVEAL_TO
    min_intersection: int = 100
    leaf_noise_max_epsilon: float | None = None
    hetero_lr_min_batch_size: int = 64
    splitnn_min_gradient_noise: float = 0.0
    secureboost_goss: bool = False
    measure_min_cohort: int = 10
    measure_max_epsilon: float | None = None
    psi_cache_max_increments: int = 30
    psi_cache_max_age_days: float = 30.0
    psi_job_max_age_days: float = 1.0
    max_concurrent_jobs: int = 4

    # -- the checks every protocol's parameters go through -------------------------------
    def refuse(self, key: str, proposed: str, allowed: str) -> PolicyError:
        who = self.party or "this node"
        return PolicyError(f"policy {key}: proposed {proposed}, {who} allows {allowed}")

    def one_of(self, key: str, name: str, value: Any) -> None:
        allowed: tuple[str, ...] = getattr(self, key)
        if value not in allowed:
            raise self.refuse(key, f"{name}={value!r}", f"one of {list(allowed)}")

    def at_least(self, key: str, name: str, value: Any, floor: float | None = None) -> None:
        floor = getattr(self, key) if floor is None else floor
        if not _number(value) or value < floor:
            raise self.refuse(key, f"{name}={value!r}", f">= {floor}")

    def key_size(self, key_bits: Any, insecure_test_key: Any) -> None:
        """Keys under :attr:`min_key_bits`, and test keys at all, only on a test node."""
        if not isinstance(insecure_test_key, bool):
            raise self.refuse("test_mode", f"insecure_test_key={insecure_test_key!r}", "true or false")
        if insecure_test_key and not self.test_mode:
            raise self.refuse("test_mode", "insecure_test_key=true", "no test keys (it is not a test node)")
        if not isinstance(key_bits, int) or isinstance(key_bits, bool):
            raise self.refuse("min_key_bits", f"key_bits={key_bits!r}", f">= {self.min_key_bits} (an integer)")
        if key_bits < self.min_key_bits and not (self.test_mode and insecure_test_key):
            raise self.refuse("min_key_bits", f"key_bits={key_bits}", f">= {self.min_key_bits}")


def complete(params: dict[str, Any], defaults: dict[str, Any], protocol: str) -> dict[str, Any]:
    """``defaults`` overridden by ``params``; a parameter the protocol does not know is refused."""
    if not isinstance(params, dict):
        raise PolicyError(f"{protocol}: [params] must be a table")
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise PolicyError(f"{protocol}: unknown parameter(s) {unknown}; known: {sorted(defaults)}")
    return {**defaults, **params}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _names(value: Any, key: str, source: str, known: Iterable[str]) -> tuple[str, ...]:
    known = tuple(known)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{source}: [policy] {key} must be a list of names")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValueError(f"{source}: [policy] {key} names unknown value(s) {unknown}; known: {list(known)}")
    return tuple(value)


def load_policy(table: Any, source: str, party: str) -> Policy:
    """Read ``[policy]`` (a TOML table); every error names ``source`` and the key."""
    if table is None:
        return Policy(party=party)
    if not isinstance(table, dict):
        raise ValueError(f"{source}: [policy] must be a table")
    names = {f.name for f in fields(Policy)} - {"party"}
    unknown = sorted(set(table) - names)
    if unknown:
        raise ValueError(f"{source}: unknown [policy] key(s) {unknown}; known: {sorted(names)}")
    out: dict[str, Any] = {"party": party}
    lists = {"schemes": SCHEMES, "models": MODELS, "modes": MODES, "psi_modes": PSI_MODES,
             "reveal_to": REVEAL_TO}
    for key, value in table.items():
        if key in lists:
            out[key] = _names(value, key, source, lists[key])
            if key == "schemes" and not value:
                raise ValueError(f"{source}: [policy] schemes must name at least one scheme of {list(SCHEMES)}")
        elif key in ("test_mode", "secureboost_goss"):
            if not isinstance(value, bool):
                raise ValueError(f"{source}: [policy] {key} must be true or false")
            out[key] = value
        elif key in ("min_key_bits", "min_intersection", "hetero_lr_min_batch_size", "measure_min_cohort",
                     "max_concurrent_jobs", "psi_cache_max_increments"):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{source}: [policy] {key} must be a positive integer, got {value!r}")
            out[key] = value
        else:  # leaf_noise_max_epsilon, measure_max_epsilon, splitnn_min_gradient_noise, psi_*_max_age_days
            if not _number(value) or value < 0 or (key.endswith(("_max_epsilon", "_days")) and value == 0):
                raise ValueError(f"{source}: [policy] {key} must be a non-negative number, got {value!r}")
            out[key] = float(value)
    policy = Policy(**out)
    if policy.min_key_bits < 2048 and not policy.test_mode:
        raise ValueError(f"{source}: [policy] min_key_bits below 2048 needs test_mode = true")
    return policy


__all__ = ["Policy", "PolicyError", "complete", "load_policy", "MODELS", "MODES", "PSI_MODES", "REVEAL_TO", "SCHEMES",
           "DEFAULT_SCHEMES"]
