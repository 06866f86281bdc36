"""The locators, keys, signed structures and tcp-testing-only agree with the
OCapN test suite's own (the snapshot beside the repository, run as it is, in a
subprocess of its own): what the suite signs, ocapd verifies; what ocapd
signs, the suite verifies; a peer locator is written the same by both; the
suite's netlayer dials ocapd's listener and the two exchange start-sessions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ocapd.captp import Symbol
from ocapd.captp.ocapn_keys import (
    SignatureError,
    check_handoff_receive,
    generate_key,
    make_handoff_give,
    make_handoff_receive,
    public_identifier,
    public_key_bytes,
    public_key_from_syrup,
    public_key_to_syrup,
    session_id,
    sign_location,
    verify_location,
)
from ocapd.captp.ocapn_locators import PeerLocator
from ocapd.captp.ocapn_netlayers import PeerConnection, TcpTestingOnlyNetlayer
from ocapd.captp.syrup import Record, SyrupSplitter, decode, encode

#: The OCapN test suite's snapshot, beside the repository (CI copies shared/ there too).
SUITE = Path(__file__).resolve().parents[1].parent / "shared" / "ocapn-test-suite"

URI = "ocapn://0a1b2c3d.tcp-testing-only?host=127.0.0.1&port=22045"

#: Run inside the suite's folder: the suite signs a start-session and a handoff
#: as its tests do, and prints them (hex) with the public keys involved.
SUITE_SIGNS = """
import json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from contrib.syrup import Record, Symbol, syrup_encode
from utils import captp_types
from utils.captp import CapTPSession
from utils.ocapn_uris import OCapNPeer

location = OCapNPeer.from_uri(sys.argv[1])
def public(key):
    return captp_types.CapTPPublicKey.from_private_key(key)
def raw(key):
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
def session(ours, theirs):
    s = CapTPSession(None, location, True)
    s.public_key, s.remote_public_key = public(ours), public(theirs)
    return s
key = Ed25519PrivateKey.generate()
sig = key.sign(syrup_encode(Record(Symbol("my-location"), [location.to_syrup_record()])))
start = captp_types.OpStartSession("1.0", public(key), location, sig)
g2e, e2g, r2g, r2e, e2r = (Ed25519PrivateKey.generate() for _ in range(5))
ge, er = session(g2e, e2g), session(r2e, e2r)
give = captp_types.DescHandoffGive(public(r2g), location, ge.id, ge.our_side_id, b"my-gift")
signed_give = captp_types.DescSigEnvelope(give, g2e.sign(give.to_syrup()))
receive = captp_types.DescHandoffReceive(er.id, er.our_side_id, 0, signed_give)
signed_receive = captp_types.DescSigEnvelope(receive, r2g.sign(receive.to_syrup()))
print(json.dumps({
    "location": location.to_syrup().hex(),
    "start_session": start.to_syrup().hex(),
    "signed_receive": signed_receive.to_syrup().hex(),
    "ge_session": ge.id.hex(),
    "er_session": er.id.hex(),
    "g2e": raw(g2e), "e2g": raw(e2g), "r2e": raw(r2e), "e2r": raw(e2r),
}))
"""

#: Run inside the suite's folder: the suite reads what ocapd signed and says
#: whether each signature verifies.
SUITE_VERIFIES = """
import json, sys
from contrib.syrup import syrup_decode
from utils import captp_types

