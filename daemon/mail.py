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

Quotas (``DaemonLimits``, issue 9 item 11): a message's encoded size, the
number of messages and the bytes a mailbox holds, and the requests one
sender may have waiting here. A sender over one gets ``MailQuotaExceeded``
saying which. A mailbox is read from the database when its agent is first
used, not at start, and listed in pages that always fit a CapTP frame; a
message stored before the quotas that is larger than one is listed as a
stub saying so.
"""

from __future__ import annotations

import builtins
import weakref
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ocapd.captp import codec

from .limits import DaemonLimits
from .petstore import ChangeStream

if TYPE_CHECKING:
    from .kernel import Kernel

__all__ = ["Mailbox", "MailQuotaExceeded", "now_iso", "LIST_PAGE_BYTES", "LIST_PAGE_MESSAGES"]

#: A listing page holds at most this many bytes of messages (and at least one
#: message, each at most ``DaemonLimits.message_bytes``): well under the 16 MiB
#: frame, so no listing can fail with frame-too-large.
LIST_PAGE_BYTES = 4 * 1024 * 1024
#: ... and at most this many messages.
LIST_PAGE_MESSAGES = 200


class MailQuotaExceeded(ValueError):
    """A message was refused: too large, or the recipient's mailbox is full, or too many requests wait."""


def _size(record: dict[str, Any]) -> int:
    return len(codec.encode(record))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


