"""The CapTP session and its trio drivers, specified by behaviour.

Every op of the protocol in both directions, promises crossing the wire,
errors, pipelining, identity, distributed gc, abort, and the four transports.
Two ways of running a pair of sessions are used:

- the sans-IO ``Session`` pumped by hand (``transfer`` moves one batch of
  frames from one side to the other), where frame counts and table sizes are
  exact and deterministic;
- the trio drivers over real transports (memory channels, TCP on 127.0.0.1,
  WebSocket, a subprocess's pipes).

Nothing here is mocked and nothing waits on a clock: where a test must let
frames flow it pumps them, awaits a round trip, or waits until every task of
the in-memory pair is blocked.
"""

from __future__ import annotations

import gc
import inspect
import math
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import pytest
import trio
import trio.testing
from sessions import feed_frame
from trio_websocket import open_websocket_url, serve_websocket

from ocapd import captp
from ocapd.captp import (
    PROTOCOL_VERSION,
    Connection,
    Desc,
    E,
    FramedStream,
    Limits,
    RemoteError,
    RemotePromise,
    RemoteRef,
    Session,
    SessionAborted,
    Tagged,
    TransportClosed,
    decode,
    encode,
    far,
    make_promise_kit,
    memory_transport_pair,
    open_connection,
    open_memory_pair,
    open_stream_connection,
    open_websocket_connection,
)
from ocapd.captp.codec import EXT_ANSWER, EXT_EXPORT, EXT_IMPORT_OBJECT
from ocapd.captp.turns import run_turns

ALL_OPS = {
    "start-session",
    "deliver",
    "deliver-only",
    "listen",
    "gc-exports",
    "gc-answers",
    "abort",
}

#: WebSocket message bound for the tests: the protocol's own default frame limit.
WS_MAX_MESSAGE = Limits().max_frame_size

# ---------------------------------------------------------------------------
# Objects the tests pass around.


class OutOfStock(Exception):
    """A domain error whose type name must survive the trip."""


@far("Thing")
class Thing:
    def __init__(self, label: str) -> None:
        self._label = label

    def label(self) -> str:
        return self._label


@far("Listener")
class Listener:
    def __init__(self) -> None:
        self.heard: list[str] = []

    def hear(self, word: str) -> str:
        self.heard.append(word)
        return f"heard {word}"


@far("Peer")
class Peer:
    """Each side's bootstrap in the two-way tests: every kind of method a test needs."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kept: list[Any] = []
        self.made: list[Thing] = []
        self.favourite = Thing("favourite")
        self.secret_calls = 0
        self.started = trio.Event()
        self._inbox_send, self.inbox = trio.open_memory_channel[str](math.inf)

    def greet(self, who: str) -> str:
        return f"{self.name} greets {who}"

    async def introduce(self, other: Any, who: str) -> str:
        # The callee calls back into the object the caller passed.
        return await E(other).greet(who)

    def note(self, text: str) -> None:
        self._inbox_send.send_nowait(text)

    async def watch(self, promise: Any) -> list[Any]:
        self._inbox_send.send_nowait("watching")
        try:
            value = await promise
        except RemoteError as e:
            return ["rejected", e.name, e.message]
        return ["fulfilled", value]

    def make(self, label: str) -> Thing:
        thing = Thing(label)
        self.made.append(thing)
        return thing

    def owns(self, thing: Any) -> bool:
        return any(thing is made for made in self.made)

    def get_favourite(self) -> Thing:
        return self.favourite

    def itself(self) -> Peer:
        return self

    def echo(self, value: Any) -> Any:
        return value

    def keep(self, value: Any) -> int:
        self.kept.append(value)
        return len(self.kept) - 1

    def give_back(self, index: int) -> Any:
        return self.kept[index]

    def unpassable(self) -> list[Any]:
        return [self.favourite, object()]  # the first item could travel, the second cannot

    async def wait_forever(self) -> None:
        self.started.set()
        await trio.sleep_forever()

    def fail(self, message: str) -> None:
        raise OutOfStock(message)

    async def fail_later(self, message: str) -> None:
        await trio.lowlevel.checkpoint()
        raise OutOfStock(message)

    def _secret(self) -> str:
        self.secret_calls += 1
        return "the secret"


@far("Car")
class Car:
    def __init__(self, color: str) -> None:
        self.color = color

    def drive(self) -> str:
        return f"the {self.color} car drives"

    def honk(self) -> str:
        return "honk"


@far("Factory")
class Factory:
    def make(self, color: str) -> Car:
        if color not in ("red", "blue"):
            raise OutOfStock(f"no {color} cars")
        return Car(color)


@far("Service")
class Service:
    """The object every transport test reaches; the subprocess peer serves the same class."""

    def add(self, x: Any, y: Any) -> Any:
        return x + y

    def echo(self, value: Any) -> Any:
        return value

    async def echo_later(self, value: Any) -> Any:
        await trio.lowlevel.checkpoint()
        return value

    def call_back(self, listener: Any, word: str) -> Any:
        return E(listener).hear(word)

    def fail(self, message: str) -> None:
        raise ValueError(message)

    async def hang(self) -> None:
        await trio.sleep_forever()


# ---------------------------------------------------------------------------
# Pumping sans-IO sessions by hand.


def ops(frames: list[bytes]) -> list[str]:
    return [decode(frame)[0] for frame in frames]


def transfer(src: Session, dst: Session) -> list[str]:
    """Move one batch (everything ``src`` has waiting) into ``dst``; return its ops."""
    frames = src.data_to_send()
    for frame in frames:
        dst.receive_frame(frame)
    run_turns()  # as a driver does: the session only recorded the work
    return ops(frames)


def settle(a: Session, b: Session) -> list[str]:
    """Exchange batches until both sides are quiet; dropped proxies report on the way."""
    moved: list[str] = []
    collected = False
    while True:
        batch = transfer(a, b) + transfer(b, a)
        if batch:
            moved += batch
            collected = False
        elif collected:
            return moved
        else:
            gc.collect()
            collected = True


def tables(session: Session | Connection) -> dict[str, int]:
    stats = session.stats()
    return {k: stats[k] for k in ("exports", "imports", "questions", "answers")}


def sans_io_pair(bootstrap_a: Any = None, bootstrap_b: Any = None) -> tuple[Session, Session]:
    a, b = Session(bootstrap_a, name="a"), Session(bootstrap_b, name="b")
    settle(a, b)
    return a, b


async def let_frames_flow() -> None:
    """In-memory drivers: collect dropped proxies, then run until every task is blocked,
    i.e. every queued frame (gc frames included) has been sent, received and handled."""
    gc.collect()
    await trio.testing.wait_all_tasks_blocked()


class RecordingTransport:
    """Wraps a transport and logs ("send" | "recv", op) for each frame, in order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log: list[tuple[str, str]] = []

    async def send_frames(self, frames: list[bytes]) -> None:
        self.log += [("send", op) for op in ops(frames)]
        await self.inner.send_frames(frames)

    async def receive_frame(self) -> bytes:
        frame = await self.inner.receive_frame()
        self.log.append(("recv", ops([frame])[0]))
        return frame

    async def aclose(self) -> None:
        await self.inner.aclose()

    def sent(self) -> set[str]:
        return {op for direction, op in self.log if direction == "send"}


