"""A logger that imports ``logging`` the first time something is logged.

The protocol modules log only when something goes wrong, and a CLI command
(the blocking client) imports them all: ``logging`` and what it pulls in
(traceback, string, weakref, ...) would be about a seventh of its imports.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import logging

__all__ = ["LazyLogger"]


class LazyLogger:
    """``logging.getLogger(name)``, looked up on first use; use it as the logger itself."""

    __slots__ = ("_name", "_logger")

    def __init__(self, name: str) -> None:
        self._name = name
        self._logger: logging.Logger | None = None

    def __getattr__(self, attr: str) -> Any:
        logger = self._logger
        if logger is None:
            import logging

            logger = self._logger = logging.getLogger(self._name)
        return getattr(logger, attr)
