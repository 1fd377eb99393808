"""Everyone who runs the turn: the floor, promptkit_async, and the peer libraries.

Each contestant exposes the same three coroutines, so every area (latency,
scaling, correctness) runs them identically:

- ``reseed(session_ids, seed)``: untimed, reset each session to exactly ``seed``;
- ``turn(session_id, user, reply, think=0.0)``: the timed turn; returns how many
  messages it loaded. ``think`` simulates the model call between load and save;
- ``read_all(session_id)``: the stored history as ``(role, content)`` pairs.

Peers are imported lazily; a peer that is not installed reports why.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aioredis

from promptkit_async import MemoryStore, Message, RedisStore, Session, SQLiteStore

from ._common import TTL, floor_record

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "NOT_RUNNABLE",
    "PEERS",
    "Contestant",
    "FloorContestant",
    "MemoryContestant",
    "OursContestant",
    "SQLiteContestant",
    "load_peer",
]

#: Peers that cannot run against plain Redis, with the reason.
NOT_RUNNABLE = {
    "langchain-redis": (
        "needs the RediSearch and RedisJSON modules (Redis Stack); plain Redis lacks them"
    ),
    "redisvl": "needs the RediSearch module (Redis Stack) for its message history index",
}


class Contestant:
    name = "?"
    window = 20

    async def reseed(self, session_ids: Sequence[str], seed: Sequence[Message]) -> None:
        raise NotImplementedError

    async def turn(self, session_id: str, user: Message, reply: Message, think: float = 0.0) -> int:
        raise NotImplementedError

    async def read_all(self, session_id: str) -> list[tuple[str, str]]:
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


class FloorContestant(Contestant):
    """The hand-written minimal turn: one LRANGE, one MULTI/EXEC (RPUSH + LTRIM + EXPIRE).

    With ``locked=True`` it also holds one asyncio.Lock per session id, the
    fair comparison when many requests share one session.
    """

    def __init__(self, client: aioredis.Redis, prefix: str, window: int, *, locked: bool = False):
        self.client = client
        self.prefix = prefix
        self.window = window
        self.locked = locked
        self.name = "floor+lock" if locked else "floor"
        self._locks: dict[str, asyncio.Lock] = {}

    def key(self, session_id: str) -> bytes:
        return f"{self.prefix}:{session_id}".encode()

    async def reseed(self, session_ids: Sequence[str], seed: Sequence[Message]) -> None:
        records = [floor_record(m.role, m.text) for m in seed]
        async with self.client.pipeline(transaction=False) as p:
            for sid in session_ids:
                p.delete(self.key(sid))
                if records:
                    p.rpush(self.key(sid), *records)
            await p.execute()

    async def _turn(self, key: bytes, user: Message, reply: Message, think: float) -> int:
        raw = await self.client.lrange(key, -self.window, -1)
        loaded = [json.loads(item) for item in raw]
        if think:
            await asyncio.sleep(think)
        async with self.client.pipeline(transaction=True) as tx:
            tx.rpush(
                key,
                floor_record("user", user.text),
                floor_record("assistant", reply.text),
            )
            tx.ltrim(key, -self.window, -1)
            tx.expire(key, TTL)
            await tx.execute()
        return len(loaded)

    async def turn(self, session_id: str, user: Message, reply: Message, think: float = 0.0) -> int:
        key = self.key(session_id)
        if not self.locked:
            return await self._turn(key, user, reply, think)
        lock = self._locks.get(session_id)
        if lock is None:
            lock = self._locks[session_id] = asyncio.Lock()
        async with lock:
            return await self._turn(key, user, reply, think)

    async def read_all(self, session_id: str) -> list[tuple[str, str]]:
        raw = await self.client.lrange(self.key(session_id), 0, -1)
        return [(rec["r"], rec["c"]) for rec in map(json.loads, raw)]


class OursContestant(Contestant):
    """promptkit_async on Redis: ``async with Session(store, sid, max_messages=window)``."""

    name = "promptkit_async"
    store: RedisStore | MemoryStore

    def __init__(self, store: RedisStore, window: int, *, name: str | None = None) -> None:
        self.store = store
        self.window = window
        if name is not None:
            self.name = name

    async def reseed(self, session_ids: Sequence[str], seed: Sequence[Message]) -> None:
        """What ``store.restore`` writes (records with ids and a time), pipelined."""
        from promptkit_async._codec import encode_message, header

        assert isinstance(self.store, RedisStore)
        compress = self.store.compress_above
        now = time.time_ns() // 1_000_000
        records = [
            header(now, str(i)) + encode_message(m, compress_above=compress)
            for i, m in enumerate(seed)
        ]
        async with self.store.client.pipeline(transaction=False) as p:
            for sid in session_ids:
                h, t, m = (self.store.key(sid, kind) for kind in ("h", "t", "m"))
                p.delete(h, t, m)
                if records:
                    p.rpush(h, *records)
                    p.hset(m, mapping={"n": len(records), "t": now, "c": now, "g": 0})
                    # Turn ids, as a restore leaves them: a history without them
                    # reads as bookkeeping lost to eviction (and is logged).
                    p.zadd(t, {"#v": 1, "seed": 1})
            await p.execute()

    async def turn(self, session_id: str, user: Message, reply: Message, think: float = 0.0) -> int:
        async with Session(self.store, session_id, max_messages=self.window) as session:
            seen = len(session.history)
            if think:
                await asyncio.sleep(think)
            session.add(user, reply)
        return seen

    async def read_all(self, session_id: str) -> list[tuple[str, str]]:
        return [(m.role, m.text) for m in await self.store.load(session_id)]


class MemoryContestant(OursContestant):
    """promptkit_async on MemoryStore (no I/O: the library's own overhead)."""

    name = "promptkit_async (MemoryStore)"

    def __init__(self, store: MemoryStore, window: int) -> None:
        self.store = store
        self.window = window

    async def reseed(self, session_ids: Sequence[str], seed: Sequence[Message]) -> None:
        for sid in session_ids:
            await self.store.delete(sid)
            if seed:
                await self.store.append(sid, seed, max_messages=None)


class SQLiteContestant(OursContestant):
    """promptkit_async on SQLiteStore: the same turn on a file (its own worker thread)."""

    def __init__(self, store: SQLiteStore, window: int, *, name: str | None = None) -> None:
        self.store = store  # type: ignore[assignment]
        self.window = window
        self.name = name or "promptkit_async (SQLiteStore)"

    async def reseed(self, session_ids: Sequence[str], seed: Sequence[Message]) -> None:
        """One restore per session: the history replaced in one transaction."""
        for sid in session_ids:
            await self.store.restore(sid, seed, replace=True)

    async def aclose(self) -> None:
        await self.store.aclose()


# -- peers ----------------------------------------------------------------------------


class AgentsContestant(Contestant):
    """openai-agents ``RedisSession`` (``agents.extensions.memory``), TTL on.

    A new ``RedisSession`` per turn, as a request handler would create one
    (its lock is per instance). The turn: ``get_items(limit=window)``, then one
    ``add_items([user, assistant])``.
    """

    name = "openai-agents RedisSession"

    def __init__(self, client: aioredis.Redis, prefix: str, window: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from agents.extensions.memory import RedisSession  # type: ignore[import-not-found,unused-ignore]

        self._cls: Any = RedisSession
        self.client = client
        self.prefix = prefix
        self.window = window

    def _session(self, session_id: str) -> Any:
        return self._cls(session_id, redis_client=self.client, key_prefix=self.prefix, ttl=TTL)

    async def reseed(self, session_ids: Sequence[str], seed: Sequence[Message]) -> None:
        items = [json.dumps(m.to_dict(), separators=(",", ":")) for m in seed]
        async with self.client.pipeline(transaction=False) as p:
            for sid in session_ids:
                base = f"{self.prefix}:{sid}"
                p.delete(base, f"{base}:messages", f"{base}:counter")
                if items:
                    p.rpush(f"{base}:messages", *items)
            await p.execute()

    async def turn(self, session_id: str, user: Message, reply: Message, think: float = 0.0) -> int:
        session = self._session(session_id)
        items = await session.get_items(limit=self.window)
        if think:
            await asyncio.sleep(think)
        await session.add_items(
            [
                {"role": "user", "content": user.content},
                {"role": "assistant", "content": reply.content},
            ]
        )
        return len(items)

    async def read_all(self, session_id: str) -> list[tuple[str, str]]:
        items = await self._session(session_id).get_items()
        return [(str(i["role"]), str(i["content"])) for i in items]


class LlamaContestant(Contestant):
    """llama-index ``RedisChatStore`` (async methods), TTL on.

    The store has no windowed read: ``aget_messages`` loads the whole list and
    the window is sliced client side. Messages are added one per call
    (``async_add_message``: RPUSH, then EXPIRE), as its API offers.
    """

    name = "llama-index RedisChatStore"

    def __init__(self, client: aioredis.Redis, url: str, prefix: str, window: int) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from llama_index.core.llms import ChatMessage  # type: ignore[import-not-found,unused-ignore]
            from llama_index.storage.chat_store.redis import RedisChatStore  # type: ignore[import-not-found,import-untyped,unused-ignore]

        self._msg: Any = ChatMessage
        self.client = client
        self._sync = redis.Redis.from_url(url)  # it insists on a sync client; never used here
        self.store: Any = RedisChatStore(
            redis_url=url, redis_client=self._sync, aredis_client=client, ttl=TTL
        )
        self.prefix = prefix
        self.window = window

    def key(self, session_id: str) -> str:
        return f"{self.prefix}:{session_id}"

    async def reseed(self, session_ids: Sequence[str], seed: Sequence[Message]) -> None:
        records = [self._msg(role=m.role, content=m.content).model_dump_json() for m in seed]
        async with self.client.pipeline(transaction=False) as p:
            for sid in session_ids:
                p.delete(self.key(sid))
                if records:
                    p.rpush(self.key(sid), *records)
            await p.execute()

    async def turn(self, session_id: str, user: Message, reply: Message, think: float = 0.0) -> int:
        key = self.key(session_id)
        window = (await self.store.aget_messages(key))[-self.window :]
        if think:
            await asyncio.sleep(think)
        await self.store.async_add_message(key, self._msg(role="user", content=user.content))
        await self.store.async_add_message(key, self._msg(role="assistant", content=reply.content))
        return len(window)

    async def read_all(self, session_id: str) -> list[tuple[str, str]]:
        return [
            (str(getattr(m.role, "value", m.role)), str(m.content))
            for m in await self.store.aget_messages(self.key(session_id))
        ]

    async def aclose(self) -> None:
        self._sync.close()


#: Peer name -> (pip distribution, import check).
PEERS = {
    "openai-agents": "agents.extensions.memory",
    "llama-index": "llama_index.storage.chat_store.redis",
}


def load_peer(
    name: str, client: aioredis.Redis, url: str, prefix: str, window: int
) -> tuple[Contestant | None, str]:
    """The peer's contestant, or None and the reason it cannot run."""
    try:
        if name == "openai-agents":
            return AgentsContestant(client, f"{prefix}:agents", window), ""
        if name == "llama-index":
            return LlamaContestant(client, url, f"{prefix}:llama", window), ""
    except ImportError as exc:
        return None, f"not installed ({exc.name or exc}); pip install -e '.[bench]'"
    return None, "unknown peer"


def peer_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    def one(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    dists = ("openai-agents", "llama-index-storage-chat-store-redis", "llama-index-core")
    return {dist: one(dist) for dist in dists}
