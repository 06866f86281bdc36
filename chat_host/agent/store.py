"""The agent's tables: "always" grants and the append-only audit log (namespace ``agent`` of the daemon's file).

- ``agent_grants`` — one row per (host, weblet, command) the user allowed
  "always", with the manifest hash it was granted under. A grant counts only
  while the weblet's manifest hash is the same: an update that changes the
  manifest (its description, its arguments, anything the user was shown)
  voids it, and the row is deleted when next looked at.
- ``agent_models`` — per host, the OpenAI-compatible model its chat messages
  go to (``ocapd agent set``): URL, model name, the *name* of the daemon's
  environment variable that holds the key (the key itself is never stored),
  and the timeout.
- ``agent_audit`` — one row per invocation once its fate is known: time,
  host, call id, weblet, command, arguments (JSON, capped), who asked
  (``user`` typed it, ``model`` chose it, ``mcp`` called it), the decision
  (``read_only``: ran without asking; ``once`` / ``always``: the user allowed;
  ``granted``: an earlier "always"; ``denied``; ``expired``: nobody answered
  in time; ``invalid``: refused before asking — wrong arguments, weblet gone
  or changed) and the outcome (``done``, ``error``, ``not_run``) with its
  detail (result or error, capped). Triggers refuse every UPDATE and DELETE:
  the table only grows.

Grants and model settings are kept in memory (loaded once, written
through); the audit is read from the file.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .model import ModelConfig

if TYPE_CHECKING:
    import sqlite3

    from ocapd.daemon.db import Database, Migration

__all__ = ["AGENT_NAMESPACE", "MAX_AUDIT_ARGS", "MAX_AUDIT_DETAIL", "AgentStore", "AuditEntry", "Decision", "Outcome", "AskedBy"]

AGENT_NAMESPACE = "agent"
#: Arguments kept per audit row (JSON characters): enough to recognise a call, not a copy of the data.
MAX_AUDIT_ARGS = 1024
#: The result or error kept per audit row.
MAX_AUDIT_DETAIL = 1024
#: Rows one audit read returns at most.
MAX_AUDIT_PAGE = 1000

AskedBy = Literal["user", "model", "mcp"]
Decision = Literal["read_only", "once", "always", "granted", "denied", "expired", "invalid"]
Outcome = Literal["done", "error", "not_run"]


def _schema_1(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE agent_grants (
            host TEXT NOT NULL,
            weblet TEXT NOT NULL,
            command TEXT NOT NULL,
            manifest_hash TEXT NOT NULL,   -- the grant holds while the manifest is this one
            created REAL NOT NULL,
            PRIMARY KEY (host, weblet, command)
        )"""
    )
    db.execute(
        """CREATE TABLE agent_audit (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            time REAL NOT NULL,
            host TEXT NOT NULL,
            call TEXT NOT NULL,
            weblet TEXT NOT NULL,
            weblet_name TEXT NOT NULL,
            command TEXT NOT NULL,
            args TEXT NOT NULL,            -- JSON, capped
            asked_by TEXT NOT NULL CHECK (asked_by IN ('user', 'model', 'mcp')),
            decision TEXT NOT NULL CHECK (decision IN ('read_only', 'once', 'always', 'granted', 'denied', 'expired', 'invalid')),
            outcome TEXT NOT NULL CHECK (outcome IN ('done', 'error', 'not_run')),
            detail TEXT NOT NULL           -- the result or the error, capped
        )"""
    )
    db.execute("CREATE INDEX agent_audit_by_host ON agent_audit (host, seq)")
    db.execute("CREATE TRIGGER agent_audit_no_update BEFORE UPDATE ON agent_audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")
    db.execute("CREATE TRIGGER agent_audit_no_delete BEFORE DELETE ON agent_audit BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END")


def _schema_2(db: sqlite3.Connection) -> None:
    db.execute(
        """CREATE TABLE agent_models (
            host TEXT PRIMARY KEY,
            url TEXT NOT NULL,             -- the chat-completions endpoint (or its base URL)
            model TEXT NOT NULL,
            key_env TEXT NOT NULL,         -- the daemon's environment variable holding the key (never the key)
            timeout REAL NOT NULL,
            updated REAL NOT NULL
        )"""
    )


