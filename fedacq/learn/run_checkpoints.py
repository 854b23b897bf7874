"""Checkpoints of a ``run`` job, and the one handshake that agrees on them when it resumes.

A node job saves each party's own state at natural boundaries: its rows of
the PSI intersection, then its model after each tree or epoch. ``fedacq job
resume ID`` restarts both parties; before anything else they exchange the list
of checkpoints they hold (``run.checkpoints``: names and generations only,
never content) and both continue from the newest point they hold in common.
The peer's list is checked (names a run job writes, each once, at most
:data:`MAX_HELD`) before it changes anything here.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from fedacq.link.link import Link
from fedacq.link.message import Message, MessageSpec, register
from fedacq.node.checkpoint import Checkpoints

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

