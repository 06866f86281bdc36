"""Gateway tokens: bearer secrets that stand for one agent, and the throttle on guessing them.

A token is 256 random bits (``secrets.token_urlsafe(32)``). Only its sha256
is kept, in memory and in the gateway's own ``tokens`` table (in the daemon's
database file, made by :data:`MIGRATIONS` below under the "gateway"
namespace: the daemon does not know this table), with the agent's formula
id, a label and the creation time; the secret itself is shown once,
when it is minted. Checking a token hashes it and looks the hash up, so the
time a check takes says nothing about how close a guess was; the stored and
computed hashes are then compared with ``hmac.compare_digest``.

Revoking deletes the row: later ``fetch`` calls with that token fail. Agents
already fetched through it stay usable in the sessions that hold them (a
capability, once given, is not taken back by forgetting its password).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import trio

if TYPE_CHECKING:
    import sqlite3

    from ocapd.daemon.db import Database, Migration

_T = TypeVar("_T")

__all__ = [
    "MIGRATIONS",
    "SCHEMA_NAMESPACE",
    "InvalidToken",
    "TokenRecord",
    "TokenStore",
    "FailureThrottle",
    "INVALID_TOKEN_MESSAGE",
    "token_hash",
]

#: The one error every failed fetch gets, whatever the reason: unknown,
#: revoked or malformed tokens are indistinguishable to the caller.
INVALID_TOKEN_MESSAGE = "invalid or revoked token"
#: secrets.token_urlsafe(32) is 43 characters; anything much longer is not ours,
#: and hashing megabytes for a hostile peer is work we need not do.
MAX_TOKEN_LENGTH = 128
#: Labels are for people reading `ocapd tokens list`.
MAX_LABEL_LENGTH = 200


# ---- the gateway's tables -------------------------------------------------------------------

#: The gateway's migrations are counted under this name in the daemon's database.
SCHEMA_NAMESPACE = "gateway"


def _schema_1(db: sqlite3.Connection) -> None:
    """Tokens: only the sha256 of each secret is stored.

    ``IF NOT EXISTS``: files from before the gateway had a namespace of its
    own already have this table, made by the daemon's schema version 2 with
    this very definition; the gateway adopts it.
    """
    db.execute(
        """CREATE TABLE IF NOT EXISTS tokens (
            id TEXT PRIMARY KEY NOT NULL CHECK (length(id) = 32 AND id NOT GLOB '*[^0-9a-f]*'),
            hash TEXT NOT NULL UNIQUE CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
            agent TEXT NOT NULL CHECK (length(agent) = 64 AND agent NOT GLOB '*[^0-9a-f]*'),
            label TEXT NOT NULL,
            created REAL NOT NULL  -- unix time
        )"""
    )


#: MIGRATIONS[n] takes the gateway's tables from version n to n + 1. Append, never edit.
MIGRATIONS: list[Migration] = [_schema_1]

_PUT_TOKEN = "INSERT OR REPLACE INTO tokens (id, hash, agent, label, created) VALUES (?, ?, ?, ?, ?)"
_DELETE_TOKEN = "DELETE FROM tokens WHERE id = ?"
_LOAD_TOKENS = "SELECT id, hash, agent, label, created FROM tokens ORDER BY created, id"


class InvalidToken(PermissionError):
    """The token is unknown, revoked or malformed."""


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class TokenRecord:
    id: str  # public: what `ocapd tokens list/revoke` show (not derived from the secret)
    hash: str  # sha256 of the secret, hex
    agent: str  # formula id of the host or guest the token stands for
    label: str
    created: float  # unix time

    def public(self) -> dict[str, object]:
        """Everything but the hash, for listings."""
        return {"id": self.id, "agent": self.agent, "label": self.label, "created": self.created}


class TokenStore:
    """The live token table, mirrored in the database; writes commit before memory changes."""

    def __init__(self, db: Database) -> None:
        """Use :meth:`open`, which makes or upgrades the table first."""
        self._db = db
        self._by_hash: dict[str, TokenRecord] = {}
        for i, h, agent, label, created in db.select(_LOAD_TOKENS):
            record = TokenRecord(id=i, hash=h, agent=agent, label=label, created=float(created))
            self._by_hash[record.hash] = record

    @classmethod
    async def open(cls, db: Database) -> TokenStore:
        """The tokens stored in ``db``, after bringing the gateway's tables up to date."""
        await db.migrate_namespace(SCHEMA_NAMESPACE, MIGRATIONS)
        return cls(db)

    def check(self, token: object) -> TokenRecord:
        """The record for ``token``; ``InvalidToken`` if there is none."""
        if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN_LENGTH:
            raise InvalidToken(INVALID_TOKEN_MESSAGE)
        digest = token_hash(token)
        record = self._by_hash.get(digest)
        if record is None or not hmac.compare_digest(record.hash, digest):
            raise InvalidToken(INVALID_TOKEN_MESSAGE)
        return record

    def list(self) -> list[TokenRecord]:
        return sorted(self._by_hash.values(), key=lambda r: (r.created, r.id))

    async def mint(self, agent_id: str, label: str) -> tuple[str, TokenRecord]:
        """A new token for ``agent_id``: the secret (shown once) and its record."""
        if not isinstance(label, str) or len(label) > MAX_LABEL_LENGTH:
            raise ValueError(f"a token label is a string of at most {MAX_LABEL_LENGTH} characters")
        secret = secrets.token_urlsafe(32)
        record = TokenRecord(
            id=secrets.token_hex(16), hash=token_hash(secret), agent=agent_id, label=label, created=time.time()
        )
        await self._db.execute(_PUT_TOKEN, (record.id, record.hash, record.agent, record.label, record.created))
        self._by_hash[record.hash] = record
        return secret, record

    def find(self, id_prefix: str) -> TokenRecord:
        """The one token whose id starts with ``id_prefix``."""
        if not isinstance(id_prefix, str) or not id_prefix:
            raise LookupError("give a token id (or a unique prefix of one)")
        matches = [r for r in self._by_hash.values() if r.id.startswith(id_prefix.lower())]
        if not matches:
            raise LookupError(f"no token with id {id_prefix!r}")
        if len(matches) > 1:
            raise LookupError(f"token id prefix {id_prefix!r} is ambiguous ({len(matches)} tokens); give more of it")
        return matches[0]

    async def revoke(self, id_prefix: str) -> TokenRecord:
        """Revoke the token with this id (prefix); later fetches with it fail."""
        record = self.find(id_prefix)
        await self._db.execute(_DELETE_TOKEN, (record.id,))
        self._by_hash.pop(record.hash, None)
        return record


