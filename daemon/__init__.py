"""ocapd's daemon: agents, formulas, names, mail, persistence and lifecycle.

Kept import-light on purpose: ``ocapd`` commands import only what they use.
The pieces: ``formulas`` (the models) and ``catalogue`` (each model's maker),
``kernel`` (formulas become incarnations; the typed ``Services``), the agents
(``hosts``, ``guests``, ``handles``, ``directories``, their ``makers`` and the
small ``values``), ``petstore`` and ``mail`` (names and messages), ``work``
(workers and evaluation), ``weblets``, ``db`` (the SQLite file) and ``service``
(the daemon process). The CLI's side of the socket is ``ocapd.client``.
"""
