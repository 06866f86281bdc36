"""OCapN keys and signed structures as a specification (CapTP draft,
"Cryptography" and "Third Party Handoffs"): Ed25519 keys and signatures in
their gcrypt-style Syrup forms, public identifiers and session IDs, the signed
location of op:start-session, desc:sig-envelope, and the handoff-give /
handoff-receive checks. Every forgery — a wrong key, a tampered field, another
curve, a replayed count, a handoff for another session — is refused with a
one-line error.
"""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ocapd.captp import Symbol
from ocapd.captp.ocapn_keys import (
    MAX_GIFT_ID,
    MAX_GIFT_ID_BYTES,
    HandoffError,
    HandoffGive,
    HandoffReceive,
    SignatureError,
    check_handoff_give,
    check_handoff_receive,
    generate_key,
    is_gift_id,
    make_handoff_give,
    make_handoff_receive,
    open_envelope,
    public_identifier,
    public_key_bytes,
    public_key_from_syrup,
    public_key_to_syrup,
    session_id,
    sign_envelope,
    sign_location,
    signature_from_syrup,
    signature_to_syrup,
    verify_envelope,
    verify_location,
)
from ocapd.captp.ocapn_locators import PeerLocator
from ocapd.captp.syrup import Record, decode, encode

LOCATION = PeerLocator("0a1b2c", "tcp-testing-only", {"host": "127.0.0.1", "port": "9"})


def roundtrip(value: object) -> object:
    """What the other side decodes from what we write."""
    return decode(encode(value))


def one_line(error: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(error.value)
    assert message and "\n" not in message
    return message


# --- keys and signatures in Syrup ------------------------------------------------------


def test_a_public_key_is_the_gcrypt_style_list_the_spec_writes() -> None:
    key = generate_key()
    raw = public_key_bytes(key.public_key())
    assert len(raw) == 32
    assert public_key_to_syrup(key.public_key()) == [
        Symbol("public-key"),
        [Symbol("ecc"), [Symbol("curve"), Symbol("Ed25519")], [Symbol("flags"), Symbol("eddsa")], [Symbol("q"), raw]],
    ]
    assert public_key_bytes(public_key_from_syrup(roundtrip(public_key_to_syrup(key.public_key())))) == raw


def test_a_signature_is_r_and_s_in_the_gcrypt_style_list() -> None:
    signature = generate_key().sign(b"data")
    assert signature_to_syrup(signature) == [Symbol("sig-val"), [Symbol("eddsa"), [Symbol("r"), signature[:32]], [Symbol("s"), signature[32:]]]]
    assert signature_from_syrup(roundtrip(signature_to_syrup(signature))) == signature


def _key_with(**replace: object) -> list[object]:
    parts: dict[str, object] = {"curve": Symbol("Ed25519"), "flags": Symbol("eddsa"), "q": bytes(32)}
    parts.update(replace)
    return [Symbol("public-key"), [Symbol("ecc"), [Symbol("curve"), parts["curve"]], [Symbol("flags"), parts["flags"]], [Symbol("q"), parts["q"]]]]


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        (_key_with(curve=Symbol("secp256k1")), "curve"),
        (_key_with(curve="Ed25519"), "curve"),
        (_key_with(flags=Symbol("ecdsa")), "flags"),
        (_key_with(q=bytes(31)), "32 bytes"),
        (_key_with(q="x" * 32), "32 bytes"),
        ([Symbol("private-key"), []], "public-key"),
        ([Symbol("public-key"), [Symbol("rsa")]], "ecc"),
        ("a key", "public-key"),
        (Record(Symbol("public-key"), ()), "public-key"),
    ],
)
def test_a_public_key_of_another_shape_or_curve_is_refused(value: object, complaint: str) -> None:
    with pytest.raises(SignatureError, match=complaint) as caught:
        public_key_from_syrup(value)
    one_line(caught)


