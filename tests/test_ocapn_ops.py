"""OCapN's pipelining on copy data: ``op:get``, ``op:index``, ``op:untag`` (docs/ocapn.md).

Each names a promise (an answer, or a promise the receiver exported) and a
field, index or tag, and puts at a new answer position a promise for that
part of what the target settles to. The sender learns the result as for any
promise, with ``op:listen``, or pipelines further calls to the new answer.

Two sans-IO sessions pumped by hand check the semantics and the wire; real
nodes on 127.0.0.1 check that a chain of them is pipelined over TCP; hostile
frames (wrong arity, wrong types, answer positions reused, targets that are
not ours) end that session only, while an index or field the value does not
have only breaks that answer. The msgpack profile has no form for them: it
refuses to write one and reads none.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
from sessions import settle
from test_ocapn_node import ECHO, running_node

from ocapd.captp import E, Far, RemoteError, Session, Symbol, Tagged, make_promise_kit
from ocapd.captp.messages import DescKind, Descriptor, Get, Index, Untag
from ocapd.captp.msgpack_profile import MSGPACK
from ocapd.captp.ocapn_locators import PeerLocator, SturdyRef
from ocapd.captp.ocapn_profile import OcapnProfile
from ocapd.captp.session import Limits
from ocapd.captp.syrup import decode
from ocapd.captp.turns import run_turns

LIMITS = Limits()
EXPORT, ANSWER, IMPORT_PROMISE = DescKind.EXPORT, DescKind.ANSWER, DescKind.IMPORT_PROMISE


def _pair(bootstrap: Any) -> tuple[Session, Session]:
    """A client session and a server session (serving ``bootstrap``), both OCapN, started."""
    server = Session(bootstrap, profile=OcapnProfile(PeerLocator("server", "tcp-testing-only")), name="server")
    client = Session(profile=OcapnProfile(PeerLocator("client", "tcp-testing-only")), name="client")
    settle(client, server)
    return client, server


def _outcome(promise: Any) -> Any:
    assert promise.settled, promise
    if promise.rejected:
        return promise.exception()
    return promise.result()


DATA = {"name": "car", "parts": ["wheel", Tagged("engine", {"hp": 90})], "count": 4}


def _data_maker() -> Any:
    return Far("Maker", lambda: DATA)


# -- semantics, sans-IO ----------------------------------------------------------------------


def test_get_index_and_untag_pipeline_on_an_answer_before_it_settles() -> None:
    client, server = _pair(_data_maker())
    answer = E(client.bootstrap())()
    hp = client.pipeline_get(client.pipeline_untag(client.pipeline_index(client.pipeline_get(answer, "parts"), 1), "engine"), "hp")
    hp.when_settled(lambda _p: None)
    frames = client.data_to_send()
    # One deliver, then the ops, each naming the answer before it (nothing waited for), then a
    # listen for the last; the intermediate answers, dropped here, are released with gc-answer.
    ops = [decode(f).label.name for f in frames]
    assert ops[:6] == ["op:deliver", "op:get", "op:index", "op:untag", "op:get", "op:listen"]
    assert set(ops[6:]) <= {"op:gc-answer"}
    for frame in frames:
        server.receive_frame(frame)
    run_turns()
    settle(client, server)
    assert _outcome(hp) == 90
    assert server.aborted is None and client.aborted is None


def test_each_op_is_written_as_the_spec_writes_it() -> None:
    client, _server = _pair(_data_maker())
    answer = E(client.bootstrap())()
    client.data_to_send()
    held = [client.pipeline_get(answer, "name"), client.pipeline_index(answer, 2), client.pipeline_untag(answer, "engine")]
    assert held and client.data_to_send() == [
        b"<6'op:get<11'desc:answer0+>4\"name1+>",
        b"<8'op:index<11'desc:answer0+>2+2+>",
        b"<8'op:untag<11'desc:answer0+>6\"engine3+>",
    ]


def test_a_field_index_or_tag_the_value_lacks_breaks_only_that_answer() -> None:
    client, server = _pair(_data_maker())
    answer = E(client.bootstrap())()
    missing = client.pipeline_get(answer, "colour")
    parts = client.pipeline_get(answer, "parts")
    past_end = client.pipeline_index(parts, 2)
    negative = client.pipeline_index(parts, -1)
    huge = client.pipeline_index(parts, 2**200)
    not_a_list = client.pipeline_index(answer, 0)
    not_a_record = client.pipeline_get(parts, "x")
    wrong_tag = client.pipeline_untag(client.pipeline_index(parts, 1), "motor")
    not_tagged = client.pipeline_untag(client.pipeline_index(parts, 0), "engine")
    count = client.pipeline_get(answer, "count")
    for p in (missing, past_end, negative, huge, not_a_list, not_a_record, wrong_tag, not_tagged, count):
        p.when_settled(lambda _p: None)  # listen
    settle(client, server)
    errors = {name: _outcome(p) for name, p in {
        "missing": missing, "past_end": past_end, "negative": negative, "huge": huge, "not_a_list": not_a_list,
        "not_a_record": not_a_record, "wrong_tag": wrong_tag, "not_tagged": not_tagged,
    }.items()}
    for name, error in errors.items():
        assert isinstance(error, RemoteError), (name, error)
    assert "colour" in errors["missing"].message
    # OCapN's errors carry one string, "Name: message" (docs/ocapn.md), read back as both.
    for name in ("past_end", "negative", "huge"):
        assert errors[name].name == "IndexError", errors[name]
    assert "record" in errors["not_a_record"].message and "list" in errors["not_a_list"].message
    assert "motor" in errors["wrong_tag"].message and "engine" in errors["wrong_tag"].message
    assert _outcome(count) == 4
    assert server.aborted is None and client.aborted is None


def test_a_broken_target_breaks_the_answer_with_its_reason() -> None:
    def fail() -> None:
        raise ValueError("no data today")

    client, server = _pair(Far("Failing", fail))
    field = client.pipeline_get(E(client.bootstrap())(), "x")
    field.when_settled(lambda _p: None)
    settle(client, server)
    error = _outcome(field)
    assert error == RemoteError("ValueError", "no data today")


def test_ops_follow_a_promise_the_receiver_exported() -> None:
    """The target may be a promise the receiver exported (``desc:export``), settled later."""
    promise, resolver = make_promise_kit()
    client, server = _pair(Far("Giver", lambda: [promise]))
    (imported,) = _outcome_after(client, server, E(client.bootstrap())())
    name = client.pipeline_get(imported, "name")
    name.when_settled(lambda _p: None)
    settle(client, server)
    assert not name.settled
    resolver.resolve(DATA)
    run_turns()
    settle(client, server)
    assert _outcome(name) == "car"


def _outcome_after(client: Session, server: Session, promise: Any) -> Any:
    promise.when_settled(lambda _p: None)
    settle(client, server)
    return _outcome(promise)


def test_an_op_on_a_settled_promise_is_answered_locally() -> None:
    client, server = _pair(_data_maker())
    answer = E(client.bootstrap())()
    _outcome_after(client, server, answer)
    name = client.pipeline_get(answer, "name")
    assert client.data_to_send() == []
    run_turns()
    assert _outcome(name) == "car"


def test_the_answer_is_released_with_gc_answers_when_dropped() -> None:
    client, server = _pair(_data_maker())
    answer = E(client.bootstrap())()
    field = client.pipeline_get(answer, "name")
    settle(client, server)
    assert server.stats()["answers"] == 2
    del field, answer
    settle(client, server)
    assert server.stats()["answers"] == 0


# -- hostile frames: a clean abort of that session --------------------------------------------


def _started_server() -> tuple[Session, OcapnProfile]:
    server = Session(_data_maker(), profile=OcapnProfile(PeerLocator("server", "tcp-testing-only")))
    client = OcapnProfile(PeerLocator("client", "tcp-testing-only"))
    server.receive_frame(client.encode_message(client.start_session(), lambda o: Descriptor(DescKind.EXPORT, 0), LIMITS))
    # One call whose answer (position 0) the hostile frames can name.
    server.receive_frame(b"<10'op:deliver<11'desc:export0+>[]0+<18'desc:import-object1+>>")
    run_turns()
    server.data_to_send()
    return server, client


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (b"<6'op:get<11'desc:answer0+>4\"name>", "bad-arity"),
        (b"<6'op:get<11'desc:answer0+>4\"name1+2+>", "bad-arity"),
        (b"<8'op:index<11'desc:answer0+>>", "bad-arity"),
        (b"<8'op:untag<11'desc:answer0+>1\"t1+f>", "bad-arity"),
        (b"<6'op:get<11'desc:answer0+>4:name1+>", "bad-field"),  # a field name is a string
        (b"<6'op:get<11'desc:answer0+>3+1+>", "bad-field"),
        (b"<8'op:index<11'desc:answer0+>1\"01+>", "bad-field"),  # an index is an integer
        (b"<8'op:index<11'desc:answer0+>t1+>", "bad-field"),  # not a boolean
        (b"<8'op:index<11'desc:answer0+>D\x00\x00\x00\x00\x00\x00\x00\x001+>", "bad-field"),
        (b"<8'op:untag<11'desc:answer0+>5+1+>", "bad-field"),  # a tag is a string
        (b"<6'op:get<11'desc:answer0+>1\"x1->", "bad-field"),  # a negative answer position
        (b"<6'op:get<11'desc:answer0+>1\"xf>", "bad-field"),  # no answer position: nowhere to put it
        (b"<6'op:get<11'desc:answer0+>1\"x9007199254740992+>", "bad-field"),  # past 2**53-1
        (b"<6'op:get<11'desc:answer0+>1\"x0+>", "position-in-use"),  # the target's own position
        (b"<6'op:get<11'desc:answer7+>1\"x1+>", "unknown-position"),  # an answer never made
        (b"<6'op:get<11'desc:export9+>1\"x1+>", "unknown-position"),
        (b"<6'op:get<19'desc:import-promise0+>1\"x1+>", "bad-field"),  # names the sender's own table
        (b"<6'op:get5\"hello1\"x1+>", "malformed-frame"),  # the target is not a descriptor
    ],
)
def test_hostile_ops_abort_the_session_cleanly(frame: bytes, code: str) -> None:
    server, _ = _started_server()
    server.receive_frame(frame)
    assert server.aborted is not None and server.aborted.code == code, server.aborted
    (abort,) = server.data_to_send()
    assert decode(abort).label == Symbol("op:abort")


def test_a_huge_or_negative_index_is_well_formed_and_only_breaks_the_answer() -> None:
    server, _ = _started_server()
    for pos, index in ((1, b"1-"), (2, b"9" * 4000 + b"+")):
        server.receive_frame(b"<8'op:index<11'desc:answer0+>" + index + b"%d+>" % pos)
        server.receive_frame(b"<9'op:listen<11'desc:answer%d+><18'desc:import-object%d+>f>" % (pos, pos + 5))
    run_turns()
    assert server.aborted is None
    replies = [decode(f) for f in server.data_to_send()]
    reports = [r.fields[1][0] for r in replies if r.label == Symbol("op:deliver-only")]
    assert reports == [Symbol("break"), Symbol("break")]


# -- msgpack has no form for them ---------------------------------------------------------------


def test_the_msgpack_profile_refuses_to_write_them_and_the_question_is_not_kept() -> None:
    server = Session(_data_maker(), name="server")
    client = Session(name="client")
    settle(client, server)
    answer = E(client.bootstrap())()
    client.data_to_send()
    for send in (lambda: client.pipeline_get(answer, "name"), lambda: client.pipeline_index(answer, 0),
                 lambda: client.pipeline_untag(answer, "t")):
        with pytest.raises(TypeError, match="msgpack"):
            send()
    assert client.data_to_send() == []
    assert client.stats()["questions"] == 1
    for message in (Get(Descriptor(ANSWER, 0), "x", 1), Index(Descriptor(ANSWER, 0), 0, 1), Untag(Descriptor(ANSWER, 0), "t", 1)):
        with pytest.raises(TypeError):
            MSGPACK.encode_message(message, lambda o: Descriptor(EXPORT, 0), LIMITS)


# -- over TCP, between nodes ------------------------------------------------------------------


async def test_a_node_pipelines_get_index_and_untag_over_tcp(nursery: trio.Nursery) -> None:
    async with running_node(nursery) as a, running_node(nursery) as b:
        echo = await b.enliven(SturdyRef(a.location, ECHO))
        session = echo._session
        answer = E(echo)({"k": [1, Tagged("t", "deep")]})  # the echo answers [arg]
        deep = session.pipeline_untag(session.pipeline_index(session.pipeline_get(session.pipeline_index(answer, 0), "k"), 1), "t")
        broken = session.pipeline_get(answer, "k")  # a list is not a record
        with trio.fail_after(10):
            assert await deep == "deep"
            with pytest.raises(RemoteError, match="record"):
                await broken
        assert session.aborted is None
        assert await E(echo)("still here") == ["still here"]
