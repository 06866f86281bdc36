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
  ``SyrupReader`` cuts and decodes them in one pass, and ``decode_message``
  takes the value it decoded (a ``SyrupFrame``) instead of decoding again.
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

import re
import struct
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
    Get,
    Index,
    LimitExceeded,
    Listen,
    Message,
    ProtocolError,
    StartSession,
    Untag,
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
from .syrup import MAX_DEPTH, MAX_INTEGER_DIGITS, Record, SyrupError, SyrupFrame, SyrupReader, decode, encode

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from .session import Limits

__all__ = ["CAPTP_VERSION", "HANDOFF_GIVE", "OcapnProfile", "PeerInfo", "error_text", "read_error"]

#: The version every ``op:start-session`` carries (the draft spec's and the suite's).
CAPTP_VERSION = "1.0"

#: An error's one string on the wire is ``"Name: message"``; a prefix of this
#: form before ``": "`` is read back as the name. OCapN's ``desc:error`` has one
#: field (Endo reads exactly one string and refuses a record with more), so the
#: name rides in the message. An identifier is what Python and JavaScript error
#: class names are; a message that merely starts with one (another peer's
#: "note: …") reads as an error of that name, and prints the same either way.
_ERROR_NAME = re.compile(r"([A-Za-z_][A-Za-z0-9_]{0,63}): (.*)\Z", re.DOTALL)


def error_text(err: RemoteError) -> str:
    """The one string a ``desc:error`` carries: ``"Name: message"`` (see ``read_error``)."""
    return f"{err.name}: {err.message}"


def read_error(text: str) -> RemoteError:
    """A ``desc:error``'s string as a ``RemoteError``: ``"Name: message"`` gives both back; other text is the message of an "Error"."""
    named = _ERROR_NAME.match(text)
    if named is None:
        return RemoteError("Error", text)
    return RemoteError(named.group(1), named.group(2))

_S = Symbol
VOID, NULL, TAGGED, ERROR = _S("void"), _S("null"), _S("desc:tagged"), _S("desc:error")
#: What Guile Goblins breaks a promise with for any exception: no fields, so
#: that nothing about the exception leaks. Read, never written.
MYSTERY_ERROR = _S("exn:fail:mystery")

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
#: Pipelining on copy data: a field, an element, a payload of what a promise settles to.
OP_GET, OP_INDEX, OP_UNTAG = _S("op:get"), _S("op:index"), _S("op:untag")
_ARITY = {
    OP_START: (StartSession, 4), OP_DELIVER: (Deliver, 4), OP_DELIVER_ONLY: (DeliverOnly, 2),
    OP_LISTEN: (Listen, 3), OP_ABORT: (Abort, 1), OP_GC_EXPORTS: (GcExports, 2), OP_GC_EXPORT: (GcExports, 2),
    OP_GC_ANSWERS: (GcAnswers, 1), OP_GC_ANSWER: (GcAnswers, 1),
    OP_GET: (Get, 3), OP_INDEX: (Index, 3), OP_UNTAG: (Untag, 3),
}

# The tables above by the labels' names: looked up by a Symbol's name (a str,
# whose hash is kept) rather than by the Symbol (whose hash is computed).
_ARITY_BY_NAME = {label.name: known for label, known in _ARITY.items()}
_DESC_KIND_BY_NAME = {label.name: kind for label, kind in DESC_KIND.items()}

#: Every label above and the methods that settle answers: a ``SyrupReader``
#: reads these symbols as these objects (``symbols``).
LABELS = (
    VOID, NULL, TAGGED, ERROR, MYSTERY_ERROR, SIG_ENVELOPE, HANDOFF_GIVE, PEER, STURDYREF, *DESC_LABEL.values(), *_ARITY,
    _S("fulfill"), _S("break"),
)

