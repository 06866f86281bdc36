"""The secure netlayer (TLS 1.3, each side known by its Ed25519 key), on real
sockets on 127.0.0.1: a dial reaches the peer its locator's designator names
or fails saying so; both ends learn the other's designator; plaintext, garbage,
old TLS, a silent client and forged or relayed client proofs are refused
without the handler ever running and without hurting the listener.
"""

from __future__ import annotations

import ssl

import pytest
import trio
import trio.testing

from ocapd.captp.ocapn_keys import generate_key, public_key_bytes
from ocapd.captp.ocapn_locators import PeerLocator
from ocapd.captp.ocapn_netlayers import NetlayerError, PeerConnection, TcpTestingOnlyNetlayer
from ocapd.captp.ocapn_tls import (
    CLIENT_PROOF_BYTES,
    TLS_NETLAYER,
    TlsNetlayer,
    designator_for,
    public_key_for,
    sign_client_proof,
)


class Recorder:
    """A handler that echoes one message and remembers each connection it ran for."""

    def __init__(self) -> None:
        self.connections: list[PeerConnection] = []

    async def __call__(self, connection: PeerConnection) -> None:
        self.connections.append(connection)
        data = await connection.stream.receive_some(1024)
        await connection.stream.send_all(b"echo:" + data)


async def start(nursery: trio.Nursery, netlayer: TlsNetlayer | None = None) -> tuple[TlsNetlayer, PeerLocator, Recorder]:
    netlayer = netlayer or TlsNetlayer(generate_key())
    recorder = Recorder()
    location = await nursery.start(netlayer.serve, recorder)
    return netlayer, location, recorder


async def still_serves(location: PeerLocator) -> None:
    async with await TlsNetlayer(generate_key()).connect(location) as connection:
        await connection.stream.send_all(b"still")
        assert await connection.stream.receive_some(100) == b"echo:still"


def test_the_designator_is_the_public_key_in_base32() -> None:
    key = generate_key()
    designator = designator_for(key.public_key())
    assert len(designator) == 52 and designator == designator.lower()
    assert public_key_bytes(public_key_for(designator)) == public_key_bytes(key.public_key())


@pytest.mark.parametrize("designator", ["", "abc", "a" * 52 + "a", "A" * 52, "1" * 52, "a" * 51 + "="])
def test_a_designator_that_is_not_a_key_is_refused(designator: str) -> None:
    with pytest.raises(NetlayerError, match="designator"):
        public_key_for(designator)


async def test_the_location_names_the_key_and_where_to_dial(nursery: trio.Nursery) -> None:
    key = generate_key()
    netlayer, location, _ = await start(nursery, TlsNetlayer(key))
    assert location.transport == TLS_NETLAYER
    assert location.designator == designator_for(key.public_key())
    assert location.hint("host") == "127.0.0.1"
    assert netlayer.location == location
    assert PeerLocator.from_uri(location.to_uri()) == location


async def test_a_dial_authenticates_both_ends_and_bytes_flow(nursery: trio.Nursery) -> None:
    _, location, recorder = await start(nursery)
    client_key = generate_key()
    async with await TlsNetlayer(client_key).connect(location) as connection:
        assert connection.outbound and connection.authenticated
        assert connection.peer_designator == location.designator
        await connection.stream.send_all(b"<3'abc>")
        assert await connection.stream.receive_some(100) == b"echo:<3'abc>"
    [inbound] = recorder.connections
    assert not inbound.outbound
    assert inbound.peer_designator == designator_for(client_key.public_key())


async def test_a_listener_whose_key_is_not_the_designator_is_refused(nursery: trio.Nursery) -> None:
    _, location, recorder = await start(nursery)
    impostor = PeerLocator(designator_for(generate_key().public_key()), TLS_NETLAYER, dict(location.hints))
    with pytest.raises(NetlayerError, match="not the peer") as caught:
        await TlsNetlayer(generate_key()).connect(impostor)
    assert "\n" not in str(caught.value)
    assert recorder.connections == []
    await still_serves(location)


