"""Synthetic credit market and ad auction: the whole pipeline's test bed on one machine.

- :func:`generate_market` -> :class:`Market` (platform users, lender customers, truth);
- :func:`simulate_campaign` -> :class:`CampaignResult` (events, per-bucket spend,
  lender funnel, per-arm summary), with a boost table and a bucket function;
- :func:`salted_buckets`: the default bucket function for users not in a boost table.

See :mod:`fedacq.sim.market`, :mod:`fedacq.sim.funnel`, :mod:`fedacq.sim.auction`
and :mod:`fedacq.sim.campaign` for the model and its parameters.
"""

from fedacq.sim.campaign import BOOST_COLUMNS, CampaignResult, salted_buckets, simulate_campaign
from fedacq.sim.market import Market, generate_market

__all__ = ["BOOST_COLUMNS", "CampaignResult", "Market", "generate_market", "salted_buckets",
           "simulate_campaign"]