class Mailbox:
    """The messages of one mailbox-store formula."""

    def __init__(self, kernel: Kernel, store_id: str, records: builtins.list[dict[str, Any]]) -> None:
        self.kernel = kernel
        self.id = store_id
        self._messages: dict[int, dict[str, Any]] = {r["number"]: r for r in records}
        self._sizes: dict[int, int] = {n: _size(r) for n, r in self._messages.items()}
        self._bytes = sum(self._sizes.values())
        self._next = max(self._messages, default=-1) + 1
        stored_next = kernel.db.get_meta(f"mailbox-next:{store_id}")
        if stored_next is not None:
            self._next = max(self._next, int(stored_next))
        # Held weakly: a stream lives as long as its follower holds it (over
        # CapTP, until the session ends or drops it), not as long as we do.
        # Each with how its records are shown (its agent's describe).
        self._followers: weakref.WeakKeyDictionary[ChangeStream, Callable[[dict[str, Any]], dict[str, Any]]] = (
            weakref.WeakKeyDictionary()
        )

    @property
    def limits(self) -> DaemonLimits:
        limits: DaemonLimits | None = self.kernel.services.limits
        return limits or DaemonLimits()

    def list(self) -> builtins.list[dict[str, Any]]:
        return [self._shown(m) for _, m in sorted(self._messages.items())]

    def page(self, after: int = -1, limit: int = LIST_PAGE_MESSAGES) -> builtins.list[dict[str, Any]]:
        """Messages numbered above ``after``, oldest first: at most ``limit`` and ``LIST_PAGE_BYTES``, at least one."""
        if type(after) is not int or type(limit) is not int or limit < 1:
            raise ValueError("a page needs an integer 'after' and a positive integer 'limit'")
        out: builtins.list[dict[str, Any]] = []
        total = 0
        for number in sorted(n for n in self._messages if n > after):
            size = min(self._sizes[number], self.limits.message_bytes)
            if out and (len(out) >= min(limit, LIST_PAGE_MESSAGES) or total + size > LIST_PAGE_BYTES):
                break
            out.append(self._shown(self._messages[number]))
            total += size
        return out

    def _shown(self, m: dict[str, Any]) -> dict[str, Any]:
        """A message as listed: itself, or a stub if it is over the size any frame should carry."""
        size = self._sizes.get(m["number"], 0)
        if size <= self.limits.message_bytes:
            return dict(m)
        stub: dict[str, Any] = {k: m[k] for k in ("number", "type", "from", "to", "date") if k in m}
        text = f"[a message of {size} bytes, over the {self.limits.message_bytes}-byte limit: dismiss it]"
        if m.get("type") == "request":
            return {**stub, "description": text, "settled": m.get("settled"), "oversize": size,
                    **{k: m[k] for k in ("promise", "resolver", "response_name") if k in m}}
        return {**stub, "strings": [text], "names": [], "ids": [], "oversize": size}

    def pending_requests_from(self, sender: str) -> int:
        return sum(
            1 for m in self._messages.values()
            if m["type"] == "request" and m["from"] == sender and m.get("settled") is None
        )

    def check_quota(self, record: dict[str, Any]) -> int:
        """The encoded size of ``record`` if this mailbox may take it; ``MailQuotaExceeded`` otherwise."""
        limits = self.limits
        size = _size({**record, "number": self._next})
        if size > limits.message_bytes:
            raise MailQuotaExceeded(f"message too large: {size} bytes (at most {limits.message_bytes})")
        if len(self._messages) >= limits.messages:
            raise MailQuotaExceeded(
                f"the recipient's mailbox is full ({limits.messages} messages); it must dismiss some first"
            )
        if self._bytes + size > limits.mailbox_bytes:
            raise MailQuotaExceeded(
                f"the recipient's mailbox is full ({self._bytes} of {limits.mailbox_bytes} bytes used)"
            )
        if record.get("type") == "request" and self.pending_requests_from(record["from"]) >= limits.pending_requests:
            raise MailQuotaExceeded(
                f"{limits.pending_requests} of your requests are already waiting for an answer there; "
                "ask again once one is answered"
            )
        return size

    def get(self, number: int) -> dict[str, Any]:
        if type(number) is not int or number not in self._messages:
            raise LookupError(f"no message number {number!r}")
        return self._messages[number]

    async def deliver(self, record: dict[str, Any]) -> dict[str, Any]:
        """Add a message (``number`` is assigned here); returns the stored record.

        Raises ``MailQuotaExceeded`` if it is over a quota.
        """
        size = self.check_quota(record)
        number = self._next
        self._next += 1
        record = {**record, "number": number}
        batch = self.kernel.db.batch()
        batch.put_message(self.id, number, record)
        # Numbers are never reused, even after the newest message is dismissed.
        batch.set_meta(f"mailbox-next:{self.id}", str(self._next))
        await self.kernel.db.commit(batch)
        self._messages[number] = record
        self._sizes[number] = size
        self._bytes += size
        self._emit({"add": self._shown(record)})
        return record

    async def update(self, number: int, **changes: Any) -> None:
        record = {**self.get(number), **changes}
        batch = self.kernel.db.batch()
        batch.put_message(self.id, number, record)
        await self.kernel.db.commit(batch)
        self._messages[number] = record
        size = _size(record)
        self._bytes += size - self._sizes.get(number, 0)
        self._sizes[number] = size
        self._emit({"update": self._shown(record)})

    async def dismiss(self, number: int) -> None:
        self.get(number)
        batch = self.kernel.db.batch()
        batch.delete_message(self.id, number)
        await self.kernel.db.commit(batch)
        self._messages.pop(number, None)
        self._bytes -= self._sizes.pop(number, 0)
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

    def follow(self, describe: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> ChangeStream:
        """Every message now (``{"add": m}``), then each change as it happens.

        ``describe`` (the agent's) turns each record that goes out into what
        its clients see (the sender's names).
        """
        stream = ChangeStream(on_close=self._unfollow)
        shown = describe or _as_is
        for record in self.list():  # oversized ones as stubs
            stream.push({"add": shown(record)})
        self._followers[stream] = shown
        return stream

    def _unfollow(self, stream: ChangeStream) -> None:
        self._followers.pop(stream, None)

    def _emit(self, event: dict[str, Any]) -> None:
        for stream, shown in list(self._followers.items()):
            kind = "add" if "add" in event else "update" if "update" in event else None
            stream.push(event if kind is None else {kind: shown(event[kind])})


def _as_is(record: dict[str, Any]) -> dict[str, Any]:
    return record