async def raises_aborted(promise: Any) -> SessionAborted:
    with pytest.raises(SessionAborted) as info:
        await promise
    return info.value


# ---------------------------------------------------------------------------
# start-session


def test_start_session_is_the_first_frame_a_session_sends() -> None:
    frames = Session().data_to_send()
    assert decode(frames[0]) == ["start-session", PROTOCOL_VERSION]


def test_a_peer_speaking_another_version_is_aborted_with_version_mismatch() -> None:
    b = Session()
    b.data_to_send()
    feed_frame(b, encode(["start-session", "ocapd-captp/999"]))
    assert b.aborted is not None and b.aborted.code == "version-mismatch"
    [abort] = [decode(f) for f in b.data_to_send()]
    assert abort[0] == "abort" and abort[1].startswith("version-mismatch")


def test_a_call_before_start_session_is_aborted_with_not_started() -> None:
    b = Session(Peer("bob"))
    feed_frame(b, encode(["deliver", Desc(EXT_EXPORT, 0), "greet", ["x"], 0, None]))
    assert b.aborted is not None and b.aborted.code == "not-started"


# ---------------------------------------------------------------------------
# Every op, both ways


async def exercise(me: Connection, callee: Peer, mine: Peer) -> None:
    """From ``me``, use every op towards the peer (abort aside)."""
    peer = me.bootstrap()
    # deliver; the callee calls back into the object we passed (another deliver, the other way)
    assert await E(peer).introduce(mine, "you") == f"{mine.name} greets you"
    # deliver-only
    E.send_only(peer).note("hello")
    assert await callee.inbox.receive() == "hello"
    # listen: the callee waits on a promise we passed and we settle it later
    promise, resolver = make_promise_kit()
    watching = E(peer).watch(promise)
    assert await callee.inbox.receive() == "watching"
    resolver.resolve("later")
    assert await watching == ["fulfilled", "later"]
    # gc-exports and gc-answers: drop an import and settled answers
    thing = await E(peer).make("spare")
    assert await E(thing).label() == "spare"
    del thing, watching


