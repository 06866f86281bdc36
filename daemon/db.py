"""The daemon's one SQLite file: formulas, pet names, mail, metadata and blobs (and a layer's own tables).

The daemon's model is "load everything at startup, then only write": formulas
are immutable, and pet stores and mailboxes live in memory, so reads are plain
synchronous loaders and every write goes through :meth:`Database.commit`.
Loaders use a connection of their own, so they see committed data only, and
may be called from any thread (``read_blob`` of a large blob through
``trio.to_thread``, say).

Writes. A :class:`Batch` records writes (nothing touches the file); ``commit``
applies a batch as one atomic transaction and returns only once it is
committed. All writes run one at a time on a worker thread, behind a
``trio.CapacityLimiter(1)``. Commits are *group-committed*: batches whose
``commit`` is called while a transaction is running wait, and the next
transaction takes all of them at once - one thread hop and one COMMIT for the
group, and one wake-up per waiting caller. If a group's transaction fails,
each of its batches is retried alone, so a bad batch fails only its own
caller.

Durability. WAL journal, ``synchronous=NORMAL``. In WAL mode a COMMIT
``write()``s the transaction's pages into the WAL file before returning; NORMAL
skips only the fsync, which happens at checkpoints. The data is then in the
operating system's page cache, which a killed process (even ``kill -9``) does
not take with it, and the next open replays the WAL. So every commit that
returned survives a crash of the daemon; only a crash of the machine (power
loss, kernel panic) can lose the last transactions - and even then the file
stays consistent. ``synchronous=FULL`` would add an fsync per group.

Blobs live in the ``blobs`` table rather than in files under ``paths.blobs``:
a blob then shares the same transactions, group commit and durability
argument as everything else, a blob and the formula that names it can be
committed together (:meth:`Batch.put_blob`), and no crash can leave a
half-written or orphaned file behind. Blobs are content-addressed (sha256).

Foreign keys are off: the in-memory formula graph is the daemon's, and
removing formulas and names happens in whatever order a batch lists it. The
schema does check the spelling of every formula id.

Schema. ``meta.schema_version`` counts the :data:`MIGRATIONS` applied; opening
a file applies the missing ones in order, each in its own transaction. A new
schema = one more function appended to ``MIGRATIONS`` (never edit a shipped
one) + one more case in tests/test_db.py's upgrade test.

Layers above the daemon (the gateway) keep their own tables in this file, but
the daemon does not know them: a layer brings its tables up to date with
:meth:`Database.migrate_namespace` and its own numbered migrations, counted in
``meta`` under ``schema_version:<namespace>``, writes them with
:meth:`Batch.execute` and reads them with :meth:`Database.select`. Its tables
share the file's transactions, group commit and durability.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import trio
from pydantic import BaseModel

__all__ = [
    "Batch",
    "Database",
    "DatabaseClosed",
    "MIGRATIONS",
    "Migration",
    "SCHEMA_VERSION",
    "SchemaTooNew",
    "blob_hash",
    "migrate",
    "schema_version",
]

# How long a statement waits for a lock held by another connection (the
# daemon's own reader, or someone inspecting the file with the sqlite3 shell)
# before failing.
BUSY_TIMEOUT_SECONDS = 5.0

_T = TypeVar("_T")
_Op = tuple[str, tuple[Any, ...]]


class DatabaseClosed(RuntimeError):
    """The database was closed; nothing more can be written."""


class SchemaTooNew(RuntimeError):
    """The file was written by a newer ocapd, whose schema this one does not know."""


# ---- schema --------------------------------------------------------------------------------

_ID_CHECK = "length({0}) = 64 AND {0} NOT GLOB '*[^0-9a-f]*'"


def _schema_1(db: sqlite3.Connection) -> None:
    """Formulas, pet names, mail, metadata and blobs."""
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL) WITHOUT ROWID")
    db.execute(
        f"""CREATE TABLE formulas (
            id TEXT PRIMARY KEY NOT NULL CHECK ({_ID_CHECK.format("id")}),
            type TEXT NOT NULL,
            body TEXT NOT NULL  -- the formula as JSON, "type" included
        )"""
    )
    db.execute(
        f"""CREATE TABLE names (
            store TEXT NOT NULL CHECK ({_ID_CHECK.format("store")}),
            name TEXT NOT NULL,
            formula TEXT NOT NULL CHECK ({_ID_CHECK.format("formula")}),
            PRIMARY KEY (store, name)
        ) WITHOUT ROWID"""
    )
    db.execute(
        f"""CREATE TABLE messages (
            mailbox TEXT NOT NULL CHECK ({_ID_CHECK.format("mailbox")}),
            number INTEGER NOT NULL CHECK (typeof(number) = 'integer'),
            record TEXT NOT NULL,  -- JSON
            PRIMARY KEY (mailbox, number)
        ) WITHOUT ROWID"""
    )
    db.execute(
        f"""CREATE TABLE blobs (
            sha256 TEXT PRIMARY KEY NOT NULL CHECK ({_ID_CHECK.format("sha256")}),
            data BLOB NOT NULL
        )"""
    )


def _schema_2(db: sqlite3.Connection) -> None:
    """Nothing, now. Version 2 once created the gateway's tokens table; the gateway's
    own migrations ("gateway" namespace) own that table now, and adopt it where it exists."""


def _schema_3(db: sqlite3.Connection) -> None:
    """Marshal formulas keep their value in the storage encoding (``ocapd.captp.storage``).

    Until now a stored value was written with the msgpack wire codec, capabilities
    as export descriptors naming the formula's slots; a wire profile may change,
    a stored value must not. Each body is decoded with the old codec and
    written again, slot for slot. A formula's id is a nonce, not a hash of its
    body, so ids (and every name and dependency on them) stay as they are.
    """
    import base64

    from ocapd.captp import codec
    from ocapd.captp.storage import encode_stored, is_stored

    class _Slot:
        __slots__ = ("n",)

        def __init__(self, n: int) -> None:
            self.n = n

    def slot_of(obj: Any) -> int:
        if type(obj) is not _Slot:
            raise TypeError("not a slot")
        return obj.n

    rows = list(db.execute("SELECT id, body FROM formulas WHERE type = 'marshal'").fetchall())
    for fid, text in rows:
        formula = json.loads(text)
        old = base64.b64decode(formula["body"])
        if is_stored(old):
            continue
        value = codec.decode(old, lambda d: _Slot(d.position))
        formula["body"] = base64.b64encode(encode_stored(value, slot_of)).decode("ascii")
        db.execute("UPDATE formulas SET body = ? WHERE id = ?", [_json(formula), fid])


def _schema_4(db: sqlite3.Connection) -> None:
    """Which peers fetched each share: one row per share and peer designator (``peers.Network``)."""
    db.execute(
        f"""CREATE TABLE share_fetches (
            share TEXT NOT NULL CHECK ({_ID_CHECK.format("share")}),
            peer TEXT NOT NULL,  -- the designator the netlayer authenticated
            first REAL NOT NULL,  -- seconds since the epoch
            last REAL NOT NULL,
            count INTEGER NOT NULL CHECK (typeof(count) = 'integer' AND count > 0),
            PRIMARY KEY (share, peer)
        ) WITHOUT ROWID"""
    )


Migration = Callable[[sqlite3.Connection], None]
# MIGRATIONS[n] takes a file from schema version n to n + 1 (version 0 = empty).
MIGRATIONS: list[Migration] = [_schema_1, _schema_2, _schema_3, _schema_4]
SCHEMA_VERSION = len(MIGRATIONS)
# A layer's namespace: a short lower-case word (it is part of a meta key).
_NAMESPACE = re.compile(r"[a-z][a-z0-9_]{0,31}\Z")


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    # IMMEDIATE takes the write lock up front, so a transaction never fails
    # half-way for want of it.
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _version_key(namespace: str | None) -> str:
    if namespace is None:
        return "schema_version"
    if not isinstance(namespace, str) or not _NAMESPACE.match(namespace):
        raise ValueError(f"a schema namespace is a short lower-case word, not {namespace!r}")
    return f"schema_version:{namespace}"


def schema_version(db: sqlite3.Connection, namespace: str | None = None) -> int:
    """The schema version of an open file (0 for a new, empty one), or of a layer's ``namespace`` in it."""
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is None:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = ?", [_version_key(namespace)]).fetchone()
    return int(row[0]) if row else 0


