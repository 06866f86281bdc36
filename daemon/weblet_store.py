"""Weblet stores: curated catalogues of weblets, their versions, and the bundles they promise.

A **catalogue** is one JSON file, a local file or an ``https://`` URL::

    {
      "ocapdStore": 1,
      "title": "ocapd examples",
      "weblets": [
        {"id": "counter", "title": "Counter", "description": "…",
         "versions": [
           {"version": "1.1.0", "bundle": "weblets/counter",
            "digest": "<64 hex>", "powers": [], "notes": "Adds agent commands."}
         ]}
      ]
    }

Each version names its ``bundle`` relative to the catalogue (a folder, a zip
or a single HTML file next to a local catalogue, and never outside its
folder; a URL, relative or absolute, for a catalogue fetched from the web)
and pins it by hash: ``sha256`` is the sha256 of the bundle file's bytes (what
``sha256sum`` prints; for files and URLs), ``digest`` ocapd's content digest of
a bundle (``ocapd weblets digest PATH``; the only choice for a folder, which
has no bytes of its own). At least one is required; every one given must
match, or the bundle is refused before anything is stored. The version's
``powers`` (the pet names the weblet will ask its host for) and ``version``
must be the bundle manifest's own: what the store shows is what gets
installed.

The catalogue is an operator's choice (``weblets.json``'s ``stores``, plus the
``examples`` store shipped with ocapd), never a path or URL from a request.
Loading one is :func:`load_catalogue`; :func:`fetch_store_bundle` gets a
version's bundle and checks it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import trio
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, model_validator

from .weblet import BundleError, read_bundle
from .weblet.manifest import Description, PetName, Title, Version, load_json
from .weblet_fetch import SYSTEM_NETWORK, FetchError, FetchPolicy, Network, fetch_document, fetch_weblet
from .weblet_settings import EXAMPLES_STORE, WebletSettings

__all__ = [
    "Catalogue", "CatalogueVersion", "CatalogueWeblet", "LoadedCatalogue", "StoreError", "HashMismatch",
    "catalogue_location", "examples_catalogue_path", "fetch_store_bundle", "load_catalogue", "version_key",
]  # fmt: skip

#: Bytes of a catalogue file: a thousand weblets with a few versions each.
MAX_CATALOGUE_BYTES = 1024 * 1024
CATALOGUE_FORMAT = 1
_HEX64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
_STORE_ITEM_ID = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")]


class StoreError(ValueError):
    """A store, its catalogue or one of its entries cannot be used; the message is one line."""


class HashMismatch(StoreError):
    """A bundle is not the one its catalogue pins by hash."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CatalogueVersion(_Strict):
    version: Version
    bundle: Annotated[str, StringConstraints(min_length=1, max_length=2000)]
    sha256: _HEX64 | None = None
    digest: _HEX64 | None = None
    powers: Annotated[list[PetName], Field(max_length=64)] = []
    notes: Annotated[str, StringConstraints(max_length=1000)] = ""

    @model_validator(mode="after")
    def _pinned(self) -> CatalogueVersion:
        if self.sha256 is None and self.digest is None:
            raise ValueError(f"version {self.version}: give its bundle's sha256 or digest")
        return self


class CatalogueWeblet(_Strict):
    id: _STORE_ITEM_ID
    title: Title
    description: Description = ""
    versions: Annotated[list[CatalogueVersion], Field(min_length=1, max_length=100)]

    @model_validator(mode="after")
    def _unique_versions(self) -> CatalogueWeblet:
        seen = [v.version for v in self.versions]
        if len(set(seen)) != len(seen):
            raise ValueError(f"weblet {self.id!r} lists a version twice")
        return self

    def latest(self) -> CatalogueVersion:
        return max(self.versions, key=lambda v: version_key(v.version))

    def version(self, version: str | None) -> CatalogueVersion:
        if version is None:
            return self.latest()
        for v in self.versions:
            if v.version == version:
                return v
        raise StoreError(f"the store has no version {version!r} of {self.id!r} (it has {', '.join(v.version for v in self.versions)})")


