"""The OCapN wire profile: the session's messages as OCapN's Syrup records.

One ``OcapnProfile`` per session (it holds that session's Ed25519 key and,
once the peer's ``op:start-session`` is checked, the peer's key and location).
It implements ``captp.profile.WireProfile``:

- **start-session** carries ``"1.0"``, our session public key, our location
  and our signature of ``<my-location location>``; the peer's must carry the
  same version (else ``version-mismatch``), a well-formed Ed25519 key, a
  location and a valid signature of it by that key (else ``bad-field``).
  ``on_started`` (the node's hook) may refuse the peer too — the crossed
  hellos rule — by raising ``ProtocolError``.
- **messages** are ``captp.ocapn_syrup``'s mapping: a deliver's method is its
  leading symbol argument, gc ops are written in the singular and read in
  both numbers, ``false`` stands for no answer position.
- **frames** are Syrup values back to back on the stream (no length prefix):
  ``SyrupSplitter`` cuts them.
- **values the profile adds** to the session's passables: ``Symbol``;
  ``PeerLocator`` and ``SturdyRef`` (as ``ocapn-peer``/``ocapn-sturdyref``
  records); a signed handoff (``desc:sig-envelope``) received in a call's
  arguments goes to ``on_handoff`` (the node turns a handoff-give into a
  promise for the gift) or, without one, stays a ``Record``. Sending, a
  reference the session cannot describe because it belongs to another
  OCapN session goes to ``on_foreign`` (the node's gifter side of a
  third-party handoff), which returns the signed handoff-give to write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .messages import (
    R_BAD_ARITY,
    R_BAD_FIELD,
    R_FRAME_TOO_LARGE,
    R_MALFORMED,
    R_TOO_MANY_DESCRIPTORS,
    R_TOO_MANY_ELEMENTS,
    R_UNKNOWN_OP,
    R_VERSION,
    Abort,
    Deliver,
    DeliverOnly,
    DescKind,
    Descriptor,
    GcAnswers,
    GcExports,
    LimitExceeded,
    Listen,
    Message,
    ProtocolError,
    StartSession,
    brief,
)
from .ocapn_keys import (
    SignatureError,
    generate_key,
    public_identifier,
    public_key_from_syrup,
    public_key_to_syrup,
    session_id,
    sign_location,
    verify_location,
)
from .ocapn_locators import LocatorError, PeerLocator, SturdyRef
from .passable import RemoteError, Symbol, Tagged
from .profile import Describe, Revive
from .syrup import MAX_DEPTH, Record, SyrupError, SyrupSplitter, decode, encode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from .session import Limits

__all__ = ["CAPTP_VERSION", "HANDOFF_GIVE", "OcapnProfile", "PeerInfo"]

#: The version every ``op:start-session`` carries (the draft spec's and the suite's).
CAPTP_VERSION = "1.0"

_S = Symbol
VOID, NULL, TAGGED, ERROR = _S("void"), _S("null"), _S("desc:tagged"), _S("desc:error")
SIG_ENVELOPE, HANDOFF_GIVE = _S("desc:sig-envelope"), _S("desc:handoff-give")
PEER, STURDYREF = _S("ocapn-peer"), _S("ocapn-sturdyref")
DESC_LABEL = {
    DescKind.IMPORT_OBJECT: _S("desc:import-object"),
    DescKind.IMPORT_PROMISE: _S("desc:import-promise"),
    DescKind.EXPORT: _S("desc:export"),
    DescKind.ANSWER: _S("desc:answer"),
}
DESC_KIND = {label: kind for kind, label in DESC_LABEL.items()}
OP_START, OP_DELIVER, OP_DELIVER_ONLY, OP_LISTEN, OP_ABORT = (
    _S("op:start-session"), _S("op:deliver"), _S("op:deliver-only"), _S("op:listen"), _S("op:abort"),
)
#: The spec's plural gc ops, and the singular ones the suite and Goblins write.
OP_GC_EXPORTS, OP_GC_EXPORT, OP_GC_ANSWERS, OP_GC_ANSWER = (
    _S("op:gc-exports"), _S("op:gc-export"), _S("op:gc-answers"), _S("op:gc-answer"),
)
_ARITY = {
    OP_START: (StartSession, 4), OP_DELIVER: (Deliver, 4), OP_DELIVER_ONLY: (DeliverOnly, 2),
    OP_LISTEN: (Listen, 3), OP_ABORT: (Abort, 1), OP_GC_EXPORTS: (GcExports, 2), OP_GC_EXPORT: (GcExports, 2),
    OP_GC_ANSWERS: (GcAnswers, 1), OP_GC_ANSWER: (GcAnswers, 1),
}

_PLAIN = frozenset({str, bytes, bool, float, int, Symbol})

#: The shortest descriptor, ``<11'desc:export0+>``: every value takes at least
#: one byte and every descriptor this many, so a frame shorter than the
#: limits allow cannot exceed them and is not counted.
_MIN_DESCRIPTOR_BYTES = len(b"<11'desc:export0+>")


class PeerInfo:
    """What the peer's checked ``op:start-session`` said: its key, location and the session's IDs."""

    __slots__ = ("key", "location", "location_record", "session_id", "peer_side", "our_side")

    def __init__(self, key: Ed25519PublicKey, location: PeerLocator, location_record: Record, ours: Ed25519PublicKey) -> None:
        self.key = key
        self.location = location
        #: The record exactly as the peer wrote it (what its signature covers).
        self.location_record = location_record
        self.session_id = session_id(ours, key)
        self.peer_side = public_identifier(key)
        self.our_side = public_identifier(ours)


OnStarted = Callable[["OcapnProfile"], None]
OnHandoff = Callable[["OcapnProfile", Record], Any]
OnForeign = Callable[["OcapnProfile", Any], Any]


def method_symbol(method: str) -> Symbol:
    """``deposit_gift`` -> ``'deposit-gift``: Python's spelling to OCapN's."""
    return Symbol(method.replace("_", "-"))


