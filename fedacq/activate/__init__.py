"""Activation: score the platform's users, turn scores into boosts and experiment buckets, serve them.

The Python API the demo and the simulator call:

- ``score_frame(booster, df) -> np.ndarray`` and ``score_parquet(booster, users, out)``
  (:mod:`.scoring`; ``load_booster(path)`` loads the prospect model);
- ``build_boost_table(scores, campaign, TierConfig(...), ExperimentConfig(...), model_version,
  expiry) -> BoostTable``; ``table.write(dir)``; ``BoostTable.load(dir)`` validates
  (:mod:`.table`, :mod:`.tiers`);
- ``bucket_of(user_ids, layer, salt)`` (:mod:`.buckets`);
- (boost, bucket, arm) for any user ids: ``table.lookup(ids)`` (a DataFrame),
  ``BoostLookup(table).lookup(ids)`` (arrays, :mod:`.lookup`), or for
  ``fedacq.sim.campaign.simulate_campaign``: ``boost_table=table.serving_frame(),
  bucket_of=table.bucket_fn()``;
- the gRPC service and its client: :mod:`.service`; the push file: :mod:`.export`.
"""

from fedacq.activate.buckets import bucket_of
from fedacq.activate.lookup import BoostLookup, LookupResult
from fedacq.activate.scoring import load_booster, score_batch, score_frame, score_parquet
from fedacq.activate.table import BoostTable, BoostTableError, ExperimentConfig, build_boost_table
from fedacq.activate.tiers import TierConfig

__all__ = ["BoostLookup", "BoostTable", "BoostTableError", "ExperimentConfig", "LookupResult", "TierConfig",
           "bucket_of", "build_boost_table", "load_booster", "score_batch", "score_frame", "score_parquet"]