_PLAIN = frozenset({str, bytes, bool, float, int, Symbol})
#: Bits of the largest int written: MAX_INTEGER_DIGITS decimal digits (as ``syrup``).
_MAX_INTEGER_BITS = MAX_INTEGER_DIGITS * 10 // 3 + 1
#: Ints below this have far fewer digits than any limit: written without checks.
_SMALL_INT = 2**64

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
    """Cuts a stream into frames, decoding each as it goes (``SyrupReader``): ``decode_message`` reuses the value."""

    def __init__(self, max_frame_size: int) -> None:
        self._splitter = SyrupReader(max_value_bytes=max_frame_size, symbols=LABELS)
        self._max = max_frame_size

    def feed(self, data: bytes) -> list[bytes]:
        try:
            self._splitter.feed(data)
            frames: list[bytes] = []
            while (frame := self._splitter.next_frame()) is not None:
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
        writer = _Writer(self, describe, limits)
        out = writer.out
        if isinstance(message, Deliver):
            out.append(_OPEN_DELIVER)
            writer.desc(message.target)
            writer.args(message.method, message.args)
            out.append(b"f" if message.answer_pos is None else _int(message.answer_pos))
            if message.resolve_me is None:
                out.append(b"f")
            else:
                writer.ref(message.resolve_me)
        elif isinstance(message, DeliverOnly):
            out.append(_OPEN_DELIVER_ONLY)
            writer.desc(message.target)
            writer.args(message.method, message.args)
        elif isinstance(message, Listen):
            out.append(_OPEN_LISTEN)
            writer.desc(message.target)
            writer.ref(message.resolver)
            out.append(b"t" if message.wants_partial else b"f")
        elif isinstance(message, GcExports):
            out.append(_OPEN_GC_EXPORT)
            writer.value(list(message.positions), 0)
            writer.value(list(message.deltas), 0)
        elif isinstance(message, GcAnswers):
            out.append(_OPEN_GC_ANSWER)
            writer.value(list(message.positions), 0)
        elif isinstance(message, Abort):
            out.append(_OPEN_ABORT)
            writer.value(message.reason, 0)
        elif isinstance(message, (Get, Index, Untag)):
            out.append(_OPEN_SELECT[type(message)])
            writer.desc(message.target)
            writer.value(message[1], 0)
            out.append(_int(message.answer_pos))
        elif isinstance(message, StartSession):
            out.append(_OPEN_START)
            writer.value(message.version, 0)
            for part in message.extra:
                writer.syrup(part)
        else:
            raise TypeError(f"the OCapN profile cannot write {type(message).__name__}")
        out.append(b">")
        frame = b"".join(out)
        if len(frame) > limits.max_frame_size:
            raise LimitExceeded(f"message of {len(frame)} bytes is over the {limits.max_frame_size}-byte frame limit")
        return frame

    # -- decoding ------------------------------------------------------------------------
    def decode_message(self, frame: bytes, limits: Limits) -> Message:
        if type(frame) is SyrupFrame:  # cut from a stream by a SyrupReader, which decoded it already
            record = frame.value
        else:
            try:
                record = decode(frame)
            except SyrupError as e:
                raise ProtocolError(R_MALFORMED, str(e)) from None
        if type(record) is not Record:
            raise ProtocolError(R_MALFORMED, "a message must be a record")
        if len(frame) > limits.max_elements or len(frame) >= _MIN_DESCRIPTOR_BYTES * limits.max_descriptors:
            _count(record, limits)
        label = record.label
        known = _ARITY_BY_NAME.get(label.name) if type(label) is Symbol else None
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
        if cls is Get or cls is Index or cls is Untag:
            key = fields[1]
            if cls is Untag and type(key) is Symbol:
                key = key.name  # a tag written as Endo writes desc:tagged's
            return cls(_read_desc(fields[0]), key, fields[2])
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
        # Plain items (most) are taken as they are here, without a call each.
        if t is list:
            return [v if type(v) in _PLAIN else self._revive(v, revive, depth) for v in value]
        if t is dict:
            out = {}
            for k, v in value.items():
                if type(k) is not str:
                    raise ProtocolError(R_MALFORMED, "a passable dictionary's keys are strings")
                out[k] = v if type(v) in _PLAIN else self._revive(v, revive, depth)
            return out
        if t is not Record:
            raise ProtocolError(R_MALFORMED, f"a {t.__name__} is not passable")
        label, fields = value.label, value.fields
        kind = _DESC_KIND_BY_NAME.get(label.name) if type(label) is Symbol else None
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
            return read_error(fields[0])
        if label == MYSTERY_ERROR:
            if fields:
                raise ProtocolError(R_MALFORMED, "<exn:fail:mystery> has no fields")
            return RemoteError("Error", "an error the peer does not describe (exn:fail:mystery)")
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


def _label(name: str) -> bytes:
    """``<10'op:deliver``: the opening of a record with that symbol label."""
    return b"<" + encode(Symbol(name))