def _schema_3(db: sqlite3.Connection) -> None:
    # Calls waiting for the user's answer live in memory; this table only
    # remembers that they exist, so that a call the daemon never got to answer
    # (it stopped, or was killed) still ends in its one audit row.
    db.execute(
        """CREATE TABLE agent_waiting (
            call TEXT PRIMARY KEY,
            time REAL NOT NULL,
            host TEXT NOT NULL,
            weblet TEXT NOT NULL,
            weblet_name TEXT NOT NULL,
            command TEXT NOT NULL,
            args TEXT NOT NULL,            -- JSON, capped as in the audit
            asked_by TEXT NOT NULL
        )"""
    )


#: MIGRATIONS[n] takes the agent's tables from version n to n + 1. Append, never edit.
MIGRATIONS: list[Migration] = [_schema_1, _schema_2, _schema_3]

#: The audit detail of a call that was still waiting when the daemon stopped.
ABANDONED = "the daemon stopped before anyone answered"

_AUDIT_COLUMNS = "seq, time, host, call, weblet, weblet_name, command, args, asked_by, decision, outcome, detail"


def cap_json(value: Any, limit: int) -> str:
    """``value`` as JSON, cut to ``limit`` characters (marked with "…")."""
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: float
    host: str
    call: str
    weblet: str
    weblet_name: str
    command: str
    args: str
    asked_by: str
    decision: str
    outcome: str
    detail: str

    def public(self) -> dict[str, Any]:
        return {
            "seq": self.seq, "time": self.time, "call": self.call, "weblet": self.weblet, "weblet_name": self.weblet_name,
            "command": self.command, "args": self.args, "asked_by": self.asked_by, "decision": self.decision,
            "outcome": self.outcome, "detail": self.detail,
        }  # fmt: skip