@pytest.mark.parametrize(
    ("value", "complaint"),
    [
        ([Symbol("sig-val"), [Symbol("ecdsa"), [Symbol("r"), bytes(32)], [Symbol("s"), bytes(32)]]], "eddsa"),
        ([Symbol("sig-val"), [Symbol("eddsa"), [Symbol("r"), bytes(31)], [Symbol("s"), bytes(32)]]], "32 bytes"),
        ([Symbol("sig-val"), [Symbol("eddsa"), [Symbol("s"), bytes(32)], [Symbol("r"), bytes(32)]]], "'r"),
        ([Symbol("sig-val"), [Symbol("eddsa"), [Symbol("r"), bytes(32)]]], "sig-val"),
        (bytes(64), "sig-val"),
    ],
)
def test_a_signature_of_another_shape_is_refused(value: object, complaint: str) -> None:
    with pytest.raises(SignatureError, match=complaint) as caught:
        signature_from_syrup(value)
    one_line(caught)


def test_public_identifier_and_session_id_follow_the_spec_steps() -> None:
    a, b = generate_key().public_key(), generate_key().public_key()
    id_a = hashlib.sha256(hashlib.sha256(encode(public_key_to_syrup(a))).digest()).digest()
    id_b = hashlib.sha256(hashlib.sha256(encode(public_key_to_syrup(b))).digest()).digest()
    assert public_identifier(a) == id_a
    low, high = sorted([id_a, id_b])
    expected = hashlib.sha256(hashlib.sha256(b"prot0" + low + high).digest()).digest()
    assert session_id(a, b) == session_id(b, a) == expected
    assert session_id(a, b) != session_id(a, generate_key().public_key())


# --- the signed location of op:start-session -------------------------------------------


def test_a_location_signature_verifies_with_the_signers_key() -> None:
    key = generate_key()
    signature = sign_location(key, LOCATION)
    verify_location(key.public_key(), LOCATION, roundtrip(signature))
    verify_location(key.public_key(), roundtrip(LOCATION.to_syrup()), signature)


def test_the_location_is_signed_inside_a_my_location_record() -> None:
    key = generate_key()
    raw = signature_from_syrup(sign_location(key, LOCATION))
    key.public_key().verify(raw, encode(Record(Symbol("my-location"), (LOCATION.to_syrup(),))))


def test_a_location_signature_by_another_key_is_refused() -> None:
    signature = sign_location(generate_key(), LOCATION)
    with pytest.raises(SignatureError, match="location") as caught:
        verify_location(generate_key().public_key(), LOCATION, signature)
    one_line(caught)


def test_a_location_signature_for_another_location_is_refused() -> None:
    key = generate_key()
    signature = sign_location(key, LOCATION)
    elsewhere = PeerLocator(LOCATION.designator, LOCATION.transport, {"host": "127.0.0.1", "port": "10"})
    with pytest.raises(SignatureError, match="location"):
        verify_location(key.public_key(), elsewhere, signature)


def test_a_signature_over_bare_location_bytes_is_refused() -> None:
    """The my-location wrapper keeps a signature made for another purpose from passing as this one."""
    key = generate_key()
    bare = signature_to_syrup(key.sign(encode(LOCATION.to_syrup())))
    with pytest.raises(SignatureError):
        verify_location(key.public_key(), LOCATION, bare)


# --- desc:sig-envelope ------------------------------------------------------------------------


def test_an_envelope_holds_the_object_itself_and_verifies() -> None:
    key = generate_key()
    signed = Record(Symbol("desc:export"), (3,))
    envelope = sign_envelope(key, signed)
    assert envelope.label == Symbol("desc:sig-envelope")
    assert envelope.fields[0] == signed
    assert verify_envelope(key.public_key(), roundtrip(envelope)) == signed
    assert open_envelope(envelope) == (signed, signature_from_syrup(envelope.fields[1]))


def test_an_envelope_with_a_tampered_object_is_refused() -> None:
    key = generate_key()
    envelope = sign_envelope(key, Record(Symbol("desc:export"), (3,)))
    tampered = Record(envelope.label, (Record(Symbol("desc:export"), (4,)), envelope.fields[1]))
    with pytest.raises(SignatureError, match="does not verify") as caught:
        verify_envelope(key.public_key(), tampered)
    one_line(caught)


def test_an_envelope_signed_by_another_key_is_refused() -> None:
    envelope = sign_envelope(generate_key(), Record(Symbol("desc:export"), (3,)))
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(generate_key().public_key(), envelope)


