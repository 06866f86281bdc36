"""OCapN netlayers: how two peers get a byte stream to each other.

A netlayer (OCapN's draft Netlayers specification) turns a peer locator into
a bidirectional, ordered byte stream, and serves streams to whoever dials the
location it announces. OCapN messages then travel on the stream as Syrup
values back to back (``syrup.SyrupReader`` cuts and reads them). Every
netlayer here has the same small interface:

- ``await nursery.start(netlayer.serve, handler, host, port)`` listens and
  returns the ``PeerLocator`` to give out (``location.to_uri()`` is its
  ``ocapn://`` URI); each incoming connection runs ``handler(connection)``
  in a task of its own, and is closed when the handler returns. A handler
  that raises is logged and its connection closed; the listener goes on.
- ``await netlayer.connect(locator)`` dials a peer and returns a
  ``PeerConnection``.

A ``PeerConnection`` holds the ``stream`` and ``peer_designator``: the
designator the netlayer *authenticated* for the other end, or None when it
authenticated nothing. What is and is not authenticated is each netlayer's
to say; ``tcp-testing-only`` authenticates nothing.

``TcpTestingOnlyNetlayer`` is the OCapN test suite's netlayer: the raw
stream over TCP, no encryption, no authentication, a made-up designator.
It is for the suite and for tests, so it listens on and dials loopback
addresses only unless built with ``insecure_allow_non_loopback=True``.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from .ocapn_locators import PeerLocator

__all__ = [
    "CONNECT_TIMEOUT",
    "address_groups",
    "address_key",
    "address_of",
    "Netlayer",
    "NetlayerError",
    "PeerConnection",
    "TcpTestingOnlyNetlayer",
]

log = logging.getLogger("captp.ocapn")

#: Seconds a dial may take before it fails. A peer on a LAN or the internet
#: answers a TCP connect (and a TLS handshake) in well under a second; a
#: dead address would otherwise wait for the kernel's timeout of minutes.
CONNECT_TIMEOUT = 20.0

TCP_TESTING_ONLY = "tcp-testing-only"


class NetlayerError(Exception):
    """A locator a netlayer cannot use, a peer it cannot reach or authenticate; one line."""


@dataclass(eq=False)
class PeerConnection(trio.abc.AsyncResource):
    """A byte stream to a peer, and what the netlayer knows of who it is.

    ``peer_designator`` is the designator the netlayer verified the other
    end holds (for a dial, the one in the locator dialled), or None if the
    netlayer verified nothing. ``outbound`` is True for a connection this
    side dialled.
    """

    stream: trio.abc.Stream
    netlayer: str
    outbound: bool
    peer_designator: str | None = None
    #: The other end's network address, grouped as ``address_key`` groups it
    #: (None if the netlayer has none): what per-address limits count by.
    remote_address: str | None = None
    #: Netlayer-specific facts about the other end (the TLS netlayer puts the peer's raw public key here).
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def authenticated(self) -> bool:
        """Whether the netlayer verified who is on the other end."""
        return self.peer_designator is not None

    async def aclose(self) -> None:
        await self.stream.aclose()


Handler = Callable[[PeerConnection], Awaitable[object]]


class Netlayer(Protocol):
    """What every netlayer offers (see the module's docstring)."""

    name: str

    async def serve(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[PeerLocator] = trio.TASK_STATUS_IGNORED,
    ) -> None: ...

    async def connect(self, locator: PeerLocator) -> PeerConnection: ...


def host_and_port(locator: PeerLocator, netlayer: str) -> tuple[str, int]:
    """The ``host`` and ``port`` hints of a locator for ``netlayer``, checked."""
    if locator.transport != netlayer:
        raise NetlayerError(f"{locator.to_uri()} is for the {locator.transport} netlayer, not {netlayer}")
    host, port = locator.hint("host"), locator.hint("port")
    if not host:
        raise NetlayerError(f"{locator.to_uri()} has no host hint; {netlayer} needs host and port")
    if port is None:
        raise NetlayerError(f"{locator.to_uri()} has no port hint; {netlayer} needs host and port")
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536 and port == str(int(port))):
        raise NetlayerError(f"{locator.to_uri()} has port hint {port!r}, not a port number (1 to 65535)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback IP address written as such (no name is looked up)."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def address_key(ip: str) -> str:
    """The group an IP address is counted in by per-address limits: an IPv4
    address itself, an IPv6 address's /64 (one subscriber's network: a host
    gets a whole /64 and picks any address in it at will)."""
    try:
        address = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


#: The wider network an IPv6 /64 is counted in as well: one site's /48 (a
#: tunnel broker hands anyone a /48 for free, and with it 65,536 /64s).
WIDE_PREFIX = 48
#: How many times a per-address limit a /48 holds: spreading over the /64s
#: of one /48 gains this factor, not 65,536. (Twice 16 connections is half
#: the listener's handshake slots: one /48 cannot take them all.)
WIDE_GROUP_FACTOR = 2


def address_groups(key: str) -> list[tuple[str, int]]:
    """The groups a per-address limit counts ``key`` (an ``address_key``) in,
    each with how many times the limit it may hold: the key itself (once),
    and for an IPv6 /64 its /48 (``WIDE_GROUP_FACTOR`` times)."""
    if not key.endswith("/64"):
        return [(key, 1)]
    try:
        wide = ipaddress.IPv6Network(key).supernet(new_prefix=WIDE_PREFIX)
    except ValueError:
        return [(key, 1)]
    return [(key, 1), (str(wide), WIDE_GROUP_FACTOR)]


def address_of(stream: trio.SocketStream) -> str | None:
    """``address_key`` of the other end of a TCP stream, or None if the socket no longer knows it."""
    try:
        peer = stream.socket.getpeername()
    except OSError:
        return None
    return address_key(peer[0]) if isinstance(peer, tuple) else None


async def dial_tcp(locator: PeerLocator, host: str, port: int) -> trio.SocketStream:
    """A TCP stream to ``host:port``, or a one-line ``NetlayerError`` naming the locator."""
    try:
        with trio.fail_after(CONNECT_TIMEOUT):
            return await trio.open_tcp_stream(host, port)
    except trio.TooSlowError:
        raise NetlayerError(f"cannot reach {locator.to_uri()}: no answer within {CONNECT_TIMEOUT:g} s") from None
    except OSError as error:
        # trio reports "all attempts to connect ... failed" and keeps each
        # attempt's error (connection refused, ...) in a group as the cause.
        cause: BaseException = error
        if isinstance(error.__cause__, BaseExceptionGroup) and error.__cause__.exceptions:
            cause = error.__cause__.exceptions[-1]
        reason = (cause.strerror if isinstance(cause, OSError) else None) or str(cause) or type(cause).__name__
        raise NetlayerError(f"cannot reach {locator.to_uri()}: {reason}") from None


async def open_listener(host: str, port: int) -> tuple[trio.SocketListener, int]:
    """A TCP listener on exactly ``host`` (an IP address) and the port it got."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    if len(listeners) != 1:  # an IP literal resolves to itself alone
        for extra in listeners:
            await extra.aclose()
        raise NetlayerError(f"listening on {host!r} gave {len(listeners)} sockets; give one IP address")
    listener = listeners[0]
    return listener, listener.socket.getsockname()[1]


async def serve_tcp(
    accept: Callable[[trio.SocketStream], Awaitable[object]],
    host: str,
    port: int,
    location_for: Callable[[int], PeerLocator],
    task_status: trio.TaskStatus[PeerLocator],
) -> None:
    """Listen on ``host:port``, run ``accept(stream)`` in a task per connection, until cancelled.

    Starts with ``location_for(bound_port)``. trio's ``serve_listeners``
    does the accepting, so running out of file descriptors or memory makes
    the listener wait and retry instead of ending it.
    """
    listener, bound_port = await open_listener(host, port)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, accept, [listener])
        task_status.started(location_for(bound_port))


async def run_handler(handler: Handler, connection: PeerConnection) -> None:
    """Run one connection's handler; its failure is logged and ends that connection only."""
    async with connection:
        try:
            await handler(connection)
        except Exception:
            log.exception("%s: the handler of a connection failed; closing it", connection.netlayer)


class TcpTestingOnlyNetlayer:
    """OCapN's ``tcp-testing-only`` netlayer: raw Syrup over TCP, for tests only.

    Nothing is encrypted and nothing is authenticated: anyone on the path
    reads and rewrites the stream, and either end may be anyone. The
    designator is a random name (``designator`` if given) that identifies
    nothing. Listening and dialling are limited to loopback addresses; pass
    ``insecure_allow_non_loopback=True`` to lift that, knowing the above.
    """

    name = TCP_TESTING_ONLY

    def __init__(self, *, designator: str | None = None, insecure_allow_non_loopback: bool = False) -> None:
        self.designator = designator if designator is not None else secrets.token_hex(16)
        self.insecure_allow_non_loopback = insecure_allow_non_loopback
        #: The location announced once ``serve`` has started.
        self.location: PeerLocator | None = None

    def _check_host(self, host: str, doing: str) -> None:
        if not self.insecure_allow_non_loopback and not is_loopback(host):
            raise NetlayerError(
                f"tcp-testing-only has no encryption or authentication, so it {doing} loopback addresses only "
                f"(127.0.0.1 or ::1), not {host!r}; build it with insecure_allow_non_loopback=True to force it"
            )

    async def serve(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[PeerLocator] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen on ``host:port`` (0: any free port) until cancelled; see the module's docstring."""
        self._check_host(host, "listens on")

        def location_for(bound_port: int) -> PeerLocator:
            self.location = PeerLocator(self.designator, TCP_TESTING_ONLY, {"host": host, "port": str(bound_port)})
            return self.location

        async def accept(stream: trio.SocketStream) -> None:
            connection = PeerConnection(stream, TCP_TESTING_ONLY, outbound=False, remote_address=address_of(stream))
            await run_handler(handler, connection)

        await serve_tcp(accept, host, port, location_for, task_status)

    async def connect(self, locator: PeerLocator) -> PeerConnection:
        """A stream to the peer at ``locator`` (unauthenticated: ``peer_designator`` is None)."""
        host, port = host_and_port(locator, TCP_TESTING_ONLY)
        self._check_host(host, "dials")
        stream = await dial_tcp(locator, host, port)
        return PeerConnection(stream, TCP_TESTING_ONLY, outbound=True, remote_address=address_of(stream))
