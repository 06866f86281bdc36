"""The session's wire profile, and the session hooks an OCapN profile needs.

- The msgpack profile writes and reads exactly the frames of tests/vectors
  (typed messages in between), cuts a byte stream the way ``FramedStream``
  writes it, and refuses what the profile contract says it must refuse.
- The session uses only its profile: a session built with another profile
  (here one speaking another version) is refused by a msgpack peer.
- Hooks, through the msgpack profile: calls without a method name
  (``E(fn)(...)``), break values that are not errors, and the driver's
  half-close after an abort. (A settled resolver releasing its promise is
  tested in tests/test_ordering.py.)

Sans-IO sessions pumped by hand, and the trio driver over real TCP sockets on
127.0.0.1; nothing is mocked and nothing waits on a clock.
"""

from __future__ import annotations

import json
import socket
import struct
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
from sessions import settle

from ocapd.captp import E, Far, Limits, RemoteError, RemoteRef, Session, Tagged, codec, far, make_promise_kit
from ocapd.captp.codec import EXT_EXPORT, EXT_IMPORT_OBJECT
from ocapd.captp.connection import open_stream_connection
from ocapd.captp.messages import (
    Abort,
    Deliver,
    DeliverOnly,
    DescKind,
    Descriptor,
    GcAnswers,
    GcExports,
    LimitExceeded,
    Listen,
    ProtocolError,
    StartSession,
)
from ocapd.captp.msgpack_profile import MSGPACK, PROTOCOL_VERSION, MsgpackProfile
from ocapd.captp.passable import Rejected
from ocapd.captp.transport import FramedStream, ProfileStream
from ocapd.captp.turns import run_turns

VECTORS = json.loads((Path(__file__).resolve().parent / "vectors" / "messages.json").read_text(encoding="utf-8"))
LIMITS = Limits()
#: Seconds after which a test that would otherwise hang fails instead (never reached when it passes).
SAFETY_NET = 30

# ---------------------------------------------------------------------------
# Helpers: a pair of sans-IO sessions pumped by hand.


def pair(boot_a: Any = None, boot_b: Any = None) -> tuple[Session, Session]:
    a, b = Session(boot_a, name="a"), Session(boot_b, name="b")
    settle(a, b)
    return a, b


def plain(frame: bytes) -> Any:
    """A frame as msgpack data, ext values as (code, payload) pairs."""
    return msgpack.unpackb(frame, raw=False, ext_hook=lambda code, data: (code, data))


def export(pos: int) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_EXPORT, bytes([pos]))


def import_object(pos: int) -> msgpack.ExtType:
    return msgpack.ExtType(EXT_IMPORT_OBJECT, bytes([pos]))


def packed(*fields: Any) -> bytes:
    return msgpack.packb(list(fields), use_bin_type=True)


# ---------------------------------------------------------------------------
# The msgpack profile against the shared vectors.

MESSAGE_CLASSES = {
    "start-session": StartSession,
    "deliver": Deliver,
    "deliver-only": DeliverOnly,
    "listen": Listen,
    "gc-exports": GcExports,
    "gc-answers": GcAnswers,
    "abort": Abort,
}


@pytest.mark.parametrize("vector", VECTORS["frames"], ids=lambda v: v["name"])
def test_every_vector_frame_reads_as_its_typed_message_and_is_written_back_byte_for_byte(vector: dict[str, Any]) -> None:
    frame = bytes.fromhex(vector["hex"])
    message = MSGPACK.decode_message(frame, LIMITS)
    assert type(message) is MESSAGE_CLASSES[plain(frame)[0]]
    if isinstance(message, Deliver | DeliverOnly):
        revived: list[Descriptor] = []

        def revive(desc: Descriptor) -> Any:
            revived.append(desc)
            return desc

        message = message._replace(args=MSGPACK.decode_args(message.args, revive))
        assert all(type(d) is Descriptor and isinstance(d.kind, DescKind) for d in revived)
    # Written back, references handed to describe come back as they were read.
    assert MSGPACK.encode_message(message, lambda obj: obj, LIMITS) == frame


