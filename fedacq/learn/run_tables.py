"""Each party's input table, and the checks that refuse bad input before any work.

Every problem is reported with the party, file, column (and row where there is
one) it concerns, before PSI starts: a run never fails an hour in on something
the file already showed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fedacq.learn.run_config import LENDER
from fedacq.learn.run_roles import PartyData


@dataclass
class PartyTable:
    """One party's checked input: its ids, feature matrix and (lender only) labels."""

    path: Path
    ids: pd.Series
    X: np.ndarray
    feature_names: list[str]
    y: np.ndarray | None = None


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


