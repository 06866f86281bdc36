"""Hosts: the user's agent — naming and mail, plus storage, workers, evaluation, guests and weblets.

A host can make things (formulas) and name them: stored blobs and values,
workers, evaluations, programs run with a power level (``NONE``, ``ENDO``,
``HOST`` or chosen names), guests, other hosts and weblets. Each such method
stages its formulas and names in one ``Txn`` and commits them together.
``stage_host`` makes the root host on first start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocapd.captp import encode, far

from . import formulas as F
from .directories import as_path
from .formulas import new_formula_id
from .guests import Agent
from .names import InvalidName, validate_pet_name
from .values import ReadableBlob

if TYPE_CHECKING:
    from .kernel import Txn

__all__ = ["Host", "POWER_LEVELS", "stage_host"]

#: Power levels for make_unconfined / make_bundle / weblet install (DESIGN §4).
POWER_LEVELS = ("NONE", "ENDO", "HOST")


@far("Host")
class Host(Agent):
    """The user's agent: naming, mail, storage, workers, evaluation and guests."""

    _formula: F.HostFormula

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

    async def make_text_store(self, name: str, text: str = "") -> Any:
        """A new text store (text that outlives restarts: ``get``, ``set``, ``append``) named ``name``."""
        validate_pet_name(name)
        if not isinstance(text, str):
            raise TypeError("make_text_store: the text must be a string")
        store = await self._formulate_named(F.TextStoreFormula(), name)
        if text:
            await store.set(text)
        return store

    async def _formulate_named(self, formula: F.Formula, name: str | None, txn: Txn | None = None) -> Any:
        txn = txn or self._kernel.txn()
        fid = txn.formula(formula)
        if name is not None:
            self._store.stage_write(txn, name, fid)
        await self._kernel.commit(txn)
        return await self._kernel.provide(fid)

    # -- workers and evaluation ---------------------------------------------------------
    def _stage_worker(self, txn: Txn, worker: str | None, level: F.WorkerLevel = "HOST") -> str:
        """The worker formula id for ``worker``: MAIN, an existing name, a new name, or None (fresh)."""
        if worker is None:
            return txn.formula(F.WorkerFormula(level=level))
        if worker == "MAIN":
            return self._formula.worker
        parts = as_path(worker)
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
    ) -> tuple[str, F.WorkerLevel]:
        """The powers formula for a power level, and the worker level it implies.

        HOST means the host's own agent, unless ``introduce_host_as`` is given:
        then a fresh guest (its own names and mailbox) holds the host's powers
        under that name — weblets always get a guest of their own.
        """
        introduced: dict[str, str] = {}
        level: F.WorkerLevel
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
        The weblet is recorded in the registry (source ``file``) in the same
        transaction; ``weblets()`` installs from URLs and stores too.
        """
        from .registry import Source, registry_of

        validate_pet_name(name)
        if self._store.has(name):
            raise ValueError(f"{name!r} already names something; remove it first or pick another name")
        if not isinstance(bundle, bytes):
            blob = await self.lookup(bundle)
            if not isinstance(blob, ReadableBlob):
                raise TypeError(f"{bundle!r} is not a stored bundle (store it with `ocapd store --path`)")
            bundle = await blob.bytes()
        registry = await registry_of(self._kernel)
        record = await registry.install(self, bundle, name, powers, Source("file", ""))
        return await self._kernel.provide(record.formula)

    async def weblets(self) -> Any:
        """The widget manager for this host: installed weblets, their panels, stores (``WebletManager``)."""
        from .registry import registry_of
        from .weblet_manager import WebletManager

        return WebletManager(self, await registry_of(self._kernel))

    async def inspect_weblet(self, bundle: bytes | str | list[str]) -> dict[str, Any]:
        """A weblet bundle's validated manifest, as install would store it; nothing is installed.

        For the install dialog, which shows what a weblet declares (WebRTC
        above all) before the user installs it. ``bundle`` as for install_weblet.
        """
        import trio

        from .weblet import read_bundle

        if not isinstance(bundle, bytes):
            blob = await self.lookup(bundle)
            if not isinstance(blob, ReadableBlob):
                raise TypeError(f"{bundle!r} is not a stored bundle (store it with `ocapd store --path`)")
            bundle = await blob.bytes()
        parsed = await trio.to_thread.run_sync(read_bundle, bundle)  # BundleError: one clear line
        return parsed.manifest.model_dump(mode="json")

    async def cancel(self, path: str | list[str], reason: str = "cancelled") -> list[str]:
        """Cancel a value and everything that depends on it; the next use reincarnates."""
        fid = await self._require_id(path)
        return await self._kernel.cancel(fid, str(reason))


def stage_host(txn: Txn, endo: str) -> str:
    """Stage the formulas of a new host (agent, handle, pet store, mailbox, main worker)."""

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
    try:
        encode(value)
    except TypeError:
        return True
    return False
