"""Handles: what others hold of an agent — its identity for mail, and no powers at all.

Naming an agent gives others its handle, never the agent. Mail is addressed to
a handle and delivered by the daemon to the agent behind it (``agent_behind``),
so holding a handle lets one write to an agent and nothing more.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ocapd.captp import far

from . import formulas as F

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Handle", "agent_behind"]


@far("Handle")
class Handle:
    """What others hold of an agent: identity for mail, and no powers at all."""

    def __init__(self, kernel: Kernel, fid: str, agent_id: str) -> None:
        self._kernel = kernel
        self._id = fid
        self._agent_id = agent_id


def agent_behind(kernel: Kernel, fid: str, name: str) -> tuple[str, str]:
    """The handle id and the agent id for formula ``fid``: an agent or an agent's handle.

    ``name`` is how the sender named it, for the error if it is neither.
    """
    formula = kernel.formula(fid)
    if isinstance(formula, (F.HostFormula, F.GuestFormula)):
        fid = formula.handle
        formula = kernel.formula(fid)
    if not isinstance(formula, F.HandleFormula):
        raise TypeError(f"{name!r} is not an agent or a handle; mail goes to agents")
    return fid, formula.agent
