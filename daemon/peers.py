"""Daemons as OCapN peers: the daemon's identity and listener, its shares, and its remote references.

- **Identity.** One long-lived Ed25519 key per daemon, ``state/ocapn-ed25519.key``
  (32 raw bytes, mode 0600, made on first use; a key file others may read is
  refused). Its designator, the key in base32, names the daemon on the
  ``tls-ed25519`` netlayer.
- **Listener.** ``Network.listen`` serves OCapN sessions (the OCapN wire
  profile, ``captp.ocapn_node``) on a TCP port and records where in the
  database (meta ``ocapn_listen``, with the port actually bound), so the
  daemon listens there again after a restart and the sturdyrefs it gave out
  still reach it.
- **Shares.** A ``share`` formula maps a fresh swiss number (32 random bytes,
  base64url) to a value's formula; the bootstrap object's ``fetch(swiss)``
  provides that formula: copy data as is, an object behind a ``Caretaker``.
  Revoking deletes the formula and revokes the caretaker: later fetches
  fail, and so do calls through references already fetched. Each share
  records which peers (designators) fetched it, when first and last, and
  how often (``share_fetches`` table, at most ``MAX_FETCHERS_PER_SHARE``
  peers a share), so whoever revokes it sees who holds it. A peer's first
  fetch of a share is answered only once that record is written, and
  refused if it cannot be.
- **Remote references.** A ``peer`` formula is a peer's locator; its
  incarnation is a started session (dialed on first use, shared by every
  reference to that peer, and cancelled when the session ends, so the next
  use dials again). A ``sturdyref`` formula is a peer formula and a swiss
  number; its incarnation is what the peer's ``fetch`` answers, and it dies
  with its peer's session. Recipes persist, sessions do not.

Invitations and mail between daemons are in ``peer_mail``. The cryptography
and OCapN modules are imported on first use only: a daemon that never peers
never loads them.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import secrets
import socket
import stat
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import E, Promise, RemoteError, RemoteRef, far, is_remotable, make_promise_kit
from ocapd.captp.eventual import eventual_send

from . import formulas as F
from .kernel import Cancelled

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ocapd.captp.ocapn_locators import PeerLocator
    from ocapd.captp.ocapn_node import OcapnNode
    from ocapd.captp.ocapn_tls import TlsNetlayer
    from ocapd.captp.session import Session

    from .kernel import Incarnation, Kernel, Txn

__all__ = [
    "KEY_FILE", "LISTEN_META", "MAX_FETCHERS_PER_SHARE", "NETLAYERS", "Caretaker", "Network", "NetworkControl", "Peer", "PeerError",
    "PeerUnreachable", "ShareFetches", "advertised_address", "is_unspecified", "make_peer", "short", "make_share", "make_sturdyref",
    "network_of", "new_swiss", "resume_listening", "stage_peer", "stage_share", "stage_unshare", "sturdyref_parts",
]  # fmt: skip

log = logging.getLogger("ocapd.peers")

#: The daemon's OCapN identity, in the state folder.
KEY_FILE = "ocapn-ed25519.key"
#: Where the listener's settings are kept (database meta): JSON {netlayer, host, port, advertise}.
LISTEN_META = "ocapn_listen"
#: Netlayers a daemon listens on and dials. ``tcp-testing-only`` authenticates
#: nothing, so daemons never use it: it is for the conformance suite.
NETLAYERS = ("tls-ed25519",)
#: Random bytes in a swiss number: as a formula id, unguessable.
SWISS_BYTES = 32
#: Peers remembered per share as having fetched it, the one that fetched
#: least recently forgotten first. A share usually goes to one peer, an
#: invitation's to exactly one; a URI posted widely is fetched by many, and
#: 16 rows (about 2 KiB) then show the latest holders, not all of them.
MAX_FETCHERS_PER_SHARE = 16


class PeerError(Exception):
    """A peering operation that cannot be done, said in one line."""


#: What ``--advertise`` may name as a host: a DNS name or an IPv4 address
#: (letters, digits, ``-``, ``.``; at most 253), or an IPv6 address in brackets.
_HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?\Z")
_FIX = "add --advertise HOST[:PORT], the address peers dial to reach it"


def is_unspecified(host: str) -> bool:
    """Whether ``host`` means "every address here" (0.0.0.0, ::, and spellings of them such as 0):
    an address to listen on, never one a peer can dial."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        pass
    try:
        return socket.inet_aton(host) == b"\0\0\0\0"  # the short forms a resolver reads, "0", "0.0"
    except OSError:
        return False


