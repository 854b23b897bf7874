"""Measurement: what the boost did to the lender's funnel, per experiment bucket and arm.

- :mod:`fedacq.measure.kpis` — the KPI definitions, the funnel/spend input
  tables, per-user join of clicks with the funnel, delta-method estimates;
- :mod:`fedacq.measure.lift` — lift of treatment over control with intervals;
- :mod:`fedacq.measure.report` — :func:`~fedacq.measure.report.measure`, the
  whole analysis as one JSON-able dict;
- :mod:`fedacq.measure.render` and :mod:`fedacq.measure.html` — plots and the
  self-contained HTML page (the HTML helpers are reusable by other reports);
- :mod:`fedacq.measure.private` — the spend message (platform -> lender) and the
  per-bucket outcome aggregates the platform may learn (private intersection-sum);
- :mod:`fedacq.measure.synthetic` — a constructed experiment with known truth;
- :mod:`fedacq.measure.commands` — ``fedacq measure``.
"""
