"""CapTP over quart's WebSocket object: one binary message per frame, or several under the batch subprotocol.

Two small pieces:

- ``WebsocketConnection`` replaces quart-trio's ASGI WebSocket connection
  class. Quart cancels the whole handler the moment the peer disconnects;
  a CapTP session then cannot end in order (its pumps die mid-step and the
  driver waits out its close timeout). Here a disconnect instead ends the
  handler's message stream, so ``receive`` raises ``trio.EndOfChannel`` and
  the session ends the way it does on any transport. It also keeps an empty
  binary message as ``b""`` (quart turns it into ``None``).
- ``QuartWebSocketTransport`` implements captp's transport protocol over an
  accepted quart ``Websocket``; when the upgrade chose
  ``ocapd-captp.batch``, a message holds one or more length-prefixed frames
  (``captp.transport.pack_batch``/``split_batch``), handed to the driver a
  bounded slice at a time, as ``captp``'s own ``WebSocketTransport`` does.

Closing is left to the handler that owns the socket, which knows the close
code (1000, or 1001 when the daemon is stopping): ``aclose`` only stops the
transport from sending; ``close(code)`` sends the close frame.
"""

from __future__ import annotations

from typing import Any

import trio
from quart_trio.asgi import TrioASGIWebsocketConnection

from ocapd.captp import TransportClosed
from ocapd.captp.session import DEFAULT_LIMITS
from ocapd.captp.transport import BatchReader, MessageFrames, pack_batch

__all__ = ["QuartWebSocketTransport", "WebsocketConnection"]


class WebsocketConnection(TrioASGIWebsocketConnection):
    """Quart-trio's ASGI WebSocket connection, ending the message stream on disconnect."""

    def __init__(self, app: Any, scope: Any) -> None:
        super().__init__(app, scope)
        # One received message waits here at most (quart-trio keeps ten): a
        # session that stops reading (backpressure) pins 16 MiB, not 160.
        self.send_channel, self.receive_channel = trio.open_memory_channel[Any](1)

    async def handle_messages(self, nursery: trio.Nursery, receive: Any) -> None:  # type: ignore[override]
        try:
            while True:
                event = await receive()
                kind = event["type"]
                if kind == "websocket.receive":
                    message = event.get("bytes")
                    await self.send_channel.send(message if message is not None else event.get("text"))
                elif kind == "websocket.disconnect":
                    return
        finally:
            self.send_channel.close()


class QuartWebSocketTransport(MessageFrames):
    """One binary WebSocket message per CapTP frame, over an accepted quart ``Websocket``."""

    def __init__(
        self, websocket: Any, *, batching: bool = False, max_frame_size: int = DEFAULT_LIMITS.max_frame_size
    ) -> None:
        self._ws = websocket
        self._sending = True  # cleared by aclose (the session is over) or close
        self._closed = False  # the close frame went out
        #: The upgrade chose the batch subprotocol: several length-prefixed frames per message.
        self.batching = batching
        self._batch = BatchReader(max_frame_size)

    async def send_frames(self, frames: list[bytes]) -> None:
        for message in pack_batch(frames) if self.batching else frames:
            if not self._sending:
                raise TransportClosed("the WebSocket is closed")
            try:
                await self._ws.send(message)
            except Exception as e:  # hypercorn refuses sends on a closing socket with its own errors
                raise TransportClosed(str(e) or "connection lost") from None

    async def _receive_message(self) -> bytes | str:
        try:
            message: bytes | str = await self._ws.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            raise TransportClosed("the browser closed the WebSocket") from None
        return message

    async def aclose(self) -> None:
        """The session is over: send nothing more. The owner closes the socket with ``close``."""
        self._sending = False
        await trio.lowlevel.checkpoint()

    async def close(self, code: int) -> None:
        """Send the close frame with ``code`` (once; later calls do nothing)."""
        self._sending = False
        if self._closed:
            return
        self._closed = True
        try:
            await self._ws.close(code)
        except Exception:  # the peer is already gone
            pass