async def test_a_tcp_testing_only_listener_is_not_taken_for_a_tls_peer(nursery: trio.Nursery) -> None:
    plain = await nursery.start(TcpTestingOnlyNetlayer().serve, Recorder())
    pretend = PeerLocator(designator_for(generate_key().public_key()), TLS_NETLAYER, dict(plain.hints))
    with pytest.raises(NetlayerError, match="TLS") as caught:
        await TlsNetlayer(generate_key()).connect(pretend)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "garbage",
    [
        b"<16'op:start-session3\"1.0>",  # OCapN in the clear, as tcp-testing-only would speak it
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        bytes(range(256)) * 8,
        b"\x16\x03\x01\x00\x05hello",  # a TLS record header with nonsense after it
    ],
)
async def test_plaintext_or_garbage_is_refused_and_the_listener_goes_on(nursery: trio.Nursery, garbage: bytes) -> None:
    _, location, recorder = await start(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", int(location.hint("port") or 0))
    async with stream:
        try:
            await stream.send_all(garbage)
            with trio.fail_after(10):
                while await stream.receive_some(4096):
                    pass  # whatever the listener answers (a TLS alert), it then closes
        except trio.BrokenResourceError:
            pass  # or it resets the connection
    assert recorder.connections == []
    await still_serves(location)


async def test_a_client_that_never_speaks_does_not_hold_up_others(nursery: trio.Nursery) -> None:
    _, location, recorder = await start(nursery)
    silent = await trio.open_tcp_stream("127.0.0.1", int(location.hint("port") or 0))
    async with silent:
        await still_serves(location)
    assert len(recorder.connections) == 1


async def test_tls_before_1_3_is_refused(nursery: trio.Nursery) -> None:
    _, location, recorder = await start(nursery)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    tcp = await trio.open_tcp_stream("127.0.0.1", int(location.hint("port") or 0))
    tls = trio.SSLStream(tcp, context)
    with pytest.raises(trio.BrokenResourceError):
        with trio.fail_after(10):
            await tls.do_handshake()
    await tcp.aclose()
    assert recorder.connections == []
    await still_serves(location)


async def raw_tls_client(location: PeerLocator) -> tuple[trio.SSLStream[trio.SocketStream], bytes]:
    """A TLS client that does the handshake by hand, and the listener's nonce."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    tcp = await trio.open_tcp_stream("127.0.0.1", int(location.hint("port") or 0))
    tls = trio.SSLStream(tcp, context)
    await tls.do_handshake()
    nonce = b""
    while len(nonce) < 32:
        chunk = await tls.receive_some(32 - len(nonce))
        assert chunk
        nonce += chunk
    return tls, nonce


async def refused(tls: trio.SSLStream[trio.SocketStream]) -> bool:
    """Whether the listener closed the connection without accepting the proof."""
    try:
        with trio.fail_after(10):
            answer = await tls.receive_some(10)
    except trio.BrokenResourceError:
        answer = b""
    await tls.aclose()
    return answer == b""


async def test_a_forged_client_proof_is_refused(nursery: trio.Nursery) -> None:
    _, location, recorder = await start(nursery)
    tls, _ = await raw_tls_client(location)
    await tls.send_all(public_key_bytes(generate_key().public_key()) + bytes(64))
    assert await refused(tls)
    assert recorder.connections == []
    await still_serves(location)


async def test_a_proof_signed_for_another_listener_is_refused(nursery: trio.Nursery) -> None:
    """A listener that relays a client's proof to a third peer cannot pass as that client there."""
    _, location, recorder = await start(nursery)
    client = generate_key()
    tls, nonce = await raw_tls_client(location)
    elsewhere = generate_key().public_key()
    await tls.send_all(sign_client_proof(client, elsewhere, nonce))
    assert await refused(tls)
    assert recorder.connections == []


async def test_a_proof_for_another_nonce_is_refused(nursery: trio.Nursery) -> None:
    _, location, recorder = await start(nursery)
    client = generate_key()
    tls, nonce = await raw_tls_client(location)
    other_nonce = bytes(b ^ 1 for b in nonce)
    await tls.send_all(sign_client_proof(client, public_key_for(location.designator), other_nonce))
    assert await refused(tls)
    assert recorder.connections == []


async def test_a_good_proof_by_hand_is_accepted(nursery: trio.Nursery) -> None:
    """The refusals above are about the proof, not the hand-made client."""
    _, location, recorder = await start(nursery)
    client = generate_key()
    tls, nonce = await raw_tls_client(location)
    proof = sign_client_proof(client, public_key_for(location.designator), nonce)
    assert len(proof) == CLIENT_PROOF_BYTES
    await tls.send_all(proof)
    assert await tls.receive_some(1) == b"\x01"
    await tls.send_all(b"hi")
    assert await tls.receive_some(100) == b"echo:hi"
    await tls.aclose()
    assert [c.peer_designator for c in recorder.connections] == [designator_for(client.public_key())]


async def test_a_locator_without_usable_hints_is_refused() -> None:
    designator = designator_for(generate_key().public_key())
    with pytest.raises(NetlayerError, match="port"):
        await TlsNetlayer(generate_key()).connect(PeerLocator(designator, TLS_NETLAYER, {"host": "127.0.0.1"}))
    with pytest.raises(NetlayerError, match="designator"):
        await TlsNetlayer(generate_key()).connect(PeerLocator("not-a-key", TLS_NETLAYER, {"host": "127.0.0.1", "port": "9"}))
    with pytest.raises(NetlayerError, match="tcp-testing-only"):
        await TlsNetlayer(generate_key()).connect(PeerLocator(designator, "tcp-testing-only", {"host": "127.0.0.1", "port": "9"}))


async def test_a_client_that_never_finishes_the_handshake_is_cut_off(nursery: trio.Nursery) -> None:
    _, location, recorder = await start(nursery, TlsNetlayer(generate_key(), handshake_timeout=0.2))
    silent = await trio.open_tcp_stream("127.0.0.1", int(location.hint("port") or 0))
    async with silent:
        with trio.fail_after(30):  # a bound on the test, not a timing claim
            try:
                assert await silent.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass
    assert recorder.connections == []
    await still_serves(location)


async def test_a_listener_that_never_finishes_the_handshake_fails_the_dial_clearly(nursery: trio.Nursery) -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []

    async def accept_and_say_nothing() -> None:
        accepted.append(await listener.accept())
        await trio.sleep_forever()

    nursery.start_soon(accept_and_say_nothing)
    locator = PeerLocator(designator_for(generate_key().public_key()), TLS_NETLAYER, {"host": "127.0.0.1", "port": str(port)})
    with pytest.raises(NetlayerError, match="handshake") as caught:
        await TlsNetlayer(generate_key(), handshake_timeout=0.2).connect(locator)
    assert "\n" not in str(caught.value)


async def test_connections_beyond_the_handshake_cap_are_closed_at_once_and_the_slot_comes_back(nursery: trio.Nursery) -> None:
    """Silent connections cannot take the whole daemon's file descriptors, only the listener's slots."""
    _, location, recorder = await start(nursery, TlsNetlayer(generate_key(), max_pending_handshakes=1))
    port = int(location.hint("port") or 0)
    silent = await trio.open_tcp_stream("127.0.0.1", port)
    await trio.testing.wait_all_tasks_blocked()  # the listener has taken the silent one's slot
    extra = await trio.open_tcp_stream("127.0.0.1", port)
    async with extra:
        with trio.fail_after(30):
            try:
                assert await extra.receive_some(100) == b""
            except trio.BrokenResourceError:
                pass
    await silent.aclose()
    await trio.testing.wait_all_tasks_blocked()  # its handshake has failed and freed the slot
    await still_serves(location)
    assert len(recorder.connections) == 1


async def closed_at_once(stream: trio.SocketStream) -> bool:
    """Whether the listener closed ``stream`` without a handshake (a silent client's would wait for its timeout)."""
    with trio.fail_after(30):
        try:
            return await stream.receive_some(100) == b""
        except trio.BrokenResourceError:
            return True


async def proved_from(netlayer: TlsNetlayer, location: PeerLocator, address: str) -> trio.SSLStream[trio.SocketStream]:
    """A connection from ``address`` that has proved a fresh key to the listener."""
    port = int(location.hint("port") or 0)
    tls = trio.SSLStream(
        await trio.open_tcp_stream("127.0.0.1", port, local_address=address), netlayer._client_context, server_hostname=None
    )
    with trio.fail_after(30):
        await tls.do_handshake()
        nonce = await tls.receive_some(32)
        await tls.send_all(sign_client_proof(generate_key(), public_key_for(location.designator), nonce))
        assert await tls.receive_some(1) == b"\x01"
    return tls


async def served_from(netlayer: TlsNetlayer, location: PeerLocator, source: str) -> trio.SSLStream[trio.SocketStream]:
    """A connection from ``source`` that proves its key and is served (echoed to)."""
    tls = await proved_from(netlayer, location, source)
    await tls.send_all(b"hello")
    assert await tls.receive_some(100) == b"echo:hello"
    return tls


async def test_one_address_holding_its_connections_is_refused_more_while_others_connect(nursery: trio.Nursery) -> None:
    """Connections from one address, silent or proved, are capped; another address is served meanwhile."""
    # A handshake timeout no test waits out: a silent connection holds its slot until closed.
    netlayer = TlsNetlayer(generate_key(), max_connections_per_address=3, handshake_timeout=3600)
    _, location, recorder = await start(nursery, netlayer)
    port = int(location.hint("port") or 0)
    # Two silent connections and one proved one from 127.0.0.2: the cap counts both kinds.
    silent = [await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2") for _ in range(2)]
    proved = await proved_from(netlayer, location, "127.0.0.2")
    await trio.testing.wait_all_tasks_blocked()
    assert [c.remote_address for c in recorder.connections] == ["127.0.0.2"]
    for _ in range(5):
        async with await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.2") as extra:
            assert await closed_at_once(extra)
    # Another address connects, proves its key and is served.
    await still_serves(location)
    assert recorder.connections[-1].remote_address == "127.0.0.1"
    # One closed, the address may connect again, and is served.
    await silent[0].aclose()
    await trio.testing.wait_all_tasks_blocked()  # its handshake has failed and freed its place
    again = await served_from(netlayer, location, "127.0.0.2")
    for stream in [again, proved, *silent[1:]]:
        await trio.aclose_forcefully(stream)


async def test_the_64s_of_one_ipv6_48_share_twice_one_64s_connections(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A peer spreading over the /64s of one /48 (a free tunnel broker's) gains a factor of 2, not 65,536."""
    from ocapd.captp import ocapn_netlayers, ocapn_tls

    # Loopback has one IPv6 address; each 127.0.0.x source stands for a /64 here.
    sixty_fours = {"127.0.0.2": "2001:db8:1:2::/64", "127.0.0.3": "2001:db8:1:3::/64",
                   "127.0.0.4": "2001:db8:1:4::/64", "127.0.0.5": "2001:db8:2:1::/64"}

    def address_of(stream: trio.SocketStream) -> str | None:
        real = ocapn_netlayers.address_of(stream)
        return sixty_fours.get(real or "", real)

    monkeypatch.setattr(ocapn_tls, "address_of", address_of)
    netlayer = TlsNetlayer(generate_key(), max_connections_per_address=2, handshake_timeout=3600)
    _, location, recorder = await start(nursery, netlayer)
    port = int(location.hint("port") or 0)
    held = [await trio.open_tcp_stream("127.0.0.1", port, local_address=source) for source in ("127.0.0.2", "127.0.0.3") for _ in range(2)]
    await trio.testing.wait_all_tasks_blocked()
    # Its /64 holds nothing, but its /48 holds 2 x 2 already.
    async with await trio.open_tcp_stream("127.0.0.1", port, local_address="127.0.0.4") as extra:
        assert await closed_at_once(extra)
    # Another /48 is served, and so is this one once a connection closes.
    proved = await served_from(netlayer, location, "127.0.0.5")
    assert recorder.connections[-1].remote_address == "2001:db8:2:1::/64"
    await held[0].aclose()
    await trio.testing.wait_all_tasks_blocked()  # its handshake has failed and freed its place
    again = await served_from(netlayer, location, "127.0.0.4")
    assert recorder.connections[-1].remote_address == "2001:db8:1:4::/64"
    for stream in [again, proved, *held[1:]]:
        await trio.aclose_forcefully(stream)


def test_an_ipv6_64_is_counted_in_its_48_too_at_twice_the_limit() -> None:
    from ocapd.captp.ocapn_netlayers import address_groups, address_key

    assert address_groups(address_key("192.0.2.7")) == [("192.0.2.7", 1)]
    assert address_groups(address_key("2001:db8:1:2::9")) == [("2001:db8:1:2::/64", 1), ("2001:db8:1::/48", 2)]
    assert address_groups(address_key("2001:db8:1:ffff::1"))[1] == address_groups(address_key("2001:db8:1:2::1"))[1]
    assert address_groups(address_key("2001:db8:2:2::1"))[1][0] == "2001:db8:2::/48"


def test_addresses_are_counted_by_ipv4_address_or_ipv6_64() -> None:
    from ocapd.captp.ocapn_netlayers import address_key

    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff::9") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
