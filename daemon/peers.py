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
  fail, and so do calls through references already fetched.
- **Remote references.** A ``peer`` formula is a peer's locator; its
  incarnation is a started session (dialed on first use, shared by every
  reference to that peer, and cancelled when the session ends, so the next
  use dials again). A ``sturdyref`` formula is a peer formula and a swiss
  number; its incarnation is what the peer's ``fetch`` answers, and it dies
  with its peer's session. Recipes persist, sessions do not.

The cryptography and OCapN modules are imported here only, on first use: a
daemon that never peers never loads them.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import stat
from collections.abc import Callable
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
    "KEY_FILE", "LISTEN_META", "NETLAYERS", "Network", "NetworkControl", "PeerError", "PeerUnreachable",
    "accept", "invite", "make_invitation", "make_peer", "make_peer_inbox", "make_share", "make_sturdyref",
    "answer_remote", "make_remote_resolver", "network_of", "new_swiss", "request_remote", "resume_listening",
    "send_remote", "sturdyref_parts",
]  # fmt: skip

log = logging.getLogger("ocapd.peers")

#: The daemon's OCapN identity, in the state folder.
KEY_FILE = "ocapn-ed25519.key"
#: Where the listener's settings are kept (database meta): JSON {netlayer, host, port}.
LISTEN_META = "ocapn_listen"
#: Netlayers a daemon listens on and dials. ``tcp-testing-only`` authenticates
#: nothing, so daemons never use it: it is for the conformance suite.
NETLAYERS = ("tls-ed25519",)
#: Random bytes in a swiss number: as a formula id, unguessable.
SWISS_BYTES = 32


class PeerError(Exception):
    """A peering operation that cannot be done, said in one line."""


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


class Network:
    """The daemon's OCapN node, its identity and (when listening) its listener. One per daemon."""

    def __init__(self, kernel: Kernel, key: Ed25519PrivateKey) -> None:
        from ocapd.captp.ocapn_locators import PeerLocator
        from ocapd.captp.ocapn_node import OcapnNode
        from ocapd.captp.ocapn_tls import TLS_NETLAYER, TlsNetlayer

        self._kernel = kernel
        self.netlayer: TlsNetlayer = TlsNetlayer(key)
        self.designator = self.netlayer.designator
        # Until it listens, the daemon's location says who it is but not where.
        self._unlisted = PeerLocator(self.designator, TLS_NETLAYER, {})
        # Peers are untrusted: their sessions share the budget of workers' and gateway sessions.
        self.node: OcapnNode = OcapnNode(
            self._unlisted, self.netlayer.connect, name="ocapn", fetch=self._fetch, budget=kernel.services.budget
        )
        self._listener: trio.CancelScope | None = None
        self._closed = trio.Event()
        self.listening: PeerLocator | None = None
        self._swiss: dict[bytes, str] | None = None

    # -- listening --------------------------------------------------------------------
    async def listen(self, netlayer: str, host: str = "127.0.0.1", port: int = 0) -> PeerLocator:
        """Listen for peers on ``host:port`` (0: a free port) and record it; returns our location."""
        from ocapd.captp.ocapn_netlayers import NetlayerError

        if netlayer not in NETLAYERS:
            raise PeerError(f"unknown netlayer {netlayer!r}; daemons peer over {', '.join(NETLAYERS)}")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port < 65536:
            raise PeerError("the port is a number from 0 to 65535 (0: any free port)")
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
        self.listening = location
        self.node.location = location
        settings = {"netlayer": netlayer, "host": host, "port": int(location.hints["port"])}
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
            "sessions": self.node.sessions(),
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

    def _fetch(self, swiss: bytes) -> Any:
        """The bootstrap's ``fetch`` for swiss numbers of share formulas: a promise for the shared value."""
        fid = self._index().get(swiss)
        if fid is None:
            raise KeyError("no object has that swiss number")
        promise, resolver = make_promise_kit()

        async def provide() -> None:
            try:
                resolver.resolve(await self._kernel.provide(fid))
            except Exception as e:
                # The peer hears that it failed, not the daemon's details.
                log.info("a shared value (share %s) failed to incarnate: %s", fid[:16], e)
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
        await network.listen(settings["netlayer"], settings["host"], settings["port"])
    except (PeerError, ValueError, KeyError, TypeError) as e:
        log.error("could not listen for OCapN peers again: %s", e)