given = json.load(sys.stdin)
start = captp_types.decode_captp_message(syrup_decode(bytes.fromhex(given["start_session"])))
signed_receive = captp_types.decode_captp_message(syrup_decode(bytes.fromhex(given["signed_receive"])))
receive = signed_receive.object
g2e = captp_types.CapTPPublicKey.from_public_bytes(bytes.fromhex(given["g2e"]))
print(json.dumps({
    "start_session_valid": start.valid,
    "receive_valid": signed_receive.verify(receive.signed_give.object.receiver_key),
    "give_valid": receive.signed_give.verify(g2e),
    "count": receive.handoff_count,
}))
"""

pytestmark = pytest.mark.skipif(not (SUITE / "test_runner.py").exists(), reason="the OCapN test suite is not beside the repository")


def run_in_suite(script: str, *args: str, stdin: str = "") -> Any:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=SUITE, input=stdin, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def key(hex_bytes: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(hex_bytes))


@pytest.fixture(scope="module")
def suite_signed() -> Any:
    return run_in_suite(SUITE_SIGNS, URI)


def test_the_suite_and_ocapd_write_a_peer_locator_alike(suite_signed: Any) -> None:
    assert bytes.fromhex(suite_signed["location"]) == encode(PeerLocator.from_uri(URI).to_syrup())


def test_ocapd_verifies_the_suites_start_session_location_signature(suite_signed: Any) -> None:
    start = decode(bytes.fromhex(suite_signed["start_session"]))
    assert isinstance(start, Record) and start.label == Symbol("op:start-session")
    version, public_key, location, signature = start.fields
    assert version == "1.0"
    verify_location(public_key_from_syrup(public_key), location, signature)
    with pytest.raises(SignatureError):
        verify_location(generate_key().public_key(), location, signature)


def test_ocapd_as_exporter_accepts_the_suites_handoff_and_agrees_on_session_ids(suite_signed: Any) -> None:
    g2e, e2g, r2e, e2r = (key(suite_signed[name]) for name in ("g2e", "e2g", "r2e", "e2r"))
    assert session_id(e2g, g2e).hex() == suite_signed["ge_session"]
    assert session_id(e2r, r2e).hex() == suite_signed["er_session"]
    give, receive = check_handoff_receive(
        decode(bytes.fromhex(suite_signed["signed_receive"])),
        gifter_key_for_session=lambda session: g2e if session == session_id(e2g, g2e) else None,
        session_id=session_id(e2r, r2e),
        receiver_side=public_identifier(r2e),
        used_counts=set(),
        exporter_location=PeerLocator.from_uri(URI),
    )
    assert give.gift_id == b"my-gift"
    assert receive.handoff_count == 0


def test_the_suite_verifies_what_ocapd_signs() -> None:
    location = PeerLocator.from_uri(URI)
    session_key = generate_key()
    public_key = public_key_to_syrup(session_key.public_key())
    start = Record(Symbol("op:start-session"), ("1.0", public_key, location.to_syrup(), sign_location(session_key, location)))
    g2e, e2g, r2g, r2e, e2r = (generate_key() for _ in range(5))
    signed_give = make_handoff_give(
        g2e,
        receiver_key=r2g.public_key(),
        exporter_location=location,
        session=session_id(g2e.public_key(), e2g.public_key()),
        gifter_side=public_identifier(g2e.public_key()),
        gift_id=b"g" * 32,
    )
    signed_receive = make_handoff_receive(
        r2g,
        signed_give,
        receiving_session=session_id(r2e.public_key(), e2r.public_key()),
        receiving_side=public_identifier(r2e.public_key()),
        handoff_count=5,
    )
    given = {"start_session": encode(start).hex(), "signed_receive": encode(signed_receive).hex(), "g2e": public_key_bytes(g2e.public_key()).hex()}
    verdict = run_in_suite(SUITE_VERIFIES, stdin=json.dumps(given))
    assert verdict == {"start_session_valid": True, "receive_valid": True, "give_valid": True, "count": 5}


#: Run inside the suite's folder: the suite's own netlayer dials ocapd's
#: tcp-testing-only listener, sends its op:start-session and reads ocapd's.
SUITE_DIALS = """
import json, sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from contrib.syrup import Record, Symbol, syrup_encode
from netlayers.testing_only_tcp import TestingOnlyTCPNetlayer
from utils import captp_types
from utils.ocapn_uris import OCapNPeer

netlayer = TestingOnlyTCPNetlayer()
session = netlayer.connect(OCapNPeer.from_uri(sys.argv[1]))
key = Ed25519PrivateKey.generate()
sig = key.sign(syrup_encode(Record(Symbol("my-location"), [netlayer.location.to_syrup_record()])))
session.send_message(captp_types.OpStartSession("1.0", captp_types.CapTPPublicKey.from_private_key(key), netlayer.location, sig))
theirs = session.receive_message(timeout=30)
print(json.dumps({"type": type(theirs).__name__, "valid": theirs.valid, "version": theirs.captp_version,
                  "location": theirs.location.to_syrup().hex()}))
