"""Synthetic credit market and ad auction: the whole pipeline's test bed on one machine.

One shot (a market as it is today, a campaign of a few days):

- :func:`generate_market` -> :class:`Market` (platform users, lender customers, truth);
- :func:`simulate_campaign` -> :class:`CampaignResult` (events, per-bucket spend,
  lender funnel, per-arm summary), with a boost table and a bucket function;
- :func:`salted_buckets`: the default bucket function for users not in a boost table.

Days (a campaign of weeks on a market that drifts, labels that mature):

- :class:`World`: a drifting market (:class:`Drift`, ``NO_DRIFT``) with outcome delays
  (:class:`Maturation`): the platform's users and features as of any day, the day's traffic;
- :class:`DayCampaign`: one :meth:`DayCampaign.step` per day with that day's boost table;
  per-bucket daily outcomes, the lender's table as known on a day, events and spend;
- :func:`window_kpis`, :func:`compare`: KPIs over a window of days, two campaigns compared
  with a paired bootstrap interval;
- :mod:`fedacq.sim.refresh`: a schedule with a local XGBoost stand-in model (frozen or
  retrained), to check that refreshing matters.

See :mod:`fedacq.sim.market`, :mod:`fedacq.sim.funnel`, :mod:`fedacq.sim.auction`,
:mod:`fedacq.sim.campaign`, :mod:`fedacq.sim.drift`, :mod:`fedacq.sim.maturation`,
:mod:`fedacq.sim.world` and :mod:`fedacq.sim.days` for the model and its parameters.
"""

from fedacq.sim.campaign import BOOST_COLUMNS, CampaignResult, salted_buckets, simulate_campaign
from fedacq.sim.days import DayCampaign, compare, window_kpis
from fedacq.sim.drift import NO_DRIFT, Drift
from fedacq.sim.market import Market, generate_market
from fedacq.sim.maturation import Maturation
from fedacq.sim.world import World

__all__ = ["BOOST_COLUMNS", "NO_DRIFT", "CampaignResult", "DayCampaign", "Drift", "Market", "Maturation", "World",
           "compare", "generate_market", "salted_buckets", "simulate_campaign", "window_kpis"]
