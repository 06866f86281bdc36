"""The far side of tests/bench/captp_rtt.py: an echo peer in its own process.

    python tests/bench/rtt_peer.py {raw,floor,captp,ocapn} {pipe,tcp,ws}
    python tests/bench/rtt_peer.py pyro5 tcp

``raw`` echoes every frame back unchanged, using the same framing CapTP uses
on that transport; ``floor`` answers the least an RPC can (see ``FLOOR``
below) over that same transport; ``captp`` serves a CapTP session whose bootstrap object
has ``echo(value) -> value``; ``ocapn`` (tcp only) serves the same object
over the OCapN wire profile, at the swiss number ``OCAPN_SWISS``. Over ``pipe`` the peer speaks on its own
stdin/stdout; over ``tcp`` and ``ws`` it listens on 127.0.0.1 at a free port,
prints that port as one line on stdout, and serves one connection. Either way
it exits when the connection ends.

``pyro5`` serves the same ``echo`` as a Pyro5 object (Pyro5's defaults: the
serpent serializer, a thread pool server) on 127.0.0.1 at a free port,
prints its URI as one line on stdout, and exits when its stdin closes.
"""

from __future__ import annotations

import sys
from typing import Any

import trio

from ocapd.captp import (
    WEBSOCKET_BATCH_SUBPROTOCOL,
    FramedStream,
    TransportClosed,
    WebSocketTransport,
    far,
    open_stream_connection,
    open_websocket_connection,
    stdio_stream,
)

#: Where the ``ocapn`` peer offers its echo object (its bootstrap's ``fetch``).
OCAPN_SWISS = b"bench-echo"


@far("Echo")
class Echo:
    def echo(self, value: Any) -> Any:
        return value


async def _raw_echo(transport: Any) -> None:
    try:
        while True:
            await transport.send_frames([await transport.receive_frame()])
    except TransportClosed:
        pass


#: The ``floor`` peer is the least an RPC over these transports can do: each
#: frame is ``msgpack([call_id, method, args])``, answered at once with
#: ``msgpack([call_id, result])`` from a plain method call. No references,
#: promises, pipelining, turns, garbage collection or checks of what is passed:
#: what a CapTP call costs beyond it is what CapTP's semantics cost.
async def _floor_serve(transport: Any) -> None:
    import msgpack

    echo = Echo()
    packb, unpackb = msgpack.packb, msgpack.unpackb
    nowait = transport.send_frames_nowait if getattr(transport, "can_send_nowait", False) else None
    try:
        while True:
            replies = []
            for frame in await transport.receive_frames():
                call_id, method, args = unpackb(frame)
                replies.append(packb([call_id, getattr(echo, method)(*args)]))
            if nowait is None:
                await transport.send_frames(replies)
            elif not nowait(replies):
                await transport.send_frames([])  # what the kernel did not take at once
    except TransportClosed:
        pass


async def _serve_ocapn(stream: trio.abc.Stream) -> None:
    from ocapd.captp.ocapn_locators import PeerLocator
    from ocapd.captp.ocapn_node import OcapnNode

    node = OcapnNode(PeerLocator("bench-peer", "tcp-testing-only"))
    node.swiss[OCAPN_SWISS] = Echo()
    async with trio.open_nursery() as nursery:
        await nursery.start(node.run)
        await node.serve_stream(stream)
        nursery.cancel_scope.cancel()


async def _serve_stream(mode: str, stream: trio.abc.Stream) -> None:
    if mode == "ocapn":
        await _serve_ocapn(stream)
    elif mode == "raw":
        await _raw_echo(FramedStream(stream))
    elif mode == "floor":
        await _floor_serve(FramedStream(stream))
    else:
        async with open_stream_connection(stream, Echo(), name="bench-peer") as conn:
            await conn.wait_closed()


async def _serve_ws(mode: str, request: Any) -> None:
    # CapTP takes the batch subprotocol when the client offers it, as the gateway does.
    batch = WEBSOCKET_BATCH_SUBPROTOCOL in request.proposed_subprotocols
    ws = await request.accept(subprotocol=WEBSOCKET_BATCH_SUBPROTOCOL if batch and mode == "captp" else None)
    if mode == "raw":
        await _raw_echo(WebSocketTransport(ws))
    elif mode == "floor":
        await _floor_serve(WebSocketTransport(ws))
    else:
        async with open_websocket_connection(ws, Echo(), name="bench-peer") as conn:
            await conn.wait_closed()


def _announce(port: int | str) -> None:
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()


def serve_pyro5() -> None:
    """The Pyro5 baseline: the same echo, served by Pyro5 until stdin closes."""
    import threading

    import Pyro5.api

    @Pyro5.api.expose
    class Pyro5Echo:
        def echo(self, value: Any) -> Any:
            return value

    daemon = Pyro5.api.Daemon(host="127.0.0.1", port=0)
    uri = daemon.register(Pyro5Echo, "echo")

    def shut_down_at_eof() -> None:
        sys.stdin.buffer.read()
        daemon.shutdown()

    threading.Thread(target=shut_down_at_eof, daemon=True).start()
    _announce(str(uri))
    daemon.requestLoop()
    daemon.close()


async def main(mode: str, transport: str) -> None:
    if transport == "pipe":
        await _serve_stream(mode, stdio_stream())
        return
    async with trio.open_nursery() as nursery:
        if transport == "tcp":
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            _announce(listeners[0].socket.getsockname()[1])
            stream = await listeners[0].accept()
            for listener in listeners:
                await listener.aclose()
            await _serve_stream(mode, stream)
        else:
            from trio_websocket import serve_websocket

            done = trio.Event()

            async def handler(request: Any) -> None:
                try:
                    await _serve_ws(mode, request)
                finally:
                    done.set()

            server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
            _announce(server.port)
            await done.wait()
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    if sys.argv[1:] == ["pyro5", "tcp"]:
        serve_pyro5()
        sys.exit()
    if len(sys.argv) != 3 or sys.argv[1] not in ("raw", "floor", "captp", "ocapn") or sys.argv[2] not in ("pipe", "tcp", "ws"):
        sys.exit(__doc__)
    trio.run(main, sys.argv[1], sys.argv[2])