@pytest.mark.parametrize("closer", ["a", "b"])
async def test_every_op_is_sent_in_both_directions(closer: str) -> None:
    alice, bob = Peer("alice"), Peer("bob")
    ta, tb = memory_transport_pair()
    ra, rb = RecordingTransport(ta), RecordingTransport(tb)
    async with open_connection(ra, alice, name="a") as a, open_connection(rb, bob, name="b") as b:
        await exercise(a, bob, alice)
        await exercise(b, alice, bob)
        await let_frames_flow()
        (a if closer == "a" else b).close("closed: bye")
        ended_a, ended_b = await a.wait_closed(), await b.wait_closed()

    assert ra.sent() == ALL_OPS - ({"abort"} if closer == "b" else set())
    assert rb.sent() == ALL_OPS - ({"abort"} if closer == "a" else set())
    assert (ended_a.reason, ended_b.reason) == ("closed: bye", "closed: bye")
    assert ended_a.by_peer == (closer == "b") and ended_b.by_peer == (closer == "a")


# ---------------------------------------------------------------------------
# Promises as arguments, errors, refused methods


@pytest.mark.parametrize("outcome", ["fulfilled", "rejected"])
async def test_a_promise_passed_as_an_argument_is_seen_to_settle_by_the_remote_side(outcome: str) -> None:
    alice, bob = Peer("alice"), Peer("bob")
    async with open_memory_pair(alice, bob) as (a, b):
        for conn, callee in ((a, bob), (b, alice)):
            promise, resolver = make_promise_kit()
            watching = E(conn.bootstrap()).watch(promise)
            assert await callee.inbox.receive() == "watching"  # the callee waits before we settle
            if outcome == "fulfilled":
                resolver.resolve({"n": 1})
                assert await watching == ["fulfilled", {"n": 1}]
            else:
                resolver.reject(OutOfStock("gone"))
                assert await watching == ["rejected", "OutOfStock", "gone"]


@pytest.mark.parametrize("method", ["fail", "fail_later"], ids=["sync", "async"])
async def test_an_exception_in_a_remote_method_arrives_as_remote_error_with_name_and_message(method: str) -> None:
    async with open_memory_pair(Peer("alice"), Peer("bob")) as (a, b):
        for conn in (a, b):
            with pytest.raises(RemoteError) as info:
                await getattr(E(conn.bootstrap()), method)("sold out")
            assert (info.value.name, info.value.message) == ("OutOfStock", "sold out")
            assert info.value.remote_traceback is None
        assert a.aborted is None and b.aborted is None


async def test_a_debug_session_carries_the_remote_traceback() -> None:
    async with open_memory_pair(None, Peer("bob"), debug=True) as (a, b):
        with pytest.raises(RemoteError) as info:
            await E(a.bootstrap()).fail("sold out")
        assert info.value.remote_traceback is not None
        assert "OutOfStock: sold out" in info.value.remote_traceback


@pytest.mark.parametrize(
    ("method", "args"),
    [
        ("fly", []),
        ("_secret", []),
        ("__init__", ["mallory"]),
        ("__repr__", []),
        ("__getattribute__", ["name"]),
    ],
)
async def test_unknown_private_and_dunder_methods_are_refused_and_never_run(method: str, args: list[Any]) -> None:
    bob = Peer("bob")
    async with open_memory_pair(None, bob) as (a, b):
        peer = a.bootstrap()
        with pytest.raises(RemoteError) as info:
            await a.session.send(peer, method, args)
        assert info.value.name == "TypeError"
        a.session.send_only(peer, method, args)
        assert await E(peer).greet("you") == "bob greets you"  # handled after the deliver-only
        assert bob.secret_calls == 0 and bob.name == "bob"
        assert a.aborted is None and b.aborted is None


# ---------------------------------------------------------------------------
# Pipelining


def test_a_pipelined_call_costs_one_round_trip() -> None:
    a, b = Session(name="a"), Session(Factory(), name="b")
    car = E(a.bootstrap()).make("red")
    drive = E(car).drive()
    honk = E(car).honk()

    frames = a.data_to_send()
    assert ops(frames) == ["start-session", "deliver", "deliver", "deliver"]
    # the pipelined calls name the first call's answer, not a resolved object
    assert [decode(f)[1] for f in frames[2:]] == [Desc(EXT_ANSWER, 0), Desc(EXT_ANSWER, 0)]
    for frame in frames:
        feed_frame(b, frame)
    assert not drive.settled

    transfer(b, a)  # one batch back settles everything
    assert drive.result() == "the red car drives"
    assert honk.result() == "honk"
    assert isinstance(car.result(), RemoteRef)