@far("Network")
class NetworkControl:
    """``ocapd network …``: the daemon's listener (the CLI's socket is the authority)."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    async def listen(self, netlayer: str, port: int = 0, host: str = "127.0.0.1") -> dict[str, Any]:
        network = await network_of(self._kernel)
        await network.listen(netlayer, host, port)
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


def _short(designator: str) -> str:
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
        raise PeerUnreachable(f"peer {_short(locator.designator)} unreachable: {e}") from None

    async def watch() -> None:
        await network.node.wait_ended(session)
        if inc.is_current():
            aborted = session.aborted
            await kernel.cancel(fid, f"the session with peer {_short(locator.designator)} ended ({aborted.reason if aborted else 'closed'})")

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
        raise PeerError(f"peer {_short(peer._locator.designator)} refused the sturdyref: {e.message or e.name}") from None
    except Cancelled:
        raise
    except ConnectionError as e:
        raise PeerUnreachable(f"peer {_short(peer._locator.designator)} unreachable: {e}") from None


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
            for inc in kernel.detach(fid, reason):
                if inc.promise.fulfilled and isinstance(inc.promise.result(), Caretaker):
                    inc.promise.result()._revoke(reason)  # now, before the caller hears it is done
                kernel.nursery.start_soon(kernel.run_cancel_hooks, [inc], reason)
            kernel.formulas.pop(fid, None)

    txn.then(forget)


# -- invitations and mail between daemons --------------------------------------------------------
#: Capabilities one message between daemons may carry (each becomes a share and a sturdyref).
MAX_REMOTE_ATTACHMENTS = 64


@far("Invitation")
class Invitation:
    """What an invitation's sturdyref gives: ``accept`` once, from the invited agent's daemon."""

    def __init__(self, kernel: Kernel, fid: str, formula: F.InvitationFormula) -> None:
        self._kernel = kernel
        self._id = fid
        self._formula = formula

    async def accept(self, inbox_uri: str) -> str:
        """Take the accepting agent's inbox URI; give back ours for it. The invitation is then used up."""
        kernel, formula = self._kernel, self._formula
        if not isinstance(inbox_uri, str):
            raise TypeError("accept takes the accepting agent's inbox URI")
        locator, swiss = sturdyref_parts(inbox_uri)
        shares = [
            fid for fid, f in list(kernel.formulas.items()) if isinstance(f, F.ShareFormula) and f.value == self._id
        ]
        if not shares or self._id not in kernel.formulas:
            raise PeerError("this invitation was already accepted or withdrawn")
        host = await kernel.provide(formula.host)
        from .hosts import control

        hub = control(host)
        if hub.has(formula.guest_name):
            raise PeerError(f"the inviting agent already uses the name {formula.guest_name!r}")
        network = await network_of(kernel)
        txn = kernel.txn()
        remote = txn.formula(F.RemoteAgentFormula(peer=stage_peer(kernel, txn, locator), swiss=swiss))
        hub.stage_name(txn, formula.guest_name, remote)
        inbox = txn.formula(F.PeerInboxFormula(agent=formula.host, sender=remote))
        ours = stage_share(network, txn, inbox, formula.host)
        stage_unshare(kernel, network, txn, shares, "the invitation was accepted")  # used once
        await kernel.commit(txn)
        return ours


