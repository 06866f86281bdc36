"""Pet stores: an agent's or a directory's names for formulas, persisted and followable.

A ``PetStore`` is the in-memory view of one pet-store formula's names (the
database is written first, memory after). ``follow()`` gives a stream that
first replays every existing name in alphabetical order, then reports each
change exactly once: ``{"add": name, "id": id}``, ``{"remove": name}`` or
``{"rename": {"from": old, "to": new}}``.
"""

from __future__ import annotations

import builtins
import weakref
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import far

if TYPE_CHECKING:
    from .kernel import Kernel, Txn

__all__ = ["PetStore", "ChangeStream", "STREAM_BUFFER"]

#: Events a follower may fall behind by before it is closed as too slow. A
#: stream is a remote client pulling ``next()``; it must not pin unbounded memory.
STREAM_BUFFER = 10_000


@far("ChangeStream")
class ChangeStream:
    """An async stream over CapTP: call ``next()`` until it returns ``{"done": True}``."""

    #: Every live stream, for ``ocapd inspect`` (weak: counting keeps nothing alive).
    live: weakref.WeakSet[ChangeStream] = weakref.WeakSet()

    def __init__(self, on_close: Any = None, buffer: int = STREAM_BUFFER) -> None:
        """``buffer``: events it holds for a follower that does not pull before closing it as too slow."""
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](buffer)
        self._on_close = on_close
        ChangeStream.live.add(self)

    def push(self, event: dict[str, Any]) -> bool:
        """Queue an event; False if the follower is gone or too slow (then it is closed)."""
        try:
            self._send.send_nowait(event)
            return True
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            self.close()
            return False

    def close(self) -> None:
        self._send.close()
        if self._on_close is not None:
            self._on_close(self)
            self._on_close = None

    async def next(self) -> dict[str, Any]:
        try:
            event = await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            return {"done": True}
        return {"done": False, "value": event}

    def cancel(self) -> None:
        """Stop following."""
        self.close()


class PetStore:
    """Names to formula ids for one pet-store formula."""

    def __init__(self, kernel: Kernel, store_id: str, names: dict[str, str]) -> None:
        self.kernel = kernel
        self.id = store_id
        self._names = names
        # Held weakly: a stream lives as long as its follower holds it (over
        # CapTP, until the session ends or drops it), not as long as we do.
        self._followers: weakref.WeakSet[ChangeStream] = weakref.WeakSet()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Return after the next change to this store."""
        await self._changed.wait()

    # -- reading ---------------------------------------------------------------
    def list(self) -> builtins.list[str]:
        return sorted(self._names)

    def has(self, name: str) -> bool:
        return name in self._names

    def get(self, name: str) -> str | None:
        return self._names.get(name)

    def items(self) -> builtins.list[tuple[str, str]]:
        return sorted(self._names.items())

    def reverse(self, fid: str) -> builtins.list[str]:
        return sorted(n for n, i in self._names.items() if i == fid)

    # -- writing (staged in a transaction; memory follows the commit) -------------
    def stage_write(self, txn: Txn, name: str, fid: str) -> None:
        limit = getattr(self.kernel.services.limits, "names", None)
        if limit is not None and name not in self._names and len(self._names) >= limit:
            raise ValueError(f"this name store is full ({limit} names); remove some first")
        txn.batch.set_name(self.id, name, fid)
        txn.then(lambda: self._apply_write(name, fid))

    def stage_remove(self, txn: Txn, name: str) -> None:
        txn.batch.remove_name(self.id, name)
        txn.then(lambda: self._apply_remove(name))

    def stage_rename(self, txn: Txn, old: str, new: str) -> None:
        fid = self._names[old]
        txn.batch.remove_name(self.id, old)
        txn.batch.set_name(self.id, new, fid)
        txn.then(lambda: self._apply_rename(old, new, fid))

    async def write(self, name: str, fid: str) -> None:
        txn = self.kernel.txn()
        self.stage_write(txn, name, fid)
        await self.kernel.commit(txn)

    async def remove(self, name: str) -> None:
        txn = self.kernel.txn()
        self.stage_remove(txn, name)
        await self.kernel.commit(txn)

    def _apply_write(self, name: str, fid: str) -> None:
        if self._names.get(name) == fid:
            return
        self._names[name] = fid
        self._emit({"add": name, "id": fid})

    def _apply_remove(self, name: str) -> None:
        if self._names.pop(name, None) is not None:
            self._emit({"remove": name})

    def _apply_rename(self, old: str, new: str, fid: str) -> None:
        self._names.pop(old, None)
        self._names[new] = fid
        self._emit({"rename": {"from": old, "to": new}, "id": fid})

    # -- following ------------------------------------------------------------------
    def follow(self) -> ChangeStream:
        stream = ChangeStream(on_close=self._unfollow)
        for name, fid in self.items():
            stream.push({"add": name, "id": fid})
        self._followers.add(stream)
        return stream

    def _unfollow(self, stream: ChangeStream) -> None:
        self._followers.discard(stream)

    def _emit(self, event: dict[str, Any]) -> None:
        self._changed.set()
        self._changed = trio.Event()
        for stream in list(self._followers):
            stream.push(event)