# ---- throttling failed fetches ------------------------------------------------------------

#: The first failure from a client costs this long; each further one doubles it ...
FIRST_PENALTY = 0.1
#: ... up to this. 256-bit tokens cannot be guessed anyway; the throttle keeps a
#: misbehaving local program from burning CPU and fills no logs.
MAX_PENALTY = 5.0
#: A client whose last failure is this old starts afresh.
FORGET_AFTER = 600.0
#: Clients remembered at most (oldest dropped first): bounded memory whatever the traffic.
MAX_CLIENTS = 10_000


class _ClientState:
    __slots__ = ("failures", "last_failure", "lock")

    def __init__(self) -> None:
        self.failures = 0
        self.last_failure = 0.0
        self.lock = trio.Lock()


class FailureThrottle:
    """Slows failed token checks per client (the gateway: per connection).

    A failing check sleeps ``FIRST_PENALTY * 2**(n-1)`` seconds (capped at
    ``MAX_PENALTY``) before its error is returned, and while a client has
    recent failures its checks run one at a time, so parallel connections do
    not multiply its guessing rate. A client with no recent failures pays
    nothing. All gateway clients are on loopback, where every source address
    is 127.0.0.1, so the gateway charges each *connection* (its session name):
    one connection's failures never delay another's correct token, and the
    cap on sessions without a token bounds how many guess at once.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clients: dict[str, _ClientState] = {}
        self._now = clock

    def forget(self, client: str) -> None:
        """Drop what is known of ``client`` (its connection ended)."""
        state = self._clients.get(client)
        if state is not None and not state.lock.locked():
            del self._clients[client]

    def failures(self, client: str) -> int:
        state = self._clients.get(client)
        return 0 if state is None else state.failures

    @staticmethod
    def penalty_for(failures: int) -> float:
        if failures <= 0:
            return 0.0
        return float(min(FIRST_PENALTY * 2 ** min(failures - 1, 32), MAX_PENALTY))

    async def guard(self, client: str, check: Callable[[], _T]) -> _T:
        """Run ``check()``; if it raises ``InvalidToken``, charge ``client`` for it first."""
        state = self._clients.get(client)
        if state is not None and self._now() - state.last_failure > FORGET_AFTER and not state.lock.locked():
            del self._clients[client]
            state = None
        if state is None:
            try:
                return check()
            except InvalidToken:
                state = self._state(client)
                async with state.lock:
                    await self._fail(state)
                raise
        async with state.lock:
            try:
                return check()
            except InvalidToken:
                await self._fail(state)
                raise

    def _state(self, client: str) -> _ClientState:
        state = self._clients.get(client)
        if state is None:
            if len(self._clients) >= MAX_CLIENTS:
                oldest = min(self._clients, key=lambda c: self._clients[c].last_failure)
                del self._clients[oldest]
            state = self._clients[client] = _ClientState()
        return state

    async def _fail(self, state: _ClientState) -> None:
        state.failures += 1
        state.last_failure = self._now()
        await trio.sleep(self.penalty_for(state.failures))
