"""Makers for the formulas that run code: worker, eval, make-unconfined, make-bundle.

A worker incarnation is a live subprocess (see the ``workers`` package). Its
evaluations depend on it: when the worker is cancelled or dies, they are
cancelled too, and the next ``provide`` starts a new worker and evaluates
again from the recipe.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import E, far

from .kernel import register_maker

if TYPE_CHECKING:
    from ocapd.workers import Worker

    from .kernel import Incarnation, Kernel

__all__ = ["WorkerControl"]


@far("Worker")
class WorkerControl:
    """What a host holds of a worker: information about it, not the worker's facet."""

    def __init__(self, fid: str, level: str, worker: Worker) -> None:
        self._id = fid
        self._level = level
        self._worker = worker

    def info(self) -> dict[str, Any]:
        w = self._worker
        try:
            rss = w.rss_bytes()
        except Exception:  # the process is gone
            rss = 0
        return {
            "id": self._id,
            "pid": w.pid,
            "level": self._level,
            "rss_bytes": rss,
            "uptime_s": round(time.time() - w.started_at, 3),
            "confinement": w.confinement,
        }


@far("Context")
class MakeContext:
    """Handed to ``make(powers, context)``: who the value is, and whether it was cancelled."""

    def __init__(self, kernel: Kernel, fid: str) -> None:
        self._kernel = kernel
        self._id = fid

    def id(self) -> str:
        return self._id

    def cancelled(self) -> bool:
        return not self._kernel.is_live(self._id)


@register_maker("worker")
async def _make_worker(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> WorkerControl:
    from ocapd.workers import WorkerSpec, open_worker

    paths = kernel.services["paths"]
    spec = WorkerSpec(
        name=f"worker-{fid[:12]}",
        level=formula.level,
        workdir=paths.workers / fid[:32],
        log_path=paths.logs / "workers" / f"{fid[:32]}.log",
    )
    spec.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def died() -> None:
        # Died on its own (not cancelled by us): detach it and its dependents
        # now, before anyone can be handed a value from the dead process; the
        # cleanup hooks (waiting for the exit status) run afterwards.
        if kernel._live.get(fid) is inc:
            detached = kernel.detach(fid, "worker exited")
            kernel.nursery.start_soon(kernel.run_cancel_hooks, detached, "worker exited")

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_worker(spec, kernel.services["launcher"]) as worker:
                # The worker's code is untrusted: its session shares the daemon-wide budget.
                worker.connection.session.budget = kernel.services.get("budget")
                if "limits" in kernel.services:
                    from .limits import session_limits

                    worker.connection.session.limits = session_limits(kernel.services["limits"])
                task_status.started(worker)
                await worker.connection.wait_closed()
                died()
        finally:
            died()

    worker: Worker = await kernel.nursery.start(run)
    control = WorkerControl(fid, formula.level, worker)
    kernel.services.setdefault("workers", {})[fid] = control

    async def stop(reason: str) -> None:
        kernel.services["workers"].pop(fid, None)
        await worker.terminate()

    inc.on_cancel(stop)
    return control


def _facet(control: WorkerControl) -> Any:
    return control._worker.facet


@register_maker("eval")
async def _make_eval(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    control = await inc.provide(formula.worker)
    values = [await inc.provide(v) for v in formula.values]
    return await E(_facet(control)).evaluate(formula.source, formula.names, values)


@register_maker("make-unconfined")
async def _make_unconfined(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    control = await inc.provide(formula.worker)
    powers = await inc.provide(formula.powers)
    return await E(_facet(control)).make_unconfined(formula.specifier, powers, MakeContext(kernel, fid))


@register_maker("make-bundle")
async def _make_bundle(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    control = await inc.provide(formula.worker)
    powers = await inc.provide(formula.powers)
    blob = await inc.provide(formula.bundle)
    data = await blob.bytes()
    return await E(_facet(control)).make_bundle(data, powers, MakeContext(kernel, fid))
