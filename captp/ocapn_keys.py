"""OCapN's keys and signed structures: pure functions over Syrup values.

OCapN's CapTP draft ("Cryptography", "Third Party Handoffs") has each side of
a session make an Ed25519 key pair. The keys sign:

- the side's location in ``op:start-session`` (``sign_location`` /
  ``verify_location``), inside a ``<my-location location>`` record so that
  no signature made for another purpose passes as one;
- ``desc:sig-envelope``s (``sign_envelope`` / ``verify_envelope``): a Syrup
  value and the signature of its canonical encoding;
- the two certificates of a third-party handoff: the gifter's
  ``desc:handoff-give`` (``make_handoff_give``; the receiver checks it with
  ``check_handoff_give``) and the receiver's ``desc:handoff-receive``
  (``make_handoff_receive``; the exporter checks it, and the give inside it,
  with ``check_handoff_receive``).

Keys and signatures travel in the gcrypt s-expression shapes the draft
writes, as Syrup lists::

    ['public-key ['ecc ['curve 'Ed25519] ['flags 'eddsa] ['q <32 bytes>]]]
    ['sig-val ['eddsa ['r <32 bytes>] ['s <32 bytes>]]]

Signatures are checked over ``encode(value)`` of the value as decoded from
the wire. Syrup is canonical, so that is exactly the bytes the signer
signed; a record is never rebuilt from parsed fields before its check (a
peer locator whose hints were written with symbol keys would re-encode
differently).

Every malformed structure and failed check raises ``SignatureError`` (a
``ValueError``) with a one-line message; the handoff checks that are not
about a signature (wrong session, replayed count) raise its subclass
``HandoffError``. Nothing here keeps state: the caller owns its sessions
and the handoff counts already used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .ocapn_locators import LocatorError, PeerLocator
from .passable import Symbol
from .syrup import Record, encode

__all__ = [
    "HandoffError",
    "HandoffGive",
    "HandoffReceive",
    "SignatureError",
    "check_handoff_give",
    "check_handoff_receive",
    "generate_key",
    "make_handoff_give",
    "make_handoff_receive",
    "open_envelope",
    "public_identifier",
    "public_key_bytes",
    "public_key_from_syrup",
    "public_key_to_syrup",
    "session_id",
    "sign_envelope",
    "sign_location",
    "signature_from_syrup",
    "signature_to_syrup",
    "verify_envelope",
    "verify_location",
]

ENVELOPE_LABEL = Symbol("desc:sig-envelope")
GIVE_LABEL = Symbol("desc:handoff-give")
RECEIVE_LABEL = Symbol("desc:handoff-receive")
MY_LOCATION_LABEL = Symbol("my-location")
#: Prepended to the two sorted public identifiers before hashing them into a
#: session ID (the draft's "prot0").
SESSION_ID_PREFIX = b"prot0"

#: Largest integer gift id. The draft spec's gift id is "a non-negative
#: integer" (a gifter's counter); 2**64 - 1 is more gifts than a session
#: will see, and the bound keeps a gift id — a key of the exporter's gift
#: table until the gift is withdrawn — a few bytes long.
MAX_GIFT_ID = 2**64 - 1
#: Longest bytestring gift id (the test suite's form: ``b"my-gift"``).
#: ocapd's gifter writes 16 random bytes; 256 leaves room for any other
#: scheme while an exporter holding ``ocapn_node.MAX_PENDING_GIFTS`` ids per
#: session keeps a quarter of a MiB, not one frame each.
MAX_GIFT_ID_BYTES = 256
#: What ``is_gift_id`` accepts, in words, for errors.
GIFT_ID_FORMS = f"a gift id is a bytestring of 1..{MAX_GIFT_ID_BYTES} bytes or an integer 0..2**64-1"

_KEY_BYTES = 32
_HASH_BYTES = 32
_SIGNATURE_HALF = 32

_PUBLIC_KEY = Symbol("public-key")
_ECC = Symbol("ecc")
_CURVE = Symbol("curve")
_ED25519 = Symbol("Ed25519")
_FLAGS = Symbol("flags")
_EDDSA = Symbol("eddsa")
_Q = Symbol("q")
_SIG_VAL = Symbol("sig-val")
_R = Symbol("r")
_S = Symbol("s")


class SignatureError(ValueError):
    """A malformed key, signature or signed structure, or a signature that does not verify."""


class HandoffError(SignatureError):
    """A well-signed handoff that is still not to be honoured (wrong session, reused count, ...)."""


# ---------------------------------------------------------------------------
# keys and signatures


def generate_key() -> Ed25519PrivateKey:
    """A fresh Ed25519 key pair, as each side of a new session makes."""
    return Ed25519PrivateKey.generate()


def public_key_bytes(key: Ed25519PublicKey) -> bytes:
    """The key's 32 raw bytes (the draft's ``q``)."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_key_to_syrup(key: Ed25519PublicKey) -> list[Any]:
    """``['public-key ['ecc ['curve 'Ed25519] ['flags 'eddsa] ['q q]]]``."""
    return [_PUBLIC_KEY, [_ECC, [_CURVE, _ED25519], [_FLAGS, _EDDSA], [_Q, public_key_bytes(key)]]]


