"""Names that may become path components, and paths confined to a party's own folders.

A node writes only under directories its own configuration names (state,
keys, MLflow store, job work folders). Values that arrive from the peer — a
logical data-set name, a key fingerprint, a job id — are at most *names*: they
must match :data:`NAME` (no separators, no dots at the start, bounded length)
before they are used as one component, and every path built from them is
resolved and checked to lie under the directory it was meant for
(:func:`under`), so that neither ``../`` nor a symbolic link can carry a write
outside it. :func:`fsync_dir` is the last step of every durable write (ledgers,
checkpoints).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

#: a name that is safe as one path component: starts with a letter or digit, then
#: letters, digits, ``_``, ``-`` or ``.``, at most 64 characters in all.
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(value: object, what: str) -> str:
    """Return ``value`` if it is a safe :data:`NAME`, else raise ValueError naming ``what``."""
    if not isinstance(value, str) or not NAME.match(value) or ".." in value:
        raise ValueError(f"{what} {value!r} is not a valid name (1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit)")
    return value


def under(root: str | Path, *names: str) -> Path:
    """``root / names...``, resolved, after checking each name and that the result stays in ``root``.

    Symbolic links are resolved on both sides, so a link inside ``root`` that
    points elsewhere is refused like ``..`` would be.
    """
    base = Path(root).resolve()
    path = base.joinpath(*(check_name(n, "path component") for n in names)).resolve()
    if path != base and base not in path.parents:
        raise ValueError(f"{path} is outside {base}")
    return path


def fsync_dir(path: str | Path) -> None:
    """Make a directory's entries (a file just created or renamed in it) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
