"""Campaign autopilot: a campaign file both operators agree on, run in cycles on a schedule.

* :mod:`fedacq.campaign.config` — the campaign TOML, its canonical hash, each node's check of it;
* :mod:`fedacq.campaign.state` — each node's view of the campaign, in the console's layout;
* :mod:`fedacq.campaign.gates` — quality gates and the rollback rule;
* :mod:`fedacq.campaign.cycle` — one cycle: align, update, gates, publish;
* :mod:`fedacq.campaign.loop` — the schedule: cycles, measurement, automatic rollback, pause;
* :mod:`fedacq.campaign.simulated` — the data source on the simulator (``fedacq demo --campaign``);
* :mod:`fedacq.campaign.commands` — ``fedacq campaign start|status|pause|resume|stop|rollback``.
"""

from fedacq.campaign.config import Campaign, CampaignError, check_against, check_at_node, load_campaign, \
    parse_campaign

__all__ = ["Campaign", "CampaignError", "check_against", "check_at_node", "load_campaign", "parse_campaign"]