def _pair(value: object, name: Symbol, what: str) -> Any:
    """The second element of a decoded ``[name, x]`` list."""
    if not isinstance(value, list | tuple) or len(value) != 2 or value[0] != name:
        raise SignatureError(f"{what}: expected ['{name} ...], got {_describe(value)}")
    return value[1]


def public_key_from_syrup(value: object) -> Ed25519PublicKey:
    """The Ed25519 public key a decoded ``['public-key ...]`` value holds."""
    what = "not an OCapN public key"
    ecc = _pair(value, _PUBLIC_KEY, what)
    if not isinstance(ecc, list | tuple) or len(ecc) != 4 or ecc[0] != _ECC:
        raise SignatureError(f"{what}: expected ['public-key ['ecc curve flags q]], got {_describe(ecc)} inside")
    curve = _pair(ecc[1], _CURVE, what)
    if curve != _ED25519:
        raise SignatureError(f"public key's curve is {_describe(curve)}, not 'Ed25519 (the only curve OCapN uses)")
    flags = _pair(ecc[2], _FLAGS, what)
    if flags != _EDDSA:
        raise SignatureError(f"public key's flags are {_describe(flags)}, not 'eddsa")
    q = _pair(ecc[3], _Q, what)
    if not isinstance(q, bytes) or len(q) != _KEY_BYTES:
        raise SignatureError(f"public key's q must be {_KEY_BYTES} bytes, not {_describe(q)}")
    return Ed25519PublicKey.from_public_bytes(q)


def signature_to_syrup(signature: bytes) -> list[Any]:
    """``['sig-val ['eddsa ['r r] ['s s]]]`` for a 64-byte Ed25519 signature."""
    if len(signature) != 2 * _SIGNATURE_HALF:
        raise ValueError(f"an Ed25519 signature is {2 * _SIGNATURE_HALF} bytes, not {len(signature)}")
    return [_SIG_VAL, [_EDDSA, [_R, signature[:_SIGNATURE_HALF]], [_S, signature[_SIGNATURE_HALF:]]]]


def signature_from_syrup(value: object) -> bytes:
    """The 64-byte signature (r then s) a decoded ``['sig-val ...]`` value holds."""
    what = "not an OCapN signature"
    eddsa = _pair(value, _SIG_VAL, what)
    if not isinstance(eddsa, list | tuple) or len(eddsa) != 3:
        raise SignatureError(f"{what}: expected ['sig-val ['eddsa r s]], got {_describe(eddsa)} inside")
    if eddsa[0] != _EDDSA:
        raise SignatureError(f"signature scheme is {_describe(eddsa[0])}, not 'eddsa")
    halves = []
    for part, name in ((eddsa[1], _R), (eddsa[2], _S)):
        half = _pair(part, name, what)
        if not isinstance(half, bytes) or len(half) != _SIGNATURE_HALF:
            raise SignatureError(f"signature's {name} must be {_SIGNATURE_HALF} bytes, not {_describe(half)}")
        halves.append(half)
    return halves[0] + halves[1]


def _verify(key: Ed25519PublicKey, signature: bytes, data: bytes, what: str) -> None:
    try:
        key.verify(signature, data)
    except InvalidSignature:
        raise SignatureError(f"the signature on the {what} does not verify with the expected key") from None


