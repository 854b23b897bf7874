"""The pipeline: align, train, score, activate, campaign, measure, report — one function per step.

``fedacq demo`` and ``fedacq experiments`` call these; so can a party's own
scripts. Who runs each step, and which steps cross between the parties:

==========  ===================  =========  ============================================================
step        runs at              crosses    how
==========  ===================  =========  ============================================================
align       both (lender asks)   yes        a ``psi`` node job (:mod:`fedacq.psi.node_protocol`)
train       both (lender asks)   yes        a ``run`` node job: PSI, training, the lender's evaluation
                                            (:mod:`fedacq.learn.run_node`)
score       platform             no         its whole user base with the prospect model it holds
activate    platform             no         tiers, boosts and experiment buckets in a boost table
campaign    the world            no         simulated auctions, clicks and credit funnel; each party
                                            receives only its share (:func:`campaign`)
measure     both (lender asks)   yes        a ``measure`` node job: the platform's spend to the lender,
                                            private intersection-sum to the platform, the lender's KPIs
                                            (:mod:`fedacq.measure.node_protocol`)
report      each party           no         from what it holds (:func:`report`: one page when one
                                            operator runs both, as the demo does)
==========  ===================  =========  ============================================================

Every crossing step is a node job, so it runs the same way between two
operators' nodes (``fedacq job submit``, see the README's *Two sites*), between
two local node processes (:class:`~fedacq.pipeline.parties.NodeParties`, the
demo's default ``grpc`` transport) or in two threads over memory links
(:class:`~fedacq.pipeline.parties.InProcessParties`, ``inproc``).
"""

from fedacq.pipeline.parties import (LENDER, PLATFORM, InProcessParties, NodeParties, Parties, SiteParties,
                                     one_operator_policy, start_parties)
from fedacq.pipeline.steps import (HEADLINE_KPIS, INPUTS, Measured, activate, activity_scores, align, campaign,
                                   campaign_datasets, campaign_files, compare, experiment_config, headline, measure,
                                   prospect_model_path, registry, report, score, stage_dataset, tier_config, train,
                                   train_stages, value_scores, write_party_files)

__all__ = ["LENDER", "PLATFORM", "InProcessParties", "NodeParties", "Parties", "SiteParties", "one_operator_policy",
           "start_parties", "HEADLINE_KPIS", "INPUTS", "Measured", "activate", "activity_scores", "align",
           "campaign", "campaign_datasets", "campaign_files", "compare", "experiment_config", "headline", "measure",
           "prospect_model_path", "registry", "report", "score", "stage_dataset", "tier_config", "train",
           "train_stages", "value_scores", "write_party_files"]