def advertised_address(advertise: str | None, host: str, port: int) -> tuple[str, int]:
    """The host and port written into URIs: ``advertise`` (``HOST``, ``HOST:PORT``,
    ``[IPv6]`` or ``[IPv6]:PORT``; without a port, the bound one), else where we listen.

    Raises ``PeerError`` (one line, saying how to fix it) for an address a
    peer could not dial — above all the unspecified 0.0.0.0 and ::.
    """
    if advertise is None:
        if is_unspecified(host):
            raise PeerError(f"{host} listens on every address of this machine, but peers cannot dial it; {_FIX}")
        return host, port
    text, shown = advertise, repr(advertise)
    if text.startswith("["):
        literal, sep, rest = text[1:].partition("]")
        try:
            name = str(ipaddress.IPv6Address(literal)) if sep else ""
        except ValueError:
            name = ""
        if not name or (rest and not rest.startswith(":")):
            raise PeerError(f"--advertise {shown}: write an IPv6 address as [ADDRESS] or [ADDRESS]:PORT")
        port_text: str | None = rest[1:] if rest else None
    elif text.count(":") > 1:
        try:
            name, port_text = str(ipaddress.IPv6Address(text)), None
        except ValueError:
            raise PeerError(f"--advertise {shown}: not an IPv6 address; give HOST, HOST:PORT or [IPv6]:PORT") from None
    else:
        name, _, after = text.partition(":")
        port_text = after if ":" in text else None
        if not _HOST_NAME.match(name):
            raise PeerError(f"--advertise {shown}: not a host name or address; give HOST, HOST:PORT or [IPv6]:PORT")
    if port_text is not None:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise PeerError(f"--advertise {shown}: the port is a number from 1 to 65535")
        port = int(port_text)
    if is_unspecified(name):
        raise PeerError(f"--advertise {shown} is no address a peer can dial; {_FIX}")
    return name, port


class PeerUnreachable(PeerError):
    """A peer could not be dialed, or its session could not start."""


def new_swiss() -> str:
    """A fresh swiss number, as URI-safe text (its bytes are what ``fetch`` takes)."""
    return secrets.token_urlsafe(SWISS_BYTES)