async def test_a_pipelined_call_through_the_driver_is_answered_before_anything_more_is_sent() -> None:
    ta, tb = memory_transport_pair()
    recording = RecordingTransport(ta)
    async with open_connection(recording, name="a") as a, open_connection(tb, Factory(), name="b"):
        factory = a.bootstrap()
        await let_frames_flow()  # start-session both ways
        mark = len(recording.log)
        drive = E(E(factory).make("red")).drive()
        settled_at: list[int] = []
        drive.when_settled(lambda _p: settled_at.append(len(recording.log)))
        assert await drive == "the red car drives"

    # Both calls left before the first reply came back, and nothing but gc went out
    # after it: the result cost one round trip.
    exchange = recording.log[mark : settled_at[0]]
    first_recv = [d for d, _ in exchange].index("recv")
    assert [op for _, op in exchange[:first_recv] if not op.startswith("gc-")] == ["deliver", "deliver"]
    assert {op for d, op in exchange[first_recv:] if d == "send"} <= {"gc-exports", "gc-answers"}, exchange


async def test_breaking_a_pipelined_promise_breaks_every_call_queued_on_it() -> None:
    async with open_memory_pair(None, Factory()) as (a, b):
        car = E(a.bootstrap()).make("green")
        queued = [car, E(car).drive(), E(car).honk()]
        for promise in queued:
            with pytest.raises(RemoteError) as info:
                await promise
            assert (info.value.name, info.value.message) == ("OutOfStock", "no green cars")
        late = E(car).drive()  # queued after the break: rejects at once, same error
        assert late.rejected and late.exception() == RemoteError("OutOfStock", "no green cars")
        assert a.aborted is None and b.aborted is None


# ---------------------------------------------------------------------------
# Identity


async def test_an_object_sent_to_the_peer_and_back_is_the_same_object_on_both_sides() -> None:
    alice, bob = Peer("alice"), Peer("bob")
    async with open_memory_pair(alice, bob) as (a, b):
        for conn, callee in ((a, bob), (b, alice)):
            peer = conn.bootstrap()
            mine = Listener()
            assert await E(peer).echo(mine) is mine
            first, second = await E(peer).keep(mine), await E(peer).keep(mine)
            assert isinstance(callee.kept[first], RemoteRef)
            assert callee.kept[first] is callee.kept[second]  # one proxy per object
            assert await E(peer).give_back(second) is mine
            promise, _resolver = make_promise_kit()
            [returned] = await E(peer).echo([promise])
            assert returned is promise


async def test_a_reference_received_and_sent_back_arrives_as_the_exporters_original() -> None:
    alice, bob = Peer("alice"), Peer("bob")
    async with open_memory_pair(alice, bob) as (a, b):
        for conn in (a, b):
            peer = conn.bootstrap()
            theirs = await E(peer).make("theirs")
            assert isinstance(theirs, RemoteRef)
            assert await E(peer).owns(theirs) is True
            assert await E(peer).itself() is peer  # the bootstrap arriving by value is our bootstrap proxy


# ---------------------------------------------------------------------------
# Distributed gc


def test_dropping_the_last_reference_to_an_import_frees_the_exporters_slot() -> None:
    a, b = sans_io_pair(None, Peer("bob"))
    peer = a.bootstrap()
    before_a, before_b = tables(a), tables(b)

    answer = E(peer).make("spare")
    settle(a, b)
    thing = answer.result()
    del answer
    settle(a, b)
    assert tables(b)["exports"] == before_b["exports"] + 1
    assert tables(a)["imports"] == before_a["imports"] + 1

    del thing
    gc.collect()
    frames = a.data_to_send()
    assert [decode(f)[0] for f in frames] == ["gc-exports"]
    for frame in frames:
        feed_frame(b, frame)
    assert tables(a) == before_a and tables(b) == before_b


def test_the_bootstrap_is_never_freed_by_gc() -> None:
    bob = Peer("bob")
    a, b = sans_io_pair(None, bob)
    before_b = tables(b)
    answer = E(a.bootstrap()).itself()
    settle(a, b)
    assert answer.result() is a.bootstrap()
    del answer
    gc.collect()
    frames = a.data_to_send()
    assert [decode(f) for f in frames if decode(f)[0] == "gc-exports"] == [["gc-exports", [0], [1]]]
    for frame in frames:
        feed_frame(b, frame)
    settle(a, b)
    assert tables(b) == before_b  # position 0 is still exported
    again = E(a.bootstrap()).greet("you")
    settle(a, b)
    assert again.result() == "bob greets you"
    assert a.aborted is None and b.aborted is None


def test_dropping_a_questions_promise_releases_the_callees_answer_slot() -> None:
    a, b = sans_io_pair(None, Peer("bob"))
    before_a, before_b = tables(a), tables(b)
    answer = E(a.bootstrap()).greet("you")
    settle(a, b)
    assert answer.result() == "bob greets you"
    assert tables(a)["questions"] == before_a["questions"] + 1
    assert tables(b)["answers"] == before_b["answers"] + 1

    del answer
    gc.collect()
    assert transfer(a, b) == ["gc-answers"]
    assert tables(a) == before_a and tables(b) == before_b