class Catalogue(_Strict):
    ocapdStore: Literal[1]
    title: Annotated[str, StringConstraints(max_length=80)] = ""
    weblets: Annotated[list[CatalogueWeblet], Field(max_length=1000)] = []

    @model_validator(mode="after")
    def _unique_ids(self) -> Catalogue:
        ids = [w.id for w in self.weblets]
        if len(set(ids)) != len(ids):
            raise ValueError("the catalogue lists a weblet id twice")
        return self

    def weblet(self, item_id: str) -> CatalogueWeblet:
        for w in self.weblets:
            if w.id == item_id:
                return w
        raise StoreError(f"the store has no weblet {item_id!r}")


def version_key(version: str) -> tuple[Any, ...]:
    """A sort key for manifest versions: numbers compare as numbers, a release beats its pre-releases."""
    core, _, build = version.partition("+")
    del build  # build metadata does not order versions (semver)
    numbers, dash, pre = core.partition("-")
    parts = [int(p) for p in numbers.split(".") if p.isdigit()]
    parts += [0] * (4 - len(parts))
    pre_key = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in pre.split(".")) if dash else ()
    return (tuple(parts), 0 if dash else 1, pre_key)


# ---- where catalogues are ------------------------------------------------------------------------
def examples_catalogue_path() -> Path:
    """The catalogue shipped with ocapd's examples (package data of ``ocapd.examples``)."""
    return Path(str(importlib.resources.files("ocapd.examples") / "store.json"))


def catalogue_location(settings: WebletSettings, store: str) -> str:
    """Where the store named ``store`` keeps its catalogue (a path or a URL); StoreError if unknown."""
    if store == EXAMPLES_STORE:
        return str(examples_catalogue_path())
    location = settings.stores.get(store) if isinstance(store, str) else None
    if location is None:
        known = ", ".join([EXAMPLES_STORE, *sorted(settings.stores)])
        raise StoreError(f"no store named {store!r} (known: {known})")
    return location


def _is_url(location: str) -> bool:
    return re.match(r"[a-zA-Z][a-zA-Z0-9+.-]*://", location) is not None


@dataclass(frozen=True)
class LoadedCatalogue:
    store: str
    location: str  # the path, or the final URL after redirects
    catalogue: Catalogue


def _parse_catalogue(raw: bytes, where: str) -> Catalogue:
    if len(raw) > MAX_CATALOGUE_BYTES:
        raise StoreError(f"{where}: larger than {MAX_CATALOGUE_BYTES} bytes")
    try:
        data = load_json(raw, where)
    except BundleError as e:
        raise StoreError(str(e)) from None
    try:
        return Catalogue.model_validate(data)
    except ValidationError as e:
        error = e.errors()[0]
        loc = ".".join(str(p) for p in error["loc"]) or "(top)"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise StoreError(f"{where}: {loc}: {message}") from None


async def load_catalogue(
    store: str, settings: WebletSettings, *, policy: FetchPolicy | None = None, network: Network = SYSTEM_NETWORK
) -> LoadedCatalogue:
    """Read and validate the catalogue of the store named ``store``."""
    location = catalogue_location(settings, store)
    where = f"the catalogue of store {store!r}"
    if _is_url(location):
        try:
            final, raw = await fetch_document(location, policy=policy or settings.fetch_policy(), what=where, network=network)
        except FetchError as e:
            raise StoreError(str(e)) from None
        return LoadedCatalogue(store, final, _parse_catalogue(raw, where))

    def read() -> bytes:
        with open(location, "rb") as f:
            return f.read(MAX_CATALOGUE_BYTES + 1)

    try:
        raw = await trio.to_thread.run_sync(read)
    except OSError as e:
        raise StoreError(f"{where}: cannot read {location}: {e.strerror or e}") from None
    return LoadedCatalogue(store, location, _parse_catalogue(raw, where))


