"""Directories, and the naming surface every holder of names shares (``NameHub``).

A name holder (a directory, a host, a guest) has a pet store: names -> formula
ids. ``NameHub`` is what they have in common: lookup, write, remove, move,
copy, make_directory and following changes, with dotted paths (``a.b.c``)
walking through directories and agents. Special names (upper case) are
read-only; each kind of agent says which it has (``_specials``).
"""

from __future__ import annotations

import builtins
from typing import TYPE_CHECKING, Any

from ocapd.captp import far

from . import formulas as F
from .names import InvalidName, parse_path, validate_pet_name
from .petstore import ChangeStream, PetStore

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Directory", "NameHub", "HUB_TYPES", "as_path"]

#: Formula types whose values hold names, so dotted paths can walk through them.
HUB_TYPES = frozenset({"directory", "host", "guest"})


def as_path(path: str | list[str]) -> list[str]:
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
        if self._kernel.type_of(fid) not in HUB_TYPES:
            raise LookupError(f"{name!r} is not a directory or agent; cannot look inside it")
        hub = await self._kernel.provide(fid)
        assert isinstance(hub, NameHub)
        return hub

    async def _parent(self, path: builtins.list[str]) -> tuple[NameHub, str]:
        hub: NameHub = self
        for part in path[:-1]:
            fid = hub._id_here(part)
            if fid is None:
                raise LookupError(f"unknown name {part!r}")
            hub = await hub._hub(fid, part)
        return hub, path[-1]

    async def _identify(self, path: builtins.list[str]) -> str | None:
        hub, last = await self._parent(path)
        return hub._id_here(last)

    async def _require_id(self, path: str | builtins.list[str]) -> str:
        parts = as_path(path)
        fid = await self._identify(parts)
        if fid is None:
            raise LookupError(f"unknown name {'.'.join(parts)!r}")
        return fid

    async def _writable(self, path: str | builtins.list[str]) -> tuple[NameHub, str]:
        parts = as_path(path)
        hub, last = await self._parent(parts)
        validate_pet_name(last)  # special names are read-only
        return hub, last

    # -- the naming surface (public: these are remote methods) -------------------
    def list(self) -> builtins.list[str]:
        """Special names first, then pet names in order."""
        return sorted(self._specials()) + self._store.list()

    async def list_entries(self) -> builtins.list[dict[str, Any]]:
        """Names with their formula type and id (for inventories)."""
        entries = []
        for name, fid in list(self._specials().items()) + self._store.items():
            ftype = self._kernel.formulas[fid].type if fid in self._kernel.formulas else "unknown"
            entries.append({"name": name, "type": ftype, "id": fid, "live": self._kernel.is_live(fid)})
        return entries

    async def describe(self, path: str | builtins.list[str]) -> dict[str, Any]:
        """The formula id and type a name refers to, and whether it is live."""
        fid = await self._require_id(path)
        return {"id": fid, "type": self._kernel.type_of(fid), "live": self._kernel.is_live(fid)}

    async def has(self, path: str | builtins.list[str]) -> bool:
        try:
            return await self._identify(as_path(path)) is not None
        except LookupError:
            return False

    async def identify(self, path: str | builtins.list[str]) -> str | None:
        """The formula id at ``path``, or None."""
        return await self._identify(as_path(path))

    async def locate(self, path: str | builtins.list[str]) -> str | None:
        fid = await self._identify(as_path(path))
        if fid is None:
            return None
        return f"ocapd://local/{fid}?type={self._kernel.type_of(fid)}"

    async def lookup(self, path: str | builtins.list[str]) -> Any:
        """The value named by ``path`` (incarnated if needed)."""
        return await self._kernel.provide(await self._require_id(path))

    def reverse_lookup(self, value: Any) -> builtins.list[str]:
        fid = self._kernel.identify_value(value)
        if fid is None:
            return []
        return [n for n, i in self._specials().items() if i == fid] + self._store.reverse(fid)

    async def _name(self, path: str | builtins.list[str], fid: str) -> None:
        """Name formula ``fid`` at ``path`` (a pet name, or a dotted path through directories)."""
        hub, last = await self._writable(path)
        await hub._store.write(last, fid)

    async def write(self, path: str | builtins.list[str], value: Any) -> None:
        """Name a value. It must have come from a formula (values made elsewhere cannot be named)."""
        fid = self._kernel.identify_value(value)
        if fid is None:
            raise TypeError("cannot name this value: it did not come from the daemon (store it first)")
        await self._name(path, fid)

    async def remove(self, path: str | builtins.list[str]) -> None:
        hub, last = await self._writable(path)
        if not hub._store.has(last):
            raise LookupError(f"unknown name {last!r}")
        await hub._store.remove(last)

    async def move(self, from_path: str | builtins.list[str], to_path: str | builtins.list[str]) -> None:
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

    async def copy(self, from_path: str | builtins.list[str], to_path: str | builtins.list[str]) -> None:
        await self._name(to_path, await self._require_id(from_path))

    async def make_directory(self, path: str | builtins.list[str]) -> Any:
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

    async def follow_name_changes(self, path: str | builtins.list[str] | None = None) -> ChangeStream:
        """Existing names first (alphabetical), then each add/remove/rename once."""
        if path is None:
            return self._store.follow()
        fid = await self._require_id(path)
        hub = await self._hub(fid, str(path))
        return hub._store.follow()


@far("Directory")
class Directory(NameHub):
    """A folder of names (``make_directory``): naming only, no powers."""

    def __init__(self, kernel: Kernel, store: PetStore) -> None:
        self._kernel = kernel
        self._store = store
