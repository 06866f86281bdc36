"""The tcp-testing-only netlayer, on real sockets on 127.0.0.1: it serves and
dials the raw byte stream the OCapN test suite speaks, says its location as the
suite's netlayer does (host and port hints), never claims to know who is on the
other end, and will not listen on or dial anything but loopback unless forced
by its clearly named flag.
"""

from __future__ import annotations

import socket

import pytest
import trio

from ocapd.captp.ocapn_locators import PeerLocator
from ocapd.captp.ocapn_netlayers import (
    NetlayerError,
    PeerConnection,
    TcpTestingOnlyNetlayer,
)


async def echo_once(connection: PeerConnection) -> None:
    data = await connection.stream.receive_some(1024)
    await connection.stream.send_all(b"echo:" + data)


async def test_it_serves_on_loopback_and_says_where_as_an_ocapn_location(nursery: trio.Nursery) -> None:
    netlayer = TcpTestingOnlyNetlayer()
    location = await nursery.start(netlayer.serve, echo_once)
    assert isinstance(location, PeerLocator)
    assert location.transport == "tcp-testing-only"
    assert location.hint("host") == "127.0.0.1"
    port = location.hint("port")
    assert port is not None and port.isdigit() and int(port) > 0
    assert netlayer.location == location
    assert PeerLocator.from_uri(location.to_uri()) == location
    assert location.to_uri().startswith(f"ocapn://{location.designator}.tcp-testing-only?host=127.0.0.1&port=")


async def test_a_dial_reaches_the_listener_and_bytes_flow_both_ways(nursery: trio.Nursery) -> None:
    server = TcpTestingOnlyNetlayer()
    location = await nursery.start(server.serve, echo_once)
    connection = await TcpTestingOnlyNetlayer().connect(location)
    async with connection:
        await connection.stream.send_all(b"<3'abc>")
        assert await connection.stream.receive_some(1024) == b"echo:<3'abc>"


async def test_neither_side_claims_to_know_who_is_on_the_other_end(nursery: trio.Nursery) -> None:
    seen: list[PeerConnection] = []

    async def remember(connection: PeerConnection) -> None:
        seen.append(connection)
        await echo_once(connection)

    location = await nursery.start(TcpTestingOnlyNetlayer().serve, remember)
    async with await TcpTestingOnlyNetlayer().connect(location) as outbound:
        assert outbound.outbound and not outbound.authenticated
        assert outbound.peer_designator is None
        await outbound.stream.send_all(b"x")
        await outbound.stream.receive_some(10)
    assert len(seen) == 1
    assert not seen[0].outbound and not seen[0].authenticated and seen[0].peer_designator is None


async def test_a_plain_tcp_client_is_enough_to_talk_to_it(nursery: trio.Nursery) -> None:
    """The suite dials with a bare socket and writes Syrup: nothing else is on the wire."""
    location = await nursery.start(TcpTestingOnlyNetlayer().serve, echo_once)
    stream = await trio.open_tcp_stream("127.0.0.1", int(location.hint("port") or 0))
    async with stream:
        await stream.send_all(b"t")
        assert await stream.receive_some(100) == b"echo:t"


async def test_each_connection_is_handled_on_its_own(nursery: trio.Nursery) -> None:
    """A connection whose handler waits does not hold up the next one."""
    release = trio.Event()

    async def handler(connection: PeerConnection) -> None:
        if await connection.stream.receive_some(1) == b"w":
            await release.wait()
        await connection.stream.send_all(b"ok")

    location = await nursery.start(TcpTestingOnlyNetlayer().serve, handler)
    netlayer = TcpTestingOnlyNetlayer()
    async with await netlayer.connect(location) as waiting, await netlayer.connect(location) as other:
        await waiting.stream.send_all(b"w")
        await other.stream.send_all(b"n")
        assert await other.stream.receive_some(10) == b"ok"
        release.set()
        assert await waiting.stream.receive_some(10) == b"ok"


async def test_a_given_designator_is_kept() -> None:
    async with trio.open_nursery() as nursery:
        location = await nursery.start(TcpTestingOnlyNetlayer(designator="peer-one").serve, echo_once)
        assert location.designator == "peer-one"
        nursery.cancel_scope.cancel()


