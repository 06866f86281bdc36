"""The daemon under attack from its guests and anonymous peers (issue 9): a real daemon, real sockets.

Limits are scaled down through ``OCAPD_LIMITS`` so each attack proves its
property quickly; throughout, the owner's ``ocapd ping`` still answers.
"""

from __future__ import annotations

import json
import socket
import struct
import zipfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from daemon_harness import DaemonProcess

from ocapd.captp import PROTOCOL_VERSION, E, Limits, RemoteError, open_stream_connection
from ocapd.daemon.limits import DaemonLimits, load_limits, session_limits

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def make_daemon(tmp_path: Path, **limits: Any) -> DaemonProcess:
    d = DaemonProcess(tmp_path / "home", port=0)
    d.home.mkdir()
    if limits:
        d.env["OCAPD_LIMITS"] = json.dumps(limits)
    return d


@pytest.fixture
def daemon(tmp_path: Path):
    d = make_daemon(tmp_path)
    d.start()
    try:
        yield d
    finally:
        d.stop()


# -- item 16 ------------------------------------------------------------------------------------


def test_a_guest_sees_the_names_it_was_introduced_to_at_once(daemon: DaemonProcess) -> None:
    daemon.out("store", "--text", "a present", "-n", "gift")
    daemon.out("mkguest", "g1", "--introduce", "gift:gift")
    assert "gift" in daemon.out("list", "--as", "g1-agent").split()
    daemon.restart()
    assert "gift" in daemon.out("list", "--as", "g1-agent").split()


def test_a_bad_limits_override_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    d = make_daemon(tmp_path, no_such_limit=3)
    with pytest.raises(RuntimeError, match="unknown limit 'no_such_limit'"):
        d.start()


# -- the drain after an abort (captp.Limits.drain_timeout / drain_bytes) ------------------------


def test_drain_limits_default_to_captps_and_reach_untrusted_sessions() -> None:
    limits = load_limits({})
    assert (limits.drain_timeout, limits.drain_bytes) == (Limits.drain_timeout, Limits.drain_bytes)
    session = session_limits(limits)
    assert (session.drain_timeout, session.drain_bytes) == (Limits.drain_timeout, Limits.drain_bytes)


def test_drain_limits_can_be_set_in_ocapd_limits() -> None:
    limits = load_limits({"OCAPD_LIMITS": '{"drain_timeout": 0.1, "drain_bytes": 4096}'})
    assert (limits.drain_timeout, limits.drain_bytes) == (0.1, 4096)
    base = Limits(max_frame_size=1024)  # as the gateway's anonymous sessions start from their own base
    session = session_limits(limits, base)
    assert (session.drain_timeout, session.drain_bytes, session.max_frame_size) == (0.1, 4096, 1024)
    assert session_limits(load_limits({"OCAPD_LIMITS": '{"drain_timeout": 0, "drain_bytes": 0}'})).drain_bytes == 0
    assert load_limits({"OCAPD_LIMITS": '{"drain_timeout": 2}'}).drain_timeout == 2  # an int is a number of seconds too


@pytest.mark.parametrize(
    "override, message",
    [
        ({"drain_timeout": -0.5}, "drain_timeout must be a non-negative number"),
        ({"drain_bytes": -1}, "drain_bytes must be a non-negative number"),
        ({"drain_bytes": 1.5}, "drain_bytes must be an integer"),
        ({"drain_bytes": True}, "drain_bytes must be a non-negative number"),
        ({"drain_timeout": "1"}, "drain_timeout must be a non-negative number"),
        ({"drain_timeout": None}, "drain_timeout must be a non-negative number"),
    ],
)
def test_bad_drain_limits_are_refused_with_their_name(override: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_limits({"OCAPD_LIMITS": json.dumps(override)})


async def test_drain_limits_from_ocapd_limits_reach_the_driver_over_a_real_socket() -> None:
    # More than captp's default drain (1 MiB) but less than the operator's: a
    # driver given the operator's numbers drops it all and ends with a clean
    # EOF; one left with the defaults would close mid-flood, and the peer
    # would read a reset instead.
    late_bytes = 8 * 1024 * 1024
    limits = session_limits(load_limits({"OCAPD_LIMITS": json.dumps({"drain_bytes": 4 * late_bytes, "drain_timeout": 3600})}))
    done = trio.Event()

    async def handle(stream: trio.SocketStream) -> None:
        async with open_stream_connection(stream, None, limits=limits) as conn:
            await conn.wait_closed()
        done.set()

    (listener,) = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]

    def peer() -> bytes:
        with socket.create_connection(("127.0.0.1", port)) as client:
            start = msgpack.packb(["start-session", PROTOCOL_VERSION])
            client.sendall(struct.pack(">I", len(start)) + start + struct.pack(">I", 1) + b"\xc1")  # then a bad frame
            received = b""
            while chunk := client.recv(65536):  # our start-session, the abort, then EOF
                received += chunk
            client.sendall(b"\x00" * late_bytes)  # still sending after the abort
            client.shutdown(socket.SHUT_WR)
            return received + client.recv(1)  # b"" at a clean end; a reset raises

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [listener])
        with trio.fail_after(60):
            received = await trio.to_thread.run_sync(peer)
            await done.wait()
        nursery.cancel_scope.cancel()
    assert b"abort" in received and b"malformed-frame" in received