def symbol_method(symbol: Symbol) -> str:
    """``'withdraw-gift`` -> ``withdraw_gift`` (the session refuses a name no method can have)."""
    return symbol.name.replace("-", "_")


class _Splitter:
    def __init__(self, max_frame_size: int) -> None:
        self._splitter = SyrupSplitter(max_value_bytes=max_frame_size)
        self._max = max_frame_size

    def feed(self, data: bytes) -> list[bytes]:
        try:
            self._splitter.feed(data)
            frames = []
            while (frame := self._splitter.next_value()) is not None:
                frames.append(frame)
            return frames
        except SyrupError as e:
            code = R_FRAME_TOO_LARGE if "max_value_bytes" in str(e) or "larger" in str(e) else R_MALFORMED
            raise ProtocolError(code, str(e)) from None

    @property
    def buffered(self) -> int:
        return self._splitter.buffered


class OcapnProfile:
    """The OCapN profile for one session. See the module docstring."""

    name = "ocapn"

    def __init__(
        self,
        location: PeerLocator,
        key: Ed25519PrivateKey | None = None,
        *,
        on_started: OnStarted | None = None,
        on_handoff: OnHandoff | None = None,
        on_foreign: OnForeign | None = None,
    ) -> None:
        self.location = location
        self.key = key if key is not None else generate_key()
        self.on_started = on_started
        self.on_handoff = on_handoff
        self.on_foreign = on_foreign
        #: Set once the peer's start-session is checked.
        self.peer: PeerInfo | None = None

    # -- start-session ---------------------------------------------------------------
    def start_session(self) -> StartSession:
        extra = (public_key_to_syrup(self.key.public_key()), self.location.to_syrup(), sign_location(self.key, self.location))
        return StartSession(CAPTP_VERSION, extra)

    def check_start(self, message: StartSession) -> None:
        if message.version != CAPTP_VERSION:
            raise ProtocolError(R_VERSION, f"peer speaks CapTP {brief(message.version)}, not {CAPTP_VERSION}")
        key_syrup, location_record, signature = message.extra
        try:
            key = public_key_from_syrup(key_syrup)
            location = PeerLocator.from_syrup(location_record)
            verify_location(key, location_record, signature)
        except (SignatureError, LocatorError, TypeError, ValueError) as e:
            raise ProtocolError(R_BAD_FIELD, str(e)) from None
        self.peer = PeerInfo(key, location, location_record, self.key.public_key())
        if self.on_started is not None:
            self.on_started(self)

    # -- encoding ------------------------------------------------------------------------
    def encode_message(self, message: Message, describe: Describe, limits: Limits) -> bytes:
        counter = [0]

        def on_ref(obj: Any) -> Any:
            counter[0] += 1
            if self.on_foreign is not None:
                handed = self.on_foreign(self, obj)
                if handed is not None:
                    return handed
            return self._desc(describe(obj))

        if isinstance(message, Deliver):
            record = Record(OP_DELIVER, (
                self._desc(message.target),
                self._value(_with_method(message.method, message.args), on_ref, 0),
                False if message.answer_pos is None else message.answer_pos,
                False if message.resolve_me is None else on_ref(message.resolve_me),
            ))
        elif isinstance(message, DeliverOnly):
            record = Record(OP_DELIVER_ONLY, (self._desc(message.target), self._value(_with_method(message.method, message.args), on_ref, 0)))
        elif isinstance(message, Listen):
            record = Record(OP_LISTEN, (self._desc(message.target), on_ref(message.resolver), bool(message.wants_partial)))
        elif isinstance(message, GcExports):
            record = Record(OP_GC_EXPORT, (list(message.positions), list(message.deltas)))
        elif isinstance(message, GcAnswers):
            record = Record(OP_GC_ANSWER, (list(message.positions),))
        elif isinstance(message, Abort):
            record = Record(OP_ABORT, (message.reason,))
        elif isinstance(message, StartSession):
            record = Record(OP_START, (message.version, *message.extra))
        else:
            raise TypeError(f"the OCapN profile cannot write {type(message).__name__}")
        frame = encode(record)
        if len(frame) > limits.max_frame_size:
            raise LimitExceeded(f"message of {len(frame)} bytes is over the {limits.max_frame_size}-byte frame limit")
        if counter[0] > limits.max_descriptors:
            raise LimitExceeded(f"message holds more than {limits.max_descriptors} references")
        return frame

    @staticmethod
    def _desc(desc: Descriptor) -> Record:
        return Record(DESC_LABEL[desc.kind], (desc.position,))

    def _value(self, value: Any, on_ref: Callable[[Any], Any], depth: int) -> Any:
        t = type(value)
        if t in _PLAIN:
            return value
        if value is None:
            return Record(NULL)
        if depth >= MAX_DEPTH:
            raise TypeError(f"value nested deeper than {MAX_DEPTH} levels")
        depth += 1
        if t is list or t is tuple:
            return [self._value(v, on_ref, depth) for v in value]
        if t is dict:
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise TypeError(f"record keys must be str, not {type(k).__name__}")
                out[k] = self._value(v, on_ref, depth)
            return out
        if t is Tagged:
            return Record(TAGGED, (Symbol(value.tag), self._value(value.payload, on_ref, depth)))
        if t is PeerLocator or t is SturdyRef:
            return value.to_syrup()
        if t is Record:
            if value.label == SIG_ENVELOPE:
                return value  # a signed handoff, written as received or made
            raise TypeError(f"cannot pass a record labelled {brief(value.label)}")
        if t is Descriptor:
            return self._desc(value)
        if isinstance(value, BaseException):
            err = RemoteError.from_exception(value)
            return Record(ERROR, (f"{err.name}: {err.message}" if err.message else err.name,))
        return on_ref(value)

    # -- decoding ------------------------------------------------------------------------
    def decode_message(self, frame: bytes, limits: Limits) -> Message:
        try:
            record = decode(frame)
        except SyrupError as e:
            raise ProtocolError(R_MALFORMED, str(e)) from None
        if type(record) is not Record:
            raise ProtocolError(R_MALFORMED, "a message must be a record")
        if len(frame) > limits.max_elements or len(frame) >= _MIN_DESCRIPTOR_BYTES * limits.max_descriptors:
            _count(record, limits)
        known = _ARITY.get(record.label)
        if known is None:
            raise ProtocolError(R_UNKNOWN_OP, brief(record.label))
        cls, arity = known
        fields = record.fields
        if len(fields) != arity:
            raise ProtocolError(R_BAD_ARITY, f"{record.label.name} takes {arity} fields, got {len(fields)}", op=cls)
        if cls is Deliver:
            to, args, pos, resolver = fields
            method, args = _split_method(args)
            return Deliver(_read_desc(to), method, args, None if pos is False else pos, None if resolver is False else _read_desc(resolver))
        if cls is DeliverOnly:
            to, args = fields
            method, args = _split_method(args)
            return DeliverOnly(_read_desc(to), method, args)
        if cls is Listen:
            return Listen(_read_desc(fields[0]), _read_desc(fields[1]), fields[2])
        if cls is GcExports:
            return GcExports(fields[0], fields[1])
        if cls is GcAnswers:
            return GcAnswers(fields[0])
        if cls is Abort:
            return Abort(fields[0])
        return StartSession(fields[0], fields[1:])

    def decode_args(self, args: Any, revive: Revive) -> list[Any]:
        if type(args) is not list:
            raise ProtocolError(R_BAD_FIELD, "args must be a list")
        try:
            value: list[Any] = self._revive(args, revive, 0)
        except (LocatorError, SignatureError) as e:
            raise ProtocolError(R_MALFORMED, str(e)) from None
        return value

    def _revive(self, value: Any, revive: Revive, depth: int) -> Any:
        t = type(value)
        if t in _PLAIN:
            return value
        if depth >= MAX_DEPTH:
            raise ProtocolError(R_MALFORMED, f"value nested deeper than {MAX_DEPTH} levels")
        depth += 1
        if t is list:
            return [self._revive(v, revive, depth) for v in value]
        if t is dict:
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise ProtocolError(R_MALFORMED, "a passable dictionary's keys are strings")
                out[k] = self._revive(v, revive, depth)
            return out
        if t is not Record:
            raise ProtocolError(R_MALFORMED, f"a {t.__name__} is not passable")
        label, fields = value.label, value.fields
        kind = DESC_KIND.get(label)
        if kind is not None:
            return revive(_read_desc(value, kind))
        if label == NULL or label == VOID:
            if fields:
                raise ProtocolError(R_MALFORMED, f"<{label.name}> has no fields")
            return None
        if label == TAGGED:
            if len(fields) != 2 or type(fields[0]) not in (Symbol, str):
                raise ProtocolError(R_MALFORMED, "<desc:tagged> takes a tag and a payload")
            tag = fields[0].name if type(fields[0]) is Symbol else fields[0]
            return Tagged(tag, self._revive(fields[1], revive, depth))
        if label == ERROR:
            if len(fields) != 1 or type(fields[0]) is not str:
                raise ProtocolError(R_MALFORMED, "<desc:error> takes a message string")
            return RemoteError("Error", fields[0])
        if label == STURDYREF:
            return SturdyRef.from_syrup(value)
        if label == PEER:
            return PeerLocator.from_syrup(value)
        if label == SIG_ENVELOPE:
            if self.on_handoff is not None:
                return self.on_handoff(self, value)
            return value
        raise ProtocolError(R_MALFORMED, f"unknown record {brief(label)}")

    # -- streams ----------------------------------------------------------------------------
    def frame_splitter(self, max_frame_size: int) -> _Splitter:
        return _Splitter(max_frame_size)

    def stream_bytes(self, frames: list[bytes]) -> bytes:
        return b"".join(frames)


