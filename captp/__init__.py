"""captp: a CapTP-style object-capability protocol in msgpack frames.

Knows nothing of daemons, names or HTTP. The sans-IO ``Session`` holds the
protocol; ``open_connection`` and friends drive it over trio transports.

    @far("Greeter")
    class Greeter:
        def hello(self, name): return f"hello {name}"

    async with open_stream_connection(stream, Greeter()) as conn:
        print(await E(conn.bootstrap()).hello("world"))
"""

from .codec import CodecError, Desc, decode, encode
from .connection import (
    Connection,
    open_connection,
    open_memory_pair,
    open_stream_connection,
    open_websocket_connection,
)
from .eventual import E
from .passable import Far, RemoteError, Tagged, far, interface_of, is_remotable
from .promise import Promise, Resolver, make_promise_kit
from .session import (
    PROTOCOL_VERSION,
    Limits,
    ProtocolError,
    RemotePromise,
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
    stdio_stream,
)

__all__ = [
    "CodecError",
    "Connection",
    "Desc",
    "E",
    "Far",
    "FramedStream",
    "Limits",
    "MessageTransport",
    "PROTOCOL_VERSION",
    "Promise",
    "ProtocolError",
    "RemoteError",
    "RemotePromise",
    "RemoteRef",
    "Resolver",
    "Session",
    "SessionAborted",
    "Tagged",
    "TransportClosed",
    "WebSocketTransport",
    "decode",
    "encode",
    "far",
    "interface_of",
    "is_remotable",
    "make_promise_kit",
    "memory_transport_pair",
    "open_connection",
    "open_memory_pair",
    "open_stream_connection",
    "open_websocket_connection",
    "stdio_stream",
]
