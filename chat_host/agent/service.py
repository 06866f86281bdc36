"""The chat agent of one daemon: tool lists, messages to calls, the permission step, grants and the audit.

``AgentService`` is what ``kernel.services.agent`` holds (the composition
root plugs it in, ``run_daemon(agent=agent_hook)``); ``for_host(host)``
gives a host's :class:`HostAgent`, the far object ``E(host).agent()``
returns and the gateway's ``/api/agent/…`` and ``/api/audit`` routes call.

A call's life: the tool is found among this host's *visible* tools (server
data only), its arguments checked against the declared types, then

- a ``readOnly`` command runs at once (decision ``read_only``);
- any other runs at once only under a stored "always" grant for this
  weblet+command *and this manifest hash* (``granted``); otherwise the call
  waits as ``needs_permission`` until :meth:`HostAgent.permission` answers
  ``once`` / ``always`` (which stores the grant) / ``deny``, or until
  ``permission_timeout`` seconds pass (``expired``). Before a waiting call
  runs, the weblet must still be installed, enabled and on the same
  manifest; else it is refused (``invalid``).

Every call ends in exactly one audit row. Settings (``state/agent.json``,
read again when it changes): ``permission_timeout`` (seconds, default 120),
``command_timeout`` (default 30), ``debug`` (log the seed-000 events at
DEBUG and turn that level on for ``ocapd.agent`` and ``ocapd.weblets``).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import far
from ocapd.daemon.hosts import control
from ocapd.daemon.registry import BUILTINS, WebletRegistry, registry_of

from .dispatch import CommandFailed, dispatch
from .prompt import Prompt, build_prompt
from .router import route
from .store import AgentStore, AskedBy, Decision
from .tools import ArgumentError, Tool, build_tools, check_args, clean_visible

if TYPE_CHECKING:
    from ocapd.daemon.kernel import Kernel
    from ocapd.daemon.registry import InstalledWeblet

__all__ = ["AgentService", "AgentSettings", "CallError", "HostAgent", "agent_hook"]

log = logging.getLogger("ocapd.agent")

SETTINGS_FILE = "agent.json"
#: Calls waiting for an answer, per daemon: a runaway model or script cannot pile up more.
MAX_PENDING = 256
DECISIONS = ("once", "always", "deny")


class CallError(ValueError):
    """A request to the agent that cannot be done (no such call, a bad decision); one line."""


@dataclass(frozen=True)
class AgentSettings:
    permission_timeout: float = 120.0
    command_timeout: float = 30.0
    debug: bool = False


def load_agent_settings(state: Path | None) -> AgentSettings:
    """``state/agent.json``, or the defaults; a malformed file is a ValueError naming the key."""
    if state is None:
        return AgentSettings()
    path = state / SETTINGS_FILE
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return AgentSettings()
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: must be a JSON object")
    values: dict[str, Any] = {}
    for key in ("permission_timeout", "command_timeout"):
        if key in raw:
            v = raw[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 86400:
                raise ValueError(f"{path}: {key} is a number of seconds (0 to 86400)")
            values[key] = float(v)
    if "debug" in raw:
        if not isinstance(raw["debug"], bool):
            raise ValueError(f"{path}: debug is true or false")
        values["debug"] = raw["debug"]
    return AgentSettings(**values)


@dataclass(eq=False)
class Call:
    id: str
    host: str
    tool: Tool
    args: dict[str, Any]
    asked_by: AskedBy
    visible: tuple[str, ...]
    expires: float
    status: str = "needs_permission"  # -> done | error | denied | expired
    result: Any = None
    error: str | None = None
    decision: str | None = None
    settled: trio.Event = field(default_factory=trio.Event)

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "call": self.id, "weblet": self.tool.weblet, "weblet_name": self.tool.weblet_name, "title": self.tool.title,
            "tool": self.tool.name, "command": self.tool.command, "description": self.tool.description,
            "readOnly": self.tool.read_only, "args": self.args, "asked_by": self.asked_by, "status": self.status,
        }  # fmt: skip
        if self.status == "done":
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        return out


class AgentService:
    """The chat agent of one daemon (see the module doc)."""

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self._store: AgentStore | None = None
        self._open_lock = trio.Lock()
        self._calls: dict[str, Call] = {}
        self._sweeping = False
        self._wake = trio.Event()
        self._settings: tuple[float, AgentSettings] | None = None
        #: The clock expiry reads (tests may replace it).
        self.clock: Callable[[], float] = time.monotonic

    # -- plumbing ----------------------------------------------------------------------------------
    async def store(self) -> AgentStore:
        if self._store is None:
            async with self._open_lock:
                if self._store is None:
                    self._store = await AgentStore.open(self.kernel.db)
        return self._store

    def settings(self) -> AgentSettings:
        paths = self.kernel.services.paths
        state = paths.state if paths is not None else None
        try:
            mtime = os.stat(state / SETTINGS_FILE).st_mtime if state is not None else 0.0
        except OSError:
            mtime = 0.0
        if self._settings is None or self._settings[0] != mtime:
            settings = load_agent_settings(state)
            self._settings = (mtime, settings)
            level = logging.DEBUG if settings.debug else logging.NOTSET
            for name in ("ocapd.agent", "ocapd.weblets"):
                logging.getLogger(name).setLevel(level)
        return self._settings[1]

    async def for_host(self, host: Any) -> HostAgent:
        await self.store()
        return HostAgent(self, host)

    async def registry(self) -> WebletRegistry:
        return await registry_of(self.kernel)

    # -- the tool list -------------------------------------------------------------------------------
    async def tools(self, host: Any, visible: Any) -> list[Tool]:
        """This host's tools for the visible panels (a hint: only its own open panels count), built-ins last."""
        registry = await self.registry()
        panels = [p for p in clean_visible(visible) if p not in {b.panel for b in BUILTINS}]
        entries = registry.manifests_for(control(host).id, [*panels, *(b.panel for b in BUILTINS)])
        if log.isEnabledFor(logging.DEBUG):
            for entry in entries:
                log.debug("weblet_manifest_loaded weblet=%s hash=%s panels=%d", entry["weblet"], entry["manifest_hash"][:12], len(entry["panels"]))
        return build_tools(entries)

    async def prompt(self, host: Any, visible: Any) -> Prompt:
        """The model's system prompt for this host's visible tools (the model path calls this)."""
        built = build_prompt(await self.tools(host, visible))
        log.debug("weblet_prompt_built tools=%d left_out=%d chars=%d", built.tools, built.left_out, len(built.text))
        return built

    # -- calls ---------------------------------------------------------------------------------------
    async def message(self, host: Any, text: Any, visible: Any) -> dict[str, Any]:
        """A typed message through the deterministic router: ``{reply, calls}``."""
        if not isinstance(text, str):
            raise CallError("text is a string")
        visible_list = clean_visible(visible)
        tools = await self.tools(host, visible_list)
        routed = route(text, tools)
        log.debug("weblet_intent_routed how=%s tool=%s", routed.how, routed.tool.name if routed.tool else "-")
        if routed.tool is None:
            return {"reply": routed.reply, "calls": []}
        call = await self.call(host, routed.tool.name, routed.args, visible_list, "user", tools=tools)
        return {"reply": reply_for(call), "calls": [call.public()]}

    async def call(
        self, host: Any, tool_name: str, args: Any, visible: Any, asked_by: AskedBy, *, tools: Sequence[Tool] | None = None
    ) -> Call:
        """Ask to run ``tool_name`` (typed, chosen by a model, or called over MCP): the call, run or waiting."""
        await self._sweep()
        visible_list = clean_visible(visible)
        if tools is None:
            tools = await self.tools(host, visible_list)
        tool = next((t for t in tools if t.name == tool_name), None)
        if tool is None:
            raise CallError(f"no visible weblet offers {str(tool_name)[:128]!r}")
        host_id = control(host).id
        store = await self.store()
        call = Call(secrets.token_hex(12), host_id, tool, {}, asked_by, tuple(visible_list), self.clock() + self.settings().permission_timeout)
        try:
            call.args = check_args(tool, args)
        except ArgumentError as e:
            call.args = args if isinstance(args, dict) else {"args": repr(args)[:200]}
            await self._finish(call, "invalid", "error", error=str(e))
            return call
        if tool.read_only:
            await self._run(host, call, "read_only")
        elif await store.has_grant(host_id, tool.weblet, tool.command, tool.manifest_hash):
            await self._run(host, call, "granted")
        else:
            if sum(1 for c in self._calls.values() if c.status == "needs_permission") >= MAX_PENDING:
                await self._finish(call, "invalid", "not_run", error="too many calls are waiting for permission; answer those first")
                return call
            self._calls[call.id] = call
            self._start_sweeper()
        return call

    async def decide(self, host: Any, call_id: Any, decision: Any) -> Call:
        """The user's answer to a waiting call: ``once`` | ``always`` | ``deny``; the call's new state."""
        if decision not in DECISIONS:
            raise CallError('decision is "once", "always" or "deny"')
        await self._sweep()
        call = self._calls.get(call_id) if isinstance(call_id, str) else None
        if call is None or call.host != control(host).id:
            raise CallError("no such call waiting for permission (it may have expired or been answered)")
        if call.status != "needs_permission":
            return call
        self._calls.pop(call.id, None)
        if decision == "deny":
            await self._finish(call, "denied", "not_run", status="denied")
            return call
        problem = await self._still_current(call)
        if problem is not None:
            await self._finish(call, "invalid", "not_run", error=problem)
            return call
        if decision == "always":
            await (await self.store()).grant(call.host, call.tool.weblet, call.tool.command, call.tool.manifest_hash)
        await self._run(host, call, decision)
        return call

    async def wait(self, host: Any, call_id: str) -> Call:
        """Wait until a call is answered or expires (the MCP path); the settled call."""
        call = self._calls.get(call_id)
        if call is None or call.host != control(host).id:
            raise CallError("no such call waiting for permission")
        await call.settled.wait()
        return call

    def pending(self, host: Any) -> list[Call]:
        host_id = control(host).id
        return [c for c in self._calls.values() if c.host == host_id and c.status == "needs_permission"]

    async def _still_current(self, call: Call) -> str | None:
        if call.tool.builtin:
            return None
        registry = await self.registry()
        record = next((r for r in registry.weblets_of(call.host) if r.id == call.tool.weblet), None)
        if record is None:
            return f"{call.tool.title} is no longer installed"
        if not record.enabled:
            return f"{call.tool.title} is disabled"
        if record.manifest_hash != call.tool.manifest_hash:
            return f"{call.tool.title} changed since you were asked; ask again"
        return None

    def _record(self, registry: WebletRegistry, call: Call) -> InstalledWeblet | None:
        if call.tool.builtin:
            return None
        return next((r for r in registry.weblets_of(call.host) if r.id == call.tool.weblet), None)

    async def _run(self, host: Any, call: Call, decision: Decision) -> None:
        registry = await self.registry()
        record = self._record(registry, call)
        if not call.tool.builtin and (record is None or not record.enabled):
            await self._finish(call, "invalid", "not_run", error=f"{call.tool.title} is not installed and enabled")
            return
        try:
            result = await dispatch(self.kernel, host, record, call.tool, call.args, call.visible, timeout=self.settings().command_timeout)
        except CommandFailed as e:
            await self._finish(call, decision, "error", error=str(e))
            return
        call.result = result
        await self._finish(call, decision, "done", status="done")

    async def _finish(self, call: Call, decision: Decision, outcome: str, *, status: str | None = None, error: str | None = None) -> None:
        call.decision = decision
        call.status = status or ("expired" if decision == "expired" else "error")
        call.error = error
        self._calls.pop(call.id, None)
        try:
            await (await self.store()).audit(
                host=call.host, call=call.id, weblet=call.tool.weblet, weblet_name=call.tool.weblet_name, command=call.tool.command,
                args=call.args, asked_by=call.asked_by, decision=decision, outcome=outcome,  # type: ignore[arg-type]
                detail=error if error is not None else call.result,
            )  # fmt: skip
        finally:
            call.settled.set()

    # -- expiry --------------------------------------------------------------------------------------
    async def _sweep(self) -> None:
        now = self.clock()
        for call in [c for c in self._calls.values() if c.status == "needs_permission" and c.expires <= now]:
            await self._finish(call, "expired", "not_run", error="nobody answered in time")

    def _start_sweeper(self) -> None:
        if self._sweeping:
            self._wake.set()  # a new call may expire sooner than the one it sleeps for
        else:
            self._sweeping = True
            self.kernel.nursery.start_soon(self._sweeper)

    async def _sweeper(self) -> None:
        """Expires waiting calls on time, so each gets its audit row even if nobody asks again."""
        try:
            while self._calls:
                earliest = min(c.expires for c in self._calls.values())
                self._wake = trio.Event()
                with trio.move_on_after(max(0.0, earliest - self.clock()) + 0.001):
                    await self._wake.wait()
                await self._sweep()
        finally:
            self._sweeping = False

    # -- grants and the audit ------------------------------------------------------------------------
    async def grants(self, host: Any) -> list[dict[str, Any]]:
        host_id = control(host).id
        store = await self.store()
        registry = await self.registry()
        current = {r.id: r for r in registry.weblets_of(host_id)}
        out = []
        for weblet, command, mhash, created in store.grants_of(host_id):
            record = current.get(weblet)
            if record is None or record.manifest_hash != mhash:
                await store.revoke(host_id, weblet, command)  # uninstalled, or its manifest changed: void
                continue
            out.append({"weblet": weblet, "weblet_name": record.name, "tool": f"{record.slug}.{command}", "command": command,
                        "created": created})  # fmt: skip
        return out

    async def revoke(self, host: Any, weblet: Any, command: Any = None) -> int:
        if not isinstance(weblet, str) or (command is not None and not isinstance(command, str)):
            raise CallError("name the weblet (its id or name) and optionally the command")
        host_id = control(host).id
        registry = await self.registry()
        for record in registry.weblets_of(host_id):
            if weblet in (record.name, record.slug):
                weblet = record.id
                break
        return await (await self.store()).revoke(host_id, weblet, command)


