"""The trio driver: pumps one ``Session`` over one transport.

``open_connection`` runs a reader and a writer task in a nursery it owns; the
connection ends when the body of the ``async with`` exits (sending ``abort``
if the session still runs), when the peer aborts, or when the transport
closes. Async methods called by the peer run in the same nursery, so nothing
outlives the connection.
"""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import trio

from .session import (
    DEFAULT_LIMITS,
    R_CLOSED,
    Limits,
    ProtocolError,
    RemoteRef,
    Session,
    SessionAborted,
)
from .transport import (
    FramedStream,
    MessageTransport,
    TransportClosed,
    WebSocketTransport,
    memory_transport_pair,
)

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
        session.on_wakeup = self._on_wakeup

    def bootstrap(self) -> RemoteRef:
        """The peer's bootstrap object."""
        return self.session.bootstrap()

    @property
    def aborted(self) -> SessionAborted | None:
        return self.session.aborted

    def stats(self) -> dict[str, int]:
        return self.session.stats()

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
        if threading.get_ident() == self._thread:
            self._wake.set()
        else:  # a finalizer on another thread dropped a proxy
            try:
                self._token.run_sync_soon(self._wake.set)
            except trio.RunFinishedError:
                pass

    async def _reader(self) -> None:
        session = self.session
        receive = self.transport.receive_frame
        try:
            while session.aborted is None:
                try:
                    frame = await receive()
                except ProtocolError as e:
                    session.protocol_error(e.code, e.detail)
                    break
                session.receive_frame(frame)
        except TransportClosed as e:
            session.connection_lost(str(e))
        self._wake.set()

    async def _writer(self) -> None:
        session = self.session
        send = self.transport.send_frames
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                frames = session.data_to_send()
                if frames:
                    await send(frames)
                if session.aborted is not None and not session._outbox:
                    break
        except TransportClosed as e:
            session.connection_lost(str(e))
        finally:
            await self.transport.aclose()
            self._closed.set()


@asynccontextmanager
async def open_connection(
    transport: MessageTransport,
    bootstrap: Any = None,
    *,
    name: str = "captp",
    limits: Limits = DEFAULT_LIMITS,
    debug: bool = False,
) -> AsyncIterator[Connection]:
    """Run a CapTP session over ``transport`` for the body of the ``async with``."""
    async with trio.open_nursery() as nursery:
        session = Session(bootstrap, limits=limits, name=name, spawn=nursery.start_soon, debug=debug)
        conn = Connection(session, transport)
        nursery.start_soon(conn._reader)
        nursery.start_soon(conn._writer)
        conn._wake.set()  # send start-session
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
    """``open_connection`` over length-prefixed frames on a trio stream."""
    limits = kwargs.get("limits", DEFAULT_LIMITS)
    return open_connection(FramedStream(stream, max_frame_size=limits.max_frame_size), bootstrap, **kwargs)


def open_websocket_connection(ws: Any, bootstrap: Any = None, **kwargs: Any) -> Any:
    """``open_connection`` over a trio-websocket connection (binary messages)."""
    return open_connection(WebSocketTransport(ws), bootstrap, **kwargs)


@asynccontextmanager
async def open_memory_pair(
    bootstrap_a: Any = None, bootstrap_b: Any = None, **kwargs: Any
) -> AsyncIterator[tuple[Connection, Connection]]:
    """Two connected sessions in this process: ``a`` reaches ``bootstrap_b`` and vice versa."""
    ta, tb = memory_transport_pair()
    async with open_connection(ta, bootstrap_a, name="a", **kwargs) as a:
        async with open_connection(tb, bootstrap_b, name="b", **kwargs) as b:
            yield a, b
