"""Makers for the formulas that run code: worker, eval, make-unconfined, make-bundle.

A worker incarnation is a live subprocess (see the ``workers`` package). Its
evaluations depend on it: when the worker is cancelled or dies, they are
cancelled too, and the next ``provide`` starts a new worker and evaluates
again from the recipe.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import E, far

from . import formulas as F

if TYPE_CHECKING:
    from ocapd.workers import Worker

    from .kernel import Incarnation, Kernel

__all__ = ["MakeContext", "OutputRelay", "RunningWorker", "WorkerControl", "make_bundle", "make_eval", "make_unconfined", "make_worker"]


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


@dataclass(frozen=True)
class RunningWorker:
    """A live worker as the daemon keeps it (``kernel.services.workers``): for inspection and stopping."""

    id: str
    worker: Worker
    control: WorkerControl  # what hosts hold of it


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


async def make_worker(kernel: Kernel, fid: str, formula: F.WorkerFormula, inc: Incarnation) -> WorkerControl:
    from ocapd.workers import WorkerSpec, open_worker

    paths, launcher = kernel.services.paths, kernel.services.launcher
    if paths is None or launcher is None:
        raise RuntimeError("this daemon cannot start workers (no state folder or launcher)")
    spec = WorkerSpec(
        name=f"worker-{fid[:12]}",
        level=formula.level,
        workdir=paths.workers / fid[:32],
        log_path=paths.logs / "workers" / f"{fid[:32]}.log",
    )
    spec.log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def died(worker: Worker | None = None) -> None:
        # Died on its own (not cancelled by us): detach it and its dependents
        # now, before anyone can be handed a value from the dead process; the
        # cleanup hooks (waiting for the exit status) run afterwards. What was
        # waiting on it is told why, when one of its limits ended it.
        if inc.is_current():
            limit = worker.limit_reached() if worker is not None else None
            reason = f"worker exited: {limit}" if limit else "worker exited"
            detached = kernel.detach(fid, reason)
            kernel.nursery.start_soon(kernel.run_cancel_hooks, detached, reason)

    async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with open_worker(spec, launcher) as worker:
                # The worker's code is untrusted: its session shares the daemon-wide budget.
                worker.connection.session.budget = kernel.services.budget
                if kernel.services.limits is not None:
                    from .limits import session_limits

                    worker.connection.session.limits = session_limits(kernel.services.limits)
                # The moment the session ends, not when its transport is closed:
                # a lookup in between must make a new value, not return one from
                # the dead process.
                worker.connection.session.on_terminate = lambda reason: died(worker)
                task_status.started(worker)
                await worker.connection.wait_closed()
                died(worker)
        finally:
            died()

    worker: Worker = await kernel.nursery.start(run)
    control = WorkerControl(fid, formula.level, worker)
    kernel.services.workers[fid] = RunningWorker(fid, worker, control)

    async def stop(reason: str) -> None:
        kernel.services.workers.pop(fid, None)
        await worker.terminate()

    inc.on_cancel(stop)
    return control


def _facet(control: WorkerControl) -> Any:
    return control._worker.facet


@far("Output")
class OutputRelay:
    """Handed to the worker with an evaluation: passes what its code prints to whoever asked for it.

    The worker writes the same text to its own log; this only forwards it,
    to the remotables registered in ``kernel.services.output_sinks`` for the
    evaluation (the callers waiting for it). A caller that went away is skipped.
    """

    def __init__(self, kernel: Kernel, fid: str) -> None:
        self._kernel = kernel
        self._id = fid

    def write(self, stream: str, text: str) -> None:
        if stream not in ("stdout", "stderr") or not isinstance(text, str):
            return
        for sink in list(self._kernel.services.output_sinks.get(self._id, ())):
            try:
                E.send_only(sink).write(stream, text)
            except Exception:  # that caller's session has ended
                pass


async def _run_in_worker(kernel: Kernel, inc: Incarnation, worker_id: str, call: Any) -> Any:
    """Await a call into a worker; if this value is cancelled while the call runs, terminate the worker.

    Python cannot interrupt code that is running (``while True: pass`` never
    yields), so stopping a computation means stopping its process. Other
    values in that worker are cancelled with it and come back on next use.
    """
    promise = call
    worker = kernel.current(worker_id)

    async def stop_running_work(reason: str) -> None:
        # Only the worker this call runs in, not one made since from the same recipe.
        if not promise.settled and worker is not None and kernel.current(worker_id) is worker:
            await kernel.cancel(worker_id, reason)

    inc.on_cancel(stop_running_work)
    return await promise


async def make_eval(kernel: Kernel, fid: str, formula: F.EvalFormula, inc: Incarnation) -> Any:
    control = await inc.provide(formula.worker)
    values = [await inc.provide(v) for v in formula.values]
    call = E(_facet(control)).evaluate(formula.source, formula.names, values, OutputRelay(kernel, fid))
    return await _run_in_worker(kernel, inc, formula.worker, call)


async def make_unconfined(kernel: Kernel, fid: str, formula: F.MakeUnconfinedFormula, inc: Incarnation) -> Any:
    control = await inc.provide(formula.worker)
    powers = await inc.provide(formula.powers)
    call = E(_facet(control)).make_unconfined(formula.specifier, powers, MakeContext(kernel, fid))
    return await _run_in_worker(kernel, inc, formula.worker, call)


async def make_bundle(kernel: Kernel, fid: str, formula: F.MakeBundleFormula, inc: Incarnation) -> Any:
    control = await inc.provide(formula.worker)
    powers = await inc.provide(formula.powers)
    blob = await inc.provide(formula.bundle)
    data = await blob.bytes()
    call = E(_facet(control)).make_bundle(data, powers, MakeContext(kernel, fid))
    return await _run_in_worker(kernel, inc, formula.worker, call)