async def test_two_netlayers_make_up_different_designators(nursery: trio.Nursery) -> None:
    a = await nursery.start(TcpTestingOnlyNetlayer().serve, echo_once)
    b = await nursery.start(TcpTestingOnlyNetlayer().serve, echo_once)
    assert a.designator != b.designator


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent, this only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "10.0.0.1", "example.org", ""])
async def test_it_refuses_to_listen_anywhere_but_loopback(host: str, nursery: trio.Nursery) -> None:
    netlayer = TcpTestingOnlyNetlayer()
    with pytest.raises(NetlayerError, match="loopback") as caught:
        await nursery.start(netlayer.serve, echo_once, host)
    assert "\n" not in str(caught.value)
    assert "insecure_allow_non_loopback" in str(caught.value)


async def test_forcing_it_lets_it_listen_on_another_address(nursery: trio.Nursery) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address")
    netlayer = TcpTestingOnlyNetlayer(insecure_allow_non_loopback=True)
    location = await nursery.start(netlayer.serve, echo_once, address)
    assert location.hint("host") == address
    async with await netlayer.connect(location) as connection:
        await connection.stream.send_all(b"x")
        assert await connection.stream.receive_some(10) == b"echo:x"


async def test_it_listens_on_ipv6_loopback_too(nursery: trio.Nursery) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        location = await nursery.start(TcpTestingOnlyNetlayer().serve, echo_once, "::1")
    except OSError:
        pytest.skip("IPv6 loopback is not configured here")
    assert location.hint("host") == "::1"
    async with await TcpTestingOnlyNetlayer().connect(location) as connection:
        await connection.stream.send_all(b"6")
        assert await connection.stream.receive_some(10) == b"echo:6"


@pytest.mark.parametrize("host", ["192.0.2.7", "0.0.0.0", "example.org", "10.1.2.3"])
async def test_it_refuses_to_dial_anything_but_loopback(host: str) -> None:
    """A handoff-give names the exporter's location: a hostile gifter must not make a test peer dial out."""
    locator = PeerLocator("d", "tcp-testing-only", {"host": host, "port": "9"})
    with pytest.raises(NetlayerError, match="loopback"):
        await TcpTestingOnlyNetlayer().connect(locator)


@pytest.mark.parametrize(
    ("hints", "complaint"),
    [
        ({"port": "9"}, "host"),
        ({"host": "127.0.0.1"}, "port"),
        ({"host": "127.0.0.1", "port": "http"}, "port"),
        ({"host": "127.0.0.1", "port": "0"}, "port"),
        ({"host": "127.0.0.1", "port": "65536"}, "port"),
        ({"host": "127.0.0.1", "port": "+9"}, "port"),
    ],
)
async def test_a_locator_without_usable_hints_is_refused(hints: dict[str, str], complaint: str) -> None:
    with pytest.raises(NetlayerError, match=complaint) as caught:
        await TcpTestingOnlyNetlayer().connect(PeerLocator("d", "tcp-testing-only", hints))
    assert "\n" not in str(caught.value)


async def test_a_locator_for_another_netlayer_is_refused() -> None:
    with pytest.raises(NetlayerError, match="tls-ed25519"):
        await TcpTestingOnlyNetlayer().connect(PeerLocator("d", "tls-ed25519", {"host": "127.0.0.1", "port": "9"}))


async def test_dialling_a_port_nobody_listens_on_fails_with_one_line() -> None:
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    locator = PeerLocator("d", "tcp-testing-only", {"host": "127.0.0.1", "port": str(port)})
    with pytest.raises(NetlayerError, match="cannot reach") as caught:
        await TcpTestingOnlyNetlayer().connect(locator)
    assert "\n" not in str(caught.value)
    assert locator.to_uri() in str(caught.value)


async def test_a_handler_that_fails_does_not_stop_the_listener(nursery: trio.Nursery) -> None:
    async def handler(connection: PeerConnection) -> None:
        if await connection.stream.receive_some(1) == b"!":
            raise RuntimeError("handler bug")
        await connection.stream.send_all(b"ok")

    location = await nursery.start(TcpTestingOnlyNetlayer().serve, handler)
    netlayer = TcpTestingOnlyNetlayer()
    async with await netlayer.connect(location) as bad:
        await bad.stream.send_all(b"!")
        assert await bad.stream.receive_some(10) == b""
    async with await netlayer.connect(location) as good:
        await good.stream.send_all(b".")
        assert await good.stream.receive_some(10) == b"ok"