@pytest.mark.parametrize(
    "value",
    [
        Record(Symbol("desc:export"), (3,)),
        Record(Symbol("desc:sig-envelope"), (Record(Symbol("desc:export"), (3,)),)),
        Record(Symbol("desc:sig-envelope"), (Record(Symbol("desc:export"), (3,)), b"sig")),
        [Symbol("desc:sig-envelope")],
    ],
)
def test_something_that_is_not_an_envelope_is_refused(value: object) -> None:
    with pytest.raises(SignatureError) as caught:
        verify_envelope(generate_key().public_key(), value)
    one_line(caught)


# --- third-party handoffs ----------------------------------------------------------------------


class Handoff:
    """Three peers and their three sessions, each side with its own session key.

    Names as the spec's: g2e is the gifter's key in the Gifter-Exporter
    session, e2g the exporter's there, and so on.
    """

    def __init__(self) -> None:
        self.g2e, self.e2g = generate_key(), generate_key()
        self.g2r, self.r2g = generate_key(), generate_key()
        self.r2e, self.e2r = generate_key(), generate_key()
        self.ge_session = session_id(self.g2e.public_key(), self.e2g.public_key())
        self.er_session = session_id(self.e2r.public_key(), self.r2e.public_key())
        self.exporter = PeerLocator("exporter", "tcp-testing-only", {"host": "127.0.0.1", "port": "1"})
        self.used: set[int] = set()

    def give(self, *, gift_id: bytes | int = b"g" * 32, signer: Ed25519PrivateKey | None = None) -> Record:
        return make_handoff_give(
            signer or self.g2e,
            receiver_key=self.r2g.public_key(),
            exporter_location=self.exporter,
            session=self.ge_session,
            gifter_side=public_identifier(self.g2e.public_key()),
            gift_id=gift_id,
        )

    def receive(self, signed_give: Record, *, count: int = 0, signer: Ed25519PrivateKey | None = None, session: bytes | None = None) -> Record:
        return make_handoff_receive(
            signer or self.r2g,
            signed_give,
            receiving_session=self.er_session if session is None else session,
            receiving_side=public_identifier(self.r2e.public_key()),
            handoff_count=count,
        )

    def check(self, signed_receive: object) -> tuple[HandoffGive, HandoffReceive]:
        """The exporter's check, on what it decodes from the wire."""
        return check_handoff_receive(
            roundtrip(signed_receive),
            gifter_key_for_session=lambda session: self.g2e.public_key() if session == self.ge_session else None,
            session_id=self.er_session,
            receiver_side=public_identifier(self.r2e.public_key()),
            used_counts=self.used,
            exporter_location=self.exporter,
        )


def test_a_valid_handoff_passes_every_check_and_says_what_was_given() -> None:
    h = Handoff()
    signed_give = h.give()
    give = check_handoff_give(roundtrip(signed_give), h.r2g.public_key())
    assert give.gift_id == b"g" * 32
    assert give.exporter_location == h.exporter
    assert give.session == h.ge_session
    checked_give, receive = h.check(h.receive(roundtrip(signed_give), count=7))
    assert checked_give == give
    assert receive.handoff_count == 7
    assert receive.receiving_session == h.er_session


@pytest.mark.parametrize("gift_id", [b"my-gift", b"g" * MAX_GIFT_ID_BYTES, 0, 42, MAX_GIFT_ID])
def test_a_gift_id_is_a_bytestring_as_the_suite_sends_or_an_integer_as_the_spec_says(gift_id: bytes | int) -> None:
    h = Handoff()
    signed_give = h.give(gift_id=gift_id)
    assert check_handoff_give(roundtrip(signed_give), h.r2g.public_key()).gift_id == gift_id
    give, _ = h.check(h.receive(roundtrip(signed_give)))
    assert give.gift_id == gift_id and type(give.gift_id) is type(gift_id)