def migrate(
    db: sqlite3.Connection,
    target: int | None = None,
    *,
    namespace: str | None = None,
    migrations: Sequence[Migration] | None = None,
) -> int:
    """Apply the missing migrations up to ``target`` (default: all), one transaction each.

    The daemon's own :data:`MIGRATIONS` by default; a layer's ``migrations``,
    counted under its ``namespace``, otherwise (the daemon's must be applied
    first: they make ``meta``). Returns the version reached. Raises
    :class:`SchemaTooNew` if the file is ahead of the migrations; a migration
    that fails leaves the file at the version before it.
    """
    if migrations is None:
        if namespace is not None:
            raise ValueError("give a namespace's own migrations")
        migrations = MIGRATIONS
    key = _version_key(namespace)
    latest = len(migrations)
    target = latest if target is None else target
    version = schema_version(db, namespace)
    if version > latest:
        what = "database schema" if namespace is None else f"database schema of {namespace!r}"
        raise SchemaTooNew(f"{what} version {version} is newer than this ocapd knows ({latest}); use a newer ocapd")
    while version < target:
        with _transaction(db):
            migrations[version](db)
            version += 1
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", [key, str(version)])
    return version


# ---- writes --------------------------------------------------------------------------------


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False, allow_nan=False)


def blob_hash(data: bytes) -> str:
    """The content address of ``data``: its sha256, lower-case hex."""
    return hashlib.sha256(data).hexdigest()


