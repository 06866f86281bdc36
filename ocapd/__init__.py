"""ocapd: an object-capability daemon.

This package is the composition root: the ``ocapd`` command line
(``ocapd.cli``), the wiring that runs the daemon with its gateway and chat
(``ocapd.run``), and the stable API for weblet backends and evaluated code
(``ocapd.sdk``). The layers live below it, each importing only downwards
(docs/architecture.md): ``ocapd.captp``, ``ocapd.workers``, ``ocapd.daemon``,
``ocapd.gateway``, ``ocapd.chat_host``.

Importing ``ocapd`` itself costs nothing: workers import ``ocapd.workers``
and ``ocapd.captp`` through it, and the CLI imports what each command needs.
"""

from __future__ import annotations

__all__ = ["__version__"]

#: The distribution's version; ``ocapd --version`` prints it.
__version__ = "0.1.0"
