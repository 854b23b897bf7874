"""One federated modeling job, both parties on this machine: PSI, split, train, evaluate, report.

This is what ``fedacq run`` drives. Each party runs its own job function
(:func:`lender_job`, :func:`platform_job`) over a :class:`~fedacq.link.link.Link`
and touches only its own table; the in-process transport runs the two in
threads over :func:`~fedacq.link.memory.memory_pair`.

Steps, and what each party learns
---------------------------------
1. **load** - each party reads and checks its own CSV (id column, the lender's
   0/1 label column, numeric features). Nothing crosses.
2. **align** - ECDH PSI (:mod:`fedacq.psi`) on the id column. Both learn the
   intersection size and their own rows of the intersection, in one shared
   order; see that module for the exact leakage.
3. **split** - both derive the same validation positions of the intersection
   from the shared ``seed`` (a seeded permutation of ``0..n-1``). No message is
   sent and nothing new is learned: the split is a function of the
   intersection size and the seed, which both already hold. It is not
   stratified, because stratifying would need the lender's labels. PSI's shared
   order is pseudo-random per job, so the same seed picks other rows in another
   job: the split is reproducible within a job, not across jobs.
4. **train and predict** - the model's own protocol (see *Model registry*); what
   crosses is documented in that protocol's module.
5. **evaluate** - the lender, which alone holds labels, computes AUC, KS and
   gains/lift by decile on its training and validation scores. ``metrics.json``
   and the plots are the lender's report; the platform's own report holds only
   what it knows (sizes, its timings, bytes, its model part).

Transports: ``inproc`` runs both jobs in threads over a memory link;
``grpc`` starts two ``fedacq node`` processes (:mod:`fedacq.node.local`) and
submits one ``run`` job (:mod:`fedacq.learn.run_node`), so each party's job runs
in its own node over mutual TLS.

Each party logs a run to its own MLflow store (:class:`fedacq.track.PartyRun`),
writes its model part under ``DIR/<party>/`` and records every message it sent
in ``DIR/<party>/egress.jsonl``.

Model registry
--------------
``MODELS`` maps a model name to the module that drives it. Adding a model is one
entry there plus a module that defines:

* ``MODES``: the modes it supports (e.g. ``("joint",)``);
* ``resolve_params(params: dict) -> dict``: fill defaults, reject unknown names
  (``ValueError`` naming them), before any party starts;
* ``ITERATION``: ``(param name giving the number of iterations, unit)`` for
  the progress bar, e.g. ``("n_estimators", "tree")``, or ``None``;
* ``lender_role(link, data: PartyData, ctx: RoleContext) -> RoleResult`` and
  ``platform_role(link, data: PartyData, ctx: RoleContext) -> RoleResult``:
  train over the link, time the phases with ``ctx.phase("train")`` and
  ``ctx.phase("predict")``, report per-iteration metrics through
  ``ctx.on_iteration(i, metrics)``, save the party's model part under
  ``ctx.model_dir`` and list its files in ``RoleResult.files``. The lender's
  result carries ``train_score`` and ``valid_score`` (probabilities of label 1
  for ``data.X_train`` / ``data.X_valid`` rows, in order); the platform's never
  does. :func:`fit_lender` and :func:`serve_platform` do the fit/predict part of
  each side, so a role only builds its model and saves it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import re
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np
import pandas as pd

from fedacq.learn import metrics
from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, register
from fedacq.node.checkpoint import Checkpoints

#: model name -> module implementing the role interface described above.
MODELS: dict[str, str] = {
    "secureboost": "fedacq.learn.secureboost_roles",
    "hetero_lr": "fedacq.learn.hetero_lr_roles",
    "splitnn": "fedacq.learn.splitnn_roles",
}

TRANSPORTS = ("inproc", "grpc")
LENDER, PLATFORM = "lender", "platform"


# -- what the roles get and give ---------------------------------------------------------

@dataclass
class PartyTable:
    """One party's checked input: its ids, feature matrix and (lender only) labels."""

    path: Path
    ids: pd.Series
    X: np.ndarray
    feature_names: list[str]
    y: np.ndarray | None = None


@dataclass
class PartyData:
    """One party's rows of the intersection, split into training and validation rows."""

    X_train: np.ndarray
    X_valid: np.ndarray | None
    feature_names: list[str]
    y_train: np.ndarray | None = None
    y_valid: np.ndarray | None = None


