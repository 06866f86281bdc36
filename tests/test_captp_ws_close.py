"""Ending a CapTP session over a WebSocket whose peer never answers the close handshake.

trio-websocket's ``aclose`` waits for the peer's close frame without a
deadline; the transport closes under a shield (a cancelled caller must still
release the socket), so an unbounded wait there hangs whoever ends the
session — a test, the CLI, the daemon's own client of another daemon —
forever, beyond the reach of any timeout.
"""

from __future__ import annotations

from functools import partial

import trio
import wsproto
from gateway_clients import websocket
from wsproto.events import AcceptConnection, Request

from ocapd.captp import open_websocket_connection

#: Seconds after which a session that never ends fails the test (never reached when it passes).
SAFETY_NET = 30


async def _accept_then_go_silent(stream: trio.SocketStream) -> None:
    """Complete the upgrade, then never read again (so never answer a close)."""
    conn = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
    while True:
        conn.receive_data(await stream.receive_some(65536))
        for event in conn.events():
            if isinstance(event, Request):
                await stream.send_all(conn.send(AcceptConnection()))
                await trio.sleep_forever()


async def test_a_session_over_a_websocket_whose_peer_never_answers_the_close_still_ends() -> None:
    async with trio.open_nursery() as nursery:
        [listener] = await nursery.start(partial(trio.serve_tcp, _accept_then_go_silent, 0, host="127.0.0.1"))
        port = listener.socket.getsockname()[1]
        ended = trio.Event()

        async def one_session() -> None:
            async with websocket(port) as ws:
                async with open_websocket_connection(ws, None, name="silent-peer") as conn:
                    conn.close("closed: done")
                ended.set()

        nursery.start_soon(one_session)
        # Not a timing: the close ends at all (the transport bounds the handshake,
        # WEBSOCKET_CLOSE_TIMEOUT); before that it never did, and the guard fails it.
        with trio.fail_after(SAFETY_NET):
            await ended.wait()
        nursery.cancel_scope.cancel()
