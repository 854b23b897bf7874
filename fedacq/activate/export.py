"""Batch export of a boost table for bidding systems that take a pushed file instead of calling the service.

One row per user: ``user_id, campaign, boost, layer, bucket, arm, table_version, expires_at``.
Every row carries the version and expiry because a pushed file is detached from its manifest:
the receiver must be able to tell stale boosts from current ones row by row. Written in
chunks with a progress bar; CSV or Parquet by the file's suffix.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from fedacq.activate.table import BoostTable

EXPORT_COLUMNS = ("user_id", "campaign", "boost", "layer", "bucket", "arm", "table_version", "expires_at")
FORMATS = ("csv", "parquet")


def _repeat(value: str, n: int) -> pa.Array:
    return pa.repeat(pa.scalar(value, pa.string()), n)


def export_format(path: Path, fmt: str | None) -> str:
    fmt = fmt or {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(path.suffix.lower())
    if fmt not in FORMATS:
        raise ValueError(f"export {path}: cannot tell the format from the suffix; pass one of {FORMATS}")
    return fmt


def export_table(table: BoostTable, out: str | os.PathLike, fmt: str | None = None,
                 chunk_rows: int = 1_000_000, progress: bool = True) -> Path:
    """Write the push file for ``table`` to ``out`` (atomically: a reader never sees half a file)."""
    from tqdm import tqdm

    out = Path(out)
    fmt = export_format(out, fmt)
    m, exp = table.manifest, table.experiment
    data = table.data
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    schema = pa.schema([("user_id", pa.string()), ("campaign", pa.string()), ("boost", pa.float32()),
                        ("layer", pa.string()), ("bucket", pa.int16()), ("arm", pa.string()),
                        ("table_version", pa.string()), ("expires_at", pa.string())])
    writer = (pq.ParquetWriter(tmp, schema, compression="zstd") if fmt == "parquet"
              else pacsv.CSVWriter(tmp, schema))
    try:
        with tqdm(total=len(data), unit="rows", unit_scale=True, disable=not progress, desc="export") as bar:
            for start in range(0, max(len(data), 1), chunk_rows):
                part = data.iloc[start:start + chunk_rows]
                n = len(part)
                cols = pa.Table.from_pandas(part[["user_id", "boost", "bucket", "arm"]], preserve_index=False)
                rows = pa.Table.from_arrays(
                    [cols["user_id"].cast(pa.string()), _repeat(m["campaign"], n),
                     cols["boost"].cast(pa.float32()), _repeat(exp.layer, n),
                     cols["bucket"].cast(pa.int16()), cols["arm"].cast(pa.string()),
                     _repeat(m["version"], n), _repeat(m["expires_at"], n)], schema=schema)
                writer.write_table(rows)
                bar.update(n)
        writer.close()
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            writer.close()
            tmp.unlink()
    return out
