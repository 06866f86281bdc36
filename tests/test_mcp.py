"""``ocapd mcp`` (issue 13): the chat agent's tools over MCP on stdio, driven by the ``mcp`` package's own client.

The server is the real command (``python -m ocapd mcp``) talking to a real
daemon; a chat is "open" when a chat page's CapTP session has shown the
host's token (here: a WebSocket session through the gateway, as the page's).
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from daemon_harness import DaemonProcess, zip_bundle
from gateway_clients import websocket
from test_agent import Rest, audit_of, counter_zip

from ocapd.captp import E, open_websocket_connection

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

HIDDEN_MANIFEST = {
    "title": "Hidden", "version": "1.0.0",
    "interface": {"commands": {"peek": {"description": "Never listed: this weblet has no panel.", "readOnly": True}}},
}  # fmt: skip


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    with DaemonProcess(tmp_path_factory.mktemp("mcp") / "home") as d:
        yield d


@pytest.fixture(scope="module")
def setup(daemon: DaemonProcess) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        token = daemon.chat_url().split("#token=", 1)[1]
        rest = Rest(daemon.gateway_port, token)
        out: dict[str, Any] = {"rest": rest, "token": token, "daemon": daemon}
        wid = (await rest.ok("POST", "/api/weblets/install", 201, files={"file": ("counter.zip", counter_zip())}, data={"name": "counter"}))["weblet"]["id"]
        out["counter"] = {"id": wid, "panel": (await rest.ok("POST", f"/api/weblets/{wid}/instances", 201))["instance"]["panel"]}
        hidden = zip_bundle({"weblet.json": json.dumps(HIDDEN_MANIFEST), "index.html": "<p>hidden</p>"})
        await rest.ok("POST", "/api/weblets/install", 201, files={"file": ("hidden.zip", hidden)}, data={"name": "hidden"})
        return out

    return trio.run(go)


@asynccontextmanager
async def mcp_session(daemon: DaemonProcess, *extra: str) -> AsyncIterator[Any]:
    from mcp.client.session import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=sys.executable, args=["-m", "ocapd", "mcp", *extra], env={"OCAPD_HOME": str(daemon.home)})
    with open(daemon.home / "mcp-stderr.log", "a") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield session


@asynccontextmanager
async def open_chat(port: int, token: str) -> AsyncIterator[None]:
    """A chat page's session: a CapTP WebSocket on the chat site that fetched the host with its token."""
    async with websocket(port) as ws, open_websocket_connection(ws, None, name="chat") as conn:
        await E(conn.bootstrap()).fetch(token)
        yield


def _text(result: Any) -> str:
    return " ".join(c.text for c in result.content)


async def _count(session: Any) -> int:
    result = await session.call_tool("counter__value", {})
    assert not result.is_error, _text(result)
    return int(result.structured_content["count"])


async def test_mcp_lists_the_hosts_tools_with_read_only_hints(setup: dict[str, Any]) -> None:
    async with mcp_session(setup["daemon"]) as session:
        tools = {t.name: t for t in (await session.list_tools()).tools}
    assert set(tools) == {"counter__increment", "counter__value", "inventory__list", "inbox__pending"}  # no panel: not listed
    assert tools["counter__value"].annotations.read_only_hint is True
    assert tools["counter__increment"].annotations.read_only_hint is False
    assert tools["counter__increment"].input_schema["properties"] == {"by": {"type": "number"}}
    assert '"Add to the count' in (tools["counter__increment"].description or "")  # quoted manifest text
    assert "allows it" in (tools["counter__increment"].description or "")