@far("PeerInbox")
class PeerInbox:
    """Where one agent on another daemon delivers mail to one of ours.

    Every message delivered here is from ``sender`` (the remote agent this
    inbox was made for when the invitation was accepted): the sender is
    which inbox was called, never anything the message says.
    """

    def __init__(self, kernel: Kernel, formula: F.PeerInboxFormula) -> None:
        self._kernel = kernel
        self._formula = formula

    async def deliver(self, strings: Any, edge_names: Any, uris: Any) -> None:
        from .guests import Agent
        from .mail import now_iso
        from .names import validate_pet_name

        if not (isinstance(strings, list) and all(isinstance(x, str) for x in strings)):
            raise TypeError("deliver: the text is a list of strings")
        if not (isinstance(edge_names, list) and isinstance(uris, list) and len(edge_names) == len(uris)):
            raise TypeError("deliver: each attached capability needs an edge name and a sturdyref URI")
        if not all(isinstance(u, str) for u in uris):
            raise TypeError("deliver: each attached capability is a sturdyref URI")
        if len(uris) > MAX_REMOTE_ATTACHMENTS:
            raise PeerError(f"a message may carry at most {MAX_REMOTE_ATTACHMENTS} capabilities")
        for edge in edge_names:
            validate_pet_name(edge)
        parts = [sturdyref_parts(u) for u in uris]
        kernel, formula = self._kernel, self._formula
        agent = await kernel.provide(formula.agent)
        assert isinstance(agent, Agent)
        to_handle = kernel.formula(formula.agent).handle  # type: ignore[union-attr]
        record = {
            "type": "package", "from": formula.sender, "to": to_handle, "date": now_iso(),
            "strings": list(strings), "names": list(edge_names), "ids": ["0" * 64] * len(uris),
        }  # fmt: skip
        agent._mailbox.check_quota(record)  # before any formula is made for a message it would refuse
        txn = kernel.txn()
        ids = [txn.formula(F.SturdyRefFormula(peer=stage_peer(kernel, txn, loc), swiss=swiss)) for loc, swiss in parts]
        await kernel.commit(txn)
        await agent._mailbox.deliver({**record, "ids": ids})


    async def request(self, description: Any, resolver_uri: Any) -> None:
        """A request from the remote agent; ``resolver_uri`` is how its answer goes back (at the sender's daemon)."""
        from .guests import Agent
        from .mail import now_iso

        if not isinstance(description, str) or not isinstance(resolver_uri, str):
            raise TypeError("request takes a description and a resolver's sturdyref URI")
        kernel, formula = self._kernel, self._formula
        locator, swiss = sturdyref_parts(resolver_uri)
        sender = kernel.formula(formula.sender)
        assert isinstance(sender, F.RemoteAgentFormula)
        if kernel.formula(sender.peer) != F.PeerFormula(locator=locator):
            raise PeerError("a request's resolver must be at the daemon of the agent that asks")
        agent = await kernel.provide(formula.agent)
        assert isinstance(agent, Agent)
        to_handle = kernel.formula(formula.agent).handle  # type: ignore[union-attr]
        record = {
            "type": "request", "from": formula.sender, "to": to_handle, "date": now_iso(),
            "description": description, "promise": "0" * 64, "resolver": "0" * 64,
            "response_name": None, "settled": None,
        }  # fmt: skip
        agent._mailbox.check_quota(record)
        txn = kernel.txn()
        resolver = txn.formula(F.SturdyRefFormula(peer=sender.peer, swiss=swiss))
        await kernel.commit(txn)
        # A request from another daemon has no promise here: its answer goes back through the resolver.
        await agent._mailbox.deliver({**record, "promise": resolver, "resolver": resolver})


