"""ocapd's daemon: agents, formulas, names, mail, persistence, lifecycle and the CLI.

Kept import-light on purpose: ``ocapd`` commands import only what they use.
The pieces: ``kernel`` (formulas become incarnations), ``agents`` (hosts,
guests, handles), ``petstore`` and ``mail`` (names and messages), ``work``
(workers and evaluation), ``service`` (the daemon process), ``cli`` and
``client`` (the command line).
"""
