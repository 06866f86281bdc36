"""The kernel's promises about incarnations, tested on a real database with makers of the test's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from ocapd.daemon import formulas as F
from ocapd.daemon.db import Database
from ocapd.daemon.kernel import Cancelled, Incarnation, Kernel


async def test_a_value_cancelled_while_its_maker_runs_is_torn_down_when_the_maker_returns(tmp_path: Path) -> None:
    """A worker cancelled while it was still starting must not be left running (its hook comes late)."""
    db = await Database.open(tmp_path / "ocapd.sqlite")
    started, release = trio.Event(), trio.Event()
    early: list[str] = []
    late: list[str] = []

    async def slow_maker(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> str:
        async def early_hook(reason: str) -> None:
            early.append(reason)

        async def late_hook(reason: str) -> None:
            late.append(reason)

        inc.on_cancel(early_hook)
        started.set()
        await release.wait()  # e.g. a worker process starting
        inc.on_cancel(late_hook)  # e.g. "terminate the worker", known only once it runs
        return "made"

    try:
        async with trio.open_nursery() as nursery:
            kernel = Kernel(db, nursery, {F.PetStoreFormula: slow_maker})
            fid = await kernel.formulate(F.PetStoreFormula())

            async def provide() -> None:
                with pytest.raises(Cancelled):
                    await kernel.provide(fid)

            nursery.start_soon(provide)
            await started.wait()
            assert await kernel.cancel(fid, "stop it") == [fid]
            assert early == ["stop it"] and late == []
            release.set()
            await trio.testing.wait_all_tasks_blocked()
            assert late == ["stop it"]
            assert early == ["stop it"]  # each hook runs once
            assert not kernel.is_live(fid)
    finally:
        await db.aclose()
