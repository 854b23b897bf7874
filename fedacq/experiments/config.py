"""Sweep configs (TOML): one base setting, and sweeps that vary one setting at a time.

A sweep config reads::

    title = "what this sweep answers"

    [base]                      # every setting of one experiment point
    n_users = 1_000_000
    targeting = "prospect"      # prospect | joint | activity
    boost_strength = 1.0        # exponent on the tier boosts
    treatment_share = 0.5
    ...
    [base.params]               # SecureBoost parameters (XGBoost names)
    n_estimators = 20

    [[sweep]]
    name = "boost strength"
    setting = "boost_strength"
    values = [0.5, 1.0, 2.0]
    labels = ["mild", "default", "strong"]   # optional

Each sweep's points are the base with that one setting replaced, so a point
differs from the base in exactly one respect and the table reads as "what
changes when the lender changes X". TOML has no null: in ``leaf_epsilon``
values the string ``"none"`` means no noise (and leaving it out of ``[base]``
means the same).

Boost strength is an exponent, not a factor: tier boost ``b`` becomes
``b ** strength``. Strength 0 turns the boost off (every tier 1.0), 1 is the
configured boosts and 2 squares them; the neutral 1.0 tier stays 1.0 and a
discount tier (< 1) deepens as the premium tiers rise, which a plain factor
would not do.
"""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

#: what a point may target with: a model trained on the platform's features only, a model on
#: both parties' features (model quality only, see :mod:`fedacq.experiments.runner`), or the
#: label-free activity ranking.
TARGETINGS = ("prospect", "joint", "activity")


@dataclass(frozen=True)
class PointSettings:
    """Every setting of one experiment point (a market, a model, a campaign)."""

    n_users: int = 1_000_000
    seed: int = 7
    days: int = 28
    budget_per_user_day: float = 0.02
    key_bits: int = 2048
    insecure_test_key: bool = False
    transport: str = "inproc"
    targeting: str = "prospect"
    params: tuple[tuple[str, Any], ...] = (("n_estimators", 20), ("max_depth", 3), ("learning_rate", 0.3),
                                           ("max_bin", 32))
    leaf_epsilon: float | None = None
    leaf_mechanism: str = "laplace"
    tier_cuts: tuple[float, ...] = (0.2, 0.5, 0.8)
    tier_boosts: tuple[float, ...] = (0.3, 1.0, 1.6, 3.0)
    boost_strength: float = 1.0
    treatment_share: float = 0.5
    min_bucket_size: int = 20

    def __post_init__(self) -> None:
        if self.targeting not in TARGETINGS:
            raise ValueError(f"targeting must be one of {TARGETINGS}, got {self.targeting!r}")
        if not 0.0 < self.treatment_share < 1.0 or round(self.treatment_share * 1000) in (0, 1000):
            raise ValueError(f"treatment_share must leave both arms at least one of 1000 buckets, "
                             f"got {self.treatment_share}")
        if self.boost_strength < 0:
            raise ValueError(f"boost_strength must be >= 0, got {self.boost_strength}")
        if self.leaf_epsilon is not None:
            if self.leaf_epsilon <= 0:
                raise ValueError(f"leaf_epsilon must be > 0 (or \"none\"), got {self.leaf_epsilon}")
            if self.targeting != "prospect":
                raise ValueError(f"leaf_epsilon applies to the prospect model's released leaves, "
                                 f"not to targeting {self.targeting!r}")

    @property
    def model_params(self) -> dict[str, Any]:
        """SecureBoost parameters, with the leaf-release noise when an epsilon is set."""
        out = dict(self.params)
        if self.leaf_epsilon is not None:
            out["leaf_noise"] = {"mechanism": self.leaf_mechanism, "epsilon": float(self.leaf_epsilon)}
        return out

    @property
    def boosts(self) -> tuple[float, ...]:
        """The tier boosts raised to ``boost_strength``."""
        return tuple(float(b) ** self.boost_strength for b in self.tier_boosts)

    def model_key(self) -> tuple[Any, ...] | None:
        """What decides the trained model; points with the same key share one training run."""
        if self.targeting == "activity":
            return None
        return (self.targeting, self.n_users, self.seed, self.key_bits, self.transport,
                repr(sorted(self.model_params.items())))

    def campaign_key(self) -> tuple[Any, ...] | None:
        """What decides a campaign's outcome; points with the same key share one simulation."""
        if self.targeting == "joint":
            return None
        return (self.model_key(), self.targeting, self.n_users, self.seed, self.days, self.budget_per_user_day,
                self.tier_cuts, self.boosts, self.treatment_share, self.min_bucket_size)

    def describe(self) -> dict[str, Any]:
        """The settings as a flat, JSON-able dict (params spelled out)."""
        out = asdict(self)
        out["params"] = dict(self.params)
        return out


