"""OCapN nodes talking to each other over tcp-testing-only on 127.0.0.1 (captp/ocapn_node.py).

Real sockets, real sessions, real signatures: two nodes call each other;
three make a third-party handoff and the receiver ends up talking to the
exporter directly; and hostile input — a forged or replayed handoff, a
handoff presented on another session, bytes that are not Syrup, random and
mutated messages — ends that session or that call only, while the node keeps
serving everyone else.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocapd.captp import E, Far, RemoteError, Symbol, make_promise_kit
from ocapd.captp.messages import Deliver, DescKind, Descriptor
from ocapd.captp.ocapn_keys import MAX_GIFT_ID, make_handoff_give, make_handoff_receive
from ocapd.captp.ocapn_locators import PeerLocator, SturdyRef
from ocapd.captp.ocapn_netlayers import PeerConnection, TcpTestingOnlyNetlayer
from ocapd.captp.ocapn_node import R_TOO_MANY_FAILED_FETCHES, R_TOO_MANY_SESSIONS, FailedFetches, OcapnNode
from ocapd.captp.ocapn_profile import OcapnProfile
from ocapd.captp.ocapn_test_peer import SWISS_NUMBERS, make_objects
from ocapd.captp.session import Limits, Session, SessionAborted
from ocapd.captp.syrup import Record, decode, encode

ECHO = SWISS_NUMBERS["echo"]
CARS = SWISS_NUMBERS["car_factory_builder"]


@asynccontextmanager
async def running_node(nursery: trio.Nursery, objects: bool = True) -> AsyncIterator[OcapnNode]:
    """A node serving on a free loopback port, dialing through tcp-testing-only."""
    netlayer = TcpTestingOnlyNetlayer()
    box: list[OcapnNode] = []

    async def handle(connection: PeerConnection) -> None:
        await box[0].serve_connection(connection)

    async def dial(location: PeerLocator) -> PeerConnection:
        return await netlayer.connect(location)

    async with trio.open_nursery() as inner:
        location = await inner.start(netlayer.serve, handle, "127.0.0.1", 0)
        node = OcapnNode(location, dial)
        if objects:
            node.swiss.update(make_objects(node))
        await inner.start(node.run)
        box.append(node)
        yield node
        inner.cancel_scope.cancel()


async def test_two_nodes_fetch_and_pipeline_calls_over_tcp(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as a, running_node(nursery) as b:
        builder = b.enliven(SturdyRef(a.location, CARS))
        car = E(E(builder)())([Symbol("red"), Symbol("zoomracer")])
        assert await E(car)() == "Vroom! I am a red zoomracer car!"
        echo = await b.enliven(SturdyRef(a.location, ECHO))
        assert await E(echo)("x", 1, None, [b"y"], {"k": Symbol("v")}) == ["x", 1, None, [b"y"], {"k": Symbol("v")}]


async def test_fetch_with_an_unknown_swiss_number_breaks_the_promise_only(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as a, running_node(nursery) as b:
        with pytest.raises(RemoteError):
            await b.enliven(SturdyRef(a.location, b"no such object"))
        assert await E(await b.enliven(SturdyRef(a.location, ECHO)))(1) == [1]


async def test_a_three_party_handoff_connects_the_receiver_to_the_exporter(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        echo_at_gifter = await gifter.enliven(SturdyRef(exporter.location, ECHO))
        gifter.swiss[b"introducer"] = Far("Introducer", lambda: echo_at_gifter)
        introducer = await receiver.enliven(SturdyRef(gifter.location, b"introducer"))
        echo = await E(introducer)()
        assert await E(echo)("direct") == ["direct"]
        # The receiver holds the echo through its own session with the exporter.
        assert echo._session is not introducer._session
        direct = [p for p in receiver._peers if p.location() is not None and p.location().same_peer(exporter.location)]
        assert direct and echo._session is direct[0].session


async def _exporter_and_handoff(nursery: trio.Nursery, exporter: OcapnNode, gifter: OcapnNode, receiver: OcapnNode) -> Any:
    """The gifter's session with the exporter and the receiver's: both started; the gift deposited."""
    echo_at_gifter = await gifter.enliven(SturdyRef(exporter.location, ECHO))
    gifter_session = echo_at_gifter._session
    receiver_session = await receiver.session_for(exporter.location)
    return echo_at_gifter, gifter_session, receiver_session


def _profile_of(node: OcapnNode, session: Session) -> OcapnProfile:
    return node._by_session[id(session)].profile


async def test_a_replayed_or_misdirected_handoff_is_refused_and_the_session_goes_on(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        echo_at_gifter, g2e, r2e = await _exporter_and_handoff(nursery, exporter, gifter, receiver)
        g_profile, r_profile = _profile_of(gifter, g2e), _profile_of(receiver, r2e)
        assert g_profile.peer is not None and r_profile.peer is not None
        receiver_key = OcapnProfile(receiver.location).key  # the receiver's key with the gifter, made up here

        def give(gift_id: bytes) -> Record:
            E.send_only(g2e.bootstrap()).deposit_gift(gift_id, echo_at_gifter)
            return make_handoff_give(
                g_profile.key,
                receiver_key=receiver_key.public_key(),
                exporter_location=exporter.location,
                session=g_profile.peer.session_id,
                gifter_side=g_profile.peer.our_side,
                gift_id=gift_id,
            )

        def receive(signed_give: Record, count: int, session_id: bytes | None = None) -> Record:
            return make_handoff_receive(
                receiver_key,
                signed_give,
                receiving_session=r_profile.peer.session_id if session_id is None else session_id,
                receiving_side=r_profile.peer.our_side,
                handoff_count=count,
            )

        first = give(b"gift-1")
        echo = await E(r2e.bootstrap()).withdraw_gift(receive(first, 0))
        assert await E(echo)("ok") == ["ok"]
        # The same count again, for a fresh gift: a replay.
        with pytest.raises(RemoteError, match="count 0"):
            await E(r2e.bootstrap()).withdraw_gift(receive(give(b"gift-2"), 0))
        # A receive signed for another session (the gifter's own).
        with pytest.raises(RemoteError, match="another session"):
            await E(r2e.bootstrap()).withdraw_gift(receive(give(b"gift-3"), 1, g_profile.peer.session_id))
        # A give signed by someone else than the gifter.
        forged = make_handoff_give(
            OcapnProfile(gifter.location).key,
            receiver_key=receiver_key.public_key(),
            exporter_location=exporter.location,
            session=g_profile.peer.session_id,
            gifter_side=g_profile.peer.our_side,
            gift_id=b"gift-4",
        )
        with pytest.raises(RemoteError):
            await E(r2e.bootstrap()).withdraw_gift(receive(forged, 2))
        assert r2e.aborted is None
        assert await E(r2e.bootstrap()).fetch(ECHO) is not None


async def _raw_session(node: OcapnNode) -> tuple[trio.SocketStream, OcapnProfile]:
    """A hand-driven client: a TCP stream to ``node`` on which our start-session has been sent."""
    stream = await trio.open_tcp_stream("127.0.0.1", int(node.location.hints["port"]))
    client = OcapnProfile(PeerLocator("hand-driven", "tcp-testing-only"))
    await stream.send_all(client.encode_message(client.start_session(), _no_refs, Limits()))
    return stream, client


def _no_refs(obj: object) -> Descriptor:
    raise TypeError(obj)


async def _read_until_closed(stream: trio.SocketStream) -> bytes:
    received = b""
    with trio.fail_after(10):
        while chunk := await stream.receive_some(65536):
            received += chunk
    return received


@pytest.mark.parametrize(
    "garbage",
    [
        b"]",  # not Syrup
        b"<5'hello>",  # not an op
        b"<10'op:deliver<11'desc:export9+>[]f<18'desc:import-object0+>>",  # an export never given
        b"<10'op:deliver<11'desc:export0+>[#1+$]f<18'desc:import-object0+>>",  # a set is not passable
        b"<12'op:gc-export[0+][5+]>",  # gc of more than was sent
        b"<6'op:get<11'desc:export0+>3+1+>",  # a field name that is not a string
        b"<8'op:index<11'desc:export0+>0+>",  # no answer position
    ],
)
async def test_bad_input_aborts_that_session_only(nursery: trio.Nursery, garbage: bytes) -> None:
    async with running_node(nursery) as a, running_node(nursery) as b:
        echo = await b.enliven(SturdyRef(a.location, ECHO))
        stream, _ = await _raw_session(a)
        await stream.send_all(garbage)
        received = await _read_until_closed(stream)
        assert b"<8'op:abort" in received
        assert await E(echo)("still here") == ["still here"]


async def test_calls_before_start_session_are_refused(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as a:
        stream = await trio.open_tcp_stream("127.0.0.1", int(a.location.hints["port"]))
        await stream.send_all(b"<10'op:deliver<11'desc:export0+>[5'fetch32:" + ECHO + b"]f<18'desc:import-object0+>>")
        received = await _read_until_closed(stream)
        assert b"<8'op:abort" in received and b"fetch" not in received.split(b"<8'op:abort")[1]


# -- the sans-IO session with the OCapN profile: any frame, a message or a clean abort ------------

_LABELS = [Symbol(n) for n in ("op:deliver", "op:deliver-only", "op:listen", "op:gc-export", "op:gc-answer", "op:abort",
                               "op:get", "op:index", "op:untag",
                               "op:start-session", "desc:export", "desc:answer", "desc:import-object",
                               "desc:import-promise", "desc:tagged", "desc:error", "desc:sig-envelope", "null")]
_atoms = st.one_of(st.booleans(), st.integers(-2, 2**53), st.text(max_size=4), st.binary(max_size=4), st.sampled_from(_LABELS + [Symbol("fetch")]))
_values = st.recursive(
    _atoms,
    lambda kids: st.one_of(st.lists(kids, max_size=4), st.builds(Record, st.sampled_from(_LABELS), st.lists(kids, max_size=4))),
    max_leaves=10,
)


def _started_pair() -> tuple[Session, OcapnProfile]:
    """A session (serving the suite's echo as its bootstrap) that has seen a valid start-session."""
    session = Session(Far("Echo", lambda *a: list(a)), profile=OcapnProfile(PeerLocator("me", "tcp-testing-only")))
    client = OcapnProfile(PeerLocator("you", "tcp-testing-only"))
    session.receive_frame(client.encode_message(client.start_session(), _no_refs, Limits()))
    session.data_to_send()
    return session, client


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, min_size=1, max_size=4))
def test_any_sequence_of_records_leaves_the_session_running_or_cleanly_aborted(records: list[object]) -> None:
    session, _ = _started_pair()
    for record in records:
        try:
            frame = encode(record)
        except TypeError:
            continue
        session.receive_frame(frame)  # never raises
    for frame in session.data_to_send():
        decode(frame)  # what it sends is Syrup
    if session.aborted is not None:
        assert session.aborted.code in {
            "malformed-frame", "unknown-op", "bad-arity", "bad-field", "unknown-position",
            "position-in-use", "not-started", "too-many-elements", "too-many-descriptors", "limit-exceeded",
        } or session.aborted.by_peer


