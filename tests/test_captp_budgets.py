"""Hostile peers cannot make a session's owner spend memory or time without bound (issue 9, items 7, 9, 10).

- A frame is refused *while it is decoded* once it holds more values or
  descriptors than ``Limits`` allow: the work done is bounded by the budget,
  not by the frame (shown by the memory decoding takes, never by a clock).
- An honest sender never writes a frame its peer must refuse: a result that
  is too large breaks that one promise, not the session.
- A peer that sends calls and never reads the replies is not read either once
  a bounded outbox is full, and is cut off after ``Limits.stall_timeout``.
- A ``Budget`` shared by many sessions bounds answers, questions and exports
  over all of them.
"""

from __future__ import annotations

import gc
import socket
import struct
import tracemalloc
from typing import Any

import msgpack
import pytest
import trio
from sessions import feed_frame

from ocapd.captp import (
    PROTOCOL_VERSION,
    Budget,
    E,
    LimitExceeded,
    Limits,
    Session,
    SessionAborted,
    codec,
    far,
    make_promise_kit,
    memory_transport_pair,
    open_connection,
    open_stream_connection,
)
from ocapd.captp.codec import EXT_EXPORT, EXT_IMPORT_OBJECT, MAX_DESCRIPTORS, MAX_ELEMENTS
from ocapd.captp.session import R_BUDGET, R_STALLED, R_TOO_MANY_DESCRIPTORS, R_TOO_MANY_ELEMENTS

START = msgpack.packb(["start-session", PROTOCOL_VERSION])
BOOT = msgpack.ExtType(EXT_EXPORT, b"\x00")


def started_session(**limits: Any) -> Session:
    session = Session(Echo(), limits=Limits(**limits))
    feed_frame(session, START)
    session.data_to_send()
    return session


def abort_code(session: Session) -> str:
    assert session.aborted is not None, "the session should have aborted"
    return session.aborted.code


def peak_bytes_while(fn: Any) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@far("Echo")
class Echo:
    def ping(self) -> str:
        return "pong"

    def echo(self, value: Any) -> Any:
        return value

    def many(self, n: int) -> list[int]:
        return list(range(n))

    def blob(self, n: int) -> bytes:
        return b"x" * n

    async def forever(self) -> None:
        await trio.sleep_forever()


# -- decoding budget (items 10, 12) -------------------------------------------------------------


def test_a_frame_of_a_million_empty_arrays_is_refused_while_decoding() -> None:
    args = msgpack.packb([[] for _ in range(1_000_000)])
    frame = msgpack.packb(["deliver-only", BOOT, "echo", None])[:-1] + args  # args spliced in raw
    session = started_session()
    peak = peak_bytes_while(lambda: feed_frame(session, frame))
    assert abort_code(session) == R_TOO_MANY_ELEMENTS
    # Building a million lists takes ~60 MiB; refusing at the budget takes a few.
    assert peak < 16 * 1024 * 1024


def test_nested_arrays_are_counted_across_levels_not_per_array() -> None:
    # 2,000 arrays of 100 empty arrays: every single array is small, the frame is not.
    frame = msgpack.packb(["deliver-only", BOOT, "echo", [[[] for _ in range(100)] for _ in range(2_000)]])
    session = started_session()
    feed_frame(session, frame)
    assert abort_code(session) == R_TOO_MANY_ELEMENTS


def test_a_frame_of_a_million_imports_is_refused_before_any_import_is_made() -> None:
    # A thousand arrays of a thousand imports: no single array is over the element budget.
    chunk = [msgpack.ExtType(EXT_IMPORT_OBJECT, bytes([1 + i % 200])) for i in range(1_000)]
    frame = msgpack.packb(["deliver-only", BOOT, "echo", [[chunk] * 1_000]])
    session = started_session()
    peak = peak_bytes_while(lambda: feed_frame(session, frame))
    assert abort_code(session) == R_TOO_MANY_DESCRIPTORS
    assert session.stats()["imports"] == 0
    assert peak < 16 * 1024 * 1024


def test_imports_spread_over_small_arrays_are_counted_too() -> None:
    descs = [[msgpack.ExtType(EXT_IMPORT_OBJECT, bytes([1 + i % 200]))] for i in range(MAX_DESCRIPTORS + 1)]
    session = started_session()
    feed_frame(session, msgpack.packb(["deliver-only", BOOT, "echo", [descs]]))
    assert abort_code(session) == R_TOO_MANY_DESCRIPTORS


