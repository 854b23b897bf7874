"""The event record the platform reports to the lender: clicks and conversions with buckets.

When a user the platform showed the lender's ad clicks or converts, the platform
reports the event with the experiment layer, bucket and arm the user was in, and
the boost-table version that was served. This is the only per-user record that
crosses from the platform to the lender, and it concerns users who clicked the
lender's own ad (the lender sees them on its landing page anyway). Spend is
*not* on it: the platform sends spend only as per-bucket aggregates.

Where the experiment fields come from: at serving time the boost service answers each
look-up with the bucket, the arm (``treatment`` flag) and the table version
(``fedacq.activate.service``; offline, ``BoostTable.lookup``); the impression log keeps
them, and a click or conversion inherits the values of the impression it follows. The
layer is the boost table's experiment layer (manifest ``experiment.layer``), and the
bucket is ``fedacq.activate.buckets.bucket_of(user_id, layer, salt)`` whether or not the
user was in the table, so an event can always be attributed to an arm.
"""

from __future__ import annotations

import pandas as pd

#: column -> pandas dtype of an event table.
EVENT_COLUMNS: dict[str, str] = {
    "event_id": "string",        # unique per event
    "ts": "int64",               # epoch seconds
    "campaign": "string",        # the lender's campaign id
    "user_id": "string",         # the identifier both sides use for the user (hashed phone in production)
    "event_type": "string",      # "click" or "conversion"
    "layer": "string",           # experiment layer name
    "bucket": "int16",           # 0..999 in that layer
    "arm": "string",             # "treatment" or "control"
    "table_version": "string",   # boost table version that was served
}

EVENT_TYPES = ("click", "conversion")
ARMS = ("treatment", "control")


def validate_events(df: pd.DataFrame, source: str = "events") -> pd.DataFrame:
    """Return ``df`` with the event columns in their dtypes; raise naming what is wrong."""
    missing = [c for c in EVENT_COLUMNS if c not in df.columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {missing}")
    out = df[list(EVENT_COLUMNS)].astype(EVENT_COLUMNS)
    bad_type = ~out["event_type"].isin(EVENT_TYPES)
    if bad_type.any():
        raise ValueError(f"{source}: column 'event_type' has values outside {EVENT_TYPES}, "
                         f"e.g. {out.loc[bad_type, 'event_type'].iloc[0]!r}")
    bad_arm = ~out["arm"].isin(ARMS)
    if bad_arm.any():
        raise ValueError(f"{source}: column 'arm' has values outside {ARMS}")
    if ((out["bucket"] < 0) | (out["bucket"] > 999)).any():
        raise ValueError(f"{source}: column 'bucket' must be in 0..999")
    if out["event_id"].duplicated().any():
        raise ValueError(f"{source}: duplicate event_id values")
    return out