def public_identifier(key: Ed25519PublicKey) -> bytes:
    """A side's public ID: SHA-256 of SHA-256 of its public key's Syrup encoding."""
    return hashlib.sha256(hashlib.sha256(encode(public_key_to_syrup(key))).digest()).digest()


def session_id(key: Ed25519PublicKey, other: Ed25519PublicKey) -> bytes:
    """The session ID both sides compute from their two session keys (order does not matter)."""
    low, high = sorted((public_identifier(key), public_identifier(other)))
    return hashlib.sha256(hashlib.sha256(SESSION_ID_PREFIX + low + high).digest()).digest()


# ---------------------------------------------------------------------------
# the signed location


def _location_value(location: PeerLocator | Record) -> Any:
    return location.to_syrup() if isinstance(location, PeerLocator) else location


def sign_location(key: Ed25519PrivateKey, location: PeerLocator | Record) -> list[Any]:
    """The ``acceptable-location-sig`` of ``op:start-session``: a signature of ``<my-location location>``."""
    return signature_to_syrup(key.sign(encode(Record(MY_LOCATION_LABEL, (_location_value(location),)))))


def verify_location(key: Ed25519PublicKey, location: PeerLocator | Record, signature: object) -> None:
    """Check an ``op:start-session``'s location signature; ``SignatureError`` if it fails.

    Pass ``location`` as decoded from the message (a ``Record``), not
    rebuilt: the signature is over its exact encoding.
    """
    data = encode(Record(MY_LOCATION_LABEL, (_location_value(location),)))
    _verify(key, signature_from_syrup(signature), data, "session's location")


# ---------------------------------------------------------------------------
# desc:sig-envelope


def sign_envelope(key: Ed25519PrivateKey, signed: object) -> Record:
    """``<desc:sig-envelope signed signature>``: ``signed`` itself and the signature of its encoding."""
    return Record(ENVELOPE_LABEL, (signed, signature_to_syrup(key.sign(encode(signed)))))


def open_envelope(envelope: object) -> tuple[Any, bytes]:
    """The signed value and the raw signature of a decoded envelope, NOT verified."""
    if not isinstance(envelope, Record) or envelope.label != ENVELOPE_LABEL:
        raise SignatureError(f"expected a desc:sig-envelope, got {_describe(envelope)}")
    if len(envelope.fields) != 2:
        raise SignatureError(f"a desc:sig-envelope has 2 fields (signed, signature), not {len(envelope.fields)}")
    signed, signature = envelope.fields
    return signed, signature_from_syrup(signature)


def verify_envelope(key: Ed25519PublicKey, envelope: object, what: str = "desc:sig-envelope") -> Any:
    """The value a decoded envelope holds, once its signature verifies with ``key``."""
    signed, signature = open_envelope(envelope)
    _verify(key, signature, encode(signed), what)
    return signed


# ---------------------------------------------------------------------------
# third-party handoffs


def is_gift_id(value: object) -> bool:
    """A gift id: bytes as the test suite sends, or a non-negative integer as the spec says (bounded both ways).

    Not a boolean (Python's ``True == 1``), nor a string: those are other Syrup types.
    """
    if type(value) is bytes:
        return 0 < len(value) <= MAX_GIFT_ID_BYTES
    return type(value) is int and 0 <= value <= MAX_GIFT_ID


