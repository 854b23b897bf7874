"""The versioned boost table: per-user boost, tier and experiment bucket, plus a manifest.

A table is a directory with two files:

- ``boosts.parquet``: ``user_id, score, tier, bucket, arm, boost`` (one row per scored user);
- ``manifest.json``: format, version, campaign, model version, created/expiry times (UTC,
  ISO 8601), row count, SHA-256 of the data file, default boost, the tier configuration and
  the thresholds it produced, and the experiment allocation (layer, salt, salt id, treatment
  and control bucket ranges).

Why a manifest with a checksum: the table is produced by a batch job and consumed by a
long-running service and by push exports; the consumer must be able to tell a complete,
intact, current table from a half-copied, corrupted or stale one *before* it replaces what
it serves. ``write`` writes the manifest last (atomically, by rename), so a directory
watcher never sees a manifest whose data file is incomplete.

The table stays on the platform. The salt is in the manifest because every platform system
that serves the user must compute the same bucket; the lender only ever sees (layer, bucket,
arm) on events.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from fedacq.activate.buckets import N_BUCKETS, bucket_of, salt_id
from fedacq.activate.tiers import TierConfig, fit_tiers

FORMAT = "fedacq-boost-table/1"
DATA_FILE = "boosts.parquet"
MANIFEST_FILE = "manifest.json"

DATA_SCHEMA = pa.schema([
    ("user_id", pa.string()),
    ("score", pa.float32()),
    ("tier", pa.int8()),
    ("bucket", pa.int16()),
    ("arm", pa.string()),
    ("boost", pa.float32()),
])
#: manifest key -> the JSON type(s) its value must have.
MANIFEST_TYPES: dict[str, type | tuple[type, ...]] = {
    "format": str, "version": str, "campaign": str, "model_version": str, "created_at": str,
    "expires_at": str, "rows": int, "data_file": str, "sha256": str, "default_boost": (int, float),
    "tiers": dict, "experiment": dict,
}


class BoostTableError(ValueError):
    """A boost table that must not be served (named by its directory)."""


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment layer: which buckets get the tier boost (treatment) and which 1.0 (control).

    Ranges are inclusive ``(lo, hi)`` pairs; together they must cover buckets 0..999 exactly
    once, so every user is in exactly one arm and the arm sizes are what the manifest says.
    """

    layer: str = "acq"
    salt: str = "fedacq-default-salt"
    treatment: tuple[tuple[int, int], ...] = ((0, 499),)
    control: tuple[tuple[int, int], ...] = ((500, 999),)

    def __post_init__(self) -> None:
        object.__setattr__(self, "treatment", tuple(tuple(int(x) for x in r) for r in self.treatment))
        object.__setattr__(self, "control", tuple(tuple(int(x) for x in r) for r in self.control))
        if not self.layer:
            raise ValueError("experiment: layer must not be empty")
        cover = np.zeros(N_BUCKETS, dtype=np.int32)
        for name, ranges in (("treatment", self.treatment), ("control", self.control)):
            for r in ranges:
                if len(r) != 2 or not 0 <= r[0] <= r[1] < N_BUCKETS:
                    raise ValueError(f"experiment: {name} range {list(r)} is not lo..hi within 0..{N_BUCKETS - 1}")
                cover[r[0]:r[1] + 1] += 1
        if (cover > 1).any():
            raise ValueError(f"experiment: treatment and control ranges overlap at bucket {int(np.argmax(cover > 1))}")
        if (cover == 0).any():
            raise ValueError(f"experiment: bucket {int(np.argmax(cover == 0))} is in neither treatment nor control")

    def treatment_mask(self) -> np.ndarray:
        """Boolean array over buckets 0..999: True where the bucket is in treatment."""
        mask = np.zeros(N_BUCKETS, dtype=bool)
        for lo, hi in self.treatment:
            mask[lo:hi + 1] = True
        return mask

    def to_dict(self) -> dict:
        return {"layer": self.layer, "salt": self.salt, "salt_id": salt_id(self.salt),
                "treatment": [list(r) for r in self.treatment], "control": [list(r) for r in self.control]}

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        unknown = set(d) - {"layer", "salt", "salt_id", "treatment", "control"}
        if unknown:
            raise ValueError(f"experiment: unknown key(s) {sorted(unknown)}")
        cfg = cls(layer=d["layer"], salt=d["salt"], treatment=d.get("treatment", ((0, 499),)),
                  control=d.get("control", ((500, 999),)))
        if "salt_id" in d and d["salt_id"] != salt_id(cfg.salt):
            raise ValueError("experiment: salt_id does not match the salt")
        return cfg