async def test_mcp_runs_a_read_tool_and_audits_it_as_mcp(setup: dict[str, Any]) -> None:
    rest: Rest = setup["rest"]
    async with mcp_session(setup["daemon"]) as session:
        result = await session.call_tool("counter__value", {})
        unknown = await session.call_tool("counter__reset", {})
        wrong = await session.call_tool("counter__increment", {"by": "lots"})
    assert not result.is_error and set(result.structured_content) == {"count"}
    assert json.loads(_text(result)) == result.structured_content
    assert unknown.is_error and "no tool 'counter__reset'" in _text(unknown)
    assert wrong.is_error and "by is a number" in _text(wrong)
    rows = (await rest.ok("GET", "/api/audit", params={"after": "-1", "limit": "2"}))["entries"]
    assert [(r["command"], r["asked_by"], r["decision"], r["outcome"]) for r in rows] == [
        ("value", "mcp", "read_only", "done"), ("increment", "mcp", "invalid", "error")]  # fmt: skip


async def test_mcp_refuses_a_write_when_no_chat_is_open(setup: dict[str, Any]) -> None:
    rest: Rest = setup["rest"]
    start = (await rest.ok("GET", "/api/audit", params={"after": "-1", "limit": "1"}))["entries"][-1]["seq"]
    async with mcp_session(setup["daemon"]) as session:
        before = await _count(session)
        result = await session.call_tool("counter__increment", {"by": 3})
        after = await _count(session)
    assert result.is_error and "no chat is open to ask you" in _text(result)
    assert after == before
    # A chat of another agent (a guest's token) is not this host's chat; a chat that closed is not open.
    daemon: DaemonProcess = setup["daemon"]
    daemon.out("mkguest", "caller", "caller-agent")
    guest_token = json.loads(daemon.out("tokens", "mint", "--as", "caller-agent", "--json"))["token"]
    async with mcp_session(daemon) as session, daemon.connect() as (host, facet, _):
        console = await E(facet).agent_console(host)
        async with open_chat(rest.port, guest_token):
            assert await E(console).chat_open() is False
            as_guest = await session.call_tool("counter__increment", {"by": 3})
        async with open_chat(rest.port, setup["token"]):
            assert await E(console).chat_open() is True
        with trio.fail_after(30):  # the gateway sees the page's socket close a moment after the page does
            while await E(console).chat_open():
                await trio.sleep(0.02)
        closed = await session.call_tool("counter__increment", {"by": 3})
        assert await _count(session) == before
    assert as_guest.is_error and "no chat is open" in _text(as_guest)
    assert closed.is_error and "no chat is open" in _text(closed)
    assert (await rest.ok("GET", "/api/agent/pending"))["calls"] == []
    rows = (await rest.ok("GET", "/api/audit", params={"after": str(start), "limit": "100"}))["entries"]
    assert [(r["command"], r["asked_by"], r["decision"], r["outcome"]) for r in rows if r["command"] == "increment"] == [
        ("increment", "mcp", "invalid", "not_run")] * 3  # fmt: skip


async def test_mcp_waits_for_the_chats_answer_to_a_write(setup: dict[str, Any]) -> None:
    rest: Rest = setup["rest"]
    async with mcp_session(setup["daemon"]) as session, open_chat(rest.port, setup["token"]):
        before = await _count(session)
        results: list[Any] = []

        async def call(args: dict[str, Any]) -> None:
            results.append(await session.call_tool("counter__increment", args))

        async def answer(decision: str) -> str:
            with trio.fail_after(30):
                while not (pending := (await rest.ok("GET", "/api/agent/pending"))["calls"]):
                    await trio.sleep(0.05)
            [waiting] = pending
            assert (waiting["tool"], waiting["args"], waiting["asked_by"]) == ("counter.increment", {"by": 4}, "mcp")
            await rest.permission(waiting["call"], decision)
            return str(waiting["call"])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, {"by": 4})
            allowed = await answer("once")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, {"by": 4})
            denied = await answer("deny")
        after = await _count(session)
    done, refused = results
    assert not done.is_error and done.structured_content == {"count": before + 4}
    assert refused.is_error and "you denied it" in _text(refused)
    assert after == before + 4
    assert await audit_of(rest, allowed) == [("once", "done")]
    assert await audit_of(rest, denied) == [("denied", "not_run")]