session.close()
"""


async def test_the_suites_netlayer_and_ocapds_exchange_signed_start_sessions_over_tcp_testing_only() -> None:
    key = generate_key()
    received: list[Record] = []

    async def handler(connection: PeerConnection) -> None:
        splitter = SyrupSplitter()
        while (data := splitter.next_value()) is None:
            chunk = await connection.stream.receive_some(4096)
            assert chunk, "the suite closed before its op:start-session"
            splitter.feed(chunk)
        start = decode(data)
        received.append(start)
        _, public_key, location, signature = start.fields
        verify_location(public_key_from_syrup(public_key), location, signature)
        assert netlayer.location is not None
        mine = netlayer.location.to_syrup()
        reply = Record(Symbol("op:start-session"), ("1.0", public_key_to_syrup(key.public_key()), mine, sign_location(key, mine)))
        await connection.stream.send_all(encode(reply))
        while await connection.stream.receive_some(4096):
            pass  # the suite's op:abort, then the end of the stream

    netlayer = TcpTestingOnlyNetlayer()
    async with trio.open_nursery() as nursery:
        location = await nursery.start(netlayer.serve, handler)
        with trio.fail_after(60):
            done = await trio.run_process(
                [sys.executable, "-c", SUITE_DIALS, location.to_uri()], cwd=SUITE, capture_stdout=True, capture_stderr=True, check=False
            )
        nursery.cancel_scope.cancel()
    assert done.returncode == 0, done.stderr.decode()
    verdict = json.loads(done.stdout)
    assert verdict == {"type": "OpStartSession", "valid": True, "version": "1.0", "location": encode(location.to_syrup()).hex()}
    assert len(received) == 1 and received[0].label == Symbol("op:start-session")


#: Run inside the suite's folder: the suite's netlayer listens, says its
#: location as the record a handoff-give carries, and reads one start-session.
SUITE_LISTENS = """
import json, sys
from netlayers.testing_only_tcp import TestingOnlyTCPNetlayer
from utils import captp_types

netlayer = TestingOnlyTCPNetlayer()
print(netlayer.location.to_syrup().hex(), flush=True)
session = netlayer.accept(timeout=30)
theirs = session.receive_message(timeout=30)
print(json.dumps({"type": type(theirs).__name__, "valid": theirs.valid}), flush=True)
session.connection.close()
"""


async def test_ocapd_dials_the_suites_listener_from_the_location_record_a_handoff_carries() -> None:
    """As a receiver does: the exporter's location comes as an <ocapn-peer> record, not a URI."""
    process = await trio.lowlevel.open_process([sys.executable, "-c", SUITE_LISTENS], cwd=SUITE, stdout=subprocess.PIPE)
    stdout = process.stdout
    assert stdout is not None
    output = b""

    async def read_line() -> bytes:
        nonlocal output
        while b"\n" not in output:
            chunk = await stdout.receive_some(4096)
            assert chunk, "the suite's listener ended early"
            output += chunk
        line, _, output = output.partition(b"\n")
        return line

    try:
        with trio.fail_after(60):
            exporter = PeerLocator.from_syrup(decode(bytes.fromhex((await read_line()).decode())))
            assert exporter.transport == "tcp-testing-only" and exporter.hint("host") == "127.0.0.1"
            key = generate_key()
            mine = PeerLocator("receiver", "tcp-testing-only", {"host": "127.0.0.1", "port": "1"})
            public_key = public_key_to_syrup(key.public_key())
            async with await TcpTestingOnlyNetlayer().connect(exporter) as connection:
                await connection.stream.send_all(encode(Record(Symbol("op:start-session"), ("1.0", public_key, mine.to_syrup(), sign_location(key, mine)))))
                verdict = json.loads(await read_line())
    finally:
        process.kill()
        await process.wait()
    assert verdict == {"type": "OpStartSession", "valid": True}
