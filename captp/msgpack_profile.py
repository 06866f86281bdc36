"""The msgpack wire profile: docs/protocol.md, spoken by every ocapd party and captp.js.

Each message is a msgpack array whose first element names the op; values are
written by ``captp.codec``; descriptors are the ext types 10-13; on a byte
stream each frame is preceded by its length in 4 bytes, big-endian. The bytes
are those of ``tests/vectors``, which pin them.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Any

from . import codec
from .codec import BudgetExceeded, CodecError
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
    GcAnswers,
    GcExports,
    LimitExceeded,
    Listen,
    Message,
    ProtocolError,
    StartSession,
    brief,
)
from .profile import Describe, Revive

if TYPE_CHECKING:
    from .session import Limits

__all__ = ["MsgpackProfile", "MSGPACK", "PROTOCOL_VERSION", "LengthPrefixSplitter"]

#: Sent in start-session; a peer speaking anything else is refused.
PROTOCOL_VERSION = "ocapd-captp/1"

OP_START = "start-session"
OP_DELIVER = "deliver"
OP_DELIVER_ONLY = "deliver-only"
OP_LISTEN = "listen"
OP_GC_EXPORTS = "gc-exports"
OP_GC_ANSWERS = "gc-answers"
OP_ABORT = "abort"

#: op -> (message class, number of array elements including the op).
_OPS: dict[str, tuple[type[Message], int]] = {
    OP_START: (StartSession, 2),
    OP_DELIVER: (Deliver, 6),
    OP_DELIVER_ONLY: (DeliverOnly, 4),
    OP_LISTEN: (Listen, 4),
    OP_GC_EXPORTS: (GcExports, 3),
    OP_GC_ANSWERS: (GcAnswers, 2),
    OP_ABORT: (Abort, 2),
}

_HEADER = struct.Struct(">I")
#: Builds a message from its fields without running Python code (see ``captp.messages``).
_new = tuple.__new__


class LengthPrefixSplitter:
    """Frames of a byte stream, each preceded by its length (4 bytes, big-endian, unsigned)."""

    __slots__ = ("max_frame_size", "_buf")

    def __init__(self, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        frames: list[bytes] = []
        pos = 0
        while len(buf) - pos >= 4:
            (size,) = _HEADER.unpack_from(buf, pos)
            if size > self.max_frame_size:
                raise ProtocolError(R_FRAME_TOO_LARGE, f"{size} bytes")
            end = pos + 4 + size
            if len(buf) < end:
                break
            frames.append(bytes(buf[pos + 4 : end]))
            pos = end
        del buf[:pos]
        return frames


class MsgpackProfile:
    """The msgpack profile (see the module docstring). Stateless: one instance serves every session."""

    name = "msgpack"
    version = PROTOCOL_VERSION

    def start_session(self) -> StartSession:
        return StartSession(PROTOCOL_VERSION)

    def check_start(self, message: StartSession) -> None:
        if message.version != PROTOCOL_VERSION:
            raise ProtocolError(R_VERSION, f"peer speaks {brief(message.version)}")

    # -- encoding ---------------------------------------------------------------
    def encode_message(self, message: Message, describe: Describe, limits: Limits) -> bytes:
        t = type(message)
        if t is Deliver:
            m: Any = message
            wire: list[Any] = [OP_DELIVER, m.target, m.method, list(m.args), m.answer_pos, m.resolve_me]
        elif t is DeliverOnly:
            m = message
            wire = [OP_DELIVER_ONLY, m.target, m.method, list(m.args)]
        elif t is GcExports:
            m = message
            # Positions and counts are the session's own small ints: nothing to check.
            return codec.encode_plain([OP_GC_EXPORTS, m.positions, m.deltas])
        elif t is GcAnswers:
            m = message
            return codec.encode_plain([OP_GC_ANSWERS, m.positions])
        elif t is Listen:
            m = message
            wire = [OP_LISTEN, m.target, m.resolver, bool(m.wants_partial)]
        elif t is Abort:
            m = message
            wire = [OP_ABORT, m.reason]
        elif t is StartSession:
            m = message
            wire = [OP_START, m.version]
        else:
            raise TypeError(f"the msgpack profile cannot write {t.__name__}")
        frame = codec.encode(wire, describe)
        # Never write a frame the peer must refuse: it would end the whole
        # session over one value. (Counting runs only for long frames.)
        if len(frame) > limits.max_frame_size:
            raise LimitExceeded(f"message of {len(frame)} bytes is over the {limits.max_frame_size}-byte frame limit")
        if len(frame) > limits.max_elements and not codec.count_within_budget(
            frame, limits.max_elements, limits.max_descriptors
        ):
            raise LimitExceeded(
                f"message holds more than {limits.max_elements} values or {limits.max_descriptors} references"
            )
        return frame

    # -- decoding ---------------------------------------------------------------
    def decode_message(self, frame: bytes, limits: Limits) -> Message:
        try:
            msg = codec.unpack(frame, limits.max_elements, limits.max_descriptors)
        except BudgetExceeded as e:
            code = R_TOO_MANY_ELEMENTS if e.what == "elements" else R_TOO_MANY_DESCRIPTORS
            raise ProtocolError(code, str(e)) from None
        except CodecError as e:
            raise ProtocolError(R_MALFORMED, str(e)) from None
        if type(msg) is not list or not msg:
            raise ProtocolError(R_MALFORMED, "a message must be a non-empty array")
        op = msg[0]
        spec = _OPS.get(op) if type(op) is str else None
        if spec is None:
            raise ProtocolError(R_UNKNOWN_OP, brief(op))
        cls, arity = spec
        if len(msg) != arity:
            raise ProtocolError(R_BAD_ARITY, f"{op} takes {arity - 1} fields, got {len(msg) - 1}", op=cls)
        if cls is StartSession:
            return StartSession(msg[1])
        # The fields follow the op in the message's own order; descriptors
        # come out of the codec as ``Descriptor`` values already.
        message: Message = _new(cls, msg[1:])
        return message

    def decode_args(self, args: Any, revive: Revive) -> list[Any]:
        if type(args) is not list:
            raise ProtocolError(R_BAD_FIELD, "args must be an array")
        try:
            revived: list[Any] = codec.revive(args, revive)
        except CodecError as e:
            raise ProtocolError(R_MALFORMED, str(e)) from None
        return revived

    # -- byte streams -------------------------------------------------------------
    def frame_splitter(self, max_frame_size: int) -> LengthPrefixSplitter:
        return LengthPrefixSplitter(max_frame_size)

    def stream_bytes(self, frames: list[bytes]) -> bytes:
        pack = _HEADER.pack
        return b"".join([part for f in frames for part in (pack(len(f)), f)])


#: The default profile of every session.
MSGPACK = MsgpackProfile()