def test_messages_are_equal_only_to_the_same_op_with_equal_fields() -> None:
    assert Abort("closed") == Abort("closed") and Abort("closed") != Abort("other")
    assert Abort("closed") != GcAnswers("closed") and GcAnswers([1]) != ([1],)
    assert len({GcAnswers([1]) == GcAnswers([1]), Abort("x") == ("x",)}) == 2
    assert Listen(Descriptor(DescKind.EXPORT, 1), None).wants_partial is False


def test_descriptors_are_read_as_typed_descriptors_with_enum_kinds() -> None:
    frame = packed("deliver", export(0), "hello", [import_object(3)], 0, import_object(1))
    message = MSGPACK.decode_message(frame, LIMITS)
    assert isinstance(message, Deliver)
    assert message.target == Descriptor(DescKind.EXPORT, 0) and message.target.kind is DescKind.EXPORT
    assert message.resolve_me.kind is DescKind.IMPORT_OBJECT
    seen: list[Descriptor] = []
    assert MSGPACK.decode_args(message.args, lambda d: seen.append(d) or "proxy") == ["proxy"]
    assert seen == [Descriptor(DescKind.IMPORT_OBJECT, 3)] and seen[0].kind is DescKind.IMPORT_OBJECT


def test_the_profile_calls_describe_for_each_reference_in_the_order_it_writes_them() -> None:
    @far("Thing")
    class Thing:
        pass

    first, second, resolver = Thing(), Thing(), Thing()
    described: list[Any] = []

    def describe(obj: Any) -> Descriptor:
        described.append(obj)
        return Descriptor(DescKind.IMPORT_OBJECT, len(described))

    message = Deliver(Descriptor(DescKind.EXPORT, 0), "m", [first, {"k": second}], 7, resolver)
    frame = MSGPACK.encode_message(message, describe, LIMITS)
    assert described == [first, second, resolver]  # the target Descriptor is written as it is
    assert plain(frame) == ["deliver", (12, b"\x00"), "m", [(10, b"\x01"), {"k": (10, b"\x02")}], 7, (10, b"\x03")]


@pytest.mark.parametrize(
    ("data", "code", "op"),
    [
        (b"\xc1", "malformed-frame", None),
        (packed(), "malformed-frame", None),
        (msgpack.packb("deliver"), "malformed-frame", None),
        (packed("frobnicate"), "unknown-op", None),
        (packed(7, 1), "unknown-op", None),
        (packed("deliver", export(0), "m", []), "bad-arity", Deliver),
        (packed("abort"), "bad-arity", Abort),
        (packed("start-session", PROTOCOL_VERSION, 1), "bad-arity", StartSession),
    ],
)
def test_malformed_frames_raise_protocol_errors_with_the_contract_codes(data: bytes, code: str, op: Any) -> None:
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode_message(data, LIMITS)
    assert info.value.code == code
    assert info.value.op is op


def test_decoding_budgets_are_the_sessions_limits() -> None:
    small = Limits(max_elements=8, max_descriptors=2)
    many_values = packed("deliver", export(0), "m", list(range(20)), None, None)
    many_refs = packed("deliver", export(0), "m", [import_object(1), import_object(2)], None, import_object(3))
    for data, code in ((many_values, "too-many-elements"), (many_refs, "too-many-descriptors")):
        with pytest.raises(ProtocolError) as info:
            MSGPACK.decode_message(data, small)
        assert info.value.code == code


def test_args_that_are_not_a_list_or_not_passable_are_refused() -> None:
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode_args({"a": 1}, lambda d: d)
    assert info.value.code == "bad-field"
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode_args([{1: "int key"}], lambda d: d)
    assert info.value.code == "malformed-frame"