def test_frames_at_the_budget_pass_and_the_limits_are_configurable() -> None:
    session = started_session()
    feed_frame(session, msgpack.packb(["deliver-only", BOOT, "echo", [list(range(MAX_ELEMENTS - 10))]]))
    assert session.aborted is None
    small = started_session(max_elements=100, max_descriptors=2)
    feed_frame(small, msgpack.packb(["deliver-only", BOOT, "echo", [list(range(50))]]))
    assert small.aborted is None
    feed_frame(small, msgpack.packb(["deliver-only", BOOT, "echo", [list(range(200))]]))
    assert abort_code(small) == R_TOO_MANY_ELEMENTS


def test_a_tagged_payload_shares_the_frames_budget() -> None:
    tagged = [msgpack.ExtType(2, msgpack.packb(["t", [[] for _ in range(100)]])) for _ in range(1_000)]
    session = started_session()
    feed_frame(session, msgpack.packb(["deliver-only", BOOT, "echo", [tagged]]))
    assert abort_code(session) == R_TOO_MANY_ELEMENTS


def test_a_large_bytes_value_is_one_element() -> None:
    session = started_session()
    feed_frame(session, msgpack.packb(["deliver-only", BOOT, "echo", [b"x" * (8 * 1024 * 1024)]]))
    assert session.aborted is None


async def test_a_result_the_peer_would_refuse_breaks_that_promise_and_the_session_lives() -> None:
    ta, tb = memory_transport_pair()
    async with open_connection(ta, None, name="a") as a, open_connection(tb, Echo(), name="b"):
        boot = a.bootstrap()
        with pytest.raises(Exception, match="more than"):
            await E(boot).many(MAX_ELEMENTS + 1)
        with pytest.raises(Exception, match="frame limit"):
            await E(boot).blob(17 * 1024 * 1024)
        assert await E(boot).ping() == "pong"
        # Our own oversized call is refused before it is sent.
        with pytest.raises(LimitExceeded):
            E(boot).echo(list(range(MAX_ELEMENTS + 1)))
        assert await E(boot).ping() == "pong"
        assert a.aborted is None


# -- backpressure (items 7, 9) ------------------------------------------------------------------


async def test_a_peer_that_never_reads_is_not_read_either_and_is_cut_off() -> None:
    """The attacker pipelines calls with 16 KiB replies over TCP and never reads one."""
    limits = Limits(max_outbox_bytes=256 * 1024, stall_timeout=1.0)
    seen: list[int] = []
    conns: list[Any] = []

    @far("Blobs")
    class Blobs:
        def blob(self) -> bytes:
            seen.append(conns[0].backlog())
            return b"x" * 16384

    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.setblocking(False)
    server_sock = trio.socket.from_stdlib_socket(listener)
    # Each reply goes to the attacker's resolver (its export 1), 16 KiB each.
    call = msgpack.packb(["deliver", BOOT, "blob", [], None, msgpack.ExtType(EXT_IMPORT_OBJECT, b"\x01")])
    frames = struct.pack(">I", len(START)) + START + (struct.pack(">I", len(call)) + call) * 20_000

    async def attacker() -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            await stream.send_all(frames)  # 20,000 calls: 312 MiB of replies if all were answered
        except trio.BrokenResourceError:
            pass
        await trio.sleep_forever()

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(attacker)
            sock, _ = await server_sock.accept()
            async with open_stream_connection(trio.SocketStream(sock), Blobs(), limits=limits) as conn:
                conns.append(conn)
                reason = await conn.wait_closed()
            nursery.cancel_scope.cancel()
    assert reason.code == R_STALLED
    assert len(seen) < 20_000  # it stopped reading
    # Never more than the bound plus one batch of replies waited in memory.
    assert max(seen) <= limits.max_outbox_bytes + 65536 * 16384 // len(call)


async def test_an_honest_slow_reader_gets_every_reply() -> None:
    limits = Limits(max_outbox_bytes=64 * 1024, stall_timeout=10.0)
    ta, tb = memory_transport_pair(buffer=1)
    async with open_connection(ta, None, name="a", limits=limits) as a, open_connection(tb, Echo(), name="b", limits=limits):
        boot = a.bootstrap()
        results = [E(boot).blob(8192) for _ in range(200)]
        for r in results:
            assert len(await r) == 8192


