"""Agents: hosts (the user), guests (confined agents) and their handles.

Every agent has a pet store, a mailbox and a **handle**: the handle is the
only thing others get when they name the agent, and it has no methods. Mail
is delivered by the daemon from the sending agent to the recipient's
mailbox, stamped with the sender's handle id taken from the sending agent
itself, so it cannot be forged.

``Host`` offers the whole host surface; ``Guest`` only naming and mail. A
guest's ``HOST`` special name is its host's handle, never the host's powers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import RemoteError, far

from . import formulas as F
from .kernel import register_maker
from .mail import Mailbox, now_iso
from .names import InvalidName, parse_path, validate_pet_name
from .petstore import ChangeStream, PetStore

if TYPE_CHECKING:
    from .kernel import Incarnation, Kernel, Txn

__all__ = ["Host", "Guest", "Handle", "Directory", "NameHub", "POWER_LEVELS"]

#: Power levels for make_unconfined / make_bundle / weblet install (DESIGN §4).
POWER_LEVELS = ("NONE", "ENDO", "HOST")

#: Formula types whose values hold names, so dotted paths can walk through them.
_HUB_TYPES = frozenset({"directory", "host", "guest"})


def _as_path(path: str | list[str]) -> list[str]:
    if isinstance(path, str):
        return parse_path(path)
    if isinstance(path, (list, tuple)) and path and all(isinstance(p, str) for p in path):
        parse_path(".".join(path))  # same validation as the dotted form
        return list(path)
    raise InvalidName(f"invalid name path {path!r}: give a pet name or a dotted path")


class NameHub:
    """Naming shared by agents and directories: dotted paths through directories."""

    _kernel: Kernel
    _store: PetStore

    def _specials(self) -> dict[str, str]:
        return {}

    # -- resolution -------------------------------------------------------------
    def _id_here(self, name: str) -> str | None:
        special = self._specials().get(name)
        return special if special is not None else self._store.get(name)

    async def _hub(self, fid: str, name: str) -> NameHub:
        if self._kernel.type_of(fid) not in _HUB_TYPES:
            raise LookupError(f"{name!r} is not a directory or agent; cannot look inside it")
        hub = await self._kernel.provide(fid)
        assert isinstance(hub, NameHub)
        return hub

    async def _parent(self, path: list[str]) -> tuple[NameHub, str]:
        hub: NameHub = self
        for part in path[:-1]:
            fid = hub._id_here(part)
            if fid is None:
                raise LookupError(f"unknown name {part!r}")
            hub = await hub._hub(fid, part)
        return hub, path[-1]

    async def _identify(self, path: list[str]) -> str | None:
        hub, last = await self._parent(path)
        return hub._id_here(last)

    async def _require_id(self, path: str | list[str]) -> str:
        parts = _as_path(path)
        fid = await self._identify(parts)
        if fid is None:
            raise LookupError(f"unknown name {'.'.join(parts)!r}")
        return fid

    async def _writable(self, path: str | list[str]) -> tuple[NameHub, str]:
        parts = _as_path(path)
        hub, last = await self._parent(parts)
        validate_pet_name(last)  # special names are read-only
        return hub, last

    # -- the naming surface (public: these are remote methods) -------------------
    def list(self) -> list[str]:
        """Special names first, then pet names in order."""
        return sorted(self._specials()) + self._store.list()

    async def list_entries(self) -> list[dict[str, str]]:
        """Names with their formula type and id (for inventories)."""
        entries = []
        for name, fid in list(self._specials().items()) + self._store.items():
            ftype = self._kernel.formulas[fid].type if fid in self._kernel.formulas else "unknown"
            entries.append({"name": name, "type": ftype, "id": fid, "live": self._kernel.is_live(fid)})
        return entries

    async def describe(self, path: str | list[str]) -> dict[str, Any]:
        """The formula id and type a name refers to, and whether it is live."""
        fid = await self._require_id(path)
        return {"id": fid, "type": self._kernel.type_of(fid), "live": self._kernel.is_live(fid)}

    async def has(self, path: str | list[str]) -> bool:
        try:
            return await self._identify(_as_path(path)) is not None
        except LookupError:
            return False

    async def identify(self, path: str | list[str]) -> str | None:
        """The formula id at ``path``, or None."""
        return await self._identify(_as_path(path))

    async def locate(self, path: str | list[str]) -> str | None:
        fid = await self._identify(_as_path(path))
        if fid is None:
            return None
        return f"ocapd://local/{fid}?type={self._kernel.type_of(fid)}"

    async def lookup(self, path: str | list[str]) -> Any:
        """The value named by ``path`` (incarnated if needed)."""
        return await self._kernel.provide(await self._require_id(path))

    def reverse_lookup(self, value: Any) -> list[str]:
        fid = self._kernel.identify_value(value)
        if fid is None:
            return []
        return [n for n, i in self._specials().items() if i == fid] + self._store.reverse(fid)

    async def write(self, path: str | list[str], value: Any) -> None:
        """Name a value. It must have come from a formula (values made elsewhere cannot be named)."""
        fid = self._kernel.identify_value(value)
        if fid is None:
            raise TypeError("cannot name this value: it did not come from the daemon (store it first)")
        hub, last = await self._writable(path)
        await hub._store.write(last, fid)

    async def remove(self, path: str | list[str]) -> None:
        hub, last = await self._writable(path)
        if not hub._store.has(last):
            raise LookupError(f"unknown name {last!r}")
        await hub._store.remove(last)

    async def move(self, from_path: str | list[str], to_path: str | list[str]) -> None:
        """Rename within or across directories, atomically: the original stays if anything fails."""
        src, src_name = await self._writable(from_path)
        dst, dst_name = await self._writable(to_path)
        fid = src._store.get(src_name)
        if fid is None:
            raise LookupError(f"unknown name {src_name!r}")
        if src._store is dst._store:
            if src_name == dst_name:
                return
            txn = self._kernel.txn()
            if dst._store.has(dst_name):
                dst._store.stage_remove(txn, dst_name)
            src._store.stage_rename(txn, src_name, dst_name)
        else:
            txn = self._kernel.txn()
            dst._store.stage_write(txn, dst_name, fid)
            src._store.stage_remove(txn, src_name)
        await self._kernel.commit(txn)

    async def copy(self, from_path: str | list[str], to_path: str | list[str]) -> None:
        fid = await self._require_id(from_path)
        dst, dst_name = await self._writable(to_path)
        await dst._store.write(dst_name, fid)

    async def make_directory(self, path: str | list[str]) -> Any:
        """Make (or return the existing) directory at ``path``."""
        hub, last = await self._writable(path)
        existing = hub._store.get(last)
        if existing is not None:
            if self._kernel.type_of(existing) != "directory":
                raise ValueError(f"{last!r} already names something that is not a directory")
            return await self._kernel.provide(existing)
        txn = self._kernel.txn()
        store = txn.formula(F.PetStoreFormula())
        fid = txn.formula(F.DirectoryFormula(petstore=store))
        hub._store.stage_write(txn, last, fid)
        await self._kernel.commit(txn)
        return await self._kernel.provide(fid)

    async def follow_name_changes(self, path: str | list[str] | None = None) -> ChangeStream:
        """Existing names first (alphabetical), then each add/remove/rename once."""
        if path is None:
            return self._store.follow()
        fid = await self._require_id(path)
        hub = await self._hub(fid, str(path))
        return hub._store.follow()


@far("Directory")
class Directory(NameHub):
    def __init__(self, kernel: Kernel, store: PetStore) -> None:
        self._kernel = kernel
        self._store = store


@far("Handle")
class Handle:
    """What others hold of an agent: identity for mail, and no powers at all."""

    def __init__(self, kernel: Kernel, fid: str, agent_id: str) -> None:
        self._kernel = kernel
        self._id = fid
        self._agent_id = agent_id


class Agent(NameHub):
    """Naming and mail: everything hosts and guests share."""

    def __init__(self, kernel: Kernel, fid: str, formula: Any, store: PetStore, mailbox: Mailbox) -> None:
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
        return {
            "SELF": f.handle,
            "AGENT": self._id,
            "MAIN": f.worker,
            "NONE": self._kernel.services["least_authority"],
        }

    async def handle(self) -> Handle:
        return await self._kernel.provide(self._handle_id)

    # -- mail -------------------------------------------------------------------------
    async def _recipient(self, to: str | list[str]) -> tuple[str, Agent]:
        fid = await self._require_id(to)
        ftype = self._kernel.type_of(fid)
        if ftype in ("host", "guest"):
            fid = self._kernel.formula(fid).handle  # type: ignore[union-attr]
        elif ftype != "handle":
            raise TypeError(f"{to!r} is not an agent or a handle; mail goes to agents")
        agent_id = self._kernel.formula(fid).agent  # type: ignore[union-attr]
        agent = await self._kernel.provide(agent_id)
        return fid, agent

    def _describe_message(self, m: dict[str, Any]) -> dict[str, Any]:
        out = dict(m)
        names = [n for n, i in self._specials().items() if i == m["from"]] + self._store.reverse(m["from"])
        out["from_names"] = names
        return out

    def list_messages(self, after: int = -1, limit: int = 200) -> list[dict[str, Any]]:
        """One page of messages numbered above ``after`` (it always fits a frame); list again after the last."""
        return [self._describe_message(m) for m in self._mailbox.page(after, limit)]

    def follow_messages(self) -> ChangeStream:
        return self._mailbox.follow()

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
        to_handle, agent = await self._recipient(to)
        pending = agent._mailbox.find_request(self._handle_id, response_name) if response_name else None
        if pending is not None:
            promise_id = pending["promise"]
        else:
            # Refuse before making formulas for a request the mailbox would not take.
            placeholder = "0" * len(self._handle_id)
            agent._mailbox.check_quota({
                "type": "request", "from": self._handle_id, "to": to_handle, "date": now_iso(),
                "description": description, "promise": placeholder, "resolver": placeholder,
                "response_name": response_name, "settled": None,
            })
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
        value = await self._kernel.provide(promise_id)
        if response_name is not None:
            fid = self._kernel.identify_value(value) or await _resolution_id(self._kernel, promise_id)
            if fid is not None:
                await self._store.write(response_name, fid)
        return value

    async def _settle_request(self, number: int, resolution: str | None, reason: str | None) -> None:
        m = self._mailbox.get(number)
        if m["type"] != "request":
            raise TypeError(f"message {number} is not a request")
        if m.get("settled") is not None:
            raise ValueError(f"request {number} is already {m['settled']}")
        store: PetStore = await self._kernel.provide(self._kernel.formula(m["resolver"]).store)  # type: ignore[union-attr]
        txn = self._kernel.txn()
        if resolution is not None:
            store.stage_write(txn, "resolution", resolution)
        else:
            err = txn.formula(F.MarshalFormula(body=_encode(RemoteError("Error", reason or "rejected")), slots=[]))
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
        hub, last = await self._writable(path)
        await hub._store.write(last, fid)

    async def dismiss(self, number: int) -> None:
        await self._mailbox.dismiss(number)


@far("Guest")
class Guest(Agent):
    """A confined agent: naming and mail. ``HOST`` is the host's handle."""

    def _specials(self) -> dict[str, str]:
        specials = super()._specials()
        specials["HOST"] = self._formula.host_handle
        return specials