_PUT_FORMULA = "INSERT OR REPLACE INTO formulas (id, type, body) VALUES (?, ?, ?)"
_DELETE_FORMULA = "DELETE FROM formulas WHERE id = ?"
_PUT_SHARE_FETCH = "INSERT OR REPLACE INTO share_fetches (share, peer, first, last, count) VALUES (?, ?, ?, ?, ?)"
_DELETE_SHARE_FETCH = "DELETE FROM share_fetches WHERE share = ? AND peer = ?"
_DELETE_SHARE_FETCHES = "DELETE FROM share_fetches WHERE share = ?"
_SET_NAME = "INSERT OR REPLACE INTO names (store, name, formula) VALUES (?, ?, ?)"
_REMOVE_NAME = "DELETE FROM names WHERE store = ? AND name = ?"
_PUT_MESSAGE = "INSERT OR REPLACE INTO messages (mailbox, number, record) VALUES (?, ?, ?)"
_DELETE_MESSAGE = "DELETE FROM messages WHERE mailbox = ? AND number = ?"
_SET_META = "INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)"
_PUT_BLOB = "INSERT OR IGNORE INTO blobs (sha256, data) VALUES (?, ?)"


class Batch:
    """Writes to apply together, in order, as one transaction (see :meth:`Database.commit`).

    The methods only record; values are serialized here, so a value that cannot
    be stored (not JSON-able) raises at the call, in the caller's task.
    """

    __slots__ = ("_ops",)

    def __init__(self) -> None:
        self._ops: list[_Op] = []

    def __len__(self) -> int:
        return len(self._ops)

    def put_formula(self, formula_id: str, formula: Mapping[str, Any] | BaseModel) -> None:
        """Store a formula: its JSON dict (``formulas.formula_to_dict``) or the model itself."""
        data = formula.model_dump(mode="json") if isinstance(formula, BaseModel) else dict(formula)
        kind = data.get("type")
        if not isinstance(kind, str):
            raise ValueError(f"formula {formula_id!r} has no 'type'")
        self._ops.append((_PUT_FORMULA, (formula_id, kind, _json(data))))

    def delete_formula(self, formula_id: str) -> None:
        """Delete a formula, and what is recorded about it (a share's fetches)."""
        self._ops.append((_DELETE_FORMULA, (formula_id,)))
        self._ops.append((_DELETE_SHARE_FETCHES, (formula_id,)))

    def put_share_fetch(self, share_id: str, peer: str, first: float, last: float, count: int) -> None:
        """Record that ``peer`` (a designator) fetched the share ``count`` times, from ``first`` to ``last``."""
        self._ops.append((_PUT_SHARE_FETCH, (share_id, peer, float(first), float(last), int(count))))

    def delete_share_fetch(self, share_id: str, peer: str) -> None:
        self._ops.append((_DELETE_SHARE_FETCH, (share_id, peer)))

    def set_name(self, store_id: str, name: str, formula_id: str) -> None:
        self._ops.append((_SET_NAME, (store_id, name, formula_id)))

    def remove_name(self, store_id: str, name: str) -> None:
        self._ops.append((_REMOVE_NAME, (store_id, name)))

    def put_message(self, mailbox_id: str, number: int, record: Mapping[str, Any]) -> None:
        self._ops.append((_PUT_MESSAGE, (mailbox_id, number, _json(dict(record)))))

    def delete_message(self, mailbox_id: str, number: int) -> None:
        self._ops.append((_DELETE_MESSAGE, (mailbox_id, number)))

    def set_meta(self, key: str, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"meta value for {key!r} must be a str, not {type(value).__name__}")
        self._ops.append((_SET_META, (key, value)))

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` (once, however often it is put); return its sha256."""
        data = bytes(data)
        sha = blob_hash(data)
        self._ops.append((_PUT_BLOB, (sha, data)))
        return sha

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement on a layer's own tables (see :meth:`Database.migrate_namespace`).

        The daemon's tables have the methods above; this is for tables the
        daemon does not know, made by a layer's own migrations.
        """
        if not isinstance(sql, str):
            raise TypeError("execute takes an SQL statement")
        self._ops.append((sql, tuple(params)))


class _Pending:
    """One caller's batch on its way through the writer."""

    __slots__ = ("ops", "taken", "error", "done", "wakeup")

    def __init__(self, ops: list[_Op]) -> None:
        self.ops = ops
        self.taken = False  # a transaction has it: it will be applied or fail, no longer withdrawn
        self.error: BaseException | None = None
        self.done = trio.Event()  # its transaction is over
        self.wakeup = trio.Event()  # done, or its caller was made the leader


# ---- the database --------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    # Made on a worker thread and used from others: one at a time, which is
    # what check_same_thread=False needs.
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_SECONDS, check_same_thread=False)
    conn.execute("PRAGMA recursive_triggers=on")
    return conn


def _open_files(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    writer = _connect(path)
    try:
        mode = writer.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":
            raise sqlite3.OperationalError(f"{path}: cannot use WAL journal (got {mode!r})")
        writer.execute("PRAGMA synchronous=NORMAL")
        writer.execute("PRAGMA foreign_keys=OFF")
        try:
            if schema_version(writer) != len(MIGRATIONS):
                migrate(writer)
        except SchemaTooNew as error:
            raise SchemaTooNew(f"{path}: {error}") from None
        # Loaders read through their own connection, so they only ever see
        # committed data, whatever the writer thread is doing.
        reader = _connect(path)
        reader.execute("PRAGMA query_only=ON")
    except BaseException:
        writer.close()
        raise
    return writer, reader


class Database:
    """The open database file: group-committed writes, synchronous loaders."""

    def __init__(self, path: Path, writer: sqlite3.Connection, reader: sqlite3.Connection) -> None:
        """Use :meth:`open`."""
        self.path = path
        self._writer = writer
        self._reader = reader
        self._read_lock = threading.Lock()
        # Held while the writer connection is in use: a transaction, an
        # integrity check, closing.
        self._lane = trio.CapacityLimiter(1)
        # Given to to_thread so writes never queue behind unrelated threads in
        # trio's shared pool; only ever used while holding _lane.
        self._thread = trio.CapacityLimiter(1)
        self._queue: list[_Pending] = []  # waiting for a transaction
        self._leader: _Pending | None = None  # the caller whose turn it is to write the queue
        self._closing = False
        self._closed = False
        self._stats = {
            "thread_hops": 0,  # one per group
            "transactions": 0,  # committed
            "batches": 0,  # committed
            "failed_batches": 0,
            "largest_group": 0,
        }

    @classmethod
    async def open(cls, path: Path) -> Database:
        """Open (creating it if missing) and migrate the file at ``path``.

        Raises :class:`SchemaTooNew` for a file from a newer ocapd.
        """
        path = Path(path)
        writer, reader = await trio.to_thread.run_sync(_open_files, path)
        return cls(path, writer, reader)

    async def aclose(self) -> None:
        """Finish the batches already handed to ``commit``, then close the file. Idempotent."""
        if self._closing:
            return
        self._closing = True
        with trio.CancelScope(shield=True):
            async with self._lane:
                if self._queue:
                    await self._write_queue()
                with self._read_lock:
                    self._closed = True
                    self._reader.close()
                await trio.to_thread.run_sync(self._close_writer, limiter=self._thread)

    def _close_writer(self) -> None:
        self._writer.execute("PRAGMA optimize")
        self._writer.close()

    def stats(self) -> dict[str, int]:
        """Counters of the writer since open: thread hops, transactions, batches, largest group."""
        return dict(self._stats, queued=len(self._queue))

    # -- writes --

    def batch(self) -> Batch:
        return Batch()

    async def commit(self, batch: Batch) -> None:
        """Apply ``batch`` atomically; return once it is committed (durable, see the module doc).

        Raises the batch's own error (``sqlite3.Error``) if it cannot be applied;
        nothing of it is then written. If ``commit`` is cancelled before its
        batch joined a transaction, nothing is written and ``Cancelled``
        propagates; once the batch has joined one, ``commit`` waits for it and
        reports its outcome (the cancellation then arrives at the caller's next
        checkpoint).
        """
        if self._closing:
            raise DatabaseClosed(f"{self.path}: database is closed")
        if not batch._ops:
            await trio.lowlevel.checkpoint()
            return
        # One caller at a time is the *leader*: it writes everything queued,
        # then hands the lead to the first batch queued meanwhile. The others
        # sleep until their batch is done: one wake-up per batch, one thread
        # hop per group.
        pending = _Pending(list(batch._ops))
        self._queue.append(pending)
        if self._leader is None:
            self._leader = pending
        else:
            try:
                await pending.wakeup.wait()
            except trio.Cancelled:
                # Not made leader: that would have woken us already.
                if not pending.taken:
                    self._queue.remove(pending)
                    raise
                with trio.CancelScope(shield=True):
                    await pending.done.wait()
        if self._leader is pending:
            try:
                await self._lead(pending)
            finally:
                self._leader = None
                if self._queue:
                    self._leader = self._queue[0]
                    self._leader.wakeup.set()
        if pending.error is not None:
            raise pending.error

    async def _lead(self, pending: _Pending) -> None:
        if not pending.taken:
            try:
                await self._lane.acquire()  # aclose or integrity_check may hold it
            except trio.Cancelled:
                if not pending.taken:
                    self._queue.remove(pending)
                    raise
            else:
                try:
                    if not pending.taken:  # aclose may have written it meanwhile
                        if self._closed:
                            self._queue.remove(pending)
                            raise DatabaseClosed(f"{self.path}: database is closed")
                        with trio.CancelScope(shield=True):  # others' batches ride along
                            await self._write_queue()
                finally:
                    self._lane.release()
        with trio.CancelScope(shield=True):
            await pending.done.wait()

    async def _write_queue(self) -> None:
        group, self._queue = self._queue, []
        for pending in group:
            pending.taken = True
        try:
            errors, transactions = await trio.to_thread.run_sync(
                self._write_group, [pending.ops for pending in group], limiter=self._thread
            )
        except BaseException as error:
            errors, transactions = [error] * len(group), 0
            raise
        finally:
            stats = self._stats
            stats["thread_hops"] += 1
            stats["transactions"] += transactions
            failed = sum(failure is not None for failure in errors)
            stats["batches"] += len(group) - failed
            stats["failed_batches"] += failed
            stats["largest_group"] = max(stats["largest_group"], len(group))
            for pending, failure in zip(group, errors, strict=True):
                pending.error = failure
                pending.done.set()
                pending.wakeup.set()

    def _write_group(self, group: list[list[_Op]]) -> tuple[list[BaseException | None], int]:
        """On the writer thread: apply a group in one transaction, or each batch alone if that fails."""
        conn = self._writer
        try:
            with _transaction(conn):
                for ops in group:
                    for sql, params in ops:
                        conn.execute(sql, params)
            return [None] * len(group), 1
        except Exception as error:
            if len(group) == 1:
                return [error], 0
        errors: list[BaseException | None] = []
        for ops in group:
            try:
                with _transaction(conn):
                    for sql, params in ops:
                        conn.execute(sql, params)
            except Exception as error:
                errors.append(error)
            else:
                errors.append(None)
        return errors, errors.count(None)

    async def _one(self, record: Callable[[Batch], _T]) -> _T:
        batch = Batch()
        result = record(batch)
        await self.commit(batch)
        return result

    async def put_formula(self, formula_id: str, formula: Mapping[str, Any] | BaseModel) -> None:
        await self._one(lambda b: b.put_formula(formula_id, formula))

    async def delete_formula(self, formula_id: str) -> None:
        await self._one(lambda b: b.delete_formula(formula_id))

    async def set_name(self, store_id: str, name: str, formula_id: str) -> None:
        await self._one(lambda b: b.set_name(store_id, name, formula_id))

    async def remove_name(self, store_id: str, name: str) -> None:
        await self._one(lambda b: b.remove_name(store_id, name))

    async def put_message(self, mailbox_id: str, number: int, record: Mapping[str, Any]) -> None:
        await self._one(lambda b: b.put_message(mailbox_id, number, record))

    async def delete_message(self, mailbox_id: str, number: int) -> None:
        await self._one(lambda b: b.delete_message(mailbox_id, number))

    async def set_meta(self, key: str, value: str) -> None:
        await self._one(lambda b: b.set_meta(key, value))

    async def put_blob(self, data: bytes) -> str:
        """Store ``data`` content-addressed; return its sha256 hex."""
        return await self._one(lambda b: b.put_blob(data))

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One statement on a layer's own tables, committed (see :meth:`Batch.execute`)."""
        await self._one(lambda b: b.execute(sql, params))

    async def migrate_namespace(self, namespace: str, migrations: Sequence[Migration]) -> int:
        """Bring a layer's own tables up to date: apply its missing ``migrations``, counted under ``namespace``.

        For layers above the daemon (the gateway), whose tables the daemon
        does not know. Each migration runs in its own transaction on the
        writer thread, like the daemon's; returns the version reached.
        Raises :class:`SchemaTooNew` if the file is ahead of ``migrations``.
        """
        key = _version_key(namespace)  # validates it before anything runs
        if self.get_meta(key) == str(len(migrations)):
            return len(migrations)  # the usual start: nothing to do, no thread hop

        def run() -> int:
            return migrate(self._writer, namespace=namespace, migrations=migrations)

        async with self._lane:
            if self._closing:
                raise DatabaseClosed(f"{self.path}: database is closed")
            try:
                return await trio.to_thread.run_sync(run, limiter=self._thread)
            except SchemaTooNew as error:
                raise SchemaTooNew(f"{self.path}: {error}") from None

    async def integrity_check(self) -> str:
        """``PRAGMA integrity_check``: ``"ok"``, or the problems found, one per line."""
        async with self._lane:
            if self._closing:
                raise DatabaseClosed(f"{self.path}: database is closed")
            rows = await trio.to_thread.run_sync(
                lambda: self._writer.execute("PRAGMA integrity_check").fetchall(), limiter=self._thread
            )
        return "\n".join(str(row[0]) for row in rows)

    # -- loaders: synchronous, committed data only --

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        # The lock lets loaders be called from any thread - say read_blob of a
        # large blob through trio.to_thread - while the trio thread reads too.
        with self._read_lock:
            if self._closed:
                raise DatabaseClosed(f"{self.path}: database is closed")
            return self._reader.execute(sql, params).fetchall()

    def load_formulas(self) -> dict[str, dict[str, Any]]:
        """Every formula: id -> its JSON dict (parse with ``formulas.parse_formula``)."""
        rows = self._read("SELECT id, body FROM formulas")
        return {formula_id: json.loads(body) for formula_id, body in rows}

    def load_names(self) -> dict[str, dict[str, str]]:
        """Every pet store's names: store id -> {name: formula id}, names in order."""
        names: dict[str, dict[str, str]] = {}
        for store, name, formula in self._read("SELECT store, name, formula FROM names ORDER BY store, name"):
            names.setdefault(store, {})[name] = formula
        return names

    def load_messages(self) -> dict[str, list[dict[str, Any]]]:
        """Every mailbox's records, by increasing message number: mailbox id -> records."""
        messages: dict[str, list[dict[str, Any]]] = {}
        for mailbox, record in self._read("SELECT mailbox, record FROM messages ORDER BY mailbox, number"):
            messages.setdefault(mailbox, []).append(json.loads(record))
        return messages

    def load_share_fetches(self) -> dict[str, list[dict[str, Any]]]:
        """Who fetched each share: share id -> [{peer, first, last, count}], the latest fetch first."""
        fetches: dict[str, list[dict[str, Any]]] = {}
        rows = self._read("SELECT share, peer, first, last, count FROM share_fetches ORDER BY share, last DESC, peer")
        for share, peer, first, last, count in rows:
            fetches.setdefault(share, []).append({"peer": peer, "first": first, "last": last, "count": count})
        return fetches

    def select(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of a query on a layer's own tables (committed data only, like every loader)."""
        return self._read(sql, tuple(params))

    def load_mailbox(self, mailbox_id: str) -> list[dict[str, Any]]:
        """One mailbox's records, by increasing message number."""
        rows = self._read("SELECT record FROM messages WHERE mailbox = ? ORDER BY number", (mailbox_id,))
        return [json.loads(record) for (record,) in rows]

    def get_meta(self, key: str) -> str | None:
        rows = self._read("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def read_blob(self, sha: str) -> bytes:
        """The blob with this sha256; ``KeyError`` if there is none. Any thread may call it."""
        rows = self._read("SELECT data FROM blobs WHERE sha256 = ?", (sha,))
        if not rows:
            raise KeyError(sha)
        return bytes(rows[0][0])

    def schema_version(self) -> int:
        with self._read_lock:
            if self._closed:
                raise DatabaseClosed(f"{self.path}: database is closed")
            return schema_version(self._reader)