@dataclass
class RoleContext:
    """Everything a role function needs besides its link and data."""

    party: str
    params: dict[str, Any]
    mode: str
    key_bits: int
    insecure_test_key: bool
    seed: int
    model_dir: Path
    on_iteration: Callable[[int, dict[str, float]], None]
    timings: dict[str, float] = field(default_factory=dict)
    #: this party's checkpoints of the job (a node job), None in-process (``fedacq run``).
    checkpoints: "RunCheckpoints | None" = None
    #: ``progress(step, done, total)``: shown by ``fedacq job status`` with an ETA.
    progress: Callable[[str, int, int | None], None] = lambda step, done, total=None: None

    @property
    def min_key_bits(self) -> int:
        """The smallest peer key this party accepts: the key size it agreed to (its own
        policy accepted it: at least 2048 bits, or a test key only in a node's test mode)."""
        return self.key_bits

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a phase (wall clock, waiting for the peer included); repeated phases add up."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start


def model_files(ctx: RoleContext) -> list[Path]:
    """Every file of the party's model part, for ``RoleResult.files``."""
    return sorted(p for p in ctx.model_dir.rglob("*") if p.is_file())


def fit_lender(lender: Any, link: Link, data: PartyData,
               ctx: RoleContext) -> tuple[np.ndarray, np.ndarray | None]:
    """The lender's side of every model: fit (with the validation rows as eval set), then
    ask for probabilities of label 1 on the training and validation rows, in that order."""
    eval_set = (data.X_valid, data.y_valid) if data.X_valid is not None else None
    with ctx.phase("train"):
        lender.fit(link, data.X_train, data.y_train, eval_set=eval_set)
    with ctx.phase("predict"):
        train_score = _positive_proba(lender.predict_proba(link, data.X_train))
        valid_score = (_positive_proba(lender.predict_proba(link, data.X_valid))
                       if data.X_valid is not None else None)
    return train_score, valid_score


def _positive_proba(p: Any) -> np.ndarray:
    """Probabilities of label 1, whether the model returns one column or scikit-learn's two."""
    p = np.asarray(p, dtype=np.float64)
    return p[:, 1] if p.ndim == 2 else p


def serve_platform(platform: Any, link: Link, data: PartyData, ctx: RoleContext) -> None:
    """The platform's side of every model: fit, answer the lender's predictions, save.

    The lender asks for predictions on the training rows, then on the validation
    rows (if any), in that order; the platform only answers, it gets no scores.
    """
    with ctx.phase("train"):
        platform.fit(link, data.X_train, eval_X=data.X_valid)
    with ctx.phase("predict"):
        platform.predict(link, data.X_train)
        if data.X_valid is not None:
            platform.predict(link, data.X_valid)
    platform.save(ctx.model_dir)


@dataclass
class RoleResult:
    """What a role function returns (see the module docstring)."""

    files: list[Path]
    train_score: np.ndarray | None = None
    valid_score: np.ndarray | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


# -- checkpoints and resumption ----------------------------------------------------------

#: the one message of a resumption: which checkpoints this party holds, as ``name@generation``.
CHECKPOINTS_MESSAGE = "run.checkpoints"
register(MessageSpec(CHECKPOINTS_MESSAGE, header={"held": list}))
#: at most this many names in it (a party keeps the PSI result and two per model kind).
MAX_HELD = 16
#: checkpoint names of a run job: the PSI result, then one per tree or epoch.
_HELD = re.compile(r"^(psi|(?:tree|epoch)-\d{4,6})@(\d{1,6})$")
PSI_CHECKPOINT = "psi"


def resume_point(checkpoints: "RunCheckpoints | None", kind: str, first: Any,
                 message: str) -> tuple[int, dict[str, Any], dict[str, np.ndarray]] | None:
    """The newest common checkpoint of ``kind`` (None without checkpoints), after checking that
    the peer's ``first`` iteration, announced in ``message``, is the one right after it: a peer
    cannot make this party skip or repeat iterations."""
    resumed = checkpoints.latest(kind) if checkpoints is not None else None
    held = 0 if resumed is None else resumed[0] + 1
    if first != held or isinstance(first, bool):
        raise ValueError(f"{message}: the lender continues from {kind} {first!r}; this party's "
                         f"checkpoints hold {held} {kind}s")
    return resumed


