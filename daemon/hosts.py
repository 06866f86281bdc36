"""Hosts: the user's agent — naming and mail, plus storage, workers, evaluation, guests and weblets.

A host can make things (formulas) and name them: stored blobs and values,
workers, evaluations, programs run with a power level (``NONE``, ``ENDO``,
``HOST`` or chosen names), guests, other hosts and weblets. Each such method
stages its formulas and names in one ``Txn`` and commits them together.
``stage_host`` makes the root host on first start.
"""

from __future__ import annotations

import math
import secrets
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import Promise, RemoteRef, encode, far, is_remotable

from . import formulas as F
from .directories import as_path
from .formulas import new_formula_id
from .guests import Agent
from .kernel import Cancelled
from .names import InvalidName, validate_pet_name
from .petstore import PetStore
from .values import ReadableBlob

if TYPE_CHECKING:
    from .kernel import Txn

__all__ = ["Host", "HostControl", "NameTaken", "POWER_LEVELS", "control", "stage_host"]

#: Power levels for make_unconfined / make_bundle / weblet install (DESIGN §4).
POWER_LEVELS = ("NONE", "ENDO", "HOST")


class NameTaken(ValueError):
    """A command would name its result with a name already in use, and was not asked to replace it."""


def _options(options: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The optional last argument of the making methods: a record of options, checked.

    ``replace`` (bool): the result's name may already be in use, and then names
    the new value (default: refuse, ``NameTaken``). ``timeout`` (seconds,
    evaluate and make): cancel the work, and stop its worker if it is still
    running, when it takes longer. ``output`` (evaluate only): a remotable
    with ``write(stream, text)`` that receives what the code prints
    (``stream`` is ``"stdout"`` or ``"stderr"``) while it runs. ``cancel``
    (evaluate and make): a promise; when it settles, either way, the work is
    cancelled as if its caller had gone away (a chat's Cancel button).
    """
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise TypeError("options must be a record (or null)")
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; expected {', '.join(allowed)}")
    if not isinstance(options.get("replace", False), bool):
        raise TypeError("the replace option is true or false")
    timeout = options.get("timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not math.isfinite(timeout) or timeout <= 0
    ):
        raise ValueError("the timeout option is a positive number of seconds")
    output = options.get("output")
    if output is not None and not (isinstance(output, RemoteRef) or is_remotable(output)):
        raise TypeError("the output option is an object with write(stream, text)")
    cancel = options.get("cancel")
    if cancel is not None and not isinstance(cancel, Promise):
        raise TypeError("the cancel option is a promise (settle it to cancel the work)")
    return dict(options)


@far("Host")
class Host(Agent):
    """The user's agent: naming, mail, storage, workers, evaluation and guests."""

    _formula: F.HostFormula

    def _specials(self) -> dict[str, str]:
        specials = super()._specials()
        specials["ENDO"] = self._formula.endo
        return specials

    # -- storage ----------------------------------------------------------------------
    async def store_blob(self, data: bytes, name: str | list[str] | None = None, options: Any = None) -> Any:
        """Store bytes (content-addressed) and name them ``name`` (a pet name or dotted path)."""
        replace = _options(options, ("replace",)).get("replace", False)
        if not isinstance(data, bytes):
            raise TypeError("store_blob takes bytes")
        await self._check_result_name(name, replace)
        sha = await self._kernel.db.put_blob(data)
        return await self._formulate_named(F.ReadableBlobFormula(content=sha), name, replace=replace)

    async def store_value(self, value: Any, name: str | list[str] | None = None, options: Any = None) -> Any:
        """Persist a copy of ``value`` (capabilities inside must have come from the daemon).

        ``name``: a pet name or a dotted path; an existing name is refused
        unless ``options`` says ``{"replace": true}``.
        """
        replace = _options(options, ("replace",)).get("replace", False)
        await self._check_result_name(name, replace)
        slots: list[str] = []

        def on_ref(obj: Any) -> int:
            fid = self._kernel.identify_value(obj)
            if fid is None:
                raise TypeError("cannot store a value holding a capability that did not come from the daemon")
            slots.append(fid)
            return len(slots) - 1

        from ocapd.captp.storage import encode_stored

        # The storage encoding, not a wire profile's: what is stored must read back after the wire changes.
        body = encode_stored(value, on_ref)
        return await self._formulate_named(F.MarshalFormula(body=body, slots=slots), name, replace=replace)

    async def make_text_store(self, name: str, text: str = "") -> Any:
        """A new text store (text that outlives restarts: ``get``, ``set``, ``append``) named ``name``."""
        validate_pet_name(name)
        if not isinstance(text, str):
            raise TypeError("make_text_store: the text must be a string")
        store = await self._formulate_named(F.TextStoreFormula(), name)
        if text:
            await store.set(text)
        return store

    async def _check_result_name(self, name: str | list[str] | None, replace: bool) -> None:
        """Refuse a result name that is invalid, or in use (unless ``replace``), before any work starts."""
        if name is None:
            return
        if isinstance(name, str) and "." not in name:
            validate_pet_name(name)  # a single name: the pet-name rule, said as such
        hub, last = await self._writable(name)
        if not replace and hub._store.has(last):
            raise NameTaken(f"{'.'.join(as_path(name))!r} already names something")

    async def _stage_result_name(
        self, txn: Txn, name: str | list[str] | None, fid: str, replace: bool
    ) -> list[tuple[PetStore, str, str | None, str]]:
        """Stage naming ``fid``; return how to undo it: (store, name, what it named before, fid)."""
        if name is None:
            return []
        await self._check_result_name(name, replace)
        hub, last = await self._writable(name)
        previous = hub._store.get(last)
        hub._store.stage_write(txn, last, fid)
        return [(hub._store, last, previous, fid)]

    async def _unname(self, undo: list[tuple[PetStore, str, str | None, str]]) -> None:
        """Give back what ``_stage_result_name`` (or a new worker's name) took, where it still holds."""
        txn = self._kernel.txn()
        for store, name, previous, fid in undo:
            if store.get(name) == fid:
                if previous is None:
                    store.stage_remove(txn, name)
                else:
                    store.stage_write(txn, name, previous)
        await self._kernel.commit(txn)

    async def _formulate_named(
        self, formula: F.Formula, name: str | list[str] | None, txn: Txn | None = None, *, replace: bool = False
    ) -> Any:
        """Commit ``formula`` (and what ``txn`` staged) with its name, then provide it."""
        txn = txn or self._kernel.txn()
        fid = txn.formula(formula)
        await self._stage_result_name(txn, name, fid, replace)
        await self._kernel.commit(txn)
        return await self._kernel.provide(fid)

    async def _make_named(
        self,
        formula: F.Formula,
        name: str | list[str] | None,
        txn: Txn,
        opts: dict[str, Any],
        what: str,
        worker: str | None,
    ) -> tuple[str, Any]:
        """Commit the work ``formula`` describes with its names, run it, and take the names back if it fails.

        The names are written first, so work in progress can be seen, cancelled
        by name and survives a restart (a ``make`` waiting for a request asks
        again). If it fails, times out or its caller goes away (Ctrl-C closes
        the CLI's session, which cancels this call), everything it made is
        cancelled — a fresh worker is terminated, work still running stops
        with its worker — and the names it took are given back: a failed
        command names nothing.
        """
        fid = txn.formula(formula)
        undo = await self._stage_result_name(txn, name, fid, opts.get("replace", False))
        worker_id = formula.worker  # type: ignore[union-attr]
        if worker not in (None, "MAIN") and worker_id in txn.formulas:  # a new named worker
            undo.append((self._store, ".".join(as_path(worker)), None, worker_id))
        await self._kernel.commit(txn)
        sinks = self._kernel.services.output_sinks
        output = opts.get("output")
        if output is not None:
            sinks.setdefault(fid, []).append(output)
        timeout = opts.get("timeout")
        try:
            with trio.CancelScope() as cancelled:
                if opts.get("cancel") is not None:
                    opts["cancel"].when_settled(lambda _settled: cancelled.cancel())
                with trio.move_on_after(math.inf if timeout is None else timeout):
                    return fid, await self._kernel.provide(fid)
                raise TimeoutError(f"{what} did not finish within {timeout:g} s and was cancelled")
            raise Cancelled(f"{what} was cancelled")
        except BaseException as e:
            if self._kernel.services.stopping:
                raise  # not a failure: the recipe and its names stay, and resume on next start
            why = "failed" if isinstance(e, Exception) else "its caller went away"
            with trio.CancelScope(shield=True):
                for staged in txn.formulas:
                    await self._kernel.cancel(staged, why)
                await self._unname(undo)
            raise
        finally:
            if output is not None:
                sinks.pop(fid, None)

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
        result_name: str | list[str] | None = None,
        options: Any = None,
    ) -> Any:
        """Evaluate Python ``source`` in a worker with named endowments.

        ``worker`` None means a fresh anonymous worker; ``MAIN`` the main
        worker; a new name makes a worker under that name. ``result_name``
        (a pet name or dotted path) names the result; if the evaluation fails
        the names it took are given back. ``options`` (a record, optional):
        ``replace``, ``timeout`` (seconds), ``output`` (an object with
        ``write(stream, text)`` receiving what the code prints) and
        ``cancel`` (a promise: settle it to cancel) — see ``_options``.
        """
        opts = _options(options, ("replace", "timeout", "output", "cancel"))
        if not isinstance(source, str):
            raise TypeError("evaluate: source must be a string")
        if len(code_names) != len(pet_paths):
            raise ValueError("evaluate: each code name needs a pet name")
        for n in code_names:
            if not isinstance(n, str) or not n.isidentifier():
                raise InvalidName(f"evaluate: {n!r} is not a valid Python name")
        await self._check_result_name(result_name, opts.get("replace", False))
        values = [await self._require_id(p) for p in pet_paths]
        txn = self._kernel.txn()
        worker_id = self._stage_worker(txn, worker)
        formula = F.EvalFormula(worker=worker_id, source=source, names=list(code_names), values=values)
        _fid, value = await self._make_named(formula, result_name, txn, opts, "the evaluation", worker)
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
        if introduced:
            # The store is not incarnated yet: its maker reads the names loaded at start, so add these.
            loaded = self._kernel.services.names
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
        result_name: str | list[str] | None = None,
        options: Any = None,
    ) -> Any:
        """Import ``specifier`` (a module file or name) in a worker and call its ``make(powers, context)``.

        A failure names nothing; ``options`` as for ``evaluate`` (``replace``, ``timeout``, ``cancel``).
        """
        opts = _options(options, ("replace", "timeout", "cancel"))
        if not isinstance(specifier, str) or not specifier:
            raise ValueError("make: give a module file or module name")
        await self._check_result_name(result_name, opts.get("replace", False))
        txn = self._kernel.txn()
        powers_id, _level = await self._powers_for(txn, powers, None)
        # Unconfined: the module runs with the worker's ambient OS authority
        # (it must at least read its own file); its capabilities are still
        # only ``powers``. Use make_bundle for code the OS should confine.
        worker_id = self._stage_worker(txn, worker, "HOST")
        formula = F.MakeUnconfinedFormula(worker=worker_id, powers=powers_id, specifier=specifier)
        return (await self._make_named(formula, result_name, txn, opts, "make()", worker))[1]

    async def make_bundle(
        self,
        worker: str | None,
        bundle: str | list[str],
        powers: str | list[str] = "NONE",
        result_name: str | list[str] | None = None,
        options: Any = None,
    ) -> Any:
        """Run a stored bundle (a zip blob) in a worker: its entry module's ``make(powers, context)``.

        A failure names nothing; ``options`` as for ``make_unconfined``.
        """
        opts = _options(options, ("replace", "timeout", "cancel"))
        bundle_id = await self._require_id(bundle)
        if self._kernel.type_of(bundle_id) != "readable-blob":
            raise TypeError(f"{bundle!r} is not a stored blob (use store --path first)")
        await self._check_result_name(result_name, opts.get("replace", False))
        txn = self._kernel.txn()
        powers_id, level = await self._powers_for(txn, powers, None)
        worker_id = self._stage_worker(txn, worker, level)
        formula = F.MakeBundleFormula(worker=worker_id, powers=powers_id, bundle=bundle_id)
        return (await self._make_named(formula, result_name, txn, opts, "make()", worker))[1]

    async def install_weblet(
        self, bundle: bytes | str | list[str], name: str, powers: str | list[str] = "NONE", options: Any = None
    ) -> Any:
        """Install a weblet: its own guest endowed by ``powers``, its bundle, its backend.

        ``bundle`` is the bundle's bytes (zip or single HTML file) or the name
        of a stored blob. Atomic: if any step fails nothing is left behind.
        The weblet is recorded in the registry (source ``file``) in the same
        transaction; ``weblets()`` installs from URLs and stores too. An
        existing ``name`` is refused unless ``options`` says ``{"replace": true}``.
        """
        from .registry import Source, registry_of

        replace = _options(options, ("replace",)).get("replace", False)
        validate_pet_name(name)
        if self._store.has(name) and not replace:
            raise NameTaken(f"{name!r} already names something")
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

    async def agent(self) -> Any:
        """The chat agent for this host: tool lists, messages to commands, permissions, the audit (docs/agent.md)."""
        agents = self._kernel.services.agent
        if agents is None:
            raise RuntimeError("this daemon runs without the chat agent")
        return await agents.for_host(self)

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

    # -- peers (OCapN, docs/ocapn.md) ------------------------------------------------------
    async def share(self, path: str | list[str]) -> str:
        """A new sturdyref for the value ``path`` names: its ``ocapn://…/s/…`` URI.

        Any peer that knows the URI can fetch the value, until the share is
        revoked (``revoke_share``). The daemon must be listening for peers.
        """
        from .peers import network_of, new_swiss

        fid = await self._require_id(path)
        network = await network_of(self._kernel)
        swiss = new_swiss()
        uri = network.sturdyref_uri(swiss)  # refused before anything is written if we do not listen
        txn = self._kernel.txn()
        share_id = txn.formula(F.ShareFormula(value=fid, swiss=swiss, host=self._id))
        txn.then(lambda: network.shared(swiss, share_id))
        await self._kernel.commit(txn)
        return uri

    def _my_shares(self) -> list[tuple[str, F.ShareFormula]]:
        return [
            (fid, f) for fid, f in list(self._kernel.formulas.items()) if isinstance(f, F.ShareFormula) and f.host == self._id
        ]

    async def list_shares(self) -> list[dict[str, Any]]:
        """This host's shares: id, URI (None while the daemon does not listen), the value's names,
        and the peers that fetched each (``fetched_by``: designator, first and last time, count)."""
        from .peers import PeerError, network_of

        network = await network_of(self._kernel)
        shares = []
        for fid, formula in self._my_shares():
            try:
                uri: str | None = network.sturdyref_uri(formula.swiss)
            except PeerError:
                uri = None
            shares.append({
                "id": fid, "uri": uri, "value": formula.value, "names": self._store.reverse(formula.value),
                "fetched_by": network.fetches.fetched_by(fid),
            })  # fmt: skip
        return shares

    async def revoke_share(self, what: str) -> int:
        """Revoke a sturdyref (its URI), or every share of the value a name names; how many were revoked.

        Peers can no longer fetch the value with it, and references to an
        object they already fetched fail from their next call (docs/ocapn.md).
        """
        from .peers import PeerError, network_of, stage_unshare, sturdyref_parts

        if not isinstance(what, str):
            raise TypeError("revoke_share takes a sturdyref URI or a name")
        if what.startswith("ocapn:"):
            swiss = sturdyref_parts(what)[1]
            doomed = [fid for fid, f in self._my_shares() if secrets.compare_digest(f.swiss, swiss)]
        else:
            value = await self._require_id(what)
            doomed = [fid for fid, f in self._my_shares() if f.value == value]
        if not doomed:
            raise PeerError(f"no share of yours matches {what[:80]!r}")
        network = await network_of(self._kernel)
        txn = self._kernel.txn()
        stage_unshare(self._kernel, network, txn, doomed)
        await self._kernel.commit(txn)
        return len(doomed)

    async def invite(self, guest_name: str) -> str:
        """An invitation for an agent on another daemon: its URI, for that agent's ``accept``.

        Once accepted (once), ``guest_name`` here names that agent: ``send``
        to it reaches its inbox, and its mail here shows as from ``guest_name``.
        """
        from .peer_mail import invite

        validate_pet_name(guest_name)
        if self._store.has(guest_name):
            raise NameTaken(f"{guest_name!r} already names something")
        return await invite(self._kernel, self._id, guest_name)

    async def accept(self, uri: str, name: str) -> None:
        """Accept an invitation from an agent on another daemon and name that agent ``name``."""
        from .peer_mail import accept
        from .peers import PeerError

        validate_pet_name(name)
        if self._store.has(name):
            raise NameTaken(f"{name!r} already names something")
        if not isinstance(uri, str):
            raise PeerError("accept takes an invitation's ocapn://…/s/… URI")
        await accept(self._kernel, self._id, uri, lambda txn, fid: self._store.stage_write(txn, name, fid))

    async def enliven(self, uri: str, name: str | list[str], options: Any = None) -> Any:
        """Name the object a sturdyref URI designates (a recipe: the peer's locator and the swiss number).

        The peer is dialed and the object fetched first: if that fails (the
        peer is unreachable, is not the key the URI names, or refuses the
        swiss number), nothing is named. Later uses dial again as needed.
        """
        from .peers import PeerError, sturdyref_parts

        replace = _options(options, ("replace",)).get("replace", False)
        if not isinstance(uri, str):
            raise PeerError("enliven takes an ocapn://…/s/… URI")
        locator, swiss = sturdyref_parts(uri)
        await self._check_result_name(name, replace)
        txn = self._kernel.txn()
        peer_id = next(
            (fid for fid, f in list(self._kernel.formulas.items()) if isinstance(f, F.PeerFormula) and f.locator == locator),
            None,
        ) or txn.formula(F.PeerFormula(locator=locator))
        fid = txn.formula(F.SturdyRefFormula(peer=peer_id, swiss=swiss))
        await self._stage_result_name(txn, name, fid, replace)
        return await self._kernel.provide_then_commit(txn, fid, "the enliven failed")

    async def cancel(self, path: str | list[str], reason: str = "cancelled") -> list[str]:
        """Cancel a value and everything that depends on it; the next use reincarnates.

        Work still running (an evaluation, a ``make``) is stopped by
        terminating its worker. Whoever waits for a cancelled value fails
        with ``Cancelled("<path> was cancelled")`` (plus the reason, if one was given).
        """
        fid = await self._require_id(path)
        return await self._kernel.cancel(fid, cancel_reason(".".join(as_path(path)), reason))