def reply_for(call: Call) -> str:
    """One line for the transcript about a call's state."""
    name = call.tool.name
    if call.status == "done":
        shown = json.dumps(call.result, ensure_ascii=False)
        return f"{name}: {shown if len(shown) <= 200 else shown[:199] + '…'}"
    if call.status == "needs_permission":
        return f"{name} changes things in {call.tool.title}: allow it?"
    if call.status == "denied":
        return f"{name} was not run: you denied it."
    if call.status == "expired":
        return f"{name} was not run: nobody answered in time."
    return f"{name} failed: {call.error}"


@far("ChatAgent")
class HostAgent:
    """One host's chat agent: what the chat page (CapTP) and the REST routes call. Everything is JSON-ready data."""

    def __init__(self, service: AgentService, host: Any) -> None:
        self._service = service
        self._host = host

    async def tools(self, visible: Any = None) -> list[dict[str, Any]]:
        """The tools for these visible panels: exactly what the router and the model get."""
        return [t.describe() for t in await self._service.tools(self._host, visible)]

    async def prompt(self, visible: Any = None) -> str:
        """The system prompt a model would get for these visible panels (manifest text as quoted data)."""
        return (await self._service.prompt(self._host, visible)).text

    async def message(self, text: Any, visible: Any = None) -> dict[str, Any]:
        """A typed message: ``{reply, calls: [{call, weblet, command, args, status, result?}]}``."""
        return await self._service.message(self._host, text, visible)

    async def permission(self, call: Any, decision: Any) -> dict[str, Any]:
        """Answer a waiting call (``once`` | ``always`` | ``deny``): its new state, with its result if it ran."""
        settled = await self._service.decide(self._host, call, decision)
        return {**settled.public(), "reply": reply_for(settled)}

    async def pending(self) -> list[dict[str, Any]]:
        """Calls waiting for the user's answer (typed, or asked by a model or MCP), each with ``expires_in`` (seconds left)."""
        await self._service._sweep()
        now = self._service.clock()
        return [{**c.public(), "expires_in": round(max(0.0, c.expires - now), 1)} for c in self._service.pending(self._host)]

    async def grants(self) -> list[dict[str, Any]]:
        """The stored "always" grants still in force."""
        return await self._service.grants(self._host)

    async def revoke(self, weblet: Any, command: Any = None) -> int:
        """Drop "always" for a weblet's command (or all its commands); how many grants went."""
        return await self._service.revoke(self._host, weblet, command)

    async def audit(self, after: Any = 0, limit: Any = 100) -> list[dict[str, Any]]:
        """This host's audit rows after ``seq`` ``after`` (oldest first); ``after < 0``: the newest ``limit``."""
        if isinstance(after, bool) or not isinstance(after, int) or isinstance(limit, bool) or not isinstance(limit, int):
            raise CallError("after and limit are whole numbers")
        store = await self._service.store()
        host_id = control(self._host).id
        rows = store.last_audit(host_id, limit) if after < 0 else store.read_audit(host_id, after=after, limit=limit)
        return [r.public() for r in rows]


def agent_hook(kernel: Kernel) -> AgentService:
    """What the composition root hands ``run_daemon(agent=…)``."""
    return AgentService(kernel)
