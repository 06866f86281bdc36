"""The trio driver: pumps one ``Session`` over one transport.

``open_connection`` runs two pump tasks in a nursery it owns; the connection
ends when the body of the ``async with`` exits (sending ``abort`` if the
session still runs), when the peer aborts, or when the transport closes.
Async methods called by the peer run in the same nursery, so nothing
outlives the connection.

Why two identical pumps rather than a reader and a writer: a call's latency
is mostly scheduler passes. The pump that has just processed input sends the
replies itself, at once, instead of waking a writer task and leaving the
reply for the next scheduler pass. Before sending it wakes the other pump,
which takes over receiving; so a send that blocks (the peer is not reading)
never stops us reading, and two peers each blocked sending to the other
cannot deadlock. Frames queued from elsewhere (a local caller, a finalizer)
are sent by whichever pump is not receiving.

On a transport with a file descriptor (pipes, TCP, Unix sockets) frames are
first offered to the kernel without yielding (``send_frames_nowait``): a
local call's deliver leaves from the caller's own step, and a pump's replies
leave before it goes back to receiving, with no task switch either way.
Whatever the kernel does not take at once stays queued in the transport and
goes out first on the next awaited send. Frames queued by a finalizer only
ever wake a pump: a finalizer can run in the middle of anything.

Application code (the methods the peer calls, promise reactions) runs in
turns of ``captp.turns``: ``receive_frame`` only records work, and the pump
that fed it drains the turn queue before it sends the replies — still one
scheduler pass per batch of frames.

After an abort of our own, the pump that sends it half-closes the transport
(if it can): it closes its sending side, so the peer reads the abort and then
EOF, and drops whatever the peer still sends until the peer's EOF or
``Limits.drain_timeout``/``drain_bytes``; then it closes. The peer's late
frames are not looked at, so they are no protocol violation either.

Backpressure: frames wait in the session's outbox (and in a blocked send)
only up to ``Limits.max_outbox_bytes``. Beyond that the pump that would
receive stops reading the peer's frames until the sending pump makes room,
so a peer that calls without reading the replies fills its own socket
buffers, not our memory. If no room is made within ``Limits.stall_timeout``
seconds the session is aborted with ``peer-not-reading`` and the transport
closed without waiting for the abort frame to leave. The same bound holds
for the final flush of any ending session.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from .msgpack_profile import MSGPACK, MsgpackProfile
from .profile import WireProfile
from .session import (
    DEFAULT_LIMITS,
    R_CLOSED,
    R_STALLED,
    Budget,
    Limits,
    ProtocolError,
    RemoteRef,
    Session,
    SessionAborted,
)
from .transport import (
    FramedStream,
    MessageTransport,
    ProfileStream,
    TransportClosed,
    WebSocketTransport,
    memory_transport_pair,
)
from .turns import holding, run_turns

__all__ = [
    "Connection",
    "open_connection",
    "open_stream_connection",
    "open_websocket_connection",
    "open_memory_pair",
]

#: How long closing waits for the abort frame to leave before dropping the transport.
CLOSE_FLUSH_TIMEOUT = 1.0


class Connection:
    """A running CapTP session over a transport."""

    def __init__(self, session: Session, transport: MessageTransport) -> None:
        self.session = session
        self.transport = transport
        self._wake = trio.Event()
        self._closed = trio.Event()
        self._token = trio.lowlevel.current_trio_token()
        self._thread = threading.get_ident()
        #: A pump is inside ``receive``; the other one sends.
        self._receiving = False
        #: A pump is inside ``_flush``; it sends whatever is queued meanwhile.
        self._sending = False
        #: A pump is processing input and sends what it queues right after.
        self._deferring = False
        self._closing = False
        #: A pump is sending the last frames of an ended session.
        self._finishing = False
        #: Set when the other pump has left (the finishing pump may wait for it to stop reading).
        self._pump_left = trio.Event()
        #: Bytes handed to the transport by the send in progress.
        self._in_flight = 0
        #: Set (and replaced) whenever a send completes: there may be room now.
        self._room = trio.Event()
        #: The scope of the send in progress, cancelled to cut off a peer that does not read.
        self._send_scope: trio.CancelScope | None = None
        receive_frames = getattr(transport, "receive_frames", None)
        if receive_frames is None:
            receive_frame = transport.receive_frame

            async def receive_frames() -> list[bytes]:
                return [await receive_frame()]

        self._receive_frames = receive_frames
        #: The transport, if it can write without yielding (a ``FramedStream`` on an fd).
        self._fd_transport: FramedStream | None = (
            transport if isinstance(transport, FramedStream) and transport.can_send_nowait else None
        )
        session.on_wakeup = self._on_wakeup
        session.on_gc_wakeup = self._on_gc_wakeup

    def bootstrap(self) -> RemoteRef:
        """The peer's bootstrap object."""
        return self.session.bootstrap()

    @property
    def aborted(self) -> SessionAborted | None:
        return self.session.aborted

    def stats(self) -> dict[str, int]:
        """The session's table sizes and counts, and ``outbox_bytes``: what waits for the peer (``backlog``)."""
        return {**self.session.stats(), "outbox_bytes": self.backlog()}

    def close(self, reason: str = R_CLOSED) -> None:
        """Abort the session; the abort frame is sent and the transport closed."""
        self.session.abort(reason)
        self._on_wakeup()

    async def wait_closed(self) -> SessionAborted:
        """Wait until the session has ended; return why."""
        await self._closed.wait()
        assert self.session.aborted is not None
        return self.session.aborted

    # -- tasks -----------------------------------------------------------------
    def _on_wakeup(self) -> None:
        """The session queued frames in ordinary code (a local call, input being processed)."""
        if threading.get_ident() != self._thread:
            self._on_gc_wakeup()
            return
        if self._sending or self._deferring:
            # A pump that is sending, or about to send, picks the new frames
            # up itself; waking the other pump would only cost a task switch.
            return
        fd_transport = self._fd_transport
        if fd_transport is not None and self.session.aborted is None and not self._closing:
            # Write from the caller's own step if the kernel takes it at once:
            # no task switch, and nothing to cancel halfway.
            if fd_transport.send_frames_nowait(self.session.data_to_send()):
                return
        self._wake.set()

    def _on_gc_wakeup(self) -> None:
        """A finalizer queued frames: at any moment, maybe on another thread. Only wake a pump."""
        if threading.get_ident() == self._thread:
            if not (self._sending or self._deferring):
                self._wake.set()
        else:
            try:
                self._token.run_sync_soon(self._wake.set)
            except trio.RunFinishedError:
                pass

    def _has_pending(self) -> bool:
        return self._fd_transport is not None and self._fd_transport.pending

    def backlog(self) -> int:
        """Bytes waiting for the peer: queued in the session, left by a non-blocking write, being sent."""
        pending = self._fd_transport.pending_bytes if self._fd_transport is not None else 0
        return self.session.outbox_bytes + pending + self._in_flight

    def _signal_room(self) -> None:
        self._room.set()
        self._room = trio.Event()

    async def _wait_for_room(self) -> None:
        """The outbox is full and a pump is sending: wait until it makes room, or end the session."""
        limits = self.session.limits
        with trio.move_on_after(limits.stall_timeout):
            while self._sending and self.session.aborted is None and self.backlog() >= limits.max_outbox_bytes:
                await self._room.wait()
            return
        await self._cut_off(
            f"{R_STALLED}: {self.backlog()} bytes not taken for {limits.stall_timeout:g} s"
        )

    async def _cut_off(self, reason: str) -> None:
        """End a session whose peer does not read: abort, stop the send, close without flushing."""
        self.session.abort(reason)
        if self._closing:
            return
        self._closing = True
        if self._send_scope is not None:
            self._send_scope.cancel()
        self._wake.set()
        await self.transport.aclose()
        self._closed.set()

    async def _flush(self, frames: list[bytes]) -> None:
        """Send ``frames`` and whatever the session queues meanwhile, until nothing is left.

        Only one task sends at a time, so frames leave in order (bytes a
        non-blocking write left behind go first).
        """
        session = self.session
        send = self.transport.send_frames
        self._sending = True
        try:
            with trio.CancelScope() as scope:
                self._send_scope = scope
                while frames or self._has_pending():
                    self._in_flight = sum(map(len, frames))
                    await send(frames)
                    self._in_flight = 0
                    self._signal_room()
                    frames = session.data_to_send()
            if scope.cancelled_caught:
                raise TransportClosed("the peer stopped reading")
        finally:
            self._sending = False
            self._send_scope = None
            self._in_flight = 0
            self._signal_room()

    async def _pump(self) -> None:
        """Receive and process frames, or send queued ones; see the module docstring."""
        session = self.session
        try:
            while session.aborted is None:
                if not self._receiving and self.backlog() >= session.limits.max_outbox_bytes:
                    # Backpressure: read nothing more until the peer takes some of what is queued.
                    if self._sending:
                        await self._wait_for_room()
                    else:
                        await self._flush(session.data_to_send())
                elif not self._receiving:
                    self._receiving = True
                    try:
                        frames = await self._receive_frames()
                    finally:
                        self._receiving = False
                    self._deferring = True
                    try:
                        with holding():
                            for frame in frames:
                                session.receive_frame(frame)
                            # The session only recorded the work; application code runs here.
                            run_turns()
                    finally:
                        self._deferring = False
                    if not self._sending:
                        frames = session.data_to_send()
                        if frames or self._has_pending():
                            fd_transport = self._fd_transport
                            if fd_transport is not None:
                                if fd_transport.send_frames_nowait(frames):
                                    continue  # written at once; back to receiving
                                frames = []  # kept by the transport, sent first by _flush
                            self._wake.set()  # the other pump receives while this one sends
                            await self._flush(frames)
                elif not self._sending and ((frames := session.data_to_send()) or self._has_pending()):
                    await self._flush(frames)
                else:
                    wake = self._wake
                    await wake.wait()
                    if self._wake is wake:
                        self._wake = trio.Event()
        except ProtocolError as e:
            session.protocol_error(e.code, e.detail)
        except TransportClosed as e:
            session.connection_lost(str(e))
        except trio.Cancelled:
            # Cancelled from outside: nothing more can be sent. Close now, so
            # whoever waits for the end is not held for the flush timeout.
            if not self._closing:
                self._closing = True
                session.connection_lost("cancelled")
                with trio.CancelScope(shield=True):
                    await self.transport.aclose()
                self._closed.set()
            raise
        await self._finish()

    async def _finish(self) -> None:
        """The session has ended: send the abort frame, if any, then close.

        A pump still sending leaves this to that pump, which gets here once
        its last frame is out, and watches it: a peer that does not read
        gets ``Limits.stall_timeout`` seconds, then the transport is closed.
        """
        if self._closing:
            return
        if self._finishing:
            self._pump_left.set()
            return
        timeout = self.session.limits.stall_timeout
        if self._sending:
            with trio.move_on_after(timeout):
                await self._closed.wait()
                return
            await self._cut_off(f"{R_STALLED}: the last frames were not taken for {timeout:g} s")
            return
        self._finishing = True
        try:
            with trio.move_on_after(timeout):
                await self._flush(self.session.data_to_send())
        except TransportClosed as e:
            self.session.connection_lost(str(e))
        if self._closing:
            return
        try:
            if self.session.abort_queued:
                await self._half_close()
        finally:
            self._closing = True
            self._wake.set()  # the other pump, if waiting, ends too
            await self.transport.aclose()
            self._closed.set()

    async def _half_close(self) -> None:
        """After our abort has gone out: EOF to the peer, drop its late input, within the limits."""
        half_close = getattr(self.transport, "half_close", None)
        if half_close is None:
            return
        limits = self.session.limits
        with trio.move_on_after(limits.drain_timeout):
            self._wake.set()  # a pump waiting for work leaves; one reading leaves with its read
            if self._receiving:
                await self._pump_left.wait()
            await half_close(limits.drain_bytes)