# -- shared budget (item 9) ------------------------------------------------------------------------


async def test_a_shared_budget_bounds_answers_over_all_sessions() -> None:
    budget = Budget(answers=10)
    async with trio.open_nursery() as nursery:
        pairs = []
        for i in range(2):
            ta, tb = memory_transport_pair()
            a = await nursery_enter(nursery, open_connection(ta, None, name=f"a{i}"))
            b = await nursery_enter(nursery, open_connection(tb, Echo(), name=f"b{i}", budget=budget))
            pairs.append((a, b))
        (a0, b0), (a1, b1) = pairs
        pending0 = [E(a0.bootstrap()).forever() for _ in range(6)]
        pending1 = [E(a1.bootstrap()).forever() for _ in range(4)]
        while budget.answers < 10:
            await trio.sleep(0.01)
        # Each session is far below its own limit (65,536); together they spent the budget.
        with pytest.raises(SessionAborted) as aborted:
            await E(a1.bootstrap()).forever()
        assert aborted.value.code == R_BUDGET
        assert b1.aborted is not None and b1.aborted.code == R_BUDGET
        # Ending that session gave its answers back; the other one goes on.
        assert budget.answers == 6
        assert await E(a0.bootstrap()).ping() == "pong"
        del pending0, pending1
        nursery.cancel_scope.cancel()


async def nursery_enter(nursery: trio.Nursery, cm: Any) -> Any:
    """Enter an async context manager in a task of ``nursery``; return what it yields."""
    send, receive = trio.open_memory_channel[Any](1)

    async def hold() -> None:
        async with cm as value:
            await send.send(value)
            await trio.sleep_forever()

    nursery.start_soon(hold)
    return await receive.receive()


async def test_a_shared_budget_refuses_our_own_calls_without_ending_the_session() -> None:
    budget = Budget(questions=3)
    ta, tb = memory_transport_pair()
    release = trio.Event()

    @far("Gate")
    class Gate:
        async def wait(self) -> str:
            await release.wait()
            return "released"

        def ping(self) -> str:
            return "pong"

    async with open_connection(ta, None, name="a", budget=budget) as a, open_connection(tb, Gate(), name="b"):
        boot = a.bootstrap()
        waiting = [E(boot).wait() for _ in range(3)]
        with pytest.raises(LimitExceeded):
            E(boot).ping()
        assert a.aborted is None
        release.set()
        assert [await w for w in waiting] == ["released"] * 3
        del waiting
        # Each answer's promise is released once the peer's gc of its resolver arrives.
        with trio.fail_after(5):
            while budget.questions:
                gc.collect()
                await trio.sleep(0.01)
        assert await E(boot).ping() == "pong"


async def test_a_shared_budget_bounds_exports() -> None:
    budget = Budget(exports=5)
    ta, tb = memory_transport_pair()
    async with open_connection(ta, None, name="a", budget=budget) as a, open_connection(tb, Echo(), name="b"):
        boot = a.bootstrap()
        # Each call exports a resolver; five waiting calls spend the budget.
        waiting = [E(boot).forever() for _ in range(5)]
        with pytest.raises(LimitExceeded):
            E(boot).ping()
        assert a.aborted is None
        kit = make_promise_kit()
        del waiting, kit


def test_a_session_moved_to_another_budget_takes_its_tables_along() -> None:
    first, second = Budget(), Budget()
    session = started_session()
    session.budget = first
    feed_frame(session, msgpack.packb(["deliver", BOOT, "forever", [], 0, None]))
    feed_frame(session, msgpack.packb(["deliver", BOOT, "forever", [], 1, None]))
    assert first.answers == 2
    session.budget = second
    assert (first.answers, second.answers) == (0, 2)
    feed_frame(session, msgpack.packb(["gc-answers", [0]]))
    assert second.answers == 1
    session.abort()
    assert second.answers == 0


def test_codec_count_within_budget() -> None:
    data = codec.encode([list(range(10)), [codec.Desc(EXT_IMPORT_OBJECT, 1)] * 3])
    assert codec.count_within_budget(data, 100, 3)
    assert not codec.count_within_budget(data, 100, 2)
    assert not codec.count_within_budget(data, 5, 3)