def test_the_profile_never_writes_a_frame_the_peer_must_refuse() -> None:
    target = Descriptor(DescKind.EXPORT, 0)
    with pytest.raises(TypeError):
        MSGPACK.encode_message(DeliverOnly(target, "m", [object()]), lambda obj: (_ for _ in ()).throw(TypeError("no")), LIMITS)
    with pytest.raises(LimitExceeded):
        MSGPACK.encode_message(DeliverOnly(target, "m", [b"x" * 2048]), lambda obj: obj, Limits(max_frame_size=1024))
    with pytest.raises(LimitExceeded):
        MSGPACK.encode_message(DeliverOnly(target, "m", list(range(100))), lambda obj: obj, Limits(max_elements=50))


def test_start_session_is_the_profiles_and_other_versions_are_refused() -> None:
    assert MSGPACK.start_session() == StartSession(PROTOCOL_VERSION)
    MSGPACK.check_start(StartSession(PROTOCOL_VERSION))
    for version in ("ocapd-captp/2", "", None, 1, [PROTOCOL_VERSION]):
        with pytest.raises(ProtocolError) as info:
            MSGPACK.check_start(StartSession(version))
        assert info.value.code == "version-mismatch"


def test_stream_framing_matches_framed_stream_and_the_stream_vectors() -> None:
    frames = [bytes.fromhex(v["hex"]) for v in VECTORS["frames"]]
    data = MSGPACK.stream_bytes(frames)
    assert data == FramedStream._encode(frames)
    for vector in VECTORS["stream_frames"]:
        stream = bytes.fromhex(vector["hex"])
        assert MSGPACK.stream_bytes([stream[4:]]) == stream
    # Fed one byte at a time, or all at once, the splitter gives back the same frames.
    splitter = MSGPACK.frame_splitter(LIMITS.max_frame_size)
    one_by_one = [f for i in range(len(data)) for f in splitter.feed(data[i : i + 1])]
    assert one_by_one == frames and splitter.buffered == 0
    assert MSGPACK.frame_splitter(LIMITS.max_frame_size).feed(data) == frames
    partial = MSGPACK.frame_splitter(LIMITS.max_frame_size)
    assert partial.feed(data[:-1]) == frames[:-1] and partial.buffered > 0


def test_the_splitter_refuses_an_oversized_frame_from_its_header_alone() -> None:
    splitter = MSGPACK.frame_splitter(1024)
    with pytest.raises(ProtocolError) as info:
        splitter.feed(struct.pack(">I", 1025))  # no body sent: refused before buffering one
    assert info.value.code == "frame-too-large"


# ---------------------------------------------------------------------------
# The session uses its profile and nothing else.


class OtherVersion(MsgpackProfile):
    """The msgpack encoding under another version: what a second profile looks like to a peer."""

    name = "other"

    def start_session(self) -> StartSession:
        return StartSession("other-captp/9")

    def check_start(self, message: StartSession) -> None:
        if message.version != "other-captp/9":
            raise ProtocolError("version-mismatch", f"peer speaks {message.version!r}")


def test_sessions_speak_through_their_profile_and_refuse_a_peer_with_another() -> None:
    a = Session(name="a", profile=OtherVersion())
    b = Session(name="b")
    assert plain(a.data_to_send()[0]) == ["start-session", "other-captp/9"]
    b.receive_frame(MSGPACK.encode_message(StartSession("other-captp/9"), lambda o: o, LIMITS))
    assert b.aborted is not None and b.aborted.code == "version-mismatch"
    c, d = Session(name="c", profile=OtherVersion()), Session(name="d", profile=OtherVersion())
    settle(c, d)
    assert c.aborted is None and d.aborted is None


def test_a_session_defaults_to_the_msgpack_profile() -> None:
    assert Session().profile is MSGPACK


# ---------------------------------------------------------------------------
# Hook: calls without a method name, E(fn)(...).


@far("Maker")
class Maker:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def adder(self, n: int) -> Any:
        return Far("Adder", lambda m: n + m)

    def record(self) -> Any:
        return Far("Recorder", lambda *args: self.calls.append(args))

    def plain_record(self) -> Any:
        return Far("Record", size=lambda: 1)

    def callable_object(self) -> Any:
        return CallableThing()