class RunCheckpoints:
    """One party's checkpoints of a ``run`` job, and which of them both parties hold.

    A checkpoint holds only this party's own state (``psi``: its rows of the
    intersection in the shared order; ``tree-0007`` / ``epoch-0003``: its model
    after that iteration). Each is tagged with the *generation* it was written
    in: 0 in the first attempt; a resumption agrees on one above every tag
    either party holds. Two checkpoints of the same name and generation were
    written in the same attempt, after the same common history, so they fit
    together; a name held with different tags (one party continued past the
    other before a kill, and its cleanup was cut short) never counts as common.

    Resuming, :meth:`agree` sends this party's list and reads the peer's; both
    keep exactly the checkpoints they hold in common and drop the rest, so both
    continue from the same point. Without a common ``psi`` nothing else counts
    (the shared row order is random per PSI run): PSI runs again. A model keeps
    its last two checkpoints (:meth:`save`): when a party writes iteration
    ``k``, the peer has written at least ``k - 1``, so the newest common one is
    never dropped before a newer one exists on both sides.
    """

    def __init__(self, store: Checkpoints, generation: int, held: dict[str, int]) -> None:
        self.store = store
        self.generation = generation
        self._common = dict(held)

    @classmethod
    def agree(cls, link: Link, store: Checkpoints, resume: bool) -> "RunCheckpoints":
        """This party's checkpoints for this attempt; on a resumption, the ones both parties hold."""
        if not resume:
            return cls(store, 0, {})
        mine = {name: int(store.load(name)[0].get("generation", -1)) for name in store.names()}
        mine = {name: g for name, g in mine.items() if _HELD.match(f"{name}@{g}")}
        link.send(Message(CHECKPOINTS_MESSAGE, {"held": sorted(f"{n}@{g}" for n, g in mine.items())},
                          step="resume"))
        theirs = _parse_held(link.recv(CHECKPOINTS_MESSAGE).header["held"])
        common = {name: g for name, g in mine.items() if theirs.get(name) == g}
        if PSI_CHECKPOINT not in common:
            common = {}  # every model checkpoint was trained on one PSI result's row order
        for name in set(store.names()) - set(common):
            store.drop(name)
        generation = max([*mine.values(), *theirs.values(), 0]) + 1
        return cls(store, generation, common)

    def psi(self) -> np.ndarray | None:
        """This party's rows of the intersection in the shared order, if both hold them."""
        if PSI_CHECKPOINT not in self._common:
            return None
        _, arrays = self.store.load(PSI_CHECKPOINT)
        return np.asarray(arrays["rows"], dtype=np.int64)

    def save_psi(self, rows: np.ndarray) -> None:
        self.store.save(PSI_CHECKPOINT, {"generation": self.generation, "rows": int(rows.size)},
                        {"rows": np.asarray(rows, dtype=np.int64)})

    def latest(self, kind: str) -> tuple[int, dict[str, Any], dict[str, np.ndarray]] | None:
        """The newest common checkpoint of ``kind`` ("tree", "epoch") as (index, meta, arrays)."""
        indices = [int(name.split("-")[1]) for name in self._common if name.startswith(f"{kind}-")]
        if not indices:
            return None
        index = max(indices)
        loaded = self.store.load(_iteration_name(kind, index))
        if loaded is None:
            raise RuntimeError(f"checkpoint {_iteration_name(kind, index)} vanished while the job ran")
        return index, loaded[0], loaded[1]

    def save(self, kind: str, index: int, meta: dict[str, Any], arrays: dict[str, np.ndarray] | None = None) -> None:
        """Write this party's state after iteration ``index``; drop the one two iterations back."""
        self.store.save(_iteration_name(kind, index), {**meta, "generation": self.generation}, arrays)
        if index >= 2:
            self.store.drop(_iteration_name(kind, index - 2))


def _iteration_name(kind: str, index: int) -> str:
    return f"{kind}-{index:04d}"


def _parse_held(held: list[Any]) -> dict[str, int]:
    """The peer's ``run.checkpoints`` list, checked: names it may hold, each once."""
    if len(held) > MAX_HELD:
        raise ValueError(f"{CHECKPOINTS_MESSAGE}: {len(held)} checkpoints, at most {MAX_HELD}")
    out: dict[str, int] = {}
    for entry in held:
        match = _HELD.match(entry) if isinstance(entry, str) else None
        if match is None:
            raise ValueError(f"{CHECKPOINTS_MESSAGE}: not a checkpoint of a run job: {str(entry)[:80]!r}")
        if match.group(1) in out:
            raise ValueError(f"{CHECKPOINTS_MESSAGE}: checkpoint {match.group(1)!r} listed twice")
        out[match.group(1)] = int(match.group(2))
    return out


