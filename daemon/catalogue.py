"""The catalogue of capability types: each formula model beside the maker that incarnates it.

This table is the whole list. ``formulas`` holds the models (the recipes as
stored); the makers live with the values they make. The kernel is handed
this table (``run_daemon``) and incarnates a formula with the maker of its
model; a test checks that every model has a row. Adding a capability type =
one model in ``formulas`` + one row here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from . import formulas as F
from . import makers, peer_mail, peers, weblets, work
from .kernel import FormulaT, Maker

__all__ = ["MAKERS"]


def _row(model: type[FormulaT], maker: Maker[FormulaT]) -> tuple[type[F.FormulaModel], Maker[Any]]:
    # A function rather than a bare pair so that a type checker sees each
    # maker accept the model it stands beside.
    return model, maker


MAKERS: Mapping[type[F.FormulaModel], Maker[Any]] = dict([
    # agents, and what they are made of
    _row(F.HostFormula,            makers.make_host),             # the user
    _row(F.GuestFormula,           makers.make_guest),            # a confined agent
    _row(F.HandleFormula,          makers.make_handle),           # what others hold of an agent
    _row(F.PetStoreFormula,        makers.make_pet_store),        # names -> formula ids
    _row(F.DirectoryFormula,       makers.make_directory),        # a folder of names
    _row(F.MailboxStoreFormula,    makers.make_mailbox),          # an agent's mail
    # the daemon's own special powers
    _row(F.LeastAuthorityFormula,  makers.make_least_authority),  # NONE
    _row(F.EndoFormula,            makers.make_endo),             # ENDO
    # stored values, and requests' answers
    _row(F.MarshalFormula,         makers.make_marshal),          # a stored copy of a value
    _row(F.ReadableBlobFormula,    makers.make_readable_blob),    # stored bytes
    _row(F.TextStoreFormula,       makers.make_text_store),       # text its holders read and replace
    _row(F.LookupFormula,          makers.make_lookup),           # the value at a path
    _row(F.PromiseFormula,         makers.make_promise),          # a request's answer
    _row(F.ResolverFormula,        makers.make_resolver),         # the right to answer it
    # running code
    _row(F.WorkerFormula,          work.make_worker),             # a worker process
    _row(F.EvalFormula,            work.make_eval),               # source evaluated in a worker
    _row(F.MakeUnconfinedFormula,  work.make_unconfined),         # a module's make(powers, context)
    _row(F.MakeBundleFormula,      work.make_bundle),             # a stored bundle's make(powers, context)
    # web apps
    _row(F.WebletFormula,          weblets.make_weblet),          # guest + bundle + backend, served by the gateway
    # OCapN peers
    _row(F.PeerFormula,            peers.make_peer),              # a session to a peer, dialed on use
    _row(F.SturdyRefFormula,       peers.make_sturdyref),         # an object at a peer (locator + swiss number)
    _row(F.ShareFormula,           peers.make_share),             # a value offered to peers by swiss number
    _row(F.InvitationFormula,      peer_mail.make_invitation),    # an offer to an agent on another daemon
    _row(F.RemoteAgentFormula,     peers.make_sturdyref),         # an agent on another daemon (its peer inbox there)
    _row(F.PeerInboxFormula,       peer_mail.make_peer_inbox),    # where one remote agent's mail comes in
    _row(F.RemoteResolverFormula,  peer_mail.make_remote_resolver),  # how a remote agent answers our request
])  # fmt: skip
