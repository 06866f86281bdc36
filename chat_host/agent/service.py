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
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import far
from ocapd.daemon.hosts import control
from ocapd.daemon.petstore import ChangeStream
from ocapd.daemon.registry import BUILTINS, WebletRegistry, registry_of

from .dispatch import CommandFailed, dispatch
from .model import ModelConfig, ModelError, ToolOutcome, converse, make_config
from .prompt import Prompt, build_prompt
from .router import route
from .store import AgentStore, AskedBy, Decision
from .tools import ArgumentError, Tool, build_tools, check_args, clean_visible

if TYPE_CHECKING:
    from ocapd.daemon.kernel import Kernel
    from ocapd.daemon.registry import InstalledWeblet

__all__ = ["AgentConsole", "AgentService", "AgentSettings", "CallError", "HostAgent", "agent_hook"]

log = logging.getLogger("ocapd.agent")

SETTINGS_FILE = "agent.json"
#: Calls waiting for an answer, per daemon: a runaway model or script cannot pile up more.
MAX_PENDING = 256
DECISIONS = ("once", "always", "deny")
#: Events a follower of the waiting calls may fall behind by before its stream is closed (it follows again and
#: gets a fresh list): a few times what can wait at once, so a page that pulls keeps up, and one that does
#: not cannot make the daemon hold results (up to 64 KiB each) without end.
FOLLOW_BUFFER = 4 * MAX_PENDING
#: A chat message sent to a model, in characters: a message, not a document (longer ones go to the router).
MAX_MODEL_MESSAGE = 16 * 1024
#: Why a write an MCP client asked for is withdrawn from the chat.
MCP_GONE = "the MCP client went away before you answered"
MCP_CANCELLED = "the MCP client cancelled the call before you answered"
#: Why a write called over MCP with no chat open is refused (there is nobody to ask).
NO_CHAT_OPEN = "no chat is open to ask you: open the chat (`ocapd chat`) and call it again, or allow it \"always\" there"


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
    #: It waited for the user (so followers were told, and are told how it ended).
    asked: bool = False

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

    def waiting(self, now: float) -> dict[str, Any]:
        """As :meth:`public`, with ``expires_in``: the seconds left to answer it."""
        return {**self.public(), "expires_in": round(max(0.0, self.expires - now), 1)}


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
        #: Chat pages following a host's waiting calls, by host id. Held weakly: a stream lives as long as
        #: its follower holds it (over CapTP, until the session ends or drops it), not as long as we do.
        self._followers: weakref.WeakKeyDictionary[ChangeStream, str] = weakref.WeakKeyDictionary()
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

    async def console_for(self, host: Any) -> AgentConsole:
        """The host's console: its model setting and MCP — for the daemon's socket only, never the gateway."""
        await self.store()
        return AgentConsole(self, host)

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
        """A typed message: ``{reply, calls, routed_by}`` — through the host's model when one is set, else the router.

        A model that fails before any tool call ran (unreachable, an HTTP
        error, a malformed answer, a timeout) leaves the message to the
        deterministic router: the reply's first line says what went wrong,
        ``model_error`` holds that line and ``routed_by`` is ``"router"``.
        """
        if not isinstance(text, str):
            raise CallError("text is a string")
        visible_list = clean_visible(visible)
        tools = await self.tools(host, visible_list)
        config = (await self.store()).model_of(control(host).id)
        if config is None:
            return await self._route(host, text, visible_list, tools)
        try:
            return await self._ask_model(host, config, text, visible_list, tools)
        except ModelError as e:
            log.warning("the model failed: %s", e)
            routed = await self._route(host, text, visible_list, tools)
            return {**routed, "reply": f"Model error: {e}; the built-in router answered instead.\n{routed['reply']}", "model_error": str(e)}

    async def _route(self, host: Any, text: str, visible: list[str], tools: Sequence[Tool]) -> dict[str, Any]:
        routed = route(text, tools)
        log.debug("weblet_intent_routed how=%s tool=%s", routed.how, routed.tool.name if routed.tool else "-")
        if routed.tool is None:
            return {"reply": routed.reply, "calls": [], "routed_by": "router"}
        call = await self.call(host, routed.tool.name, routed.args, visible, "user", tools=tools)
        return {"reply": reply_for(call), "calls": [call.public()], "routed_by": "router"}

    async def _ask_model(self, host: Any, config: ModelConfig, text: str, visible: list[str], tools: Sequence[Tool]) -> dict[str, Any]:
        prompt = build_prompt(tools)
        log.debug("weblet_prompt_built tools=%d left_out=%d chars=%d", prompt.tools, prompt.left_out, len(prompt.text))

        async def run_tool(name: str, args: Any) -> ToolOutcome:
            try:
                call = await self.call(host, name, args, visible, "model", tools=tools)
            except CallError as e:
                return ToolOutcome({"status": "error", "error": str(e)})
            log.debug("weblet_intent_routed how=model tool=%s", call.tool.name)
            content: dict[str, Any] = {"status": call.status}
            if call.status == "done":
                content["result"] = call.result
            elif call.status == "needs_permission":
                content["note"] = "waiting for the user's answer in the chat; it runs only if they allow it"
            elif call.error is not None:
                content["error"] = call.error
            return ToolOutcome(content, call)

        if len(text) > MAX_MODEL_MESSAGE:
            raise ModelError(f"the message is longer than {MAX_MODEL_MESSAGE} characters, too long to send")
        reply, calls = await converse(config, prompt, text, tools, run_tool)
        if not reply.strip():
            reply = "\n".join(reply_for(c) for c in calls) or "(the model gave no answer)"
        else:  # the model's words cannot hide (or claim done) a call that waits for the user's Allow
            waiting = [reply_for(c) for c in calls if c.status == "needs_permission"]
            reply = "\n".join([reply, *waiting])
        return {"reply": reply, "calls": [c.public() for c in calls], "routed_by": "model"}

    # -- the model setting and MCP (the console: local programs only) ----------------------------------
    async def set_model(self, host: Any, url: Any, model: Any, key_env: Any = None, timeout: Any = None) -> ModelConfig:
        try:
            config = make_config(url, model, key_env, timeout)
        except ValueError as e:
            raise CallError(str(e)) from None
        await (await self.store()).set_model(control(host).id, config)
        return config

    async def unset_model(self, host: Any) -> bool:
        return await (await self.store()).unset_model(control(host).id)

    async def model_of(self, host: Any) -> ModelConfig | None:
        return (await self.store()).model_of(control(host).id)

    async def host_tools(self, host: Any) -> tuple[list[Tool], list[str]]:
        """What MCP sees: the tools of every enabled weblet of the host with a panel, built-ins last, and those panels.

        The server's own list, not a page's hint, so not capped like one: one
        panel per weblet (its first) is enough to find its manifest.
        """
        registry = await self.registry()
        host_id = control(host).id
        panels = []
        for record in registry.weblets_of(host_id):
            instances = registry.instances_of(record.id) if record.enabled else []
            if instances:
                panels.append(instances[0].panel)
        panels += [b.panel for b in BUILTINS]
        return build_tools(registry.manifests_for(host_id, panels)), panels

    def chat_open(self, host: Any) -> bool:
        """Whether a chat page of this host is connected now (a live, authenticated CapTP session of the chat)."""
        gateway = self.kernel.services.gateway
        return gateway is not None and gateway.chat_sessions(control(host).id) > 0

    async def ask_for_mcp(self, host: Any, tool_name: Any, args: Any) -> Call:
        """An MCP client's call: run, waiting for the user's answer in the open chat, or refused when no chat is open."""
        if not isinstance(tool_name, str):
            raise CallError("the tool's name is a string")
        tools, panels = await self.host_tools(host)
        return await self.call(host, tool_name, args, panels, "mcp", tools=tools, ask=self.chat_open(host))

    async def withdraw(self, call: Call, why: str) -> None:
        """Take back a question nobody will hear the answer to (its MCP client gave up or went away)."""
        if call.status == "needs_permission":
            with trio.CancelScope(shield=True):
                await self._finish(call, "invalid", "not_run", error=why)

    async def call(
        self, host: Any, tool_name: str, args: Any, visible: Any, asked_by: AskedBy, *, tools: Sequence[Tool] | None = None,
        ask: bool = True,
    ) -> Call:
        """Ask to run ``tool_name`` (typed, chosen by a model, or called over MCP): the call, run or waiting.

        ``ask=False``: nobody can be asked (MCP with no chat open), so a call
        that would wait for permission is refused instead (``invalid``).
        """  # fmt: skip
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
        elif not ask:
            await self._finish(call, "invalid", "not_run", error=NO_CHAT_OPEN)
        else:
            if sum(1 for c in self._calls.values() if c.status == "needs_permission") >= MAX_PENDING:
                await self._finish(call, "invalid", "not_run", error="too many calls are waiting for permission; answer those first")
                return call
            await store.remember_waiting(
                host=host_id, call=call.id, weblet=tool.weblet, weblet_name=tool.weblet_name, command=tool.command,
                args=call.args, asked_by=asked_by,
            )  # fmt: skip
            self._calls[call.id] = call
            call.asked = True
            self._start_sweeper()
            self._emit(host_id, {"add": call.waiting(self.clock())})
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

    async def follow_pending(self, host: Any) -> ChangeStream:
        """The host's waiting calls, live: ``{"waiting": [...]}`` now, then ``{"add": call}`` / ``{"settled": call}``.

        ``add`` comes when a call starts to wait (with ``expires_in``), and
        ``settled`` when a call that waited ends, however it ends — allowed
        and run (with its result), denied, expired, refused, withdrawn —
        with its final state, after its audit row is written. Only this
        host's calls; a call that never waited (a read, a granted write) is
        not reported.
        """
        await self._sweep()
        host_id = control(host).id
        stream = ChangeStream(on_close=self._unfollow, buffer=FOLLOW_BUFFER)
        now = self.clock()
        stream.push({"waiting": [c.waiting(now) for c in self.pending(host)]})
        self._followers[stream] = host_id
        return stream

    def _unfollow(self, stream: ChangeStream) -> None:
        self._followers.pop(stream, None)

    def _emit(self, host_id: str, event: dict[str, Any]) -> None:
        for stream, follows in list(self._followers.items()):
            if follows == host_id:
                stream.push(event)

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
            store = await self.store()
            await store.audit(
                host=call.host, call=call.id, weblet=call.tool.weblet, weblet_name=call.tool.weblet_name, command=call.tool.command,
                args=call.args, asked_by=call.asked_by, decision=decision, outcome=outcome,  # type: ignore[arg-type]
                detail=error if error is not None else call.result,
            )  # fmt: skip
            if call.asked:
                await store.forget_waiting(call.id)
        finally:
            call.settled.set()
            if call.asked:
                self._emit(call.host, {"settled": call.public()})

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
        return [c.waiting(now) for c in self._service.pending(self._host)]

    async def follow_pending(self) -> ChangeStream:
        """The waiting calls, live (``next()`` until ``{"done": True}``): first ``{"waiting": [...]}`` as :meth:`pending`,
        then ``{"add": call}`` when one more waits and ``{"settled": call}`` when one ends, with its final state.

        A follower that falls far behind is closed as too slow; follow again for a fresh list.
        """
        return await self._service.follow_pending(self._host)

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


