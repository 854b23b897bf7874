"""PSI as a node protocol: each node aligns its own data set with its peer's.

Steps and what each party learns: as in :mod:`fedacq.psi.ecdh_psi` (this module only
reads the data set, calls :func:`~fedacq.psi.psi_lender` / :func:`~fedacq.psi.psi_platform`
and writes the result).

Params (``[params]`` in JOB.toml, seen by both sides): ``dataset`` (logical data-set
name, default ``"ids"``), ``id_columns`` (lender's columns, priority order),
``platform_id_columns`` (the platform's names, default the same), ``reveal_to``
(``"both"``), ``min_intersection`` (1), ``duplicates`` (``"first"``), ``mode``
(``"balanced"`` or ``"unbalanced"``: the platform keeps its blinded set in
``keys_dir/psi_cache/<dataset>`` and the lender its copy in ``keys_dir/psi_platform_sets``).

Output: ``work_dir/intersection.parquet`` (this side's ``row`` numbers and id values in
the shared order) and the stats as the job result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fedacq.node.protocols import JobContext, Protocol


def _table(ctx: JobContext, columns: list[str]):
    from fedacq.psi.commands import _read

    name = str(ctx.params.get("dataset", "ids"))
    if name not in ctx.datasets:
        raise ValueError(f"psi: the job names no data set {name!r} for {ctx.party} "
                         f"(has {sorted(ctx.datasets)})")
    return name, _read(Path(ctx.datasets[name]), columns)


def _finish(ctx: JobContext, table, columns: list[str], result) -> dict[str, Any]:
    from fedacq.psi.commands import _intersection_table

    out = ctx.work_dir / "intersection.parquet"
    _intersection_table(table, result.rows, columns, result.matched_on).to_parquet(out, index=False)
    ctx.logger.info("psi: intersection %d, written to %s", result.size, out)
    return {"intersection": result.size, "output": str(out), "stats": result.stats}


def run_lender(ctx: JobContext) -> dict[str, Any]:
    from fedacq.psi import LenderSetStore, psi_lender

    columns = list(ctx.params["id_columns"])
    _, table = _table(ctx, columns)
    mode = str(ctx.params.get("mode", "balanced"))
    result = psi_lender(ctx.link, table, columns, mode=mode,
                        reveal_to=str(ctx.params.get("reveal_to", "both")),
                        min_intersection=int(ctx.params.get("min_intersection", 1)),
                        duplicates=str(ctx.params.get("duplicates", "first")),
                        set_store=LenderSetStore(ctx.keys_dir / "psi_platform_sets"))
    return _finish(ctx, table, columns, result)


def run_platform(ctx: JobContext) -> dict[str, Any]:
    from fedacq.psi import PlatformCache, psi_platform

    columns = list(ctx.params.get("platform_id_columns") or ctx.params["id_columns"])
    name, table = _table(ctx, columns)
    cache = None
    if ctx.params.get("mode", "balanced") == "unbalanced":
        cache_dir = ctx.keys_dir / "psi_cache" / name
        duplicates = str(ctx.params.get("duplicates", "first"))
        if (cache_dir / "meta.json").exists():
            cache = PlatformCache.load(cache_dir)
            if cache.columns != columns or cache.n_rows != len(table):
                ctx.logger.info("psi: cache %s is for another table; rebuilding", cache_dir)
                cache = None
        if cache is None:
            cache = PlatformCache.build(cache_dir, table, columns, duplicates=duplicates)
    result = psi_platform(ctx.link, table, columns, cache=cache,
                          min_intersection=int(ctx.params.get("min_intersection", 1)),
                          duplicates=str(ctx.params.get("duplicates", "first")))
    return _finish(ctx, table, columns, result)


PROTOCOL = Protocol("psi", roles={"lender": run_lender, "platform": run_platform},
                    description="ECDH-PSI alignment of the two parties' id columns")