def test_a_bad_drain_limit_stops_the_daemon_with_a_clear_message(tmp_path: Path) -> None:
    d = make_daemon(tmp_path, drain_bytes=-1)
    with pytest.raises(RuntimeError, match="drain_bytes must be a non-negative number"):
        d.start()


def test_every_daemon_limit_is_documented_in_operations_md() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs" / "operations.md").read_text(encoding="utf-8")
    missing = [f for f in DaemonLimits.__dataclass_fields__ if f"`{f}`" not in text]
    assert missing == []


async def test_the_daemon_reports_its_shared_budget(daemon: DaemonProcess) -> None:
    async with daemon.connect() as (_, facet, _):
        budget = (await E(facet).inspect())["daemon"]["budget"]
        assert budget["max_answers"] == 262_144


# -- item 11: mail quotas ----------------------------------------------------------------------

MAIL_LIMITS = {"message_bytes": 64 * 1024, "messages": 20, "mailbox_bytes": 200 * 1024, "names": 30, "pending_requests": 2}


@pytest.fixture
def small_daemon(tmp_path: Path):
    d = make_daemon(tmp_path, **MAIL_LIMITS)
    d.start()
    try:
        yield d
    finally:
        d.stop()


async def test_mail_quotas_refuse_with_a_clear_error_and_the_inbox_always_lists(small_daemon: DaemonProcess) -> None:
    d = small_daemon
    d.out("mkguest", "g")
    async with d.connect() as (host, _, _):
        guest = await E(host).lookup("g-agent")
        big = "x" * (100 * 1024)
        with pytest.raises(RemoteError, match="message too large"):
            await E(guest).send("HOST", [big], [], [])
        for _ in range(3):  # 3 x 60 KiB fit in 200 KiB ...
            await E(guest).send("HOST", ["y" * (60 * 1024)], [], [])
        with pytest.raises(RemoteError, match="mailbox is full"):  # ... a fourth does not
            await E(guest).send("HOST", ["y" * (60 * 1024)], [], [])
        for _ in range(17):
            await E(guest).send("HOST", ["hi"], [], [])
        with pytest.raises(RemoteError, match=r"mailbox is full \(20 messages\)"):
            await E(guest).send("HOST", ["one too many"], [], [])
    # The owner's inbox lists, page by page, everything there is.
    listed = d.out("inbox").splitlines()
    assert len(listed) == 20
    assert d.out("ping") == "pong"


async def test_requests_from_one_sender_are_capped_while_they_wait(small_daemon: DaemonProcess) -> None:
    d = small_daemon
    d.out("mkguest", "w")
    async with d.connect() as (host, _, _):
        guest = await E(host).lookup("w-agent")
        asks = [E(guest).request("HOST", f"please {i}") for i in range(2)]
        with trio.fail_after(10):
            while len([m for m in await E(host).list_messages() if m["type"] == "request"]) < 2:
                await trio.sleep(0.05)
        with pytest.raises(RemoteError, match="already waiting for an answer"):
            await E(guest).request("HOST", "please 3")
        (first,) = [m["number"] for m in await E(host).list_messages() if m.get("description") == "please 0"]
        await E(host).reject(first, "no")
        with pytest.raises(RemoteError):
            with trio.fail_after(10):
                await asks[0]
        # One answered: the weblet may ask again.
        third = E(guest).request("HOST", "please 3")
        with trio.fail_after(10):
            while len([m for m in await E(host).list_messages() if m["type"] == "request" and m.get("settled") is None]) < 2:
                await trio.sleep(0.05)
        del third, asks


