"""The small capability values a few formula types incarnate as: NONE, ENDO, blobs, text stores, request resolvers.

Each is a far object whose public methods are all its holder can do.
Agents live in ``hosts``/``guests``, directories in ``directories``, workers
and evaluations in ``work``, weblets in ``weblets``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import trio

from ocapd.captp import RemoteError, far
from ocapd.captp.storage import encode_stored

from . import formulas as F

if TYPE_CHECKING:
    from .kernel import Kernel
    from .petstore import PetStore

__all__ = ["EndoPowers", "LeastAuthority", "ReadableBlob", "RequestResolver", "TextStore", "stored_rejection"]


def stored_rejection(reason: str) -> F.MarshalFormula:
    """The stored value a rejected request resolves to: an error carrying ``reason`` (no capabilities)."""

    def no_capabilities(obj: Any) -> int:
        raise TypeError("a rejection carries no capabilities")

    return F.MarshalFormula(body=encode_stored(RemoteError("Error", str(reason)), no_capabilities), slots=[])


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
        fid = await self._kernel.formulate(stored_rejection(reason))
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


#: The most text one text store keeps (UTF-8 bytes): a note, a draft, a small
#: document — well under a frame, so reading it back can never exceed one.
MAX_TEXT_BYTES = 1024 * 1024
#: The text stores' own table, made on first use under this namespace.
TEXT_STORE_NAMESPACE = "texts"


def _text_store_schema_1(db: Any) -> None:
    db.execute(
        "CREATE TABLE text_stores (id TEXT PRIMARY KEY NOT NULL, text TEXT NOT NULL, updated REAL NOT NULL) WITHOUT ROWID"
    )


#: TEXT_STORE_MIGRATIONS[n] takes the table from version n to n + 1. Append, never edit.
TEXT_STORE_MIGRATIONS = [_text_store_schema_1]


@far("TextStore")
class TextStore:
    """A piece of text that outlives restarts: ``get()``, ``set(text)``, ``append(text)``.

    The text lives in the database, not in any process's memory: what a
    holder sets is written (and acknowledged) before ``set`` returns, and a
    restarted daemon gives the same text back. A weblet that keeps notes, a
    draft or settings asks its host for one of these.
    """

    def __init__(self, kernel: Kernel, fid: str, text: str) -> None:
        self._kernel = kernel
        self._id = fid
        self._text = text

    @classmethod
    async def open(cls, kernel: Kernel, fid: str) -> TextStore:
        await kernel.db.migrate_namespace(TEXT_STORE_NAMESPACE, TEXT_STORE_MIGRATIONS)
        rows = kernel.db.select("SELECT text FROM text_stores WHERE id = ?", (fid,))
        return cls(kernel, fid, rows[0][0] if rows else "")

    def get(self) -> str:
        """The text."""
        return self._text

    async def set(self, text: str) -> None:
        """Replace the text (at most 1 MiB of UTF-8)."""
        if not isinstance(text, str):
            raise TypeError(f"a text store keeps text, not {type(text).__name__}")
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > MAX_TEXT_BYTES:
            raise ValueError(f"the text is {size} bytes; a text store keeps at most {MAX_TEXT_BYTES}")
        await self._kernel.db.execute(
            "INSERT INTO text_stores (id, text, updated) VALUES (?, ?, ?) "
            "ON CONFLICT (id) DO UPDATE SET text = excluded.text, updated = excluded.updated",
            (self._id, text, time.time()),
        )
        self._text = text

    async def append(self, text: str) -> str:
        """Add ``text`` at the end; return the whole text."""
        if not isinstance(text, str):
            raise TypeError(f"a text store keeps text, not {type(text).__name__}")
        await self.set(self._text + text)
        return self._text