def _with_method(method: str | None, args: Any) -> list[Any]:
    return list(args) if method is None else [method_symbol(method), *args]


def _split_method(args: Any) -> tuple[str | None, Any]:
    if type(args) is list and args and type(args[0]) is Symbol:
        return symbol_method(args[0]), args[1:]
    return None, args


def _read_desc(value: Any, kind: DescKind | None = None) -> Descriptor:
    if type(value) is not Record or len(value.fields) != 1:
        raise ProtocolError(R_MALFORMED, f"expected a descriptor, got {brief(value)}")
    if kind is None:
        kind = DESC_KIND.get(value.label)
        if kind is None:
            raise ProtocolError(R_MALFORMED, f"expected a descriptor, got {brief(value.label)}")
    pos = value.fields[0]
    if type(pos) is not int or pos < 0 or pos > 2**53 - 1:
        raise ProtocolError(R_MALFORMED, "a descriptor's position must be an integer 0..2**53-1")
    return Descriptor(kind, pos)


def _count(record: Record, limits: Limits) -> None:
    """Refuse a message with more values or descriptors than the limits allow (bounded walk)."""
    elements = descriptors = 0
    stack: list[Any] = [record]
    while stack:
        value = stack.pop()
        elements += 1
        t = type(value)
        if t is list or t is tuple:
            stack.extend(value)
        elif t is dict:
            stack.extend(value.keys())
            stack.extend(value.values())
        elif t is frozenset:
            stack.extend(value)
        elif t is Record:
            if value.label in DESC_KIND:
                descriptors += 1
            stack.extend(value.fields)
        if elements > limits.max_elements:
            raise ProtocolError(R_TOO_MANY_ELEMENTS, f"more than {limits.max_elements} elements in one frame")
    if descriptors > limits.max_descriptors:
        raise ProtocolError(R_TOO_MANY_DESCRIPTORS, f"more than {limits.max_descriptors} descriptors in one frame")