@asynccontextmanager
async def open_connection(
    transport: MessageTransport,
    bootstrap: Any = None,
    *,
    name: str = "captp",
    limits: Limits = DEFAULT_LIMITS,
    debug: bool = False,
    budget: Budget | None = None,
    profile: WireProfile | None = None,
) -> AsyncIterator[Connection]:
    """Run a CapTP session over ``transport`` for the body of the ``async with``.

    ``budget``, if given, is shared with other sessions (see ``Budget``);
    ``profile`` is the session's wire profile (default: msgpack).
    """
    async with trio.open_nursery() as nursery:
        session = Session(
            bootstrap, limits=limits, name=name, spawn=nursery.start_soon, debug=debug, budget=budget,
            profile=MSGPACK if profile is None else profile,
        )
        conn = Connection(session, transport)
        nursery.start_soon(conn._pump)
        nursery.start_soon(conn._pump)
        try:
            yield conn
        finally:
            conn.close()
            with trio.move_on_after(CLOSE_FLUSH_TIMEOUT) as scope:
                scope.shield = True
                await conn._closed.wait()
            nursery.cancel_scope.cancel()


def open_stream_connection(
    stream: trio.abc.Stream, bootstrap: Any = None, **kwargs: Any
) -> Any:
    """``open_connection`` over a trio stream, framed as the profile frames a stream.

    The msgpack profile's length prefix is ``FramedStream``; any other
    profile's framing is its own splitter's (``ProfileStream``).
    """
    limits = kwargs.get("limits", DEFAULT_LIMITS)
    profile = kwargs.get("profile")
    transport: MessageTransport
    if profile is None or type(profile) is MsgpackProfile:
        transport = FramedStream(stream, max_frame_size=limits.max_frame_size)
    else:
        transport = ProfileStream(stream, profile, max_frame_size=limits.max_frame_size)
    return open_connection(transport, bootstrap, **kwargs)


def open_websocket_connection(ws: Any, bootstrap: Any = None, **kwargs: Any) -> Any:
    """``open_connection`` over a trio-websocket connection (binary messages).

    Frames are batched when the connection's subprotocol is
    ``WEBSOCKET_BATCH_SUBPROTOCOL`` (see ``WebSocketTransport``).
    """
    limits = kwargs.get("limits", DEFAULT_LIMITS)
    return open_connection(WebSocketTransport(ws, max_frame_size=limits.max_frame_size), bootstrap, **kwargs)


@asynccontextmanager
async def open_memory_pair(
    bootstrap_a: Any = None, bootstrap_b: Any = None, **kwargs: Any
) -> AsyncIterator[tuple[Connection, Connection]]:
    """Two connected sessions in this process: ``a`` reaches ``bootstrap_b`` and vice versa."""
    ta, tb = memory_transport_pair()
    async with open_connection(ta, bootstrap_a, name="a", **kwargs) as a:
        async with open_connection(tb, bootstrap_b, name="b", **kwargs) as b:
            yield a, b
