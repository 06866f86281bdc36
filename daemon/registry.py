"""The weblet registry: which weblets each host has installed, from where, enabled or not, and their open panels.

This is the server-side truth seed 000 asks for. Two tables of the daemon's
database file, kept by the registry's own migrations (namespace
``"weblets"``, so they evolve without renumbering the daemon's schema):

- ``installed_weblets`` — one row per installed weblet of a host: a stable id
  (32 hex; it survives updates, which replace the weblet *formula*), the pet
  name and slug it was installed as, the current weblet formula, where it
  came from (``file`` | ``url`` | ``store`` and a reference: the URL, the
  store and item, the file's name), its version, the validated manifest and
  its hash, the bundle digest, ``enabled``, created/updated times.
- ``weblet_instances`` — one row per panel: a panel id ``<slug>-<12 hex>``
  unique per daemon, the origin label (32 hex: the panel's origin is
  ``http://<label>.localhost:PORT``), the instance's config (JSON), times.
  Rows outlive restarts and page reloads, so the same panels come back on
  the same origins; the gateway serves a label again on first request.

Everything is loaded into memory when the registry opens (the daemon's
"load, then only write" model); every change is written first and applied to
memory after its commit. Installs and updates write their rows in the same
transaction as the weblet's formulas and names (``Kernel.provide_then_commit``),
so nothing is left behind on failure, not even after ``kill -9``.

Built-in weblets (the inventory and the inbox) are code: they appear in every
host's list marked ``builtin`` with fixed panel ids, and declare read-only
commands for the agent.

The **read API** for the chat agent is :meth:`WebletRegistry.manifests_for`:
the enabled manifests of a host's weblets that have an instance among the
panel ids the page says are visible. A per-host table (panel -> manifest) is
cached for ``manifest_cache_ttl`` seconds (weblets.json; default 300) and
dropped at once by every install, uninstall, enable, disable, update and
instance change.

Weblets installed before the registry existed (or by code that bypassed it)
are adopted when the registry opens: every weblet formula a host names in its
own pet store and the registry does not know gets a row (source ``file``).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import re
import secrets
import time
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import trio

from . import formulas as F
from .hosts import control
from .names import validate_pet_name
from .weblet import WebletManifest, parse_manifest
from .weblet_fetch import SYSTEM_NETWORK, FetchPolicy, Network, fetch_weblet
from .weblet_settings import WebletSettings, load_settings
from .weblet_store import LoadedCatalogue, fetch_store_bundle, load_catalogue, version_key
from .weblets import StoredWeblet, store_weblet_bundle

if TYPE_CHECKING:
    import sqlite3

    from .db import Migration
    from .hosts import Host
    from .kernel import Kernel

__all__ = [
    "BUILTINS", "SCHEMA_NAMESPACE", "MIGRATIONS", "Builtin", "Conflict", "InstalledWeblet", "Instance", "InvalidRequest",
    "ManagerError", "NotFound", "PowersNeedConsent", "Source", "WebletRegistry", "manifest_hash", "registry_of",
]  # fmt: skip

log = logging.getLogger("ocapd.weblets")

SCHEMA_NAMESPACE = "weblets"
#: Bytes of one instance's config, encoded as JSON: settings, not data.
MAX_CONFIG_BYTES = 16 * 1024
#: Panels per weblet: a page shows a few; this bounds a runaway client.
MAX_INSTANCES_PER_WEBLET = 64
#: Kinds whose weblets have panels: the gateway serves ``iframe`` and
#: ``iframe-external`` ones on their origin; a ``projection-only`` panel is drawn
#: by the Chat page from its backend's projection (its row keeps it across reloads).
PANEL_KINDS = ("iframe", "iframe-external", "projection-only")
#: How long a store's catalogue is reused for the list's update badges.
CATALOGUE_MAX_AGE = 300.0
SourceType = Literal["file", "url", "store"]

_HEX = "length({0}) = {1} AND {0} NOT GLOB '*[^0-9a-f]*'"


def _schema_1(db: sqlite3.Connection) -> None:
    """Installed weblets and their instances (seed 000's installed_widgets / widget_instances)."""
    db.execute(
        f"""CREATE TABLE installed_weblets (
            id TEXT PRIMARY KEY NOT NULL CHECK ({_HEX.format("id", 32)}),
            host TEXT NOT NULL CHECK ({_HEX.format("host", 64)}),
            formula TEXT NOT NULL UNIQUE CHECK ({_HEX.format("formula", 64)}),  -- the current weblet formula
            name TEXT NOT NULL,            -- the pet name it was installed as
            slug TEXT NOT NULL,            -- stem of its panel ids
            source TEXT NOT NULL CHECK (source IN ('file', 'url', 'store')),
            source_ref TEXT NOT NULL,      -- file name, URL, or the bundle's reference in the store
            store TEXT,                    -- source 'store': the store's name ...
            store_item TEXT,               -- ... and the weblet's id in its catalogue
            version TEXT NOT NULL,
            manifest TEXT NOT NULL,        -- validated, normalized, JSON
            manifest_hash TEXT NOT NULL CHECK ({_HEX.format("manifest_hash", 64)}),
            digest TEXT NOT NULL,          -- the bundle's content digest
            enabled INTEGER NOT NULL CHECK (enabled IN (0, 1)),
            created REAL NOT NULL,
            updated REAL NOT NULL,
            UNIQUE (host, slug)
        )"""
    )
    db.execute(
        f"""CREATE TABLE weblet_instances (
            panel TEXT PRIMARY KEY NOT NULL,
            weblet TEXT NOT NULL CHECK ({_HEX.format("weblet", 32)}),
            label TEXT NOT NULL UNIQUE CHECK ({_HEX.format("label", 32)}),
            config TEXT NOT NULL,          -- JSON object
            created REAL NOT NULL,
            updated REAL NOT NULL
        )"""
    )
    db.execute("CREATE INDEX weblet_instances_by_weblet ON weblet_instances (weblet)")


#: MIGRATIONS[n] takes the registry's tables from version n to n + 1. Append, never edit.
MIGRATIONS: list[Migration] = [_schema_1]

_WEBLET_COLUMNS = (
    "id, host, formula, name, slug, source, source_ref, store, store_item, version, manifest, manifest_hash, digest, enabled, created, updated"
)
_PUT_WEBLET = f"INSERT OR REPLACE INTO installed_weblets ({_WEBLET_COLUMNS}) VALUES ({', '.join('?' * 16)})"
_DELETE_WEBLET = "DELETE FROM installed_weblets WHERE id = ?"
_PUT_INSTANCE = "INSERT OR REPLACE INTO weblet_instances (panel, weblet, label, config, created, updated) VALUES (?, ?, ?, ?, ?, ?)"
_DELETE_INSTANCE = "DELETE FROM weblet_instances WHERE panel = ?"
_DELETE_INSTANCES_OF = "DELETE FROM weblet_instances WHERE weblet = ?"


# ---- errors: one line each, and what a REST client should see -----------------------------------
class ManagerError(Exception):
    """A request to the widget manager that cannot be done; the message is one line for the user."""

    status = 400
    code = "bad_request"


class InvalidRequest(ManagerError, ValueError):
    pass


class NotFound(ManagerError, LookupError):
    status = 404
    code = "not_found"


class Conflict(ManagerError):
    status = 409
    code = "conflict"


class PowersNeedConsent(Conflict):
    """An update's new version asks for powers the installed one did not: ask the user, then update again accepting them."""

    code = "powers_consent_required"

    def __init__(self, message: str, powers: list[str], version: str) -> None:
        super().__init__(message)
        self.powers = powers
        self.version = version


# ---- records ---------------------------------------------------------------------------------------
def manifest_hash(manifest: dict[str, Any]) -> str:
    """The sha256 of a manifest's canonical JSON: what changes when anything the user was shown changes."""
    text = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Source:
    """Where a weblet came from."""

    type: SourceType
    ref: str = ""  # the file's name, the URL, or the bundle's reference in the store
    store: str | None = None
    item: str | None = None


@dataclass
class InstalledWeblet:
    id: str
    host: str
    formula: str
    name: str
    slug: str
    source: Source
    version: str
    manifest: dict[str, Any]
    manifest_hash: str
    digest: str
    enabled: bool
    created: float
    updated: float
    lock: trio.Lock = field(default_factory=trio.Lock, repr=False, compare=False)

    def row(self) -> tuple[Any, ...]:
        return (
            self.id, self.host, self.formula, self.name, self.slug, self.source.type, self.source.ref, self.source.store,
            self.source.item, self.version, json.dumps(self.manifest, sort_keys=True), self.manifest_hash, self.digest,
            int(self.enabled), self.created, self.updated,
        )  # fmt: skip


@dataclass
class Instance:
    panel: str
    weblet: str  # InstalledWeblet.id
    label: str
    config: dict[str, Any]
    created: float
    updated: float

    def row(self) -> tuple[Any, ...]:
        return (self.panel, self.weblet, self.label, json.dumps(self.config, sort_keys=True), self.created, self.updated)


@dataclass(frozen=True)
class Builtin:
    """A weblet that is code: always installed, always enabled, one fixed panel per host."""

    id: str
    panel: str
    manifest: dict[str, Any]
    manifest_hash: str


def _builtin(id: str, manifest: dict[str, Any]) -> Builtin:
    normalized = parse_manifest(manifest, where=f"the built-in {id}").model_dump(mode="json")
    return Builtin(id=id, panel=id, manifest=normalized, manifest_hash=manifest_hash(normalized))


#: The Chat UI's own panels, seed 000's "Option B": code-registered, listed with the rest.
BUILTINS: tuple[Builtin, ...] = (
    _builtin("inventory", {
        "kind": "native", "title": "Inventory", "version": "1.0.0",
        "description": "Everything you hold, by name and type.",
        "interface": {
            "description": "The host's names: capabilities, values, weblets, agents.",
            "commands": {"list": {"description": "List the names in the inventory, with their types.", "readOnly": True}},
        },
    }),
    _builtin("inbox", {
        "kind": "native", "title": "Inbox", "version": "1.0.0",
        "description": "Messages and requests sent to you.",
        "interface": {
            "description": "The host's mail: messages, and requests waiting for an answer.",
            "commands": {"pending": {"description": "Show the requests waiting for an answer.", "readOnly": True}},
        },
    }),
)  # fmt: skip
_BUILTIN_BY_ID = {b.id: b for b in BUILTINS}


def _slugify(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40].strip("-")
    return slug or "weblet"


# ---- the registry ------------------------------------------------------------------------------------
_open_locks: weakref.WeakKeyDictionary[Any, trio.Lock] = weakref.WeakKeyDictionary()


async def registry_of(kernel: Kernel) -> WebletRegistry:
    """The kernel's registry, opened (tables migrated, rows loaded, old weblets adopted) on first use."""
    registry = kernel.services.weblet_registry
    if registry is not None:
        return registry
    lock = _open_locks.setdefault(kernel, trio.Lock())
    async with lock:
        if kernel.services.weblet_registry is None:
            kernel.services.weblet_registry = await WebletRegistry.open(kernel)
    registry = kernel.services.weblet_registry
    assert registry is not None
    return registry


@dataclass
class _AgentTable:
    expires: float
    panels: dict[str, tuple[str, dict[str, Any]]]  # panel -> (weblet id, what the agent sees of it)


class WebletRegistry:
    """Installed weblets and their instances, for every host of one daemon."""

    def __init__(self, kernel: Kernel) -> None:
        """Use :meth:`open`."""
        self.kernel = kernel
        self.db = kernel.db
        self._weblets: dict[str, InstalledWeblet] = {}
        self._by_formula: dict[str, str] = {}
        self._instances: dict[str, Instance] = {}
        self._by_label: dict[str, str] = {}
        self._agent_tables: dict[str, _AgentTable] = {}
        self._catalogues: dict[str, tuple[float, LoadedCatalogue]] = {}
        #: How names are resolved and connections made for URL and store installs (tests replace it).
        self.network: Network = SYSTEM_NETWORK
        #: Replaces the settings file's fetch policy (tests).
        self.fetch_policy: FetchPolicy | None = None
        self.clock: Callable[[], float] = time.monotonic

    @classmethod
    async def open(cls, kernel: Kernel) -> WebletRegistry:
        await kernel.db.migrate_namespace(SCHEMA_NAMESPACE, MIGRATIONS)
        registry = cls(kernel)
        registry._load()
        await registry._adopt()
        return registry

    def _load(self) -> None:
        for row in self.db.select(f"SELECT {_WEBLET_COLUMNS} FROM installed_weblets ORDER BY created, id"):
            (wid, host, formula, name, slug, stype, ref, store, item, version, manifest, mhash, digest, enabled, created, updated) = row
            record = InstalledWeblet(
                id=wid, host=host, formula=formula, name=name, slug=slug, source=Source(stype, ref, store, item),
                version=version, manifest=json.loads(manifest), manifest_hash=mhash, digest=digest,
                enabled=bool(enabled), created=float(created), updated=float(updated),
            )  # fmt: skip
            self._weblets[wid] = record
            self._by_formula[formula] = wid
        for panel, weblet, label, config, created, updated in self.db.select(
            "SELECT panel, weblet, label, config, created, updated FROM weblet_instances ORDER BY created, panel"
        ):
            if weblet not in self._weblets:
                continue  # its weblet is gone (rows are removed together; never expected)
            self._instances[panel] = Instance(panel, weblet, label, json.loads(config), float(created), float(updated))
            self._by_label[label] = panel

    async def _adopt(self) -> None:
        """Give a row to every weblet a host names that the registry does not know (older state folders)."""
        kernel = self.kernel
        hosts = {fid: f for fid, f in kernel.formulas.items() if isinstance(f, F.HostFormula)}
        if not hosts:
            return
        names = self.db.load_names()
        batch = self.db.batch()
        adopted: list[InstalledWeblet] = []
        seen: set[str] = set()
        now = time.time()
        for host_id, host in hosts.items():
            for name, fid in sorted(names.get(host.petstore, {}).items()):
                formula = kernel.formulas.get(fid)
                if not isinstance(formula, F.WebletFormula) or fid in self._by_formula or fid in seen:
                    continue
                seen.add(fid)
                manifest = dict(formula.manifest)
                record = InstalledWeblet(
                    id=secrets.token_hex(16), host=host_id, formula=fid, name=name,
                    slug=self._free_slug(host_id, name, [r.slug for r in adopted if r.host == host_id]),
                    source=Source("file", ""), version=str(manifest.get("version", "0.0.0")), manifest=manifest,
                    manifest_hash=manifest_hash(manifest), digest=formula.digest, enabled=True, created=now, updated=now,
                )  # fmt: skip
                batch.execute(_PUT_WEBLET, record.row())
                adopted.append(record)
        if adopted:
            await self.db.commit(batch)
            for record in adopted:
                self._add(record)

    # -- memory --------------------------------------------------------------------------------------
    def _add(self, record: InstalledWeblet) -> None:
        self._weblets[record.id] = record
        self._by_formula[record.formula] = record.id
        self.invalidate(record.host)

    def _forget(self, record: InstalledWeblet) -> None:
        self._weblets.pop(record.id, None)
        self._by_formula.pop(record.formula, None)
        for instance in self.instances_of(record.id):
            self._instances.pop(instance.panel, None)
            self._by_label.pop(instance.label, None)
        self.invalidate(record.host)

    def invalidate(self, host_id: str) -> None:
        """Drop the host's cached manifest table (the next read rebuilds it)."""
        self._agent_tables.pop(host_id, None)

    def _free_slug(self, host_id: str, wanted: str, taken_too: Iterable[str] = ()) -> str:
        taken = {r.slug for r in self._weblets.values() if r.host == host_id} | set(taken_too)
        base = _slugify(wanted)
        slug, n = base, 2
        while slug in taken:
            slug, n = f"{base}-{n}", n + 1
        return slug

    # -- reading -------------------------------------------------------------------------------------
    def settings(self) -> WebletSettings:
        paths = self.kernel.services.paths
        return load_settings(paths.state if paths is not None else None)

    def policy(self) -> FetchPolicy:
        return self.fetch_policy if self.fetch_policy is not None else self.settings().fetch_policy()

    def weblets_of(self, host_id: str) -> builtins.list[InstalledWeblet]:
        return [r for r in self._weblets.values() if r.host == host_id]

    def get(self, host_id: str, weblet_id: str) -> InstalledWeblet:
        record = self._weblets.get(weblet_id) if isinstance(weblet_id, str) else None
        if record is None or record.host != host_id:
            if isinstance(weblet_id, str) and weblet_id in _BUILTIN_BY_ID:
                raise Conflict(f"{weblet_id!r} is a built-in weblet: it cannot be changed or removed")
            raise NotFound(f"no installed weblet {str(weblet_id)[:64]!r}")
        return record

    def by_formula(self, formula_id: str) -> InstalledWeblet | None:
        wid = self._by_formula.get(formula_id)
        return None if wid is None else self._weblets.get(wid)

    def instances_of(self, weblet_id: str) -> builtins.list[Instance]:
        return [i for i in self._instances.values() if i.weblet == weblet_id]

    def instance_by_label(self, label: str) -> tuple[Instance, InstalledWeblet] | None:
        """The persisted instance served at ``label`` and its weblet (the gateway revives labels through this)."""
        panel = self._by_label.get(label) if isinstance(label, str) else None
        if panel is None:
            return None
        instance = self._instances[panel]
        return instance, self._weblets[instance.weblet]

    def instance_url(self, label: str) -> str | None:
        gateway = self.kernel.services.gateway
        port = gateway.info().get("port") if gateway is not None else None
        return None if port is None else f"http://{label}.localhost:{port}/"

    def describe_instance(self, instance: Instance) -> dict[str, Any]:
        return {
            "panel": instance.panel, "weblet": instance.weblet, "label": instance.label,
            "url": self.instance_url(instance.label), "config": instance.config,
            "created": instance.created, "updated": instance.updated,
        }  # fmt: skip

    def describe(self, record: InstalledWeblet, update: dict[str, Any] | None = None) -> dict[str, Any]:
        """A weblet as the manager shows it (JSON-ready; the REST list and CapTP ``list`` return these)."""
        formula = self.kernel.formulas.get(record.formula)
        level = formula.level if isinstance(formula, F.WebletFormula) else None
        manifest = record.manifest
        return {
            "id": record.id, "name": record.name, "slug": record.slug, "builtin": False,
            "formula": record.formula,
            "title": manifest.get("title", ""), "description": manifest.get("description", ""),
            "kind": manifest.get("kind", "iframe"), "version": record.version,
            "source": record.source.type, "source_ref": record.source.ref,
            "store": record.source.store, "store_id": record.source.item,
            "enabled": record.enabled, "level": level, "live": self.kernel.is_live(record.formula),
            "manifest": manifest, "manifest_hash": record.manifest_hash, "digest": record.digest,
            "instances": [self.describe_instance(i) for i in self.instances_of(record.id)],
            "update": update, "created": record.created, "updated": record.updated,
        }  # fmt: skip

    @staticmethod
    def describe_builtin(builtin: Builtin) -> dict[str, Any]:
        manifest = builtin.manifest
        return {
            "id": builtin.id, "name": builtin.id, "slug": builtin.id, "builtin": True, "formula": None,
            "title": manifest["title"], "description": manifest["description"], "kind": manifest["kind"],
            "version": manifest["version"], "source": "builtin", "source_ref": "", "store": None, "store_id": None,
            "enabled": True, "level": None, "live": True, "manifest": manifest, "manifest_hash": builtin.manifest_hash,
            "digest": "", "instances": [{"panel": builtin.panel, "weblet": builtin.id, "label": None, "url": None, "config": {},
                                         "created": 0.0, "updated": 0.0}],
            "update": None, "created": 0.0, "updated": 0.0,
        }  # fmt: skip

    async def list(self, host_id: str, *, check_updates: bool = True) -> builtins.list[dict[str, Any]]:
        """The built-ins, then the host's weblets by install time, each with its instances and any update."""
        out = [self.describe_builtin(b) for b in BUILTINS]
        for record in self.weblets_of(host_id):
            update = await self._update_badge(record) if check_updates else None
            out.append(self.describe(record, update))
        return out

    # -- the read API for the chat agent ------------------------------------------------------------------
    def manifests_for(self, host_id: str, panels: Iterable[str]) -> builtins.list[dict[str, Any]]:
        """The enabled manifests of the host's weblets with an instance among ``panels``, in first-panel order.

        Each entry: ``{"weblet", "name", "slug", "title", "builtin", "manifest", "manifest_hash", "panels"}``
        (``panels``: those of ``panels`` that are this weblet's). Read from the
        server's rows only; a panel id the host does not own is ignored. The
        manifests are shared, not copied: callers must not change them.
        """
        table = self._agent_table(host_id)
        found: dict[str, dict[str, Any]] = {}
        for panel in panels:
            hit = table.get(panel) if isinstance(panel, str) else None
            if hit is None:
                continue
            wid, seen = hit
            entry = found.get(wid)
            if entry is None:
                entry = found[wid] = {**seen, "panels": [panel]}
            elif panel not in entry["panels"]:
                entry["panels"].append(panel)
        return list(found.values())

    def _agent_table(self, host_id: str) -> dict[str, tuple[str, dict[str, Any]]]:
        now = self.clock()
        cached = self._agent_tables.get(host_id)
        if cached is not None and now < cached.expires:
            return cached.panels
        panels: dict[str, tuple[str, dict[str, Any]]] = {}
        for b in BUILTINS:
            panels[b.panel] = (b.id, {"weblet": b.id, "name": b.id, "slug": b.id, "title": b.manifest["title"], "builtin": True,
                                      "manifest": b.manifest, "manifest_hash": b.manifest_hash})  # fmt: skip
        enabled = {r.id: r for r in self.weblets_of(host_id) if r.enabled}
        seen: dict[str, dict[str, Any]] = {}
        for instance in self._instances.values():
            record = enabled.get(instance.weblet)
            if record is None:
                continue
            view = seen.get(record.id)
            if view is None:
                view = seen[record.id] = {
                    "weblet": record.id, "name": record.name, "slug": record.slug, "title": record.manifest.get("title", ""),
                    "builtin": False,
                    "manifest": record.manifest, "manifest_hash": record.manifest_hash,
                }  # fmt: skip
            panels[instance.panel] = (record.id, view)
        try:
            ttl = self.settings().manifest_cache_ttl
        except ValueError:
            ttl = 0.0
        self._agent_tables[host_id] = _AgentTable(now + ttl, panels)
        return panels

    # -- installing ---------------------------------------------------------------------------------------
    async def install(
        self, host: Host, bundle: bytes, name: str | None, powers: str | builtins.list[str], source: Source
    ) -> InstalledWeblet:
        """Install ``bundle`` for ``host`` and record it, atomically (see ``Host.install_weblet``)."""
        try:
            record = await self._install(host, bundle, name, powers, source)
        except Exception as e:
            log.debug("weblet_install_fail source=%s name=%r: %s", source.type, name, str(e)[:200])
            raise
        log.debug("weblet_install_success weblet=%s name=%r version=%s source=%s", record.id, record.name, record.version, source.type)
        return record

    async def _install(
        self, host: Host, bundle: bytes, name: str | None, powers: str | builtins.list[str], source: Source
    ) -> InstalledWeblet:
        if not isinstance(bundle, (bytes, bytearray)):
            raise InvalidRequest("the bundle must be bytes")
        stored = await store_weblet_bundle(self.db, bytes(bundle))  # BundleError: one clear line
        ctl = control(host)
        host_id = ctl.id
        if name is None:
            name = self._free_name(host, source.item or stored.manifest.get("title", "weblet"))
        validate_pet_name(name)
        if ctl.has(name):
            raise Conflict(f"{name!r} already names something; remove it first or pick another name")
        kernel = self.kernel
        txn = kernel.txn()
        guest_id, level = await ctl.stage_powers(txn, powers, introduce_host_as="host-agent")
        weblet_id = stored.stage(txn, guest_id, level)
        ctl.stage_name(txn, name, weblet_id)
        now = time.time()
        record = InstalledWeblet(
            id=secrets.token_hex(16), host=host_id, formula=weblet_id, name=name, slug=self._free_slug(host_id, name),
            source=source, version=str(stored.manifest.get("version", "0.0.0")), manifest=stored.manifest,
            manifest_hash=manifest_hash(stored.manifest), digest=stored.digest, enabled=True, created=now, updated=now,
        )  # fmt: skip
        txn.batch.execute(_PUT_WEBLET, record.row())
        txn.then(lambda: self._add(record))
        await kernel.provide_then_commit(txn, weblet_id, "install failed")
        return record

    def _free_name(self, host: Host, wanted: str) -> str:
        base = _slugify(wanted)
        name, n = base, 2
        while control(host).has(name):
            name, n = f"{base}-{n}", n + 1
        return name

    async def install_from_url(
        self, host: Host, url: str, name: str | None, powers: str | builtins.list[str], progress: Callable[[int, int | None], None] | None = None
    ) -> InstalledWeblet:
        if not isinstance(url, str) or not url:
            raise InvalidRequest("give the weblet's https:// URL")
        fetched = await fetch_weblet(url, policy=self.policy(), progress=progress, network=self.network)  # FetchError
        return await self.install(host, fetched.bundle, name, powers, Source("url", fetched.url))

    async def install_from_store(
        self,
        host: Host,
        store: str,
        item: str,
        version: str | None,
        name: str | None,
        powers: str | builtins.list[str],
        progress: Callable[[int, int | None], None] | None = None,
    ) -> InstalledWeblet:
        loaded = await self.catalogue(store, max_age=0.0)
        entry, chosen, data, ref = await fetch_store_bundle(
            loaded, item, version, policy=self.policy(), network=self.network, progress=progress
        )
        return await self.install(host, data, name, powers, Source("store", ref, store, entry.id))

    # -- stores --------------------------------------------------------------------------------------------
    async def catalogue(self, store: str, *, max_age: float = CATALOGUE_MAX_AGE) -> LoadedCatalogue:
        """A store's catalogue, reused if loaded less than ``max_age`` seconds ago."""
        now = self.clock()
        cached = self._catalogues.get(store) if isinstance(store, str) else None
        if cached is not None and now - cached[0] < max_age:
            return cached[1]
        loaded = await load_catalogue(store, self.settings(), policy=self.policy(), network=self.network)
        self._catalogues[store] = (now, loaded)
        return loaded

    def store_names(self) -> builtins.list[str]:
        from .weblet_settings import EXAMPLES_STORE

        return [EXAMPLES_STORE, *sorted(self.settings().stores)]

    async def _update_badge(self, record: InstalledWeblet) -> dict[str, Any] | None:
        """``{"version", "powers_added", "notes"}`` if the record's store has a newer version, else None."""
        if record.source.type != "store" or record.source.store is None or record.source.item is None:
            return None
        try:
            loaded = await self.catalogue(record.source.store)
            entry = loaded.catalogue.weblet(record.source.item)
        except (ValueError, LookupError):
            return None  # the store is unreachable or dropped the weblet: no badge
        latest = entry.latest()
        if version_key(latest.version) <= version_key(record.version):
            return None
        added = sorted(set(latest.powers) - set(record.manifest.get("powers", [])))
        return {"version": latest.version, "powers_added": added, "notes": latest.notes}

    async def store(self, host_id: str, store: str, *, refresh: bool = True) -> dict[str, Any]:
        """A store's catalogue for browsing: each weblet with its versions and what this host has of it."""
        loaded = await self.catalogue(store, max_age=0.0 if refresh else CATALOGUE_MAX_AGE)
        mine = {r.source.item: r for r in self.weblets_of(host_id) if r.source.type == "store" and r.source.store == store}
        weblets = []
        for entry in loaded.catalogue.weblets:
            installed = mine.get(entry.id)
            latest = entry.latest()
            weblets.append({
                "id": entry.id, "title": entry.title, "description": entry.description, "latest": latest.version,
                "versions": [{"version": v.version, "powers": list(v.powers), "notes": v.notes}
                             for v in sorted(entry.versions, key=lambda v: version_key(v.version), reverse=True)],
                "installed": None if installed is None else {"id": installed.id, "version": installed.version},
                "update_available": installed is not None and version_key(latest.version) > version_key(installed.version),
            })  # fmt: skip
        return {"store": store, "title": loaded.catalogue.title, "weblets": weblets}

    # -- updating -------------------------------------------------------------------------------------------
    async def check_update(self, host_id: str, weblet_id: str, version: str | None = None) -> dict[str, Any]:
        """What an update would bring, without applying it: ``{"current", "version", "powers_added", "notes"}``.

        Store weblets only (a URL's next version is known only by fetching it; a file's by being given one).
        """
        record = self.get(host_id, weblet_id)
        if record.source.type != "store" or record.source.store is None or record.source.item is None:
            raise Conflict(f"{record.name} was installed from a {record.source.type}; only store weblets list their versions")
        loaded = await self.catalogue(record.source.store, max_age=0.0)
        chosen = loaded.catalogue.weblet(record.source.item).version(version)
        added = sorted(set(chosen.powers) - set(record.manifest.get("powers", [])))
        return {"current": record.version, "version": chosen.version, "powers_added": added, "notes": chosen.notes}

    async def update(
        self,
        host: Host,
        weblet_id: str,
        *,
        version: str | None = None,
        accept_powers: Iterable[str] = (),
        bundle: bytes | None = None,
        progress: Callable[[int, int | None], None] | None = None,
    ) -> tuple[InstalledWeblet, bool]:
        """Replace a weblet's bundle with a newer (or the given) version; ``(record, whether it changed)``.

        The weblet keeps its id, its guest (with its names and mail), its power
        level, its pet names and its panels; its backend restarts on the new
        code. If the new manifest asks for powers the old did not, nothing
        changes unless every added one is in ``accept_powers``
        (:class:`PowersNeedConsent` otherwise): refusing keeps the old version
        running. A failed update leaves the old version as it was.
        """
        record = self.get(control(host).id, weblet_id)
        async with record.lock:
            source = record.source
            if bundle is not None:
                if source.type != "file":
                    raise InvalidRequest(f"{record.name} came from a {source.type}: it updates from there, not from a file")
                data, new_source = bytes(bundle), source
            elif source.type == "store":
                assert source.store is not None and source.item is not None
                loaded = await self.catalogue(source.store, max_age=0.0)
                newest = loaded.catalogue.weblet(source.item).version(version)
                if version is None and version_key(newest.version) <= version_key(record.version):
                    return record, False
                _entry, chosen, data, ref = await fetch_store_bundle(
                    loaded, source.item, newest.version, policy=self.policy(), network=self.network, progress=progress
                )
                new_source = Source("store", ref, source.store, source.item)
            elif source.type == "url":
                fetched = await fetch_weblet(source.ref, policy=self.policy(), progress=progress, network=self.network)
                data, new_source = fetched.bundle, source
            else:
                raise InvalidRequest(f"{record.name} was installed from a file: give the new bundle to update it")
            stored = await store_weblet_bundle(self.db, data)
            if stored.digest == record.digest and new_source == source:
                return record, False
            added = sorted(set(stored.manifest.get("powers", [])) - set(record.manifest.get("powers", [])))
            missing = [p for p in added if p not in set(accept_powers)]
            if missing:
                new_version = str(stored.manifest.get("version", "0.0.0"))
                raise PowersNeedConsent(
                    f"{record.name} {new_version} asks for more powers than {record.version}: {', '.join(missing)}; "
                    "update again accepting them, or keep the installed version",
                    missing,
                    new_version,
                )
            await self._replace(host, record, stored, new_source)
            return record, True

    async def _replace(self, host: Host, record: InstalledWeblet, stored: StoredWeblet, source: Source) -> None:
        kernel = self.kernel
        old_id = record.formula
        old = kernel.formula(old_id)
        assert isinstance(old, F.WebletFormula)
        txn = kernel.txn()
        new_id = stored.stage(txn, old.guest, old.level)
        for name in control(host).names_of(old_id):
            control(host).stage_name(txn, name, new_id)
        updated = InstalledWeblet(
            id=record.id, host=record.host, formula=new_id, name=record.name, slug=record.slug, source=source,
            version=str(stored.manifest.get("version", "0.0.0")), manifest=stored.manifest,
            manifest_hash=manifest_hash(stored.manifest), digest=stored.digest, enabled=record.enabled,
            created=record.created, updated=time.time(),
        )  # fmt: skip
        txn.batch.execute(_PUT_WEBLET, updated.row())

        def apply() -> None:
            self._by_formula.pop(old_id, None)
            record.formula, record.source, record.version = new_id, source, updated.version
            record.manifest, record.manifest_hash, record.digest = updated.manifest, updated.manifest_hash, updated.digest
            record.updated = updated.updated
            self._by_formula[new_id] = record.id
            self.invalidate(record.host)

        txn.then(apply)
        await kernel.provide_then_commit(txn, new_id, "update failed")
        # The old version stops: its backend, and its pages' sessions (they
        # reconnect to the same origins, now serving the new version).
        await kernel.cancel(old_id, f"updated to {updated.version}")

    # -- enabling, removing ----------------------------------------------------------------------------------
    async def set_enabled(self, host_id: str, weblet_id: str, enabled: bool) -> InstalledWeblet:
        """Enable or disable a weblet. Disabled: the agent does not see it, and its panels and backend stop
        (their rows stay: enabling brings the same panels back on the same origins)."""
        if not isinstance(enabled, bool):
            raise InvalidRequest("enabled must be true or false")
        record = self.get(host_id, weblet_id)
        if record.enabled == enabled:
            return record
        now = time.time()
        batch = self.db.batch()
        batch.execute("UPDATE installed_weblets SET enabled = ?, updated = ? WHERE id = ?", (int(enabled), now, record.id))
        await self.db.commit(batch)
        record.enabled, record.updated = enabled, now
        self.invalidate(record.host)
        if not enabled:
            await self.kernel.cancel(record.formula, "disabled")
        return record

    async def remove(self, host: Host, weblet_id: str) -> InstalledWeblet:
        """Uninstall: the row, its panels and the host's names for it go; the weblet is cancelled."""
        record = self.get(control(host).id, weblet_id)
        async with record.lock:
            txn = self.kernel.txn()
            txn.batch.execute(_DELETE_INSTANCES_OF, (record.id,))
            txn.batch.execute(_DELETE_WEBLET, (record.id,))
            for name in control(host).names_of(record.formula):
                control(host).stage_unname(txn, name)
            txn.then(lambda: self._forget(record))
            await self.kernel.commit(txn)
        await self.kernel.cancel(record.formula, "uninstalled")
        return record

    # -- instances ---------------------------------------------------------------------------------------------
    @staticmethod
    def _check_config(config: Any) -> dict[str, Any]:
        if config is None:
            return {}
        if not isinstance(config, dict) or not all(isinstance(k, str) for k in config):
            raise InvalidRequest("an instance's config is a JSON object")
        try:
            size = len(json.dumps(config, allow_nan=False, ensure_ascii=False).encode("utf-8"))
        except (TypeError, ValueError):
            raise InvalidRequest("an instance's config must be plain JSON (objects, lists, strings, numbers, booleans, null)") from None
        if size > MAX_CONFIG_BYTES:
            raise InvalidRequest(f"an instance's config is at most {MAX_CONFIG_BYTES} bytes of JSON")
        copied: dict[str, Any] = json.loads(json.dumps(config))
        return copied

    async def create_instance(self, host_id: str, weblet_id: str, config: Any = None) -> Instance:
        """A new panel for the weblet: its own panel id and origin label, persisted."""
        record = self.get(host_id, weblet_id)
        config = self._check_config(config)
        if not record.enabled:
            raise Conflict(f"{record.name} is disabled; enable it first")
        kind = record.manifest.get("kind", "iframe")
        if kind not in PANEL_KINDS:
            raise Conflict(f"a {kind!r} weblet has no panels")
        if len(self.instances_of(record.id)) >= MAX_INSTANCES_PER_WEBLET:
            raise Conflict(f"{record.name} has {MAX_INSTANCES_PER_WEBLET} panels already; close some first")
        panel = f"{record.slug}-{secrets.token_hex(6)}"
        while panel in self._instances or panel in _BUILTIN_BY_ID:
            panel = f"{record.slug}-{secrets.token_hex(6)}"
        now = time.time()
        instance = Instance(panel, record.id, secrets.token_hex(16), config, now, now)
        await self.db.execute(_PUT_INSTANCE, instance.row())
        self._instances[panel] = instance
        self._by_label[instance.label] = panel
        self.invalidate(record.host)
        return instance

    def get_instance(self, host_id: str, weblet_id: str, panel: str) -> Instance:
        record = self.get(host_id, weblet_id)
        instance = self._instances.get(panel) if isinstance(panel, str) else None
        if instance is None or instance.weblet != record.id:
            raise NotFound(f"{record.name} has no panel {str(panel)[:80]!r}")
        return instance

    async def set_instance_config(self, host_id: str, weblet_id: str, panel: str, config: Any) -> Instance:
        instance = self.get_instance(host_id, weblet_id, panel)
        config = self._check_config(config)
        now = time.time()
        await self.db.execute("UPDATE weblet_instances SET config = ?, updated = ? WHERE panel = ?", (json.dumps(config, sort_keys=True), now, panel))
        instance.config, instance.updated = config, now
        return instance

    async def remove_instance(self, host_id: str, weblet_id: str, panel: str) -> Instance:
        """Close a panel for good: its row goes and its origin stops serving."""
        instance = self.get_instance(host_id, weblet_id, panel)
        await self.db.execute(_DELETE_INSTANCE, (panel,))
        self._instances.pop(panel, None)
        self._by_label.pop(instance.label, None)
        self.invalidate(host_id)
        gateway = self.kernel.services.gateway
        if gateway is not None:
            gateway.close_instance(instance.label)
        return instance


def parse_stored_manifest(record: InstalledWeblet) -> WebletManifest:
    return parse_manifest(record.manifest, where="the stored manifest")