@far("RemoteResolver")
class RemoteResolver:
    """How an agent on another daemon answers one of our requests: with a sturdyref of its own, or a reason."""

    def __init__(self, kernel: Kernel, fid: str, formula: F.RemoteResolverFormula, store: Any) -> None:
        self._kernel = kernel
        self._id = fid
        self._formula = formula
        self._store = store

    async def _settle(self, name: str, stage: Callable[[Txn], str]) -> None:
        if self._store.get("resolution") is not None or self._store.get("rejection") is not None:
            raise PeerError("this request was already answered")
        kernel = self._kernel
        network = await network_of(kernel)
        txn = kernel.txn()
        self._store.stage_write(txn, name, stage(txn))
        shares = [fid for fid, f in list(kernel.formulas.items()) if isinstance(f, F.ShareFormula) and f.value == self._id]
        stage_unshare(kernel, network, txn, shares, "the request was answered")  # answered once
        await kernel.commit(txn)

    async def fulfill(self, uri: Any) -> None:
        if not isinstance(uri, str):
            raise TypeError("fulfill takes a sturdyref URI")
        locator, swiss = sturdyref_parts(uri)
        if self._kernel.formula(self._formula.peer) != F.PeerFormula(locator=locator):
            raise PeerError("the answer must be a sturdyref of the daemon that was asked")
        await self._settle("resolution", lambda txn: txn.formula(F.SturdyRefFormula(peer=self._formula.peer, swiss=swiss)))

    async def reject(self, reason: Any = "rejected") -> None:
        from .values import stored_rejection

        text = str(reason)[:1000] if isinstance(reason, str) else "rejected"
        await self._settle("rejection", lambda txn: txn.formula(stored_rejection(text)))


async def make_remote_resolver(
    kernel: Kernel, fid: str, formula: F.RemoteResolverFormula, inc: Incarnation
) -> RemoteResolver:
    return RemoteResolver(kernel, fid, formula, await inc.provide(formula.store))


async def request_remote(kernel: Kernel, agent_id: str, remote_id: str, description: str) -> str:
    """Ask an agent on another daemon: the id of the promise its answer will settle."""
    remote = kernel.formula(remote_id)
    assert isinstance(remote, F.RemoteAgentFormula)
    network = await network_of(kernel)
    inbox = await kernel.provide(remote_id)
    txn = kernel.txn()
    store = txn.formula(F.PetStoreFormula())
    promise_id = txn.formula(F.PromiseFormula(store=store))
    resolver = txn.formula(F.RemoteResolverFormula(store=store, peer=remote.peer))
    uri = stage_share(network, txn, resolver, agent_id)
    await kernel.commit(txn)
    try:
        await E(inbox).request(description, uri)
    except RemoteError as e:
        raise PeerError(f"the other daemon refused the request: {e.message or e.name}") from None
    return promise_id


async def answer_remote(kernel: Kernel, agent_id: str, resolver_id: str, resolution: str | None, reason: str | None) -> None:
    """Answer a request from another daemon through its resolver there: a value (shared) or a reason."""
    network = await network_of(kernel)
    try:
        resolver = await kernel.provide(resolver_id)
    except PeerError as e:
        raise PeerError(f"cannot answer: {e}") from None
    try:
        if resolution is None:
            await E(resolver).reject(reason or "rejected")
            return
        uri = _passed_on(kernel, resolution)
        if uri is None:
            txn = kernel.txn()
            uri = stage_share(network, txn, resolution, agent_id)
            await kernel.commit(txn)
        await E(resolver).fulfill(uri)
    except RemoteError as e:
        raise PeerError(f"the other daemon refused the answer: {e.message or e.name}") from None


async def make_invitation(kernel: Kernel, fid: str, formula: F.InvitationFormula, inc: Incarnation) -> Invitation:
    return Invitation(kernel, fid, formula)


async def make_peer_inbox(kernel: Kernel, fid: str, formula: F.PeerInboxFormula, inc: Incarnation) -> PeerInbox:
    return PeerInbox(kernel, formula)


