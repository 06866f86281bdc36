"""The small capability values a few formula types incarnate as: NONE, ENDO, blobs, request resolvers.

Each is a far object whose public methods are all its holder can do.
Agents live in ``hosts``/``guests``, directories in ``directories``, workers
and evaluations in ``work``, weblets in ``weblets``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import RemoteError, encode, far

from . import formulas as F

if TYPE_CHECKING:
    from .kernel import Kernel
    from .petstore import PetStore

__all__ = ["EndoPowers", "LeastAuthority", "ReadableBlob", "RequestResolver"]


@far("LeastAuthority")
class LeastAuthority:
    """NONE: a capability that grants nothing."""


@far("Endo")
class EndoPowers:
    """ENDO: the daemon's network-facing surface (peers arrive with the peer-network work)."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel

    def ping(self) -> str:
        return "pong"


@far("Resolver")
class RequestResolver:
    """Answers one request: writes its resolution (or rejection) into the request's pet store."""

    def __init__(self, kernel: Kernel, store: PetStore) -> None:
        self._kernel = kernel
        self._store = store

    async def resolve(self, value: Any) -> None:
        fid = self._kernel.identify_value(value)
        if fid is None:
            raise TypeError("resolve: the value did not come from the daemon")
        await self._store.write("resolution", fid)

    async def reject(self, reason: str = "rejected") -> None:
        fid = await self._kernel.formulate(F.MarshalFormula(body=encode(RemoteError("Error", str(reason))), slots=[]))
        await self._store.write("rejection", fid)


@far("ReadableBlob")
class ReadableBlob:
    """Stored bytes, content-addressed: read them whole, or as UTF-8 text."""

    def __init__(self, kernel: Kernel, sha: str) -> None:
        self._kernel = kernel
        self._sha = sha

    def sha256(self) -> str:
        return self._sha

    async def bytes(self) -> bytes:
        return await trio.to_thread.run_sync(self._kernel.db.read_blob, self._sha)

    async def text(self) -> str:
        return (await self.bytes()).decode("utf-8")