class AgentStore:
    """Grants and the audit log of one daemon (every host's rows, told apart by ``host``)."""

    def __init__(self, db: Database) -> None:
        """Use :meth:`open`."""
        self.db = db
        self._grants: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._models: dict[str, ModelConfig] = {}

    @classmethod
    async def open(cls, db: Database) -> AgentStore:
        await db.migrate_namespace(AGENT_NAMESPACE, MIGRATIONS)
        store = cls(db)
        for host, weblet, command, mhash, created in db.select("SELECT host, weblet, command, manifest_hash, created FROM agent_grants"):
            store._grants[(host, weblet, command)] = (mhash, float(created))
        for host, url, model, key_env, timeout in db.select("SELECT host, url, model, key_env, timeout FROM agent_models"):
            store._models[host] = ModelConfig(url=url, model=model, key_env=key_env, timeout=float(timeout))
        await store._close_abandoned()
        return store

    async def _close_abandoned(self) -> None:
        """Audit the calls a previous run left waiting (expired, not run), once each."""
        await self.db.execute(
            "INSERT INTO agent_audit (time, host, call, weblet, weblet_name, command, args, asked_by, decision, outcome, detail)"
            " SELECT ?, host, call, weblet, weblet_name, command, args, asked_by, 'expired', 'not_run', ? FROM agent_waiting w"
            " WHERE asked_by IN ('user', 'model', 'mcp') AND NOT EXISTS (SELECT 1 FROM agent_audit a WHERE a.call = w.call)"
            " ORDER BY time",
            (time.time(), ABANDONED),
        )
        await self.db.execute("DELETE FROM agent_waiting")

    # -- calls waiting for an answer ----------------------------------------------------------------------
    async def forget_waiting(self, call: str) -> None:
        """The call has its audit row: nothing left to close after a restart."""
        await self.db.execute("DELETE FROM agent_waiting WHERE call = ?", (call,))

    async def remember_waiting(self, *, host: str, call: str, weblet: str, weblet_name: str, command: str, args: Any, asked_by: AskedBy) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO agent_waiting (call, time, host, weblet, weblet_name, command, args, asked_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (call, time.time(), host, weblet, weblet_name, command, cap_json(args, MAX_AUDIT_ARGS), asked_by),
        )

    # -- the model setting ------------------------------------------------------------------------------
    def model_of(self, host: str) -> ModelConfig | None:
        return self._models.get(host)

    async def set_model(self, host: str, config: ModelConfig) -> None:
        await self.db.execute(
            "INSERT OR REPLACE INTO agent_models (host, url, model, key_env, timeout, updated) VALUES (?, ?, ?, ?, ?, ?)",
            (host, config.url, config.model, config.key_env, config.timeout, time.time()),
        )
        self._models[host] = config

    async def unset_model(self, host: str) -> bool:
        if host not in self._models:
            return False
        await self.db.execute("DELETE FROM agent_models WHERE host = ?", (host,))
        del self._models[host]
        return True

    # -- grants ---------------------------------------------------------------------------------------
    async def grant(self, host: str, weblet: str, command: str, manifest_hash: str) -> None:
        now = time.time()
        await self.db.execute(
            "INSERT OR REPLACE INTO agent_grants (host, weblet, command, manifest_hash, created) VALUES (?, ?, ?, ?, ?)",
            (host, weblet, command, manifest_hash, now),
        )
        self._grants[(host, weblet, command)] = (manifest_hash, now)

    async def has_grant(self, host: str, weblet: str, command: str, manifest_hash: str) -> bool:
        """Whether "always" holds for this command of this manifest; a grant of another manifest is deleted."""
        found = self._grants.get((host, weblet, command))
        if found is None:
            return False
        if found[0] != manifest_hash:
            await self.revoke(host, weblet, command)
            return False
        return True

    async def revoke(self, host: str, weblet: str, command: str | None = None) -> int:
        """Delete this host's grant(s) for a weblet (one command, or all of them); how many went."""
        keys = [k for k in self._grants if k[0] == host and k[1] == weblet and (command is None or k[2] == command)]
        if not keys:
            return 0
        batch = self.db.batch()
        for key in keys:
            batch.execute("DELETE FROM agent_grants WHERE host = ? AND weblet = ? AND command = ?", key)
        await self.db.commit(batch)
        for key in keys:
            self._grants.pop(key, None)
        return len(keys)

    def grants_of(self, host: str) -> list[tuple[str, str, str, float]]:
        """(weblet, command, manifest hash, created) of this host's stored grants."""
        return sorted((k[1], k[2], v[0], v[1]) for k, v in self._grants.items() if k[0] == host)

    # -- the audit log ----------------------------------------------------------------------------------
    async def audit(
        self, *, host: str, call: str, weblet: str, weblet_name: str, command: str, args: Any,
        asked_by: AskedBy, decision: Decision, outcome: Outcome, detail: Any,
    ) -> None:  # fmt: skip
        text = detail if isinstance(detail, str) else cap_json(detail, MAX_AUDIT_DETAIL)
        if len(text) > MAX_AUDIT_DETAIL:
            text = text[: MAX_AUDIT_DETAIL - 1] + "…"
        await self.db.execute(
            "INSERT INTO agent_audit (time, host, call, weblet, weblet_name, command, args, asked_by, decision, outcome, detail)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (time.time(), host, call, weblet, weblet_name, command, cap_json(args, MAX_AUDIT_ARGS), asked_by, decision, outcome, text),
        )

    def read_audit(self, host: str, *, after: int = 0, limit: int = 100) -> list[AuditEntry]:
        """This host's audit rows with ``seq`` above ``after``, oldest first (at most ``limit``, capped)."""
        limit = max(1, min(int(limit), MAX_AUDIT_PAGE))
        rows = self.db.select(
            f"SELECT {_AUDIT_COLUMNS} FROM agent_audit WHERE host = ? AND seq > ? ORDER BY seq LIMIT ?", (host, int(after), limit)
        )
        return [AuditEntry(*row) for row in rows]

    def last_audit(self, host: str, limit: int) -> list[AuditEntry]:
        """This host's newest ``limit`` rows, oldest first."""
        limit = max(1, min(int(limit), MAX_AUDIT_PAGE))
        rows = self.db.select(f"SELECT {_AUDIT_COLUMNS} FROM agent_audit WHERE host = ? ORDER BY seq DESC LIMIT ?", (host, limit))
        return [AuditEntry(*row) for row in reversed(rows)]