@dataclass
class RunConfig:
    """A ``fedacq run`` job. ``params`` are the model's parameters (XGBoost names for trees)."""

    lender_path: Path
    platform_path: Path
    id_column: str
    label_column: str
    out_dir: Path
    model: str = "secureboost"
    params: dict[str, Any] = field(default_factory=dict)
    mode: str = "joint"
    key_bits: int = 2048
    insecure_test_key: bool = False
    min_intersection: int = 100
    validation_fraction: float = 0.2
    transport: str = "inproc"
    seed: int = 0
    tracking_dir: str | None = None
    experiment: str = "fedacq-run"
    job_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    progress: bool = True

    def store(self, party: str) -> str:
        """The party's MLflow store: its own folder under the output, or the shared one given."""
        return self.tracking_dir or str(self.out_dir / party / "mlruns")


def model_module(name: str) -> ModuleType:
    """The module driving model ``name``, with a clear error for unknown names."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(sorted(MODELS))}")
    return importlib.import_module(MODELS[name])


# -- step 1: load ------------------------------------------------------------------------

def load_table(path: str | Path, id_column: str, label_column: str | None = None,
               party: str | None = None) -> PartyTable:
    """Read one party's CSV; every problem is reported with the file and column it concerns.

    Ids are read as strings (an identifier is not a number: ``007`` and ``7`` differ).
    Features are every other column, and must be numeric; empty cells are
    missing values, which the learners handle; infinities are an error that names
    the party, file, column and row, as is a file with no rows.
    """
    path = Path(path)
    where = f"{party}'s file {path}" if party else str(path)
    if not path.is_file():
        raise FileNotFoundError(f"{where}: no such file")
    try:
        header = pd.read_csv(path, nrows=0).columns.tolist()
    except pd.errors.EmptyDataError:
        raise ValueError(f"{where}: the file is empty (no header, no rows)") from None
    if id_column not in header:
        raise ValueError(f"{where}: id column {id_column!r} not found (columns: {_few(header)})")
    if label_column is not None and label_column not in header:
        raise ValueError(f"{where}: label column {label_column!r} not found (columns: {_few(header)})")
    frame = pd.read_csv(path, dtype={id_column: "string"})
    if frame.empty:
        raise ValueError(f"{where}: no rows, only a header")
    ids = frame.pop(id_column)
    if ids.isna().any():
        raise ValueError(f"{where}: id column {id_column!r} has {int(ids.isna().sum())} empty value(s)")
    if ids.duplicated().any():
        dup = ids[ids.duplicated()].iloc[0]
        raise ValueError(f"{where}: id column {id_column!r} has duplicates (e.g. {dup!r})")
    y = None
    if label_column is not None:
        labels = frame.pop(label_column)
        bad = ~labels.isin([0, 1])
        if bad.any():
            raise ValueError(f"{where}: label column {label_column!r} must hold 0/1, found "
                             f"{labels[bad].unique()[:5].tolist()} (row {int(np.flatnonzero(bad)[0]) + 2})")
        y = labels.to_numpy(dtype=np.float64)
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            raise ValueError(f"{where}: feature column {col!r} is not numeric "
                             f"(e.g. {frame[col].dropna().iloc[0]!r}); encode it first")
    X = frame.to_numpy(dtype=np.float64)
    infinite = np.isinf(X)
    if infinite.any():
        row, col = (int(i[0]) for i in np.nonzero(infinite))
        raise ValueError(f"{where}: feature column {str(frame.columns[col])!r} holds an infinite value "
                         f"(row {row + 2} of the file, counting the header as row 1)")
    if frame.shape[1] == 0:
        raise ValueError(f"{where}: no feature columns besides the id{' and label' if y is not None else ''}")
    return PartyTable(path=path, ids=ids.reset_index(drop=True), X=X,
                      feature_names=[str(c) for c in frame.columns], y=y)


def _few(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


# -- step 3: split -----------------------------------------------------------------------

def split_positions(n: int, validation_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Training and validation positions of an ``n``-row intersection, the same at both parties.

    A seeded permutation picks ``round(n * fraction)`` validation positions; both
    lists are returned sorted so each side keeps the shared intersection order.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation fraction must be in [0, 1), got {validation_fraction}")
    n_valid = int(round(n * validation_fraction))
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_valid:]), np.sort(perm[:n_valid])


# -- one party's job ---------------------------------------------------------------------

def _psi(party: str, link: Link, table: PartyTable, id_column: str, min_intersection: int) -> np.ndarray:
    """This party's row indices of the intersection, in the shared order."""
    from fedacq import psi

    fn = psi.psi_lender if party == LENDER else psi.psi_platform
    frame = pd.DataFrame({id_column: table.ids})
    return np.asarray(fn(link, frame, [id_column], min_intersection=min_intersection).rows, dtype=np.int64)


