"""Anonymous and hostile WebSocket peers cannot lock the owner out (issue 9, items 8, 9, 10, 12).

A real daemon with small limits (``OCAPD_LIMITS``), real sockets on
127.0.0.1. Each test ends by showing the owner still gets in: the CLI's
``ping`` and a chat session with the owner's token.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
import pytest
import trio
from daemon_harness import DaemonProcess
from gateway_clients import websocket
from trio_websocket import ConnectionClosed, ConnectionRejected

from ocapd.captp import E, RemoteError, SessionAborted, WebSocketTransport, open_connection, open_websocket_connection
from ocapd.captp.session import R_FRAME_TOO_LARGE, R_TOO_MANY_ELEMENTS
from ocapd.gateway import INVALID_TOKEN_MESSAGE
from ocapd.gateway.app import ANONYMOUS_TIMEOUT_REASON

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

LIMITS = {"anonymous_sessions": 3, "anonymous_deadline": 1.0, "outbox_bytes": 1 << 20, "stall_timeout": 1.0}


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory):
    d = DaemonProcess(tmp_path_factory.mktemp("gwl") / "home", port=0)
    d.home.mkdir()
    d.env["OCAPD_LIMITS"] = json.dumps(LIMITS)
    d.start()
    try:
        yield d
    finally:
        d.stop()


def token_of(url: str) -> str:
    return url.split("#token=", 1)[1]


def raw_ws(port: int, token: str | None = None, **options: Any) -> Any:
    """A WebSocket to the chat endpoint; ``token`` rides in the subprotocol as the chat page sends it."""
    protocols = ["ocapd-captp"] + ([f"ocapd-token.{token}"] if token else [])
    return websocket(port, subprotocols=protocols, **options)


async def rejection_status(port: int, token: str | None = None) -> int:
    with pytest.raises(ConnectionRejected) as info:
        async with raw_ws(port, token):
            pass
    return info.value.status_code


async def owner_gets_in(daemon: DaemonProcess) -> None:
    assert daemon.out("ping") == "pong"
    token = token_of(daemon.chat_url())
    async with raw_ws(daemon.gateway_port, token) as ws, open_websocket_connection(ws, None) as conn:
        agent = await E(conn.bootstrap()).fetch(token)
        assert "SELF" in await E(agent).list()


# -- item 8 -------------------------------------------------------------------------------------


async def test_idle_sockets_without_a_token_cannot_keep_the_owner_out(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    async with trio.open_nursery() as nursery:
        opened = 0
        done = trio.Event()

        async def idle() -> None:
            nonlocal opened
            async with raw_ws(port):
                opened += 1
                await done.wait()

        for _ in range(LIMITS["anonymous_sessions"]):
            nursery.start_soon(idle)
        while opened < LIMITS["anonymous_sessions"]:
            await trio.sleep(0.01)
        # The anonymous cap is full: one more without a token is refused ...
        assert await rejection_status(port) == 503
        # ... and the owner, whose page sends its token with the upgrade, still gets in.
        await owner_gets_in(daemon)
        done.set()


async def test_upgrades_without_a_token_made_all_at_once_are_held_to_the_cap(daemon: DaemonProcess) -> None:
    """The cap is checked before the upgrade is accepted and counted after: checks that race must not all pass."""
    port = daemon.gateway_port
    attempts = 12 * LIMITS["anonymous_sessions"]
    held = refused = 0
    everyone_tried = trio.Event()

    async def one() -> None:
        nonlocal held, refused
        try:
            async with raw_ws(port):
                held += 1
                if held + refused == attempts:
                    everyone_tried.set()
                await everyone_tried.wait()
        except ConnectionRejected as e:
            assert e.status_code == 503
            refused += 1
            if held + refused == attempts:
                everyone_tried.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for _ in range(attempts):
                nursery.start_soon(one)
    assert (held, refused) == (LIMITS["anonymous_sessions"], attempts - LIMITS["anonymous_sessions"])
    await owner_gets_in(daemon)


async def test_a_session_without_a_token_is_closed_after_its_deadline(daemon: DaemonProcess) -> None:
    async with raw_ws(daemon.gateway_port) as ws:
        frames = []
        with trio.fail_after(15), pytest.raises(ConnectionClosed):
            while True:
                frames.append(msgpack.unpackb(await ws.get_message()))
        assert frames[-1] == ["abort", ANONYMOUS_TIMEOUT_REASON]
    # One that presents its token in time stays.
    token = token_of(daemon.chat_url())
    async with raw_ws(daemon.gateway_port) as ws, open_websocket_connection(ws, None) as conn:
        agent = await E(conn.bootstrap()).fetch(token)
        await trio.sleep(LIMITS["anonymous_deadline"] * 2)
        assert "SELF" in await E(agent).list()


async def test_a_wrong_token_in_the_upgrade_makes_a_session_without_one(daemon: DaemonProcess) -> None:
    # Not a refusal (a page would retry that for ever): fetch then says the token is not accepted.
    async with raw_ws(daemon.gateway_port, "A" * 43) as ws, open_websocket_connection(ws, None) as conn:
        with pytest.raises(RemoteError) as info:
            await E(conn.bootstrap()).fetch("A" * 43)
        assert info.value.message == INVALID_TOKEN_MESSAGE
    await owner_gets_in(daemon)


async def test_another_connections_failed_tokens_never_delay_a_correct_one(daemon: DaemonProcess) -> None:
    port = daemon.gateway_port
    token = token_of(daemon.chat_url())
    failed = 0
    async with raw_ws(port) as attacker_ws, open_websocket_connection(attacker_ws, None) as attacker:
        gateway = attacker.bootstrap()
        with pytest.raises(RemoteError):
            await E(gateway).fetch("wrong")
        # Four more wrong guesses in flight: 0.2 + 0.4 + 0.8 + 1.6 s of penalty, one after another.
        async with trio.open_nursery() as nursery:

            async def guess() -> None:
                nonlocal failed
                # Wrong, or cut off by the deadline for sessions without a token: either way it ends.
                with pytest.raises((RemoteError, SessionAborted)):
                    await E(gateway).fetch("wrong")
                failed += 1

            for _ in range(4):
                nursery.start_soon(guess)
            await trio.sleep(0.05)
            # Meanwhile, from the same address, the owner's chat page connects the way it does.
            async with raw_ws(port) as ws, open_websocket_connection(ws, None) as conn:
                agent = await E(conn.bootstrap()).fetch(token)
                assert "SELF" in await E(agent).list()
                assert failed < 4, "the correct token waited for someone else's failures"


# -- items 9, 10, 12 ------------------------------------------------------------------------------


async def test_a_session_without_a_token_cannot_send_a_large_frame(daemon: DaemonProcess) -> None:
    async with raw_ws(daemon.gateway_port) as ws, open_websocket_connection(ws, None) as conn:
        with pytest.raises(Exception):  # noqa: B017 - the session ends; how the call breaks does not matter
            await E(conn.bootstrap()).fetch("x" * (1 << 20))
        assert (await conn.wait_closed()).code == R_FRAME_TOO_LARGE
    await owner_gets_in(daemon)


async def test_a_frame_of_empty_arrays_is_refused_without_stalling_the_daemon(daemon: DaemonProcess) -> None:
    token = token_of(daemon.chat_url())
    hostile = msgpack.packb(["deliver-only", msgpack.ExtType(12, b"\x00"), "ping", [[[] for _ in range(1000)] for _ in range(4000)]])
    async with raw_ws(daemon.gateway_port, token) as ws:
        await ws.send_message(msgpack.packb(["start-session", "ocapd-captp/1"]))
        await ws.send_message(hostile)  # 4 MiB, four million empty arrays
        replies = []
        with trio.fail_after(15):
            try:
                while True:
                    replies.append(msgpack.unpackb(await ws.get_message(), strict_map_key=False))
            except ConnectionClosed:
                pass
        assert replies[-1][0] == "abort" and replies[-1][1].startswith(R_TOO_MANY_ELEMENTS)
    await owner_gets_in(daemon)


class StopsReading(WebSocketTransport):
    """A client transport that stops reading when told (trio-websocket then stops reading the socket)."""

    def __init__(self, ws: Any) -> None:
        super().__init__(ws)
        self.reading = True

    async def receive_frames(self) -> list[bytes]:  # what the driver reads with
        if not self.reading:
            await trio.sleep_forever()
        return await super().receive_frames()


async def ws_sessions(facet: Any) -> set[str]:
    return {s["name"] for s in (await E(facet).inspect())["sessions"] if s["name"].startswith("ws-")}


async def test_a_browser_that_never_reads_replies_is_cut_off_and_the_daemon_serves_on(daemon: DaemonProcess) -> None:
    token = token_of(daemon.chat_url())
    async with daemon.connect() as (host, facet, _):
        await E(host).store_value("x" * (256 * 1024), "big")
        rss_before = (await E(facet).inspect())["daemon"]["rss_bytes"]
        before = await ws_sessions(facet)
        async with raw_ws(daemon.gateway_port, token, message_queue_size=0) as ws:
            transport = StopsReading(ws)
            async with open_connection(transport, None) as conn:
                agent = await E(conn.bootstrap()).fetch(token)
                (attacker,) = await ws_sessions(facet) - before
                transport.reading = False
                # 2,000 pipelined lookups of 256 KiB: 500 MiB of replies if they were all queued.
                for _ in range(2000):
                    E(agent).lookup("big")
                with trio.fail_after(30):
                    while attacker in await ws_sessions(facet):
                        assert daemon.out("ping") == "pong"
                        await trio.sleep(0.2)
                conn.close()
        info = await E(facet).inspect()
        assert info["daemon"]["rss_bytes"] - rss_before < 200 * 1024 * 1024
    await owner_gets_in(daemon)