def cancel_reason(what: str, reason: str = "cancelled") -> str:
    """How a cancelled value's waiters are told: ``spin was cancelled`` (``: reason`` if one was given)."""
    reason = str(reason)
    return f"{what} was cancelled" if reason in ("", "cancelled") else f"{what} was cancelled: {reason}"


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


class HostControl:
    """What the daemon's own modules may do with a host that the host's holders may not.

    ``Host`` is a far object: every public method on it is callable by whoever
    holds the host. The weblet registry needs a few more things — staging
    names and powers inside its own transactions — which must not become
    remote methods. It gets them here, through ``control(host)``, instead of
    reaching into ``Host``'s private attributes.
    """

    def __init__(self, host: Host) -> None:
        self._host = host

    @property
    def id(self) -> str:
        """The host's formula id."""
        return self._host._id

    def has(self, name: str) -> bool:
        """Whether ``name`` (a single pet name) is in use in the host's own names."""
        return self._host._store.has(name)

    def names_of(self, fid: str) -> list[str]:
        """The host's own names for formula ``fid``."""
        return self._host._store.reverse(fid)

    def stage_name(self, txn: Txn, name: str, fid: str) -> None:
        """Name ``fid`` when ``txn`` commits."""
        self._host._store.stage_write(txn, name, fid)

    def stage_unname(self, txn: Txn, name: str) -> None:
        """Forget ``name`` when ``txn`` commits."""
        self._host._store.stage_remove(txn, name)

    async def stage_powers(
        self, txn: Txn, powers: str | list[str], introduce_host_as: str | None = None
    ) -> tuple[str, F.WorkerLevel]:
        """Stage the guest a power level implies (see ``Host._powers_for``); its id and the worker level."""
        return await self._host._powers_for(txn, powers, None, introduce_host_as=introduce_host_as)


def control(host: Host) -> HostControl:
    """The daemon-internal handle on ``host`` (see :class:`HostControl`)."""
    return HostControl(host)

