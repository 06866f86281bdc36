"""The turn queue: where eventual sends and promise reactions wait for their turn.

``E(local).m()`` and every ``when_settled``/``then`` reaction are *deferred*:
they are appended here and run later, each as its own turn, in the order they
were queued — the Python counterpart of the JavaScript job queue that captp.js
relies on. So a method never runs inside its caller's step, and an object is
never re-entered while one of its methods is running.

The queue is a plain data structure; nothing here awaits. Whoever drives
CapTP drains it:

- the trio driver (``captp.connection``) drains it right after feeding
  frames to a session (``Session.receive_frame`` only records work);
- inside any trio run, a queue that becomes non-empty outside a driver's
  step asks trio to drain it soon (``run_sync_soon``), so
  ``E(local).m()`` in a task runs once that task's step has ended;
- a program without an event loop (the blocking CLI client, sans-IO tests)
  calls ``run_turns()`` itself.

One queue per thread, like a JavaScript agent's: a thread's promise
reactions go to the same place, in order, and run on that thread (a daemon
and a test, each in its own thread and trio run, never run each other's turns).
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

from .lazylog import LazyLogger

__all__ = ["defer", "run_turns", "pending_turns", "holding"]

log = LazyLogger("captp")

#: Turns one ``run_turns`` call runs at most before returning: a program that
#: keeps queueing turns (a method that sends to itself forever) must not
#: starve the driver's own I/O. The rest stay queued for the next call.
MAX_TURNS_PER_RUN = 100_000

class _Agent(threading.local):
    """One thread's queue and drain state (a thread is one agent, as in JavaScript)."""

    def __init__(self) -> None:
        self.queue: deque[tuple[Callable[..., Any], tuple[Any, ...]]] = deque()
        #: Drivers currently inside a step that ends with ``run_turns`` (see ``holding``).
        self.held = 0
        #: The trio run a drain has been asked of and has not run yet (None: none asked).
        self.drain_scheduled: Any = None


_agent = _Agent()


def defer(fn: Callable[..., Any], *args: Any) -> None:
    """Run ``fn(*args)`` in a later turn, after every turn queued before it (on this thread)."""
    agent = _agent
    queue = agent.queue
    queue.append((fn, args))
    if len(queue) == 1 and not agent.held:
        _schedule_drain(agent)


def pending_turns() -> int:
    """How many turns are waiting on this thread."""
    return len(_agent.queue)


def run_turns(limit: int = MAX_TURNS_PER_RUN) -> int:
    """Run this thread's queued turns (including those they queue) until none is left; return how many ran.

    A turn that raises is logged and does not stop the others: a turn is
    someone else's code, and the next one is owed its run.
    """
    agent = _agent
    queue = agent.queue
    popleft = queue.popleft
    ran = 0
    while queue and ran < limit:
        fn, args = popleft()
        ran += 1
        try:
            fn(*args)
        except Exception:
            log.exception("a deferred turn failed")
    if queue and not agent.held:
        _schedule_drain(agent)
    return ran


class holding:
    """``with holding(): ...`` — a driver step that drains the queue itself at its end.

    While held, a newly non-empty queue does not ask trio for a drain: the
    driver runs ``run_turns()`` before it sends, which saves a scheduler pass
    per received frame.
    """

    __slots__ = ()

    def __enter__(self) -> None:
        _agent.held += 1

    def __exit__(self, *exc: object) -> None:
        _agent.held -= 1


def _drain_soon() -> None:
    _agent.drain_scheduled = None
    run_turns()


def _schedule_drain(agent: _Agent) -> None:
    """Inside a trio run, have trio drain the queue after the current step; else leave it queued."""
    trio = sys.modules.get("trio")  # never import trio here: the blocking client runs without it
    if trio is None:
        return
    try:
        token = trio.lowlevel.current_trio_token()
    except RuntimeError:  # not inside trio.run: the owner calls run_turns()
        return
    if agent.drain_scheduled is token:
        return
    try:
        token.run_sync_soon(_drain_soon)
    except trio.RunFinishedError:  # pragma: no cover - the run is ending
        return
    agent.drain_scheduled = token
