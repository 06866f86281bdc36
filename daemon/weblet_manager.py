"""The widget manager's surface for one host: what ``Host.weblets()`` returns, over CapTP or in process.

``WebletManager`` is a far object holding one host and the daemon's
registry (``registry.py``). The Chat page reaches it through its host
(``E(host).weblets()``), the CLI through the daemon's socket, and the
gateway's REST API (``gateway/api.py``) calls the same methods; so the three
always agree. Every value returned is plain JSON-ready data.

Install and update specs are dicts, the same as the REST bodies::

    {"url": "https://…", "name": "counter", "powers": "NONE"}
    {"store": "examples", "id": "counter", "version": "1.1.0"}      # version: default the newest
    {"name": "mine", "filename": "mine.zip"} + the bundle's bytes      # a file

Downloads report progress through a job (:class:`WebletJob`): ``start_install``
and ``start_update`` return one at once; ``next()`` yields
``{"progress": {"received", "total"}}`` events while the bundle arrives, then
``{"done": …}``; ``result()`` answers what ``install`` / ``update`` would
have (or raises their error).
"""

from __future__ import annotations

import builtins
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import far

from .hosts import control
from .petstore import ChangeStream
from .registry import BUILTINS, InvalidRequest, Source, WebletRegistry
from .weblet_settings import EXAMPLES_STORE

if TYPE_CHECKING:
    from .hosts import Host

__all__ = ["WebletJob", "WebletManager", "parse_powers"]

_SPEC_KEYS = {"url", "store", "id", "version", "name", "powers", "filename"}
_UPDATE_KEYS = {"version", "accept_powers"}
#: Progress events per download at most (one per percent), so a slow follower never falls far behind.
_PROGRESS_STEPS = 100


def parse_powers(value: Any) -> str | list[str]:
    """A power level (``NONE``, ``ENDO``, ``HOST``) or a list of pet names; ``NONE`` if None."""
    if value is None:
        return "NONE"
    if value in ("NONE", "ENDO", "HOST"):
        return str(value)
    if isinstance(value, (list, tuple)) and value and all(isinstance(p, str) for p in value):
        return list(value)
    raise InvalidRequest('powers must be "NONE", "ENDO", "HOST" or a list of pet names')


def _text(spec: dict[str, Any], key: str, limit: int = 2048) -> str | None:
    value = spec.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidRequest(f"{key!r} must be a non-empty string of at most {limit} characters")
    return value


@far("WebletJob")
class WebletJob:
    """A running install or update: follow its progress with ``next()``, get its outcome with ``result()``."""

    def __init__(self) -> None:
        self._events = ChangeStream()
        self._done = trio.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._last = -1
        self._unsent: dict[str, Any] | None = None  # the latest progress not pushed yet

    def progress(self, received: int, total: int | None) -> None:
        step = received * _PROGRESS_STEPS // total if total else received // (256 * 1024)
        event = {"progress": {"received": received, "total": total}}
        if step != self._last or (total is not None and received >= total):
            self._last, self._unsent = step, None
            self._events.push(event)
        else:
            self._unsent = event

    async def run(self, work: Callable[[], Awaitable[Any]]) -> None:
        try:
            try:
                self._result = await work()
            finally:
                if self._unsent is not None:  # the last bytes' count, when the size was not announced
                    self._events.push(self._unsent)
        except Exception as e:
            self._error = e
            self._events.push({"done": False, "error": type(e).__name__, "detail": str(e).splitlines()[0] if str(e) else ""})
        else:
            self._events.push({"done": True, "result": self._result})
        finally:
            self._done.set()
            self._events.close()

    async def next(self) -> dict[str, Any]:
        """The next event: ``{"done": False, "value": {"progress": …} | {"done": …}}``, or ``{"done": True}`` at the end."""
        return await self._events.next()

    async def result(self) -> Any:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def finished(self) -> bool:
        return self._done.is_set()