def test_an_object_sent_again_while_the_importers_gc_is_in_flight_stays_exported() -> None:
    a, b = sans_io_pair(None, Peer("bob"))
    before_b = tables(b)
    first = E(a.bootstrap()).get_favourite()
    settle(a, b)
    ref = first.result()
    del first
    settle(a, b)

    again = E(a.bootstrap()).get_favourite()
    transfer(a, b)  # b sends the favourite a second time; its answer is still on the way
    del ref
    gc.collect()
    assert transfer(a, b) == ["gc-exports"]  # crosses b's answer
    assert tables(b)["exports"] == before_b["exports"] + 1  # still exported: one arrival unaccounted

    transfer(b, a)
    label = E(again.result()).label()
    settle(a, b)
    assert label.result() == "favourite"
    del again, label
    settle(a, b)
    assert tables(b) == before_b
    assert a.aborted is None and b.aborted is None


def test_a_call_with_an_unpassable_argument_raises_type_error_and_exports_nothing() -> None:
    a, b = sans_io_pair(None, Peer("bob"))
    before = tables(a)
    with pytest.raises(TypeError):
        E(a.bootstrap()).keep(Listener(), object())
    settle(a, b)
    assert tables(a) == before


def test_a_result_that_cannot_be_passed_breaks_the_answer_and_exports_nothing() -> None:
    a, b = sans_io_pair(None, Peer("bob"))
    before_b = tables(b)
    answer = E(a.bootstrap()).unpassable()
    settle(a, b)
    assert isinstance(answer.exception(), RemoteError) and answer.exception().name == "TypeError"
    del answer
    settle(a, b)
    assert tables(b) == before_b
    assert a.aborted is None and b.aborted is None


async def test_gc_through_the_driver_returns_every_table_to_its_baseline() -> None:
    alice, bob = Peer("alice"), Peer("bob")
    async with open_memory_pair(alice, bob) as (a, b):
        peer = a.bootstrap()
        await let_frames_flow()
        before = tables(a), tables(b)

        answer = E(peer).make("spare")
        thing = await answer
        await let_frames_flow()
        assert tables(b)["exports"] == before[1]["exports"] + 1
        assert tables(b)["answers"] == before[1]["answers"] + 1
        assert tables(a)["imports"] == before[0]["imports"] + 1
        assert tables(a)["questions"] == before[0]["questions"] + 1

        del answer, thing
        await let_frames_flow()
        assert (tables(a), tables(b)) == before
        assert await E(peer).greet("you") == "bob greets you"


# ---------------------------------------------------------------------------
# listen


@pytest.mark.parametrize("outcome", ["fulfilled", "rejected"])
def test_waiting_on_a_promise_the_peer_exported_sends_listen_and_settles_when_it_does(outcome: str) -> None:
    alice = Peer("alice")
    a, b = sans_io_pair(alice, None)
    promise, resolver = make_promise_kit()
    E(b.bootstrap()).keep(promise)
    settle(a, b)
    [imported] = alice.kept
    assert isinstance(imported, RemotePromise) and not imported.settled

    seen: list[Any] = []
    imported.when_settled(seen.append)
    assert transfer(a, b) == ["listen"]  # sent on first wait, not on arrival
    assert transfer(b, a) == []  # nothing until b's promise settles

    if outcome == "fulfilled":
        resolver.resolve("done")
        settle(a, b)
        assert seen == [imported] and imported.result() == "done"
    else:
        resolver.reject(OutOfStock("gone"))
        settle(a, b)
        assert seen == [imported] and imported.exception() == RemoteError("OutOfStock", "gone")


def test_listening_on_an_object_that_is_not_a_promise_settles_with_the_object() -> None:
    b = Session(Peer("bob"))
    b.data_to_send()
    feed_frame(b, encode(["start-session", PROTOCOL_VERSION]))
    # listen on b's bootstrap, with the peer's resolver at its export position 1
    feed_frame(b, encode(["listen", Desc(EXT_EXPORT, 0), Desc(EXT_IMPORT_OBJECT, 1), False]))
    replies = [decode(f) for f in b.data_to_send()]
    assert ["deliver-only", Desc(EXT_EXPORT, 1), "fulfill", [Desc(EXT_IMPORT_OBJECT, 0)]] in replies
    assert b.aborted is None


# ---------------------------------------------------------------------------
# deliver-only


def test_deliver_only_runs_the_method_and_leaves_no_answer_behind() -> None:
    bob = Peer("bob")
    a, b = sans_io_pair(None, bob)
    before_a, before_b = tables(a), tables(b)
    assert E.send_only(a.bootstrap()).note("hello") is None
    assert transfer(a, b) == ["deliver-only"]
    assert bob.inbox.receive_nowait() == "hello"
    assert transfer(b, a) == []  # no answer comes back
    assert tables(a) == before_a and tables(b) == before_b


