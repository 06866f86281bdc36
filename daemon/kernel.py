"""The kernel: formulas (persisted recipes) become live values (incarnations) on demand.

``provide(id)`` incarnates a formula with the maker the kernel was given for
its type (``catalogue.MAKERS``), memoized, so every caller shares one live value. A maker declares what its
value depends on by providing those ids through its ``Incarnation``
("this dies if that dies"); ``cancel(id)`` then cancels everything that
depends on it, transitively, and runs their cancel hooks (a worker is
terminated). The next ``provide`` makes a fresh incarnation. Nothing is
revived eagerly after a restart: recipes persist, heap state does not.

Writes go through a ``Txn``: formulas and names recorded in it are committed
in one SQLite transaction and become visible in memory only after the commit
returned, so a crash never leaves memory ahead of disk.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import trio

from ocapd.captp import Promise, is_remotable, make_promise_kit

from .formulas import Formula, FormulaModel, dependencies, new_formula_id, parse_formula

if TYPE_CHECKING:
    from ocapd.captp import Budget, Connection
    from ocapd.workers import Launcher

    from .db import Database
    from .limits import DaemonLimits
    from .paths import Paths
    from .peers import Network
    from .registry import WebletRegistry
    from .work import RunningWorker

__all__ = ["Kernel", "Incarnation", "Txn", "Cancelled", "Maker", "Services", "GatewayControls"]

log = logging.getLogger("ocapd.kernel")

FormulaT = TypeVar("FormulaT", bound=FormulaModel)
#: A maker incarnates one formula type: ``await maker(kernel, id, formula, incarnation)``
#: is the live value. ``catalogue.MAKERS`` holds one per formula model.
Maker = Callable[["Kernel", str, FormulaT, "Incarnation"], Awaitable[Any]]


class GatewayControls(Protocol):
    """What the daemon asks of the gateway (another layer, plugged in through a hook)."""

    def info(self) -> dict[str, Any]: ...
    async def open_instance(self, weblet_id: str) -> dict[str, str]: ...
    def close_instance(self, label: str) -> bool: ...
    def close_weblet_instances(self, weblet_id: str, reason: str = "cancelled") -> int: ...
    def list_instances(self) -> list[dict[str, Any]]: ...
    async def follow_instance_notices(self, label: str, weblet_id: str) -> Any: ...
    async def invoke_command(self, label: str, name: str, args: dict[str, Any] | None = None) -> Any: ...
    def chat_sessions(self, agent_id: str) -> int: ...


class ChatAgents(Protocol):
    """The chat agent (``ocapd.chat_host.agent``, another layer, plugged in by the composition root).

    ``for_host(host)`` is the agent facet of one host: what ``Host.agent()``
    returns over CapTP and what the gateway's ``/api/agent/…`` routes call;
    ``console_for(host)`` its model setting and MCP, for the CLI's socket only.
    """

    async def for_host(self, host: Any) -> Any: ...
    async def console_for(self, host: Any) -> Any: ...


@dataclass
class Services:
    """What makers and facets reach beyond the formula table; each field says who sets it."""

    #: The state, run and cache folders (``run_daemon``).
    paths: Paths | None = None
    #: Starts worker processes (``run_daemon``).
    launcher: Launcher | None = None
    #: Pet names as loaded at start-up, read by the pet-store maker (``run_daemon``;
    #: a store's live names are in its ``PetStore``). Mailboxes are read when first used.
    names: dict[str, dict[str, str]] = field(default_factory=dict)
    #: The id of the ``NONE`` formula (``run_daemon``, on first start: the root formulas).
    least_authority: str | None = None
    #: Live CapTP sessions by name, for ``ocapd inspect`` (the CLI listener, the gateway).
    sessions: dict[str, Connection] = field(default_factory=dict)
    #: Live workers by formula id (the worker maker).
    workers: dict[str, RunningWorker] = field(default_factory=dict)
    #: The gateway's control object, once it exists (the gateway hook).
    gateway: GatewayControls | None = None
    #: Set once the gateway listens or failed to (the gateway hook; None: no gateway).
    gateway_ready: trio.Event | None = None
    #: Set once the daemon has reported ready (``run_daemon``): work that must not
    #: delay "ready" (the gateway's web stack import) starts then.
    daemon_ready: trio.Event | None = None
    #: Who wants the output (print) of an evaluation while it runs: eval formula id ->
    #: remotables with ``write(stream, text)`` (``Host.evaluate`` with an ``output`` option).
    output_sinks: dict[str, list[Any]] = field(default_factory=dict)
    #: The daemon is stopping (``run_daemon``): work cut short now resumes from its recipe on next start.
    stopping: bool = False
    #: ``async () -> None`` callables awaited first when the daemon stops (the gateway's shutdown).
    before_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    #: The chat agent: tool lists, routing, permission, audit (the composition root, ``run_daemon(agent=…)``).
    agent: ChatAgents | None = None
    #: Installed weblets and their panels (``registry.registry_of``, on first use).
    weblet_registry: WebletRegistry | None = None
    #: The daemon's resource limits, from ``OCAPD_LIMITS`` (``run_daemon``; None: the defaults).
    limits: DaemonLimits | None = None
    #: The budget that workers' and gateway sessions share (``run_daemon``; None: unbounded, in tests).
    budget: Budget | None = None
    #: The open-files limit the daemon raised itself to at start (``run_daemon``).
    fd_limit: int | None = None
    #: The daemon's OCapN node, identity and listener (``peers.network_of``, on first use).
    network: Network | None = None


class Cancelled(Exception):
    """A value was cancelled (directly, or because something it depends on was)."""


class Incarnation:
    """One live value of one formula, with the edges and hooks that end it."""

    __slots__ = ("id", "type", "promise", "deps", "hooks", "started", "cancelled", "_kernel", "_resolver")

    def __init__(self, kernel: Kernel, fid: str, ftype: str) -> None:
        self._kernel = kernel
        self.id = fid
        self.type = ftype
        self.promise, self._resolver = make_promise_kit()
        self.deps: set[str] = set()
        self.hooks: list[Callable[[str], Awaitable[None]]] = []
        self.started = time.time()
        #: Why it was cancelled (None while it is not): a maker still running then
        #: finds out when it returns, and what it set up is torn down at once.
        self.cancelled: str | None = None

    async def provide(self, fid: str) -> Any:
        """Provide a dependency: if it is cancelled, this incarnation is cancelled too."""
        self.depend_on(fid)
        return await self._kernel.provide(fid)

    def depend_on(self, fid: str) -> None:
        self.deps.add(fid)
        self._kernel._dependents[fid].add(self.id)

    def on_cancel(self, hook: Callable[[str], Awaitable[None]]) -> None:
        """Run ``await hook(reason)`` when this incarnation is cancelled."""
        self.hooks.append(hook)

    def is_current(self) -> bool:
        """Whether this is still its formula's live incarnation (not cancelled, not replaced)."""
        return self._kernel._live.get(self.id) is self


