"""Several CapTP frames per WebSocket message, under the ``ocapd-captp.batch`` subprotocol.

With one frame per message, a pipelined burst costs a WebSocket message per
frame at each end: trio-websocket's reader hands messages over one per
scheduler pass, so the driver can never take more than one at a time. Under
the batch subprotocol (chosen in the upgrade; docs/protocol.md §2) a burst is
one message and one pass. These tests count messages and frames per receive,
never time; the limits of a single frame still hold for every frame of a
batch, and the driver is handed a bounded slice of a message at a time.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
import trio
from trio_websocket import open_websocket_url, serve_websocket

from ocapd.captp import (
    WEBSOCKET_BATCH_SUBPROTOCOL,
    E,
    Limits,
    ProtocolError,
    SessionAborted,
    WebSocketTransport,
    far,
    open_websocket_connection,
)
from ocapd.captp.session import R_FRAME_TOO_LARGE, R_MALFORMED
from ocapd.captp.transport import BATCH_MESSAGE_BYTES, BATCH_TAKE_BYTES, pack_batch, split_batch


class FakeWebSocket:
    """The part of a trio-websocket connection the transport uses, recording what is sent."""

    def __init__(self, subprotocol: str | None, incoming: list[bytes] | None = None) -> None:
        self.subprotocol = subprotocol
        self.sent: list[bytes] = []
        self.incoming = list(incoming or [])

    async def send_message(self, message: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.sent.append(message)

    async def get_message(self) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.incoming.pop(0)


def test_a_batch_message_is_length_prefixed_frames_and_splits_back() -> None:
    frames = [b"\x92\xa1a\x01", b"", b"x" * 300]
    [message] = pack_batch(frames)
    assert message == b"\x00\x00\x00\x04\x92\xa1a\x01" + b"\x00\x00\x00\x00" + b"\x00\x00\x01\x2c" + b"x" * 300
    assert split_batch(message, 1024) == frames


def test_a_sender_fills_messages_up_to_the_batch_size_and_sends_a_large_frame_alone() -> None:
    small = b"s" * 1000
    large = b"L" * (BATCH_MESSAGE_BYTES * 2)
    messages = pack_batch([small] * 100 + [large] + [small])
    assert all(len(m) <= BATCH_MESSAGE_BYTES for m in messages if large not in m)
    assert [len(split_batch(m, len(large))) for m in messages] == [65, 35, 1, 1]
    assert [f for m in messages for f in split_batch(m, len(large))] == [small] * 100 + [large] + [small]


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"", R_MALFORMED),
        (b"\x00\x00\x00", R_MALFORMED),  # ends inside a length
        (b"\x00\x00\x00\x05abc", R_MALFORMED),  # ends inside a frame
        (b"\x00\x00\x00\x01a\x00\x00", R_MALFORMED),  # a good frame, then a cut length
        (b"\x00\x00\x00\x01a\x00\x00\x04\x01", R_FRAME_TOO_LARGE),  # announced, not sent: refused on the length
    ],
)
def test_a_bad_batch_message_is_refused_whole(message: bytes, code: str) -> None:
    with pytest.raises(ProtocolError) as info:
        split_batch(message, 1024)
    assert info.value.code == code


async def test_a_burst_of_frames_is_one_message_when_batching_and_one_message_each_otherwise() -> None:
    frames = [b"frame %d" % i for i in range(50)]
    batched, plain = FakeWebSocket(WEBSOCKET_BATCH_SUBPROTOCOL), FakeWebSocket("ocapd-captp")
    await WebSocketTransport(batched).send_frames(frames)
    await WebSocketTransport(plain).send_frames(frames)
    assert len(batched.sent) == 1 and split_batch(batched.sent[0], 100) == frames
    assert plain.sent == frames


async def test_the_frames_of_one_message_are_handed_out_together_but_bounded_in_bytes() -> None:
    # A peer may pack a whole 16 MiB message with tiny calls; the driver gets
    # them BATCH_TAKE_BYTES at a time and checks its outbox in between.
    frame = b"f" * 100
    count = 3 * (BATCH_TAKE_BYTES // (4 + len(frame)))
    message = b"".join(pack_batch([frame] * count))  # one message, as a peer may send it
    transport = WebSocketTransport(FakeWebSocket(WEBSOCKET_BATCH_SUBPROTOCOL, [message, pack_batch([b"last"])[0]]))
    takes = []
    while sum(takes) < count:
        got = await transport.receive_frames()
        assert got == [frame] * len(got)
        takes.append(len(got))
    assert len(takes) == 3 and max(takes) * (4 + len(frame)) <= BATCH_TAKE_BYTES
    assert await transport.receive_frames() == [b"last"]


async def test_a_message_of_empty_frames_is_read_a_slice_at_a_time_not_split_up_front() -> None:
    # 16 MiB of zero lengths is four million frames: counted with their
    # lengths, a take is at most BATCH_TAKE_BYTES // 4 of them, and the rest
    # of the message is not even read until the driver asks again.
    message = bytes(16 * 1024 * 1024)
    transport = WebSocketTransport(
        FakeWebSocket(WEBSOCKET_BATCH_SUBPROTOCOL, [message]), max_frame_size=Limits().max_frame_size
    )
    first = await transport.receive_frames()
    assert first == [b""] * (BATCH_TAKE_BYTES // 4)
    assert await transport.receive_frame() == b""


async def test_frames_before_a_cut_frame_are_handed_out_and_the_error_comes_next() -> None:
    good = pack_batch([b"a", b"b"])[0]
    transport = WebSocketTransport(FakeWebSocket(WEBSOCKET_BATCH_SUBPROTOCOL, [good + b"\x00\x00\x00\x09cut"]))
    assert await transport.receive_frames() == [b"a", b"b"]
    with pytest.raises(ProtocolError) as info:
        await transport.receive_frames()
    assert info.value.code == R_MALFORMED


async def test_without_the_subprotocol_a_message_is_one_frame_whatever_its_bytes() -> None:
    message = pack_batch([b"a", b"b"])[0]
    transport = WebSocketTransport(FakeWebSocket(None, [message]))
    assert await transport.receive_frames() == [message]


@far("Echo")
class Echo:
    def echo(self, value: Any) -> Any:
        return value


class CountingTransport(WebSocketTransport):
    """Counts the frames of each ``receive_frames``."""

    takes: list[int]

    async def receive_frames(self) -> list[bytes]:
        frames = await super().receive_frames()
        self.takes.append(len(frames))
        return frames


async def _serve(transports: list[CountingTransport], limits: Limits, request: Any) -> None:
    offered = WEBSOCKET_BATCH_SUBPROTOCOL in request.proposed_subprotocols
    ws = await request.accept(subprotocol=WEBSOCKET_BATCH_SUBPROTOCOL if offered else None)
    transport = CountingTransport(ws, max_frame_size=limits.max_frame_size)
    transport.takes = []
    transports.append(transport)
    from ocapd.captp import open_connection

    async with open_connection(transport, Echo(), name="server", limits=limits) as conn:
        await conn.wait_closed()


@pytest.mark.parametrize("offer", [True, False])
async def test_pipelined_calls_reach_the_server_driver_many_frames_at_a_time_only_when_batching(offer: bool) -> None:
    transports: list[CountingTransport] = []
    calls = 200
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, partial(_serve, transports, Limits()), "127.0.0.1", 0, None)
        subprotocols = [WEBSOCKET_BATCH_SUBPROTOCOL] if offer else []
        async with open_websocket_url(f"ws://127.0.0.1:{server.port}/", subprotocols=subprotocols) as ws:
            async with open_websocket_connection(ws, name="client") as conn:
                ref = conn.bootstrap()
                await E(ref).echo(0)  # started; the next frames are the burst alone
                [transport] = transports
                transport.takes.clear()
                answers = [E(ref).echo(i) for i in range(calls)]
                assert [await a for a in answers] == list(range(calls))
                assert transport.batching is offer
                if offer:
                    assert len(transport.takes) <= 5  # the burst leaves the client in one flush or a few
                else:
                    assert transport.takes == [1] * len(transport.takes) and sum(transport.takes) >= calls
        nursery.cancel_scope.cancel()


async def test_a_frame_over_the_limit_inside_a_batch_aborts_the_session() -> None:
    transports: list[CountingTransport] = []
    limits = Limits(max_frame_size=1024)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, partial(_serve, transports, limits), "127.0.0.1", 0, None)
        async with open_websocket_url(
            f"ws://127.0.0.1:{server.port}/", subprotocols=[WEBSOCKET_BATCH_SUBPROTOCOL]
        ) as ws:
            async with open_websocket_connection(ws, name="client") as conn:
                ref = conn.bootstrap()
                assert await E(ref).echo("small") == "small"
                with pytest.raises(SessionAborted):
                    await E(ref).echo("x" * 2000)
                ended = await conn.wait_closed()
                assert ended.by_peer and ended.code == R_FRAME_TOO_LARGE
        nursery.cancel_scope.cancel()