_OPEN_DELIVER, _OPEN_DELIVER_ONLY, _OPEN_LISTEN, _OPEN_ABORT, _OPEN_START = (
    _label("op:deliver"), _label("op:deliver-only"), _label("op:listen"), _label("op:abort"), _label("op:start-session"),
)
_OPEN_GC_EXPORT, _OPEN_GC_ANSWER = _label("op:gc-export"), _label("op:gc-answer")
_OPEN_SELECT = {Get: _label("op:get"), Index: _label("op:index"), Untag: _label("op:untag")}
_OPEN_DESC = {kind: _label(label.name) for kind, label in DESC_LABEL.items()}
_OPEN_TAGGED, _OPEN_ERROR = _label("desc:tagged"), _label("desc:error")
_NULL = _label("null") + b">"
_NAN = b"\x7f\xf8\x00\x00\x00\x00\x00\x00"
_DOUBLE = struct.Struct(">d")
#: Elements every message adds to those of its values: the record, its
#: fixed fields and their descriptors' positions (counted as ``_count`` does).
_MESSAGE_ELEMENTS = 8


def _int(value: int) -> bytes:
    if 0 <= value < _SMALL_INT:  # positions and most numbers: no limit to check
        return b"%d+" % value
    if value.bit_length() > _MAX_INTEGER_BITS:
        raise TypeError(f"cannot encode: int has more than {MAX_INTEGER_DIGITS} digits")
    try:
        written = b"%d+" % value if value >= 0 else b"%d-" % -value
    except ValueError:  # more digits than this process converts
        raise TypeError(f"cannot encode: int has more than {MAX_INTEGER_DIGITS} digits") from None
    if len(written) > MAX_INTEGER_DIGITS + 1:
        raise TypeError(f"cannot encode: int has more than {MAX_INTEGER_DIGITS} digits")
    return written