async def test_names_are_capped_per_store(small_daemon: DaemonProcess) -> None:
    async with small_daemon.connect() as (host, _, _):
        with pytest.raises(RemoteError, match=r"name store is full \(30 names\)"):
            for i in range(MAIL_LIMITS["names"] + 1):
                await E(host).store_value(i, f"n{i}")
        assert len([n for n in await E(host).list() if n.startswith("n")]) <= MAIL_LIMITS["names"]


async def test_a_listing_never_exceeds_a_frame_even_with_huge_old_messages(daemon: DaemonProcess) -> None:
    """Messages stored before the quotas (here: written to the database directly) list as stubs, in pages."""
    d = daemon
    d.out("mkguest", "old")
    async with d.connect() as (host, _, _):
        guest = await E(host).lookup("old-agent")
        await E(guest).send("HOST", ["small"], [], [])
        messages = await E(host).list_messages()
    d.stop()
    import sqlite3

    con = sqlite3.connect(d.db_path)
    try:
        (mailbox, record_text) = con.execute("SELECT mailbox, record FROM messages").fetchone()
        record = json.loads(record_text)
        for n in range(2):  # two 9 MiB messages: together over the 16 MiB frame
            big = {**record, "number": 100 + n, "strings": ["z" * (9 * 1024 * 1024)]}
            con.execute("INSERT INTO messages (mailbox, number, record) VALUES (?, ?, ?)", (mailbox, 100 + n, json.dumps(big)))
        con.commit()
    finally:
        con.close()
    d.start()
    listed = d.out("inbox")
    assert "over the 1048576-byte limit" in listed and "small" in listed
    async with d.connect() as (host, _, _):
        page = await E(host).list_messages()
        assert [m["number"] for m in page] == [messages[0]["number"], 100, 101]
        assert page[1]["oversize"] > 9 * 1024 * 1024
        await E(host).dismiss(100)
    assert d.out("ping") == "pong"


# -- item 7: a confined worker floods its own pipe to the daemon --------------------------------

#: The flooder: a NONE bundle whose methods write raw CapTP frames on the worker's own pipe from
#: the worker's event loop, so the worker never reads what the daemon answers.
FLOODER = '''
import gc, os, select, struct

import msgpack
import trio
from ocapd.captp import Far

EXPORT_0 = msgpack.ExtType(12, b"\\x00")  # the daemon's position 0 on this pipe
OUR_FACET = msgpack.ExtType(10, b"\\x00")  # the worker's own position 0, as the daemon sees it


def _pipe_to_daemon():
    for o in gc.get_objects():
        if isinstance(o, trio.StapledStream) and isinstance(o.send_stream, trio.lowlevel.FdStream):
            return o.send_stream.fileno()
    raise RuntimeError("no pipe")


def _frame(body):
    return struct.pack(">I", len(body)) + body


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def flood(total):
    """Calls whose answers come back to us, ``total`` bytes of them; then wait, never reading, until hung up."""
    fd = _pipe_to_daemon()
    os.set_blocking(fd, True)
    call = _frame(msgpack.packb(["deliver", EXPORT_0, "m" * 120, [], None, OUR_FACET]))
    batch = call * 256
    sent = 0
    try:
        while sent < total:
            _write_all(fd, batch)
            sent += len(batch)
        poll = select.poll()
        poll.register(fd, 0)
        poll.poll()  # returns once the daemon closes its end
    except BrokenPipeError:
        pass
    return sent


def empty_arrays(count):
    """One frame of ``count`` empty arrays (1 byte each)."""
    fd = _pipe_to_daemon()
    os.set_blocking(fd, True)
    head = b"\\x94" + msgpack.packb("deliver-only") + msgpack.packb(EXPORT_0) + msgpack.packb("x")
    _write_all(fd, _frame(head + b"\\xdd" + struct.pack(">I", count) + b"\\x90" * count))
    return count


def make(powers, context):
    return Far("Flooder", flood=flood, empty_arrays=empty_arrays)
'''

#: What the daemon may hold for one worker that does not read (small here, 32 MiB by default).
OUTBOX = 256 * 1024
#: Answers to one batch of frames read before the daemon sees the outbox full.
ONE_BATCH = 512 * 1024
FLOOD_LIMITS = {"outbox_bytes": OUTBOX, "stall_timeout": 2.0}