@pytest.mark.parametrize(
    "gift_id",
    [-1, MAX_GIFT_ID + 1, 2**4000, b"", b"g" * (MAX_GIFT_ID_BYTES + 1), True, False, "my-gift", 1.0, Symbol("g"), [1], None],
)
def test_a_gift_id_of_another_kind_or_out_of_range_is_refused(gift_id: object) -> None:
    assert not is_gift_id(gift_id)
    h = Handoff()
    give = open_envelope(h.give())[0]
    fields = list(give.fields)
    fields[4] = gift_id
    with pytest.raises(SignatureError, match="gift-id") as caught:
        HandoffGive.from_syrup(Record(give.label, tuple(fields)))
    one_line(caught)


def test_the_give_record_has_the_spec_fields_in_order() -> None:
    h = Handoff()
    give = open_envelope(h.give())[0]
    assert give == Record(
        Symbol("desc:handoff-give"),
        (public_key_to_syrup(h.r2g.public_key()), h.exporter.to_syrup(), h.ge_session, public_identifier(h.g2e.public_key()), b"g" * 32),
    )
    receive = open_envelope(h.receive(h.give(), count=2))[0]
    assert receive == Record(Symbol("desc:handoff-receive"), (h.er_session, public_identifier(h.r2e.public_key()), 2, h.give()))


def test_the_receiver_refuses_a_give_meant_for_another_key() -> None:
    h = Handoff()
    with pytest.raises(HandoffError, match="receiver") as caught:
        check_handoff_give(h.give(), generate_key().public_key())
    one_line(caught)


def test_the_exporter_refuses_a_give_not_signed_by_the_gifter() -> None:
    h = Handoff()
    with pytest.raises(SignatureError, match="handoff-give"):
        h.check(h.receive(h.give(signer=generate_key())))


def test_the_exporter_refuses_a_receive_not_signed_by_the_named_receiver() -> None:
    h = Handoff()
    with pytest.raises(SignatureError, match="handoff-receive"):
        h.check(h.receive(h.give(), signer=h.r2e))


def test_the_exporter_refuses_a_tampered_give() -> None:
    h = Handoff()
    signed_give = h.give()
    give, signature = signed_give.fields
    fields = list(give.fields)
    fields[4] = b"another gift".ljust(32)
    tampered = Record(signed_give.label, (Record(give.label, tuple(fields)), signature))
    with pytest.raises(SignatureError, match="does not verify"):
        h.check(h.receive(tampered))


def test_the_exporter_refuses_a_handoff_for_another_session() -> None:
    h = Handoff()
    with pytest.raises(HandoffError, match="another session") as caught:
        h.check(h.receive(h.give(), session=hashlib.sha256(b"elsewhere").digest()))
    one_line(caught)


def test_the_exporter_refuses_a_give_naming_a_session_it_does_not_have() -> None:
    h = Handoff()
    h.ge_session = hashlib.sha256(b"unknown").digest()
    signed_give = h.give()
    with pytest.raises(HandoffError, match="session"):
        check_handoff_receive(
            h.receive(signed_give),
            gifter_key_for_session=lambda session: None,
            session_id=h.er_session,
            receiver_side=public_identifier(h.r2e.public_key()),
            used_counts=h.used,
        )


def test_the_exporter_refuses_a_replayed_handoff_count() -> None:
    h = Handoff()
    _, receive = h.check(h.receive(h.give(), count=3))
    h.used.add(receive.handoff_count)
    with pytest.raises(HandoffError, match="count 3") as caught:
        h.check(h.receive(h.give(gift_id=b"h" * 32), count=3))
    one_line(caught)


@pytest.mark.parametrize("count", [-1, True, "0"])
def test_the_exporter_refuses_a_count_that_is_not_a_non_negative_integer(count: object) -> None:
    h = Handoff()
    receive = open_envelope(h.receive(h.give()))[0]
    fields = list(receive.fields)
    fields[2] = count
    forged = sign_envelope(h.r2g, Record(receive.label, tuple(fields)))
    with pytest.raises(HandoffError, match="count"):
        h.check(forged)


def test_the_exporter_refuses_a_give_for_another_exporter() -> None:
    h = Handoff()
    signed_give = h.give()
    h.exporter = PeerLocator("someone-else", "tcp-testing-only")
    with pytest.raises(HandoffError, match="exporter"):
        h.check(h.receive(signed_give))