def _utc(t: dt.datetime) -> dt.datetime:
    return t.replace(tzinfo=dt.timezone.utc) if t.tzinfo is None else t.astimezone(dt.timezone.utc)


def _iso(t: dt.datetime, timespec: str = "seconds") -> str:
    return _utc(t).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_time(s: str) -> dt.datetime:
    return _utc(dt.datetime.fromisoformat(s.replace("Z", "+00:00")))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def read_manifest(directory: str | os.PathLike) -> dict:
    """The manifest of the table in ``directory``, checked for shape only: a JSON object with
    every key of ``MANIFEST_TYPES`` at its type, this format, and a readable ``created_at``.

    Any fault is a ``BoostTableError`` naming the directory, so a scanner can log it and go on
    to the next table; the data checks are ``BoostTable.load``'s.
    """
    d = Path(directory)
    where = f"boost table {d}"
    try:
        manifest = json.loads((d / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BoostTableError(f"{where}: no {MANIFEST_FILE}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BoostTableError(f"{where}: cannot read {MANIFEST_FILE}: {exc}") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise BoostTableError(f"{where}: {MANIFEST_FILE} is not valid JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise BoostTableError(f"{where}: {MANIFEST_FILE} is a JSON {type(manifest).__name__}, not an object")
    missing = [k for k in MANIFEST_TYPES if k not in manifest]
    if missing:
        raise BoostTableError(f"{where}: {MANIFEST_FILE} lacks key(s) {missing}")
    wrong = [k for k, t in MANIFEST_TYPES.items() if not isinstance(manifest[k], t) or isinstance(manifest[k], bool)]
    if wrong:
        raise BoostTableError(f"{where}: {MANIFEST_FILE} has key(s) of the wrong type: "
                              + ", ".join(f"{k} ({type(manifest[k]).__name__})" for k in wrong))
    if manifest["format"] != FORMAT:
        raise BoostTableError(f"{where}: format {manifest['format']!r}, expected {FORMAT!r}")
    try:
        parse_time(manifest["created_at"])
    except ValueError as exc:
        raise BoostTableError(f"{where}: bad created_at {manifest['created_at']!r}: {exc}") from None
    return manifest


@dataclass
class BoostTable:
    """Table data (columns of ``DATA_SCHEMA``) and its manifest; see the module docstring."""

    data: pd.DataFrame
    manifest: dict = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest["version"]

    @property
    def campaign(self) -> str:
        return self.manifest["campaign"]

    @property
    def experiment(self) -> ExperimentConfig:
        return ExperimentConfig.from_dict(self.manifest["experiment"])

    @property
    def expires_at(self) -> dt.datetime:
        return parse_time(self.manifest["expires_at"])

    def write(self, directory: str | os.PathLike) -> Path:
        """Write data then manifest (atomically) into ``directory``; fills rows and sha256."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        data_path = d / DATA_FILE
        arrow = pa.Table.from_pandas(self.data, schema=DATA_SCHEMA, preserve_index=False)
        pq.write_table(arrow, data_path, compression="zstd")
        self.manifest.update(rows=len(self.data), data_file=DATA_FILE, sha256=sha256_file(data_path))
        tmp = d / (MANIFEST_FILE + ".tmp")
        tmp.write_text(json.dumps(self.manifest, indent=2, sort_keys=True))
        os.replace(tmp, d / MANIFEST_FILE)
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike, now: dt.datetime | None = None) -> "BoostTable":
        """Read and validate a table; raise ``BoostTableError`` naming the directory and the fault.

        Refused: a missing or malformed manifest, a data file whose SHA-256 differs from the
        manifest, missing columns, a row count other than the manifest's, null or duplicate
        user ids, buckets or arms that disagree with the allocation, and an expired table.
        """
        d = Path(directory)
        where = f"boost table {d}"
        manifest = read_manifest(d)
        try:
            expires = parse_time(manifest["expires_at"])
            experiment = ExperimentConfig.from_dict(manifest["experiment"])
            tier_cfg = TierConfig.from_dict({k: v for k, v in manifest["tiers"].items()
                                             if k not in ("thresholds", "tier_boosts")})
        except (ValueError, KeyError, TypeError) as exc:
            raise BoostTableError(f"{where}: bad manifest: {exc}") from None
        now = _utc(now or dt.datetime.now(dt.timezone.utc))
        if expires <= now:
            raise BoostTableError(f"{where}: expired at {manifest['expires_at']} (now {_iso(now)})")
        data_path = d / Path(manifest["data_file"]).name
        if not data_path.exists():
            raise BoostTableError(f"{where}: data file {data_path.name} is missing")
        digest = sha256_file(data_path)
        if digest != manifest["sha256"]:
            raise BoostTableError(f"{where}: checksum mismatch for {data_path.name} "
                                  f"(manifest {manifest['sha256'][:12]}..., file {digest[:12]}...)")
        try:
            arrow = pq.read_table(data_path)
        except (pa.ArrowException, OSError) as exc:
            raise BoostTableError(f"{where}: cannot read {data_path.name}: {exc}") from None
        missing = [c for c in DATA_SCHEMA.names if c not in arrow.column_names]
        if missing:
            raise BoostTableError(f"{where}: {data_path.name} lacks column(s) {missing}")
        try:
            arrow = arrow.select(DATA_SCHEMA.names).cast(DATA_SCHEMA)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise BoostTableError(f"{where}: {data_path.name} has a column of the wrong type: {exc}") from None
        if arrow.num_rows != manifest["rows"]:
            raise BoostTableError(f"{where}: {arrow.num_rows} rows, manifest says {manifest['rows']}")
        _check_rows(arrow, experiment, tier_cfg, where)
        # user ids stay Arrow-backed: no Python object per user until a look-up index is built
        data = arrow.to_pandas(types_mapper={pa.string(): pd.StringDtype("pyarrow")}.get)
        return cls(data=data, manifest=manifest)

    def serving_frame(self) -> pd.DataFrame:
        """One row per user as bidding gets it (the export columns); ``fedacq.sim.campaign``
        takes this as its ``boost_table``."""
        d, exp = self.data, self.experiment
        return pd.DataFrame({"user_id": d["user_id"].astype(str), "campaign": self.campaign,
                             "boost": d["boost"], "layer": exp.layer, "bucket": d["bucket"],
                             "arm": d["arm"].astype(str), "table_version": self.version,
                             "expires_at": self.manifest["expires_at"]})

    def bucket_fn(self):
        """``f(user_ids) -> (bucket, arm)`` by this table's layer and salt, for users not in it
        (the ``bucket_of`` argument of ``fedacq.sim.campaign``)."""
        exp = self.experiment
        mask = exp.treatment_mask()

        def assign(user_ids) -> tuple[np.ndarray, np.ndarray]:
            b = bucket_of([str(u) for u in user_ids], exp.layer, exp.salt)
            return b, np.where(mask[b], "treatment", "control")

        return assign

    def lookup(self, user_ids) -> pd.DataFrame:
        """(user_id, boost, bucket, arm, known) for any user ids, known or not (for simulators)."""
        from fedacq.activate.lookup import BoostLookup

        ids = [str(u) for u in user_ids]
        res = BoostLookup(self).lookup(ids)
        return pd.DataFrame({"user_id": ids, "boost": res.boost, "bucket": res.bucket,
                             "arm": np.where(res.treatment, "treatment", "control"), "known": res.known})


def _check_rows(arrow: pa.Table, experiment: ExperimentConfig, tiers: TierConfig, where: str) -> None:
    """Row checks in Arrow compute kernels, which release the GIL: a service validating a
    new version in a background thread keeps answering requests meanwhile."""
    for col in DATA_SCHEMA.names:
        nulls = arrow.column(col).null_count
        if nulls:
            raise BoostTableError(f"{where}: column {col!r} has {nulls} null value(s)")
    ids = arrow.column("user_id")
    distinct = pc.count_distinct(ids).as_py()
    if distinct != arrow.num_rows:
        counts = pc.value_counts(ids)
        example = counts.filter(pc.greater(counts.field("counts"), 1))[0]["values"].as_py()
        raise BoostTableError(f"{where}: column 'user_id' has {arrow.num_rows - distinct} duplicate(s), "
                              f"e.g. {example!r}")
    if pc.any(pc.match_substring(ids, "\x00")).as_py():
        raise BoostTableError(f"{where}: column 'user_id' has ids containing NUL characters")
    bucket = arrow.column("bucket").to_numpy()
    if ((bucket < 0) | (bucket >= N_BUCKETS)).any():
        raise BoostTableError(f"{where}: column 'bucket' has values outside 0..{N_BUCKETS - 1}")
    treated = experiment.treatment_mask()[bucket]
    arm = arrow.column("arm")
    arm_ok = np.where(treated, pc.equal(arm, "treatment").to_numpy(zero_copy_only=False),
                      pc.equal(arm, "control").to_numpy(zero_copy_only=False))
    if not arm_ok.all():
        raise BoostTableError(f"{where}: column 'arm' disagrees with the manifest's bucket allocation")
    boost = arrow.column("boost").to_numpy()
    if (boost[~treated] != 1.0).any():
        raise BoostTableError(f"{where}: control-arm users must have boost 1.0")
    lo, hi = tiers.floor, tiers.cap
    if not ((boost[treated] >= lo) & (boost[treated] <= hi)).all():
        raise BoostTableError(f"{where}: column 'boost' has treatment values outside [floor, cap] = [{lo}, {hi}]")


def _buckets_with_progress(ids: pd.Series, exp: ExperimentConfig, progress: bool,
                           chunk: int = 1_000_000) -> np.ndarray:
    """Bucket hashing is the slow step of a build (~0.6 us per user): show it for large tables."""
    from tqdm import tqdm

    out = np.empty(len(ids), dtype=np.int16)
    with tqdm(total=len(ids), unit="users", unit_scale=True, desc="buckets", disable=not progress) as bar:
        for start in range(0, len(ids), chunk):
            part = ids.iloc[start:start + chunk].tolist()
            out[start:start + len(part)] = bucket_of(part, exp.layer, exp.salt)
            bar.update(len(part))
    return out


def build_boost_table(scores: pd.DataFrame, campaign: str, tiers: TierConfig | dict | None = None,
                      experiment: ExperimentConfig | dict | None = None, model_version: str = "",
                      expiry: dt.timedelta | dt.datetime = dt.timedelta(days=7),
                      default_boost: float = 1.0, id_column: str = "user_id",
                      score_column: str = "score", version: str | None = None,
                      now: dt.datetime | None = None, progress: bool = False) -> BoostTable:
    """Scores -> tiers -> boosts, with treatment buckets boosted and control buckets at 1.0.

    ``scores`` has one row per user (``id_column``, ``score_column``); ``expiry`` is a
    lifetime from now or an absolute time. The version defaults to
    ``<campaign>-<UTC created time to the microsecond>`` so that successive builds sort.
    """
    tier_cfg = TierConfig.from_dict(tiers) if isinstance(tiers, dict) else (tiers or TierConfig())
    exp_cfg = (ExperimentConfig.from_dict(experiment) if isinstance(experiment, dict)
               else (experiment or ExperimentConfig()))
    if not campaign:
        raise ValueError("boost table: campaign must not be empty")
    for col in (id_column, score_column):
        if col not in scores.columns:
            raise ValueError(f"scores: missing column {col!r} (have {list(scores.columns)})")
    if not tier_cfg.floor <= default_boost <= tier_cfg.cap:
        raise ValueError(f"boost table: default_boost {default_boost} outside [floor, cap] "
                         f"= [{tier_cfg.floor}, {tier_cfg.cap}]")
    ids = scores[id_column]
    if ids.isna().any():
        raise ValueError(f"scores: column {id_column!r} has {int(ids.isna().sum())} null value(s)")
    ids = ids.astype(str)
    if ids.str.contains("\x00", regex=False).any():
        raise ValueError(f"scores: column {id_column!r} has ids containing NUL characters")
    dup = ids.duplicated()
    if dup.any():
        raise ValueError(f"scores: column {id_column!r} has {int(dup.sum())} duplicate user id(s), "
                         f"e.g. {ids[dup].iloc[0]!r}")
    score = scores[score_column].to_numpy(dtype=np.float64)
    fitted = fit_tiers(score, tier_cfg)
    tier = fitted.tier_of(score)
    bucket = _buckets_with_progress(ids, exp_cfg, progress)
    treated = exp_cfg.treatment_mask()[bucket]
    boost = np.where(treated, fitted.boosts[tier], 1.0).astype(np.float32)
    data = pd.DataFrame({"user_id": ids.to_numpy(), "score": score.astype(np.float32), "tier": tier,
                         "bucket": bucket, "arm": np.where(treated, "treatment", "control"), "boost": boost})
    created = _utc(now or dt.datetime.now(dt.timezone.utc))
    expires = created + expiry if isinstance(expiry, dt.timedelta) else _utc(expiry)
    if expires <= created:
        raise ValueError(f"boost table: expiry {_iso(expires)} is not after creation {_iso(created)}")
    manifest = {
        "format": FORMAT,
        "version": version or f"{campaign}-{created.strftime('%Y%m%dT%H%M%S%fZ')}",
        "campaign": campaign,
        "model_version": model_version,
        "created_at": _iso(created, "microseconds"),  # orders versions built in one second
        "expires_at": _iso(expires),
        "rows": len(data),
        "data_file": DATA_FILE,
        "sha256": "",
        "default_boost": float(default_boost),
        "tiers": fitted.to_dict(),
        "experiment": exp_cfg.to_dict(),
    }
    return BoostTable(data=data, manifest=manifest)