def test_a_failing_deliver_only_call_does_not_break_the_session() -> None:
    bob = Peer("bob")
    a, b = sans_io_pair(None, bob)
    peer = a.bootstrap()
    E.send_only(peer).fail("sold out")
    E.send_only(peer).fly()
    E.send_only(peer)._secret()
    assert transfer(a, b) == ["deliver-only"] * 3
    assert transfer(b, a) == []  # no break, no abort
    greeting = E(peer).greet("you")
    settle(a, b)
    assert greeting.result() == "bob greets you"
    assert a.aborted is None and b.aborted is None and bob.secret_calls == 0


# ---------------------------------------------------------------------------
# abort


async def test_abort_breaks_every_pending_promise_on_both_sides_with_the_reason() -> None:
    alice, bob = Peer("alice"), Peer("bob")
    async with open_memory_pair(alice, bob) as (a, b):
        a_asks = E(a.bootstrap()).wait_forever()  # a question pending on a, a slow method on b
        b_asks = E(b.bootstrap()).wait_forever()  # and the other way
        promise, _resolver = make_promise_kit()
        await E(a.bootstrap()).keep(promise)  # b holds a promise that only a can settle
        [b_holds] = bob.kept
        await alice.started.wait()
        await bob.started.wait()

        a.close("closed: bye")
        ended_b = await b.wait_closed()

        mine = await raises_aborted(a_asks)
        assert (mine.code, mine.detail, mine.reason, mine.by_peer) == ("closed", "bye", "closed: bye", False)
        for pending in (b_asks, b_holds):
            theirs = await raises_aborted(pending)
            assert (theirs.code, theirs.reason, theirs.by_peer) == ("closed", "closed: bye", True)
        assert (ended_b.reason, ended_b.by_peer) == ("closed: bye", True)
        # after the abort, new calls break at once with the same reason
        assert (await raises_aborted(E(a.bootstrap()).greet("x"))).reason == "closed: bye"
        assert (await raises_aborted(E(b.bootstrap()).greet("x"))).by_peer is True


def test_after_an_abort_a_session_ignores_further_input() -> None:
    a, b = sans_io_pair(None, Peer("bob"))
    b.abort("closed: done")
    transfer(b, a)
    assert a.aborted is not None and a.aborted.by_peer and a.aborted.reason == "closed: done"
    frames_in = a.stats()["frames_in"]
    feed_frame(a, b"not even msgpack \xc1")
    assert a.data_to_send() == [] and a.stats()["frames_in"] == frames_in


def test_on_terminate_runs_once_the_moment_a_session_ends_before_its_broken_promises_react() -> None:
    """The daemon detaches what lived on a dead worker here, so no caller can get it in between."""
    for end in ("abort", "peer-abort", "lost"):
        a, b = sans_io_pair(None, Peer("bob"))
        answer = E(a.bootstrap()).greet("x")
        seen: list[str] = []
        answer.when_settled(lambda p, seen=seen: seen.append("reaction"))
        a.on_terminate = partial(lambda seen, reason: seen.append(reason.code), seen)
        if end == "abort":
            a.abort("closed: bye")
        elif end == "peer-abort":
            b.abort("closed: bye")
            transfer(b, a)
        else:
            a.connection_lost("eof")
        code = "disconnected" if end == "lost" else "closed"
        assert seen[:1] == [code], end  # at once, before the broken promise's reaction
        a.abort("closed: again")
        a.connection_lost("again")
        assert seen.count(code) == 1 and len(seen) <= 2, (end, seen)  # once


# ---------------------------------------------------------------------------
# Transports


PEER_SCRIPT = '''\
"""A CapTP peer on its stdin/stdout, serving Service until the session ends."""
from __future__ import annotations

import os
from typing import Any

from ocapd import captp
import trio

from ocapd.captp import E, far, open_stream_connection, stdio_stream

{service}

class ChildService(Service):
    def vanish(self):
        os._exit(0)  # end without a word, as a crashing peer does


async def main():
    async with open_stream_connection(stdio_stream(), ChildService(), name="child") as conn:
        await conn.wait_closed()


trio.run(main)
'''