@dataclass(frozen=True, slots=True)
class HandoffGive:
    """``<desc:handoff-give receiver-key exporter-location session gifter-side gift-id>``.

    The gifter's certificate: "the holder of ``receiver_key`` (the receiver's
    key in the Gifter-Receiver session) may withdraw gift ``gift_id`` that I,
    ``gifter_side`` of session ``session`` with the exporter, deposit there".
    """

    receiver_key: Ed25519PublicKey
    exporter_location: PeerLocator
    session: bytes
    gifter_side: bytes
    #: bytes (the suite's form) or an int (the spec's); ``is_gift_id`` holds.
    gift_id: bytes | int

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HandoffGive):
            return NotImplemented
        return encode(self.to_syrup()) == encode(other.to_syrup())

    def __hash__(self) -> int:
        return hash(encode(self.to_syrup()))

    def to_syrup(self) -> Record:
        return Record(
            GIVE_LABEL,
            (public_key_to_syrup(self.receiver_key), self.exporter_location.to_syrup(), self.session, self.gifter_side, self.gift_id),
        )

    @classmethod
    def from_syrup(cls, value: object) -> HandoffGive:
        """The give a decoded record holds; ``SignatureError`` naming the bad field."""
        fields = _record_fields(value, GIVE_LABEL, ("receiver-key", "exporter-location", "session", "gifter-side", "gift-id"))
        receiver_key = public_key_from_syrup(fields[0])
        try:
            exporter_location = PeerLocator.from_syrup(fields[1])
        except LocatorError as error:
            raise SignatureError(f"handoff-give's exporter-location: {error}") from None
        session = _id_field(fields[2], "handoff-give's session")
        gifter_side = _id_field(fields[3], "handoff-give's gifter-side")
        gift_id = fields[4]
        if not is_gift_id(gift_id):
            raise SignatureError(f"handoff-give's gift-id: {GIFT_ID_FORMS}, not {_describe(gift_id)}")
        return cls(receiver_key, exporter_location, session, gifter_side, gift_id)


@dataclass(frozen=True, slots=True)
class HandoffReceive:
    """``<desc:handoff-receive receiving-session receiving-side handoff-count signed-give>``.

    The receiver's certificate to the exporter: "I, ``receiving_side`` of
    session ``receiving_session`` with you, am the receiver named in
    ``signed_give``" (kept as decoded, so its signature can be checked).
    """

    receiving_session: bytes
    receiving_side: bytes
    handoff_count: int
    signed_give: Record

    def to_syrup(self) -> Record:
        return Record(RECEIVE_LABEL, (self.receiving_session, self.receiving_side, self.handoff_count, self.signed_give))

    @classmethod
    def from_syrup(cls, value: object) -> HandoffReceive:
        """The receive a decoded record holds; ``SignatureError`` naming the bad field."""
        fields = _record_fields(value, RECEIVE_LABEL, ("receiving-session", "receiving-side", "handoff-count", "signed-give"))
        receiving_session = _id_field(fields[0], "handoff-receive's receiving-session")
        receiving_side = _id_field(fields[1], "handoff-receive's receiving-side")
        count = fields[2]
        if type(count) is not int or count < 0:
            raise HandoffError(f"handoff-receive's handoff count must be a non-negative integer, not {_describe(count)}")
        signed_give = fields[3]
        if not isinstance(signed_give, Record) or signed_give.label != ENVELOPE_LABEL:
            raise SignatureError(f"handoff-receive's signed-give must be a desc:sig-envelope, not {_describe(signed_give)}")
        return cls(receiving_session, receiving_side, count, signed_give)


def make_handoff_give(
    gifter_key: Ed25519PrivateKey,
    *,
    receiver_key: Ed25519PublicKey,
    exporter_location: PeerLocator,
    session: bytes,
    gifter_side: bytes,
    gift_id: bytes | int,
) -> Record:
    """The gifter's signed give, to send to the receiver in place of the reference.

    ``gifter_key`` is the gifter's key in the Gifter-Exporter session (whose
    ID is ``session`` and in which the gifter's public ID is ``gifter_side``);
    ``receiver_key`` the receiver's key in the Gifter-Receiver session.
    """
    give = HandoffGive(receiver_key, exporter_location, session, gifter_side, gift_id)
    return sign_envelope(gifter_key, give.to_syrup())


def check_handoff_give(signed_give: object, receiver_key: Ed25519PublicKey) -> HandoffGive:
    """The receiver's check of a signed give received over the Gifter-Receiver session.

    ``receiver_key`` is the receiver's own public key in that session. The
    receiver cannot check the gifter's signature (it does not know the
    gifter's key with the exporter); the exporter will.
    """
    give = HandoffGive.from_syrup(open_envelope(signed_give)[0])
    if public_key_bytes(give.receiver_key) != public_key_bytes(receiver_key):
        raise HandoffError("handoff-give names another receiver: its receiver-key is not this session's key")
    return give