@far("WebletManager")
class WebletManager:
    """The widget manager of one host: its installed weblets, their panels, the stores."""

    def __init__(self, host: Host, registry: WebletRegistry) -> None:
        self._host = host
        self._registry = registry

    @property
    def _host_id(self) -> str:
        return control(self._host).id

    # -- reading --------------------------------------------------------------------------------------
    async def list(self) -> builtins.list[dict[str, Any]]:
        """Built-ins first, then installed weblets: manifest, source, version, enabled, panels, update badge."""
        return await self._registry.list(self._host_id)

    async def get(self, weblet_id: str) -> dict[str, Any]:
        for builtin in BUILTINS:
            if builtin.id == weblet_id:
                return self._registry.describe_builtin(builtin)
        record = self._registry.get(self._host_id, weblet_id)
        return self._registry.describe(record, await self._registry._update_badge(record))

    def manifests_for(self, panels: builtins.list[str]) -> builtins.list[dict[str, Any]]:
        """The read API for the chat agent: enabled manifests of the weblets with a panel among ``panels``."""
        if not isinstance(panels, (list, tuple)):
            raise InvalidRequest("give a list of panel ids")
        return self._registry.manifests_for(self._host_id, panels)

    # -- installing -----------------------------------------------------------------------------------
    async def install(self, spec: dict[str, Any], bundle: bytes | None = None) -> dict[str, Any]:
        """Install from a URL, a store, or ``bundle`` (a file's bytes); see the module docstring for ``spec``."""
        return await self._install(spec, bundle, None)

    def start_install(self, spec: dict[str, Any], bundle: bytes | None = None) -> WebletJob:
        """``install`` as a job, for progress: returns at once."""
        self._check_spec(spec, bundle)
        job = WebletJob()
        self._registry.kernel.nursery.start_soon(job.run, lambda: self._install(spec, bundle, job.progress))
        return job

    def _check_spec(self, spec: Any, bundle: bytes | None) -> dict[str, Any]:
        if not isinstance(spec, dict):
            raise InvalidRequest("give what to install as a record: {url} or {store, id, version?}, or a bundle")
        unknown = set(spec) - _SPEC_KEYS
        if unknown:
            raise InvalidRequest(f"unknown field {sorted(unknown)[0]!r} (known: {', '.join(sorted(_SPEC_KEYS))})")
        sources = [k for k in ("url", "store") if spec.get(k) is not None] + (["file"] if bundle is not None else [])
        if len(sources) != 1:
            raise InvalidRequest("give exactly one of: a url, a store and id, or a file")
        if bundle is not None and not isinstance(bundle, (bytes, bytearray)):
            raise InvalidRequest("the bundle must be bytes")
        if spec.get("store") is not None and spec.get("id") is None:
            raise InvalidRequest("installing from a store needs the weblet's id")
        return spec

    async def _install(self, spec: dict[str, Any], bundle: bytes | None, progress: Callable[[int, int | None], None] | None) -> dict[str, Any]:
        self._check_spec(spec, bundle)
        registry, host = self._registry, self._host
        name = _text(spec, "name", 128)
        powers = parse_powers(spec.get("powers"))
        if bundle is not None:
            filename = _text(spec, "filename", 255) or ""
            record = await registry.install(host, bytes(bundle), name, powers, Source("file", filename))
        elif spec.get("url") is not None:
            record = await registry.install_from_url(host, _text(spec, "url") or "", name, powers, progress)
        else:
            store, item, version = _text(spec, "store", 64), _text(spec, "id", 64), _text(spec, "version", 32)
            assert store is not None and item is not None
            record = await registry.install_from_store(host, store, item, version, name, powers, progress)
        return registry.describe(record)

    # -- changing ----------------------------------------------------------------------------------------
    async def enable(self, weblet_id: str, enabled: bool = True) -> dict[str, Any]:
        record = await self._registry.set_enabled(self._host_id, weblet_id, enabled)
        return self._registry.describe(record)

    async def disable(self, weblet_id: str) -> dict[str, Any]:
        return await self.enable(weblet_id, False)

    async def remove(self, weblet_id: str) -> dict[str, Any]:
        record = await self._registry.remove(self._host, weblet_id)
        return {"removed": record.id, "name": record.name}

    async def check_update(self, weblet_id: str, version: str | None = None) -> dict[str, Any]:
        """What updating would bring (store weblets): ``{"current", "version", "powers_added", "notes"}``."""
        return await self._registry.check_update(self._host_id, weblet_id, version)

    async def update(
        self, weblet_id: str, version: str | None = None, accept_powers: builtins.list[str] | None = None, bundle: bytes | None = None
    ) -> dict[str, Any]:
        """Update to the newest (or the given) version: ``{"weblet": …, "updated": bool}``.

        Raises ``PowersNeedConsent`` (nothing changes) if the new version asks for
        powers the installed one did not, unless ``accept_powers`` lists them all.
        """
        return await self._update(weblet_id, version, accept_powers, bundle, None)

    def start_update(
        self, weblet_id: str, version: str | None = None, accept_powers: builtins.list[str] | None = None, bundle: bytes | None = None
    ) -> WebletJob:
        job = WebletJob()
        self._registry.kernel.nursery.start_soon(job.run, lambda: self._update(weblet_id, version, accept_powers, bundle, job.progress))
        return job

    async def _update(
        self,
        weblet_id: str,
        version: str | None,
        accept_powers: builtins.list[str] | None,
        bundle: bytes | None,
        progress: Callable[[int, int | None], None] | None,
    ) -> dict[str, Any]:
        if version is not None and (not isinstance(version, str) or len(version) > 32):
            raise InvalidRequest("version must be a version string")
        accepted = accept_powers or []
        if not isinstance(accepted, (list, tuple)) or not all(isinstance(p, str) for p in accepted):
            raise InvalidRequest("accept_powers is a list of pet names")
        record, changed = await self._registry.update(
            self._host, weblet_id, version=version, accept_powers=accepted, bundle=bundle, progress=progress
        )
        return {"weblet": self._registry.describe(record), "updated": changed}

    # -- panels ------------------------------------------------------------------------------------------
    def instances(self, weblet_id: str) -> builtins.list[dict[str, Any]]:
        registry = self._registry
        record = registry.get(self._host_id, weblet_id)
        return [registry.describe_instance(i) for i in registry.instances_of(record.id)]

    async def create_instance(self, weblet_id: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
        """A new panel: ``{"panel", "label", "url", "config", …}``; it persists until removed."""
        instance = await self._registry.create_instance(self._host_id, weblet_id, config)
        return self._registry.describe_instance(instance)

    async def set_instance_config(self, weblet_id: str, panel: str, config: dict[str, Any]) -> dict[str, Any]:
        instance = await self._registry.set_instance_config(self._host_id, weblet_id, panel, config)
        return self._registry.describe_instance(instance)

    async def remove_instance(self, weblet_id: str, panel: str) -> dict[str, Any]:
        instance = await self._registry.remove_instance(self._host_id, weblet_id, panel)
        return {"removed": instance.panel}

    # -- stores ------------------------------------------------------------------------------------------
    def stores(self) -> builtins.list[str]:
        """The stores this daemon knows: ``examples`` and the operator's (weblets.json)."""
        return self._registry.store_names()

    async def store(self, name: str = EXAMPLES_STORE) -> dict[str, Any]:
        """A store's catalogue: each weblet's versions and powers, and what this host has installed of it."""
        if not isinstance(name, str):
            raise InvalidRequest("give a store's name")
        return await self._registry.store(self._host_id, name)
