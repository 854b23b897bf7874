"""CPU seconds and peak memory of a benchmark party and the processes below it, from ``/proc``.

A party's crypto work runs in its own process and in worker processes it starts (a
forkserver and pool workers), so what a party costs is the sum of CPU seconds over that
process tree, and what it needs is its own peak RSS plus its workers'. CPU seconds are
what to compare on a machine others load (wall time is not); ``VmHWM`` is the kernel's
high-water mark of a process's resident memory. Linux only, like the machine the figures
are taken on; a process that ends between listing and reading counts as 0.
"""

from __future__ import annotations

import os
from pathlib import Path


def status_kb(pid: int | str, field: str) -> int:
    """One ``kB`` field of ``/proc/<pid>/status`` (e.g. ``VmHWM``, ``VmRSS``); 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of one process so far (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (a party's forkserver and its pool workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        below = children.get(todo.pop(), [])
        out += below
        todo += below
    return out


def tree_cpu_seconds() -> float:
    """CPU seconds of this process and every live process below it."""
    return cpu_seconds("self") + sum(cpu_seconds(pid) for pid in descendants(os.getpid()))


def workers_peak_rss_mb() -> dict[str, float]:
    """Peak RSS (MB) of each live process below this one, by pid."""
    return {str(pid): status_kb(pid, "VmHWM") / 1024 for pid in descendants(os.getpid())}
