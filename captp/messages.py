"""The CapTP messages as the session sees them, whatever their encoding.

A wire profile (``captp.profile``) turns each message into a frame and a frame
back into a message; the session (``captp.session``) only ever handles these
classes. One class per op:

=================  =========================================================
class              op (docs/protocol.md §5)
=================  =========================================================
``StartSession``   start-session: the profile's version, and whatever else
                   its start-session carries (``extra``)
``Deliver``        deliver: a call whose result the caller wants
``DeliverOnly``    deliver-only: a call whose result is dropped
``Listen``         listen: report how a promise settles to a resolver
``GcExports``      gc-exports: the sender dropped its imports
``GcAnswers``      gc-answers: the sender dropped its answers
``Abort``          abort: the session ends, with a reason
``Get``            OCapN's op:get: a field of the record a promise settles to
``Index``          OCapN's op:index: an element of the list it settles to
``Untag``          OCapN's op:untag: the payload of the tagged value it settles to
=================  =========================================================

``Get``, ``Index`` and ``Untag`` pipeline on copy data rather than call an
object. Only the OCapN profile writes them; the msgpack profile has no op
for them (its ``encode_message`` raises ``TypeError``, and it reads none).

**Fields as decoded are unchecked.** A profile decodes a frame into one of
these classes and checks only what makes it that message (an op it knows,
the right number of fields); every field is then whatever the peer sent,
with references already read as ``Descriptor`` values. The session checks
the fields itself, in the order docs/protocol.md fixes, so every profile
refuses a bad message with the same reason code. ``args`` of a decoded
``Deliver``/``DeliverOnly`` is the profile's own undecoded form: the session
hands it back to ``WireProfile.decode_args`` once the target is known good.

In a message the session sends, ``args`` holds live values (references among
them), ``target`` is a ``Descriptor`` and ``resolve_me``/``resolver`` is the
local resolver object: the profile asks the session's ``describe`` callback
for the descriptor of each reference it meets, in the order it writes them.

The classes are ``NamedTuple``s: immutable, fields by name, and as cheap as a
Python object gets. A call builds eight of them (a deliver, a fulfill and two
gc frames, each written and read), so where it counts code builds one with
``tuple.__new__(Deliver, fields)``, which runs no Python code (about a third
cheaper than calling the class, and about four times a plain list). Two
messages are equal only when they are the same op with equal fields.

``ProtocolError`` (the peer broke the protocol; ``code`` is one of the
``R_*`` reason codes) and ``LimitExceeded`` (we cannot send a message) live
here too: profiles raise them, and the session re-exports them.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any, NamedTuple

__all__ = [
    "DescKind",
    "Descriptor",
    "Message",
    "MESSAGE_TYPES",
    "StartSession",
    "Deliver",
    "DeliverOnly",
    "Listen",
    "GcExports",
    "GcAnswers",
    "Abort",
    "Get",
    "Index",
    "Untag",
    "ProtocolError",
    "LimitExceeded",
    "MAX_POSITION",
    "brief",
]

#: Largest table position: 2**53 - 1, the largest integer JavaScript numbers
#: hold exactly, so the browser implementation can use plain numbers.
MAX_POSITION = 2**53 - 1

# Abort reason codes. The wire reason is "<code>: <detail>"; tests compare codes.
R_FRAME_TOO_LARGE = "frame-too-large"
R_MALFORMED = "malformed-frame"
R_UNKNOWN_OP = "unknown-op"
R_BAD_ARITY = "bad-arity"
R_BAD_FIELD = "bad-field"
R_UNKNOWN_POSITION = "unknown-position"
R_POSITION_IN_USE = "position-in-use"
R_LIMIT = "limit-exceeded"
R_VERSION = "version-mismatch"
R_NOT_STARTED = "not-started"
R_PEER_ABORT = "peer-aborted"
R_CLOSED = "closed"
R_DISCONNECTED = "disconnected"
R_TOO_MANY_ELEMENTS = "too-many-elements"
R_TOO_MANY_DESCRIPTORS = "too-many-descriptors"
R_BUDGET = "budget-exceeded"
R_STALLED = "peer-not-reading"


def brief(value: Any) -> str:
    """A short, always-printable description of a value the peer sent (for abort details)."""
    if type(value) is int and value.bit_length() > 64:
        return f"<int of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:
        text = f"<{type(value).__name__}>"
    return text[:64]


class DescKind(IntEnum):
    """Which of the receiver's tables a descriptor names (docs/protocol.md §4).

    Code compares kinds by member, never by number: each profile maps the
    members to what its wire writes (OCapN: ``desc:import-object`` records,
    ...). The numbers are the msgpack profile's ext codes, so that the
    default profile reads and writes descriptors without translating them;
    an ``IntEnum`` so that comparing and hashing kinds costs what an int does.
    """

    #: imports[n]: an object the sender exported at its position n.
    IMPORT_OBJECT = 10
    #: imports[n]: a promise the sender exported at n.
    IMPORT_PROMISE = 11
    #: exports[n]: the receiver's own export n, handed back.
    EXPORT = 12
    #: answers[n]: the result of the sender's call with answer position n.
    ANSWER = 13

    @property
    def wire_name(self) -> str:
        """The kind as docs/protocol.md names it ("import-object", ...)."""
        return _WIRE_NAMES[self]


_WIRE_NAMES: dict[int, str] = {
    DescKind.IMPORT_OBJECT: "import-object",
    DescKind.IMPORT_PROMISE: "import-promise",
    DescKind.EXPORT: "export",
    DescKind.ANSWER: "answer",
}


class Descriptor(NamedTuple):
    """A reference as it travels: which of the receiver's tables, which position.

    Profiles build these when they decode (``kind`` a ``DescKind`` member,
    ``position`` already checked to be an int in 0..``MAX_POSITION``) and
    write them when they encode. ``codec.Desc`` is this class.
    """

    kind: DescKind
    position: int

    @property
    def kind_name(self) -> str:
        """The kind as docs/protocol.md names it ("import-object", ...)."""
        return _WIRE_NAMES.get(self.kind, str(self.kind))


def _same_message(self: tuple[Any, ...], other: object) -> bool:
    """Messages are equal when they are the same op with equal fields (not merely equal tuples)."""
    return type(other) is type(self) and tuple.__eq__(self, other)


def _other_message(self: tuple[Any, ...], other: object) -> bool:
    return not _same_message(self, other)


class StartSession(NamedTuple):
    """start-session: the first message each side sends.

    ``version`` is the profile's protocol version (``ocapd-captp/1`` for
    msgpack). ``extra`` is anything else a profile's start-session carries
    (OCapN: the session public key, the location and its signature), as the
    profile decoded it; the msgpack profile has none (``None``). Produced by
    ``WireProfile.start_session`` and checked by ``WireProfile.check_start``.
    """

    version: Any
    extra: Any = None


class Deliver(NamedTuple):
    """deliver: call ``method`` on ``target`` with ``args``; the result is wanted.

    ``method`` is None for a call of the target itself (Endo's ``E(fn)(...)``):
    the receiver applies the target to ``args``. ``answer_pos`` (int or None)
    is where the receiver keeps the result for pipelining; ``resolve_me``
    (None, or the resolver to report the result to) is a local resolver
    object when sending and a ``Descriptor`` (unchecked) when received.
    """

    target: Any
    method: Any
    args: Any
    answer_pos: Any
    resolve_me: Any


class DeliverOnly(NamedTuple):
    """deliver-only: as ``Deliver`` without an answer or a resolver; the result is dropped."""

    target: Any
    method: Any
    args: Any


class Listen(NamedTuple):
    """listen: tell ``resolver`` (fulfill/break) when the promise at ``target`` settles."""

    target: Any
    resolver: Any
    wants_partial: Any = False


class GcExports(NamedTuple):
    """gc-exports: the sender dropped imports; ``deltas[i]`` arrivals of ``positions[i]``."""

    positions: Any
    deltas: Any


class GcAnswers(NamedTuple):
    """gc-answers: the sender will never target these answer positions again."""

    positions: Any


class Abort(NamedTuple):
    """abort: the session ends. ``reason`` is "<code>: <detail>" (a str when well-formed)."""

    reason: Any


class Get(NamedTuple):
    """get: put at ``answer_pos`` a promise for field ``field`` of the record ``target`` settles to.

    ``target`` names a promise of the receiver's (an answer, or a promise it
    exported); the new answer breaks if that promise breaks, or settles to
    anything but a record holding ``field``. ``field`` is a str.
    """

    target: Any
    field: Any
    answer_pos: Any


class Index(NamedTuple):
    """index: as ``Get`` for element ``index`` (an int) of the list ``target`` settles to.

    An index outside the list, negative ones included, breaks the answer.
    """

    target: Any
    index: Any
    answer_pos: Any


class Untag(NamedTuple):
    """untag: as ``Get`` for the payload of the ``Tagged`` ``target`` settles to, if its tag is ``tag``."""

    target: Any
    tag: Any
    answer_pos: Any


#: Any one message.
Message = StartSession | Deliver | DeliverOnly | Listen | GcExports | GcAnswers | Abort | Get | Index | Untag
#: The message classes, for ``isinstance`` and for profiles that map ops to classes.
MESSAGE_TYPES: tuple[type[Message], ...] = (
    StartSession, Deliver, DeliverOnly, Listen, GcExports, GcAnswers, Abort, Get, Index, Untag,
)
for _cls in MESSAGE_TYPES:
    _cls.__eq__ = _same_message  # type: ignore[method-assign]
    _cls.__ne__ = _other_message  # type: ignore[assignment,method-assign]
    _cls.__hash__ = tuple.__hash__  # type: ignore[method-assign]


class ProtocolError(Exception):
    """The peer broke the protocol. ``code`` is one of the ``R_*`` reason codes.

    ``op`` is the message class the frame claimed to be, when a profile knows
    it but refuses the frame (``R_BAD_ARITY``); None otherwise. The session
    needs it before the peer's start-session: a frame claiming to be
    anything but a start-session is refused with ``not-started`` (or taken as
    the peer's abort) before its shape is looked at.
    """

    def __init__(self, code: str, detail: str = "", *, op: type[tuple[Any, ...]] | None = None) -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.code = code
        self.detail = detail
        self.op = op


class LimitExceeded(TypeError):
    """A message could not be sent: too large for the peer, or over a shared budget.

    A ``TypeError`` so that it travels the same paths as a value that cannot
    be passed: the caller of ``send`` gets it raised, and a result that hits
    it is reported to the peer as a broken promise rather than killing the session.
    """
