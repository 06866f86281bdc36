"""Guests, and the naming and mail every agent has (``Agent``, which ``Host`` extends).

A guest is a confined agent: a weblet, a program, a person one invited. It
has its own pet store and mailbox and the naming and mail surface, nothing
more. Its ``HOST`` special name is its host's handle, never the host's powers.

Mail is delivered by the daemon from the sending agent to the recipient's
mailbox, stamped with the sender's handle id taken from the sending agent
itself, so it cannot be forged. A request is a promise/resolver formula pair
around a pet store (see ``makers``), so it can be answered after a restart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocapd.captp import far

from . import formulas as F
from .directories import NameHub
from .handles import Handle, agent_behind
from .mail import Mailbox, now_iso
from .names import validate_pet_name
from .petstore import ChangeStream, PetStore
from .values import stored_rejection

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Agent", "Guest"]


class Agent(NameHub):
    """Naming and mail: everything hosts and guests share."""

    def __init__(
        self, kernel: Kernel, fid: str, formula: F.HostFormula | F.GuestFormula, store: PetStore, mailbox: Mailbox
    ) -> None:
        self._kernel = kernel
        self._id = fid
        self._formula = formula
        self._store = store
        self._mailbox = mailbox

    @property
    def _handle_id(self) -> str:
        return self._formula.handle

    def _specials(self) -> dict[str, str]:
        f = self._formula
        specials = {"SELF": f.handle, "AGENT": self._id, "MAIN": f.worker}
        least_authority = self._kernel.services.least_authority
        if least_authority is not None:  # set before any agent is made (the root formulas)
            specials["NONE"] = least_authority
        return specials

    async def handle(self) -> Handle:
        handle: Handle = await self._kernel.provide(self._handle_id)
        return handle

    # -- mail -------------------------------------------------------------------------
    async def _recipient(self, to: str | list[str]) -> tuple[str, Agent]:
        handle_id, agent_id = agent_behind(self._kernel, await self._require_id(to), str(to))
        agent = await self._kernel.provide(agent_id)
        return handle_id, agent

    def _describe_message(self, m: dict[str, Any], weblets: dict[str, str] | None = None) -> dict[str, Any]:
        """A message as clients see it: with ``from_names``, this agent's names for its sender.

        A weblet sends as its own guest, whose handle this agent has no name
        for: such a message also carries ``from_weblet`` (the weblet's formula
        id, so a client can follow renames), and ``from_names`` are the
        weblet's names — or, if it has none here (it was removed),
        ``from_title`` is its manifest's title. ``weblets`` is ``_weblets_by_handle()``, when the
        caller describes many messages at once.
        """
        out = dict(m)
        sender = m["from"]
        names = [n for n, i in self._specials().items() if i == sender] + self._store.reverse(sender)
        weblet = (weblets if weblets is not None else self._weblets_by_handle()).get(sender)
        if weblet is not None:
            out["from_weblet"] = weblet
            names = names or self._store.reverse(weblet)
            if not names:  # removed (or never named here): its title still says who it was
                formula = self._kernel.formulas.get(weblet)
                title = formula.manifest.get("title") if isinstance(formula, F.WebletFormula) else None
                out["from_title"] = title if isinstance(title, str) else ""
        out["from_names"] = names
        return out

    def _weblets_by_handle(self) -> dict[str, str]:
        """Weblet formula id by the handle of the guest it acts as (every weblet the daemon knows)."""
        formulas = self._kernel.formulas
        found = {}
        for fid, formula in list(formulas.items()):
            if isinstance(formula, F.WebletFormula):
                guest = formulas.get(formula.guest)
                if isinstance(guest, F.GuestFormula):
                    found[guest.handle] = fid
        return found

    def list_messages(self, after: int = -1, limit: int = 200) -> list[dict[str, Any]]:
        """One page of messages numbered above ``after`` (it always fits a frame); list again after the last."""
        weblets = self._weblets_by_handle()
        return [self._describe_message(m, weblets) for m in self._mailbox.page(after, limit)]

    def follow_messages(self) -> ChangeStream:
        """Each message now (``{"add": m}``), then every change; messages are described as ``list_messages`` does."""
        return self._mailbox.follow(describe=self._describe_message)

    async def send(
        self, to: str | list[str], strings: list[str], edge_names: list[str], pet_names: list[str]
    ) -> None:
        """Send text with named capabilities attached (``edge_names[i]`` names ``pet_names[i]``)."""
        if len(edge_names) != len(pet_names):
            raise ValueError("send: each attached capability needs an edge name and a pet name")
        if not isinstance(strings, list) or not all(isinstance(s, str) for s in strings):
            raise TypeError("send: message text must be a list of strings")
        for edge in edge_names:
            validate_pet_name(edge)
        ids = [await self._require_id(p) for p in pet_names]
        to_id = await self._require_id(to)
        if isinstance(self._kernel.formula(to_id), F.RemoteAgentFormula):  # an agent on another daemon
            from .peer_mail import send_remote

            await send_remote(self._kernel, self._id, to_id, list(strings), list(edge_names), ids)
            return
        to_handle, agent = await self._recipient(to)
        await agent._mailbox.deliver(
            {
                "type": "package",
                "from": self._handle_id,
                "to": to_handle,
                "date": now_iso(),
                "strings": list(strings),
                "names": list(edge_names),
                "ids": ids,
            }
        )

    async def request(self, to: str | list[str], description: str, response_name: str | None = None) -> Any:
        """Ask an agent for something; resolves when they answer. Idempotent per response name."""
        if not isinstance(description, str):
            raise TypeError("request: the description must be a string")
        if response_name is not None:
            validate_pet_name(response_name)
            existing = self._store.get(response_name)
            if existing is not None:
                return await self._kernel.provide(existing)
        to_id = await self._require_id(to)
        if isinstance(self._kernel.formula(to_id), F.RemoteAgentFormula):  # an agent on another daemon
            from .peer_mail import request_remote

            promise_id = await request_remote(self._kernel, self._id, to_id, description)
        else:
            promise_id = await self._request_here(to, description, response_name)
        value = await self._kernel.provide(promise_id)
        if response_name is not None:
            fid = self._kernel.identify_value(value) or await _resolution_id(self._kernel, promise_id)
            if fid is not None:
                await self._store.write(response_name, fid)
        return value

    async def _request_here(self, to: str | list[str], description: str, response_name: str | None) -> str:
        """Deliver a request to an agent of this daemon (or find the same one pending); its promise's id."""
        to_handle, agent = await self._recipient(to)
        pending = agent._mailbox.find_request(self._handle_id, response_name) if response_name else None
        if pending is not None:
            return str(pending["promise"])
        # Refuse before making formulas for a request the mailbox would not take.
        placeholder = "0" * len(self._handle_id)
        agent._mailbox.check_quota({
            "type": "request", "from": self._handle_id, "to": to_handle, "date": now_iso(),
            "description": description, "promise": placeholder, "resolver": placeholder,
            "response_name": response_name, "settled": None,
        })  # fmt: skip
        txn = self._kernel.txn()
        store = txn.formula(F.PetStoreFormula())
        promise_id = txn.formula(F.PromiseFormula(store=store))
        resolver_id = txn.formula(F.ResolverFormula(store=store))
        await self._kernel.commit(txn)
        await agent._mailbox.deliver(
            {
                "type": "request",
                "from": self._handle_id,
                "to": to_handle,
                "date": now_iso(),
                "description": description,
                "promise": promise_id,
                "resolver": resolver_id,
                "response_name": response_name,
                "settled": None,
            }
        )
        return promise_id

    async def _settle_request(self, number: int, resolution: str | None, reason: str | None) -> None:
        m = self._mailbox.get(number)
        if m["type"] != "request":
            raise TypeError(f"message {number} is not a request")
        if m.get("settled") is not None:
            raise ValueError(f"request {number} is already {m['settled']}")
        if isinstance(self._kernel.formula(m["resolver"]), F.SturdyRefFormula):  # a request from another daemon
            from .peer_mail import answer_remote

            await answer_remote(self._kernel, self._id, m["resolver"], resolution, reason)
            await self._mailbox.update(number, settled="fulfilled" if resolution is not None else "rejected")
            return
        store: PetStore = await self._kernel.provide(self._kernel.formula(m["resolver"]).store)  # type: ignore[union-attr]
        txn = self._kernel.txn()
        if resolution is not None:
            store.stage_write(txn, "resolution", resolution)
        else:
            err = txn.formula(stored_rejection(reason or "rejected"))
            store.stage_write(txn, "rejection", err)
        await self._kernel.commit(txn)
        await self._mailbox.update(number, settled="fulfilled" if resolution is not None else "rejected")

    async def resolve(self, number: int, path: str | list[str]) -> None:
        """Answer request ``number`` with the value named by ``path``."""
        await self._settle_request(number, await self._require_id(path), None)

    async def reject(self, number: int, reason: str = "declined") -> None:
        await self._settle_request(number, None, str(reason))

    async def adopt(self, number: int, edge_name: str, path: str | list[str]) -> None:
        """Name a capability that came attached to message ``number``."""
        m = self._mailbox.get(number)
        if m["type"] != "package":
            raise TypeError(f"message {number} carries no capabilities")
        try:
            fid = m["ids"][m["names"].index(edge_name)]
        except ValueError:
            raise LookupError(f"message {number} has no capability named {edge_name!r}") from None
        await self._name(path, fid)

    async def dismiss(self, number: int) -> None:
        await self._mailbox.dismiss(number)


@far("Guest")
class Guest(Agent):
    """A confined agent: naming and mail. ``HOST`` is the host's handle."""

    _formula: F.GuestFormula

    def _specials(self) -> dict[str, str]:
        specials = super()._specials()
        specials["HOST"] = self._formula.host_handle
        return specials


async def _resolution_id(kernel: Kernel, promise_id: str) -> str | None:
    store: PetStore = await kernel.provide(kernel.formula(promise_id).store)  # type: ignore[union-attr]
    return store.get("resolution")