def load_or_create_key(path: os.PathLike[str] | str) -> Ed25519PrivateKey:
    """The key in ``path`` (32 raw bytes), made (mode 0600) if there is none; refused if others may read it."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        key = Ed25519PrivateKey.generate()
        raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        # Written whole under a temporary name, then linked in: a crash never
        # leaves a short key, and of two daemons' first uses one key wins.
        temporary = f"{os.fspath(path)}.{secrets.token_hex(8)}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            os.write(fd, raw)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(temporary, path)
        except FileExistsError:
            return load_or_create_key(path)
        finally:
            os.unlink(temporary)
        return key
    try:
        mode = os.fstat(fd).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise PeerError(f"{path} may be read by others (mode {stat.S_IMODE(mode):o}); make it 0600 (chmod 600)")
        raw = os.read(fd, 64)
    finally:
        os.close(fd)
    if len(raw) != 32:
        raise PeerError(f"{path} is not an Ed25519 key (32 bytes); move it away to make a new identity")
    return Ed25519PrivateKey.from_private_bytes(raw)


class ShareFetches:
    """Which peers fetched each share of the daemon: in memory, written to the database soon after.

    At most ``MAX_FETCHERS_PER_SHARE`` peers a share, the one that fetched
    least recently forgotten first; a share's record goes with its formula.
    """

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        #: Share id -> designator -> {peer, first, last, count}; loaded on first use.
        self._fetchers: dict[str, dict[str, dict[str, Any]]] | None = None
        #: (share id, designator) recorded in memory and not yet written; a writer task runs while any are.
        self._unwritten: set[tuple[str, str]] = set()
        self._writing = False
        #: First fetches of a share by a peer, waiting for their record to be written.
        self._first: dict[tuple[str, str], FirstFetch] = {}

    def _fetch_records(self) -> dict[str, dict[str, dict[str, Any]]]:
        if self._fetchers is None:
            loaded = self._kernel.db.load_share_fetches()
            self._fetchers = {share: {r["peer"]: r for r in records} for share, records in loaded.items()}
        return self._fetchers

    def fetched_by(self, share_id: str) -> list[dict[str, Any]]:
        """The peers that fetched a share: [{peer, first, last, count}] (times in seconds since the epoch), latest first."""
        records = self._fetch_records().get(share_id, {})
        return sorted((dict(r) for r in records.values()), key=lambda r: (-r["last"], r["peer"]))

    def holders(self) -> list[dict[str, Any]]:
        """Each peer that fetched one of the shares that still exist: {peer, shares, last}, latest first."""
        by_peer: dict[str, dict[str, Any]] = {}
        for share_id, records in self._fetch_records().items():
            if share_id not in self._kernel.formulas:
                continue
            for peer, record in records.items():
                held = by_peer.setdefault(peer, {"peer": peer, "shares": 0, "last": record["last"]})
                held["shares"] += 1
                held["last"] = max(held["last"], record["last"])
        return sorted(by_peer.values(), key=lambda h: (-h["last"], h["peer"]))

    def record(self, share_id: str, peer: str) -> FirstFetch | None:
        """Note that ``peer`` fetched the share; written to the database soon after (``_write``).

        For the peer's first fetch of the share this returns a ``FirstFetch``,
        done once the record is written: the fetch is answered only then, so
        that no peer holds a share its record does not name, even after a
        crash. Later fetches (``last``, ``count``) are written lazily.
        """
        now = time.time()
        records = self._fetch_records().setdefault(share_id, {})
        record = records.get(peer)
        # Fetches made while the first one's record is unwritten wait for it too.
        first = self._first.get((share_id, peer))
        if record is None:
            if first is None:
                first = self._first[(share_id, peer)] = FirstFetch()
            record = records[peer] = {"peer": peer, "first": now, "last": now, "count": 0}
            if len(records) > MAX_FETCHERS_PER_SHARE:
                gone = min((r for r in records.values() if r is not record), key=lambda r: r["last"])
                del records[gone["peer"]]
                self._unwritten.add((share_id, gone["peer"]))
        record["last"] = now
        record["count"] += 1
        self._unwritten.add((share_id, peer))
        if not self._writing:
            self._writing = True
            self._kernel.nursery.start_soon(self._write)
        return first

    async def _write(self) -> None:
        """Write what ``record`` noted, as one batch per round: a peer fetching
        in a loop costs one write per commit, not one per fetch."""
        keys: set[tuple[str, str]] = set()
        try:
            while self._unwritten:
                keys, self._unwritten = self._unwritten, set()
                batch = self._kernel.db.batch()
                for share_id, peer in sorted(keys):
                    record = self._fetch_records().get(share_id, {}).get(peer)
                    if record is None:
                        batch.delete_share_fetch(share_id, peer)
                    elif share_id in self._kernel.formulas:  # not revoked meanwhile
                        batch.put_share_fetch(share_id, peer, record["first"], record["last"], record["count"])
                with trio.CancelScope(shield=True):  # a fetch answered is recorded, also at shutdown
                    await self._kernel.db.commit(batch)
                for key in keys:
                    first = self._first.pop(key, None)
                    if first is not None:
                        first.ok = True
                        first.done.set()
                keys = set()
        except Exception as e:
            log.warning("could not record which peers fetched a share: %s", e)
            self._unwritten |= keys  # written with the next fetch's round
        finally:
            self._writing = False
            # First fetches whose record was not written are refused (``FirstFetch.ok`` stays
            # False); every fetch of that share by that peer so far waited on it, so the peer
            # holds nothing and its record goes.
            for (share_id, peer), first in self._first.items():
                self._fetch_records().get(share_id, {}).pop(peer, None)
                self._unwritten.discard((share_id, peer))
                first.done.set()
            self._first.clear()

    def forget(self, share_id: str) -> None:
        """A share is gone (its rows go with its formula)."""
        self._fetch_records().pop(share_id, None)



class FirstFetch:
    """A peer's first fetch of a share: ``done`` is set once its record is written (``ok``) or failed to be."""

    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.ok = False


