"""Mailboxes: an agent's numbered messages, persisted and followable.

A message record is plain data (it is what the database stores):

- ``number``: per mailbox, increasing, never reused;
- ``type``: ``"package"`` (text with named capabilities attached) or ``"request"``;
- ``from`` / ``to``: the sender's and recipient's *handle* formula ids, stamped
  by the daemon from the agents that sent and received it (never from an
  argument, so a sender cannot be forged);
- ``date``: ISO 8601 UTC;
- package: ``strings`` (text pieces) interleaved with ``names`` (edge names)
  whose formula ``ids`` are carried alongside;
- request: ``description``, the ``promise`` and ``resolver`` formula ids, the
  optional ``response_name`` and ``settled`` (None, "fulfilled", "rejected").
"""

from __future__ import annotations

import weakref
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .petstore import ChangeStream

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Mailbox", "now_iso"]


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Mailbox:
    """The messages of one mailbox-store formula."""

    def __init__(self, kernel: Kernel, store_id: str, records: list[dict[str, Any]]) -> None:
        self.kernel = kernel
        self.id = store_id
        self._messages: dict[int, dict[str, Any]] = {r["number"]: r for r in records}
        self._next = max(self._messages, default=-1) + 1
        stored_next = kernel.db.get_meta(f"mailbox-next:{store_id}")
        if stored_next is not None:
            self._next = max(self._next, int(stored_next))
        # Held weakly: a stream lives as long as its follower holds it (over
        # CapTP, until the session ends or drops it), not as long as we do.
        self._followers: weakref.WeakSet[ChangeStream] = weakref.WeakSet()

    def list(self) -> list[dict[str, Any]]:
        return [dict(m) for _, m in sorted(self._messages.items())]

    def get(self, number: int) -> dict[str, Any]:
        if type(number) is not int or number not in self._messages:
            raise LookupError(f"no message number {number!r}")
        return self._messages[number]

    async def deliver(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add a message (``number`` is assigned here); returns the stored record."""
        number = self._next
        self._next += 1
        record = {**record, "number": number}
        batch = self.kernel.db.batch()
        batch.put_message(self.id, number, record)
        # Numbers are never reused, even after the newest message is dismissed.
        batch.set_meta(f"mailbox-next:{self.id}", str(self._next))
        await self.kernel.db.commit(batch)
        self._messages[number] = record
        self._emit({"add": record})
        return record

    async def update(self, number: int, **changes: Any) -> None:
        record = {**self.get(number), **changes}
        batch = self.kernel.db.batch()
        batch.put_message(self.id, number, record)
        await self.kernel.db.commit(batch)
        self._messages[number] = record
        self._emit({"update": record})

    async def dismiss(self, number: int) -> None:
        self.get(number)
        batch = self.kernel.db.batch()
        batch.delete_message(self.id, number)
        await self.kernel.db.commit(batch)
        self._messages.pop(number, None)
        self._emit({"dismiss": number})

    def find_request(self, sender: str, response_name: str) -> dict[str, Any] | None:
        """An earlier request from ``sender`` with the same response name (idempotent requests).

        A pending one, or else one already fulfilled: asking again for what was
        already given gets the same answer (a caplet reincarnated after a
        restart asks again, possibly after its host answered). A rejected one
        is not reused: asking again after a refusal is a new request.
        """
        fulfilled = None
        for m in self._messages.values():
            if m["type"] != "request" or m["from"] != sender or m.get("response_name") != response_name:
                continue
            if m.get("settled") is None:
                return m
            if m.get("settled") == "fulfilled":
                fulfilled = m
        return fulfilled

    def follow(self) -> ChangeStream:
        stream = ChangeStream(on_close=self._unfollow)
        for record in self.list():
            stream.push({"add": record})
        self._followers.add(stream)
        return stream

    def _unfollow(self, stream: ChangeStream) -> None:
        self._followers.discard(stream)

    def _emit(self, event: dict[str, Any]) -> None:
        for stream in list(self._followers):
            stream.push(event)
