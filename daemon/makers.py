"""Makers of the agent, naming, mail and stored-value formula types: each turns a formula into its live value.

A maker is ``async (kernel, id, formula, incarnation) -> value``, typed by its
formula model; ``catalogue.MAKERS`` lists every maker beside its model. A
maker provides what its value stands on through ``inc.provide`` ("this dies if
that dies"). The makers of workers and evaluations are in ``work``, of
weblets in ``weblets``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocapd.captp.storage import decode_stored

from . import formulas as F
from .directories import Directory, NameHub
from .guests import Guest
from .handles import Handle
from .hosts import Host
from .mail import Mailbox
from .petstore import PetStore
from .values import EndoPowers, LeastAuthority, ReadableBlob, RequestResolver, TextStore

if TYPE_CHECKING:
    from .kernel import Incarnation, Kernel

__all__ = [
    "make_directory", "make_endo", "make_guest", "make_handle", "make_host", "make_least_authority",
    "make_lookup", "make_mailbox", "make_marshal", "make_pet_store", "make_promise", "make_readable_blob",
    "make_resolver",
]  # fmt: skip


async def make_host(kernel: Kernel, fid: str, formula: F.HostFormula, inc: Incarnation) -> Host:
    store = await inc.provide(formula.petstore)
    mailbox = await inc.provide(formula.mailbox)
    return Host(kernel, fid, formula, store, mailbox)


async def make_guest(kernel: Kernel, fid: str, formula: F.GuestFormula, inc: Incarnation) -> Guest:
    store = await inc.provide(formula.petstore)
    mailbox = await inc.provide(formula.mailbox)
    return Guest(kernel, fid, formula, store, mailbox)


async def make_handle(kernel: Kernel, fid: str, formula: F.HandleFormula, inc: Incarnation) -> Handle:
    return Handle(kernel, fid, formula.agent)


async def make_pet_store(kernel: Kernel, fid: str, formula: F.PetStoreFormula, inc: Incarnation) -> PetStore:
    return PetStore(kernel, fid, kernel.services.names.get(fid, {}))


async def make_directory(kernel: Kernel, fid: str, formula: F.DirectoryFormula, inc: Incarnation) -> Directory:
    return Directory(kernel, await inc.provide(formula.petstore))


async def make_mailbox(kernel: Kernel, fid: str, formula: F.MailboxStoreFormula, inc: Incarnation) -> Mailbox:
    # Read when the agent is first used, not at start: mail of agents nobody uses costs no memory.
    return Mailbox(kernel, fid, kernel.db.load_mailbox(fid))


async def make_least_authority(
    kernel: Kernel, fid: str, formula: F.LeastAuthorityFormula, inc: Incarnation
) -> LeastAuthority:
    return LeastAuthority()


async def make_endo(kernel: Kernel, fid: str, formula: F.EndoFormula, inc: Incarnation) -> EndoPowers:
    return EndoPowers(kernel)


async def make_promise(kernel: Kernel, fid: str, formula: F.PromiseFormula, inc: Incarnation) -> Any:
    """A request's answer: the value its resolver wrote, or the error it was rejected with."""
    store: PetStore = await inc.provide(formula.store)
    while True:
        resolution = store.get("resolution")
        if resolution is not None:
            return await inc.provide(resolution)
        rejection = store.get("rejection")
        if rejection is not None:
            raise await kernel.provide(rejection)
        await store.wait_changed()


async def make_resolver(kernel: Kernel, fid: str, formula: F.ResolverFormula, inc: Incarnation) -> RequestResolver:
    return RequestResolver(kernel, await inc.provide(formula.store))


async def make_readable_blob(
    kernel: Kernel, fid: str, formula: F.ReadableBlobFormula, inc: Incarnation
) -> ReadableBlob:
    return ReadableBlob(kernel, formula.content)


async def make_text_store(kernel: Kernel, fid: str, formula: F.TextStoreFormula, inc: Incarnation) -> TextStore:
    return await TextStore.open(kernel, fid)


async def make_marshal(kernel: Kernel, fid: str, formula: F.MarshalFormula, inc: Incarnation) -> Any:
    """A stored copy of a value: decoded afresh, its capabilities provided from its slots."""
    slots = [await inc.provide(s) for s in formula.slots]
    return decode_stored(formula.body, lambda n: slots[n])


async def make_lookup(kernel: Kernel, fid: str, formula: F.LookupFormula, inc: Incarnation) -> Any:
    hub: NameHub = await inc.provide(formula.hub)
    return await hub.lookup(formula.path)