def check_rows(party: str, table: PartyTable, min_intersection: int) -> None:
    """Refuse a table that cannot reach the minimum intersection, before any work."""
    if table.X.shape[0] < min_intersection:
        raise ValueError(f"{party}'s file {table.path}: {table.X.shape[0]} rows, fewer than the minimum "
                         f"intersection of {min_intersection} (set --min-intersection / min_intersection)")


#: rows each evaluated split needs: the gains table has one row per decile.
MIN_EVALUATED_ROWS = 10


def check_evaluable(party: str, data: PartyData) -> None:
    """Refuse, before training, an intersection whose evaluation could not be computed.

    Both parties know the split sizes; only the lender can check that every
    evaluated split holds both classes (AUC and KS need them).
    """
    splits = {"training": data.y_train, "validation": data.y_valid} if party == LENDER else \
        {"training": data.X_train, "validation": data.X_valid}
    for name, values in splits.items():
        if values is None:
            continue
        if len(values) < MIN_EVALUATED_ROWS:
            raise ValueError(f"the {name} split of the intersection has {len(values)} rows; evaluation by "
                             f"decile needs at least {MIN_EVALUATED_ROWS} (a larger intersection, or another "
                             "validation fraction)")
        if party == LENDER and np.unique(values).size < 2:
            raise ValueError(f"the lender's labels in the {name} split are all {int(values[0])}: AUC and KS "
                             "need both classes")


def _party_data(table: PartyTable, rows: np.ndarray, train: np.ndarray, valid: np.ndarray) -> PartyData:
    X = table.X[rows]
    y = table.y[rows] if table.y is not None else None
    has_valid = valid.size > 0
    return PartyData(X_train=X[train], X_valid=X[valid] if has_valid else None,
                     feature_names=table.feature_names,
                     y_train=y[train] if y is not None else None,
                     y_valid=y[valid] if y is not None and has_valid else None)


def _run_params(cfg: RunConfig, params: dict[str, Any]) -> dict[str, Any]:
    return {"model": cfg.model, "mode": cfg.mode, "key_bits": cfg.key_bits,
            "insecure_test_key": cfg.insecure_test_key, "min_intersection": cfg.min_intersection,
            "validation_fraction": cfg.validation_fraction,
            "seed": cfg.seed, "transport": cfg.transport, "id_column": cfg.id_column, **params}


