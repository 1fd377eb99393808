"""The stores the contract suite runs on, and what the suite may do to them beyond their API.

A contract test receives a :class:`Backend`: the store under test plus the
harness operations a test needs to set up a situation (age a session, move
time forward, write raw stored bytes, list what is left of a session). Each
operation is a capability of the backend; a test that needs one the backend
lacks says so by capability, never by the backend's name.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import TYPE_CHECKING, Any, Protocol

import pytest

from promptkit_async import MemoryStore, RedisStore, SQLiteStore
from promptkit_async.stores._redis import _keys

if TYPE_CHECKING:
    from pathlib import Path

    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

    from promptkit_async import BaseStore


class RawRecords(Protocol):
    """Direct access to a backend that keeps encoded records (bytes), for corrupting them."""

    async def push(self, session_id: str, *records: bytes) -> None:
        """Append raw records to a session's stored history."""

    async def clobber(self, session_id: str) -> None:
        """Replace the session's history with something of the wrong kind."""


class FakeClock:
    """Monotonic time that a test can move forward without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


class WallClock:
    """Wall time (seconds since the epoch) that a test can move forward without sleeping."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Backend:
    """A store under test and the harness operations it supports.

    Capabilities: ``raw`` (None when the store keeps objects, not bytes).
    Every backend can :meth:`age` a session, :meth:`advance` time and tell
    whether it still :meth:`holds` anything of a session.
    """

    #: A URL another process can reach the same data at (None: in-process only).
    url: str | None = None

    def __init__(self, name: str, store: BaseStore, raw: RawRecords | None = None) -> None:
        self.name = name
        self.store = store
        self.raw = raw

    def variant(self, **options: Any) -> BaseStore:
        """Another store of this backend, built with ``options`` (over the same data
        when the backend shares data between stores; closed by the caller)."""
        raise NotImplementedError

    def need_raw(self) -> RawRecords:
        if self.raw is None:
            pytest.skip(f"the {self.name} backend keeps no encoded records to corrupt")
        return self.raw

    async def age(self, session_id: str, seconds_left: float) -> None:
        """Make the session expire ``seconds_left`` seconds from now."""
        raise NotImplementedError

    async def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass for the store's expiry."""
        raise NotImplementedError

    async def holds(self, session_id: str) -> bool:
        """Whether the backend keeps anything at all for the session (keys, entries)."""
        raise NotImplementedError


class MemoryBackend(Backend):
    def __init__(self) -> None:
        self.clock = FakeClock()
        self.memory = MemoryStore(clock=self.clock)
        super().__init__("memory", self.memory)

    def variant(self, **options: Any) -> BaseStore:
        return MemoryStore(clock=self.clock, **options)

    async def age(self, session_id: str, seconds_left: float) -> None:
        entry = self.memory._data[session_id]
        entry.expires_at = self.clock() + seconds_left

    async def advance(self, seconds: float) -> None:
        self.clock.offset += seconds

    async def holds(self, session_id: str) -> bool:
        return session_id in self.memory._data


class _RedisRaw:
    def __init__(self, store: RedisStore, client: aioredis.Redis | RedisCluster) -> None:
        self._store = store
        self._client = client

    async def push(self, session_id: str, *records: bytes) -> None:
        await self._client.rpush(self._store.key(session_id), *records)

    async def clobber(self, session_id: str) -> None:
        await self._client.set(self._store.key(session_id), b"a string, not a list")


class RedisBackend(Backend):
    def __init__(self, name: str, store: RedisStore, client: aioredis.Redis | RedisCluster) -> None:
        super().__init__(name, store, _RedisRaw(store, client))
        self.redis = store
        self.client = client

    def variant(self, **options: Any) -> BaseStore:
        return RedisStore(self.client, prefix=self.redis.prefix, **options)

    async def age(self, session_id: str, seconds_left: float) -> None:
        await self.client.pexpire(self.redis.key(session_id), int(seconds_left * 1000))

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # Redis expires by its own clock

    async def holds(self, session_id: str) -> bool:
        head = f"{self.redis.prefix}:{{{_keys.encode_id(session_id)}}}:"
        pattern = _keys.glob_escape(head) + "*"
        return any([k async for k in self.client.scan_iter(match=pattern, count=1000)])


def _sqlite(path: Path, sql: str, *args: object) -> list[tuple[Any, ...]]:
    """One statement on a connection of the test's own (beside the store's), committed."""
    conn = sqlite3.connect(path, timeout=5.0, isolation_level=None)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


class _SQLiteRaw:
    """Records written around the store, at the session's next position (as an old writer
    or a foreign tool would), with the session's bookkeeping kept right."""

    def __init__(self, store: SQLiteStore, path: Path) -> None:
        self._store = store
        self._path = path

    def _push(self, session_id: str, records: tuple[object, ...]) -> None:
        conn = sqlite3.connect(self._path, timeout=5.0, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT OR IGNORE INTO sessions (id) VALUES (?)", (session_id,))
            sid, next_id = conn.execute(
                "SELECT sid, next_id FROM sessions WHERE id = ?", (session_id,)
            ).fetchone()
            for i, record in enumerate(records):
                conn.execute(
                    "INSERT INTO messages (sid, seq, record) VALUES (?, ?, ?)",
                    (sid, next_id + i, record),
                )
            size = sum(len(r) for r in records if isinstance(r, (bytes, str)))
            conn.execute(
                "UPDATE sessions SET next_id = next_id + ?, kept = kept + ?, bytes = bytes + ? "
                "WHERE sid = ?",
                (len(records), len(records), size, sid),
            )
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def push(self, session_id: str, *records: bytes) -> None:
        await self._store.ping()  # the schema exists
        await asyncio.to_thread(self._push, session_id, records)

    async def clobber(self, session_id: str) -> None:
        """A record of the wrong SQL type (text, not an encoded record's bytes)."""
        await self._store.ping()
        await asyncio.to_thread(self._push, session_id, ("a string, not a record",))


class SQLiteBackend(Backend):
    """An SQLiteStore on a file of the test's own, every variant on that same file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.clock = WallClock()
        self.sqlite = SQLiteStore(str(path), clock=self.clock)
        super().__init__("sqlite", self.sqlite, _SQLiteRaw(self.sqlite, path))

    def variant(self, **options: Any) -> BaseStore:
        return SQLiteStore(str(self.path), clock=self.clock, **options)

    async def age(self, session_id: str, seconds_left: float) -> None:
        sql = "UPDATE sessions SET expires_at = ? WHERE id = ?"
        await asyncio.to_thread(_sqlite, self.path, sql, self.clock() + seconds_left, session_id)

    async def advance(self, seconds: float) -> None:
        self.clock.offset += seconds

    async def holds(self, session_id: str) -> bool:
        """The session's row, or rows of a session that is gone (which would hold it, unnamed)."""
        sql = (
            "SELECT (SELECT count(*) FROM sessions WHERE id = ?1) "
            "+ (SELECT count(*) FROM aborts WHERE id = ?1) "
            "+ (SELECT count(*) FROM messages WHERE sid NOT IN (SELECT sid FROM sessions)) "
            "+ (SELECT count(*) FROM turns WHERE sid NOT IN (SELECT sid FROM sessions))"
        )
        [(found,)] = await asyncio.to_thread(_sqlite, self.path, sql, session_id)
        return bool(found)
