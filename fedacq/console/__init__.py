"""A read-only web console per party, served by the party's own node.

:mod:`~fedacq.console.data` reads the node's state (jobs, model versions, boost tables,
measurements, the egress ledger, campaigns), :mod:`~fedacq.console.stability` holds the
population stability index, :mod:`~fedacq.console.svg` draws the plots on the server,
:mod:`~fedacq.console.pages` writes the HTML and :mod:`~fedacq.console.server` serves it
(loopback by default; TLS and a bearer token when bound elsewhere: :mod:`~fedacq.console.settings`,
the ``[console]`` section of party.toml). The node starts it (:mod:`fedacq.node.daemon`);
``fedacq console`` (:mod:`~fedacq.console.commands`) serves a stopped node's state.
"""