def make_handoff_receive(
    receiver_key: Ed25519PrivateKey,
    signed_give: Record,
    *,
    receiving_session: bytes,
    receiving_side: bytes,
    handoff_count: int,
) -> Record:
    """The receiver's signed receive, to pass to the exporter's ``withdraw-gift``.

    ``receiver_key`` is the receiver's key in the Gifter-Receiver session
    (the one the give names), not in the Exporter-Receiver session;
    ``receiving_session`` and ``receiving_side`` are the Exporter-Receiver
    session's ID and the receiver's public ID in it. ``handoff_count`` must
    never repeat in that session.
    """
    receive = HandoffReceive(receiving_session, receiving_side, handoff_count, signed_give)
    return sign_envelope(receiver_key, receive.to_syrup())


def check_handoff_receive(
    signed_receive: object,
    *,
    gifter_key_for_session: Callable[[bytes], Ed25519PublicKey | None],
    session_id: bytes,
    receiver_side: bytes,
    used_counts: Container[int],
    exporter_location: PeerLocator | None = None,
) -> tuple[HandoffGive, HandoffReceive]:
    """The exporter's checks of a signed receive from ``withdraw-gift``, in the draft's order.

    - ``gifter_key_for_session(id)``: the other side's public key in the
      exporter's session with that ID, or None if it has no such session;
    - ``session_id``, ``receiver_side``: the ID of the session the receive
      arrived on and the other side's public ID in it;
    - ``used_counts``: the handoff counts already honoured in that session
      (the caller adds this one once it honours it);
    - ``exporter_location``: if given, the give must name this exporter.

    Returns the give and the receive once the give is signed by the gifter
    side of the session it names, the receive by the receiver the give
    names, for this session, with a fresh count. Raises ``SignatureError``
    or ``HandoffError`` otherwise.
    """
    receive_value, receive_signature = open_envelope(signed_receive)
    receive = HandoffReceive.from_syrup(receive_value)
    give_value, give_signature = open_envelope(receive.signed_give)
    give = HandoffGive.from_syrup(give_value)
    gifter_key = gifter_key_for_session(give.session)
    if gifter_key is None:
        raise HandoffError("handoff-give names a session this exporter does not have")
    if give.gifter_side != public_identifier(gifter_key):
        raise HandoffError("handoff-give's gifter-side is not the gifter's side of the session it names")
    _verify(gifter_key, give_signature, encode(give_value), "handoff-give")
    _verify(give.receiver_key, receive_signature, encode(receive_value), "handoff-receive")
    if exporter_location is not None and not give.exporter_location.same_peer(exporter_location):
        raise HandoffError("handoff-give names another exporter")
    if receive.receiving_session != session_id:
        raise HandoffError("handoff-receive is for another session than the one it arrived on")
    if receive.receiving_side != receiver_side:
        raise HandoffError("handoff-receive's receiving-side is not the other side of this session")
    if receive.handoff_count in used_counts:
        raise HandoffError(f"handoff count {receive.handoff_count} was already used in this session (a replay)")
    return give, receive


# ---------------------------------------------------------------------------
# helpers


def _record_fields(value: object, label: Symbol, names: tuple[str, ...]) -> tuple[Any, ...]:
    if not isinstance(value, Record) or value.label != label:
        raise SignatureError(f"expected a {label}, got {_describe(value)}")
    if len(value.fields) != len(names):
        raise SignatureError(f"a {label} has {len(names)} fields ({', '.join(names)}), not {len(value.fields)}")
    return value.fields


def _id_field(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != _HASH_BYTES:
        raise SignatureError(f"{what} must be {_HASH_BYTES} bytes, not {_describe(value)}")
    return value


def _describe(value: object) -> str:
    """A short description of a decoded value for an error message: never its whole content."""
    if isinstance(value, Symbol):
        return f"'{value.name}"[:60]
    if isinstance(value, Record):
        return f"a record labelled {_describe(value.label)}"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    if isinstance(value, list | tuple):
        head = f" starting {_describe(value[0])}" if value else ""
        return f"a list of {len(value)}{head}"
    if isinstance(value, str):
        return f"the string {value[:40]!r}"
    if isinstance(value, bool | int):
        return repr(value)[:40]
    return f"a {type(value).__name__}"
