"""Promises that settle through callbacks, so the sans-IO session can use them.

A ``Promise`` is pending until it is fulfilled with a value or rejected with an
exception; it never changes after that. Reactions (``when_settled`` callbacks,
``then``) never run inside the step that settles the promise or registers
them: each runs in a later turn of the turn queue (``captp.turns``), in the
order the reactions were registered, as in JavaScript. No event loop is
needed: whoever drives the session drains the queue. Awaiting a promise
(``await p``) is the only part that needs trio; the awaiting task resumes in a
later trio step.

Promises are passable: sending one to a peer gives the peer a promise that
settles when this one does.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from .lazylog import LazyLogger
from .turns import defer

__all__ = ["Promise", "Resolver", "make_promise_kit"]

log = LazyLogger("captp")

PENDING = 0
FULFILLED = 1
REJECTED = 2


class Promise:
    """An eventual value. Await it for the value, or raise its rejection."""

    __slots__ = ("_state", "_result", "_callbacks", "__weakref__")

    def __init__(self) -> None:
        self._state = PENDING
        self._result: Any = None
        #: (callback, now): ``now`` callbacks are the package's own wakers
        #: (an awaiting task's event, a report to the peer), which run no user
        #: code and so need not wait for a turn.
        self._callbacks: list[tuple[Callable[[Promise], None], bool]] | None = None

    # -- inspection ---------------------------------------------------------
    @property
    def settled(self) -> bool:
        return self._state != PENDING

    @property
    def fulfilled(self) -> bool:
        return self._state == FULFILLED

    @property
    def rejected(self) -> bool:
        return self._state == REJECTED

    def result(self) -> Any:
        """The value, or raise the rejection. Raises ``RuntimeError`` while pending."""
        if self._state == FULFILLED:
            return self._result
        if self._state == REJECTED:
            raise self._result
        raise RuntimeError("promise is still pending")

    def exception(self) -> BaseException | None:
        """The rejection reason if rejected, else None."""
        return self._result if self._state == REJECTED else None

    # -- settlement (package-internal; users hold a Resolver) ---------------
    def _settle(self, state: int, result: Any) -> None:
        if self._state != PENDING:
            return
        self._state = state
        self._result = result
        callbacks, self._callbacks = self._callbacks, None
        if callbacks:
            for cb, now in callbacks:
                if now:
                    try:
                        cb(self)
                    except Exception:  # a broken callback must not stop the others
                        log.exception("promise callback failed")
                else:
                    defer(cb, self)

    def _resolve(self, value: Any) -> None:
        """Fulfill with ``value``, or follow it if it is itself a promise."""
        if self._state != PENDING:
            return
        if isinstance(value, Promise):
            if value is self:
                self._settle(REJECTED, TypeError("a promise cannot resolve to itself"))
                return
            value._on_settled(self._adopt, False)
        else:
            self._settle(FULFILLED, value)

    def _adopt(self, other: Promise) -> None:
        self._settle(other._state, other._result)

    def _reject(self, reason: BaseException) -> None:
        self._settle(REJECTED, reason)

    # -- observation ----------------------------------------------------------
    def when_settled(self, callback: Callable[[Promise], None]) -> None:
        """Call ``callback(self)`` in a turn after this promise settles.

        Never during this call, even if the promise has settled already;
        reactions of one promise run in the order they were registered.
        """
        self._on_settled(callback, False)

    def _on_settled(self, callback: Callable[[Promise], None], now: bool) -> None:
        """``when_settled``; with ``now``, the callback runs at settlement (package-internal wakers)."""
        if self._state != PENDING:
            if now:
                callback(self)
            else:
                defer(callback, self)
        elif self._callbacks is None:
            self._callbacks = [(callback, now)]
        else:
            self._callbacks.append((callback, now))

    def then(
        self,
        on_fulfilled: Callable[[Any], Any] | None = None,
        on_rejected: Callable[[BaseException], Any] | None = None,
    ) -> Promise:
        """A promise for what the matching handler returns (or this outcome, if it has none).

        The handler runs in a later turn, as ``when_settled`` callbacks do;
        if it raises, the returned promise is rejected with that exception.
        """
        derived = Promise()

        def react(p: Promise) -> None:
            handler = on_fulfilled if p._state == FULFILLED else on_rejected
            if handler is None:
                derived._settle(p._state, p._result)
                return
            try:
                derived._resolve(handler(p._result))
            except Exception as e:
                derived._reject(e)

        self.when_settled(react)
        return derived

    def __await__(self) -> Generator[Any, None, Any]:
        if self._state == PENDING:
            yield from self._wait().__await__()
        return self.result()

    async def _wait(self) -> None:
        import trio

        event = trio.Event()
        self._on_settled(lambda _p: event.set(), True)
        await event.wait()

    def __repr__(self) -> str:
        state = {PENDING: "pending", FULFILLED: "fulfilled", REJECTED: "rejected"}[self._state]
        return f"<{type(self).__name__} {state}>"

    # Convenience constructors.
    @classmethod
    def resolved(cls, value: Any) -> Promise:
        p = cls()
        p._resolve(value)
        return p

    @classmethod
    def rejected_with(cls, reason: BaseException) -> Promise:
        p = cls()
        p._reject(reason)
        return p


class Resolver:
    """The authority to settle one promise. Settling twice is a no-op."""

    __slots__ = ("_promise",)

    def __init__(self, promise: Promise) -> None:
        self._promise = promise

    def resolve(self, value: Any) -> None:
        self._promise._resolve(value)

    def reject(self, reason: BaseException) -> None:
        if not isinstance(reason, BaseException):
            raise TypeError("reject() needs an exception")
        self._promise._reject(reason)


def make_promise_kit() -> tuple[Promise, Resolver]:
    """A new pending promise and the resolver that settles it."""
    p = Promise()
    return p, Resolver(p)