@far("CallableThing")
class CallableThing:
    """A remotable with a __call__: not a far function, so a peer cannot call it."""

    called = 0

    def __call__(self, *args: Any) -> str:
        CallableThing.called += 1
        return "called"


def test_e_of_a_local_far_function_calls_it_in_a_later_turn() -> None:
    add = Far("Add", lambda a, b: a + b)
    p = E(add)(2, 3)
    assert not p.settled  # eventual, as every E() call
    run_turns()
    assert p.result() == 5


def test_only_far_functions_can_be_called_without_a_method() -> None:
    CallableThing.called = 0
    for target in (CallableThing(), Far("Record", size=lambda: 1), Maker()):
        p = E(target)(1)
        run_turns()
        assert p.rejected
        err = p.exception()
        assert isinstance(err, RemoteError) and err.name == "TypeError" and "is not a function" in err.message
    assert CallableThing.called == 0


def test_a_remote_far_function_is_called_with_a_deliver_without_method() -> None:
    a, b = pair(None, Maker())
    adder = E(a.bootstrap()).adder(10)
    settle(a, b)
    assert isinstance(adder.result(), RemoteRef)
    result = E(adder.result())(5)
    frames = a.data_to_send()
    delivers = [plain(f) for f in frames if plain(f)[0] == "deliver"]
    assert [d[2] for d in delivers] == [None]  # the method field is nil on the wire
    for f in frames:
        b.receive_frame(f)
    run_turns()
    settle(a, b)
    assert result.result() == 15


def test_calls_without_method_pipeline_on_an_answer_and_go_one_way_too() -> None:
    maker = Maker()
    a, b = pair(None, maker)
    answer = E(E(a.bootstrap()).adder(1))(41)  # before the adder exists: pipelined
    recorder = E(a.bootstrap()).record()
    E.send_only(recorder)("hello", 2)
    settle(a, b)
    assert answer.result() == 42
    assert maker.calls == [("hello", 2)]


def test_a_peer_cannot_call_a_non_function_without_a_method() -> None:
    CallableThing.called = 0
    a, b = pair(None, Maker())
    boot = a.bootstrap()
    results = [E(boot)(1), E(E(boot).plain_record())(), E(E(boot).callable_object())("x")]
    settle(a, b)
    for p in results:
        err = p.exception()
        assert isinstance(err, RemoteError) and err.name == "TypeError", err
    assert CallableThing.called == 0
    assert a.aborted is None and b.aborted is None  # a refused call is not a protocol error


@pytest.mark.parametrize("method", [b"echo", 7, ["m"], "m" * 129])
def test_a_method_field_that_is_neither_null_nor_a_short_string_still_aborts(method: Any) -> None:
    _, b = pair(None, Maker())
    b.receive_frame(packed("deliver", export(0), method, [], None, None))
    assert b.aborted is not None and b.aborted.code == "bad-field"


# ---------------------------------------------------------------------------
# Hook: break values that are not errors.


@far("Breaker")
class Breaker:
    def __init__(self) -> None:
        self.kit = make_promise_kit()

    def broken_with(self, value: Any) -> Any:
        promise, resolver = make_promise_kit()
        resolver.reject(Rejected(value))
        return promise

    def broken_with_a_thing(self) -> Any:
        promise, resolver = make_promise_kit()
        resolver.reject(Rejected(Far("Thing", label=lambda: "made by the breaker")))
        return promise

    def broken_with_an_unpassable(self) -> Any:
        promise, resolver = make_promise_kit()
        resolver.reject(Rejected(object()))
        return promise

    def fails(self) -> Any:
        raise KeyError("missing")

    def pending(self) -> Any:
        return self.kit[0]