@settings(max_examples=2000, deadline=None)
@given(st.binary(min_size=1, max_size=40), st.integers(0, 80))
def test_mutated_frames_leave_the_session_running_or_cleanly_aborted(noise: bytes, at: int) -> None:
    session, client = _started_pair()
    frame = bytearray(client.encode_message(Deliver(Descriptor(DescKind.EXPORT, 0), None, ["hi", Symbol("x")], 0, object()),
                                            lambda o: Descriptor(DescKind.IMPORT_OBJECT, 1), Limits()))
    frame[at : at + len(noise)] = noise
    session.receive_frame(bytes(frame))
    for out in session.data_to_send():
        decode(out)


async def test_crossed_hellos_leave_one_session_per_pair_of_nodes(nursery: trio.Nursery) -> None:
    """Both nodes dial each other at once, 100 times: each time both keep the same one session."""
    for _ in range(100):
        async with running_node(nursery) as a, running_node(nursery) as b:
            sessions: dict[str, Session] = {}

            async def dial(me: OcapnNode, other: OcapnNode, key: str, into: dict[str, Session]) -> None:
                into[key] = await me.session_for(other.location)

            async with trio.open_nursery() as both:
                both.start_soon(dial, a, b, "a", sessions)
                both.start_soon(dial, b, a, "b", sessions)
            a_profile, b_profile = _profile_of(a, sessions["a"]), _profile_of(b, sessions["b"])
            assert a_profile.peer is not None and b_profile.peer is not None
            assert a_profile.peer.session_id == b_profile.peer.session_id
            await trio.testing.wait_all_tasks_blocked()
            live_a = [p for p in a._peers if p.started.is_set() and not p.ended.is_set() and p.session and not p.session.aborted]
            live_b = [p for p in b._peers if p.started.is_set() and not p.ended.is_set() and p.session and not p.session.aborted]
            assert len(live_a) == len(live_b) == 1