async def invite(kernel: Kernel, host_id: str, guest_name: str) -> str:
    """A new invitation from ``host_id``: its URI, for the invited agent's ``accept``."""
    network = await network_of(kernel)
    txn = kernel.txn()
    invitation = txn.formula(F.InvitationFormula(host=host_id, guest_name=guest_name))
    uri = stage_share(network, txn, invitation, host_id)
    await kernel.commit(txn)
    return uri


async def accept(kernel: Kernel, agent_id: str, uri: str, stage_name: Callable[[Txn, str], None]) -> None:
    """Accept an invitation for ``agent_id``: an inbox for the inviter here, and the inviter named (``stage_name``)."""
    locator, swiss = sturdyref_parts(uri)
    network = await network_of(kernel)
    # Our inbox for the inviter is shared first, so that it answers as soon as the inviter knows it.
    txn = kernel.txn()
    remote = F.new_formula_id()
    inbox = txn.formula(F.PeerInboxFormula(agent=agent_id, sender=remote))
    ours = stage_share(network, txn, inbox, agent_id)
    peer_id = stage_peer(kernel, txn, locator)
    await kernel.commit(txn)
    try:
        peer: Peer = await kernel.provide(peer_id)
        try:
            invitation = await peer._fetch(swiss.encode("ascii"))
            theirs = await E(invitation).accept(ours)
        except RemoteError as e:
            raise PeerError(f"peer {_short(peer._locator.designator)} refused the invitation: {e.message or e.name}") from None
        if not isinstance(theirs, str):
            raise PeerError("the inviting daemon answered with something that is not an inbox URI")
        their_locator, their_swiss = sturdyref_parts(theirs)
        if their_locator != locator:
            # The inviter's inbox must be at the daemon that holds the invitation (and proved its key).
            raise PeerError("the inviting daemon gave an inbox on another peer")
        txn = kernel.txn()
        txn.formula(F.RemoteAgentFormula(peer=peer_id, swiss=their_swiss), remote)
        stage_name(txn, remote)
        await kernel.commit(txn)
    except BaseException:
        with trio.CancelScope(shield=True):
            txn = kernel.txn()
            mine = [fid for fid, f in list(kernel.formulas.items()) if isinstance(f, F.ShareFormula) and f.value == inbox]
            stage_unshare(kernel, network, txn, mine)
            await kernel.commit(txn)
        raise


def _passed_on(kernel: Kernel, fid: str) -> str | None:
    """A sturdyref's own URI: passed on as itself, so the receiver talks to its peer directly, not through us."""
    from ocapd.captp.ocapn_locators import PeerLocator, SturdyRef

    formula = kernel.formula(fid)
    if not isinstance(formula, F.SturdyRefFormula):
        return None
    peer = kernel.formula(formula.peer)
    assert isinstance(peer, F.PeerFormula)
    return SturdyRef(PeerLocator.from_uri(peer.locator), formula.swiss.encode("ascii")).to_uri()


async def send_remote(
    kernel: Kernel, sender_id: str, remote_id: str, strings: list[str], edge_names: list[str], ids: list[str]
) -> None:
    """Mail to an agent on another daemon: each attached capability is shared, and its sturdyref sent.

    A capability that is itself a sturdyref (an object at a third daemon) is
    sent as that sturdyref: the receiver dials its daemon, with no proxy here.
    """
    if len(ids) > MAX_REMOTE_ATTACHMENTS:
        raise PeerError(f"a message to another daemon may carry at most {MAX_REMOTE_ATTACHMENTS} capabilities")
    network = await network_of(kernel)
    inbox = await kernel.provide(remote_id)
    txn = kernel.txn()
    uris = [_passed_on(kernel, fid) or stage_share(network, txn, fid, sender_id) for fid in ids]
    await kernel.commit(txn)
    try:
        await E(inbox).deliver(list(strings), list(edge_names), uris)
    except RemoteError as e:
        raise PeerError(f"the other daemon refused the message: {e.message or e.name}") from None


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