@far("Host")
class Host(Agent):
    """The user's agent: naming, mail, storage, workers, evaluation and guests."""

    def _specials(self) -> dict[str, str]:
        specials = super()._specials()
        specials["ENDO"] = self._formula.endo
        return specials

    # -- storage ----------------------------------------------------------------------
    async def store_blob(self, data: bytes, name: str | None = None) -> Any:
        if not isinstance(data, bytes):
            raise TypeError("store_blob takes bytes")
        if name is not None:
            validate_pet_name(name)
        sha = await self._kernel.db.put_blob(data)
        return await self._formulate_named(F.ReadableBlobFormula(content=sha), name)

    async def store_value(self, value: Any, name: str | None = None) -> Any:
        """Persist a copy of ``value`` (capabilities inside must have come from the daemon)."""
        if name is not None:
            validate_pet_name(name)
        slots: list[str] = []

        def on_ref(obj: Any) -> Any:
            fid = self._kernel.identify_value(obj)
            if fid is None:
                raise TypeError("cannot store a value holding a capability that did not come from the daemon")
            slots.append(fid)
            from ocapd.captp.codec import EXT_EXPORT, Desc

            return Desc(EXT_EXPORT, len(slots) - 1)

        from ocapd.captp import codec

        body = codec.encode(value, on_ref)
        return await self._formulate_named(F.MarshalFormula(body=body, slots=slots), name)

    async def _formulate_named(self, formula: Any, name: str | None, txn: Txn | None = None) -> Any:
        txn = txn or self._kernel.txn()
        fid = txn.formula(formula)
        if name is not None:
            self._store.stage_write(txn, name, fid)
        await self._kernel.commit(txn)
        return await self._kernel.provide(fid)

    # -- workers and evaluation ---------------------------------------------------------
    def _stage_worker(self, txn: Txn, worker: str | None, level: str = "HOST") -> str:
        """The worker formula id for ``worker``: MAIN, an existing name, a new name, or None (fresh)."""
        if worker is None:
            return txn.formula(F.WorkerFormula(level=level))
        if worker == "MAIN":
            return self._formula.worker
        parts = _as_path(worker)
        if len(parts) == 1:
            existing = self._id_here(parts[0])
            if existing is not None:
                if self._kernel.type_of(existing) != "worker":
                    raise TypeError(f"{worker!r} names a {self._kernel.type_of(existing)}, not a worker")
                return existing
            validate_pet_name(parts[0])
            fid = txn.formula(F.WorkerFormula(level=level))
            self._store.stage_write(txn, parts[0], fid)
            return fid
        raise InvalidName("a worker name must be a single pet name")

    async def provide_worker(self, name: str) -> Any:
        txn = self._kernel.txn()
        fid = self._stage_worker(txn, name)
        await self._kernel.commit(txn)
        return await self._kernel.provide(fid)

    async def evaluate(
        self,
        worker: str | None,
        source: str,
        code_names: list[str],
        pet_paths: list[str | list[str]],
        result_name: str | None = None,
    ) -> Any:
        """Evaluate Python ``source`` in a worker with named endowments.

        ``worker`` None means a fresh anonymous worker; ``MAIN`` the main
        worker; a new name makes a worker under that name.
        """
        if not isinstance(source, str):
            raise TypeError("evaluate: source must be a string")
        if len(code_names) != len(pet_paths):
            raise ValueError("evaluate: each code name needs a pet name")
        for n in code_names:
            if not isinstance(n, str) or not n.isidentifier():
                raise InvalidName(f"evaluate: {n!r} is not a valid Python name")
        if result_name is not None:
            validate_pet_name(result_name)
        values = [await self._require_id(p) for p in pet_paths]
        txn = self._kernel.txn()
        worker_id = self._stage_worker(txn, worker)
        formula = F.EvalFormula(worker=worker_id, source=source, names=list(code_names), values=values)
        value = await self._formulate_named(formula, result_name, txn)
        if worker is None and result_name is None and not _holds_references(value):
            # Nothing can reach this fresh worker any more: let it go now
            # rather than keep one idle process per `ocapd eval`.
            self._kernel.nursery.start_soon(self._kernel.cancel, worker_id, "anonymous worker done")
        return value

    async def _powers_for(
        self,
        txn: Txn,
        powers: str | list[str],
        handle_name: str | None,
        introduce_host_as: str | None = None,
    ) -> tuple[str, str]:
        """The powers formula for a power level, and the worker level it implies.

        HOST means the host's own agent, unless ``introduce_host_as`` is given:
        then a fresh guest (its own names and mailbox) holds the host's powers
        under that name — weblets always get a guest of their own.
        """
        introduced: dict[str, str] = {}
        if powers == "HOST":
            if introduce_host_as is None:
                return self._id, "HOST"
            introduced[introduce_host_as] = self._id
            return self._stage_guest(txn, handle_name, None, introduced), "HOST"
        if powers == "ENDO":
            introduced["ENDO"] = self._formula.endo
            level = "ENDO"
        elif powers == "NONE":
            level = "NONE"
        elif isinstance(powers, (list, tuple)) and all(isinstance(p, str) for p in powers):
            for p in powers:
                introduced[validate_pet_name(p)] = await self._require_id(p)
            level = "CUSTOM"
        else:
            raise ValueError("powers must be NONE, ENDO, HOST or a list of pet names")
        guest_id = self._stage_guest(txn, handle_name, None, introduced)
        return guest_id, level

    def _stage_guest(
        self, txn: Txn, handle_name: str | None, agent_name: str | None, introduced: dict[str, str]
    ) -> str:
        from .formulas import new_formula_id

        guest_id, handle_id = new_formula_id(), new_formula_id()
        store = txn.formula(F.PetStoreFormula())
        mailbox = txn.formula(F.MailboxStoreFormula())
        worker = txn.formula(F.WorkerFormula(level="NONE"))
        txn.formula(F.HandleFormula(agent=guest_id), handle_id)
        txn.formula(
            F.GuestFormula(
                handle=handle_id, host_handle=self._formula.handle, petstore=store, mailbox=mailbox, worker=worker
            ),
            guest_id,
        )
        for guest_name, fid in introduced.items():
            txn.batch.set_name(store, guest_name, fid)
        if introduced:
            # The store is not incarnated yet: its maker reads the names loaded at start, so add these.
            loaded = self._kernel.services.setdefault("names", {})
            txn.then(lambda: loaded.setdefault(store, {}).update(introduced))
        if handle_name is not None:
            self._store.stage_write(txn, handle_name, handle_id)
        if agent_name is not None:
            self._store.stage_write(txn, agent_name, guest_id)
        return guest_id

    async def provide_guest(
        self, handle_name: str, agent_name: str | None = None, introduced: dict[str, str] | None = None
    ) -> Any:
        """Make (or return) a guest: its handle is named ``handle_name``, its powers ``agent_name``.

        ``introduced`` maps host names to the names the guest will see them under.
        """
        validate_pet_name(handle_name)
        if agent_name is not None:
            validate_pet_name(agent_name)
        existing = self._store.get(agent_name) if agent_name else None
        if existing is not None:
            if self._kernel.type_of(existing) != "guest":
                raise TypeError(f"{agent_name!r} already names something that is not a guest")
            return await self._kernel.provide(existing)
        names = {validate_pet_name(g): await self._require_id(h) for h, g in (introduced or {}).items()}
        txn = self._kernel.txn()
        guest_id = self._stage_guest(txn, handle_name, agent_name, names)
        await self._kernel.commit(txn)
        return await self._kernel.provide(guest_id)

    async def provide_host(self, handle_name: str, agent_name: str | None = None) -> Any:
        """Make (or return) another host agent, sharing this daemon."""
        validate_pet_name(handle_name)
        if agent_name is not None:
            validate_pet_name(agent_name)
            existing = self._store.get(agent_name)
            if existing is not None:
                if self._kernel.type_of(existing) != "host":
                    raise TypeError(f"{agent_name!r} already names something that is not a host")
                return await self._kernel.provide(existing)
        txn = self._kernel.txn()
        host_id = stage_host(txn, endo=self._formula.endo)
        handle_id = txn.formulas[host_id].handle  # type: ignore[union-attr]
        self._store.stage_write(txn, handle_name, handle_id)
        if agent_name is not None:
            self._store.stage_write(txn, agent_name, host_id)
        await self._kernel.commit(txn)
        return await self._kernel.provide(host_id)

    async def make_unconfined(
        self,
        worker: str | None,
        specifier: str,
        powers: str | list[str] = "NONE",
        result_name: str | None = None,
    ) -> Any:
        """Import ``specifier`` (a module file or name) in a worker and call its ``make(powers, context)``."""
        if not isinstance(specifier, str) or not specifier:
            raise ValueError("make: give a module file or module name")
        if result_name is not None:
            validate_pet_name(result_name)
        txn = self._kernel.txn()
        powers_id, _level = await self._powers_for(txn, powers, None)
        # Unconfined: the module runs with the worker's ambient OS authority
        # (it must at least read its own file); its capabilities are still
        # only ``powers``. Use make_bundle for code the OS should confine.
        worker_id = self._stage_worker(txn, worker, "HOST")
        formula = F.MakeUnconfinedFormula(worker=worker_id, powers=powers_id, specifier=specifier)
        return await self._formulate_named(formula, result_name, txn)

    async def make_bundle(
        self,
        worker: str | None,
        bundle: str | list[str],
        powers: str | list[str] = "NONE",
        result_name: str | None = None,
    ) -> Any:
        """Run a stored bundle (a zip blob) in a worker: its entry module's ``make(powers, context)``."""
        bundle_id = await self._require_id(bundle)
        if self._kernel.type_of(bundle_id) != "readable-blob":
            raise TypeError(f"{bundle!r} is not a stored blob (use store --path first)")
        if result_name is not None:
            validate_pet_name(result_name)
        txn = self._kernel.txn()
        powers_id, level = await self._powers_for(txn, powers, None)
        worker_id = self._stage_worker(txn, worker, level)
        formula = F.MakeBundleFormula(worker=worker_id, powers=powers_id, bundle=bundle_id)
        return await self._formulate_named(formula, result_name, txn)

    async def install_weblet(self, bundle: bytes | str | list[str], name: str, powers: str | list[str] = "NONE") -> Any:
        """Install a weblet: its own guest endowed by ``powers``, its bundle, its backend.

        ``bundle`` is the bundle's bytes (zip or single HTML file) or the name
        of a stored blob. Atomic: if any step fails nothing is left behind.
        """
        from .weblets import install_weblet

        validate_pet_name(name)
        if self._store.has(name):
            raise ValueError(f"{name!r} already names something; remove it first or pick another name")
        if not isinstance(bundle, bytes):
            blob = await self.lookup(bundle)
            if not isinstance(blob, ReadableBlob):
                raise TypeError(f"{bundle!r} is not a stored bundle (store it with `ocapd store --path`)")
            bundle = await blob.bytes()
        return await install_weblet(self, bundle, name, powers)

    async def cancel(self, path: str | list[str], reason: str = "cancelled") -> list[str]:
        """Cancel a value and everything that depends on it; the next use reincarnates."""
        fid = await self._require_id(path)
        return await self._kernel.cancel(fid, str(reason))