def party_job(party: str, link: Link, table: PartyTable, cfg: RunConfig,
              params: dict[str, Any], log: Callable[[str], None] | None = None,
              checkpoints: Checkpoints | None = None, resume: bool = False,
              progress: Callable[[str, int, int | None], None] | None = None) -> dict[str, Any]:
    """Run ``party``'s side of the job over ``link``; return that party's own report.

    ``log`` receives one line per iteration (a node passes its job log, which
    the operator's ``fedacq job logs`` and ``fedacq run --transport grpc`` follow).
    A node passes its ``checkpoints`` of the job: the PSI result and the model
    after each iteration are saved there, and with ``resume`` both parties first
    agree on the checkpoints they both hold (:class:`RunCheckpoints`) and
    continue from there. ``progress(step, done, total)`` is told the step
    ("psi", then the model's unit: "tree", "epoch") as it advances.
    """
    from fedacq.track import PartyRun

    module = model_module(cfg.model)
    party_dir = cfg.out_dir / party
    model_dir = party_dir / "model"
    model_dir.mkdir(parents=True, exist_ok=True)
    bar = None
    report_progress = progress or (lambda step, done, total=None: None)
    unit = getattr(module, "ITERATION", None)

    def say(text: str) -> None:
        _say(cfg, party, text)
        if log is not None:
            log(text)
    with PartyRun(cfg.store(party), party, cfg.experiment, f"{cfg.model}-{party}", cfg.job_id,
                  _run_params(cfg, params)) as run:
        def on_iteration(i: int, values: dict[str, float]) -> None:
            run.log_metrics({k: v for k, v in values.items() if _is_number(v)}, step=i)
            if unit is not None:
                report_progress(unit[1], i + 1, params.get(unit[0]))
            if log is not None:
                log(f"iteration {i + 1}: " + ", ".join(f"{k}={v:.4f}" for k, v in values.items() if _is_number(v)))
            if bar is not None:
                bar.update(1)
                bar.set_postfix({k: f"{v:.4f}" for k, v in values.items()
                                 if _is_number(v) and ("auc" in k or "loss" in k)}, refresh=False)

        saved = RunCheckpoints.agree(link, checkpoints, resume) if checkpoints is not None else None
        ctx = RoleContext(party=party, params=params, mode=cfg.mode, key_bits=cfg.key_bits,
                          insecure_test_key=cfg.insecure_test_key, seed=cfg.seed,
                          model_dir=model_dir, on_iteration=on_iteration, checkpoints=saved,
                          progress=report_progress)
        try:
            rows = saved.psi() if saved is not None else None
            if rows is None:
                say("private set intersection")
                report_progress("psi", 0, 1)
                with ctx.phase("psi"):
                    rows = _psi(party, link, table, cfg.id_column, cfg.min_intersection)
                if saved is not None:
                    saved.save_psi(rows)
            else:
                say(f"resuming: the intersection of {rows.size} rows from this party's PSI checkpoint")
                if rows.size and (rows.min() < 0 or rows.max() >= table.X.shape[0]):
                    raise ValueError(f"{party}'s PSI checkpoint names rows outside its file {table.path}")
            report_progress("psi", 1, 1)
            psi_stats = link.stats()
            train, valid = split_positions(rows.size, cfg.validation_fraction, cfg.seed)
            if train.size == 0:
                raise ValueError(f"the intersection of the two files is empty: no common {cfg.id_column!r}")
            say(f"intersection {rows.size} rows ({train.size} train, {valid.size} validation); training")
            data = _party_data(table, rows, train, valid)
            check_evaluable(party, data)
            if party == LENDER:
                bar = _progress_bar(module, params, cfg)
            role = module.lender_role if party == LENDER else module.platform_role
            result: RoleResult = role(link, data, ctx)
        finally:
            if bar is not None:
                bar.close()
        total = link.stats()
        report: dict[str, Any] = {
            "party": party,
            "file": str(table.path),
            "rows": int(table.X.shape[0]),
            "features": len(table.feature_names),
            "intersection_size": int(rows.size),
            "train_rows": int(train.size),
            "validation_rows": int(valid.size),
            "timings": dict(ctx.timings),
            "bytes": {"psi": _traffic(psi_stats),
                      "model": _traffic({k: total[k] - psi_stats[k] for k in total}),
                      "total": _traffic(total)},
            "files": [str(p) for p in result.files],
            "info": result.info,
        }
        if party == LENDER:
            report.update(_evaluate(data, result, cfg, run))
        run.log_metrics({f"seconds_{k}": v for k, v in ctx.timings.items()})
        run.log_metrics({"bytes_sent": total["bytes_sent"], "bytes_received": total["bytes_received"]})
        for path in result.files:
            run.log_artifact(path, "model")
        run.log_dict(report, f"{party}_report.json")
    return report


def _traffic(stats: dict[str, int]) -> dict[str, int]:
    return {"bytes_sent": int(stats["bytes_sent"]), "bytes_received": int(stats["bytes_received"]),
            "messages_sent": int(stats["messages_sent"]), "messages_received": int(stats["messages_received"])}


def _evaluate(data: PartyData, result: RoleResult, cfg: RunConfig, run: Any) -> dict[str, Any]:
    """The lender's evaluation: metrics per split, plots under the output folder and in MLflow."""
    if result.train_score is None:
        raise RuntimeError(f"model {cfg.model!r}: the lender role returned no training scores")
    splits = {"train": (data.y_train, result.train_score)}
    if data.y_valid is not None:
        if result.valid_score is None:
            raise RuntimeError(f"model {cfg.model!r}: the lender role returned no validation scores")
        splits["validation"] = (data.y_valid, result.valid_score)
    out: dict[str, Any] = {"history": result.history}
    for name, (y, s) in splits.items():
        out[name] = metrics.evaluate(y, np.asarray(s, dtype=np.float64))
        run.log_metrics({f"{name}_auc": out[name]["auc"], f"{name}_ks": out[name]["ks"]})
    main = "validation" if "validation" in splits else "train"
    y, s = splits[main]
    figures = {
        "roc.png": metrics.plot_roc(splits, title=f"ROC - {cfg.model} ({cfg.mode})"),
        "ks.png": metrics.plot_ks(y, s, title=f"KS - {main}"),
        "gains.png": metrics.plot_gains(y, s, title=main),
    }
    plots = []
    for name, fig in figures.items():
        path = cfg.out_dir / name
        fig.savefig(path, dpi=110, bbox_inches="tight")
        run.log_artifact(path, "plots")
        plots.append(str(path))
    out["plots"] = plots
    out["evaluated_on"] = main
    return out


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and np.isfinite(v)


