"""What a call costs the trio drivers, counted rather than timed.

A CapTP call over a local transport costs mostly scheduler passes and
Python work, not bytes (tests/bench/captp_rtt.py measures the time). These
tests pin the counts that the time follows: how many steps a task takes to
receive a frame, and how many frames a call puts on the wire. The counts are
exact for a given code path (a trio ``Instrument`` counts task steps; a
recording transport counts frames), so nothing here depends on the machine's
speed or load.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import pytest
import trio
import trio.testing

from ocapd.captp import FramedStream, TransportClosed


class StepCounter(trio.abc.Instrument):
    """Counts the steps each task takes (a step: from one resumption to the next yield)."""

    def __init__(self) -> None:
        self.steps: dict[trio.lowlevel.Task, int] = {}

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps[task] = self.steps.get(task, 0) + 1


def stream_pair(kind: str) -> tuple[trio.abc.Stream, trio.abc.Stream]:
    """(sending end, receiving end) of a real pipe or a real socket pair."""
    if kind == "pipe":
        r, w = os.pipe()
        return trio.lowlevel.FdStream(w), trio.lowlevel.FdStream(r)
    a, b = socket.socketpair()
    return trio.SocketStream(trio.socket.from_stdlib_socket(a)), trio.SocketStream(trio.socket.from_stdlib_socket(b))


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_a_frame_arriving_while_the_receiver_waits_costs_it_one_step(kind: str) -> None:
    # The receiver parks until the fd is readable and reads once it is: no
    # checkpoint before the read, no read that finds nothing.
    sending, receiving = stream_pair(kind)
    sender, receiver = FramedStream(sending), FramedStream(receiving)
    frames = 20
    got: list[bytes] = []
    counter = StepCounter()

    async def receive_all(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started(trio.lowlevel.current_task())
        while len(got) < frames:
            got.extend(await receiver.receive_frames())

    async with trio.open_nursery() as nursery:
        task = await nursery.start(receive_all)
        await trio.testing.wait_all_tasks_blocked()
        trio.lowlevel.add_instrument(counter)
        for i in range(frames):
            await sender.send_frames([b"frame %d" % i])
            await trio.testing.wait_all_tasks_blocked()  # the receiver handled it and waits again
        trio.lowlevel.remove_instrument(counter)
    assert got == [b"frame %d" % i for i in range(frames)]
    assert counter.steps[task] == frames
    await sender.aclose()
    await receiver.aclose()


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_frames_already_buffered_are_taken_with_one_read(kind: str) -> None:
    sending, receiving = stream_pair(kind)
    sender, receiver = FramedStream(sending), FramedStream(receiving)
    await sender.send_frames([b"a", b"bb", b"", b"ccc"])
    assert await receiver.receive_frames() == [b"a", b"bb", b"", b"ccc"]
    # A frame split over two writes is put together.
    await sending.send_all(b"\x00\x00\x00\x05he")
    async with trio.open_nursery() as nursery:
        result: list[bytes] = []

        async def receive() -> None:
            result.extend(await receiver.receive_frames())

        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        assert result == []
        await sending.send_all(b"llo\x00\x00\x00\x01!")
    assert result == [b"hello", b"!"]
    await sender.aclose()
    await receiver.aclose()


@pytest.mark.parametrize("kind", ["pipe", "socket"])
async def test_the_end_of_the_stream_and_closing_it_while_receiving_end_the_receive(kind: str) -> None:
    sending, receiving = stream_pair(kind)
    receiver = FramedStream(receiving)
    await sending.send_all(b"\x00\x00\x00\x02hi\x00\x00")  # a frame, then half a header
    assert await receiver.receive_frames() == [b"hi"]
    await sending.aclose()
    with pytest.raises(TransportClosed):
        await receiver.receive_frames()
    await receiver.aclose()

    sending, receiving = stream_pair(kind)
    receiver = FramedStream(receiving)
    ended: list[BaseException] = []

    async def receive() -> None:
        try:
            await receiver.receive_frames()
        except TransportClosed as e:
            ended.append(e)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive)
        await trio.testing.wait_all_tasks_blocked()
        await receiver.aclose()
    assert len(ended) == 1
    with pytest.raises(TransportClosed):
        await receiver.receive_frames()
    await sending.aclose()


async def test_a_task_cancelled_while_awaiting_a_promise_is_not_woken_when_it_settles() -> None:
    from ocapd.captp import make_promise_kit

    promise, resolver = make_promise_kit()
    outcomes: list[str] = []

    async def wait_for_it() -> None:
        try:
            await promise
        except trio.Cancelled:
            outcomes.append("cancelled")
            raise
        outcomes.append("woken")  # pragma: no cover - the test fails if we get here

    async with trio.open_nursery() as nursery:
        nursery.start_soon(wait_for_it)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    resolver.resolve("late")
    await trio.testing.wait_all_tasks_blocked()
    assert outcomes == ["cancelled"]
    assert await promise == "late"  # and a new await of the settled promise does not park