def test_the_exporter_refuses_a_gifter_side_that_is_not_the_gifters() -> None:
    h = Handoff()
    signed_give = make_handoff_give(
        h.g2e,
        receiver_key=h.r2g.public_key(),
        exporter_location=h.exporter,
        session=h.ge_session,
        gifter_side=public_identifier(h.e2g.public_key()),
        gift_id=b"g" * 32,
    )
    with pytest.raises(HandoffError, match="gifter"):
        h.check(h.receive(signed_give))


@pytest.mark.parametrize(
    ("index", "value", "complaint"),
    [
        (0, b"not a key", "public-key"),
        (1, "ocapn://a.b", "ocapn-peer"),
        (2, "session", "session"),
        (3, b"short", "gifter-side"),
        (4, -1, "gift-id"),
    ],
)
def test_a_malformed_give_is_refused_with_its_field_named(index: int, value: object, complaint: str) -> None:
    h = Handoff()
    give = open_envelope(h.give())[0]
    fields = list(give.fields)
    fields[index] = value
    with pytest.raises(SignatureError, match=complaint) as caught:
        HandoffGive.from_syrup(Record(give.label, tuple(fields)))
    one_line(caught)


def test_a_receive_whose_give_is_not_an_envelope_is_refused() -> None:
    h = Handoff()
    receive = open_envelope(h.receive(h.give()))[0]
    fields = list(receive.fields)
    fields[3] = open_envelope(h.give())[0]
    with pytest.raises(SignatureError, match="sig-envelope"):
        HandoffReceive.from_syrup(Record(receive.label, tuple(fields)))


# --- hostile input: every change to a signed handoff is refused ---------------------------------

_ATOMS = st.one_of(
    st.integers(-2, 2**70),
    st.booleans(),
    st.sampled_from([b"", bytes(31), bytes(32), bytes(33), bytes(64), b"g" * 32]),
    st.text(max_size=8),
    st.sampled_from([Symbol(name) for name in ("desc:sig-envelope", "desc:handoff-give", "desc:handoff-receive", "public-key", "ecc", "curve",
                                                "Ed25519", "flags", "eddsa", "q", "sig-val", "r", "s", "ocapn-peer", "x")]),
    st.just([]),
)


def _paths(value: object, path: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every place in a decoded value (records, lists and dict values) where a sub-value sits."""
    found = [path]
    if isinstance(value, Record):
        children: list[object] = [value.label, *value.fields]
    elif isinstance(value, list | tuple):
        children = list(value)
    elif isinstance(value, dict):
        children = list(value.values())
    else:
        return found
    for index, child in enumerate(children):
        found += _paths(child, (*path, index))
    return found


def _replace(value: object, path: tuple[int, ...], new: object) -> object:
    if not path:
        return new
    index, rest = path[0], path[1:]
    if isinstance(value, Record):
        parts = [value.label, *value.fields]
        parts[index] = _replace(parts[index], rest, new)
        return Record(parts[0], tuple(parts[1:]))
    if isinstance(value, dict):
        key = list(value)[index]
        return {**value, key: _replace(value[key], rest, new)}
    assert isinstance(value, list | tuple)
    items = list(value)
    items[index] = _replace(items[index], rest, new)
    return items


_HANDOFF = Handoff()
_SIGNED_RECEIVE = decode(encode(_HANDOFF.receive(_HANDOFF.give(), count=1)))
_RECEIVE_PATHS = _paths(_SIGNED_RECEIVE)


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, len(_RECEIVE_PATHS) - 1), _ATOMS)
def test_any_change_to_a_signed_handoff_is_refused_with_a_signature_error(where: int, new: object) -> None:
    mutated = _replace(_SIGNED_RECEIVE, _RECEIVE_PATHS[where], new)
    try:
        encoded = encode(mutated)
    except TypeError:
        return  # not a value Syrup can carry, so no peer can send it
    try:
        _HANDOFF.check(decode(encoded))
    except SignatureError as error:
        assert str(error) and "\n" not in str(error)
    else:
        assert encoded == encode(_SIGNED_RECEIVE), "a changed handoff passed every check"
