"""Raw HTTP and WebSocket clients for tests that talk to the gateway as a browser would.

Python cannot resolve ``*.localhost``: these connect to 127.0.0.1 and set the
Host header (and Origin) themselves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import ConnectionRejected, wrap_client_stream

#: The protocol's frame limit (trio-websocket's default is only 1 MiB).
MAX_MESSAGE = 16 * 1024 * 1024


async def http(
    port: int, target: str, host: str | None = "default", *, method: str = "GET", body: bytes | None = None,
    content_type: str = "application/octet-stream",
) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP/1.1 request (the target is sent exactly as given; ``host`` None sends no Host)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        lines = [f"{method} {target} HTTP/1.1"]
        if host is not None:
            lines.append(f"Host: {f'localhost:{port}' if host == 'default' else host}")
        if body is not None:
            lines += [f"Content-Type: {content_type}", f"Content-Length: {len(body)}"]
        lines += ["Connection: close", "", ""]
        await stream.send_all("\r\n".join(lines).encode() + (body or b""))
        data = b""
        with trio.fail_after(10):
            while b"\r\n\r\n" not in data and (chunk := await stream.receive_some(65536)):
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin1").split("\r\n")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = 0 if method == "HEAD" else int(headers.get("content-length", "0"))
            while len(body) < length and (chunk := await stream.receive_some(65536)):
                body += chunk
    finally:
        await stream.aclose()
    return int(status_line.split()[1]), headers, body


@asynccontextmanager
async def websocket(
    port: int, host: str | None = None, origin: str | None = None, *, path: str = "/_ocapd/ws", **options: Any
) -> AsyncIterator[Any]:
    """A WebSocket client; ``options`` go to trio-websocket (``subprotocols``, ``message_queue_size``)."""
    # Our own stream, closed in `finally`: the client library can leak it when the server closes first.
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        async with _unwrap_rejection(), trio.open_nursery() as nursery:
            headers = [(b"Origin", origin.encode())] if origin is not None else []
            ws = await wrap_client_stream(
                nursery, stream, host or f"localhost:{port}", path, extra_headers=headers,
                max_message_size=MAX_MESSAGE, **options,
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(2) as scope:
                    scope.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await stream.aclose()


@asynccontextmanager
async def _unwrap_rejection() -> AsyncIterator[None]:
    """The client raises a refused handshake from its reader task: surface it as itself."""
    try:
        yield
    except BaseExceptionGroup as group:
        rejected, _ = group.split(ConnectionRejected)
        if rejected is None:
            raise
        while isinstance(rejected, BaseExceptionGroup):
            rejected = rejected.exceptions[0]
        raise rejected from None
