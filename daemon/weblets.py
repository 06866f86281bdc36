"""Weblets: installed web apps, each with its own guest, hosted by the gateway.

Installing (``Host.install_weblet``) is atomic. ``store_weblet_bundle``
validates the bundle and stores its blobs; the host then stages every formula
(the weblet's guest with its endowments, here ``StoredWeblet.stage``: the
stored bundle, the backend as a make-bundle in a worker confined by the power
level, the weblet itself; then the name) *provisionally*: the kernel sees them
in memory, nothing is written to disk. It then starts the backend
(``Kernel.provide_then_commit``). Only if that succeeds is everything
committed in one transaction; if anything fails, the provisional formulas are
cancelled and forgotten, so no name, formula or worker is left behind — not
even after a crash in between (stored blobs are content-addressed and
harmless).

The value of a weblet formula is a ``Weblet`` far object: its manifest, its
guest's handle, and ``open()``, which asks the gateway (through
``kernel.services.gateway``, set by the gateway's hook, never an import) for
a new instance URL. Cancelling a weblet closes its open instances the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import E, far

from . import formulas as F

if TYPE_CHECKING:
    from .db import Database
    from .kernel import Incarnation, Kernel, Txn

__all__ = ["StoredWeblet", "Weblet", "backend_of", "make_weblet", "store_weblet_bundle", "PROJECTION_TIMEOUT"]

#: How long a projection-only weblet's backend has to answer ``projection()``.
PROJECTION_TIMEOUT = 10.0


@far("Weblet")
class Weblet:
    def __init__(self, kernel: Kernel, fid: str, formula: F.WebletFormula, guest: Any, backend: Any) -> None:
        self._kernel = kernel
        self._id = fid
        self._formula = formula
        self._guest = guest
        self._backend = backend
        self._files: dict[str, bytes] | None = None  # the bundle's files, read once (projection images)

    def manifest(self) -> dict[str, Any]:
        return dict(self._formula.manifest)

    def id(self) -> str:
        return self._id

    def close(self, label: str) -> bool:
        """Close one of this weblet's open instances (a host page closed its panel)."""
        gateway = self._kernel.services.gateway
        if gateway is None:
            return False
        mine = {i["label"] for i in gateway.list_instances() if i["weblet"] == self._id}
        if label not in mine:
            raise LookupError(f"no open instance {label!r} of this weblet")
        return gateway.close_instance(label)

    async def follow_notices(self, label: str) -> Any:
        """What the browser reported it blocked in one of this weblet's open pages (its CSP).

        A stream (``next()``) of ``{"label", "seq", "directive", "blocked"}``:
        those recorded so far, then each new one; it ends when the instance
        closes. ``directive`` is a CSP directive (``script-src``, …) and
        ``blocked`` one of ``inline``, ``eval``, ``wasm-eval``, an origin or
        ``other``: the gateway keeps nothing else of a report (it may come
        from anyone), and few per instance.
        """
        gateway = self._kernel.services.gateway
        if gateway is None or not isinstance(label, str):
            raise LookupError(f"no open instance {label!r} of this weblet")
        return await gateway.follow_instance_notices(label, self._id)

    def info(self) -> dict[str, Any]:
        """What a host page needs to present this weblet: title, level, and its guest's
        handle id (mail from the weblet carries it, so requests can be shown as its own)."""
        guest_formula = self._kernel.formula(self._formula.guest)
        return {
            "id": self._id,
            "title": self._formula.manifest.get("title", ""),
            "level": self._formula.level,
            "guest_handle": guest_formula.handle,  # type: ignore[union-attr]
            "size": self._formula.manifest.get("size"),
            "permissions": self._formula.manifest.get("permissions", []),
            # Declared WebRTC: its page may send UDP to any address (docs/security.md).
            "webrtc": self._formula.manifest.get("webrtc") is True,
            "live": self._kernel.is_live(self._id),
        }

    async def _bundle_files(self) -> dict[str, bytes]:
        if self._files is None:
            from .weblet import read_bundle

            blob = await self._kernel.provide(self._formula.bundle)
            bundle = await trio.to_thread.run_sync(read_bundle, await blob.bytes())
            self._files = dict(bundle.files)
        return self._files

    def _require_projection_kind(self) -> None:
        kind = self._formula.manifest.get("kind", "iframe")
        if kind != "projection-only":
            raise ValueError(f"a {kind!r} weblet has a page, not a projection")
        registry = self._kernel.services.weblet_registry
        record = registry.by_formula(self._id) if registry is not None else None
        if record is not None and not record.enabled:
            raise RuntimeError(f"{record.name} is disabled; enable it first (ocapd weblets enable {record.name})")

    async def projection(self) -> dict[str, Any]:
        """A projection-only weblet's view, from its backend's ``projection()``: checked, capped, plain data.

        See ``daemon/weblet/projection.py`` for the shape; ``ProjectionError`` (a
        ValueError) says on one line what the backend got wrong.
        """
        from .weblet.projection import ProjectionError, check_projection

        self._require_projection_kind()
        if self._backend is None:
            raise ValueError("this weblet has no backend to ask for its projection")
        try:
            with trio.fail_after(PROJECTION_TIMEOUT):
                raw = await E(self._backend).projection()
        except trio.TooSlowError:
            raise ProjectionError(f"its backend did not answer projection() within {PROJECTION_TIMEOUT:g} s") from None
        return check_projection(raw, await self._bundle_files())

    async def projection_image(self, src: str) -> dict[str, Any]:
        """An image of the bundle a projection shows: ``{"mime", "bytes"}`` (PNG, JPEG, GIF or WebP, capped)."""
        from .weblet.projection import MAX_IMAGE_BYTES, image_type

        self._require_projection_kind()
        files = await self._bundle_files()
        mime = image_type(src) if isinstance(src, str) else None
        if mime is None or src not in files or len(files[src]) > MAX_IMAGE_BYTES:
            raise LookupError("no such image in this weblet's bundle")
        return {"mime": mime, "bytes": files[src]}

    async def open(self) -> dict[str, Any]:
        """A new instance on its own origin: ``{"label", "url"}``."""
        registry = self._kernel.services.weblet_registry
        record = registry.by_formula(self._id) if registry is not None else None
        if record is not None and not record.enabled:
            raise RuntimeError(f"{record.name} is disabled; enable it first (ocapd weblets enable {record.name})")
        gateway = await self._kernel.gateway()
        if gateway is None:
            raise RuntimeError("no gateway is running: start the daemon with its gateway to open weblets")
        return await gateway.open_instance(self._id)