def _progress_bar(module: ModuleType, params: dict[str, Any], cfg: RunConfig) -> Any:
    from tqdm.auto import tqdm

    spec = getattr(module, "ITERATION", None)
    total, unit = (params.get(spec[0]), spec[1]) if spec else (None, "it")
    return tqdm(total=total, unit=unit, desc=f"{cfg.model} training", disable=not cfg.progress,
                file=sys.stderr)


def _say(cfg: RunConfig, party: str, text: str) -> None:
    if cfg.progress and party == LENDER:
        print(f"[fedacq run] {text}", file=sys.stderr, flush=True)


# -- the driver --------------------------------------------------------------------------

def _run_grpc(cfg: RunConfig) -> tuple[dict, dict]:
    """Both parties as real ``fedacq node`` processes on 127.0.0.1 (mutual TLS), one ``run`` job.

    Each node's state, keys, egress ledger and MLflow store live under
    ``DIR/<party>/``; its job outputs under ``DIR/<party>/state/jobs/<id>/work``.
    The plots the lender's node drew are copied to ``DIR``.
    """
    import shutil

    from fedacq.learn.run_node import DATASET, job_params
    from fedacq.node.local import start_local_pair

    if cfg.tracking_dir is not None:
        raise ValueError("--tracking-dir is not used with --transport grpc: each node logs to its own store")
    _say(cfg, LENDER, "starting a lender node and a platform node (gRPC, mutual TLS)")
    job = {"job": {"protocol": "run", "id": f"run-{cfg.job_id}"},
           "datasets": {LENDER: {DATASET: "table"}, PLATFORM: {DATASET: "table"}},
           "params": job_params(cfg)}
    datasets = {LENDER: {"table": cfg.lender_path.resolve()}, PLATFORM: {"table": cfg.platform_path.resolve()}}
    # one operator runs both nodes here: their policy is this run's own settings
    policy = {"min_intersection": cfg.min_intersection, "test_mode": cfg.insecure_test_key}
    if cfg.insecure_test_key:
        policy["min_key_bits"] = cfg.key_bits
    with start_local_pair(cfg.out_dir, datasets=datasets, allow=["run"],
                          policy={LENDER: policy, PLATFORM: policy}) as pair:
        _say(cfg, LENDER, f"job {job['job']['id']} submitted; waiting (progress: the nodes' job logs)")
        pair.submit(job, party=LENDER, wait=False)
        records = {}
        for party in (LENDER, PLATFORM):
            client = pair.client(party)
            follow = (lambda line, p=party: print(f"[{p} node] {line}", file=sys.stderr, flush=True)) \
                if cfg.progress and party == LENDER else None
            try:
                records[party] = client.wait(job["job"]["id"], timeout=_GRPC_JOB_TIMEOUT, on_log=follow)
            finally:
                client.close()
    for party, record in records.items():
        if record["status"] != "succeeded":
            raise RuntimeError(f"the {party} node's job failed: {record.get('error')}")
    lender, platform = records[LENDER]["result"], records[PLATFORM]["result"]
    copied = []
    for plot in lender["plots"]:
        target = cfg.out_dir / Path(plot).name
        shutil.copyfile(plot, target)
        copied.append(str(target))
    lender["plots"] = copied
    return lender, platform


#: a node job may train for hours; the driver waits for it rather than a link timeout.
_GRPC_JOB_TIMEOUT = 7 * 24 * 3600.0


