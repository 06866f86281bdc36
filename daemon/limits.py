"""The daemon's resource limits: one table, each number with why, overridable for tests and operators.

Untrusted parties — workers at any power level, anonymous WebSocket clients,
weblet pages, guests — share one daemon with its owner. These limits make
sure none of them can spend the daemon's memory, file descriptors or the
owner's attention without bound (issue 9). ``OCAPD_LIMITS`` (a JSON object
of field names to numbers) overrides any of them, e.g.
``OCAPD_LIMITS='{"anonymous_sessions": 4}'``; an unknown name or a value of
the wrong type stops the daemon at start with a clear message.
"""

from __future__ import annotations

import json
import logging
import os
import resource
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from ocapd.captp import Budget, Limits

__all__ = ["DaemonLimits", "load_limits", "raise_fd_limit", "session_limits", "shared_budget"]

log = logging.getLogger("ocapd")


@dataclass(frozen=True)
class DaemonLimits:
    # -- CapTP tables over every session but the owner's CLI (captp.Budget) --
    #: Four sessions' worth of the per-session answer limit (65,536); at
    #: ~200 bytes an answer each table stays under ~60 MiB daemon-wide.
    answers: int = 262_144
    questions: int = 262_144
    exports: int = 262_144
    #: Backpressure for workers' and gateway sessions (``captp.Limits``, which says why these numbers).
    outbox_bytes: int = Limits.max_outbox_bytes
    stall_timeout: float = Limits.stall_timeout
    #: After the daemon aborts such a session on a byte stream (a worker's
    #: pipe; WebSockets close without a drain), how long and how many bytes it
    #: drops of what the peer still sends before closing (``captp.Limits``
    #: says why these numbers). 0 closes at once.
    drain_timeout: float = Limits.drain_timeout
    drain_bytes: int = Limits.drain_bytes

    # -- gateway sessions --
    #: WebSocket sessions that presented a token (or a weblet's own page).
    sessions: int = 8192
    #: Sessions that have not presented a token yet. They need one call
    #: (``fetch``); 64 is ample for a few tabs reconnecting at once, and at
    #: most this many sockets can be held without a token.
    anonymous_sessions: int = 64
    #: Seconds an anonymous session has to present a valid token.
    anonymous_deadline: float = 10.0
    #: Sessions one weblet instance's page may hold (it needs one or two).
    instance_sessions: int = 16
    #: File descriptors kept for the owner (CLI connections, the database,
    #: workers' pipes, log files) whatever the gateway holds: session caps
    #: are lowered to fit under the open-files limit minus this.
    fd_reserve: int = 256

    # -- mail (per agent) --
    #: One message (its text and names, encoded); a listing page always fits a frame.
    message_bytes: int = 1024 * 1024
    #: Messages one mailbox holds.
    messages: int = 1000
    #: Bytes one mailbox holds.
    mailbox_bytes: int = 16 * 1024 * 1024
    #: Names one pet store holds.
    names: int = 10_000
    #: Requests one sender may have waiting at one recipient; more are refused
    #: until the recipient answers or dismisses one (prompt spam, issue 9 item 13).
    pending_requests: int = 3

    # -- OCapN peers (``captp.ocapn_node``, ``captp.ocapn_tls``, which say why these numbers) --
    #: Sessions one peer (an authenticated designator) may have opened to us at once.
    peer_sessions: int = 4
    #: Connections at once from one address (IPv4, or an IPv6 /64; twice that from a /48) at the listener, handshakes included.
    peer_connections_per_address: int = 16
    #: Failed fetches (wrong swiss numbers) a peer may make in a burst, and
    #: how many it earns back a second; kept per designator and per address
    #: across sessions, so reconnecting does not refill them.
    peer_failed_fetches: int = 32
    peer_failed_fetches_per_second: float = 1.0
    #: Designators and addresses whose failed-fetch allowance is remembered (least recently used forgotten).
    peer_fetch_budgets: int = 4096


def load_limits(env: Mapping[str, str] = os.environ) -> DaemonLimits:
    """The defaults, with ``OCAPD_LIMITS`` applied. Raises ``ValueError`` for a bad override."""
    text = env.get("OCAPD_LIMITS", "").strip()
    if not text:
        return DaemonLimits()
    try:
        overrides = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"OCAPD_LIMITS is not JSON: {e}") from None
    if not isinstance(overrides, dict):
        raise ValueError("OCAPD_LIMITS must be a JSON object of limit names to numbers")
    known = {f.name: f for f in fields(DaemonLimits)}
    for name, value in overrides.items():
        f = known.get(name)
        if f is None:
            raise ValueError(f"OCAPD_LIMITS: unknown limit {name!r} (known: {', '.join(known)})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"OCAPD_LIMITS: {name} must be a non-negative number")
        if f.type in ("int", int) and not isinstance(value, int):
            raise ValueError(f"OCAPD_LIMITS: {name} must be an integer")
    return replace(DaemonLimits(), **overrides)


def session_limits(limits: DaemonLimits, base: Limits | None = None) -> Limits:
    """CapTP limits for a session of an untrusted peer: ``base`` with the daemon's backpressure and drain settings."""
    return (base or Limits()).replace(
        max_outbox_bytes=limits.outbox_bytes,
        stall_timeout=limits.stall_timeout,
        drain_timeout=limits.drain_timeout,
        drain_bytes=limits.drain_bytes,
    )


def shared_budget(limits: DaemonLimits) -> Budget:
    """The captp budget every session but the owner's CLI is charged to."""
    return Budget(answers=limits.answers, questions=limits.questions, exports=limits.exports)


def raise_fd_limit() -> int:
    """Raise the soft open-files limit to the hard one; return the soft limit now in force.

    A daemon holding one socket per session must not stop answering its owner
    at the default soft limit (often 1024) while the hard limit allows more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            log.warning("could not raise the open-files limit from %d to %d: %s", soft, target, e)
    return soft
