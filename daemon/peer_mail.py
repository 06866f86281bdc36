"""Agents of two daemons introduced by an invitation, and the mail between them (docs/ocapn.md).

- ``invitation``: a host's offer, shared; the invited agent's daemon calls
  its ``accept(inbox URI)`` once and gets the inviter's inbox URI back.
- ``remote-agent``: an agent on another daemon, as a recipe (its peer and
  the swiss number of its inbox there); mail to it goes to that inbox.
- ``peer-inbox``: where one remote agent's mail and requests come in,
  stamped from that remote agent: the sender is which inbox was called,
  never anything a message says.
- ``remote-resolver``: how an agent on another daemon answers one request
  of ours, once, with a sturdyref of its own daemon or a reason.

Capabilities travel as sturdyrefs: what the sender holds is shared (a
sturdyref it holds is passed on as itself), and arrives as ``sturdyref``
formulas, so everything survives restarts and reconnects on next use.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import E, RemoteError, far

from . import formulas as F
from .peers import (
    Peer,
    PeerError,
    network_of,
    short,
    stage_peer,
    stage_share,
    stage_unshare,
    sturdyref_parts,
)

if TYPE_CHECKING:
    from .kernel import Incarnation, Kernel, Txn

__all__ = [
    "MAX_REMOTE_ATTACHMENTS", "Invitation", "PeerInbox", "RemoteResolver", "accept", "answer_remote", "invite",
    "make_invitation", "make_peer_inbox", "make_remote_resolver", "request_remote", "send_remote",
]  # fmt: skip

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
            raise PeerError(f"peer {short(peer._locator.designator)} refused the invitation: {e.message or e.name}") from None
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
