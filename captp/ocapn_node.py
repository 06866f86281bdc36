"""An OCapN node: one location, the objects it offers by swiss number, and its sessions.

The OCapN profile (``captp.ocapn_profile``) speaks one session; what spans
sessions lives here, in trio:

- **sessions** over any byte stream (``serve_stream``), one ``Session`` with
  an ``OcapnProfile`` each, Syrup values back to back on the stream;
  ``session_for(peer)`` reuses a started session to that peer or dials one
  with the ``connect`` function the node was given (the netlayer);
- **crossed hellos**: when a session we dialed and a session the same peer
  dialed meet, the one whose initiator has the higher public ID (the
  draft's "highest wins", on the IDs the suite compares) is kept and the
  other aborted;
- **the bootstrap object** of each session (export position 0): ``fetch``
  (swiss number -> object), ``deposit-gift``, ``withdraw-gift``;
- **bounds on peers**: at most ``max_sessions_per_peer`` sessions opened by
  one authenticated designator at once (more are aborted with
  ``too-many-sessions`` as they start), and a failed-fetch allowance kept
  per designator and per address across sessions (``FailedFetches``), so a
  guesser gains nothing by reconnecting;
- **third-party handoffs** in all three roles: as *gifter*, a reference
  imported from one session and passed over another becomes a
  ``deposit-gift`` there and a signed handoff-give here; as *receiver*, a
  handoff-give received becomes a promise, resolved by dialing the exporter
  and sending it a signed handoff-receive (counts never reused in that
  session); as *exporter*, ``withdraw-gift`` checks both signatures, the
  session and the count (``ocapn_keys.check_handoff_receive``) and answers
  with the gift, now or once deposited.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .connection import open_connection
from .eventual import E
from .messages import R_BAD_FIELD, R_MALFORMED, ProtocolError
from .ocapn_keys import (
    GIFT_ID_FORMS,
    HandoffError,
    SignatureError,
    check_handoff_give,
    check_handoff_receive,
    is_gift_id,
    make_handoff_give,
    make_handoff_receive,
    open_envelope,
    public_identifier,
)
from .ocapn_locators import PeerLocator, SturdyRef
from .ocapn_netlayers import PeerConnection, address_groups
from .ocapn_profile import HANDOFF_GIVE, LABELS, OcapnProfile
from .passable import RemoteError, far
from .promise import Promise, make_promise_kit
from .session import Budget, RemotePromise, RemoteRef, Session
from .syrup import Record, SyrupError, SyrupReader
from .transport import FramedStream

__all__ = ["FailedFetches", "OcapnNode", "SyrupStream", "R_CROSSED_HELLOS", "R_TOO_MANY_FAILED_FETCHES", "R_TOO_MANY_SESSIONS"]

log = logging.getLogger("captp.ocapn")

#: Abort reason of the session that loses a crossed hello.
R_CROSSED_HELLOS = "crossed-hellos"

#: Abort reason of a session that failed more fetches than it may (``MAX_FAILED_FETCHES``).
R_TOO_MANY_FAILED_FETCHES = "too-many-failed-fetches"

#: Abort reason of a session refused because its peer has too many open (``MAX_SESSIONS_PER_PEER``).
R_TOO_MANY_SESSIONS = "too-many-sessions"

#: Failed fetches a peer may make in a burst, and how many more it earns
#: back each second; one more and its session is aborted. A swiss number is
#: 256 random bits, so guessing is hopeless anyway: this is defence in depth,
#: so that a peer cannot spend our time (and its own luck) on millions of
#: guesses. An honest peer fails a fetch rarely — a mistyped or revoked URI,
#: once per use — and a burst of 32 with one a second forgiven never stops
#: it. The allowance is kept per session, and across sessions per
#: authenticated designator and per address (``FailedFetches``): a guesser
#: that reconnects, with its key or a fresh one, finds the allowance it left.
MAX_FAILED_FETCHES = 32
FAILED_FETCHES_PER_SECOND = 1.0

#: Designators and addresses whose failed-fetch allowance is remembered, the
#: least recently charged forgotten first. Each is a few hundred bytes, so
#: 4096 stay well under 2 MiB; a guesser that comes back from one address
#: keeps its own entry fresh, and only one with thousands of addresses (and
#: as many keys) could push entries out — each then worth one burst.
MAX_FETCH_BUDGETS = 4096

#: Sessions one authenticated designator may have opened to us at once.
#: After crossed hellos settle two daemons share one session; a second or
#: third open for a moment when a peer reconnects before we notice its old
#: connection died. A peer opening more gains nothing honest, and each
#: costs us a socket and a session's tables.
MAX_SESSIONS_PER_PEER = 4

#: Largest message read or written: the session's default frame limit (and Syrup's).
MAX_FRAME_SIZE = 16 * 1024 * 1024

#: Gifts one session may have deposited and not yet withdrawn, and
#: withdrawals it may have waiting for their gifts. A handoff is withdrawn
#: moments after it is deposited; the bound keeps a peer from filling our
#: memory with gifts nobody will collect.
MAX_PENDING_GIFTS = 1024

#: Seconds a withdrawal waits for its gift before it breaks. The gifter sends
#: deposit-gift to the exporter before it sends the handoff-give to the
#: receiver, so a withdrawal that arrives first is behind by the difference
#: of two paths — a round trip or two, seconds on a bad link. A minute is far
#: past that; a withdrawal still waiting then is for a gift that is not coming
#: (a gifter that lied, or died without its session ending yet).
GIFT_WAIT_TIMEOUT = 60.0

#: Seconds a closing stream keeps reading (and dropping) what the peer still
#: sends after our end of the stream, so that the peer sees the stream end
#: rather than a reset. Long enough for a peer to notice the end; short
#: enough that a peer that keeps writing cannot hold the socket.
CLOSE_DRAIN_TIMEOUT = 2.0
#: Bytes a closing stream drops before it gives up waiting for the peer's end.
CLOSE_DRAIN_BYTES = 1024 * 1024

#: Bytes asked of the stream per read.
_READ_SIZE = 65536

#: Dials a location: a stream, or a netlayer's ``PeerConnection`` (which may
#: say which designator it authenticated at the other end).
Connect = Callable[[PeerLocator], Awaitable["trio.abc.Stream | PeerConnection"]]
#: Finds what a swiss number names when ``OcapnNode.swiss`` has nothing for it; also
#: given the designator the netlayer authenticated for the fetching peer (None if none).
Fetch = Callable[[bytes, "str | None"], Any]


class SyrupStream(FramedStream):
    """Syrup values back to back on a trio stream (no length prefix), for the trio driver.

    A ``FramedStream`` in all but the framing, so the driver writes our
    replies without yielding (``send_frames_nowait``) as it does for msgpack.
    """

    def __init__(self, stream: trio.abc.Stream, *, max_frame_size: int) -> None:
        super().__init__(stream, max_frame_size=max_frame_size)
        #: Cuts and decodes in one pass; the profile takes each ``SyrupFrame``'s value as it is.
        self._splitter = SyrupReader(max_value_bytes=max_frame_size, symbols=LABELS)
        #: Frames read but not yet taken by ``receive_frame``.
        self._ready: list[bytes] = []

    @staticmethod
    def _encode(frames: list[bytes]) -> bytes:
        return frames[0] if len(frames) == 1 else b"".join(frames)

    async def receive_frames(self) -> list[bytes]:
        if self._ready:
            frames, self._ready = self._ready, []
            return frames
        splitter = self._splitter
        while True:
            try:
                frames = []
                while (frame := splitter.next_frame()) is not None:
                    frames.append(frame)
            except SyrupError as e:
                raise ProtocolError(R_MALFORMED, str(e)) from None
            if frames:
                return frames
            # FramedStream's read: on a stream with a file descriptor it waits
            # for the fd and reads it, without receive_some's second pass.
            data = await self._read(_READ_SIZE)
            try:
                splitter.feed(data)
            except SyrupError as e:
                raise ProtocolError(R_MALFORMED, str(e)) from None

    async def receive_frame(self) -> bytes:
        if not self._ready:
            self._ready = await self.receive_frames()
        return self._ready.pop(0)

    async def aclose(self) -> None:
        """Half-close and drop what the peer still sends for a moment, then close — whoever aborted.

        The driver half-closes after an abort of ours; this covers the peer's
        abort too. Closing a TCP socket with unread input makes the kernel
        reset the connection: a peer that aborted and goes on writing (the
        suite's abort-before-setup test) would then fail writing instead of
        seeing the end of the stream.
        """
        with trio.CancelScope(shield=True):
            with trio.move_on_after(CLOSE_DRAIN_TIMEOUT):
                await self.half_close(CLOSE_DRAIN_BYTES)
            await super().aclose()


class _Allowance:
    """Failed fetches one may still make, as of ``clock``; see ``FailedFetches``."""

    __slots__ = ("left", "clock")

    def __init__(self, left: float, clock: float) -> None:
        self.left = left
        self.clock = clock

    def refill(self, now: float, burst: int, per_second: float) -> float:
        self.left = min(float(burst), self.left + (now - self.clock) * per_second)
        self.clock = now
        return self.left


class FailedFetches:
    """Failed-fetch allowances that outlive sessions: one per key, at most ``capacity`` kept.

    A key is who a peer is (``("designator", d)``, as the netlayer
    authenticated it) or where it comes from (``("address", a)``), so that
    neither reconnecting nor a fresh key starts a guesser over. A forgotten
    key (least recently charged first) starts again with a full allowance:
    the bound costs an attacker's entry pushed out one burst, never memory.
    """

    def __init__(self, burst: int, per_second: float, capacity: int) -> None:
        self.burst = burst
        self.per_second = per_second
        self.capacity = capacity
        self._allowances: OrderedDict[tuple[str, str], _Allowance] = OrderedDict()

    def __len__(self) -> int:
        return len(self._allowances)

    def left(self, key: tuple[str, str]) -> float:
        """The failed fetches ``key`` may still make now (the full burst for a key not kept)."""
        allowance = self._allowances.get(key)
        if allowance is None:
            return float(self.burst)
        return allowance.refill(trio.current_time(), self.burst, self.per_second)

    def charge(self, key: tuple[str, str], scale: int = 1) -> float:
        """Count one failed fetch against ``key``, whose allowance is ``scale`` times
        the burst and the rate (a wider address group); what is left (below 0: over it)."""
        now = trio.current_time()
        burst = self.burst * scale
        allowance = self._allowances.pop(key, None)
        if allowance is None:
            allowance = _Allowance(float(burst), now)
        allowance.refill(now, burst, self.per_second * scale)
        allowance.left -= 1
        self._allowances[key] = allowance
        while len(self._allowances) > self.capacity:
            self._allowances.popitem(last=False)
        return allowance.left


class _Peer:
    """One session of the node, and what the node keeps about it."""

    def __init__(self, node: OcapnNode, outbound: PeerLocator | None) -> None:
        self.node = node
        #: Where we dialed, for a session we opened; None for one the peer opened.
        self.outbound = outbound
        #: The designator the netlayer authenticated at the other end, if it did.
        self.verified_designator: str | None = None
        #: The other end's address as the netlayer groups it (``PeerConnection.remote_address``), if known.
        self.address: str | None = None
        #: Why this session is refused as soon as it runs (``R_TOO_MANY_SESSIONS``), or None.
        self.refused: str | None = None
        self.profile = OcapnProfile(
            node.location, on_started=node._on_started, on_handoff=node._on_handoff, on_foreign=node._on_foreign
        )
        self.session: Session | None = None
        self.started = trio.Event()
        self.ended = trio.Event()
        #: Handoff counts the other side used with us (exporter role): never twice.
        self.used_counts: set[int] = set()
        #: The next handoff count we use with the other side (receiver role).
        self.next_count = 0
        #: Gifts the other side deposited with us and nobody withdrew yet (exporter role).
        self.gifts: set[tuple[bytes, bytes | int]] = set()
        #: Withdrawals the other side made before their gifts were deposited (exporter role);
        #: one entry per withdrawal, so asking for one gift many times counts many times.
        self.waiting: list[_Withdrawal] = []
        #: Failed fetches this session may still make, whoever the peer is (``MAX_FAILED_FETCHES``).
        self._fetch_allowance = _Allowance(float(node.failed_fetches.burst), trio.current_time())
        self.bootstrap = _Bootstrap(node, self)

    def _designator_key(self) -> list[tuple[str, str]]:
        return [("designator", self.verified_designator)] if self.verified_designator is not None else []

    def _address_keys(self) -> list[tuple[tuple[str, str], int]]:
        """The address groups this peer's failed fetches count in, each with its allowance's scale."""
        return [(("address", group), scale) for group, scale in address_groups(self.address)] if self.address is not None else []

    def may_fetch(self) -> bool:
        """Whether a fetch may be looked up: not while this session or this peer (its designator)
        is over its allowance, from an earlier session say; the session is then aborted.

        An address over its allowance still gets lookups, each session's first
        failure aborting it (``failed_fetch``): other peers behind the same
        address (a NAT) still fetch what they were given, while a guesser
        making a fresh key per session gets one guess per session, each
        costing it a key, a handshake and a connection under the address's cap.
        """
        budgets = self.node.failed_fetches
        left = self._fetch_allowance.refill(trio.current_time(), budgets.burst, budgets.per_second)
        if left >= 0 and all(budgets.left(key) >= 0 for key in self._designator_key()):
            return True
        self._abort_for_fetches()
        return False

    def failed_fetch(self) -> None:
        """Count a failed fetch; past the session's, the peer's or its address's allowance, abort the session."""
        budgets = self.node.failed_fetches
        self._fetch_allowance.refill(trio.current_time(), budgets.burst, budgets.per_second)
        self._fetch_allowance.left -= 1
        left = [self._fetch_allowance.left] + [budgets.charge(key) for key in self._designator_key()]
        left += [budgets.charge(key, scale) for key, scale in self._address_keys()]
        if min(left) < 0:
            self._abort_for_fetches()

    def _abort_for_fetches(self) -> None:
        if self.session is not None and self.session.aborted is None:
            log.info("%s: aborting a session whose peer failed too many fetches", self.node.name)
            self.session.abort(f"{R_TOO_MANY_FAILED_FETCHES}: more than {self.node.failed_fetches.burst} failed fetches")

    def location(self) -> PeerLocator | None:
        """The other side's location: as it signed it once started, else where we dialed."""
        if self.profile.peer is not None:
            return self.profile.peer.location
        return self.outbound


class _Withdrawal:
    """A withdraw-gift waiting for its deposit: who asked, the promise it was answered, and its deadline."""

    def __init__(self, key: tuple[bytes, Any], receiver: _Peer, resolver: Any) -> None:
        self.key = key
        self.receiver = receiver
        self.resolver = resolver
        #: Cancelled when the withdrawal is settled; its deadline breaks it (``GIFT_WAIT_TIMEOUT``).
        self.timer = trio.CancelScope(deadline=trio.current_time() + GIFT_WAIT_TIMEOUT)
        self.settled = False


class OcapnNode:
    """The sessions, swiss numbers and gifts of one OCapN location. See the module docstring."""

    def __init__(
        self,
        location: PeerLocator,
        connect: Connect | None = None,
        *,
        name: str = "ocapn",
        fetch: Fetch | None = None,
        budget: Budget | None = None,
        max_sessions_per_peer: int | None = None,
        max_failed_fetches: int | None = None,
        failed_fetches_per_second: float | None = None,
        max_fetch_budgets: int | None = None,
    ) -> None:
        """``max_sessions_per_peer``, ``max_failed_fetches``, ``failed_fetches_per_second`` and
        ``max_fetch_budgets`` default to the module's constants of those names (upper case)."""
        self.location = location
        #: The budget every session's tables are charged to (None: only per-session limits).
        self.budget = budget
        self.name = name
        self._connect = connect
        #: Asked by the bootstrap's ``fetch`` for swiss numbers ``swiss`` does not hold, with the
        #: fetching peer's authenticated designator (a value, or a promise for it; raising breaks the fetch).
        self.fetch = fetch
        #: Objects offered to any peer that knows their swiss number (``fetch``).
        self.swiss: dict[bytes, Any] = {}
        self._peers: list[_Peer] = []
        self._by_profile: dict[int, _Peer] = {}
        self._by_session: dict[int, _Peer] = {}
        self._gifts: dict[tuple[bytes, Any], Any] = {}
        self._waiting: dict[tuple[bytes, Any], list[_Withdrawal]] = {}
        self._nursery: trio.Nursery | None = None
        #: Sessions one authenticated designator may have opened to us at once.
        self.max_sessions_per_peer = MAX_SESSIONS_PER_PEER if max_sessions_per_peer is None else max_sessions_per_peer
        #: Failed-fetch allowances by designator and by address, across sessions.
        self.failed_fetches = FailedFetches(
            MAX_FAILED_FETCHES if max_failed_fetches is None else max_failed_fetches,
            FAILED_FETCHES_PER_SECOND if failed_fetches_per_second is None else failed_fetches_per_second,
            MAX_FETCH_BUDGETS if max_fetch_budgets is None else max_fetch_budgets,
        )

    # -- running ------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the node's tasks (sessions, dials) until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        if self._nursery is None:
            raise RuntimeError("the OCapN node is not running")
        self._nursery.start_soon(fn, *args)

    async def serve_stream(
        self, stream: trio.abc.Stream, *, peer_designator: str | None = None, peer_address: str | None = None
    ) -> None:
        """Run one session the peer opened over ``stream`` until it ends.

        ``peer_designator`` is the designator the netlayer authenticated at the
        other end (``PeerConnection.peer_designator``), if any: a peer whose
        start-session claims another location is then refused, and one that
        has ``max_sessions_per_peer`` sessions open already is aborted at once
        (``too-many-sessions``). ``peer_address`` is where it connects from
        (``PeerConnection.remote_address``); failed fetches count against
        both (``FailedFetches``).
        """
        peer = self._add_peer(None, peer_designator, peer_address)
        if peer_designator is not None:
            held = sum(
                1
                for other in self._peers
                if other is not peer and other.outbound is None and other.verified_designator == peer_designator
                and other.refused is None and not other.ended.is_set()
            )  # fmt: skip
            if held >= self.max_sessions_per_peer:
                log.info("%s: refusing a session: its peer has %d open already", self.name, held)
                peer.refused = f"{R_TOO_MANY_SESSIONS}: this peer has {held} sessions open here already (at most {self.max_sessions_per_peer})"
        await self._serve(stream, peer)

    async def serve_connection(self, connection: PeerConnection) -> None:
        """``serve_stream`` for a netlayer's incoming connection (a netlayer ``serve`` handler)."""
        await self.serve_stream(
            connection.stream, peer_designator=connection.peer_designator, peer_address=connection.remote_address
        )

    def _add_peer(self, outbound: PeerLocator | None, verified: str | None, address: str | None) -> _Peer:
        peer = _Peer(self, outbound)
        peer.verified_designator = verified
        peer.address = address
        self._peers.append(peer)
        self._by_profile[id(peer.profile)] = peer
        return peer

    async def _serve(self, stream: trio.abc.Stream, peer: _Peer) -> None:
        try:
            transport = SyrupStream(stream, max_frame_size=MAX_FRAME_SIZE)
            async with open_connection(
                transport, peer.bootstrap, name=self.name, profile=peer.profile, budget=self.budget
            ) as conn:
                peer.session = conn.session
                self._by_session[id(conn.session)] = peer
                if peer.refused is not None:
                    conn.session.abort(peer.refused)
                await conn.wait_closed()
        finally:
            peer.ended.set()
            self._forget(peer)
            self._peers.remove(peer)
            self._by_profile.pop(id(peer.profile), None)
            if peer.session is not None:
                self._by_session.pop(id(peer.session), None)

    def _started_session(self, location: PeerLocator) -> Session | None:
        for peer in reversed(self._peers):
            there = peer.location()
            if there is not None and there.same_peer(location) and peer.started.is_set():
                if peer.session is not None and peer.session.aborted is None and not peer.ended.is_set():
                    return peer.session
        return None

    async def session_for(self, location: PeerLocator) -> Session:
        """A started session to ``location``: one we have, or a new one dialed through ``connect``.

        If our dial loses a crossed hello, the session the peer opened (the
        winner) is returned instead.
        """
        session = self._started_session(location)
        if session is not None:
            return session
        if self._connect is None:
            raise ConnectionError(f"no session to {location.designator} and no netlayer to dial it")
        dialed = await self._connect(location)
        if isinstance(dialed, PeerConnection):
            stream, verified, address = dialed.stream, dialed.peer_designator, dialed.remote_address
        else:
            stream, verified, address = dialed, None, None
        peer = self._add_peer(location, verified, address)
        self._spawn(self._serve, stream, peer)
        async with trio.open_nursery() as watchers:

            async def first(event: trio.Event) -> None:
                await event.wait()
                watchers.cancel_scope.cancel()

            watchers.start_soon(first, peer.started)
            watchers.start_soon(first, peer.ended)
        if peer.started.is_set() and peer.session is not None and peer.session.aborted is None:
            return peer.session
        session = self._started_session(location)
        if session is None:
            aborted = peer.session.aborted if peer.session is not None else None
            why = f" ({aborted})" if aborted is not None else ""
            raise ConnectionError(f"the session to {location.designator} ended before it started{why}")
        return session

    def enliven(self, sturdyref: SturdyRef) -> Promise:
        """A promise for the object ``sturdyref`` names (its peer's ``fetch``)."""
        promise, resolver = make_promise_kit()

        async def fetch() -> None:
            try:
                session = await self.session_for(sturdyref.peer)
            except (ConnectionError, OSError) as e:
                resolver.reject(RemoteError("ConnectionError", str(e)))
                return
            resolver.resolve(E(session.bootstrap()).fetch(sturdyref.swiss_num))

        self._spawn(fetch)
        return promise

    async def wait_ended(self, session: Session) -> None:
        """Return once ``session`` (one of this node's) has ended."""
        peer = self._by_session.get(id(session))
        if peer is not None:
            await peer.ended.wait()

    def sessions(self) -> list[dict[str, Any]]:
        """The node's sessions, for inspection: who, over what, in which state, and the session's counts."""
        report = []
        for peer in list(self._peers):
            there = peer.location()
            state = "ended" if peer.ended.is_set() else "started" if peer.started.is_set() else "starting"
            stats = peer.session.stats() if peer.session is not None else {}
            report.append({
                "designator": there.designator if there is not None else None,
                "netlayer": there.transport if there is not None else None,
                "direction": "outbound" if peer.outbound is not None else "inbound",
                "authenticated": peer.verified_designator is not None,
                "state": state,
                **stats,
            })
        return report

    # -- hooks the profile calls ------------------------------------------------------------
    def _on_started(self, profile: OcapnProfile) -> None:
        """The peer's start-session checked: settle a crossed hello, then mark the session started."""
        peer = self._by_profile[id(profile)]
        assert profile.peer is not None
        claimed = profile.peer.location.designator
        if peer.verified_designator is not None and claimed != peer.verified_designator:
            raise ProtocolError(R_BAD_FIELD, "the location's designator is not the one the netlayer authenticated")
        if peer.outbound is not None and not profile.peer.location.same_peer(peer.outbound):
            raise ProtocolError(R_BAD_FIELD, "the peer we dialed signed another location")
        for other in list(self._peers):
            if other is peer or other.ended.is_set() or (other.outbound is None) == (peer.outbound is None):
                continue
            there = other.location()
            if there is None or not there.same_peer(profile.peer.location):
                continue
            # The ID of each connection's initiator: ours on the one we dialed, theirs on the other.
            dialed, accepted = (peer, other) if peer.outbound is not None else (other, peer)
            ours = public_identifier(dialed.profile.key.public_key())
            assert accepted.profile.peer is not None or accepted is peer
            their_profile = accepted.profile.peer
            if their_profile is None:
                continue
            theirs = their_profile.peer_side
            loser = accepted if ours > theirs else dialed
            if loser is peer:
                raise ProtocolError(R_CROSSED_HELLOS, "a session with this peer is already being opened")
            if loser.session is not None:
                loser.session.abort(R_CROSSED_HELLOS)
        peer.started.set()

    def _on_handoff(self, profile: OcapnProfile, envelope: Record) -> Any:
        """A signed handoff in a call's arguments: a give becomes a promise for the gift (receiver role)."""
        try:
            signed, _ = open_envelope(envelope)
        except SignatureError as e:
            raise ProtocolError(R_MALFORMED, str(e)) from None
        if type(signed) is not Record or signed.label != HANDOFF_GIVE:
            return envelope  # a handoff-receive, for withdraw-gift to check
        peer = self._by_profile[id(profile)]
        promise, resolver = make_promise_kit()
        try:
            give = check_handoff_give(envelope, profile.key.public_key())
        except SignatureError as e:
            resolver.reject(RemoteError("HandoffError", str(e)))
            return promise

        async def withdraw() -> None:
            try:
                exporter = await self.session_for(give.exporter_location)
            except (ConnectionError, OSError) as e:
                resolver.reject(RemoteError("ConnectionError", str(e)))
                return
            there = self._by_session[id(exporter)]
            assert there.profile.peer is not None
            count = there.next_count
            there.next_count += 1
            signed_receive = make_handoff_receive(
                peer.profile.key,
                envelope,
                receiving_session=there.profile.peer.session_id,
                receiving_side=there.profile.peer.our_side,
                handoff_count=count,
            )
            resolver.resolve(E(exporter.bootstrap()).withdraw_gift(signed_receive))

        self._spawn(withdraw)
        return promise

    def _on_foreign(self, profile: OcapnProfile, obj: Any) -> Any:
        """A reference imported from another of our sessions, passed on: hand it off (gifter role).

        A reference is an object or a promise (OCapN's Model), so a promise
        the exporter exported to us is handed off too, deposited as the
        ``desc:export`` it is there. The answer to a call of ours is not:
        depositing it would put a ``desc:answer`` among deposit-gift's
        arguments, which the spec defines only as a message's target. That
        one is exported as our own promise and forwarded (docs/ocapn.md).
        """
        if type(obj) is not RemoteRef and not (type(obj) is RemotePromise and obj._kind == "import"):
            return None
        exporter = self._by_session.get(id(obj._session))
        receiver = self._by_profile.get(id(profile))
        if exporter is None or receiver is None or exporter is receiver:
            return None
        if exporter.profile.peer is None or profile.peer is None or exporter.session is None:
            return None
        gift_id = secrets.token_bytes(16)
        E.send_only(exporter.session.bootstrap()).deposit_gift(gift_id, obj)
        return make_handoff_give(
            exporter.profile.key,
            receiver_key=profile.peer.key,
            exporter_location=exporter.profile.peer.location,
            session=exporter.profile.peer.session_id,
            gifter_side=exporter.profile.peer.our_side,
            gift_id=gift_id,
        )

    # -- gifts (exporter role) ----------------------------------------------------------------
    def _deposit(self, key: tuple[bytes, Any], gift: Any, gifter: _Peer) -> None:
        waiting = self._waiting.get(key)
        if waiting:
            for withdrawal in list(waiting):
                self._settle(withdrawal, gift=gift)
            return
        if key in self._gifts:
            raise ValueError("a gift with that id is already deposited in this session")
        if len(gifter.gifts) >= MAX_PENDING_GIFTS:
            raise ValueError(f"more than {MAX_PENDING_GIFTS} gifts are waiting to be withdrawn in this session")
        self._gifts[key] = gift
        gifter.gifts.add(key)

    def _withdraw(self, key: tuple[bytes, Any], receiver: _Peer) -> Any:
        """The gift under ``key``, or a promise for it that breaks if it cannot come.

        A withdrawal may arrive before its deposit (the two travel different
        paths); it then waits — until the deposit, the end of the gifter's
        session or of the receiver's, or ``GIFT_WAIT_TIMEOUT``, whichever is
        first. At most ``MAX_PENDING_GIFTS`` withdrawals of one session wait.
        """
        if key in self._gifts:
            for peer in self._peers:
                peer.gifts.discard(key)
            return self._gifts.pop(key)
        if len(receiver.waiting) >= MAX_PENDING_GIFTS:
            raise ValueError(f"more than {MAX_PENDING_GIFTS} withdrawals are waiting for their gifts in this session")
        promise, resolver = make_promise_kit()
        withdrawal = _Withdrawal(key, receiver, resolver)
        self._waiting.setdefault(key, []).append(withdrawal)
        receiver.waiting.append(withdrawal)
        self._spawn(self._expire, withdrawal)
        return promise

    async def _expire(self, withdrawal: _Withdrawal) -> None:
        with withdrawal.timer:
            await trio.sleep_forever()
        if not withdrawal.settled:
            self._settle(withdrawal, error=f"no gift was deposited within {GIFT_WAIT_TIMEOUT:g} seconds")

    def _settle(self, withdrawal: _Withdrawal, *, gift: Any = None, error: str | None = None) -> None:
        """Answer a waiting withdrawal with its gift, or break it with ``error``; forget it either way."""
        if withdrawal.settled:
            return
        withdrawal.settled = True
        withdrawal.timer.cancel()
        left = [w for w in self._waiting.get(withdrawal.key, []) if w is not withdrawal]
        if left:
            self._waiting[withdrawal.key] = left
        else:
            self._waiting.pop(withdrawal.key, None)
        withdrawal.receiver.waiting.remove(withdrawal)
        if error is None:
            withdrawal.resolver.resolve(gift)
        else:
            withdrawal.resolver.reject(RemoteError("HandoffError", error))

    def _forget(self, peer: _Peer) -> None:
        """A session ended: its gifts go; its withdrawals, and those waiting for its gifts, break."""
        for key in peer.gifts:
            self._gifts.pop(key, None)
        for withdrawal in list(peer.waiting):
            self._settle(withdrawal, error="the session ended before the gift was deposited")
        if peer.profile.peer is not None:
            session_id = peer.profile.peer.session_id
            for key in [k for k in self._waiting if k[0] == session_id]:
                for withdrawal in list(self._waiting.get(key, [])):
                    self._settle(withdrawal, error="the gifter's session ended before it deposited the gift")

    def _gifter_key(self, session_id: bytes) -> Any:
        for peer in self._peers:
            info = peer.profile.peer
            if info is not None and info.session_id == session_id and not peer.ended.is_set():
                return info.key
        return None


@far("OcapnBootstrap")
class _Bootstrap:
    """What a peer reaches at export position 0 of one session: fetch, deposit-gift, withdraw-gift."""

    def __init__(self, node: OcapnNode, peer: _Peer) -> None:
        self._node = node
        self._peer = peer

    def fetch(self, swiss: Any) -> Any:
        """The object at ``swiss``; a failure counts against the session and the peer (``MAX_FAILED_FETCHES``).

        A peer out of failed fetches gets no lookup at all: its session is aborted.
        """
        if not self._peer.may_fetch():
            raise KeyError("too many failed fetches")
        try:
            return self._fetch(swiss)
        except Exception:
            self._peer.failed_fetch()
            raise

    def _fetch(self, swiss: Any) -> Any:
        if type(swiss) is str:
            swiss = swiss.encode("utf-8")
        if type(swiss) is not bytes:
            raise TypeError("fetch takes a swiss number (a bytestring)")
        obj = self._node.swiss.get(swiss)
        if obj is None:
            if self._node.fetch is not None:
                return self._node.fetch(swiss, self._peer.verified_designator)
            raise KeyError("no object has that swiss number")
        return obj

    def deposit_gift(self, gift_id: Any, gift: Any) -> None:
        info = self._peer.profile.peer
        if info is None:
            raise RuntimeError("the session has not started")
        if not is_gift_id(gift_id):
            raise TypeError(GIFT_ID_FORMS)
        self._node._deposit((info.session_id, gift_id), gift, self._peer)

    def withdraw_gift(self, signed_receive: Any) -> Any:
        info = self._peer.profile.peer
        if info is None:
            raise RuntimeError("the session has not started")
        try:
            give, receive = check_handoff_receive(
                signed_receive,
                gifter_key_for_session=self._node._gifter_key,
                session_id=info.session_id,
                receiver_side=info.peer_side,
                used_counts=self._peer.used_counts,
                exporter_location=self._node.location,
            )
        except (HandoffError, SignatureError) as e:
            raise RemoteError("HandoffError", str(e)) from None
        self._peer.used_counts.add(receive.handoff_count)
        return self._node._withdraw((give.session, give.gift_id), self._peer)