def _utf8(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise TypeError("cannot encode: text with lone surrogates is not Unicode") from None


class _Writer:
    """Writes one message's Syrup bytes in a single walk (no intermediate records).

    The bytes are exactly ``syrup.encode`` of the records the module
    docstring describes (tests/test_ocapn_profile.py holds the two to the
    same output); counting elements and descriptors as the peer's decoder
    does (``_count``), it refuses with ``LimitExceeded`` what the peer would
    refuse.
    """

    __slots__ = ("out", "profile", "describe", "limits", "elements", "max_elements", "descriptors")

    def __init__(self, profile: OcapnProfile, describe: Describe, limits: Limits) -> None:
        self.out: list[bytes] = []
        self.profile = profile
        self.describe = describe
        self.limits = limits
        self.elements = _MESSAGE_ELEMENTS
        self.max_elements = limits.max_elements
        self.descriptors = 0

    def _spend(self, elements: int, descriptors: int = 0) -> None:
        self.elements += elements
        self.descriptors += descriptors
        if self.elements > self.limits.max_elements:
            raise LimitExceeded(f"message holds more than {self.limits.max_elements} values")
        if self.descriptors > self.limits.max_descriptors:
            raise LimitExceeded(f"message holds more than {self.limits.max_descriptors} references")

    def desc(self, desc: Descriptor) -> None:
        self._spend(2, 1)
        self.out.append(_OPEN_DESC[desc.kind])
        self.out.append(_int(desc.position) + b">")

    def syrup(self, value: Any) -> None:
        """A value already in Syrup form (a locator, a signed handoff, start-session parts)."""
        elements, descriptors = _size(value)
        self._spend(elements, descriptors)
        self.out.append(encode(value))

    def ref(self, obj: Any) -> None:
        profile = self.profile
        if profile.on_foreign is not None:
            handed = profile.on_foreign(profile, obj)
            if handed is not None:
                self.syrup(handed)
                return
        self.desc(self.describe(obj))

    def args(self, method: str | None, args: Any) -> None:
        self._spend(1)
        out = self.out
        out.append(b"[")
        if method is not None:  # as method_symbol(method), without making the Symbol
            self._spend(1)
            raw = _utf8(method.replace("_", "-"))
            out.append(b"%d'" % len(raw))
            out.append(raw)
        for arg in args:
            self.value(arg, 1)
        out.append(b"]")

    def value(self, value: Any, depth: int) -> None:
        self.elements += 1  # as _spend(1), inline: one value is most of the writer's work
        if self.elements > self.max_elements:
            self._spend(0)
        out = self.out
        t = type(value)
        if t is str:
            try:  # as _utf8(value), inline: strings are the commonest values
                raw = value.encode("utf-8")
            except UnicodeEncodeError:
                raw = _utf8(value)  # raises the TypeError
            out.append(b'%d"' % len(raw))
            out.append(raw)
        elif t is int:
            out.append(_int(value))
        elif t is bool:
            out.append(b"t" if value else b"f")
        elif t is bytes:
            out.append(b"%d:" % len(value))
            out.append(value)
        elif t is Symbol:
            raw = _utf8(value.name)
            out.append(b"%d'" % len(raw))
            out.append(raw)
        elif t is float:
            out.append(b"D" + (_NAN if value != value else _DOUBLE.pack(value)))
        elif value is None:
            out.append(_NULL)
        else:
            if depth >= MAX_DEPTH:
                raise TypeError(f"value nested deeper than {MAX_DEPTH} levels")
            depth += 1
            if t is list or t is tuple:
                out.append(b"[")
                for item in value:
                    self.value(item, depth)
                out.append(b"]")
            elif t is dict:
                # Keys are str (passable records), each written differently, so
                # sorting by encoding never meets two alike (nor compares the
                # items); str hashes are randomized per process, so no peer
                # sees many keys share one.
                pairs = []
                for key, item in value.items():
                    if type(key) is not str:
                        raise TypeError(f"record keys must be str, not {type(key).__name__}")
                    try:  # as _utf8(key), inline
                        raw = key.encode("utf-8")
                    except UnicodeEncodeError:
                        raw = _utf8(key)
                    pairs.append((b'%d"' % len(raw) + raw, item))
                pairs.sort()
                out.append(b"{")
                self.elements += len(pairs)  # the keys; their items count themselves
                if self.elements > self.max_elements:
                    self._spend(0)
                for encoded_key, item in pairs:
                    out.append(encoded_key)
                    self.value(item, depth)
                out.append(b"}")
            elif t is Tagged:
                out.append(_OPEN_TAGGED)
                self.value(Symbol(value.tag), depth)
                self.value(value.payload, depth)
                out.append(b">")
            elif t is Descriptor:
                self.elements -= 1
                self.desc(value)
            elif t is PeerLocator or t is SturdyRef:
                self.elements -= 1
                self.syrup(value.to_syrup())
            elif t is Record:
                if value.label != SIG_ENVELOPE:
                    raise TypeError(f"cannot pass a record labelled {brief(value.label)}")
                self.elements -= 1
                self.syrup(value)  # a signed handoff, written as received or made
            elif isinstance(value, BaseException):
                err = RemoteError.from_exception(value)
                out.append(_OPEN_ERROR)
                self.value(error_text(err), depth)
                out.append(b">")
            else:
                self.elements -= 1
                self.ref(value)


def _split_method(args: Any) -> tuple[str | None, Any]:
    if type(args) is list and args and type(args[0]) is Symbol:
        return symbol_method(args[0]), args[1:]
    return None, args


def _read_desc(value: Any, kind: DescKind | None = None) -> Descriptor:
    if type(value) is not Record or len(value.fields) != 1:
        raise ProtocolError(R_MALFORMED, f"expected a descriptor, got {brief(value)}")
    if kind is None:
        label = value.label
        kind = _DESC_KIND_BY_NAME.get(label.name) if type(label) is Symbol else None
        if kind is None:
            raise ProtocolError(R_MALFORMED, f"expected a descriptor, got {brief(value.label)}")
    pos = value.fields[0]
    if type(pos) is not int or pos < 0 or pos > 2**53 - 1:
        raise ProtocolError(R_MALFORMED, "a descriptor's position must be an integer 0..2**53-1")
    return Descriptor(kind, pos)


def _size(value: Any, max_elements: int | None = None) -> tuple[int, int]:
    """Elements and descriptors in a Syrup value, as a decoder counts them (stops past ``max_elements``)."""
    elements = descriptors = 0
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        elements += 1
        t = type(item)
        if t is list or t is tuple:
            stack.extend(item)
        elif t is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif t is frozenset:
            stack.extend(item)
        elif t is Record:
            if item.label in DESC_KIND:
                descriptors += 1
            stack.extend(item.fields)
        if max_elements is not None and elements > max_elements:
            break
    return elements, descriptors


def _count(record: Record, limits: Limits) -> None:
    """Refuse a message with more values or descriptors than the limits allow (bounded walk)."""
    elements, descriptors = _size(record, limits.max_elements)
    if elements > limits.max_elements:
        raise ProtocolError(R_TOO_MANY_ELEMENTS, f"more than {limits.max_elements} elements in one frame")
    if descriptors > limits.max_descriptors:
        raise ProtocolError(R_TOO_MANY_DESCRIPTORS, f"more than {limits.max_descriptors} descriptors in one frame")
