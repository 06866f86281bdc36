"""captp: a CapTP-style object-capability protocol in msgpack frames.

Knows nothing of daemons, names or HTTP. The sans-IO ``Session`` holds the
protocol; ``open_connection`` and friends drive it over trio transports.

    @far("Greeter")
    class Greeter:
        def hello(self, name): return f"hello {name}"

    async with open_stream_connection(stream, Greeter()) as conn:
        print(await E(conn.bootstrap()).hello("world"))

The trio drivers are imported on first use, so a program that only drives a
``Session`` itself (a blocking command-line client) never pays for importing trio.
"""

from __future__ import annotations

import importlib
from typing import Any

from .codec import CodecError, Desc, decode, encode
from .eventual import E
from .messages import DescKind, Descriptor
from .msgpack_profile import MSGPACK, MsgpackProfile
from .passable import Far, Rejected, RemoteError, Symbol, Tagged, far, interface_of, is_far_function, is_remotable
from .profile import WireProfile
from .promise import Promise, Resolver, make_promise_kit
from .session import (
    PROTOCOL_VERSION,
    Budget,
    LimitExceeded,
    Limits,
    ProtocolError,
    RemotePromise,
    RemoteRef,
    Session,
    SessionAborted,
)

_LAZY = {
    "Connection": "connection",
    "open_connection": "connection",
    "open_memory_pair": "connection",
    "open_stream_connection": "connection",
    "open_websocket_connection": "connection",
    "FramedStream": "transport",
    "ProfileStream": "transport",
    "MessageTransport": "transport",
    "TransportClosed": "transport",
    "WebSocketTransport": "transport",
    "WEBSOCKET_BATCH_SUBPROTOCOL": "transport",
    "memory_transport_pair": "transport",
    "stdio_stream": "transport",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'captp' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "Budget",
    "CodecError",
    "LimitExceeded",
    "Desc",
    "DescKind",
    "Descriptor",
    "E",
    "Far",
    "Limits",
    "MSGPACK",
    "MsgpackProfile",
    "PROTOCOL_VERSION",
    "Promise",
    "ProtocolError",
    "Rejected",
    "RemoteError",
    "RemotePromise",
    "RemoteRef",
    "Resolver",
    "Session",
    "SessionAborted",
    "Symbol",
    "Tagged",
    "WireProfile",
    "decode",
    "encode",
    "far",
    "interface_of",
    "is_far_function",
    "is_remotable",
    "make_promise_kit",
    *_LAZY,
]