async def test_gifts_nobody_withdraws_are_bounded_and_go_with_their_session(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ocapd.captp.ocapn_node.MAX_PENDING_GIFTS", 2)
    async with running_node(nursery) as exporter, running_node(nursery) as gifter:
        echo = await gifter.enliven(SturdyRef(exporter.location, ECHO))
        bootstrap = echo._session.bootstrap()
        await E(bootstrap).deposit_gift(b"one", echo)
        await E(bootstrap).deposit_gift(b"two", echo)
        with pytest.raises(RemoteError, match="more than 2 gifts"):
            await E(bootstrap).deposit_gift(b"three", echo)
        assert len(exporter._gifts) == 2
        echo._session.abort()
        with trio.fail_after(10):
            while exporter._gifts:
                await trio.sleep(0.01)


async def test_a_dialed_peer_that_signs_another_location_is_refused(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as a, running_node(nursery) as b:
        elsewhere = PeerLocator("someone-else", "tcp-testing-only", dict(a.location.hints))
        with pytest.raises(RemoteError, match="ConnectionError"):
            await b.enliven(SturdyRef(elsewhere, ECHO))
        assert await E(await b.enliven(SturdyRef(a.location, ECHO)))(1) == [1]


async def test_a_peer_claiming_another_designator_than_the_netlayer_verified_is_refused(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as a:
        ours, theirs = trio.testing.memory_stream_pair()
        nursery.start_soon(lambda: a.serve_stream(ours, peer_designator="alice"))
        mallory = OcapnProfile(PeerLocator("mallory", "tcp-testing-only"))
        await theirs.send_all(mallory.encode_message(mallory.start_session(), _no_refs, Limits()))
        received = b""
        with trio.fail_after(10):
            while b"<8'op:abort" not in received:
                received += await theirs.receive_some(65536)
        assert b"netlayer authenticated" in received


async def test_a_handoff_give_for_another_receiver_breaks_only_that_argument(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        echo_at_gifter = await gifter.enliven(SturdyRef(exporter.location, ECHO))
        g_profile = _profile_of(gifter, echo_at_gifter._session)
        assert g_profile.peer is not None
        echo_at_receiver = await gifter.enliven(SturdyRef(receiver.location, ECHO))
        stray = make_handoff_give(
            g_profile.key,
            receiver_key=OcapnProfile(receiver.location).key.public_key(),  # not the receiver's key with us
            exporter_location=exporter.location,
            session=g_profile.peer.session_id,
            gifter_side=g_profile.peer.our_side,
            gift_id=b"not for you",
        )
        (gift,) = await E(echo_at_receiver)(stray)
        with pytest.raises(RemoteError, match="another receiver"):
            await gift
        assert await E(echo_at_receiver)("still here") == ["still here"]
        assert not any(p.location() is not None and p.location().same_peer(exporter.location) for p in receiver._peers)


@pytest.mark.parametrize("gift_id", [7, 0, MAX_GIFT_ID, b"my-gift"])
async def test_a_gift_deposited_under_an_integer_id_as_the_spec_says_or_bytes_as_the_suite_sends_is_withdrawn(
    nursery: trio.Nursery, gift_id: bytes | int
) -> None:
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        echo_at_gifter, g2e, r2e = await _exporter_and_handoff(nursery, exporter, gifter, receiver)
        g_profile, r_profile = _profile_of(gifter, g2e), _profile_of(receiver, r2e)
        assert g_profile.peer is not None and r_profile.peer is not None
        receiver_key = OcapnProfile(receiver.location).key
        await E(g2e.bootstrap()).deposit_gift(gift_id, echo_at_gifter)
        signed_give = make_handoff_give(
            g_profile.key,
            receiver_key=receiver_key.public_key(),
            exporter_location=exporter.location,
            session=g_profile.peer.session_id,
            gifter_side=g_profile.peer.our_side,
            gift_id=gift_id,
        )
        signed_receive = make_handoff_receive(
            receiver_key, signed_give, receiving_session=r_profile.peer.session_id,
            receiving_side=r_profile.peer.our_side, handoff_count=0,
        )
        echo = await E(r2e.bootstrap()).withdraw_gift(signed_receive)
        assert await E(echo)("given") == ["given"]


@pytest.mark.parametrize("gift_id", [-1, MAX_GIFT_ID + 1, 2**4000, b"", b"g" * 257, True, "my-gift", 1.5, Symbol("g"), None])
async def test_a_deposit_under_a_gift_id_of_another_kind_breaks_and_the_session_goes_on(
    nursery: trio.Nursery, gift_id: object
) -> None:
    async with running_node(nursery) as exporter, running_node(nursery) as gifter:
        echo = await gifter.enliven(SturdyRef(exporter.location, ECHO))
        with pytest.raises(RemoteError, match="gift id"):
            await E(echo._session.bootstrap()).deposit_gift(gift_id, echo)
        assert not exporter._gifts
        assert await E(echo)("still here") == ["still here"]


# -- promises passed from one session to another -----------------------------------------------


def _sessions_to(node: OcapnNode, other: OcapnNode) -> list[Session]:
    return [p.session for p in node._peers
            if p.session is not None and p.location() is not None and p.location().same_peer(other.location)]


async def test_a_promise_the_exporter_exported_is_handed_off_and_settles_at_the_receiver_directly(nursery: trio.Nursery) -> None:
    """A promise is a reference (OCapN's Model): passed on, it is handed off like an object."""
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        promise, resolver = make_promise_kit()
        exporter.swiss[b"giver"] = Far("Giver", lambda: [promise])
        (at_gifter,) = await E(await gifter.enliven(SturdyRef(exporter.location, b"giver")))()
        gifter.swiss[b"introducer"] = Far("Introducer", lambda: [at_gifter])
        (at_receiver,) = await E(await receiver.enliven(SturdyRef(gifter.location, b"introducer")))()
        with trio.fail_after(10):
            while not _sessions_to(receiver, exporter):
                await trio.sleep(0.01)
        # The gifter's part is over: its session with the exporter may end.
        for session in _sessions_to(gifter, exporter):
            session.abort()
        resolver.resolve({"done": True})
        with trio.fail_after(10):
            assert await at_receiver == {"done": True}


async def test_an_answer_passed_on_is_forwarded_through_the_gifter(nursery: trio.Nursery) -> None:
    """The answer to the gifter's own call is not handed off: the gifter forwards how it settles."""
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        later, resolve_later = make_promise_kit()
        exporter.swiss[b"later"] = Far("Later", lambda: later)
        at_exporter = await gifter.enliven(SturdyRef(exporter.location, b"later"))
        answers = [E(at_exporter)(), E(at_exporter)()]
        gifter.swiss[b"introducer"] = Far("Introducer", lambda i: [answers[i]])
        introducer = await receiver.enliven(SturdyRef(gifter.location, b"introducer"))
        (first,) = await E(introducer)(0)
        assert not _sessions_to(receiver, exporter)  # nothing was handed off
        resolve_later.resolve("settled at the exporter")
        with trio.fail_after(10):
            assert await first == "settled at the exporter"
        # A second answer, pending while the gifter's session with the exporter dies, breaks at the receiver.
        pending, _ = make_promise_kit()
        exporter.swiss[b"later"] = Far("Later", lambda: pending)
        at_exporter_2 = await gifter.enliven(SturdyRef(exporter.location, b"later"))
        answers[1] = E(at_exporter_2)()
        (second,) = await E(introducer)(1)
        for session in _sessions_to(gifter, exporter):
            session.abort()
        with trio.fail_after(10), pytest.raises(RemoteError, match="closed"):
            await second
        assert await E(introducer)(0) is not None  # the receiver's session with the gifter goes on


@asynccontextmanager
async def tls_node(
    claimed_designator: str | None = None, *, by_address: bool = False, **limits: Any
) -> AsyncIterator[tuple[OcapnNode, str]]:
    """A node on the tls-ed25519 netlayer and the designator its key proves.

    ``claimed_designator``: the designator its start-session claims instead.
    ``by_address``: the node hears where each peer connects from (as a
    daemon's does), not only who it is. ``limits``: the node's own.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ocapd.captp.ocapn_tls import TlsNetlayer

    netlayer = TlsNetlayer(Ed25519PrivateKey.generate())
    box: list[OcapnNode] = []

    async def handle(connection: PeerConnection) -> None:
        if by_address:
            await box[0].serve_connection(connection)
        else:
            await box[0].serve_stream(connection.stream, peer_designator=connection.peer_designator)

    async with trio.open_nursery() as inner:
        location = await inner.start(netlayer.serve, handle, "127.0.0.1", 0)
        claimed = location if claimed_designator is None else PeerLocator(claimed_designator, location.transport, location.hints)
        node = OcapnNode(claimed, netlayer.connect, **limits)
        node.swiss.update(make_objects(node))
        await inner.start(node.run)
        box.append(node)
        yield node, netlayer.designator
        inner.cancel_scope.cancel()


async def test_a_peer_claiming_a_designator_its_netlayer_did_not_authenticate_is_refused() -> None:
    async with tls_node() as (a, _), tls_node() as (b, _):
        async with tls_node(claimed_designator=b.location.designator) as (impostor, proven):
            # Dialing out: the netlayer proved the impostor's own key, not b's.
            with pytest.raises((RemoteError, ConnectionError)):
                await impostor.enliven(SturdyRef(a.location, ECHO))
            # Dialed: a asks for the impostor's key and hears b's designator.
            real = PeerLocator(proven, a.location.transport, impostor.location.hints)
            with pytest.raises((RemoteError, ConnectionError)):
                await a.enliven(SturdyRef(real, ECHO))
        # The honest peer b is served as before, and a has no session claiming to be b.
        assert await E(await b.enliven(SturdyRef(a.location, ECHO)))(1) == [1]
        assert [s["designator"] for s in a.sessions()] == [b.location.designator]


# -- withdrawals that can never be served -------------------------------------------------------


def _gives_and_receives(gifter: OcapnNode, g2e: Session, receiver: OcapnNode, r2e: Session, exporter: OcapnNode) -> tuple[Any, Any]:
    """Makers of gives signed in the gifter's session and receives signed in the receiver's."""
    g_profile, r_profile = _profile_of(gifter, g2e), _profile_of(receiver, r2e)
    assert g_profile.peer is not None and r_profile.peer is not None
    g_peer, r_peer = g_profile.peer, r_profile.peer
    receiver_key = OcapnProfile(receiver.location).key

    def give(gift_id: bytes) -> Record:
        return make_handoff_give(
            g_profile.key, receiver_key=receiver_key.public_key(), exporter_location=exporter.location,
            session=g_peer.session_id, gifter_side=g_peer.our_side, gift_id=gift_id,
        )

    def receive(signed_give: Record, count: int) -> Record:
        return make_handoff_receive(
            receiver_key, signed_give, receiving_session=r_peer.session_id,
            receiving_side=r_peer.our_side, handoff_count=count,
        )

    return give, receive


async def test_a_withdrawal_waiting_for_a_gift_breaks_when_the_gifters_session_ends(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        _, g2e, r2e = await _exporter_and_handoff(nursery, exporter, gifter, receiver)
        give, receive = _gives_and_receives(gifter, g2e, receiver, r2e, exporter)
        # The withdrawal arrives before the deposit (a legitimate race): it waits.
        waiting = E(r2e.bootstrap()).withdraw_gift(receive(give(b"never deposited"), 0))
        with trio.fail_after(10):
            while not exporter._waiting:
                await trio.sleep(0.01)
        # The gifter's session ends: the gift can never come.
        g2e.abort()
        with trio.fail_after(10), pytest.raises(RemoteError, match="gifter's session ended"):
            await waiting
        assert not exporter._waiting
        assert r2e.aborted is None
        assert await E(r2e.bootstrap()).fetch(ECHO) is not None


async def test_a_withdrawal_after_the_gifters_session_ended_breaks_at_once(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        echo_at_gifter, g2e, r2e = await _exporter_and_handoff(nursery, exporter, gifter, receiver)
        give, receive = _gives_and_receives(gifter, g2e, receiver, r2e, exporter)
        await E(g2e.bootstrap()).deposit_gift(b"deposited", echo_at_gifter)
        signed_give = give(b"deposited")
        g2e.abort()
        with trio.fail_after(10):
            while exporter._gifts:
                await trio.sleep(0.01)
        with trio.fail_after(10), pytest.raises(RemoteError, match="HandoffError"):
            await E(r2e.bootstrap()).withdraw_gift(receive(signed_give, 0))
        assert not exporter._waiting


async def test_a_withdrawal_waiting_longer_than_the_bound_breaks(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ocapd.captp.ocapn_node.GIFT_WAIT_TIMEOUT", 0.05)
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        _, g2e, r2e = await _exporter_and_handoff(nursery, exporter, gifter, receiver)
        give, receive = _gives_and_receives(gifter, g2e, receiver, r2e, exporter)
        with trio.fail_after(10), pytest.raises(RemoteError, match="no gift was deposited"):
            await E(r2e.bootstrap()).withdraw_gift(receive(give(b"late"), 0))
        assert not exporter._waiting
        assert g2e.aborted is None and r2e.aborted is None


async def test_waiting_withdrawals_are_bounded_per_session_even_for_one_gift(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ocapd.captp.ocapn_node.MAX_PENDING_GIFTS", 2)
    async with running_node(nursery) as exporter, running_node(nursery) as gifter, running_node(nursery) as receiver:
        echo_at_gifter, g2e, r2e = await _exporter_and_handoff(nursery, exporter, gifter, receiver)
        give, receive = _gives_and_receives(gifter, g2e, receiver, r2e, exporter)
        same = give(b"one gift")
        first = E(r2e.bootstrap()).withdraw_gift(receive(same, 0))
        second = E(r2e.bootstrap()).withdraw_gift(receive(same, 1))
        with trio.fail_after(10), pytest.raises(RemoteError, match="more than 2 withdrawals"):
            await E(r2e.bootstrap()).withdraw_gift(receive(same, 2))
        with trio.fail_after(10), pytest.raises(RemoteError, match="more than 2 withdrawals"):
            await E(r2e.bootstrap()).withdraw_gift(receive(give(b"another gift"), 3))
        # The deposit serves the withdrawals that waited; the session goes on.
        await E(g2e.bootstrap()).deposit_gift(b"one gift", echo_at_gifter)
        with trio.fail_after(10):
            assert await E(await first)("a") == ["a"]
            assert await E(await second)("b") == ["b"]
        assert not exporter._waiting


# -- failed fetches ---------------------------------------------------------------------------------


async def test_a_session_that_fails_too_many_fetches_is_aborted_and_others_go_on(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ocapd.captp.ocapn_node.MAX_FAILED_FETCHES", 3)
    monkeypatch.setattr("ocapd.captp.ocapn_node.FAILED_FETCHES_PER_SECOND", 0.0)
    async with running_node(nursery) as a, running_node(nursery) as guesser, running_node(nursery) as honest:
        echo = await honest.enliven(SturdyRef(a.location, ECHO))
        session = await guesser.session_for(a.location)
        bootstrap = session.bootstrap()
        for guess in (b"guess-1", b"guess-2", b"guess-3"):
            with pytest.raises(RemoteError, match="swiss number"):
                await E(bootstrap).fetch(guess)
        # Good fetches cost nothing.
        assert await E(bootstrap).fetch(ECHO) is not None
        assert session.aborted is None
        with trio.fail_after(10), pytest.raises(SessionAborted, match=R_TOO_MANY_FAILED_FETCHES):
            await E(bootstrap).fetch(b"guess-4")
        assert session.aborted is not None and session.aborted.code == R_TOO_MANY_FAILED_FETCHES
        assert session.aborted.by_peer
        # The honest peer's session was not touched.
        assert await E(echo)("still here") == ["still here"]
        assert echo._session.aborted is None


async def test_failed_fetches_are_forgiven_at_a_steady_rate(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("ocapd.captp.ocapn_node.MAX_FAILED_FETCHES", 1)
    monkeypatch.setattr("ocapd.captp.ocapn_node.FAILED_FETCHES_PER_SECOND", 1e12)  # any pause earns one back
    async with running_node(nursery) as a, running_node(nursery) as b:
        session = await b.session_for(a.location)
        for n in range(5):
            with pytest.raises(RemoteError, match="swiss number"):
                await E(session.bootstrap()).fetch(b"typo %d" % n)
        assert session.aborted is None


async def _guess_over_a_new_session(server: OcapnNode, key: Any = None) -> str:
    """Dial ``server`` afresh as the holder of ``key`` (None: a new key) and fetch a wrong swiss number once.

    Returns "refused" (the fetch broke, the session went on) or the abort
    reason of the session.
    """
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ocapd.captp.ocapn_tls import TlsNetlayer

    netlayer = TlsNetlayer(key if key is not None else Ed25519PrivateKey.generate())
    async with trio.open_nursery() as inner:
        client = OcapnNode(PeerLocator(netlayer.designator, "tls-ed25519", {}), netlayer.connect)
        await inner.start(client.run)
        try:
            session = await client.session_for(server.location)
            with trio.fail_after(10):
                await E(session.bootstrap()).fetch(b"a guess")
        except SessionAborted as e:
            return e.code
        except RemoteError as e:
            assert "swiss number" in str(e)
            return "refused"
        finally:
            inner.cancel_scope.cancel()
    raise AssertionError("a wrong swiss number was answered")


async def test_a_guesser_reconnecting_with_its_key_finds_the_allowance_it_left(monkeypatch: pytest.MonkeyPatch) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    # No allowance earned back, so the count does not hang on how fast the machine is.
    async with tls_node(max_failed_fetches=5, failed_fetches_per_second=0.0) as (server, _), tls_node() as (honest, _):
        guesser = Ed25519PrivateKey.generate()
        outcomes = [await _guess_over_a_new_session(server, guesser) for _ in range(100)]
        assert outcomes == ["refused"] * 5 + [R_TOO_MANY_FAILED_FETCHES] * 95
        # The allowance is the guesser's own: another peer still fetches, and fails a fetch as anyone may.
        assert await E(await honest.enliven(SturdyRef(server.location, ECHO)))(1) == [1]
        assert await _guess_over_a_new_session(server) == "refused"


async def test_a_guesser_reconnecting_with_fresh_keys_finds_the_allowance_its_address_left() -> None:
    async with tls_node(by_address=True, max_failed_fetches=5, failed_fetches_per_second=0.0) as (server, _):
        outcomes = [await _guess_over_a_new_session(server) for _ in range(100)]
        assert outcomes == ["refused"] * 5 + [R_TOO_MANY_FAILED_FETCHES] * 95
        # Each fresh key got one guess, and its session ended with it: the address's allowance stays spent.
        assert len(server.failed_fetches) == 1 + 100  # the address and each key (none forgotten yet)
        # The address is over its allowance, yet a peer there with a right swiss number is served.
        async with tls_node() as (neighbour, _):
            assert await E(await neighbour.enliven(SturdyRef(server.location, ECHO)))(1) == [1]


async def test_a_wider_address_group_has_a_scaled_allowance() -> None:
    # An IPv6 /48 is charged for the failed fetches of all its /64s, with twice their allowance.
    budgets = FailedFetches(burst=3, per_second=0.0, capacity=10)
    for n in range(6):
        assert budgets.charge(("address", f"2001:db8:1:{n}::/64")) == 2
        assert budgets.charge(("address", "2001:db8:1::/48"), 2) == 2 * 3 - 1 - n
    assert budgets.charge(("address", "2001:db8:1::/48"), 2) < 0


async def test_failed_fetch_allowances_are_bounded_in_memory_forgetting_the_least_recently_charged() -> None:
    budgets = FailedFetches(burst=2, per_second=0.0, capacity=3)
    for n in range(1000):
        budgets.charge(("designator", f"key {n}"))
        budgets.charge(("address", "192.0.2.7"))
    assert len(budgets) == 3
    # The address charged all along is remembered (and over its allowance); the first keys are not.
    assert budgets.left(("address", "192.0.2.7")) == 2 - 1000
    assert budgets.left(("designator", "key 999")) == 1
    assert budgets.left(("designator", "key 0")) == 2


# -- sessions per peer ---------------------------------------------------------------------------


async def test_a_peer_opening_more_sessions_than_allowed_is_refused_while_others_connect_and_call() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ocapd.captp.ocapn_tls import TlsNetlayer

    key = Ed25519PrivateKey.generate()
    async with tls_node(max_sessions_per_peer=2) as (server, _), tls_node() as (honest, _):
        async with trio.open_nursery() as inner:
            sessions = []
            refused: ConnectionError | None = None
            for _ in range(3):  # one node each, so none reuses another's session
                netlayer = TlsNetlayer(key)
                node = OcapnNode(PeerLocator(netlayer.designator, "tls-ed25519", {}), netlayer.connect)
                await inner.start(node.run)
                try:
                    sessions.append(await node.session_for(server.location))
                    with trio.fail_after(10):
                        assert await E(sessions[-1].bootstrap()).fetch(ECHO) is not None
                except ConnectionError as e:
                    assert R_TOO_MANY_SESSIONS in str(e) and "\n" not in str(e)
                    refused = e
            assert len(sessions) >= 2 and refused is not None
            for session in sessions[2:]:  # started before the abort reached it, if at all
                assert session.aborted is not None and session.aborted.code == R_TOO_MANY_SESSIONS
            # Another peer connects and calls meanwhile.
            assert await E(await honest.enliven(SturdyRef(server.location, ECHO)))(1) == [1]
            # The bound is on sessions at once: once one ends, the peer may open another.
            held = [p for p in server._peers if p.verified_designator == netlayer.designator and p.refused is None]
            sessions[0].abort()
            async with trio.open_nursery() as watch:  # until the server has seen one end

                async def first(event: trio.Event) -> None:
                    await event.wait()
                    watch.cancel_scope.cancel()

                for peer in held:
                    watch.start_soon(first, peer.ended)
            netlayer = TlsNetlayer(key)
            node = OcapnNode(PeerLocator(netlayer.designator, "tls-ed25519", {}), netlayer.connect)
            await inner.start(node.run)
            assert await E(await node.enliven(SturdyRef(server.location, ECHO)))(2) == [2]
            inner.cancel_scope.cancel()


# -- error names ---------------------------------------------------------------------------------


async def test_an_errors_name_survives_ocapn_also_passed_on_through_a_third_node(nursery: trio.Nursery) -> None:
    def refuse() -> None:
        raise PermissionError("not for you")

    async with running_node(nursery) as exporter, running_node(nursery) as relay, running_node(nursery) as caller:
        exporter.swiss[b"refuser"] = Far("Refuser", refuse)
        at_relay = await relay.enliven(SturdyRef(exporter.location, b"refuser"))
        with pytest.raises(RemoteError) as direct:
            await E(at_relay)()
        assert (direct.value.name, direct.value.message) == ("PermissionError", "not for you")
        relay.swiss[b"relayer"] = Far("Relayer", lambda: E(at_relay)())
        at_caller = await caller.enliven(SturdyRef(relay.location, b"relayer"))
        with pytest.raises(RemoteError) as relayed:
            await E(at_caller)()
        assert (relayed.value.name, relayed.value.message) == ("PermissionError", "not for you")
        assert str(relayed.value) == "PermissionError: not for you"