@pytest.mark.parametrize("value", [42, "no", None, {"code": 7, "why": ["a", "b"]}, Tagged("reason", 1), b"\x00"])
def test_a_promise_broken_with_a_value_reaches_the_peer_as_that_value(value: Any) -> None:
    a, b = pair(None, Breaker())
    p = E(a.bootstrap()).broken_with(value)
    frames = settle(a, b)
    breaks = [m[3] for m in map(codec.decode, frames) if m[0] == "deliver-only" and m[2] == "break"]
    assert breaks == [[value]]  # on the wire: the value itself, not an error
    err = p.exception()
    assert type(err) is Rejected and err.value == value


def test_a_break_value_may_be_a_reference() -> None:
    a, b = pair(None, Breaker())
    p = E(a.bootstrap()).broken_with_a_thing()
    settle(a, b)
    err = p.exception()
    assert type(err) is Rejected and isinstance(err.value, RemoteRef)
    label = E(err.value).label()
    settle(a, b)
    assert label.result() == "made by the breaker"


def test_errors_still_travel_as_errors() -> None:
    a, b = pair(None, Breaker())
    p = E(a.bootstrap()).fails()
    settle(a, b)
    err = p.exception()
    assert isinstance(err, RemoteError) and err.name == "KeyError"


def test_a_break_value_that_cannot_be_passed_becomes_a_type_error() -> None:
    a, b = pair(None, Breaker())
    p = E(a.bootstrap()).broken_with_an_unpassable()
    settle(a, b)
    err = p.exception()
    assert isinstance(err, RemoteError) and err.name == "TypeError" and "not passable" in err.message
    assert a.aborted is None and b.aborted is None


def test_a_break_with_a_plain_value_from_the_wire_is_kept_as_that_value() -> None:
    # As captp.js or an OCapN peer may send it: ["deliver-only", <our resolver>, "break", [value]].
    a, b = pair(None, Breaker())
    p = E(a.bootstrap()).pending()
    deliver = plain(a.data_to_send()[0])
    resolver_pos = deliver[5][1][0]
    a.receive_frame(packed("deliver-only", export(resolver_pos), "break", [{"refused": True}]))
    run_turns()
    err = p.exception()
    assert type(err) is Rejected and err.value == {"refused": True}


# ---------------------------------------------------------------------------
# Hook: half-close after abort (the trio driver over TCP on 127.0.0.1).