async def tcp_stream_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    """A client and a server end of one real TCP connection on 127.0.0.1."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    try:
        port = listeners[0].socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listeners[0].accept()
    finally:
        for listener in listeners:
            await listener.aclose()
    return client, server


async def serve_stream(stream: trio.abc.Stream, bootstrap: Any, **kwargs: Any) -> None:
    async with open_stream_connection(stream, bootstrap, name="server", **kwargs) as conn:
        await conn.wait_closed()


@asynccontextmanager
async def connect_to_service(transport: str, tmp_path: Any) -> AsyncIterator[Connection]:
    """A client connection whose peer serves a ``Service`` over ``transport``."""
    if transport == "memory":
        async with open_memory_pair(None, Service()) as (a, _b):
            yield a

    elif transport == "tcp":
        client, server = await tcp_stream_pair()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_stream, server, Service())
            async with open_stream_connection(client, name="client") as conn:
                yield conn

    elif transport == "websocket":

        async def handler(request: Any) -> None:
            ws = await request.accept()
            async with open_websocket_connection(ws, Service(), name="server") as conn:
                await conn.wait_closed()

        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                partial(serve_websocket, handler, "127.0.0.1", 0, None, max_message_size=WS_MAX_MESSAGE)
            )
            url = f"ws://127.0.0.1:{server.port}/"
            async with open_websocket_url(url, max_message_size=WS_MAX_MESSAGE) as ws:
                async with open_websocket_connection(ws, name="client") as conn:
                    yield conn
            nursery.cancel_scope.cancel()

    elif transport == "subprocess":
        async with subprocess_peer(tmp_path) as (conn, _process):
            yield conn

    else:  # pragma: no cover
        raise ValueError(transport)


@asynccontextmanager
async def subprocess_peer(tmp_path: Any) -> AsyncIterator[tuple[Connection, trio.Process]]:
    """A child Python process serving ``Service`` (plus ``vanish``) over its stdin/stdout."""
    script = tmp_path / "captp_peer.py"
    script.write_text(PEER_SCRIPT.format(service=inspect.getsource(Service)))
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdin is not None and process.stdout is not None
        stream = trio.StapledStream(process.stdin, process.stdout)
        async with open_stream_connection(stream, name="parent") as conn:
            yield conn, process
        with trio.fail_after(10):  # a guard against hanging, not a timing assertion
            await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()


async def run_call_scenario(conn: Connection) -> None:
    service = conn.bootstrap()
    assert await E(service).add(2, 3) == 5
    value = {"big": 2**70, "bytes": b"\x00\xff", "tagged": Tagged("point", [1.5, None, True]), "s": "é"}
    assert await E(service).echo(value) == value
    assert await E(service).echo_later("soon") == "soon"
    listener = Listener()
    assert await E(service).call_back(listener, "ping") == "heard ping"
    assert listener.heard == ["ping"]
    assert await E(service).echo(listener) is listener
    assert await E(E(service).echo(listener)).hear("piped") == "heard piped"
    with pytest.raises(RemoteError) as info:
        await E(service).fail("boom")
    assert (info.value.name, info.value.message) == ("ValueError", "boom")
    assert conn.aborted is None


@pytest.mark.parametrize("transport", ["memory", "tcp", "websocket", "subprocess"])
async def test_the_call_scenario_runs_over_every_transport(transport: str, tmp_path: Any) -> None:
    async with connect_to_service(transport, tmp_path) as conn:
        await run_call_scenario(conn)
    assert conn.aborted is not None and conn.aborted.code == "closed"


async def test_a_subprocess_peer_exits_cleanly_when_the_session_is_closed(tmp_path: Any) -> None:
    async with subprocess_peer(tmp_path) as (conn, process):
        assert await E(conn.bootstrap()).add(1, 2) == 3
    assert process.returncode == 0


@pytest.mark.parametrize("transport", ["memory", "tcp"])
async def test_the_peer_closing_the_transport_breaks_pending_promises_as_disconnected(transport: str) -> None:
    if transport == "memory":
        ours, raw_peer = memory_transport_pair()
    else:
        client, server = await tcp_stream_pair()
        ours, raw_peer = FramedStream(client), FramedStream(server)
    async with open_connection(ours, name="a") as conn:
        pending = E(conn.bootstrap()).anything()
        assert ops([await raw_peer.receive_frame(), await raw_peer.receive_frame()]) == [
            "start-session",
            "deliver",
        ]
        await raw_peer.aclose()  # no abort frame: the transport just ends
        assert (await raises_aborted(pending)).code == "disconnected"
        assert (await conn.wait_closed()).code == "disconnected"


async def test_a_subprocess_peer_that_dies_breaks_pending_promises_as_disconnected(tmp_path: Any) -> None:
    async with subprocess_peer(tmp_path) as (conn, process):
        peer = conn.bootstrap()
        pending = E(peer).hang()
        E.send_only(peer).vanish()
        aborted = await raises_aborted(pending)
        assert (aborted.code, aborted.by_peer) == ("disconnected", False)
        await process.wait()


async def test_an_oversized_frame_aborts_only_that_session_with_frame_too_large() -> None:
    limits = Limits(max_frame_size=4096)
    servers: dict[str, Connection] = {}

    async def serve(stream: trio.abc.Stream, name: str) -> None:
        async with open_stream_connection(stream, Service(), name=name, limits=limits) as conn:
            servers[name] = conn
            await conn.wait_closed()

    big_client, big_server = await tcp_stream_pair()
    small_client, small_server = await tcp_stream_pair()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, big_server, "big")
        nursery.start_soon(serve, small_server, "small")
        async with open_stream_connection(big_client, name="big") as big, open_stream_connection(
            small_client, name="small"
        ) as small:
            assert await E(big.bootstrap()).echo(b"x" * 1000) == b"x" * 1000  # under the limit
            aborted = await raises_aborted(E(big.bootstrap()).echo(b"x" * 10_000))
            assert (aborted.code, aborted.by_peer) == ("frame-too-large", True)
            assert await E(small.bootstrap()).add(1, 2) == 3
            assert small.aborted is None
        assert servers["big"].aborted is not None
        assert (servers["big"].aborted.code, servers["big"].aborted.by_peer) == ("frame-too-large", False)


def test_a_frame_over_the_limit_aborts_a_sans_io_session_with_frame_too_large() -> None:
    b = Session(limits=Limits(max_frame_size=64))
    b.data_to_send()
    feed_frame(b, encode(["start-session", PROTOCOL_VERSION]))
    feed_frame(b, encode(["deliver-only", Desc(EXT_EXPORT, 0), "m", ["x" * 100]]))
    assert b.aborted is not None and b.aborted.code == "frame-too-large"
    assert [decode(f)[0] for f in b.data_to_send()] == ["abort"]


async def test_a_framed_stream_prefixes_each_frame_with_its_big_endian_length() -> None:
    left, right = trio.testing.memory_stream_pair()
    await FramedStream(left).send_frames([b"abc", b""])
    assert await right.receive_some(100) == b"\x00\x00\x00\x03abc\x00\x00\x00\x00"
    framed = FramedStream(right)
    await left.send_all(b"\x00\x00\x00\x02hi")
    assert await framed.receive_frame() == b"hi"


async def test_cancelling_the_connection_block_ends_it_without_waiting_out_the_flush_timeout(autojump_clock) -> None:
    from ocapd.captp.connection import CLOSE_FLUSH_TIMEOUT

    start = trio.current_time()
    with trio.move_on_after(0.05):
        async with open_memory_pair(captp.Far("A", x=lambda: 1), captp.Far("B", x=lambda: 2)) as (a, b):
            assert await E(a.bootstrap()).x() == 2
            await trio.sleep(3600)
    # Virtual time (autojump clock): waiting for the flush timeout would show as a full second.
    assert trio.current_time() - start < CLOSE_FLUSH_TIMEOUT
    assert a.aborted is not None and b.aborted is not None


# -- writing without a task switch (FramedStream.send_frames_nowait) -----------------------


def _pipe_streams() -> tuple[trio.lowlevel.FdStream, trio.lowlevel.FdStream]:
    r, w = os.pipe()
    return trio.lowlevel.FdStream(r), trio.lowlevel.FdStream(w)


async def test_frames_a_full_pipe_could_not_take_go_first_and_in_order() -> None:
    reader_fd, writer_fd = _pipe_streams()
    sender, receiver = FramedStream(writer_fd), FramedStream(reader_fd)
    frames = [bytes([i % 251]) * 10_000 for i in range(40)]  # 400 KB: far more than a pipe buffer
    taken = [sender.send_frames_nowait([frame]) for frame in frames[:30]]
    assert taken[0] and not all(taken)  # the pipe filled up and the rest waits
    assert sender.pending
    got: list[bytes] = []

    async def read_all() -> None:
        while len(got) < len(frames):
            got.extend(await receiver.receive_frames())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read_all)
        await sender.send_frames(frames[30:35])  # the kept bytes go out before these
        assert not sender.pending
        assert sender.send_frames_nowait(frames[35:]) or sender.pending
        if sender.pending:
            await sender.send_frames([])
    assert got == frames
    await sender.aclose()
    await receiver.aclose()


async def test_a_closed_stream_never_writes_to_a_file_that_reused_its_number() -> None:
    reader_fd, writer_fd = _pipe_streams()
    sender = FramedStream(writer_fd)
    number = writer_fd.fileno()
    await sender.aclose()
    await reader_fd.aclose()
    r, w = os.pipe()  # the lowest free numbers: the closed ones come back
    try:
        assert number in (r, w)
        assert not sender.send_frames_nowait([b"stray"])
        os.set_blocking(r, False)
        with pytest.raises(BlockingIOError):
            os.read(r, 100)  # nothing arrived in the new pipe
        with pytest.raises(TransportClosed):
            await sender.send_frames([])
    finally:
        os.close(r)
        os.close(w)


async def test_a_burst_of_calls_over_a_pipe_arrives_whole_and_in_order(tmp_path: Any) -> None:
    # Each call is written from the caller's own step while the pipe has room,
    # and through the pump once it is full: none lost, none reordered.
    async with subprocess_peer(tmp_path) as (conn, _process):
        service = conn.bootstrap()
        payload = b"z" * 20_000
        answers = [E(service).echo([i, payload]) for i in range(300)]
        for i, answer in enumerate(answers):
            assert await answer == [i, payload]
        assert conn.aborted is None
