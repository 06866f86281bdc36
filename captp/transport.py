"""Message transports for CapTP: how frames travel. Thin on purpose.

A transport moves whole frames (one encoded message each). Three kinds:

- ``FramedStream``: any ``trio.abc.Stream`` (Unix socket, TCP, subprocess
  pipes), each frame preceded by its length as a 4-byte big-endian unsigned
  integer (the msgpack profile's stream framing, written out here for speed).
- ``ProfileStream``: any ``trio.abc.Stream``, cut into frames by a wire
  profile's own splitter (``WireProfile.frame_splitter``): for profiles
  whose frames are not length-prefixed, such as OCapN's Syrup.
- ``WebSocketTransport``: one binary WebSocket message per frame
  (trio-websocket client or server connection); or, when both ends chose the
  subprotocol ``ocapd-captp.batch`` in the upgrade, one or more frames per
  message, each length-prefixed as on a byte stream (``pack_batch``,
  ``split_batch``), so that a burst of frames is one message and one pass of
  the driver rather than one of each per frame.
- ``memory_transport_pair()``: two transports joined in memory, for tests.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from .session import DEFAULT_LIMITS, R_FRAME_TOO_LARGE, R_MALFORMED, ProtocolError

if TYPE_CHECKING:
    from .profile import WireProfile

__all__ = [
    "MessageTransport",
    "TransportClosed",
    "FramedStream",
    "ProfileStream",
    "MessageFrames",
    "WebSocketTransport",
    "WEBSOCKET_BATCH_SUBPROTOCOL",
    "pack_batch",
    "split_batch",
    "MemoryTransport",
    "memory_transport_pair",
    "stdio_stream",
]

_HEADER = struct.Struct(">I")
#: Read size for stream transports: one syscall usually brings many small frames.
_READ_SIZE = 65_536


class TransportClosed(Exception):
    """The other end went away (EOF, reset or WebSocket close)."""


class MessageTransport(Protocol):
    """What the driver needs from a transport."""

    async def send_frames(self, frames: list[bytes]) -> None:
        """Send these frames in order. Raises TransportClosed if the peer is gone."""

    async def receive_frame(self) -> bytes:
        """The next frame. Raises TransportClosed at the end, ProtocolError on bad framing."""

    # A transport may also offer ``async receive_frames() -> list[bytes]``: the
    # next frame and any more that arrived with it. The driver then processes
    # them as one batch and answers them with one write.
    #
    # And ``async half_close(max_bytes) -> None``: close the sending side (the
    # peer reads everything sent, then EOF), then read and drop what the peer
    # still sends until EOF or ``max_bytes``; never raises. The driver uses it
    # after an abort, so a peer that was still writing is not reset before it
    # has read the abort.

    async def aclose(self) -> None:
        """Close; idempotent."""


def _fd_getter(stream: trio.abc.Stream, direction: str) -> Callable[[], int] | None:
    """A function giving the fd that ``stream`` sends or receives on (-1 once closed), or None if it has none.

    ``direction`` is "send" or "receive". Known shapes only: a trio
    ``FdStream`` (pipes; trio makes the fd non-blocking), a ``SocketStream``
    (its socket is non-blocking), or a ``StapledStream`` whose half in that
    direction is one of those. The fd is asked for on every use, never
    cached: a closed fd's number may belong to another file.
    """
    if isinstance(stream, trio.StapledStream):
        return _fd_getter(stream.send_stream if direction == "send" else stream.receive_stream, direction)
    if isinstance(stream, trio.lowlevel.FdStream):
        return stream.fileno
    if isinstance(stream, trio.SocketStream):
        return stream.socket.fileno
    return None


async def _eof_then_drain(stream: trio.abc.Stream, dropped: int, max_bytes: int) -> None:
    """EOF to the peer, then read and drop its bytes until its EOF or ``max_bytes`` in all.

    ``dropped``: what the transport had buffered already. A stream that cannot
    close only its sending side does nothing; a broken one ends the drain.
    """
    send_eof = getattr(stream, "send_eof", None)
    if send_eof is None:
        return
    try:
        await send_eof()
        while dropped < max_bytes:
            chunk = await stream.receive_some(_READ_SIZE)
            if not chunk:
                return
            dropped += len(chunk)
    except (trio.BrokenResourceError, trio.ClosedResourceError, trio.BusyResourceError, OSError):
        return


async def _close_stream(stream: trio.abc.Stream) -> None:
    """Close, even when cancelled; a stream already broken is closed enough."""
    with trio.CancelScope(shield=True):
        try:
            await stream.aclose()
        except (trio.BrokenResourceError, OSError):
            pass


class FramedStream:
    """Length-prefixed frames over a byte stream."""

    def __init__(self, stream: trio.abc.Stream, *, max_frame_size: int = DEFAULT_LIMITS.max_frame_size):
        self.stream = stream
        self.max_frame_size = max_frame_size
        self._buf = bytearray()
        self._pos = 0
        #: Bytes a non-blocking write could not take yet; they go before anything else.
        self._pending = b""
        self._send_fd = _fd_getter(stream, "send")
        self._receive_fd = _fd_getter(stream, "receive")

    @staticmethod
    def _encode(frames: list[bytes]) -> bytes:
        pack = _HEADER.pack
        if len(frames) == 1:
            return pack(len(frames[0])) + frames[0]
        return b"".join([part for f in frames for part in (pack(len(f)), f)])

    @property
    def can_send_nowait(self) -> bool:
        """The stream has a file descriptor to write to without yielding."""
        return self._send_fd is not None

    @property
    def pending(self) -> bool:
        """Bytes from ``send_frames_nowait`` are waiting for ``send_frames``."""
        return bool(self._pending)

    @property
    def pending_bytes(self) -> int:
        """How many bytes ``send_frames_nowait`` left for ``send_frames``."""
        return len(self._pending)

    def _take(self, frames: list[bytes]) -> bytes:
        """The bytes to send next: what is pending, then ``frames``."""
        data = self._encode(frames) if frames else b""
        if self._pending:
            data, self._pending = self._pending + data, b""
        return data

    def send_frames_nowait(self, frames: list[bytes]) -> bool:
        """Write ``frames`` now, without yielding to the scheduler, if the kernel takes them.

        Returns True when everything is written. Otherwise what was not
        written (all of it, if the stream has no file descriptor, is closed
        or is full) is kept and goes out first with the next ``send_frames``,
        which the caller must then make. Never raises: a broken stream shows
        itself on that ``send_frames``. Must not be called while a
        ``send_frames`` is in progress.
        """
        data = self._take(frames)
        if not data:
            return True
        fd = self._send_fd() if self._send_fd is not None else -1
        written = 0
        if fd >= 0:
            try:
                written = os.write(fd, data)
            except OSError:  # full (EAGAIN) or broken: the awaited send sorts it out
                written = 0
        if written < len(data):
            self._pending = data[written:]
            return False
        return True

    async def send_frames(self, frames: list[bytes]) -> None:
        data = self._take(frames)
        if not data:
            return
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise TransportClosed(str(e)) from None

    async def _read(self, size: int) -> bytes | bytearray:
        """The next bytes from the stream (at most ``size``); TransportClosed at its end.

        On a stream with a file descriptor this waits until the fd is
        readable and then reads it, rather than going through
        ``receive_some``: that one yields to the scheduler before reading
        and then often finds nothing, which costs a receiver that is
        mostly waiting a second scheduler pass and a second read for every
        frame. Waiting first is still a checkpoint on every call, so a
        peer that keeps the fd busy cannot starve the other tasks.
        """
        get_fd = self._receive_fd
        chunk: bytes | bytearray
        if get_fd is None:
            try:
                chunk = await self.stream.receive_some(size)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                raise TransportClosed(str(e)) from None
        else:
            while True:
                fd = get_fd()
                if fd < 0:
                    raise TransportClosed("the stream is closed")
                try:
                    await trio.lowlevel.wait_readable(fd)
                    chunk = os.read(fd, size)
                except BlockingIOError:  # readable turned out to mean nothing yet
                    continue
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    raise TransportClosed(str(e) or "the stream is closed") from None
                break
        if not chunk:
            raise TransportClosed("end of stream")
        return chunk

    async def _fill(self, need: int) -> None:
        """Read until at least ``need`` unread bytes are buffered."""
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        while len(self._buf) - self._pos < need:
            chunk = await self._read(max(_READ_SIZE, need))
            if self._pos > _READ_SIZE:  # compact now and then, not on every frame
                del self._buf[: self._pos]
                self._pos = 0
            self._buf += chunk

    async def receive_frame(self) -> bytes:
        await self._fill(4)
        (length,) = _HEADER.unpack_from(self._buf, self._pos)
        if length > self.max_frame_size:
            raise ProtocolError(R_FRAME_TOO_LARGE, f"{length} bytes announced")
        await self._fill(4 + length)
        start = self._pos + 4
        self._pos = start + length
        return bytes(self._buf[start : self._pos])

    async def receive_frames(self) -> list[bytes]:
        """The next frame and every further complete frame already buffered.

        One read often brings many frames (a peer pipelining calls); taking
        them together lets the driver answer them all in one write. A bad
        header ends the batch instead of raising, so the frames before it are
        still processed; the next call raises.

        This is the driver's receive path, so it is one coroutine: the
        parsing and the fd wait of ``receive_frame``/``_fill``/``_read``
        inlined, which saves resuming three frames on every wake-up.
        """
        frames: list[bytes] = []
        unpack_from, max_size = _HEADER.unpack_from, self.max_frame_size
        get_fd = self._receive_fd
        buf = self._buf
        while True:
            pos, end = self._pos, len(buf)
            need = 4
            while end - pos >= 4:
                (length,) = unpack_from(buf, pos)
                if length > max_size:
                    if frames:
                        break
                    raise ProtocolError(R_FRAME_TOO_LARGE, f"{length} bytes announced")
                if end - pos - 4 < length:
                    need = 4 + length
                    break
                pos += 4
                frames.append(bytes(buf[pos : pos + length]))
                pos += length
            if frames:
                self._pos = pos
                return frames
            if pos == end:
                buf.clear()
                pos = 0
            elif pos > _READ_SIZE:  # compact now and then, not on every frame
                del buf[:pos]
                pos = 0
            self._pos = pos
            size = max(_READ_SIZE, need - (len(buf) - pos))
            if get_fd is None:
                chunk = await self._read(size)
            else:
                fd = get_fd()
                if fd < 0:
                    raise TransportClosed("the stream is closed")
                try:
                    await trio.lowlevel.wait_readable(fd)
                    chunk = os.read(fd, size)
                except BlockingIOError:  # readable turned out to mean nothing yet
                    continue
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                    raise TransportClosed(str(e) or "the stream is closed") from None
                if not chunk:
                    raise TransportClosed("end of stream")
            buf += chunk

    async def half_close(self, max_bytes: int) -> None:
        """See ``MessageTransport``: EOF to the peer, then drop its input until EOF or ``max_bytes``.

        Reads raw bytes, not frames: nothing is buffered, whatever the peer
        announces. A stream that cannot close only its sending side does nothing.
        """
        dropped = len(self._buf) - self._pos
        self._buf.clear()
        self._pos = 0
        await _eof_then_drain(self.stream, dropped, max_bytes)

    async def aclose(self) -> None:
        await _close_stream(self.stream)


class ProfileStream:
    """Frames of a byte stream as a wire profile writes and cuts them."""

    def __init__(
        self, stream: trio.abc.Stream, profile: WireProfile, *, max_frame_size: int = DEFAULT_LIMITS.max_frame_size
    ) -> None:
        self.stream = stream
        self.max_frame_size = max_frame_size
        self._stream_bytes = profile.stream_bytes
        self._splitter = profile.frame_splitter(max_frame_size)
        self._frames: list[bytes] = []

    async def send_frames(self, frames: list[bytes]) -> None:
        if not frames:
            return
        try:
            await self.stream.send_all(self._stream_bytes(frames))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
            raise TransportClosed(str(e)) from None

    async def receive_frames(self) -> list[bytes]:
        """Every frame complete so far (at least one); ``ProtocolError`` from the splitter."""
        while not self._frames:
            try:
                chunk = await self.stream.receive_some(_READ_SIZE)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as e:
                raise TransportClosed(str(e)) from None
            if not chunk:
                raise TransportClosed("end of stream")
            self._frames = self._splitter.feed(bytes(chunk))  # the same object when it is bytes already
        frames, self._frames = self._frames, []
        return frames

    async def receive_frame(self) -> bytes:
        if not self._frames:
            self._frames = await self.receive_frames()
        return self._frames.pop(0)

    async def half_close(self, max_bytes: int) -> None:
        """See ``MessageTransport``: EOF to the peer, then drop its input until EOF or ``max_bytes``."""
        await _eof_then_drain(self.stream, self._splitter.buffered, max_bytes)

    async def aclose(self) -> None:
        await _close_stream(self.stream)


#: Seconds a WebSocket's close handshake may take before the transport stops waiting for the peer's answer.
WEBSOCKET_CLOSE_TIMEOUT = 2.0

#: The WebSocket subprotocol under which a binary message holds one or more
#: frames, each preceded by its length as on a byte stream (docs/protocol.md §2).
#: Chosen in the upgrade, before any frame, so a peer that does not know it
#: simply does not choose it and gets one frame per message.
WEBSOCKET_BATCH_SUBPROTOCOL = "ocapd-captp.batch"
#: A sender fills one batch message up to this many bytes; a larger frame goes
#: in a message of its own. Big enough that a pipelined burst is a handful of
#: messages, small enough that one message is no burden on any peer.
BATCH_MESSAGE_BYTES = 64 * 1024
#: The driver is handed at most this many bytes of frames from one message at
#: a time (at least one frame); the rest wait in the transport. Between two
#: takes the driver checks its outbox, so a message packed with tiny calls
#: cannot make it answer them all before backpressure is looked at, as on a
#: byte stream, where it reads 64 KiB at a time.
BATCH_TAKE_BYTES = _READ_SIZE


def pack_batch(frames: list[bytes]) -> list[bytes]:
    """``frames`` as batch messages: each frame length-prefixed, joined up to ``BATCH_MESSAGE_BYTES`` a message."""
    pack = _HEADER.pack
    messages: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for frame in frames:
        if parts and size + 4 + len(frame) > BATCH_MESSAGE_BYTES:
            messages.append(b"".join(parts))
            parts, size = [], 0
        parts += (pack(len(frame)), frame)
        size += 4 + len(frame)
    if parts:
        messages.append(b"".join(parts))
    return messages


def split_batch(message: bytes, max_frame_size: int) -> list[bytes]:
    """All the frames of one batch message, in order (tests and vectors; the transports use ``BatchReader``).

    ``ProtocolError`` as ``BatchReader.take``, for any point of the message:
    what this returns is the whole message or nothing.
    """
    reader = BatchReader(max_frame_size)
    reader.feed(message)
    frames: list[bytes] = []
    while not reader.empty:
        frames += reader.take(len(message))
    return frames


class BatchReader:
    """The frames of received batch messages, read a bounded slice at a time.

    A message is read as the driver asks for its frames, not split up front:
    one message may be a peer's 16 MiB of 4-byte headers, and reading all of
    it before the first frame was looked at would be work no byte stream
    lets a peer cause. As on a stream, the frames before a bad length or a
    cut frame are handed out first, and the error comes with the next take.
    """

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._message = b""
        self._pos = 0

    @property
    def empty(self) -> bool:
        return self._pos >= len(self._message)

    def feed(self, message: bytes) -> None:
        """Start on the next ``message`` (only when ``empty``). An empty message is ``malformed-frame``."""
        if not message:
            raise ProtocolError(R_MALFORMED, "empty batch message")
        self._message, self._pos = message, 0

    def take(self, max_bytes: int) -> list[bytes]:
        """The next frames of the current message: at least one, then as many as fit in ``max_bytes``.

        Each frame counts with its 4-byte length, so a message of empty
        frames is handed out ``max_bytes // 4`` at a time.
        ``ProtocolError``: ``frame-too-large`` for a length over
        ``max_frame_size`` (on the announced length, as on a stream),
        ``malformed-frame`` for a message that ends inside a length or a frame.
        """
        message, pos, end = self._message, self._pos, len(self._message)
        unpack_from, limit = _HEADER.unpack_from, self.max_frame_size
        frames: list[bytes] = []
        size = 0
        while pos < end:
            error = None
            if end - pos < 4:
                error = ProtocolError(R_MALFORMED, "batch message ends inside a frame length")
            else:
                (length,) = unpack_from(message, pos)
                if length > limit:
                    error = ProtocolError(R_FRAME_TOO_LARGE, f"{length} bytes announced")
                elif end - pos - 4 < length:
                    error = ProtocolError(R_MALFORMED, "batch message ends inside a frame")
            if error is not None:
                if frames:
                    break  # the good frames first; the next take starts here and raises
                raise error
            if frames and size + 4 + length > max_bytes:
                break
            frames.append(message[pos + 4 : pos + 4 + length])
            size += 4 + length
            pos += 4 + length
        if pos >= end:
            self._message, self._pos = b"", 0
        else:
            self._pos = pos
        return frames

    async def frames(self, next_message: Callable[[], Awaitable[bytes]], max_bytes: int) -> list[bytes]:
        """``take(max_bytes)``, from the next message (``await next_message()``) when this one is done."""
        if self.empty:
            self.feed(await next_message())
        return self.take(max_bytes)


class MessageFrames:
    """Receiving frames from binary messages: one frame per message, or batches.

    The part every WebSocket transport shares (this module's, the
    gateway's): a subclass sets ``batching`` and ``_batch`` and gives
    ``_receive_message``, the next message as its WebSocket library hands it.
    """

    batching: bool
    _batch: BatchReader

    async def _receive_message(self) -> bytes | str:
        raise NotImplementedError

    async def _message(self) -> bytes:
        message = await self._receive_message()
        if not isinstance(message, bytes):
            raise ProtocolError(R_MALFORMED, "text WebSocket message; CapTP frames are binary")
        return message

    async def receive_frames(self) -> list[bytes]:
        """The next frames: one message's, or up to ``BATCH_TAKE_BYTES`` of them when batching."""
        if not self.batching:
            return [await self._message()]
        return await self._batch.frames(self._message, BATCH_TAKE_BYTES)

    async def receive_frame(self) -> bytes:
        if not self.batching:
            return await self._message()
        return (await self._batch.frames(self._message, 0))[0]


class WebSocketTransport(MessageFrames):
    """Binary WebSocket messages over a trio-websocket client or server connection.

    One frame per message, unless the connection's subprotocol is
    ``WEBSOCKET_BATCH_SUBPROTOCOL``: then each message holds one or more
    length-prefixed frames, and ``receive_frames`` hands them to the driver
    at most ``BATCH_TAKE_BYTES`` at a time.
    """

    def __init__(self, ws: Any, *, max_frame_size: int = DEFAULT_LIMITS.max_frame_size) -> None:
        self.ws = ws
        self.max_frame_size = max_frame_size
        #: Both ends chose the batch subprotocol in the upgrade.
        self.batching = getattr(ws, "subprotocol", None) == WEBSOCKET_BATCH_SUBPROTOCOL
        self._batch = BatchReader(max_frame_size)

    async def send_frames(self, frames: list[bytes]) -> None:
        from trio_websocket import ConnectionClosed

        try:
            for message in pack_batch(frames) if self.batching else frames:
                await self.ws.send_message(message)
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise TransportClosed(str(e)) from None

    async def _receive_message(self) -> bytes | str:
        from trio_websocket import ConnectionClosed

        try:
            message: bytes | str = await self.ws.get_message()
        except (ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise TransportClosed(str(e)) from None
        return message

    async def aclose(self) -> None:
        # Shielded, so that a cancelled caller still closes; bounded, because
        # trio-websocket waits for the peer's close frame with no deadline and
        # a peer that never sends one would hold the closer forever.
        with trio.move_on_after(WEBSOCKET_CLOSE_TIMEOUT) as scope:
            scope.shield = True
            try:
                await self.ws.aclose()
            except Exception:  # closing a broken socket is not an error worth raising
                pass


class MemoryTransport:
    """One end of an in-memory pair (see ``memory_transport_pair``)."""

    def __init__(self, send: trio.MemorySendChannel[bytes], receive: trio.MemoryReceiveChannel[bytes]):
        self._send = send
        self._receive = receive

    async def send_frames(self, frames: list[bytes]) -> None:
        try:
            for frame in frames:
                await self._send.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as e:
            raise TransportClosed(str(e) or "peer closed") from None

    async def receive_frame(self) -> bytes:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
            raise TransportClosed("peer closed") from None

    async def aclose(self) -> None:
        await self._send.aclose()
        await self._receive.aclose()


def memory_transport_pair(buffer: int = 1024) -> tuple[MemoryTransport, MemoryTransport]:
    """Two transports joined back to back."""
    a_send, b_receive = trio.open_memory_channel[bytes](buffer)
    b_send, a_receive = trio.open_memory_channel[bytes](buffer)
    return MemoryTransport(a_send, a_receive), MemoryTransport(b_send, b_receive)


def stdio_stream() -> trio.StapledStream[Any, Any]:
    """This process's stdin (receive) and stdout (send) as one trio stream.

    For a subprocess speaking CapTP over its pipes; nothing else may then
    write to stdout.
    """
    import os

    return trio.StapledStream(
        trio.lowlevel.FdStream(os.dup(1)), trio.lowlevel.FdStream(os.dup(0))
    )
