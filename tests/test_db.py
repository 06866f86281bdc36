"""The daemon's SQLite file (daemon/db.py): round trips, group commit, migrations, kill -9."""

from __future__ import annotations

import base64
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import trio
import trio.testing

import ocapd.daemon.db as db_module
import ocapd.gateway.tokens as tokens
from ocapd.captp import Tagged
from ocapd.captp.storage import decode_stored, is_stored
from ocapd.daemon.db import SCHEMA_VERSION, Database, DatabaseClosed, SchemaTooNew, blob_hash, migrate
from ocapd.daemon.formulas import (
    EvalFormula,
    HandleFormula,
    MarshalFormula,
    PetStoreFormula,
    ReadableBlobFormula,
    WorkerFormula,
    formula_to_dict,
    new_formula_id,
    parse_formula,
)

STORE = "5" * 64
MAILBOX = "6" * 64


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "ocapd.sqlite")
    try:
        yield database
    finally:
        await database.aclose()


async def reopen(database: Database) -> Database:
    await database.aclose()
    return await Database.open(database.path)


# ---- round trips ---------------------------------------------------------------------------


async def test_a_new_file_gets_the_current_schema_in_wal_mode(db: Database) -> None:
    assert db.schema_version() == SCHEMA_VERSION
    conn = sqlite3.connect(db.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


async def test_formulas_round_trip_through_the_file(db: Database) -> None:
    worker, blob = new_formula_id(), new_formula_id()
    formulas = {
        worker: WorkerFormula(level="NONE"),
        new_formula_id(): EvalFormula(worker=worker, source="1 + x", names=["x"], values=[blob]),
        new_formula_id(): MarshalFormula(body=b"\x00\xff binary", slots=[worker]),
        blob: ReadableBlobFormula(content=blob_hash(b"text")),
        new_formula_id(): PetStoreFormula(),
    }
    batch = db.batch()
    for formula_id, formula in formulas.items():
        batch.put_formula(formula_id, formula_to_dict(formula))
    await db.commit(batch)
    db = await reopen(db)
    try:
        loaded = {formula_id: parse_formula(data) for formula_id, data in db.load_formulas().items()}
        assert loaded == formulas
    finally:
        await db.aclose()


async def test_a_formula_model_can_be_stored_as_is(db: Database) -> None:
    formula_id, agent = new_formula_id(), new_formula_id()
    await db.put_formula(formula_id, HandleFormula(agent=agent))
    assert db.load_formulas() == {formula_id: {"type": "handle", "agent": agent}}
    await db.delete_formula(formula_id)
    assert db.load_formulas() == {}


async def test_names_load_per_store(db: Database) -> None:
    other = "7" * 64
    a, b = new_formula_id(), new_formula_id()
    batch = db.batch()
    batch.set_name(STORE, "zeta", a)
    batch.set_name(STORE, "alpha", b)
    batch.set_name(other, "alpha", a)
    await db.commit(batch)
    await db.set_name(STORE, "zeta", b)  # overwrite
    db = await reopen(db)
    try:
        assert db.load_names() == {STORE: {"alpha": b, "zeta": b}, other: {"alpha": a}}
        await db.remove_name(STORE, "zeta")
        await db.remove_name(STORE, "never-there")
        assert db.load_names()[STORE] == {"alpha": b}
    finally:
        await db.aclose()


async def test_messages_load_in_number_order(db: Database) -> None:
    for number in (3, 1, 2, 10):
        await db.put_message(MAILBOX, number, {"number": number, "strings": ["hi ", "é"]})
    await db.delete_message(MAILBOX, 2)
    db = await reopen(db)
    try:
        assert [m["number"] for m in db.load_messages()[MAILBOX]] == [1, 3, 10]
        assert db.load_messages()[MAILBOX][0]["strings"] == ["hi ", "é"]
    finally:
        await db.aclose()


async def test_meta_values_are_strings(db: Database) -> None:
    assert db.get_meta("root-nonce") is None
    await db.set_meta("root-nonce", "abc")
    await db.set_meta("root-nonce", "def")
    assert db.get_meta("root-nonce") == "def"
    with pytest.raises(TypeError):
        db.batch().set_meta("n", 1)  # type: ignore[arg-type]


async def test_a_shares_fetches_are_kept_and_go_with_its_formula(db: Database) -> None:
    share, other = "1" * 64, "2" * 64
    batch = db.batch()
    batch.put_share_fetch(share, "peer-a", 10.0, 10.0, 1)
    batch.put_share_fetch(share, "peer-a", 10.0, 12.5, 2)  # the same peer again: one row
    batch.put_share_fetch(share, "peer-b", 11.0, 11.0, 1)
    batch.put_share_fetch(other, "peer-a", 5.0, 5.0, 1)
    await db.commit(batch)
    db = await reopen(db)
    assert db.load_share_fetches() == {
        share: [{"peer": "peer-a", "first": 10.0, "last": 12.5, "count": 2}, {"peer": "peer-b", "first": 11.0, "last": 11.0, "count": 1}],
        other: [{"peer": "peer-a", "first": 5.0, "last": 5.0, "count": 1}],
    }
    await db.delete_formula(share)
    assert list(db.load_share_fetches()) == [other]
    await db.aclose()


async def test_blobs_are_content_addressed_and_stored_once(db: Database) -> None:
    data = bytes(range(256)) * 100
    sha = await db.put_blob(data)
    assert sha == blob_hash(data) and len(sha) == 64
    assert await db.put_blob(data) == sha
    assert db.read_blob(sha) == data
    with pytest.raises(KeyError):
        db.read_blob("0" * 64)


async def test_a_blob_and_the_formula_naming_it_commit_together(db: Database) -> None:
    batch = db.batch()
    sha = batch.put_blob(b"readme")
    formula_id = new_formula_id()
    batch.put_formula(formula_id, ReadableBlobFormula(content=sha))
    batch.set_name(STORE, "readme", formula_id)
    await db.commit(batch)
    assert db.read_blob(db.load_formulas()[formula_id]["content"]) == b"readme"


# ---- batches and failures ------------------------------------------------------------------


async def test_a_batch_applies_in_order(db: Database) -> None:
    a, b = new_formula_id(), new_formula_id()
    batch = db.batch()
    batch.set_name(STORE, "gone", a)
    batch.remove_name(STORE, "gone")
    batch.set_name(STORE, "moved", a)
    batch.set_name(STORE, "moved", b)
    await db.commit(batch)
    assert db.load_names() == {STORE: {"moved": b}}


async def test_a_batch_is_all_or_nothing(db: Database) -> None:
    batch = db.batch()
    batch.put_formula(new_formula_id(), WorkerFormula())
    batch.set_name(STORE, "ok", new_formula_id())
    batch.set_name(STORE, "bad", "NOT-AN-ID")  # refused by the schema
    with pytest.raises(sqlite3.IntegrityError):
        await db.commit(batch)
    assert db.load_formulas() == {} and db.load_names() == {}


async def test_values_that_cannot_be_stored_fail_when_recorded(db: Database) -> None:
    batch = db.batch()
    with pytest.raises(TypeError):
        batch.put_message(MAILBOX, 1, {"what": object()})
    with pytest.raises(ValueError):
        batch.put_formula(new_formula_id(), {"no": "type"})
    assert len(batch) == 0


async def test_an_empty_batch_commits_trivially(db: Database) -> None:
    await db.commit(db.batch())
    assert db.stats()["transactions"] == 0


async def test_concurrent_commits_are_grouped_into_few_transactions(db: Database) -> None:
    writers = 50

    async def write(n: int) -> None:
        await db.set_name(STORE, f"n{n}", new_formula_id())

    async with trio.open_nursery() as nursery:
        for n in range(writers):
            nursery.start_soon(write, n)
    stats = db.stats()
    # All 50 are queued before the first transaction starts, or while it runs.
    assert stats["transactions"] <= 2 < writers
    assert stats["thread_hops"] == stats["transactions"]
    assert stats["batches"] == writers
    assert len(db.load_names()[STORE]) == writers


async def test_a_bad_batch_in_a_group_fails_only_its_own_caller(db: Database) -> None:
    results: dict[int, str] = {}

    async def write(n: int) -> None:
        target = "bad-id" if n == 7 else new_formula_id()
        try:
            await db.set_name(STORE, f"n{n}", target)
            results[n] = "ok"
        except sqlite3.IntegrityError:
            results[n] = "refused"

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(write, n)
    assert results == {n: ("refused" if n == 7 else "ok") for n in range(20)}
    assert sorted(db.load_names()[STORE]) == sorted(f"n{n}" for n in range(20) if n != 7)
    assert db.stats()["failed_batches"] == 1


async def test_a_commit_returns_once_another_connection_can_read_it(db: Database) -> None:
    target = new_formula_id()
    await db.set_name(STORE, "seen", target)
    conn = sqlite3.connect(db.path)
    try:
        assert conn.execute("SELECT formula FROM names WHERE name = 'seen'").fetchall() == [(target,)]
    finally:
        conn.close()


async def test_a_commit_cancelled_before_its_transaction_writes_nothing(db: Database) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await db.set_meta("cancelled", "yes")
    assert db.get_meta("cancelled") is None

    # Now cancel one of two commits waiting behind a running transaction.
    async with trio.open_nursery() as nursery:
        async with db._lane:  # as integrity_check or aclose would hold it
            waiting = trio.CancelScope()

            async def cancelled_writer() -> None:
                with waiting:
                    await db.set_meta("cancelled", "yes")

            nursery.start_soon(cancelled_writer)
            nursery.start_soon(db.set_meta, "kept", "yes")
            await trio.testing.wait_all_tasks_blocked()
            assert db.stats()["queued"] == 2
            waiting.cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert db.stats()["queued"] == 1
    assert db.get_meta("cancelled") is None
    assert db.get_meta("kept") == "yes"


async def test_a_commit_cancelled_once_its_transaction_started_reports_the_outcome(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    write_group = db._write_group

    def held_write_group(group: list) -> tuple:
        gate.wait(10)
        return write_group(group)

    monkeypatch.setattr(db, "_write_group", held_write_group)
    late = trio.CancelScope()

    async def cancelled_writer() -> None:
        with late:
            await db.set_meta("second", "yes")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(db.set_meta, "first", "yes")
        nursery.start_soon(cancelled_writer)
        await trio.testing.wait_all_tasks_blocked()
        assert db.stats()["queued"] == 0  # both are in the running transaction
        late.cancel()
        gate.set()
    assert not late.cancelled_caught
    assert db.get_meta("first") == db.get_meta("second") == "yes"


async def test_closing_writes_what_was_queued_then_refuses_more(tmp_path: Path) -> None:
    database = await Database.open(tmp_path / "ocapd.sqlite")
    async with trio.open_nursery() as nursery:
        async with database._lane:
            nursery.start_soon(database.set_meta, "queued", "yes")
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(database.aclose)
            await trio.testing.wait_all_tasks_blocked()
    with pytest.raises(DatabaseClosed):
        await database.set_meta("late", "no")
    with pytest.raises(DatabaseClosed):
        database.load_names()
    await database.aclose()  # again: nothing happens
    database = await Database.open(tmp_path / "ocapd.sqlite")
    assert database.get_meta("queued") == "yes"
    await database.aclose()


PUT_TOKEN = "INSERT INTO tokens (id, hash, agent, label, created) VALUES (?, ?, ?, ?, ?)"


async def test_tokens_are_stored_hashed_listed_and_deleted(db: Database) -> None:
    await db.migrate_namespace(tokens.SCHEMA_NAMESPACE, tokens.MIGRATIONS)  # the gateway's own table
    agent = new_formula_id()
    await db.execute(PUT_TOKEN, ("1" * 32, "e" * 64, agent, "chat", 1.5))
    await db.execute(PUT_TOKEN, ("2" * 32, "f" * 64, agent, "laptop", 2.5))
    db = await reopen(db)
    store = await tokens.TokenStore.open(db)
    assert [t.label for t in store.list()] == ["chat", "laptop"]
    assert store.list()[0] == tokens.TokenRecord(id="1" * 32, hash="e" * 64, agent=agent, label="chat", created=1.5)
    await store.revoke("1" * 32)
    assert [t.id for t in (await tokens.TokenStore.open(db)).list()] == ["2" * 32]
    with pytest.raises(sqlite3.IntegrityError):
        await db.execute(PUT_TOKEN, ("not-an-id", "e" * 64, agent, "x", 0.0))
    await db.aclose()


async def test_a_layer_above_keeps_its_tables_under_its_own_schema_namespace(db: Database) -> None:
    def things(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE things (name TEXT PRIMARY KEY)")

    assert await db.migrate_namespace("layer", [things]) == 1
    assert await db.migrate_namespace("layer", [things]) == 1  # already there: nothing runs
    assert db.get_meta("schema_version:layer") == "1"
    assert db.schema_version() == SCHEMA_VERSION  # the daemon's own version is its own
    await db.execute("INSERT INTO things (name) VALUES (?)", ("one",))
    batch = db.batch()
    batch.execute("INSERT INTO things (name) VALUES (?)", ("two",))
    await db.commit(batch)
    db = await reopen(db)
    assert db.select("SELECT name FROM things ORDER BY name") == [("one",), ("two",)]
    with pytest.raises(SchemaTooNew, match="newer than this ocapd knows"):
        await db.migrate_namespace("layer", [])
    with pytest.raises(ValueError, match="namespace"):
        await db.migrate_namespace("Not a name", [things])
    await db.aclose()


async def test_integrity_check_of_a_healthy_file_is_ok(db: Database) -> None:
    await db.put_formula(new_formula_id(), WorkerFormula())
    assert await db.integrity_check() == "ok"


# ---- schema migrations ---------------------------------------------------------------------
# One case per schema version N: make a file at version N holding data written
# with version N's own SQL (frozen here, never updated), open it with the current
# code, and check the data is all there. A new migration adds its case.

OLD_FORMULA = "a" * 64
OLD_WORKER = "b" * 64


def _fixture_v0(db: sqlite3.Connection) -> None:
    """Version 0 is the empty file a first start sees."""


def _check_v0(database: Database) -> None:
    assert database.load_formulas() == {}


def _fixture_v1(db: sqlite3.Connection) -> None:
    with db:
        db.execute(
            "INSERT INTO formulas (id, type, body) VALUES (?, 'worker', ?)",
            [OLD_WORKER, '{"level":"NONE","type":"worker"}'],
        )
        db.execute(
            "INSERT INTO formulas (id, type, body) VALUES (?, 'eval', ?)",
            [OLD_FORMULA, '{"names":[],"source":"1","type":"eval","values":[],"worker":"' + OLD_WORKER + '"}'],
        )
        db.execute("INSERT INTO names (store, name, formula) VALUES (?, 'one', ?)", [STORE, OLD_FORMULA])
        db.execute("INSERT INTO messages (mailbox, number, record) VALUES (?, 0, '{\"n\":0}')", [MAILBOX])
        db.execute("INSERT INTO meta (key, value) VALUES ('root-nonce', 'n1')")
        db.execute("INSERT INTO blobs (sha256, data) VALUES (?, ?)", [blob_hash(b"old"), b"old"])


def _check_v1(database: Database) -> None:
    formulas = {i: parse_formula(data) for i, data in database.load_formulas().items()}
    assert formulas == {
        OLD_WORKER: WorkerFormula(level="NONE"),
        OLD_FORMULA: EvalFormula(worker=OLD_WORKER, source="1", names=[], values=[]),
    }
    assert database.load_names() == {STORE: {"one": OLD_FORMULA}}
    assert database.load_messages() == {MAILBOX: [{"n": 0}]}
    assert database.get_meta("root-nonce") == "n1"
    assert database.read_blob(blob_hash(b"old")) == b"old"


OLD_TOKEN_HASH = "c" * 64


def _fixture_v2(db: sqlite3.Connection) -> None:
    _fixture_v1(db)
    with db:
        # Version 2 made the gateway's tokens table in the daemon's schema
        # (today the gateway's own migrations make it, and adopt this one).
        db.execute(
            """CREATE TABLE tokens (
            id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
            hash TEXT NOT NULL UNIQUE CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
            agent TEXT NOT NULL CHECK (length(agent) = 64 AND agent NOT GLOB '*[^0-9a-f]*'),
            label TEXT NOT NULL,
            created REAL NOT NULL  -- unix time
        )"""
        )
        db.execute(
            "INSERT INTO tokens (id, hash, agent, label, created) VALUES (?, ?, ?, 'chat', 1700000000.5)",
            ["d" * 32, OLD_TOKEN_HASH, OLD_FORMULA],
        )


def _check_v2(database: Database) -> None:
    _check_v1(database)


# A marshal formula as schema 2 and earlier stored it: the value in the msgpack
# wire codec (frozen bytes), its capability as export descriptor 0 naming slot 0.
OLD_MARSHAL = "e" * 64
OLD_MARSHAL_BODY = bytes.fromhex(
    "84a86772656574696e67a26869a3626967c70901400000000000000000a3746167c7150292a5706f696e7492"
    "cb3ff8000000000000c40200ffa3636170d40c00"
)


def _fixture_v3_common(db: sqlite3.Connection, marshal_body: bytes) -> None:
    _fixture_v2(db)
    body = base64.b64encode(marshal_body).decode("ascii")
    with db:
        db.execute(
            "INSERT INTO formulas (id, type, body) VALUES (?, 'marshal', ?)",
            [OLD_MARSHAL, '{"body":"' + body + '","slots":["' + OLD_FORMULA + '"],"type":"marshal"}'],
        )


def _fixture_v2_with_marshal(db: sqlite3.Connection) -> None:
    _fixture_v3_common(db, OLD_MARSHAL_BODY)


def _check_marshal_in_storage_encoding(database: Database) -> None:
    formulas = database.load_formulas()
    assert set(formulas) == {OLD_WORKER, OLD_FORMULA, OLD_MARSHAL}
    assert parse_formula(formulas[OLD_FORMULA]) == EvalFormula(worker=OLD_WORKER, source="1", names=[], values=[])
    assert database.load_names() == {STORE: {"one": OLD_FORMULA}}
    assert database.read_blob(blob_hash(b"old")) == b"old"
    formula = parse_formula(formulas[OLD_MARSHAL])
    assert isinstance(formula, MarshalFormula) and formula.slots == [OLD_FORMULA]
    assert is_stored(formula.body)
    assert decode_stored(formula.body, lambda n: f"slot {n}") == {
        "greeting": "hi", "big": 2**70, "tag": Tagged("point", [1.5, b"\x00\xff"]), "cap": "slot 0",
    }


def _fixture_v3(db: sqlite3.Connection) -> None:
    # Schema 3: the same value, already in the storage encoding (frozen text).
    _fixture_v3_common(
        db,
        b'ocapd-stored/1\n{"record":[["greeting","hi"],["big",{"int":"1180591620717411303424"}],'
        b'["tag",{"tagged":["point",[{"float":"1.5"},{"bytes":"AP8="}]]}],["cap",{"slot":0}]]}',
    )


def _check_v3(database: Database) -> None:
    _check_marshal_in_storage_encoding(database)
    assert database.load_share_fetches() == {}  # a file from before fetches were recorded has none


OLD_SHARE = "f" * 64
OLD_PEER = "p" * 52


def _fixture_v4(db: sqlite3.Connection) -> None:
    _fixture_v3(db)
    with db:
        db.execute(
            "INSERT INTO share_fetches (share, peer, first, last, count) VALUES (?, ?, 1700000000.5, 1700000100.25, 3)",
            [OLD_SHARE, OLD_PEER],
        )


def _check_v4(database: Database) -> None:
    _check_marshal_in_storage_encoding(database)
    assert database.load_share_fetches() == {
        OLD_SHARE: [{"peer": OLD_PEER, "first": 1700000000.5, "last": 1700000100.25, "count": 3}]
    }


# The gateway's tokens each earlier file holds, read by the gateway after it brought its own tables up to date.
TOKENS_AFTER_UPGRADE: dict[int, list[tokens.TokenRecord]] = {
    0: [],
    1: [],
    2: [tokens.TokenRecord(id="d" * 32, hash=OLD_TOKEN_HASH, agent=OLD_FORMULA, label="chat", created=1700000000.5)],
    3: [tokens.TokenRecord(id="d" * 32, hash=OLD_TOKEN_HASH, agent=OLD_FORMULA, label="chat", created=1700000000.5)],
    4: [tokens.TokenRecord(id="d" * 32, hash=OLD_TOKEN_HASH, agent=OLD_FORMULA, label="chat", created=1700000000.5)],
}


UPGRADES: dict[int, tuple[Callable[[sqlite3.Connection], None], Callable[[Database], None]]] = {
    0: (_fixture_v0, _check_v0),
    1: (_fixture_v1, _check_v1),
    2: (_fixture_v2_with_marshal, _check_marshal_in_storage_encoding),
    3: (_fixture_v3, _check_v3),
    4: (_fixture_v4, _check_v4),
}


def test_every_schema_version_has_an_upgrade_case() -> None:
    assert set(UPGRADES) == set(range(SCHEMA_VERSION + 1)) == set(TOKENS_AFTER_UPGRADE)


@pytest.mark.parametrize("version", sorted(UPGRADES))
async def test_a_file_from_an_earlier_schema_opens_with_its_data(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    assert migrate(old, target=version) == version
    write_fixture, check = UPGRADES[version]
    write_fixture(old)
    old.close()

    database = await Database.open(path)
    try:
        assert database.schema_version() == SCHEMA_VERSION
        check(database)
        assert (await tokens.TokenStore.open(database)).list() == TOKENS_AFTER_UPGRADE[version]
        assert database.get_meta("schema_version:gateway") == str(len(tokens.MIGRATIONS))
        assert await database.integrity_check() == "ok"
    finally:
        await database.aclose()


async def test_a_file_from_a_newer_ocapd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    await (await Database.open(path)).aclose()  # made at the current version
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    conn.close()
    with pytest.raises(SchemaTooNew, match="newer than this ocapd knows"):
        await Database.open(path)


async def test_a_failing_migration_leaves_the_file_at_the_version_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "ocapd.sqlite"
    await (await Database.open(path)).aclose()

    def broken(db: sqlite3.Connection) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(db_module, "MIGRATIONS", [*db_module.MIGRATIONS, broken])
    with pytest.raises(RuntimeError, match="migration bug"):
        await Database.open(path)
    monkeypatch.undo()
    database = await Database.open(path)
    try:
        assert database.schema_version() == SCHEMA_VERSION
        conn = sqlite3.connect(path)
        assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
        conn.close()
    finally:
        await database.aclose()


# ---- durability ----------------------------------------------------------------------------

WRITER_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import trio

    from ocapd.daemon.db import Database

    STORE = "5" * 64
    WRITERS = 16

    async def write_forever(db, prefix, writer):
        n = 0
        while True:
            key = f"{prefix}{writer:04x}{n:058x}"
            batch = db.batch()
            batch.put_formula(key, {"type": "worker", "level": "NONE"})
            batch.set_name(STORE, "k" + key, key)
            if n % 10 == 0:
                batch.put_blob(key.encode() * 64)
            await db.commit(batch)
            # Acknowledged: the commit returned.
            sys.stdout.write(key + "\\n")
            sys.stdout.flush()
            n += 1

    async def main():
        db = await Database.open(Path(sys.argv[1]))
        async with trio.open_nursery() as nursery:
            for writer in range(WRITERS):
                nursery.start_soon(write_forever, db, sys.argv[2], writer)

    trio.run(main)
    """
)
ACKS_BEFORE_KILL = 1500


async def _write_until_killed(script: Path, path: Path, prefix: str) -> list[str]:
    """Run the writer, SIGKILL it once it has acknowledged enough; return every acknowledged key."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script), str(path), prefix], stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    received = bytearray()
    try:
        with trio.fail_after(15):
            while received.count(b"\n") < ACKS_BEFORE_KILL:
                chunk = await process.stdout.receive_some()
                assert chunk, f"writer exited early with {await process.wait()}"
                received += chunk
            os.kill(process.pid, signal.SIGKILL)  # mid-way: its writers are all busy
            assert await process.wait() == -signal.SIGKILL
            while chunk := await process.stdout.receive_some():
                received += chunk
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()
    lines = bytes(received).split(b"\n")
    return [line.decode() for line in lines[:-1]]  # the last one may be cut short


async def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    script = tmp_path / "writer.py"
    script.write_text(WRITER_SCRIPT)
    path = tmp_path / "ocapd.sqlite"
    acknowledged: list[str] = []
    for round_ in ("01", "02"):  # the second run starts from a file recovered after a kill
        acknowledged += await _write_until_killed(script, path, round_)

        database = await Database.open(path)
        try:
            assert await database.integrity_check() == "ok"
            formulas = database.load_formulas()
            names = database.load_names().get(STORE, {})
            assert len(acknowledged) >= ACKS_BEFORE_KILL
            assert [key for key in acknowledged if key not in formulas] == []
            assert [key for key in acknowledged if names.get("k" + key) != key] == []
        finally:
            await database.aclose()