async def test_a_write_asked_by_an_mcp_client_that_goes_away_is_withdrawn(setup: dict[str, Any]) -> None:
    rest: Rest = setup["rest"]
    async with open_chat(rest.port, setup["token"]):
        async with mcp_session(setup["daemon"]) as session, trio.open_nursery() as nursery:
            nursery.start_soon(session.call_tool, "counter__increment", {"by": 9})
            with trio.fail_after(30):
                while not (pending := (await rest.ok("GET", "/api/agent/pending"))["calls"]):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()  # the client quits while its call waits
        with trio.fail_after(30):
            while (await rest.ok("GET", "/api/agent/pending"))["calls"]:
                await trio.sleep(0.05)
        late = await rest.call("POST", "/api/agent/permission", json={"call": pending[0]["call"], "decision": "once"})
    assert late.status_code == 404
    assert await audit_of(rest, pending[0]["call"]) == [("invalid", "not_run")]


async def test_a_write_whose_mcp_request_is_cancelled_is_withdrawn(setup: dict[str, Any]) -> None:
    """The client stays connected but gives up on the request (``notifications/cancelled``): the question goes too."""
    rest: Rest = setup["rest"]
    async with open_chat(rest.port, setup["token"]), mcp_session(setup["daemon"]) as session:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.call_tool, "counter__increment", {"by": 9})
            with trio.fail_after(30):
                while not (pending := (await rest.ok("GET", "/api/agent/pending"))["calls"]):
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        with trio.fail_after(30):
            while (await rest.ok("GET", "/api/agent/pending"))["calls"]:
                await trio.sleep(0.05)
        assert not (await session.call_tool("counter__value", {})).is_error  # the session goes on
    assert await audit_of(rest, pending[0]["call"]) == [("invalid", "not_run")]


def test_mcp_as_a_guest_is_refused_in_one_line(setup: dict[str, Any]) -> None:
    daemon: DaemonProcess = setup["daemon"]
    daemon.out("mkguest", "visitor", "visitor-agent")
    r = daemon.cli("mcp", "--as", "visitor-agent", check=False, input=b"")
    assert r.returncode == 1 and r.stderr.strip() == "ocapd: mcp: the chat agent's console is a host's", r.stderr


async def test_mcp_lists_every_weblet_and_the_builtins_however_many_panels_are_open(setup: dict[str, Any]) -> None:
    """The page's visible list is capped (a hint); MCP's list is the server's own and is not."""
    rest: Rest = setup["rest"]
    counter = setup["counter"]["id"]
    while await _panels(rest, counter) < 64:  # the most a weblet may have, and as many as a page may report
        await rest.ok("POST", f"/api/weblets/{counter}/instances", 201)
    later = {"title": "Later", "version": "1.0.0", "interface": {"commands": {"look": {"description": "Look.", "readOnly": True}}}}
    bundle = zip_bundle({"weblet.json": json.dumps(later), "index.html": "<p>later</p>"})
    wid = (await rest.ok("POST", "/api/weblets/install", 201, files={"file": ("later.zip", bundle)}, data={"name": "later"}))["weblet"]["id"]
    await rest.ok("POST", f"/api/weblets/{wid}/instances", 201)
    async with mcp_session(setup["daemon"]) as session:
        names = {t.name for t in (await session.list_tools()).tools}
        result = await session.call_tool("later__look", {})
    assert names == {"counter__increment", "counter__value", "later__look", "inventory__list", "inbox__pending"}
    assert result.is_error and "open it in the chat" in _text(result)  # listed and called; no page answers it


async def _panels(rest: Rest, weblet: str) -> int:
    listed = (await rest.ok("GET", "/api/weblets/list"))["weblets"]
    return len(next(w for w in listed if w.get("id") == weblet)["instances"])


def test_mcp_without_a_daemon_is_one_line(tmp_path: Any) -> None:
    import os
    import subprocess

    env = {**os.environ, "OCAPD_HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "ocapd", "mcp"], env=env, input="", capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (1, "ocapd: the daemon is not running; start it with `ocapd start`\n")
