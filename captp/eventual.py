"""Eventual send: ``E(target).method(*args)`` for local and remote targets alike.

The result is always a ``Promise``, and the method never runs inside the
caller's current step. For a remote target the call is queued on the
target's session at once (the peer cannot run it before our step ends
anyway); for a promise the call waits for (or, when the promise is a remote
answer, is pipelined to) its resolution and then runs in a turn of its own;
for a local remotable the method runs in a later turn (``captp.turns``), and
its result (or coroutine) settles the promise.

``E(fn)(*args)`` calls the target itself (method ``None``): a far function
made by ``Far(iface, fn)`` when local, a deliver without a method name when
remote.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from types import CoroutineType
from typing import Any

from .passable import RemoteError, interface_of, is_far_function, is_method_name
from .promise import FULFILLED, PENDING, Promise
from .turns import defer

__all__ = ["E", "eventual_send", "local_call"]

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


def _system_spawn(fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    # Used only for ``E(local).async_method()`` outside any session. The task
    # is owned by the promise it settles and never raises (see local_call).
    import trio

    trio.lowlevel.spawn_system_task(fn)


def _invoke(
    p: Promise, target: Any, method: str | None, args: tuple[Any, ...] | list[Any], spawn: Spawn | None
) -> None:
    """Call a public method of a local object (None: the far function itself) now; settle ``p`` with its result."""
    if method is None:
        if not is_far_function(target):
            iface = interface_of(target) or type(target).__name__
            p._reject(RemoteError("TypeError", f"{iface} is not a function"))
            return
        fn = target._call
    elif not is_method_name(method):
        p._reject(RemoteError("TypeError", f"{method!r} is not a remote method name"))
        return
    else:
        fn = getattr(target, method, None)
    if fn is None or not callable(fn):
        iface = interface_of(target) or type(target).__name__
        p._reject(RemoteError("TypeError", f"{iface} has no method {method!r}"))
        return
    try:
        result = fn(*args)
    except Exception as e:
        p._reject(e)
        return
    if isinstance(result, CoroutineType):  # what inspect.iscoroutine tests, without importing inspect

        async def run() -> None:
            try:
                value = await result
            except Exception as e:
                p._reject(e)
            else:
                p._resolve(value)

        try:
            (spawn or _system_spawn)(run)
        except Exception as e:  # no trio run, or the session's nursery has closed: no task to run it
            result.close()
            p._reject(e)
        return
    p._resolve(result)


def local_call(
    target: Any, method: str | None, args: tuple[Any, ...] | list[Any], spawn: Spawn | None = None
) -> Promise:
    """Call a public method of a local object in a later turn; the promise settles with its result."""
    p = Promise()
    defer(_invoke, p, target, method, args, spawn)
    return p


def eventual_send(
    target: Any, method: str | None, args: tuple[Any, ...] | list[Any], spawn: Spawn | None = None
) -> Promise:
    """Send ``method(*args)`` to ``target`` wherever it is; return the result's promise."""
    remote_send = getattr(type(target), "_captp_send", None)
    if remote_send is not None:
        sent: Promise = remote_send(target, method, args)
        return sent
    if isinstance(target, Promise):
        if target._state == FULFILLED:
            return eventual_send(target._result, method, args, spawn)
        if target._state != PENDING:
            return Promise.rejected_with(target._result)
        p = Promise()

        def forward(settled: Promise) -> None:
            # Already a turn of its own: a local value's method runs here.
            if settled._state != FULFILLED:
                p._reject(settled._result)
                return
            value = settled._result
            if getattr(type(value), "_captp_send", None) is None and not isinstance(value, Promise):
                _invoke(p, value, method, args, spawn)
            else:
                p._resolve(eventual_send(value, method, args, spawn))

        target.when_settled(forward)
        return p
    return local_call(target, method, args, spawn)


def _send_only(target: Any, method: str | None, args: tuple[Any, ...]) -> None:
    remote_send_only = getattr(type(target), "_captp_send_only", None)
    if remote_send_only is not None:
        remote_send_only(target, method, args)
    else:
        eventual_send(target, method, args)


class _Sender:
    __slots__ = ("_target", "_only")

    def __init__(self, target: Any, only: bool) -> None:
        self._target = target
        self._only = only

    def __getattr__(self, method: str) -> Callable[..., Any]:
        if method.startswith("__"):
            raise AttributeError(method)
        target, only = self._target, self._only

        def call(*args: Any) -> Any:
            if only:
                _send_only(target, method, args)
                return None
            return eventual_send(target, method, args)

        return call

    def __call__(self, *args: Any) -> Any:
        """``E(fn)(*args)``: call the target itself."""
        if self._only:
            _send_only(self._target, None, args)
            return None
        return eventual_send(self._target, None, args)

    def __repr__(self) -> str:
        return f"E({self._target!r})"


class _E:
    """``E(x).m(*args)`` -> Promise; ``E.send_only(x).m(*args)`` -> None."""

    def __call__(self, target: Any) -> Any:
        return _Sender(target, False)

    @staticmethod
    def send_only(target: Any) -> Any:
        """Fire-and-forget: the call is delivered, its result and errors are dropped."""
        return _Sender(target, True)


E = _E()
