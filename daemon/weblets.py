"""Weblets: installed web apps, each with its own guest, hosted by the gateway.

``install_weblet`` is atomic. It validates the bundle, then stages every
formula (the weblet's guest with its endowments, the stored bundle, the backend
as a make-bundle in a worker confined by the power level, the weblet itself)
*provisionally*: the kernel sees them in memory, nothing is written to disk.
It then starts the backend. Only if that succeeds is everything committed in
one transaction and the name written; if anything fails, the provisional
formulas are cancelled and forgotten, so no name, formula or worker is left
behind — not even after a crash in between.

The value of a weblet formula is a ``Weblet`` far object: its manifest, its
guest's handle, and ``open()``, which asks the gateway (through the
``kernel.services["gateway"]`` hook, never an import) for a new instance URL.
Cancelling a weblet closes its open instances through the same hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ocapd.captp import far

from . import formulas as F
from .kernel import register_maker

if TYPE_CHECKING:
    from .agents import Host
    from .kernel import Incarnation, Kernel

__all__ = ["install_weblet", "Weblet"]


@far("Weblet")
class Weblet:
    def __init__(self, kernel: Kernel, fid: str, formula: Any, guest: Any, backend: Any) -> None:
        self._kernel = kernel
        self._id = fid
        self._formula = formula
        self._guest = guest
        self._backend = backend

    def manifest(self) -> dict[str, Any]:
        return dict(self._formula.manifest)

    def id(self) -> str:
        return self._id

    def close(self, label: str) -> bool:
        """Close one of this weblet's open instances (a host page closed its panel)."""
        gateway = self._kernel.services.get("gateway")
        if gateway is None:
            return False
        mine = {i["label"] for i in gateway.list_instances() if i["weblet"] == self._id}
        if label not in mine:
            raise LookupError(f"no open instance {label!r} of this weblet")
        return gateway.close_instance(label)

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
            "live": self._kernel.is_live(self._id),
        }

    async def open(self) -> dict[str, Any]:
        """A new instance on its own origin: ``{"label", "url"}``."""
        gateway = await self._kernel.gateway()
        if gateway is None:
            raise RuntimeError("no gateway is running: start the daemon with its gateway to open weblets")
        return await gateway.open_instance(self._id)


@register_maker("weblet")
async def _make_weblet(kernel: Kernel, fid: str, formula: Any, inc: Incarnation) -> Weblet:
    guest = await inc.provide(formula.guest)
    backend = await inc.provide(formula.backend) if formula.backend is not None else None

    async def stop(reason: str) -> None:
        # A cancelled weblet's open instances end with it (their pages lose
        # their sessions), and so does its backend: the weblet owns it, so
        # cancelling the weblet stops its worker (the next open starts anew).
        gateway = kernel.services.get("gateway")
        if gateway is not None:
            gateway.close_weblet_instances(fid, reason)
        if formula.backend is not None:
            await kernel.cancel(kernel.formula(formula.backend).worker, reason)  # type: ignore[union-attr]

    inc.on_cancel(stop)
    return Weblet(kernel, fid, formula, guest, backend)


async def install_weblet(host: Host, bundle_bytes: bytes, name: str, powers: str | list[str]) -> Weblet:
    """Validate, stage, start and commit a weblet (see the module docstring)."""
    from .weblet import read_bundle

    kernel = host._kernel
    bundle = read_bundle(bundle_bytes)  # BundleError: one clear line
    if bundle.manifest.kind not in ("iframe", "iframe-external"):
        raise ValueError(f"weblet kind {bundle.manifest.kind!r} cannot be installed yet")
    stored = bundle.to_zip()
    backend_zip = bundle.backend_zip()
    bundle_sha = await kernel.db.put_blob(stored)
    backend_sha = await kernel.db.put_blob(backend_zip) if backend_zip is not None else None

    txn = kernel.txn()
    guest_id, level = await host._powers_for(txn, powers, None, introduce_host_as="host-agent")
    bundle_id = txn.formula(F.ReadableBlobFormula(content=bundle_sha))
    backend_id = None
    if backend_sha is not None:
        backend_blob = txn.formula(F.ReadableBlobFormula(content=backend_sha))
        worker_id = txn.formula(F.WorkerFormula(level=level))
        backend_id = txn.formula(F.MakeBundleFormula(worker=worker_id, powers=guest_id, bundle=backend_blob))
    manifest = bundle.manifest.model_dump(mode="json")
    weblet_id = txn.formula(
        F.WebletFormula(
            guest=guest_id, bundle=bundle_id, backend=backend_id, manifest=manifest, digest=bundle.digest, level=level
        )
    )
    host._store.stage_write(txn, name, weblet_id)

    kernel.formulas.update(txn.formulas)  # provisional: memory only
    try:
        weblet = await kernel.provide(weblet_id)  # starts the backend; make() may raise
        await kernel.commit(txn)
    except BaseException:
        for fid in txn.formulas:
            await kernel.cancel(fid, "install failed")
        for fid in txn.formulas:
            kernel.formulas.pop(fid, None)
        raise
    return weblet