async def make_weblet(kernel: Kernel, fid: str, formula: F.WebletFormula, inc: Incarnation) -> Weblet:
    guest = await inc.provide(formula.guest)
    backend = await inc.provide(formula.backend) if formula.backend is not None else None

    async def stop(reason: str) -> None:
        # A cancelled weblet's open instances end with it (their pages lose
        # their sessions), and so does its backend: the weblet owns it, so
        # cancelling the weblet stops its worker (the next open starts anew).
        gateway = kernel.services.gateway
        if gateway is not None:
            gateway.close_weblet_instances(fid, reason)
        if formula.backend is not None:
            await kernel.cancel(kernel.formula(formula.backend).worker, reason)  # type: ignore[union-attr]

    inc.on_cancel(stop)
    return Weblet(kernel, fid, formula, guest, backend)


@dataclass(frozen=True)
class StoredWeblet:
    """A validated weblet bundle whose blobs are stored: what is left is to stage its formulas."""

    bundle_sha: str  # the normalized bundle (what the gateway serves from)
    backend_sha: str | None  # the backend's own zip, if it has one
    manifest: dict[str, Any]  # validated and normalized, as JSON
    digest: str

    def stage(self, txn: Txn, guest_id: str, level: F.WorkerLevel) -> str:
        """Stage the weblet's formulas for guest ``guest_id`` at power ``level``; return the weblet's id."""
        bundle_id = txn.formula(F.ReadableBlobFormula(content=self.bundle_sha))
        backend_id = None
        if self.backend_sha is not None:
            backend_blob = txn.formula(F.ReadableBlobFormula(content=self.backend_sha))
            worker_id = txn.formula(F.WorkerFormula(level=level))
            backend_id = txn.formula(F.MakeBundleFormula(worker=worker_id, powers=guest_id, bundle=backend_blob))
        return txn.formula(
            F.WebletFormula(
                guest=guest_id, bundle=bundle_id, backend=backend_id, manifest=self.manifest, digest=self.digest,
                level=level,
            )
        )  # fmt: skip


async def store_weblet_bundle(db: Database, bundle_bytes: bytes) -> StoredWeblet:
    """Validate a weblet bundle (zip or single HTML file) and store it; ``BundleError`` says why not."""
    from .weblet import read_bundle

    bundle = read_bundle(bundle_bytes)  # BundleError: one clear line
    if bundle.manifest.kind == "native":
        raise ValueError("weblet kind 'native' is for ocapd's built-ins; a bundle cannot be one")
    stored = bundle.to_zip()
    backend_zip = bundle.backend_zip()
    bundle_sha = await db.put_blob(stored)
    backend_sha = await db.put_blob(backend_zip) if backend_zip is not None else None
    return StoredWeblet(bundle_sha, backend_sha, bundle.manifest.model_dump(mode="json"), bundle.digest)


def backend_of(weblet: Weblet) -> Any:
    """The weblet's backend (what its ``make()`` returned), or None: for the chat agent's dispatch.

    A function, not a method: ``Weblet`` is a far object, and its holders
    reach the backend only through the page it is handed to.
    """
    return weblet._backend