# ---- a version's bundle ---------------------------------------------------------------------------
def _local_bundle(loaded: LoadedCatalogue, ref: str) -> Path:
    """The file or folder a local catalogue's ``bundle`` names: relative, and inside the catalogue's folder."""
    if os.path.isabs(ref) or _is_url(ref) or "\\" in ref or "\x00" in ref:
        raise StoreError(f"store {loaded.store!r}: bundle {ref!r} must be a path relative to the catalogue")
    base = Path(loaded.location).resolve().parent
    target = (base / ref).resolve()
    if not target.is_relative_to(base):
        raise StoreError(f"store {loaded.store!r}: bundle {ref!r} lies outside the catalogue's folder")
    return target


async def fetch_store_bundle(
    loaded: LoadedCatalogue,
    item_id: str,
    version: str | None,
    *,
    policy: FetchPolicy,
    network: Network = SYSTEM_NETWORK,
    progress: Callable[[int, int | None], None] | None = None,
) -> tuple[CatalogueWeblet, CatalogueVersion, bytes, str]:
    """The bundle of one version of a store's weblet, checked: ``(entry, version, bundle bytes, bundle ref)``.

    Refused (:class:`HashMismatch`) if it does not match the hashes the
    catalogue gives; refused (:class:`StoreError`) if its manifest's version or
    powers are not the catalogue's.
    """
    entry = loaded.catalogue.weblet(item_id)
    chosen = entry.version(version)
    ref = chosen.bundle
    if _is_url(loaded.location):
        import httpx

        try:
            url = str(httpx.URL(loaded.location).join(ref))
        except httpx.InvalidURL:
            raise StoreError(f"store {loaded.store!r}: bundle {ref!r} is not a URL") from None
        try:
            fetched = await fetch_weblet(url, policy=policy, progress=progress, network=network)
        except FetchError as e:
            raise StoreError(str(e)) from None
        data, shown = fetched.bundle, url
    else:
        path = _local_bundle(loaded, ref)
        if path.is_dir() and chosen.digest is None:
            raise StoreError(f"store {loaded.store!r}: {entry.id} {chosen.version} is a folder, which only a \"digest\" can pin")

        def read() -> bytes:
            if path.is_dir():
                return read_bundle(path).to_zip()
            with open(path, "rb") as f:
                return f.read()

        try:
            data = await trio.to_thread.run_sync(read)
        except OSError as e:
            raise StoreError(f"store {loaded.store!r}: cannot read bundle {ref!r}: {e.strerror or e}") from None
        except BundleError as e:
            raise StoreError(f"store {loaded.store!r}: bundle {ref!r} is not a valid weblet: {e}") from None
        shown = ref
        if progress is not None:
            progress(len(data), len(data))
    what = f"{entry.id} {chosen.version}"
    if chosen.sha256 is not None and not _local_folder(loaded, ref):
        got = hashlib.sha256(data).hexdigest()
        if got != chosen.sha256:
            raise HashMismatch(f"refused: the bundle of {what} does not match the store's sha256 (expected {chosen.sha256[:12]}…, got {got[:12]}…)")
    try:
        bundle = await trio.to_thread.run_sync(read_bundle, data)
    except BundleError as e:
        raise StoreError(f"the bundle of {what} is not a valid weblet: {e}") from None
    if chosen.digest is not None and bundle.digest != chosen.digest:
        raise HashMismatch(f"refused: the bundle of {what} does not match the store's digest (expected {chosen.digest[:12]}…, got {bundle.digest[:12]}…)")
    if bundle.manifest.version != chosen.version:
        raise StoreError(f"refused: the store lists {what}, but its bundle says version {bundle.manifest.version}")
    if sorted(bundle.manifest.powers) != sorted(chosen.powers):
        raise StoreError(
            f"refused: the store says {what} asks for {sorted(chosen.powers) or 'no powers'}, its bundle for {sorted(bundle.manifest.powers) or 'none'}"
        )
    return entry, chosen, data, shown


def _local_folder(loaded: LoadedCatalogue, ref: str) -> bool:
    if _is_url(loaded.location):
        return False
    return _local_bundle(loaded, ref).is_dir()