@far("ChatAgentConsole")
class AgentConsole:
    """A host's chat agent as local programs reach it (``DaemonFacet.agent_console``, the Unix socket's authority).

    Not reachable with a gateway token: the model setting decides where
    chat messages go and which of the daemon's environment variables is sent
    as the key, and MCP calls are audited as ``mcp``.
    """

    def __init__(self, service: AgentService, host: Any) -> None:
        self._service = service
        self._host = host
        #: Calls this console's client asked for that wait for the user (``ask`` -> ``wait``/``withdraw``).
        self._waiting: dict[str, Call] = {}

    async def model(self) -> dict[str, Any] | None:
        """The model setting (``ocapd agent show``): URL, model, key variable and whether it is set, timeout."""
        config = await self._service.model_of(self._host)
        return None if config is None else config.public()

    async def set_model(self, url: Any, model: Any, key_env: Any = None, timeout: Any = None) -> dict[str, Any]:
        """Send this host's chat messages to an OpenAI-compatible endpoint (``ocapd agent set``)."""
        return (await self._service.set_model(self._host, url, model, key_env, timeout)).public()

    async def unset_model(self) -> bool:
        """Back to the deterministic router only; whether a setting was removed."""
        return await self._service.unset_model(self._host)

    async def tools(self) -> list[dict[str, Any]]:
        """What MCP lists: the tools of every enabled weblet with a panel, and the built-ins."""
        return [t.describe() for t in (await self._service.host_tools(self._host))[0]]

    async def ask(self, tool: Any, args: Any = None) -> dict[str, Any]:
        """An MCP tool call: its state now (``done``, ``error``, or ``needs_permission``: then :meth:`wait`), with a ``reply``."""
        call = await self._service.ask_for_mcp(self._host, tool, args)
        if call.status == "needs_permission":
            self._waiting[call.id] = call
        return {**call.public(), "reply": reply_for(call)}

    async def wait(self, call: Any) -> dict[str, Any]:
        """Wait for the user's answer to a call :meth:`ask` left waiting: its settled state.

        If this wait is cancelled — the MCP client's session closed — the
        question is withdrawn: nobody would get the result.
        """
        waiting = self._waiting.get(call) if isinstance(call, str) else None
        if waiting is None:
            raise CallError("no such call of this client waiting")
        try:
            await waiting.settled.wait()
        except BaseException:
            await self._service.withdraw(waiting, MCP_GONE)
            raise
        finally:
            if waiting.settled.is_set():
                self._waiting.pop(waiting.id, None)
        return {**waiting.public(), "reply": reply_for(waiting)}

    async def withdraw(self, call: Any) -> dict[str, Any]:
        """The MCP client cancelled its request: take the question back from the chat (if still unanswered)."""
        waiting = self._waiting.pop(call, None) if isinstance(call, str) else None
        if waiting is None:
            raise CallError("no such call of this client waiting")
        await self._service.withdraw(waiting, MCP_CANCELLED)
        return {**waiting.public(), "reply": reply_for(waiting)}

    def chat_open(self) -> bool:
        return self._service.chat_open(self._host)


def agent_hook(kernel: Kernel) -> AgentService:
    """What the composition root hands ``run_daemon(agent=…)``."""
    return AgentService(kernel)