@dataclass(frozen=True)
class Point:
    """One row of the results table: which sweep, which value, and the full settings."""

    sweep: str
    setting: str
    value: Any
    label: str
    settings: PointSettings


@dataclass
class SweepConfig:
    """A parsed sweep file: its title, base settings and the points to run, in order."""

    path: Path
    title: str
    base: PointSettings
    points: list[Point] = field(default_factory=list)


_SETTINGS = {f.name for f in fields(PointSettings)}


def _setting_value(name: str, value: Any, where: str) -> Any:
    """A TOML value as the type :class:`PointSettings` holds."""
    if name == "leaf_epsilon":
        if isinstance(value, str):
            if value.lower() != "none":
                raise ValueError(f"{where}: leaf_epsilon must be a number or \"none\", got {value!r}")
            return None
        return float(value)
    if name in ("tier_cuts", "tier_boosts"):
        if not isinstance(value, list):
            raise ValueError(f"{where}: {name} must be a list of numbers")
        return tuple(float(v) for v in value)
    if name == "params":
        if not isinstance(value, dict):
            raise ValueError(f"{where}: params must be a table of SecureBoost parameters")
        if "leaf_noise" in value:
            raise ValueError(f"{where}: set leaf noise with leaf_epsilon / leaf_mechanism, not params.leaf_noise")
        return tuple(sorted(value.items()))
    if name in ("boost_strength", "treatment_share", "budget_per_user_day"):
        return float(value)
    return value


def load_config(path: str | Path) -> SweepConfig:
    """Parse and check a sweep file; every problem names the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such sweep config")
    with path.open("rb") as fh:
        try:
            doc = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"{path}: not valid TOML ({exc})") from None
    unknown_top = sorted(set(doc) - {"title", "base", "sweep"})
    if unknown_top:
        raise ValueError(f"{path}: unknown top-level key(s) {unknown_top}; expected title, [base], [[sweep]]")
    base_doc = doc.get("base", {})
    unknown = sorted(set(base_doc) - _SETTINGS)
    if unknown:
        raise ValueError(f"{path}: [base] has unknown setting(s) {unknown}; known: {sorted(_SETTINGS)}")
    try:
        base = PointSettings(**{k: _setting_value(k, v, f"{path} [base]") for k, v in base_doc.items()})
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: [base]: {exc}") from None
    cfg = SweepConfig(path=path, title=str(doc.get("title", path.stem)), base=base)
    sweeps = doc.get("sweep", [])
    if not sweeps:
        raise ValueError(f"{path}: no [[sweep]] tables: nothing to run")
    for i, sweep in enumerate(sweeps):
        where = f"{path} [[sweep]] #{i + 1}"
        missing = [k for k in ("name", "setting", "values") if k not in sweep]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        setting, values = sweep["setting"], sweep["values"]
        if setting not in _SETTINGS or setting == "params":
            raise ValueError(f"{where}: cannot sweep {setting!r}; known settings: {sorted(_SETTINGS - {'params'})}")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{where}: values must be a non-empty list")
        labels = sweep.get("labels", [str(v) for v in values])
        if len(labels) != len(values):
            raise ValueError(f"{where}: {len(labels)} labels for {len(values)} values")
        for value, label in zip(values, labels):
            try:
                settings = replace(base, **{setting: _setting_value(setting, value, where)})
            except (TypeError, ValueError) as exc:
                raise ValueError(f"{where}: value {value!r}: {exc}") from None
            cfg.points.append(Point(sweep=str(sweep["name"]), setting=setting, value=value, label=str(label),
                                    settings=settings))
    return cfg