def stage_host(txn: Txn, endo: str) -> str:
    """Stage the formulas of a new host (agent, handle, pet store, mailbox, main worker)."""
    from .formulas import new_formula_id

    host_id, handle_id = new_formula_id(), new_formula_id()
    store = txn.formula(F.PetStoreFormula())
    mailbox = txn.formula(F.MailboxStoreFormula())
    worker = txn.formula(F.WorkerFormula(level="HOST"))
    txn.formula(F.HandleFormula(agent=host_id), handle_id)
    txn.formula(
        F.HostFormula(handle=handle_id, petstore=store, mailbox=mailbox, worker=worker, endo=endo), host_id
    )
    return host_id


def _holds_references(value: Any) -> bool:
    from ocapd.captp import codec

    try:
        codec.encode(value)
    except TypeError:
        return True
    return False


def _encode(value: Any) -> bytes:
    from ocapd.captp import codec

    return codec.encode(value)


async def _resolution_id(kernel: Kernel, promise_id: str) -> str | None:
    store: PetStore = await kernel.provide(kernel.formula(promise_id).store)  # type: ignore[union-attr]
    return store.get("resolution")


# ---------------------------------------------------------------------------
# Makers


@register_maker("pet-store")
async def _make_pet_store(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> PetStore:
    return PetStore(kernel, fid, kernel.services["names"].get(fid, {}))


@register_maker("mailbox-store")
async def _make_mailbox(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Mailbox:
    # Read when the agent is first used, not at start: mail of agents nobody uses costs no memory.
    return Mailbox(kernel, fid, kernel.db.load_mailbox(fid))


@register_maker("directory")
async def _make_directory(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Directory:
    return Directory(kernel, await inc.provide(formula.petstore))


@register_maker("handle")
async def _make_handle(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Handle:
    return Handle(kernel, fid, formula.agent)


@register_maker("host")
async def _make_host(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Host:
    store = await inc.provide(formula.petstore)
    mailbox = await inc.provide(formula.mailbox)
    return Host(kernel, fid, formula, store, mailbox)


@register_maker("guest")
async def _make_guest(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Guest:
    store = await inc.provide(formula.petstore)
    mailbox = await inc.provide(formula.mailbox)
    return Guest(kernel, fid, formula, store, mailbox)


@far("LeastAuthority")
class LeastAuthority:
    """NONE: a capability that grants nothing."""


@register_maker("least-authority")
async def _make_least_authority(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    return LeastAuthority()


@far("Endo")
class EndoPowers:
    """ENDO: the daemon's network-facing surface (peers arrive with the peer-network work)."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    def ping(self) -> str:
        return "pong"


@register_maker("endo")
async def _make_endo(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    return EndoPowers(kernel)


@register_maker("promise")
async def _make_promise(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    store: PetStore = await inc.provide(formula.store)
    while True:
        resolution = store.get("resolution")
        if resolution is not None:
            return await inc.provide(resolution)
        rejection = store.get("rejection")
        if rejection is not None:
            raise await kernel.provide(rejection)
        await store.wait_changed()


@far("Resolver")
class _RequestResolver:
    def __init__(self, kernel: Kernel, store: PetStore) -> None:
        self._kernel = kernel
        self._store = store

    async def resolve(self, value: Any) -> None:
        fid = self._kernel.identify_value(value)
        if fid is None:
            raise TypeError("resolve: the value did not come from the daemon")
        await self._store.write("resolution", fid)

    async def reject(self, reason: str = "rejected") -> None:
        fid = await self._kernel.formulate(F.MarshalFormula(body=_encode(RemoteError("Error", str(reason))), slots=[]))
        await self._store.write("rejection", fid)


@register_maker("resolver")
async def _make_resolver(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    return _RequestResolver(kernel, await inc.provide(formula.store))


@far("ReadableBlob")
class ReadableBlob:
    def __init__(self, kernel: Kernel, sha: str) -> None:
        self._kernel = kernel
        self._sha = sha

    def sha256(self) -> str:
        return self._sha

    async def bytes(self) -> bytes:
        return await trio.to_thread.run_sync(self._kernel.db.read_blob, self._sha)

    async def text(self) -> str:
        return (await self.bytes()).decode("utf-8")


@register_maker("readable-blob")
async def _make_blob(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    return ReadableBlob(kernel, formula.content)


@register_maker("marshal")
async def _make_marshal(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    from ocapd.captp import codec

    slots = [await inc.provide(s) for s in formula.slots]
    return codec.decode(formula.body, lambda d: slots[d.position])


@register_maker("lookup")
async def _make_lookup(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Any:
    hub = await inc.provide(formula.hub)
    return await hub.lookup(formula.path)