class Txn:
    """Formulas and names to commit together; memory changes run after the commit."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.batch = kernel.db.batch()
        self.formulas: dict[str, Formula] = {}
        self.after: list[Callable[[], None]] = []

    def formula(self, formula: Formula, fid: str | None = None) -> str:
        fid = fid or new_formula_id()
        self.batch.put_formula(fid, formula)
        self.formulas[fid] = formula
        return fid

    def then(self, fn: Callable[[], None]) -> None:
        self.after.append(fn)


class Kernel:
    """Owns the formula table, the live incarnations and their dependency graph."""

    def __init__(
        self,
        db: Database,
        nursery: trio.Nursery,
        makers: Mapping[type[FormulaModel], Maker[Any]],
        services: Services | None = None,
    ) -> None:
        self.db = db
        self.nursery = nursery
        self.services = services or Services()
        self._makers = makers  # catalogue.MAKERS: formula model -> maker
        self.formulas: dict[str, Formula] = {}
        self._live: dict[str, Incarnation] = {}
        self._dependents: dict[str, set[str]] = defaultdict(set)
        self._id_of: dict[int, str] = {}
        self.started = time.time()

    def load(self) -> None:
        """Read every formula from the database (startup)."""
        for fid, data in self.db.load_formulas().items():
            self.formulas[fid] = parse_formula(data)

    # -- writing ---------------------------------------------------------------
    def txn(self) -> Txn:
        return Txn(self)

    async def commit(self, txn: Txn) -> None:
        await self.db.commit(txn.batch)
        self.formulas.update(txn.formulas)
        for fn in txn.after:
            fn()

    async def formulate(self, formula: Formula) -> str:
        """Persist one formula; return its id."""
        txn = self.txn()
        fid = txn.formula(formula)
        await self.commit(txn)
        return fid

    async def provide_then_commit(self, txn: Txn, fid: str, reason: str = "not committed") -> Any:
        """Incarnate ``fid`` from ``txn``'s formulas before they are written, then commit them.

        The formulas are known in memory only (provisionally) while ``fid`` is
        incarnated; if that or the commit fails, every incarnation made from
        them is cancelled with ``reason`` and they are forgotten, so nothing is
        left behind, not even after a crash in between.
        """
        self.formulas.update(txn.formulas)
        try:
            value = await self.provide(fid)
            await self.commit(txn)
        except BaseException as e:
            # Also when the caller was cancelled (its client went away, a
            # deadline passed): what it started is stopped, not left running.
            why = reason if isinstance(e, Exception) else f"{reason}: the caller went away"
            with trio.CancelScope(shield=True):
                for staged in txn.formulas:
                    await self.cancel(staged, why)
            for staged in txn.formulas:
                self.formulas.pop(staged, None)
            raise
        return value

    # -- reading -----------------------------------------------------------------
    def formula(self, fid: str) -> Formula:
        try:
            return self.formulas[fid]
        except KeyError:
            raise LookupError(f"no formula {fid[:16]}…") from None

    def ids_starting_with(self, prefix: str) -> list[str]:
        """Formula ids that start with ``prefix`` (``ocapd inspect`` prints 16 hex characters),
        including the ones staged by a command still running."""
        return [fid for fid in self.formulas if fid.startswith(prefix)]

    def type_of(self, fid: str) -> str:
        return self.formula(fid).type

    def identify_value(self, value: Any) -> str | None:
        """The formula id of a live value, if it came from one."""
        return self._id_of.get(id(value))

    async def gateway(self) -> GatewayControls | None:
        """The gateway's control object once it is up, or None if this daemon runs without one.

        The gateway (plugged in through ``run_daemon``'s hook) comes up just after
        the daemon is ready and sets ``services.gateway_ready`` when it has.
        """
        ready = self.services.gateway_ready
        if ready is not None:
            await ready.wait()
        return self.services.gateway

    def current(self, fid: str) -> Incarnation | None:
        """The live incarnation of ``fid`` (ready or still being made), if any."""
        return self._live.get(fid)

    def is_live(self, fid: str) -> bool:
        inc = self._live.get(fid)
        return inc is not None and not inc.promise.rejected

    # -- incarnation ---------------------------------------------------------------
    async def provide(self, fid: str) -> Any:
        """The live value of formula ``fid``, incarnating it if needed."""
        inc = self._live.get(fid)
        if inc is None:
            formula = self.formula(fid)
            maker = self._makers.get(type(formula))
            if maker is None:
                raise LookupError(f"no maker for formula type {formula.type!r}")
            inc = Incarnation(self, fid, formula.type)
            self._live[fid] = inc
            # Makers run in the kernel's nursery, not the caller's task: a
            # caller that goes away must not cancel a value others share.
            self.nursery.start_soon(self._incarnate, inc, maker, formula)
        return await inc.promise

    async def _incarnate(self, inc: Incarnation, maker: Maker[Any], formula: Formula) -> None:
        try:
            value = await maker(self, inc.id, formula, inc)
        except Exception as e:
            if self._live.get(inc.id) is inc:
                del self._live[inc.id]
            self._forget_edges(inc)
            inc._resolver.reject(e)
            return
        if inc.cancelled is not None:
            # Cancelled while it was being made: the hooks the maker registered
            # late (a worker's "terminate") run now, or what it set up would
            # outlive its value (an orphan worker process).
            await self.run_cancel_hooks([inc], inc.cancelled)
            return
        if is_remotable(value) or isinstance(value, Promise):
            # A value keeps the identity of the formula that made it: a promise
            # or lookup resolving to a live value (a request answered with
            # AGENT) must not make the host look like a promise.
            self._id_of.setdefault(id(value), inc.id)
        inc._resolver.resolve(value)

    # -- cancellation ----------------------------------------------------------------
    async def cancel(self, fid: str, reason: str = "cancelled") -> list[str]:
        """Cancel ``fid`` and, transitively, every live value depending on it.

        Idempotent; returns the ids that were live and are now cancelled.
        """
        detached = self.detach(fid, reason)
        await self.run_cancel_hooks(detached, reason)
        return [inc.id for inc in detached]

    def detach(self, fid: str, reason: str = "cancelled") -> list[Incarnation]:
        """The synchronous half of ``cancel``: from now on, ``provide`` makes new values.

        Used directly when something is known dead (a worker's pipe closed), so
        no caller can be handed a stale value while cleanup is still running.
        """
        order: list[str] = []
        seen: set[str] = set()
        stack = [fid]
        while stack:
            x = stack.pop()
            if x in seen:
                continue
            seen.add(x)
            order.append(x)
            stack.extend(self._dependents.get(x, ()))
        detached = []
        # Dependents first, so a value never outlives what it stands on by much.
        for x in reversed(order):
            inc = self._live.pop(x, None)
            if inc is None:
                continue
            detached.append(inc)
            inc.cancelled = reason
            self._forget_edges(inc)
            if inc.promise.fulfilled and self._id_of.get(id(inc.promise.result())) == inc.id:
                del self._id_of[id(inc.promise.result())]
            else:
                inc._resolver.reject(Cancelled(reason))
        return detached

    async def run_cancel_hooks(self, detached: list[Incarnation], reason: str) -> None:
        for inc in detached:
            # Each hook runs once, even when a maker still running adds more later.
            hooks, inc.hooks = inc.hooks, []
            for hook in hooks:
                try:
                    await hook(reason)
                except Exception:
                    log.exception("cancel hook of %s failed", inc.id[:16])

    def _forget_edges(self, inc: Incarnation) -> None:
        for dep in inc.deps:
            dependents = self._dependents.get(dep)
            if dependents is not None:
                dependents.discard(inc.id)
                if not dependents:
                    del self._dependents[dep]

    # -- inspection -----------------------------------------------------------------------
    def live(self) -> list[dict[str, Any]]:
        """The live incarnations, for ``ocapd inspect``."""
        now = time.time()
        return [
            {
                "id": inc.id,
                "type": inc.type,
                "state": "ready" if inc.promise.fulfilled else ("failed" if inc.promise.rejected else "starting"),
                "age_s": round(now - inc.started, 3),
                "depends_on": sorted(inc.deps),
            }
            for inc in self._live.values()
        ]

    def all_dependencies(self, fid: str) -> list[str]:
        return dependencies(self.formula(fid))