def run(cfg: RunConfig) -> dict[str, Any]:
    """Run the whole job and write ``cfg.out_dir/metrics.json``; return what it holds."""
    module = model_module(cfg.model)
    if cfg.mode not in module.MODES:
        raise ValueError(f"model {cfg.model!r} supports mode(s) {', '.join(module.MODES)}, not {cfg.mode!r}")
    if cfg.transport not in TRANSPORTS:
        raise ValueError(f"unknown transport {cfg.transport!r}; use one of {', '.join(TRANSPORTS)}")
    if cfg.key_bits < 2048 and not cfg.insecure_test_key:
        raise ValueError(f"key size {cfg.key_bits} bits is below the 2048-bit minimum "
                         "(smaller keys are for tests only, with insecure_test_key)")
    if cfg.min_intersection < 1:
        raise ValueError(f"min_intersection must be at least 1, got {cfg.min_intersection}")
    split_positions(0, cfg.validation_fraction, cfg.seed)  # checks the fraction
    params = module.resolve_params(dict(cfg.params))
    if params.get("early_stopping_rounds") and cfg.validation_fraction == 0:
        raise ValueError("early_stopping_rounds needs a validation set: give a validation fraction above 0")
    lender_table = load_table(cfg.lender_path, cfg.id_column, cfg.label_column, party=LENDER)
    platform_table = load_table(cfg.platform_path, cfg.id_column, party=PLATFORM)
    for party, table in ((LENDER, lender_table), (PLATFORM, platform_table)):
        check_rows(party, table, cfg.min_intersection)
    if cfg.label_column in platform_table.feature_names:
        raise ValueError(f"{cfg.platform_path}: has a column named like the label ({cfg.label_column!r}); "
                         "the platform's file must not hold the lender's labels")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    try:
        if cfg.transport == "grpc":
            lender, platform = _run_grpc(cfg)
        else:
            from fedacq.link.ledger import PartyLedger
            from fedacq.link.memory import memory_pair, run_parties

            ledgers = {p: PartyLedger(cfg.out_dir / p, p) for p in (LENDER, PLATFORM)}
            lender_link, platform_link = memory_pair(LENDER, PLATFORM, job=cfg.job_id, ledgers=ledgers)
            lender, platform = run_parties((party_job, LENDER, lender_link, lender_table, cfg, params),
                                           (party_job, PLATFORM, platform_link, platform_table, cfg, params))
    except BaseException as exc:
        _mark_failed(cfg, exc)
        raise
    wall = time.perf_counter() - start

    out = {
        "job_id": cfg.job_id,
        "model": cfg.model,
        "mode": cfg.mode,
        "key_bits": cfg.key_bits,
        "insecure_test_key": cfg.insecure_test_key,
        "transport": cfg.transport,
        "seed": cfg.seed,
        "validation_fraction": cfg.validation_fraction,
        "params": params,
        "inputs": {p: {"file": r["file"], "rows": r["rows"], "features": r["features"]}
                   for p, r in ((LENDER, lender), (PLATFORM, platform))},
        "intersection_size": lender["intersection_size"],
        "train_rows": lender["train_rows"],
        "validation_rows": lender["validation_rows"],
        "train": lender["train"],
        "validation": lender.get("validation"),
        "lift_by_decile": lender[lender["evaluated_on"]]["lift_by_decile"],
        "evaluated_on": lender["evaluated_on"],
        "timings": {**{k: round(v, 4) for k, v in lender["timings"].items()}, "total": round(wall, 4)},
        "platform_timings": {k: round(v, 4) for k, v in platform["timings"].items()},
        "bytes": {
            "lender_to_platform": lender["bytes"]["total"]["bytes_sent"],
            "platform_to_lender": lender["bytes"]["total"]["bytes_received"],
            "by_phase": {phase: {"lender_to_platform": lender["bytes"][phase]["bytes_sent"],
                                 "platform_to_lender": lender["bytes"][phase]["bytes_received"]}
                         for phase in ("psi", "model")},
            "messages": {"lender_to_platform": lender["bytes"]["total"]["messages_sent"],
                         "platform_to_lender": lender["bytes"]["total"]["messages_received"]},
        },
        "history": lender["history"],
        "model_info": {LENDER: lender["info"], PLATFORM: platform["info"]},
        "files": {LENDER: lender["files"], PLATFORM: platform["files"], "plots": lender["plots"]},
        "tracking": {LENDER: cfg.store(LENDER), PLATFORM: cfg.store(PLATFORM)},
    }
    (cfg.out_dir / "metrics.json").write_text(json.dumps(out, indent=2, default=_json_default))
    return out


FAILED_FILE = "FAILED.json"


def _mark_failed(cfg: RunConfig, exc: BaseException) -> None:
    """Mark ``out_dir`` as the partial folder of a failed run (checks before any work leave none).

    What is left is kept on purpose: the ledgers record what crossed before the
    failure, and each party's MLflow run is marked FAILED.
    """
    (cfg.out_dir / FAILED_FILE).write_text(json.dumps({
        "job_id": cfg.job_id, "error": f"{type(exc).__name__}: {exc}",
        "partial": "this run failed; the ledgers record what crossed before it stopped, "
                   "the MLflow runs are marked FAILED, and there is no metrics.json"}, indent=2))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (np.ndarray,)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to metrics.json")