class Network:
    """The daemon's OCapN node, its identity and (when listening) its listener. One per daemon."""

    def __init__(self, kernel: Kernel, key: Ed25519PrivateKey) -> None:
        from ocapd.captp.ocapn_locators import PeerLocator
        from ocapd.captp.ocapn_node import OcapnNode
        from ocapd.captp.ocapn_tls import TLS_NETLAYER, TlsNetlayer

        from .limits import DaemonLimits

        self._kernel = kernel
        limits = self._limits = kernel.services.limits or DaemonLimits()
        self.netlayer: TlsNetlayer = TlsNetlayer(key, max_connections_per_address=limits.peer_connections_per_address)
        self.designator = self.netlayer.designator
        # Until it listens, the daemon's location says who it is but not where.
        self._unlisted = PeerLocator(self.designator, TLS_NETLAYER, {})
        # Peers are untrusted: their sessions share the budget of workers' and gateway sessions.
        self.node: OcapnNode = OcapnNode(
            self._unlisted,
            self.netlayer.connect,
            name="ocapn",
            fetch=self._fetch,
            budget=kernel.services.budget,
            max_sessions_per_peer=limits.peer_sessions,
            max_failed_fetches=limits.peer_failed_fetches,
            failed_fetches_per_second=limits.peer_failed_fetches_per_second,
            max_fetch_budgets=limits.peer_fetch_budgets,
        )
        self._listener: trio.CancelScope | None = None
        self._closed = trio.Event()
        self.listening: PeerLocator | None = None
        #: Where the listener is bound (``HOST:PORT``), and the ``--advertise`` it was given.
        self._address: str | None = None
        self._advertise: str | None = None
        self._swiss: dict[bytes, str] | None = None
        #: Which peers fetched each share.
        self.fetches = ShareFetches(kernel)

    # -- listening --------------------------------------------------------------------
    async def listen(
        self, netlayer: str, host: str = "127.0.0.1", port: int = 0, advertise: str | None = None
    ) -> PeerLocator:
        """Listen for peers on ``host:port`` (0: a free port) and record it; returns our location.

        The location (in every URI the daemon prints) carries the address
        ``advertise`` names (``advertised_address``), else ``host`` and the
        bound port. An address peers cannot dial is refused before anything
        listens.
        """
        from ocapd.captp.ocapn_locators import PeerLocator
        from ocapd.captp.ocapn_netlayers import NetlayerError

        if netlayer not in NETLAYERS:
            raise PeerError(f"unknown netlayer {netlayer!r}; daemons peer over {', '.join(NETLAYERS)}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise PeerError("the port is a number from 0 to 65535 (0: any free port)")
        if advertise is not None and not isinstance(advertise, str):
            raise PeerError("--advertise is HOST[:PORT]")
        advertised_address(advertise, host, port or 1)  # refuse before listening
        if self._listener is not None:
            await self.stop(forget=False)

        closed = trio.Event()

        async def serve(task_status: trio.TaskStatus[PeerLocator]) -> None:
            try:
                with trio.CancelScope() as scope:
                    self._listener = scope
                    await self.netlayer.serve(self.node.serve_connection, host, port, task_status=task_status)
            finally:
                closed.set()

        self._closed = closed

        try:
            location: PeerLocator = await self._kernel.nursery.start(serve)
        except (OSError, NetlayerError) as e:
            self._listener = None
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise PeerError(f"cannot listen on {host}:{port}: {reason}") from None
        bound = int(location.hints["port"])
        there, there_port = advertised_address(advertise, host, bound)
        location = PeerLocator(location.designator, location.transport, {**location.hints, "host": there, "port": str(there_port)})
        self.listening = location
        self._address = f"[{host}]:{bound}" if ":" in host else f"{host}:{bound}"
        self._advertise = advertise
        self.node.location = location
        settings = {"netlayer": netlayer, "host": host, "port": bound, "advertise": advertise}
        await self._kernel.db.set_meta(LISTEN_META, json.dumps(settings))
        log.info("listening for OCapN peers at %s", location.to_uri())
        return location

    async def stop(self, *, forget: bool = True) -> bool:
        """Stop listening (sessions already open go on); ``forget``: not again after a restart."""
        was = self._listener is not None
        if self._listener is not None:
            self._listener.cancel()
            self._listener = None
            await self._closed.wait()  # the port is free again when this returns
        self.listening = None
        self.node.location = self._unlisted
        if forget:
            await self._kernel.db.set_meta(LISTEN_META, "")
        return was

    def show(self) -> dict[str, Any]:
        listening = self.listening
        return {
            "designator": self.designator,
            "netlayer": listening.transport if listening is not None else None,
            "listening": listening is not None,
            "uri": listening.to_uri() if listening is not None else None,
            "address": self._address if listening is not None else None,
            "advertise": self._advertise if listening is not None else None,
            "sessions": self.node.sessions(),
            # The bounds peers meet (``OCAPD_LIMITS``), so an operator sees why a peer was cut off.
            "limits": {f.name: getattr(self._limits, f.name) for f in fields(self._limits) if f.name.startswith("peer_")},
        }

    # -- shares ------------------------------------------------------------------------
    def _index(self) -> dict[bytes, str]:
        if self._swiss is None:
            self._swiss = {
                f.swiss.encode("ascii"): fid for fid, f in self._kernel.formulas.items() if isinstance(f, F.ShareFormula)
            }
        return self._swiss

    def shared(self, swiss: str, fid: str) -> None:
        self._index()[swiss.encode("ascii")] = fid

    def unshared(self, swiss: str) -> None:
        self._index().pop(swiss.encode("ascii"), None)

    def sturdyref_uri(self, swiss: str) -> str:
        from ocapd.captp.ocapn_locators import SturdyRef

        if self.listening is None:
            raise PeerError("this daemon does not listen for peers; run `ocapd network listen --netlayer tls-ed25519` first")
        return SturdyRef(self.listening, swiss.encode("ascii")).to_uri()

    def _fetch(self, swiss: bytes, peer: str | None = None) -> Any:
        """The bootstrap's ``fetch`` for swiss numbers of share formulas: a promise for the shared value.

        ``peer``, the designator the netlayer authenticated, is recorded with the share.
        """
        fid = self._index().get(swiss)
        if fid is None:
            raise KeyError("no object has that swiss number")
        first = self.fetches.record(fid, peer) if peer is not None else None
        promise, resolver = make_promise_kit()

        async def provide() -> None:
            try:
                if first is not None:
                    # A peer's first fetch is answered once the record naming it is written.
                    await first.done.wait()
                    if not first.ok:
                        raise PeerError("the record of who fetched it could not be written")
                resolver.resolve(await self._kernel.provide(fid))
            except Exception as e:
                # The peer hears that it failed, not the daemon's details.
                log.info("a shared value (share %s) was not given to peer %s: %s", fid[:16], short(peer or "?"), e)
                resolver.reject(RemoteError("Error", "the shared value is not available"))

        self._kernel.nursery.start_soon(provide)
        return promise


async def network_of(kernel: Kernel) -> Network:
    """The daemon's ``Network``, made (and its node started) on first use."""
    network: Network | None = kernel.services.network
    if network is None:
        paths = kernel.services.paths
        assert paths is not None  # run_daemon sets it first
        key = await trio.to_thread.run_sync(load_or_create_key, paths.state / KEY_FILE)
        if kernel.services.network is None:  # nobody made it while we read the key
            network = Network(kernel, key)
            await kernel.nursery.start(network.node.run)
            kernel.services.network = network
        network = kernel.services.network
    assert network is not None
    return network


async def resume_listening(kernel: Kernel) -> None:
    """Listen again where the daemon listened before it stopped (start-up, after ready)."""
    raw = kernel.db.get_meta(LISTEN_META)
    if not raw:
        return
    try:
        settings = json.loads(raw)
        network = await network_of(kernel)
        await network.listen(settings["netlayer"], settings["host"], settings["port"], settings.get("advertise"))
    except (PeerError, ValueError, KeyError, TypeError) as e:
        log.error("could not listen for OCapN peers again: %s", e)


@far("Network")
class NetworkControl:
    """``ocapd network …``: the daemon's listener (the CLI's socket is the authority)."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    async def listen(
        self, netlayer: str, port: int = 0, host: str = "127.0.0.1", advertise: str | None = None
    ) -> dict[str, Any]:
        network = await network_of(self._kernel)
        await network.listen(netlayer, host, port, advertise)
        return network.show()

    async def stop(self) -> bool:
        return await (await network_of(self._kernel)).stop()

    async def show(self) -> dict[str, Any]:
        return (await network_of(self._kernel)).show()


# -- makers ---------------------------------------------------------------------------------
@far("Peer")
class Peer:
    """A started OCapN session to one peer (a ``peer`` formula's incarnation)."""

    def __init__(self, locator: PeerLocator, session: Session) -> None:
        self._locator = locator
        self._session = session

    def locator(self) -> str:
        return self._locator.to_uri()

    async def _fetch(self, swiss: bytes) -> Any:
        return await E(self._session.bootstrap()).fetch(swiss)


def short(designator: str) -> str:
    """A designator cut for messages."""
    return designator[:16] + "…" if len(designator) > 16 else designator


async def make_peer(kernel: Kernel, fid: str, formula: F.PeerFormula, inc: Incarnation) -> Peer:
    """Dial (or reuse) a session to the peer; when it ends, this incarnation is cancelled."""
    from ocapd.captp.ocapn_locators import PeerLocator
    from ocapd.captp.ocapn_netlayers import NetlayerError

    locator = PeerLocator.from_uri(formula.locator)
    network = await network_of(kernel)
    if locator.designator == network.designator:
        raise PeerError("that peer is this daemon itself; use the names here (an invitation is for another daemon)")
    try:
        session = await network.node.session_for(locator)
    except (NetlayerError, ConnectionError, OSError) as e:
        raise PeerUnreachable(f"peer {short(locator.designator)} unreachable: {e}") from None

    async def watch() -> None:
        await network.node.wait_ended(session)
        if inc.is_current():
            aborted = session.aborted
            await kernel.cancel(fid, f"the session with peer {short(locator.designator)} ended ({aborted.reason if aborted else 'closed'})")

    kernel.nursery.start_soon(watch)
    return Peer(locator, session)


async def make_sturdyref(
    kernel: Kernel, fid: str, formula: F.SturdyRefFormula | F.RemoteAgentFormula, inc: Incarnation
) -> Any:
    """The object the peer's ``fetch`` answers for the swiss number; it dies with the peer's session.

    A sturdyref of this daemon itself (mailed back to us, say) is looked up
    among our shares, with no session to ourselves.
    """
    from ocapd.captp.ocapn_locators import PeerLocator

    peer_formula = kernel.formula(formula.peer)
    assert isinstance(peer_formula, F.PeerFormula)
    network = await network_of(kernel)
    locator = PeerLocator.from_uri(peer_formula.locator)
    if locator.designator == network.designator and locator.transport == network.netlayer.name:
        try:
            return await network._fetch(formula.swiss.encode("ascii"))
        except (KeyError, RemoteError):
            raise PeerError("this daemon refused the sturdyref: no share of it has that swiss number") from None
    peer: Peer = await inc.provide(formula.peer)
    try:
        return await peer._fetch(formula.swiss.encode("ascii"))
    except RemoteError as e:
        raise PeerError(f"peer {short(peer._locator.designator)} refused the sturdyref: {e.message or e.name}") from None
    except Cancelled:
        raise
    except ConnectionError as e:
        raise PeerUnreachable(f"peer {short(peer._locator.designator)} unreachable: {e}") from None


@far("Revocable")
class Caretaker:
    """Forwards every call to a shared object until its share is revoked (or dies), then refuses them.

    What ``fetch`` gives peers for an object: revoking a share then cuts
    the references they already hold, not only later fetches.
    """

    def __init__(self, target: Any) -> None:
        self._target = target
        self._revoked: str | None = None

    def _revoke(self, reason: str) -> None:
        self._revoked = reason
        self._target = None

    def _captp_send(self, method: str | None, args: Any) -> Promise:
        if self._revoked is not None:
            return Promise.rejected_with(RemoteError("Revoked", f"this reference was revoked ({self._revoked})"))
        return eventual_send(self._target, method, args)

    def _captp_send_only(self, method: str | None, args: Any) -> None:
        if self._revoked is None:
            sender = E.send_only(self._target)
            (sender if method is None else getattr(sender, method))(*args)


async def make_share(kernel: Kernel, fid: str, formula: F.ShareFormula, inc: Incarnation) -> Any:
    """What a sturdyref of this daemon gives: copy data as is, an object behind a caretaker the share revokes."""
    value = await inc.provide(formula.value)
    if not (is_remotable(value) or isinstance(value, (RemoteRef, Promise))):
        return value
    caretaker = Caretaker(value)

    async def revoke(reason: str) -> None:
        caretaker._revoke(reason)

    inc.on_cancel(revoke)
    return caretaker


# -- staging formulas ----------------------------------------------------------------------
def stage_peer(kernel: Kernel, txn: Txn, locator: str) -> str:
    """The ``peer`` formula for ``locator`` (a peer URI): the one there is, or a new one staged in ``txn``."""
    for fid, f in list(kernel.formulas.items()) + list(txn.formulas.items()):
        if isinstance(f, F.PeerFormula) and f.locator == locator:
            return fid
    return txn.formula(F.PeerFormula(locator=locator))


def stage_share(network: Network, txn: Txn, value: str, agent: str) -> str:
    """Stage a share of ``value`` by ``agent``; its sturdyref URI (``PeerError`` if we do not listen)."""
    swiss = new_swiss()
    uri = network.sturdyref_uri(swiss)
    share_id = txn.formula(F.ShareFormula(value=value, swiss=swiss, host=agent))
    txn.then(lambda: network.shared(swiss, share_id))
    return uri


def stage_unshare(kernel: Kernel, network: Network, txn: Txn, share_ids: list[str], reason: str = "revoked") -> None:
    """Stage deleting shares: their swiss numbers stop answering at once, their caretakers once committed."""
    for fid in share_ids:
        formula = kernel.formula(fid)
        assert isinstance(formula, F.ShareFormula)
        network.unshared(formula.swiss)
        txn.batch.delete_formula(fid)

    def forget() -> None:
        for fid in share_ids:
            network.fetches.forget(fid)
            for inc in kernel.detach(fid, reason):
                if inc.promise.fulfilled and isinstance(inc.promise.result(), Caretaker):
                    inc.promise.result()._revoke(reason)  # now, before the caller hears it is done
                kernel.nursery.start_soon(kernel.run_cancel_hooks, [inc], reason)
            kernel.formulas.pop(fid, None)

    txn.then(forget)


def sturdyref_parts(uri: str) -> tuple[str, str]:
    """A sturdyref URI's peer locator URI and swiss number (as text); ``PeerError`` if it is not one a daemon dials."""
    from ocapd.captp.ocapn_locators import LocatorError, SturdyRef

    try:
        ref = SturdyRef.from_uri(uri)
    except LocatorError as e:
        raise PeerError(str(e)) from None
    if ref.peer.transport not in NETLAYERS:
        raise PeerError(f"{ref.peer.transport} is not a netlayer daemons peer over ({', '.join(NETLAYERS)})")
    from ocapd.captp.ocapn_netlayers import NetlayerError
    from ocapd.captp.ocapn_tls import public_key_for

    try:
        public_key_for(ref.peer.designator)
    except NetlayerError as e:
        raise PeerError(str(e)) from None
    try:
        swiss = ref.swiss_num.decode("ascii")
    except UnicodeDecodeError:
        raise PeerError("the swiss number is not one a daemon makes (it is not ASCII)") from None
    return ref.peer.to_uri(), swiss
