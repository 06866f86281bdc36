"""The wire-profile interface: what the session needs from an encoding.

The session (``captp.session``) is one state machine for every encoding. It
speaks in typed messages (``captp.messages``) and leaves everything about
bytes to a *wire profile*: how a message becomes a frame and back, how
passable values and the references inside them are written, how a byte
stream is cut into frames, and what a start-session carries. Two profiles
are planned: ``msgpack`` (``captp.msgpack_profile``, docs/protocol.md, the
default, spoken by ocapd parties and captp.js) and OCapN's Syrup (docs/ocapn.md).

A profile is handed to ``Session(profile=...)``. One instance may serve many
sessions when it keeps no per-session state (the msgpack profile does not);
a profile that does (an OCapN session key) is made per session.

What a profile must do
======================

**References.** The profile never decides what a reference is. Encoding, it
calls ``describe(obj)`` for every value it meets that is not plain data
(``codec``'s passable data: None, bool, int, float, str, bytes, lists,
records with str keys, ``Tagged``, errors, and whatever else the profile
itself writes, e.g. ``Symbol``), in the order it writes them, and writes the
``Descriptor`` it gets back. ``describe`` raises ``TypeError`` for a value
that cannot be passed, and may raise anything else (the session's export
limit): the profile lets it propagate. A ``Descriptor`` found in an outgoing
message (``Deliver.target``) is written as it is, without calling
``describe``. Decoding, it reads each reference as a ``Descriptor`` (kind
and position checked: a known kind, an int in 0..``MAX_POSITION``, else
``ProtocolError(R_MALFORMED)``) and, inside ``args``, hands it to
``revive(descriptor)`` and puts what that returns in its place; ``revive``
raises ``ProtocolError`` for a descriptor the session refuses, which the
profile lets propagate.

**Errors.** Decoding raises only ``ProtocolError``, with these codes:
``R_MALFORMED`` (not a well-formed frame, or a value that is not passable),
``R_TOO_MANY_ELEMENTS`` / ``R_TOO_MANY_DESCRIPTORS`` (over
``limits.max_elements`` / ``limits.max_descriptors``, found while decoding so
the work stays bounded), ``R_UNKNOWN_OP`` (an op the profile does not know),
``R_BAD_ARITY`` (a known op with the wrong number of fields; pass
``op=<message class>``), ``R_FRAME_TOO_LARGE`` (splitters). Everything else
about fields (types, ranges, positions, the version) the **session** checks
on the typed message, so that every profile refuses a bad message with the
same code in the same order. Encoding raises ``TypeError`` for a value that
has no encoding, and ``LimitExceeded`` (a ``TypeError``) for a frame a peer
with the same ``limits`` would refuse (over ``max_frame_size``, elements or
descriptors): never write bytes the peer must reject.

**Start-session.** ``start_session()`` is the message this side sends
first; ``check_start(message)`` checks the peer's and raises
``ProtocolError(R_VERSION)`` (or ``R_BAD_FIELD``) when it is not acceptable.
OCapN's start-session also carries a session key and a signed location: the
profile puts them in ``StartSession.extra`` and checks them there.

**Calls without a method.** ``Deliver.method``/``DeliverOnly.method`` is None
for a call of the target itself (Endo's ``E(fn)(...)``). The msgpack profile
writes nil in the method field. A profile whose wire puts the method name
first in the arguments (OCapN: a leading symbol) moves it between ``args``
and ``method`` itself: the session only ever sees a ``str`` or None.

**Break values.** A resolver's ``break`` carries any passable value; errors
are written as errors, other values as themselves. The session does the rest.

Adding operations
=================

A profile maps what it can onto the existing classes (OCapN's
``op:gc-answer`` is ``GcAnswers`` of one position); an operation that needs
new session behaviour gets a new class in
``captp.messages`` and a handler in the session, and profiles that cannot
write it raise ``TypeError`` from ``encode_message``, as OCapN's ``op:get``,
``op:index`` and ``op:untag`` did (``messages.Get``/``Index``/``Untag``:
only the OCapN profile writes them). A profile that decodes an op it has no
class for raises ``ProtocolError(R_UNKNOWN_OP)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from .messages import Descriptor, Message, StartSession

if TYPE_CHECKING:
    from .session import Limits

__all__ = ["WireProfile", "FrameSplitter", "Describe", "Revive"]

#: The session's encode callback: the descriptor for a reference (see above).
Describe = Callable[[Any], Descriptor]
#: The session's decode callback: the value a received descriptor stands for.
Revive = Callable[[Descriptor], Any]


class FrameSplitter(Protocol):
    """Cuts the bytes of one stream into frames (one per connection, stateful)."""

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes read; return the frames they complete, oldest first.

        Raises ``ProtocolError(R_FRAME_TOO_LARGE)`` as soon as a frame is known
        to be longer than the limit (before buffering it), and
        ``ProtocolError(R_MALFORMED)`` for bytes that cannot start a frame.
        """
        ...

    @property
    def buffered(self) -> int:
        """Bytes held for a frame not yet complete (nonzero at EOF: a truncated frame)."""
        ...


class WireProfile(Protocol):
    """One encoding of the CapTP messages. See the module docstring for the contract."""

    #: Short name for logs and errors ("msgpack", "ocapn").
    name: str

    def start_session(self) -> StartSession:
        """The start-session this side sends first."""
        ...

    def check_start(self, message: StartSession) -> None:
        """Accept the peer's start-session, or raise ``ProtocolError(R_VERSION, ...)``."""
        ...

    def encode_message(self, message: Message, describe: Describe, limits: Limits) -> bytes:
        """One frame for ``message``. ``TypeError``/``LimitExceeded`` for what cannot be sent."""
        ...

    def decode_message(self, frame: bytes, limits: Limits) -> Message:
        """The message in one frame, fields unchecked (``args`` undecoded). Raises ``ProtocolError``."""
        ...

    def decode_args(self, args: Any, revive: Revive) -> list[Any]:
        """Decode the ``args`` of a received deliver: a list of passable values.

        Descriptors go through ``revive``. Raises ``ProtocolError``:
        ``R_BAD_FIELD`` if ``args`` is not a list, ``R_MALFORMED`` for a
        value that is not passable.
        """
        ...

    def frame_splitter(self, max_frame_size: int) -> FrameSplitter:
        """A new splitter for one incoming byte stream."""
        ...

    def stream_bytes(self, frames: list[bytes]) -> bytes:
        """The bytes that carry ``frames`` on a byte stream, in order (what ``FrameSplitter`` reads)."""
        ...
