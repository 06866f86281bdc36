"""The CapTP session: a pure state machine, one per connection (h11 style).

Frames go in through ``receive_frame(bytes)``; frames to send come out of
``data_to_send()``. Nothing here awaits or touches a socket. The trio drivers
in ``captp.connection`` pump a session over a transport.

The four tables (all per session, so a reference is only meaningful on the
connection it was given on, which is what makes it unforgeable):

- **exports**: position -> local object we gave the peer, with a wire count.
  Position 0 is the bootstrap object. Positions are never reused.
- **imports**: position -> our proxy for an object the peer gave us, with the
  number of times it arrived (reported back in gc-exports as the wire delta).
- **questions**: answer positions we allocated for calls we made.
- **answers**: answer positions the peer allocated -> promise for the result.

Any misbehaviour of the peer raises ``ProtocolError`` internally; the session
then queues an ``abort`` frame, breaks every pending promise with
``SessionAborted`` and ignores further input. The session is never left
half-updated in a way that matters: after an abort nothing else happens.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

from .codec import MAX_DESCRIPTORS, MAX_ELEMENTS
from .eventual import E, eventual_send
from .lazylog import LazyLogger
from .messages import (
    MAX_POSITION,
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
)

# The reason codes and op names, also importable from here (as before the wire profiles).
from .messages import R_BAD_ARITY as R_BAD_ARITY
from .messages import R_BAD_FIELD as R_BAD_FIELD
from .messages import R_BUDGET as R_BUDGET
from .messages import R_CLOSED as R_CLOSED
from .messages import R_DISCONNECTED as R_DISCONNECTED
from .messages import R_FRAME_TOO_LARGE as R_FRAME_TOO_LARGE
from .messages import R_LIMIT as R_LIMIT
from .messages import R_MALFORMED as R_MALFORMED
from .messages import R_NOT_STARTED as R_NOT_STARTED
from .messages import R_PEER_ABORT as R_PEER_ABORT
from .messages import R_POSITION_IN_USE as R_POSITION_IN_USE
from .messages import R_STALLED as R_STALLED
from .messages import R_TOO_MANY_DESCRIPTORS as R_TOO_MANY_DESCRIPTORS
from .messages import R_TOO_MANY_ELEMENTS as R_TOO_MANY_ELEMENTS
from .messages import R_UNKNOWN_OP as R_UNKNOWN_OP
from .messages import R_UNKNOWN_POSITION as R_UNKNOWN_POSITION
from .messages import R_VERSION as R_VERSION
from .messages import brief as _brief
from .msgpack_profile import MSGPACK, PROTOCOL_VERSION
from .msgpack_profile import OP_ABORT as OP_ABORT
from .msgpack_profile import OP_DELIVER as OP_DELIVER
from .msgpack_profile import OP_DELIVER_ONLY as OP_DELIVER_ONLY
from .msgpack_profile import OP_GC_ANSWERS as OP_GC_ANSWERS
from .msgpack_profile import OP_GC_EXPORTS as OP_GC_EXPORTS
from .msgpack_profile import OP_LISTEN as OP_LISTEN
from .msgpack_profile import OP_START as OP_START
from .passable import Frozen, Rejected, RemoteError, Tagged, far, is_remotable
from .profile import WireProfile
from .promise import FULFILLED, PENDING, REJECTED, Promise

__all__ = [
    "Session",
    "Limits",
    "Budget",
    "LimitExceeded",
    "ProtocolError",
    "SessionAborted",
    "RemoteRef",
    "RemotePromise",
    "PROTOCOL_VERSION",
    "WireProfile",
]

log = LazyLogger("captp")

#: Builds a message or a descriptor from its fields without running Python
#: code (a third cheaper than calling the NamedTuple): for those of every call.
_new = tuple.__new__

# The descriptor kinds as module globals: a global is read faster than an enum attribute.
_IMPORT_OBJECT = DescKind.IMPORT_OBJECT
_IMPORT_PROMISE = DescKind.IMPORT_PROMISE
_EXPORT = DescKind.EXPORT
_ANSWER = DescKind.ANSWER


class Limits(Frozen):
    """Protocol limits; exceeding one aborts this session only.

    The defaults follow the design: 16 MiB frames (large enough for a weblet
    bundle sent as one value, small enough that a hostile peer cannot make us
    buffer much), and table bounds that no honest peer approaches but that
    cap the memory a hostile one can pin.
    """

    max_frame_size: int = 16 * 1024 * 1024
    #: Calls the peer may have outstanding against us (answers table size).
    max_answers: int = 65_536
    #: Distinct objects we will export to one peer before refusing.
    max_exports: int = 1_000_000
    #: Distinct objects the peer may export to us.
    max_imports: int = 1_000_000
    #: Length of a method name on the wire.
    max_method_length: int = 128
    #: Length of an abort reason we keep.
    max_reason_length: int = 1024
    #: Values in one frame, counted while decoding (``codec.MAX_ELEMENTS``
    #: says why this number); more aborts with ``too-many-elements``.
    max_elements: int = MAX_ELEMENTS
    #: Descriptors in one frame (``codec.MAX_DESCRIPTORS``); more aborts with
    #: ``too-many-descriptors``.
    max_descriptors: int = MAX_DESCRIPTORS
    #: Bytes queued for a peer that is not reading them, beyond which the
    #: driver stops reading that peer's frames (backpressure). Two frames of
    #: the largest size: a big reply still goes out whole, and a peer that
    #: pipelines calls without reading replies pins at most this much.
    max_outbox_bytes: int = 32 * 1024 * 1024
    #: Seconds the driver waits for a non-reading peer to make room in a full
    #: outbox before it aborts the session with ``peer-not-reading``. Long
    #: enough for a slow link to move 32 MiB; short enough that a peer cannot
    #: hold a session's memory for long.
    stall_timeout: float = 30.0
    #: After sending an abort on a byte stream, the driver closes its sending
    #: side and drops what the peer still sends, until the peer's EOF, for at
    #: most this many seconds and bytes, then closes. A peer that was writing
    #: when we aborted thus reads the abort instead of a connection reset.
    drain_timeout: float = 0.5
    drain_bytes: int = 1024 * 1024

    # Written out rather than made by ``dataclasses`` (frozen): dataclasses
    # imports inspect, about 10 ms of the blocking CLI client's start. The
    # defaults above stay readable on the class (``Limits.stall_timeout``).
    def __init__(
        self,
        max_frame_size: int = max_frame_size,
        max_answers: int = max_answers,
        max_exports: int = max_exports,
        max_imports: int = max_imports,
        max_method_length: int = max_method_length,
        max_reason_length: int = max_reason_length,
        max_elements: int = max_elements,
        max_descriptors: int = max_descriptors,
        max_outbox_bytes: int = max_outbox_bytes,
        stall_timeout: float = stall_timeout,
        drain_timeout: float = drain_timeout,
        drain_bytes: int = drain_bytes,
    ) -> None:
        self.__dict__.update(
            max_frame_size=max_frame_size,
            max_answers=max_answers,
            max_exports=max_exports,
            max_imports=max_imports,
            max_method_length=max_method_length,
            max_reason_length=max_reason_length,
            max_elements=max_elements,
            max_descriptors=max_descriptors,
            max_outbox_bytes=max_outbox_bytes,
            stall_timeout=stall_timeout,
            drain_timeout=drain_timeout,
            drain_bytes=drain_bytes,
        )

    def replace(self, **changes: Any) -> Limits:
        """A copy with ``changes`` (names of limits to new values), as ``dataclasses.replace`` made."""
        return Limits(**{**self.__dict__, **changes})

    def __eq__(self, other: object) -> bool:
        if type(other) is not Limits:
            return NotImplemented
        return self.__dict__ == other.__dict__

    def __hash__(self) -> int:
        return hash(tuple(self.__dict__.values()))

    def __repr__(self) -> str:
        return f"Limits({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __reduce__(self) -> tuple[type[Limits], tuple[Any, ...]]:
        return (Limits, tuple(self.__dict__.values()))


DEFAULT_LIMITS = Limits()


class Budget:
    """Table entries shared by many sessions: answers, questions and exports over all of them.

    Per-session limits times the number of sessions is no bound at all (the
    defaults reach ~100 GiB); one ``Budget`` handed to every session of a
    process is. When it is spent, a peer's new answer aborts that peer's
    session with ``budget-exceeded``; our own new question or export fails
    that one message with ``LimitExceeded``. Thread-safe: questions are
    released by finalizers, which run on any thread.
    """

    __slots__ = ("max_answers", "max_questions", "max_exports", "answers", "questions", "exports", "_lock")

    def __init__(self, *, answers: int = 262_144, questions: int = 262_144, exports: int = 262_144) -> None:
        #: The defaults: four sessions' worth of answers (65,536 each), ~200
        #: bytes apiece, so each table stays under ~60 MiB daemon-wide.
        self.max_answers = answers
        self.max_questions = questions
        self.max_exports = exports
        self.answers = self.questions = self.exports = 0
        self._lock = threading.Lock()

    def take(self, kind: str, n: int = 1) -> bool:
        """Reserve ``n`` entries of ``kind`` ("answers", "questions", "exports"); False if that would overspend."""
        with self._lock:
            used = getattr(self, kind)
            if used + n > getattr(self, "max_" + kind):
                return False
            setattr(self, kind, used + n)
            return True

    def force(self, kind: str, n: int) -> None:
        """Charge ``n`` entries without checking (a session joining this budget brings its tables)."""
        with self._lock:
            setattr(self, kind, getattr(self, kind) + n)

    def give(self, kind: str, n: int = 1) -> None:
        if n:
            with self._lock:
                setattr(self, kind, getattr(self, kind) - n)

    def stats(self) -> dict[str, int]:
        return {
            "answers": self.answers, "max_answers": self.max_answers,
            "questions": self.questions, "max_questions": self.max_questions,
            "exports": self.exports, "max_exports": self.max_exports,
        }


class SessionAborted(ConnectionError):
    """The session ended; every pending promise on it breaks with this.

    ``code`` is the reason code, ``by_peer`` tells whether the peer sent the
    abort (``code`` is then the peer's own code when it sent one of ours).
    """

    def __init__(self, code: str, detail: str = "", *, by_peer: bool = False) -> None:
        text = f"{code}: {detail}" if detail else code
        super().__init__(("peer aborted: " if by_peer else "session aborted: ") + text)
        self.code = code
        self.detail = detail
        self.by_peer = by_peer

    @property
    def reason(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code


def _split_reason(reason: str) -> tuple[str, str]:
    code, sep, detail = reason.partition(": ")
    return (code, detail) if sep else (reason, "")


# ---------------------------------------------------------------------------
# Proxies for what the peer gave us.


class RemoteRef:
    """A reference to an object the peer exported. Call it with ``E(ref).method()``."""

    __slots__ = ("_session", "_position", "__weakref__")

    def __init__(self, session: Session, position: int) -> None:
        self._session = session
        self._position = position

    def __del__(self) -> None:
        try:
            self._session._drop_import(self._position, self)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"<RemoteRef {self._session.name}#{self._position}>"

    def _captp_send(self, method: str | None, args: Any) -> Promise:
        return self._session.send(self, method, args)

    def _captp_send_only(self, method: str | None, args: Any) -> None:
        self._session.send_only(self, method, args)


class RemotePromise(Promise):
    """A promise whose resolution is decided by the peer.

    It is either an answer to a question we asked (``kind == "answer"``), which
    can be pipelined on before it settles, or a promise the peer exported to us
    (``kind == "import"``), which we listen to when someone first waits on it.
    """

    __slots__ = ("_session", "_kind", "_position", "_listening")

    def __init__(self, session: Session, kind: str, position: int) -> None:
        # Promise.__init__, inline: one of these per call.
        self._state = PENDING
        self._result = None
        self._callbacks = None
        self._session = session
        self._kind = kind
        self._position = position
        self._listening = False

    def _on_settled(self, callback: Callable[[Promise], None], now: bool) -> None:
        if self._state == PENDING and not self._listening:
            self._listening = True
            self._session._start_listening(self)
        super()._on_settled(callback, now)

    def __del__(self) -> None:
        try:
            if self._kind == "answer":
                self._session._drop_question(self._position)
            else:
                self._session._drop_import(self._position, self)
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    def __repr__(self) -> str:
        state = {PENDING: "pending", FULFILLED: "fulfilled", REJECTED: "rejected"}[self._state]
        return f"<RemotePromise {self._session.name} {self._kind}#{self._position} {state}>"

    def _captp_send(self, method: str | None, args: Any) -> Promise:
        if self._state == FULFILLED:  # already resolved: send straight to the value
            return eventual_send(self._result, method, args)
        if self._state == REJECTED:
            return Promise.rejected_with(self._result)
        return self._session.send(self, method, args)  # pipelined

    def _captp_send_only(self, method: str | None, args: Any) -> None:
        if self._state == PENDING:
            self._session.send_only(self, method, args)
        elif self._state == FULFILLED:
            sender = E.send_only(self._result)
            (sender if method is None else sender.__getattr__(method))(*args)


class _ResultResolver:
    """Exported to the peer so it can settle one of our promises: ``fulfill``/``break``."""

    __slots__ = ("_promise", "__weakref__")

    def __init__(self, promise: Promise) -> None:
        #: Released once settled: a peer that never drops the resolver (gc-exports)
        #: must not keep our answer, and what it settled to, alive.
        self._promise: Promise | None = promise

    def fulfill(self, value: Any = None) -> None:
        promise, self._promise = self._promise, None
        if promise is not None:
            promise._resolve(value)

    def _break(self, reason: Any = None) -> None:
        promise, self._promise = self._promise, None
        if promise is None:
            return
        # An error arrives as an exception; any other value the promise was
        # broken with is kept as it is, wrapped so that awaiting can raise it.
        promise._reject(reason if isinstance(reason, BaseException) else Rejected(reason))


setattr(_ResultResolver, "break", _ResultResolver._break)
setattr(_ResultResolver, "__captp_interface__", "Resolver")  # noqa: B010 (one spelling with the line above)


class _Export:
    __slots__ = ("obj", "wire_count", "is_promise")

    def __init__(self, obj: Any, is_promise: bool) -> None:
        self.obj = obj
        self.wire_count = 0
        self.is_promise = is_promise


class _Import:
    __slots__ = ("ref", "wire_count")

    def __init__(self, ref: Any) -> None:
        self.ref = weakref.ref(ref)
        self.wire_count = 0


Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class Session:
    """One side of one CapTP connection. See the module docstring.

    ``bootstrap`` is the object the peer reaches at position 0 (None: an
    object without methods). ``spawn`` runs coroutines returned by async
    methods; the trio driver supplies its nursery. ``on_wakeup`` is called
    whenever new frames are waiting to be sent (``on_gc_wakeup``, if set,
    when a finalizer queued them).
    """

    def __init__(
        self,
        bootstrap: Any = None,
        *,
        limits: Limits = DEFAULT_LIMITS,
        name: str = "session",
        spawn: Spawn | None = None,
        debug: bool = False,
        budget: Budget | None = None,
        profile: WireProfile = MSGPACK,
    ) -> None:
        self.name = name
        #: How messages are written (``captp.profile``); the msgpack one unless told.
        #: Fixed for the session's life: its methods are looked up once, here.
        self.profile = profile
        self._encode_message = profile.encode_message
        self._decode_message = profile.decode_message
        self._decode_args = profile.decode_args
        self.limits = limits
        self.debug = debug
        self.spawn = spawn
        self.on_wakeup: Callable[[], None] | None = None
        #: Called instead of ``on_wakeup`` when a finalizer queued gc frames:
        #: at any moment, on any thread, so it must only arrange for a send later.
        self.on_gc_wakeup: Callable[[], None] | None = None
        #: Called once, synchronously, the moment the session ends (before any
        #: promise it breaks can react): whoever holds values that lived on
        #: the peer stops handing them out at once, not when the driver has
        #: finished closing the transport.
        self.on_terminate: Callable[[SessionAborted], None] | None = None
        self._outbox: list[bytes] = []
        self._outbox_bytes = 0
        self._budget: Budget | None = None
        self._aborted: SessionAborted | None = None
        #: An abort frame was queued for the peer (our abort, not the peer's or a lost transport).
        self.abort_queued = False
        self._peer_started = False
        self._exports: dict[int, _Export] = {}
        self._export_pos_of: dict[int, int] = {}
        self._next_export = 1
        self._imports: dict[int, _Import] = {}
        self._questions: set[int] = set()
        self._next_question = 0
        self._answers: dict[int, Promise] = {}
        self._gc_exports: dict[int, int] = {}
        self._gc_answers: list[int] = []
        self._gc_lock = threading.RLock()
        self._journal: list[tuple[int, bool]] | None = None
        self.frames_in = 0
        self.frames_out = 0
        if bootstrap is None:
            bootstrap = _NO_BOOTSTRAP
        if isinstance(bootstrap, Promise):
            raise TypeError("the bootstrap must be an object, not a promise")
        self._exports[0] = _Export(bootstrap, False)
        self._export_pos_of[id(bootstrap)] = 0
        self.budget = budget
        self._queue(profile.start_session())

    # -- public surface -------------------------------------------------------
    @property
    def aborted(self) -> SessionAborted | None:
        """None while the session runs; afterwards, why it ended."""
        return self._aborted

    @property
    def budget(self) -> Budget | None:
        """The shared budget this session's tables are charged to (None: only per-session limits)."""
        return self._budget

    @budget.setter
    def budget(self, budget: Budget | None) -> None:
        """Move the session's tables to another budget (e.g. once its peer authenticated).

        What the session already holds moves with it, unchecked: joining a
        budget never fails; the next new entry is what gets refused.
        """
        with self._gc_lock:
            old, self._budget = self._budget, budget
            held = {"answers": len(self._answers), "questions": len(self._questions),
                    "exports": len(self._exports) - (0 in self._exports)}
            for kind, n in held.items():
                if old is not None:
                    old.give(kind, n)
                if budget is not None:
                    budget.force(kind, n)

    @property
    def outbox_bytes(self) -> int:
        """Bytes of frames queued and not yet taken by ``data_to_send``."""
        return self._outbox_bytes

    def bootstrap(self) -> RemoteRef:
        """The peer's bootstrap object (its export position 0)."""
        entry = self._imports.get(0)
        proxy = entry.ref() if entry is not None else None
        if proxy is None:
            proxy = RemoteRef(self, 0)
            if entry is None:
                self._imports[0] = _Import(proxy)
            else:
                entry.ref = _Import(proxy).ref
        return proxy

    def receive_frame(self, frame: bytes) -> None:
        """Process one incoming frame. Never raises for anything the peer sends."""
        if self._aborted is not None:
            return
        self.frames_in += 1
        try:
            if len(frame) > self.limits.max_frame_size:
                raise ProtocolError(R_FRAME_TOO_LARGE, f"{len(frame)} bytes")
            try:
                msg = self._decode_message(frame, self.limits)
            except ProtocolError as e:
                if self._peer_started or e.op is StartSession:
                    raise
                if e.op is Abort:  # a malformed abort still ends the session
                    self._terminate(SessionAborted("abort", by_peer=True))
                    return
                if e.code == R_UNKNOWN_OP or e.code == R_BAD_ARITY:
                    # Before start-session nothing else is looked at (docs/protocol.md §6.1).
                    raise ProtocolError(R_NOT_STARTED, "expected start-session first") from None
                raise
            t = type(msg)
            if not self._peer_started and t is not StartSession:
                if t is Abort:
                    self._on_abort(msg)  # type: ignore[arg-type]
                    return
                raise ProtocolError(R_NOT_STARTED, "expected start-session first")
            _HANDLERS[t](self, msg)
        except ProtocolError as e:
            self._fail(e.code, e.detail)
        except Exception as e:  # a bug of ours must still cost only this session
            log.exception("%s: internal error while processing a frame", self.name)
            self._fail(R_MALFORMED, f"frame could not be processed ({type(e).__name__})")

    def data_to_send(self) -> list[bytes]:
        """Frames waiting to go out, oldest first (msgpack payloads, unframed)."""
        if self._aborted is None and (self._gc_exports or self._gc_answers):
            self._flush_gc()
        out, self._outbox = self._outbox, []
        self._outbox_bytes = 0
        self.frames_out += len(out)
        return out

    def abort(self, reason: str = R_CLOSED) -> None:
        """End the session from our side: tell the peer and break everything pending."""
        if self._aborted is not None:
            return
        reason = reason[: self.limits.max_reason_length]
        self._queue(Abort(reason))
        self.abort_queued = True
        code, detail = _split_reason(reason)
        self._terminate(SessionAborted(code, detail))

    def protocol_error(self, code: str, detail: str = "") -> None:
        """The transport saw the peer break the protocol (bad framing): abort."""
        self._fail(code, detail)

    def connection_lost(self, detail: str = "") -> None:
        """The transport closed under us: break everything pending, send nothing."""
        if self._aborted is None:
            self._terminate(SessionAborted(R_DISCONNECTED, detail))

    def stats(self) -> dict[str, int]:
        """Table sizes and message counts, for inspection."""
        return {
            "exports": len(self._exports),
            "imports": len(self._imports),
            "questions": len(self._questions),
            "answers": len(self._answers),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
        }

    # -- sending ---------------------------------------------------------------
    def _encode(self, message: Message) -> bytes:
        """Encode one frame; exports are all-or-nothing per frame.

        ``_describe`` creates export entries and counts them as sent while the
        profile writes the message. If a later part of it cannot be encoded
        (or the frame would be over the peer's limits), the frame is never
        sent, so those entries are rolled back: otherwise they would pin
        objects the peer can never release.
        """
        journal: list[tuple[int, bool]] = []
        self._journal = journal
        try:
            return self._encode_message(message, self._describe, self.limits)
        except BaseException:
            for pos, created in reversed(journal):
                entry = self._exports.get(pos)
                if entry is None:
                    continue
                entry.wire_count -= 1
                if created:
                    del self._exports[pos]
                    del self._export_pos_of[id(entry.obj)]
                    if self._budget is not None:
                        self._budget.give("exports")
            raise
        finally:
            self._journal = None

    def _queue(self, message: Message) -> None:
        try:
            frame = self._encode(message)
        except _ExportLimit as e:
            self._fail(R_LIMIT, str(e), local=True)
            return
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        if len(self._outbox) == 1 and self.on_wakeup is not None:
            self.on_wakeup()

    def _target_desc(self, target: RemoteRef | RemotePromise) -> Descriptor:
        if isinstance(target, RemoteRef):
            return _new(Descriptor, (_EXPORT, target._position))
        if target._kind == "answer":
            return _new(Descriptor, (_ANSWER, target._position))
        return _new(Descriptor, (_EXPORT, target._position))

    def send(
        self, target: RemoteRef | RemotePromise, method: str | None, args: tuple[Any, ...] | list[Any]
    ) -> RemotePromise:
        """Queue a call on ``target`` (which must belong to this session); return its answer.

        ``method`` None calls the target itself (``E(fn)(...)``). Arguments
        are encoded now: a non-passable argument raises ``TypeError`` here,
        not later.
        """
        if self._aborted is not None:
            p = RemotePromise(self, "answer", -1)
            p._reject(self._aborted)
            return p
        budget = self._budget
        if budget is not None and not budget.take("questions"):
            raise LimitExceeded(f"{budget.max_questions} calls are already waiting for answers")
        pos = self._next_question
        self._next_question += 1
        answer = RemotePromise(self, "answer", pos)
        answer._listening = True  # the result comes to our resolver unasked
        resolver = _ResultResolver(answer)
        # _target_desc, inline
        if not isinstance(target, RemoteRef) and target._kind == "answer":
            desc = _new(Descriptor, (_ANSWER, target._position))
        else:
            desc = _new(Descriptor, (_EXPORT, target._position))
        message = _new(Deliver, (desc, method, args, pos, resolver))
        try:
            frame = self._encode(message)
        except TypeError:
            answer._position = -1  # nothing was sent; nothing to release
            if budget is not None:
                budget.give("questions")
            raise
        except _ExportLimit as e:
            if budget is not None:
                budget.give("questions")
            self._fail(R_LIMIT, str(e), local=True)
            answer._position = -1
            answer._reject(self._aborted)  # type: ignore[arg-type]
            return answer
        self._questions.add(pos)
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        if len(self._outbox) == 1 and self.on_wakeup is not None:
            self.on_wakeup()
        return answer

    def send_only(
        self, target: RemoteRef | RemotePromise, method: str | None, args: tuple[Any, ...] | list[Any]
    ) -> None:
        """Queue a call whose result nobody wants (deliver-only)."""
        if self._aborted is not None:
            return
        self._queue(DeliverOnly(self._target_desc(target), method, args))

    def pipeline_get(self, target: RemotePromise, field: str) -> Promise:
        """A promise for field ``field`` of the record ``target`` settles to (OCapN's ``op:get``).

        ``target`` is a promise of this session (the answer to a call, or a
        promise the peer exported). While it is pending the peer is asked
        at once, without waiting for it, and the result can itself be
        pipelined on; once it has settled the field is picked here. The
        result breaks if ``target`` breaks or settles to anything but a
        record with that field. Raises ``TypeError`` if this session's
        profile has no form for the op (msgpack): nothing is sent then.
        """
        if type(field) is not str:
            raise TypeError(f"a field name is a str, not {type(field).__name__}")
        return self._select(target, Get, field)

    def pipeline_index(self, target: RemotePromise, index: int) -> Promise:
        """As ``pipeline_get``, for element ``index`` of the list ``target`` settles to (``op:index``).

        An index outside the list breaks the result (a negative one too:
        there is no counting from the end).
        """
        if type(index) is not int:
            raise TypeError(f"an index is an int, not {type(index).__name__}")
        return self._select(target, Index, index)

    def pipeline_untag(self, target: RemotePromise, tag: str) -> Promise:
        """As ``pipeline_get``, for the payload of the ``Tagged`` ``target`` settles to, if tagged ``tag`` (``op:untag``)."""
        if type(tag) is not str:
            raise TypeError(f"a tag is a str, not {type(tag).__name__}")
        return self._select(target, Untag, tag)

    def _select(self, target: RemotePromise, op: type[Get | Index | Untag], key: Any) -> Promise:
        if type(target) is not RemotePromise or target._session is not self:
            raise TypeError(f"{op.__name__.lower()} needs a promise of this session, not {type(target).__name__}")
        pick = _PICKS[op]
        if target._state != PENDING:
            return target.then(lambda value: pick(key, value))
        if self._aborted is not None:
            return Promise.rejected_with(self._aborted)
        budget = self._budget
        if budget is not None and not budget.take("questions"):
            raise LimitExceeded(f"{budget.max_questions} calls are already waiting for answers")
        pos = self._next_question
        # Nothing reports to this answer unasked (the op has no resolver):
        # awaiting it sends a listen, as for a promise the peer exported.
        answer = RemotePromise(self, "answer", pos)
        try:
            frame = self._encode(_new(op, (self._target_desc(target), key, pos)))
        except BaseException:
            answer._position = -1  # nothing was sent; nothing to release
            if budget is not None:
                budget.give("questions")
            raise
        self._next_question += 1
        self._questions.add(pos)
        self._outbox.append(frame)
        self._outbox_bytes += len(frame)
        if len(self._outbox) == 1 and self.on_wakeup is not None:
            self.on_wakeup()
        return answer

    def _describe(self, obj: Any) -> Descriptor:
        """The descriptor for ``obj`` as the peer will see it (encode callback)."""
        tobj = type(obj)
        if tobj is RemoteRef and obj._session is self:
            return _new(Descriptor, (_EXPORT, obj._position))
        if tobj is RemotePromise and obj._session is self:
            if obj._kind == "answer":
                return _new(Descriptor, (_ANSWER, obj._position))
            return _new(Descriptor, (_EXPORT, obj._position))
        is_promise = isinstance(obj, Promise)
        if not (is_promise or tobj is RemoteRef or tobj is _ResultResolver or is_remotable(obj)):
            raise TypeError(
                f"cannot pass a {tobj.__name__} by reference: mark its class with @far or use Far()"
            )
        pos = self._export_pos_of.get(id(obj))
        created = pos is None
        if pos is None:
            if len(self._exports) >= self.limits.max_exports:
                raise _ExportLimit(f"more than {self.limits.max_exports} exports")
            if self._budget is not None and not self._budget.take("exports"):
                raise LimitExceeded(f"{self._budget.max_exports} objects are already exported")
            pos = self._next_export
            self._next_export += 1
            entry = _Export(obj, is_promise)
            self._exports[pos] = entry
            self._export_pos_of[id(obj)] = pos
        else:
            entry = self._exports[pos]
        entry.wire_count += 1
        if self._journal is not None:
            self._journal.append((pos, created))
        return _new(Descriptor, (_IMPORT_PROMISE if entry.is_promise else _IMPORT_OBJECT, pos))

    # -- receiving ---------------------------------------------------------------
    def _on_start(self, msg: StartSession) -> None:
        if self._peer_started:
            raise ProtocolError(R_BAD_FIELD, "duplicate start-session")
        self.profile.check_start(msg)
        self._peer_started = True

    def _local_target(self, desc: Any) -> Any:
        """The local thing a deliver/listen target names: our export or our answer."""
        if type(desc) is not Descriptor:
            raise ProtocolError(R_BAD_FIELD, "target must be a descriptor")
        if desc.kind == _EXPORT:
            entry = self._exports.get(desc.position)
            if entry is None:
                raise ProtocolError(R_UNKNOWN_POSITION, f"export {desc.position}")
            return entry.obj
        if desc.kind == _ANSWER:
            answer = self._answers.get(desc.position)
            if answer is None:
                raise ProtocolError(R_UNKNOWN_POSITION, f"answer {desc.position}")
            return answer
        raise ProtocolError(R_BAD_FIELD, f"cannot target {desc.kind.wire_name}")

    def _revive_desc(self, desc: Descriptor) -> Any:
        """What a received descriptor stands for (the profile's decode callback)."""
        kind, pos = desc
        if kind == _IMPORT_OBJECT or kind == _IMPORT_PROMISE:
            entry = self._imports.get(pos)
            proxy = entry.ref() if entry is not None else None
            if proxy is None:
                if entry is None and len(self._imports) >= self.limits.max_imports:
                    raise ProtocolError(R_LIMIT, f"more than {self.limits.max_imports} imports")
                if kind == _IMPORT_OBJECT:
                    proxy = RemoteRef(self, pos)
                else:
                    proxy = RemotePromise(self, "import", pos)
                if entry is None:
                    entry = self._imports[pos] = _Import(proxy)
                else:  # the old proxy died but its finalizer has not run yet
                    entry.ref = _Import(proxy).ref
            elif (type(proxy) is RemoteRef) != (kind == _IMPORT_OBJECT):
                raise ProtocolError(R_BAD_FIELD, f"position {pos} changed between object and promise")
            assert entry is not None  # a live proxy came from an entry
            entry.wire_count += 1
            return proxy
        return self._local_target(desc)

    def _check_method(self, method: Any) -> None:
        """A method name, or None: a call of the target itself (``E(fn)(...)``)."""
        if method is not None and (type(method) is not str or len(method) > self.limits.max_method_length):
            raise ProtocolError(R_BAD_FIELD, "method must be a short string or null")

    def _on_deliver(self, msg: Deliver) -> None:
        method, answer_pos, resolve_me = msg.method, msg.answer_pos, msg.resolve_me
        if method is not None and (type(method) is not str or len(method) > self.limits.max_method_length):
            self._check_method(method)  # raises
        if answer_pos is not None:
            if type(answer_pos) is not int or not 0 <= answer_pos <= MAX_POSITION:
                raise ProtocolError(R_BAD_FIELD, "answer position must be null or 0..2**53-1")
            if answer_pos in self._answers:
                raise ProtocolError(R_POSITION_IN_USE, f"answer {answer_pos}")
            if len(self._answers) >= self.limits.max_answers:
                raise ProtocolError(R_LIMIT, f"more than {self.limits.max_answers} pending answers")
        if resolve_me is not None:
            if type(resolve_me) is not Descriptor or resolve_me.kind != _IMPORT_OBJECT:
                raise ProtocolError(R_BAD_FIELD, "resolve_me must be null or an import-object")
        target = self._local_target(msg.target)
        args = self._decode_args(msg.args, self._revive_desc)
        resolver = self._revive_desc(resolve_me) if resolve_me is not None else None
        if answer_pos is not None and self._budget is not None and not self._budget.take("answers"):
            raise ProtocolError(R_BUDGET, f"{self._budget.max_answers} answers are pending over all sessions")
        result = self._call(target, method, args)
        if answer_pos is not None:
            self._answers[answer_pos] = result
        if resolver is not None:
            result._on_settled(self._reporter(resolver), True)

    def _on_deliver_only(self, msg: DeliverOnly) -> None:
        method = msg.method
        if method is not None and (type(method) is not str or len(method) > self.limits.max_method_length):
            self._check_method(method)  # raises
        target = self._local_target(msg.target)
        args = self._decode_args(msg.args, self._revive_desc)
        if type(target) is _ResultResolver and (method == "fulfill" or method == "break"):
            # The answer to one of our calls: one per call, so it skips the
            # general path (eventual_send, a result promise nobody observes).
            try:
                getattr(target, method)(*args)
            except Exception as e:
                log.debug("deliver-only call failed: %r", e)
            return
        result = self._call(target, method, args)
        result.when_settled(_log_unobserved_failure)

    def _on_listen(self, msg: Listen) -> None:
        resolver_desc, wants_partial = msg.resolver, msg.wants_partial
        if type(resolver_desc) is not Descriptor or resolver_desc.kind != _IMPORT_OBJECT:
            raise ProtocolError(R_BAD_FIELD, "listen resolver must be an import-object")
        if type(wants_partial) is not bool:
            raise ProtocolError(R_BAD_FIELD, "wants_partial must be a boolean")
        target = self._local_target(msg.target)
        resolver = self._revive_desc(resolver_desc)
        report = self._reporter(resolver)
        if isinstance(target, Promise):
            target._on_settled(report, True)
        else:
            report(Promise.resolved(target))

    def _on_select(self, msg: Get | Index | Untag) -> None:
        """get/index/untag: a new answer for a part of what one of our promises settles to."""
        op = type(msg)
        target_desc, key, answer_pos = msg
        if op is Index:
            if type(key) is not int:
                raise ProtocolError(R_BAD_FIELD, "index needs an integer index")
        elif type(key) is not str:
            raise ProtocolError(R_BAD_FIELD, f"{'get needs a field name' if op is Get else 'untag needs a tag'} (a string)")
        if type(answer_pos) is not int or not 0 <= answer_pos <= MAX_POSITION:
            raise ProtocolError(R_BAD_FIELD, "answer position must be 0..2**53-1")
        if answer_pos in self._answers:
            raise ProtocolError(R_POSITION_IN_USE, f"answer {answer_pos}")
        if len(self._answers) >= self.limits.max_answers:
            raise ProtocolError(R_LIMIT, f"more than {self.limits.max_answers} pending answers")
        target = self._local_target(target_desc)
        if self._budget is not None and not self._budget.take("answers"):
            raise ProtocolError(R_BUDGET, f"{self._budget.max_answers} answers are pending over all sessions")
        source = target if isinstance(target, Promise) else Promise.resolved(target)
        pick = _PICKS[op]
        self._answers[answer_pos] = source.then(lambda value: pick(key, value))

    def _on_gc_exports(self, msg: GcExports) -> None:
        positions, deltas = msg.positions, msg.deltas
        if type(positions) is not list or type(deltas) is not list or len(positions) != len(deltas):
            raise ProtocolError(R_BAD_FIELD, "gc-exports needs two arrays of equal length")
        for pos, delta in zip(positions, deltas, strict=True):
            if type(pos) is not int or not 0 <= pos <= MAX_POSITION or type(delta) is not int or delta <= 0:
                raise ProtocolError(R_BAD_FIELD, "gc-exports needs positions 0..2**53-1 and positive deltas")
            entry = self._exports.get(pos)
            if entry is None:
                raise ProtocolError(R_UNKNOWN_POSITION, f"gc of export {_brief(pos)}")
            if delta > entry.wire_count:
                raise ProtocolError(R_BAD_FIELD, f"gc of export {_brief(pos)} by more than was sent")
            entry.wire_count -= delta
            if entry.wire_count == 0 and pos != 0:
                del self._exports[pos]
                del self._export_pos_of[id(entry.obj)]
                if self._budget is not None:
                    self._budget.give("exports")

    def _on_gc_answers(self, msg: GcAnswers) -> None:
        positions = msg.positions
        if type(positions) is not list:
            raise ProtocolError(R_BAD_FIELD, "gc-answers needs an array")
        for pos in positions:
            if type(pos) is not int or not 0 <= pos <= MAX_POSITION:
                raise ProtocolError(R_BAD_FIELD, "gc-answers needs positions 0..2**53-1")
            if pos not in self._answers:
                raise ProtocolError(R_UNKNOWN_POSITION, f"gc of answer {_brief(pos)}")
            del self._answers[pos]
            if self._budget is not None:
                self._budget.give("answers")

    def _on_abort(self, msg: Abort) -> None:
        reason = msg.reason if type(msg.reason) is str else "abort"
        reason = reason[: self.limits.max_reason_length]
        code, detail = _split_reason(reason)
        self._terminate(SessionAborted(code, detail, by_peer=True))

    # -- calling local objects ----------------------------------------------------
    def _call(self, target: Any, method: str | None, args: list[Any]) -> Promise:
        """Invoke ``method`` on a local target (None: apply it), or forward to wherever it lives."""
        try:
            return eventual_send(target, method, args, spawn=self.spawn)
        except Exception as e:  # forwarding to another session can refuse the args
            return Promise.rejected_with(e)

    def _wire_error(self, e: BaseException) -> RemoteError:
        return RemoteError.from_exception(e, with_traceback=self.debug)

    def _reporter(self, resolver: Any) -> Callable[[Promise], None]:
        """A callback that tells the peer's resolver how a promise settled."""

        def report(p: Promise) -> None:
            if self._aborted is not None:
                return
            target = _new(Descriptor, (_EXPORT, resolver._position))
            if p._state == FULFILLED:
                try:
                    self._queue(_new(DeliverOnly, (target, "fulfill", [p._result])))
                    return
                except TypeError as e:
                    err: BaseException = RemoteError("TypeError", f"result is not passable: {e}")
            else:
                err = p._result
                if type(err) is Rejected:
                    # Broken with a value that is not an error: the peer gets the value.
                    try:
                        self._queue(DeliverOnly(target, "break", [err.value]))
                        return
                    except TypeError as e:
                        err = RemoteError("TypeError", f"rejection value is not passable: {e}")
                elif not isinstance(err, RemoteError):
                    err = self._wire_error(err)
            try:
                self._queue(DeliverOnly(target, "break", [err]))
            except TypeError:
                name = err.name if isinstance(err, RemoteError) else "Error"
                self._queue(DeliverOnly(target, "break", [RemoteError(name, "unencodable error")]))

        return report

    def _start_listening(self, promise: RemotePromise) -> None:
        if self._aborted is not None:
            promise._reject(self._aborted)
            return
        if promise._position < 0:
            return
        self._queue(Listen(self._target_desc(promise), _ResultResolver(promise), False))

    # -- garbage collection ----------------------------------------------------------
    def _drop_import(self, pos: int, proxy: Any) -> None:
        # Called from a finalizer: may run on any thread, at any time.
        with self._gc_lock:
            entry = self._imports.get(pos)
            if entry is None:
                return
            current = entry.ref()
            if current is not None and current is not proxy:
                return  # a newer proxy took over this position
            del self._imports[pos]
            if entry.wire_count and self._aborted is None:
                self._gc_exports[pos] = self._gc_exports.get(pos, 0) + entry.wire_count
                self._wake_for_gc()

    def _drop_question(self, pos: int) -> None:
        with self._gc_lock:
            if pos in self._questions:
                self._questions.discard(pos)
                if self._budget is not None:
                    self._budget.give("questions")
                if self._aborted is None:
                    self._gc_answers.append(pos)
                    self._wake_for_gc()

    def _wake_for_gc(self) -> None:
        wakeup = self.on_gc_wakeup or self.on_wakeup
        if not self._outbox and wakeup is not None:
            try:
                wakeup()
            except Exception:  # pragma: no cover - driver gone
                pass

    def _flush_gc(self) -> None:
        with self._gc_lock:
            gc_exports, self._gc_exports = self._gc_exports, {}
            gc_answers, self._gc_answers = self._gc_answers, []
        # Positions and counts are our own small ints: no references, nothing to roll back.
        encode = self._encode_message
        if gc_exports:
            frame = encode(_new(GcExports, (list(gc_exports), list(gc_exports.values()))), self._describe, self.limits)
            self._outbox.append(frame)
            self._outbox_bytes += len(frame)
        if gc_answers:
            frame = encode(_new(GcAnswers, (gc_answers,)), self._describe, self.limits)
            self._outbox.append(frame)
            self._outbox_bytes += len(frame)

    # -- ending ------------------------------------------------------------------------
    def _fail(self, code: str, detail: str, *, local: bool = False) -> None:
        if self._aborted is not None:
            return
        log.debug("%s: aborting: %s: %s", self.name, code, detail)
        reason = f"{code}: {detail}"[: self.limits.max_reason_length] if detail else code
        try:
            frame = self._encode(Abort(reason))
            self._outbox.append(frame)
            self._outbox_bytes += len(frame)
            self.abort_queued = True
        except Exception:  # pragma: no cover - the reason is a str
            pass
        self._terminate(SessionAborted(code, detail))
        if self.on_wakeup is not None:
            self.on_wakeup()

    def _terminate(self, reason: SessionAborted) -> None:
        self._aborted = reason
        if self.on_terminate is not None:
            try:
                self.on_terminate(reason)
            except Exception:
                log.exception("on_terminate of a CapTP session failed")
        exports, self._exports = self._exports, {}
        self._export_pos_of = {}
        answers, self._answers = self._answers, {}
        if self._budget is not None:
            with self._gc_lock:
                self._budget.give("answers", len(answers))
                self._budget.give("exports", len(exports) - (0 in exports))
                self._budget.give("questions", len(self._questions))
                self._questions.clear()
        self._gc_exports.clear()
        self._gc_answers.clear()
        # Break every promise the peer was going to settle for us.
        for entry in exports.values():
            if type(entry.obj) is _ResultResolver and entry.obj._promise is not None:
                entry.obj._promise._reject(reason)
        for imported in list(self._imports.values()):
            proxy = imported.ref()
            if isinstance(proxy, Promise):
                proxy._reject(reason)
        del answers


class _ExportLimit(Exception):
    pass


@far("NoBootstrap")
class _NoBootstrap:
    """What a peer reaches at position 0 when this side offers nothing."""


_NO_BOOTSTRAP = _NoBootstrap()


def _log_unobserved_failure(p: Promise) -> None:
    if p._state == REJECTED:
        log.debug("deliver-only call failed: %r", p._result)


def _shape(value: Any) -> str:
    """What a value is, in words, for the error of a get/index/untag that does not fit it."""
    t = type(value)
    if t is dict:
        return "a record"
    if t is list or t is tuple:
        return "a list"
    if t is Tagged:
        return f"a value tagged {_brief(value.tag)}"
    if t is str or t is bytes or t is int or t is float or t is bool or value is None:
        return f"{_brief(value)}"
    return f"a {t.__name__}"


def _pick_field(field: str, value: Any) -> Any:
    if type(value) is not dict:
        raise RemoteError("TypeError", f"get needs a record, got {_shape(value)}")
    if field not in value:
        raise RemoteError("KeyError", f"the record has no field {_brief(field)}")
    return value[field]


def _pick_element(index: int, value: Any) -> Any:
    if type(value) is not list and type(value) is not tuple:
        raise RemoteError("TypeError", f"index needs a list, got {_shape(value)}")
    if not 0 <= index < len(value):
        raise RemoteError("IndexError", f"index {_brief(index)} is outside a list of {len(value)}")
    return value[index]


def _pick_payload(tag: str, value: Any) -> Any:
    if type(value) is not Tagged or value.tag != tag:
        raise RemoteError("TypeError", f"untag {_brief(tag)} needs a value with that tag, got {_shape(value)}")
    return value.payload


_PICKS: dict[type[Message], Callable[[Any, Any], Any]] = {Get: _pick_field, Index: _pick_element, Untag: _pick_payload}

_HANDLERS: dict[type[Message], Callable[[Session, Any], None]] = {
    StartSession: Session._on_start,
    Deliver: Session._on_deliver,
    DeliverOnly: Session._on_deliver_only,
    Listen: Session._on_listen,
    GcExports: Session._on_gc_exports,
    GcAnswers: Session._on_gc_answers,
    Abort: Session._on_abort,
    Get: Session._on_select,
    Index: Session._on_select,
    Untag: Session._on_select,
}
