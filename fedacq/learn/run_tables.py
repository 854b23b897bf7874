"""Each party's input table, and the checks that refuse bad input before any work.

Every problem is reported with the party, file, column (and row where there is
one) it concerns, before PSI starts: a run never fails an hour in on something
the file already showed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from fedacq.learn.run_config import LENDER
from fedacq.learn.run_roles import PartyData

if TYPE_CHECKING:
    from fedacq.learn.objectives import Objective


@dataclass
class PartyTable:
    """One party's checked input: its ids, feature matrix and (lender only) labels."""

    path: Path
    ids: pd.Series
    X: np.ndarray
    feature_names: list[str]
    y: np.ndarray | None = None


def load_table(path: str | Path, id_column: str, label_column: str | None = None,
               party: str | None = None, objective: "Objective | None" = None,
               empty_labels: bool = False) -> PartyTable:
    """Read one party's CSV; every problem is reported with the file and column it concerns.

    Ids are read as strings (an identifier is not a number: ``007`` and ``7`` differ).
    Features are every other column, and must be numeric; empty cells are
    missing values, which the learners handle; infinities are an error that names
    the party, file, column and row, as is a file with no rows.

    Labels must suit ``objective`` (default ``binary:logistic``): numbers the
    objective accepts (:meth:`~fedacq.learn.objectives.Objective.check_labels`:
    0/1, non-negative, classes below ``num_class`` ...); the first refused row is
    named. An empty label cell is an error unless ``empty_labels`` (a model that
    trains on the labelled rows only): then it is NaN in ``y``.
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
        y = _labels(frame.pop(label_column), f"{where}: label column {label_column!r}", objective, empty_labels)
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


def _labels(labels: pd.Series, where: str, objective: "Objective | None", empty_labels: bool) -> np.ndarray:
    """The label column as float64 (NaN where empty, if allowed), checked for ``objective``."""
    from fedacq.learn import objectives

    objective = objective or objectives.get("binary:logistic")
    values = pd.to_numeric(labels, errors="coerce")
    text = values.isna() & labels.notna()
    if text.any():
        row = int(np.flatnonzero(text)[0])
        raise ValueError(f"{where} must hold numbers for {objective.name}, found {labels.iloc[row]!r} "
                         f"(row {row + 2}){_hint(objective)}")
    y = values.to_numpy(dtype=np.float64)
    empty = np.isnan(y)
    if empty.all():
        raise ValueError(f"{where} is empty in every row")
    if empty.any() and not empty_labels:
        raise ValueError(f"{where} has an empty cell (row {int(np.flatnonzero(empty)[0]) + 2}); this model "
                         "needs a label in every row: fill it or drop the row")
    labelled = y[~empty]
    bad = _first_refused(objective, labelled)
    if bad is not None:
        row = int(np.flatnonzero(~empty)[bad])
        raise ValueError(f"{where}: {objective.name} cannot train on {labelled[bad]:g} "
                         f"(row {row + 2}): {_refusal(objective, labelled[bad:bad + 1])}{_hint(objective)}")
    try:
        objective.check_labels(labelled)
    except ValueError as exc:  # a rule about the whole column (e.g. every Tweedie label 0)
        raise ValueError(f"{where}: {exc}") from None
    return y


def _first_refused(objective: "Objective", y: np.ndarray) -> int | None:
    """The first position whose label ``objective`` refuses on its own, or None.

    The objective's rules about single labels hold for a prefix as soon as they
    hold for its first bad label, so a bisection over prefixes finds it in
    log2(n) checks; a 1 appended to each prefix keeps the rules about the whole
    column (every label 0) out of the search.
    """
    def passes(k: int) -> bool:
        return _refusal(objective, np.r_[y[:k], 1.0]) is None

    if passes(len(y)):
        return None
    good, bad = 0, len(y)
    while bad - good > 1:
        mid = (good + bad) // 2
        good, bad = (mid, bad) if passes(mid) else (good, mid)
    return bad - 1


def _refusal(objective: "Objective", y: np.ndarray) -> str | None:
    try:
        objective.check_labels(y)
    except ValueError as exc:
        return str(exc)
    return None


def _hint(objective: "Objective") -> str:
    if objective.name == "multi:softprob":
        return f" (encode the classes as 0..{objective.num_class - 1})"
    if objective.name == "binary:logistic":
        return " (a regression target needs another objective, e.g. --objective reg:squarederror)"
    return ""


def _few(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def check_rows(party: str, table: PartyTable, min_intersection: int) -> None:
    """Refuse a table that cannot reach the minimum intersection, before any work."""
    if table.X.shape[0] < min_intersection:
        raise ValueError(f"{party}'s file {table.path}: {table.X.shape[0]} rows, fewer than the minimum "
                         f"intersection of {min_intersection} (set --min-intersection / min_intersection)")


#: rows each evaluated split needs: the evaluation by decile has one row per decile.
MIN_EVALUATED_ROWS = 10


def check_evaluable(party: str, data: PartyData) -> None:
    """Refuse, before training, an intersection too small to evaluate.

    Both parties know the split sizes; the lender counts its labelled rows
    (:func:`check_labelled` then checks what the labels must hold).
    """
    splits = {"training": data.y_train, "validation": data.y_valid} if party == LENDER else \
        {"training": data.X_train, "validation": data.X_valid}
    for name, values in splits.items():
        if values is None:
            continue
        rows = int(np.count_nonzero(~np.isnan(values))) if party == LENDER else len(values)
        what = "rows" if rows == len(values) else f"labelled rows (of {len(values)})"
        if rows < MIN_EVALUATED_ROWS:
            raise ValueError(f"the {name} split of the intersection has {rows} {what}; evaluation by decile "
                             f"needs at least {MIN_EVALUATED_ROWS} (a larger intersection, or another "
                             "validation fraction)")


def check_labelled(data: PartyData, objective: "Objective") -> None:
    """The lender's check, before training, that each split's labels can be trained and evaluated:
    the objective's rules on the training labels (e.g. not every Tweedie label 0), and both classes
    in every split of a binary classifier (AUC and KS need them)."""
    for name, y in (("training", data.y_train), ("validation", data.y_valid)):
        if y is None:
            continue
        y = y[~np.isnan(y)]
        if name == "training":
            problem = _refusal(objective, y)
            if problem is not None:
                raise ValueError(f"the lender's labels in the training split: {problem}")
        if objective.name == "binary:logistic" and np.unique(y).size < 2:
            raise ValueError(f"the lender's labels in the {name} split are all {int(y[0])}: AUC and KS "
                             "need both classes")