def make_none_bundle(d: DaemonProcess, tmp_path: Path, main_py: str, name: str) -> None:
    """``main_py`` as a bundle, made into the value ``name`` at power level NONE, as a user does with the CLI."""
    bundle = tmp_path / f"{name}.zip"
    with zipfile.ZipFile(bundle, "w") as z:
        z.writestr("main.py", main_py)
    d.out("store", "--path", str(bundle), "-n", f"{name}-zip")
    d.out("make", "--bundle", f"{name}-zip", "-p", "NONE", "-n", name)


@pytest.fixture
def flood_daemon(tmp_path: Path):
    d = make_daemon(tmp_path, **FLOOD_LIMITS)
    d.start()
    try:
        make_none_bundle(d, tmp_path, FLOODER, "flooder")
        yield d
    finally:
        d.stop()


def worker_sessions(info: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {s["name"]: s for s in info["sessions"] if s["name"].startswith("worker-")}


async def test_a_worker_that_floods_its_pipe_without_reading_is_held_to_its_outbox_and_cut_off(
    flood_daemon: DaemonProcess,
) -> None:
    d = flood_daemon
    async with d.connect() as (host, facet, _):
        flooder = await E(host).lookup("flooder")
        (name,) = worker_sessions(await E(facet).inspect())
        # 16 MiB of calls: unread, their answers would be about as much again in the daemon.
        call = E(flooder).flood(16 * 1024 * 1024)
        seen = 0
        pongs = 0

        async def ping_meanwhile() -> None:
            nonlocal pongs
            while True:
                assert await trio.to_thread.run_sync(d.out, "ping") == "pong"
                pongs += 1

        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping_meanwhile)
                while name in (sessions := worker_sessions(await E(facet).inspect())):
                    backlog = sessions[name]["outbox_bytes"]
                    seen = max(seen, backlog)
                    # The daemon stops reading the worker once its outbox is full: one batch of answers over it, at most.
                    assert backlog <= OUTBOX + ONE_BATCH, backlog
                    await trio.sleep(0.02)
                while pongs == 0:  # a ping asked while the worker flooded was answered
                    await trio.sleep(0.02)
                nursery.cancel_scope.cancel()
        assert seen >= OUTBOX  # it did fill up
        with pytest.raises(RemoteError, match="peer-not-reading"):
            await call
        # Only that worker paid: the daemon answers, and the flooder comes back on its next use.
        assert d.out("ping") == "pong"
        assert d.out("eval", "1 + 1") == "2"


async def test_one_huge_frame_of_empty_arrays_from_a_worker_ends_only_its_session(flood_daemon: DaemonProcess) -> None:
    d = flood_daemon
    async with d.connect() as (host, facet, _):
        flooder = await E(host).lookup("flooder")
        (pid,) = [w["pid"] for w in (await E(facet).inspect())["workers"]]
        with pytest.raises(RemoteError, match="too-many-elements"):
            with trio.fail_after(60):
                await E(flooder).empty_arrays(15 * 1024 * 1024)
        with trio.fail_after(30):  # the daemon ends that worker
            while pid in [w["pid"] for w in (await E(facet).inspect())["workers"]]:
                await trio.sleep(0.05)
        assert d.out("ping") == "pong"
        assert "SELF" in await E(host).list()


HOG = '''
from ocapd.captp import Far


def hog(mib):
    data = bytearray(mib << 20)  # zero pages, each touched: all of it is charged
    return len(data)


def make(powers, context):
    return Far("Hog", hog=hog)
'''


def test_a_worker_killed_at_its_memory_limit_says_so_and_comes_back(tmp_path: Path) -> None:
    from ocapd.workers import probe
    from ocapd.workers.limits import DEFAULT_LIMITS, format_bytes

    if not probe()["cgroups"]["supported"]:
        pytest.skip("no memory cgroup for workers on this machine")
    limit = DEFAULT_LIMITS["NONE"].memory_bytes
    assert limit is not None
    d = make_daemon(tmp_path)
    d.start()
    try:
        make_none_bundle(d, tmp_path, HOG, "hog")
        over = d.cli("eval", f"E(h).hog({limit * 3 // 2 >> 20})", "h:hog", check=False)
        assert over.returncode == 1
        # One line, saying which limit ended it, not just that the worker went away.
        assert over.stderr.count("\n") == 1, over.stderr
        assert f"worker exited: killed by the kernel: memory limit of {format_bytes(limit)} reached" in over.stderr
        assert d.out("eval", "E(h).hog(1)", "h:hog") == str(1 << 20)  # made again on next use
        assert d.out("ping") == "pong"
    finally:
        d.stop()