def read_frames(sock: socket.socket) -> tuple[list[Any], bool]:
    """Everything the peer sends until EOF: (frames as msgpack data, True at EOF)."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    splitter = MSGPACK.frame_splitter(LIMITS.max_frame_size)
    return [plain(f) for f in splitter.feed(data)], splitter.buffered == 0


async def serve_one(limits: Limits, record: dict[str, Any]) -> tuple[trio.SocketListener, Any]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    listener = listeners[0]

    async def handle(stream: trio.SocketStream) -> None:
        async with open_stream_connection(stream, Maker(), limits=limits) as conn:
            record["reason"] = await conn.wait_closed()
        record["done"].set()

    return listener, handle


@pytest.mark.parametrize("bad_frame", [b"\xc1", packed("frobnicate"), packed("deliver", export(99), "m", [], None, None)])
async def test_after_an_abort_the_driver_half_closes_and_ignores_the_peers_late_frames(bad_frame: bytes) -> None:
    record: dict[str, Any] = {"done": trio.Event()}
    listener, handle = await serve_one(Limits(), record)
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [listener])
        client = socket.create_connection(("127.0.0.1", port))
        start = MSGPACK.stream_bytes([MSGPACK.encode_message(StartSession(PROTOCOL_VERSION), lambda o: o, LIMITS)])
        client.sendall(start + MSGPACK.stream_bytes([bad_frame]))
        # The driver sends its start-session and the abort, then EOF: its write side is closed...
        frames, clean = await trio.to_thread.run_sync(read_frames, client)
        assert [f[0] for f in frames] == ["start-session", "abort"] and clean
        code = frames[1][1].split(":")[0]
        # ...while it still reads: late frames, good or bad, are taken and dropped (no reset, no second abort).
        late = MSGPACK.stream_bytes([packed("deliver", export(0), "adder", [1], 0, None), b"\xc1", packed("nonsense")])
        client.sendall(late * 50)
        client.shutdown(socket.SHUT_WR)
        with trio.fail_after(SAFETY_NET):
            await record["done"].wait()
        assert record["reason"].code == code and not record["reason"].by_peer
        assert await trio.to_thread.run_sync(client.recv, 1) == b""  # still the clean EOF, not a reset
        client.close()
        nursery.cancel_scope.cancel()


async def test_the_drain_after_an_abort_is_bounded_in_bytes() -> None:
    record: dict[str, Any] = {"done": trio.Event()}
    # Only the byte bound can end this drain: the time bound is far away.
    listener, handle = await serve_one(Limits(drain_bytes=4096, drain_timeout=3600), record)
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [listener])
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(MSGPACK.stream_bytes([packed("start-session", PROTOCOL_VERSION), b"\xc1"]))
        frames, _ = await trio.to_thread.run_sync(read_frames, client)
        assert [f[0] for f in frames] == ["start-session", "abort"]

        def flood() -> None:
            # A peer that never stops sending: the driver closes once it has dropped enough.
            junk = MSGPACK.stream_bytes([packed("deliver-only", export(0), "adder", [b"x" * 1000])])
            try:
                while True:
                    client.sendall(junk)
            except OSError:
                return

        with trio.fail_after(SAFETY_NET):
            await trio.to_thread.run_sync(flood, abandon_on_cancel=True)
            await record["done"].wait()
        client.close()
        nursery.cancel_scope.cancel()


async def test_the_drain_after_an_abort_is_bounded_in_time() -> None:
    record: dict[str, Any] = {"done": trio.Event()}
    listener, handle = await serve_one(Limits(drain_timeout=0.05), record)
    port = listener.socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, [listener])
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(MSGPACK.stream_bytes([packed("start-session", PROTOCOL_VERSION), b"\xc1"]))
        # A peer that neither sends nor closes: the driver gives up waiting and closes.
        with trio.fail_after(SAFETY_NET):
            await record["done"].wait()
        frames, _ = await trio.to_thread.run_sync(read_frames, client)
        assert [f[0] for f in frames] == ["start-session", "abort"]
        client.close()
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------
# Streams framed by the profile: a profile other than msgpack's gets ProfileStream.


async def test_a_connection_with_another_profile_is_framed_by_that_profile_over_tcp() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    served: dict[str, Any] = {"done": trio.Event()}

    async def handle(stream: trio.SocketStream) -> None:
        async with open_stream_connection(stream, Maker(), profile=OtherVersion()) as conn:
            served["transport"] = conn.transport
            await conn.wait_closed()
        served["done"].set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with open_stream_connection(stream, profile=OtherVersion()) as conn:
            assert type(conn.transport) is ProfileStream
            adder = await E(conn.bootstrap()).adder(40)
            assert await E(adder)(2) == 42
        with trio.fail_after(SAFETY_NET):
            await served["done"].wait()
        assert type(served["transport"]) is ProfileStream
        nursery.cancel_scope.cancel()


async def test_a_profile_stream_refuses_an_oversized_frame_from_its_header() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    served: dict[str, Any] = {"done": trio.Event()}

    async def handle(stream: trio.SocketStream) -> None:
        async with open_stream_connection(stream, Maker(), profile=OtherVersion(), limits=Limits(max_frame_size=1024)) as conn:
            served["reason"] = await conn.wait_closed()
        served["done"].set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, handle, listeners)
        client = socket.create_connection(("127.0.0.1", port))
        client.sendall(MSGPACK.stream_bytes([packed("start-session", "other-captp/9")]) + struct.pack(">I", 1025))
        with trio.fail_after(SAFETY_NET):
            await served["done"].wait()
        assert served["reason"].code == "frame-too-large"
        frames, _ = await trio.to_thread.run_sync(read_frames, client)
        assert [f[0] for f in frames] == ["start-session", "abort"]
        client.close()
        nursery.cancel_scope.cancel()
