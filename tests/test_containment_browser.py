"""The owner's Chat in Chromium keeps working while the gateway and mail attacks of issue 9 run at once.

One daemon with small limits (``OCAPD_LIMITS``). The owner's chat page is
open and connected in Debian's Chromium; then, together and for as long as
the owner needs:

- item 8: sessions without a token hold the anonymous cap, more knock and are
  refused, and each one sends wrong tokens until its deadline closes it;
- item 9: a session pipelines lookups of a 256 KiB value and never reads;
- item 10: sessions send a 4 MiB frame of four million empty arrays and a
  frame of a million imports;
- item 11: a guest mails its host to the quota, and on;
- item 12: a weblet the owner opened sends 15 MiB frames on its own WebSocket
  from its page, session after session.

Meanwhile the owner evaluates and lists in the chat, reloads the page and gets
back in, and ``ocapd ping`` answers. The attacks are the helpers of
test_gateway_limits.py, run in a trio thread beside Playwright's.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterator

import msgpack
import pytest
import trio
from daemon_harness import DaemonProcess
from test_chat_browser import Page, browser, chat, expect, free_port, open_chat, pytestmark  # noqa: F401 (fixtures)
from test_gateway_limits import StopsReading, raw_ws, token_of
from trio_websocket import ConnectionClosed, ConnectionRejected

from ocapd.captp import E, RemoteError, SessionAborted, open_connection, open_websocket_connection

pytestmark = [pytestmark, pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]  # noqa: F811

#: What the daemon may keep waiting for one peer that does not read.
OUTBOX = 1 << 20
LIMITS = {
    "anonymous_sessions": 3, "anonymous_deadline": 1.0, "outbox_bytes": OUTBOX, "stall_timeout": 1.0,
    "message_bytes": 64 * 1024, "messages": 20, "mailbox_bytes": 200 * 1024,
}  # fmt: skip

#: The weblet of item 12: its page (a file: inline script would not run) floods its own endpoint.
FLOOD_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>flood</title><script type="module" src="app.js"></script></head>
<body><p id="status">starting</p></body></html>
"""
FLOOD_SCRIPT = """
const status = document.getElementById("status");
const ROUNDS = 6;
const text = (s) => [...new TextEncoder().encode(s)];
const START = new Uint8Array([0x92, 0xad, ...text("start-session"), 0xad, ...text("ocapd-captp/1")]);
const COUNT = 15 * 1024 * 1024 - 64;
// ["deliver-only", export 0, "x", [COUNT empty arrays]]: 15 MiB, one byte an element.
const head = [0x94, 0xac, ...text("deliver-only"), 0xd4, 0x0c, 0x00, 0xa1, 0x78,
              0xdd, (COUNT >>> 24) & 255, (COUNT >>> 16) & 255, (COUNT >>> 8) & 255, COUNT & 255];
const HUGE = new Uint8Array(head.length + COUNT);
HUGE.set(head);
HUGE.fill(0x90, head.length);

function once() {
  return new Promise((resolve) => {
    const ws = new WebSocket(`ws://${location.host}/_ocapd/ws`, ["ocapd-captp"]);
    ws.binaryType = "arraybuffer";
    let last = "";
    ws.onopen = () => { ws.send(START); ws.send(HUGE); };
    ws.onmessage = (event) => { last = new TextDecoder().decode(event.data); };
    ws.onclose = () => resolve(last.includes("too-many-elements"));
  });
}

let refused = 0;
for (let i = 0; i < ROUNDS; i++) {
  if (await once()) refused += 1;
  status.textContent = `refused ${refused} of ${i + 1}`;
}
status.textContent = `done: refused ${refused} of ${ROUNDS}`;
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DaemonProcess]:
    port = free_port()
    home = tmp_path_factory.mktemp("contain-browser")
    d = DaemonProcess(home, port=port)
    d.env["OCAPD_LIMITS"] = json.dumps(LIMITS)
    d.cli("start", "--port", str(port))
    weblet = home / "flood"
    weblet.mkdir()
    (weblet / "weblet.json").write_text(json.dumps({"title": "Flood", "entry": "index.html"}))
    (weblet / "index.html").write_text(FLOOD_PAGE)
    (weblet / "app.js").write_text(FLOOD_SCRIPT)
    d.cli("install", str(weblet), "-n", "flood")

    async def store_big() -> None:
        async with d.connect() as (host, _, _):
            await E(host).store_value("x" * (256 * 1024), "big")

    trio.run(store_big)
    d.cli("mkguest", "mailer")
    yield d
    d.cli("stop", check=False)


# -- the attacks, each a loop until told to stop ---------------------------------------------------


async def anonymous_sockets(port: int, stop: trio.Event, count: dict[str, int]) -> None:
    """Item 8: fill the cap of sessions without a token, knock for more, send wrong tokens."""

    async def squatter() -> None:
        while not stop.is_set():
            try:
                async with raw_ws(port) as ws, open_websocket_connection(ws, None) as conn:
                    # Until the deadline for sessions without a token closes it.
                    while not stop.is_set() and conn.aborted is None:
                        try:
                            await E(conn.bootstrap()).fetch("wrong")
                            raise AssertionError("a wrong token was accepted")
                        except RemoteError:
                            count["wrong tokens"] += 1
                        except SessionAborted:
                            pass
                        await trio.sleep(0)
            except (ConnectionRejected, ConnectionClosed, SessionAborted):
                count["refused or closed"] += 1
                await trio.sleep(0.05)

    async with trio.open_nursery() as nursery:
        for _ in range(LIMITS["anonymous_sessions"] + 2):
            nursery.start_soon(squatter)


async def never_reading(d: DaemonProcess, token: str, stop: trio.Event, count: dict[str, int]) -> None:
    """Item 9: pipelined lookups of 256 KiB, never read, session after session.

    The daemon's side of such a session is the one whose outbox is full; it
    must stay near ``outbox_bytes`` and go away (cut off after ``stall_timeout``).
    """
    async with d.connect() as (_, facet, _):
        while not stop.is_set():
            async with raw_ws(d.gateway_port, token, message_queue_size=0) as ws:
                transport = StopsReading(ws)
                async with open_connection(transport, None) as conn:
                    agent = await E(conn.bootstrap()).fetch(token)
                    transport.reading = False
                    for _ in range(500):
                        E(agent).lookup("big")
                    attacker = None
                    while not stop.is_set():
                        sessions = {s["name"]: s["outbox_bytes"] for s in (await E(facet).inspect())["sessions"]}
                        if attacker is None:
                            # No other session has this much waiting: the others read what they are sent.
                            full = [name for name, waiting in sessions.items() if waiting >= 512 * 1024]
                            attacker = full[0] if full else None
                        elif attacker not in sessions:
                            count["cut off"] += 1
                            break
                        else:
                            count["largest outbox"] = max(count["largest outbox"], sessions[attacker])
                        await trio.sleep(0.05)
                    conn.close()


EMPTY_ARRAYS = msgpack.packb(["deliver-only", msgpack.ExtType(12, b"\x00"), "ping", [[[] for _ in range(1000)] for _ in range(4000)]])
_IMPORTS = [msgpack.ExtType(10, bytes([1 + i % 200])) for i in range(1_000)]
A_MILLION_IMPORTS = msgpack.packb(["deliver-only", msgpack.ExtType(12, b"\x00"), "ping", [[_IMPORTS] * 1_000]])


async def hostile_frames(port: int, token: str, stop: trio.Event, count: dict[str, int]) -> None:
    """Item 10: a frame of four million empty arrays, then one of a million imports, again and again."""
    frames = [EMPTY_ARRAYS, A_MILLION_IMPORTS]
    while not stop.is_set():
        frame = frames[count["hostile frames"] % 2]
        async with raw_ws(port, token) as ws:
            await ws.send_message(msgpack.packb(["start-session", "ocapd-captp/1"]))
            await ws.send_message(frame)
            try:
                while True:
                    await ws.get_message()
            except ConnectionClosed:
                count["hostile frames"] += 1


async def mail_flood(d: DaemonProcess, stop: trio.Event, count: dict[str, int]) -> None:
    """Item 11: a guest mails its host 60 KiB messages, past the quota, until told to stop."""
    async with d.connect() as (host, _, _):
        guest = await E(host).lookup("mailer-agent")
        while not stop.is_set():
            try:
                await E(guest).send("HOST", ["y" * (60 * 1024)], [], [])
                count["mail sent"] += 1
            except RemoteError as e:
                assert "mailbox is full" in e.message
                count["mail refused"] += 1


def run_attacks(d: DaemonProcess, token: str, launched: threading.Event, stop: threading.Event) -> Callable[[], dict[str, int]]:
    """Start every attack in a thread; returns a function that stops them and says what they did."""
    count: dict[str, int] = {
        key: 0
        for key in ("wrong tokens", "refused or closed", "cut off", "largest outbox", "hostile frames", "mail sent", "mail refused")
    }
    errors: list[BaseException] = []

    async def main() -> None:
        stopping = trio.Event()
        async with trio.open_nursery() as nursery:
            port = d.gateway_port
            nursery.start_soon(anonymous_sockets, port, stopping, count)
            nursery.start_soon(never_reading, d, token, stopping, count)
            nursery.start_soon(hostile_frames, port, token, stopping, count)
            nursery.start_soon(mail_flood, d, stopping, count)
            launched.set()
            await trio.to_thread.run_sync(stop.wait)
            stopping.set()
            # Each loop ends at its next step; none waits longer than a deadline of the daemon's.
            nursery.cancel_scope.deadline = trio.current_time() + 20

    def thread() -> None:
        try:
            trio.run(main)
        except BaseException as e:  # reported to the test below
            errors.append(e)

    worker = threading.Thread(target=thread, daemon=True)
    worker.start()

    def finish() -> dict[str, int]:
        stop.set()
        worker.join(30)
        assert not worker.is_alive(), "the attacks did not stop"
        if errors:
            raise errors[0]
        return count

    return finish


def test_the_owners_chat_keeps_working_while_items_8_to_12_run(chat: Page, daemon: DaemonProcess) -> None:  # noqa: F811
    open_chat(chat, daemon)
    page = chat.page
    token = token_of(daemon.chat_url())
    launched, stop = threading.Event(), threading.Event()
    finish = run_attacks(daemon, token, launched, stop)
    try:
        assert launched.wait(30)
        # Item 12: the owner opens a weblet whose page floods its own endpoint.
        chat.run("/open flood")
        frame = page.frame_locator('#weblet-frames iframe[data-name="flood"]')
        expect(frame.locator("#status")).to_have_text(re.compile(r"refused [1-9]"))
        # The owner works meanwhile.
        assert daemon.out("ping") == "pong"
        chat.run("/eval 1 + 1")
        expect(page.locator("#transcript .line.value").last).to_have_text("2")
        chat.run("/list")
        expect(page.locator("#transcript .line", has_text="mailer-agent").last).to_be_visible()
        # The mail flood reached the quota (three 60 KiB messages fill 200 KiB), and the owner's inbox lists them.
        expect(page.locator("#inbox .message")).to_have_count(3)
        # A reload gets the owner back in while sockets without a token hold their cap.
        page.reload()
        expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
        chat.run("/eval 2 + 2")
        expect(page.locator("#transcript .line.value").last).to_have_text("4")
        assert daemon.out("ping") == "pong"
    finally:
        count = finish()
    # Every attack did run, and was refused or cut off.
    assert count["wrong tokens"] > 0 and count["refused or closed"] > 0, count
    assert count["cut off"] > 0 and count["hostile frames"] > 1 and count["mail refused"] > 0, count
    # What the daemon held for the session that never read: its outbox, and one batch of replies over it.
    assert count["largest outbox"] <= OUTBOX + 2 * 256 * 1024 + 65536, count
    # The weblet's page: every one of its sessions was refused for its frame (it was reloaded with the chat).
    frame = page.frame_locator('#weblet-frames iframe[data-name="flood"]')
    expect(frame.locator("#status")).to_have_text("done: refused 6 of 6", timeout=45_000)
    expect(page.locator("#connection")).to_have_attribute("data-state", "connected")
    expect(page.locator("#transcript .line", has_text="Lost the connection")).to_have_count(0)
    assert daemon.out("ping") == "pong"
