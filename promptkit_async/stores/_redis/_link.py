"""The store's hold on its client: the client, the key prefix, and the store's own retries.

Every room of the Redis store (loading, commits, leases, the index, admin)
talks to Redis through one :class:`Link`, so that how a command is retried and
how a cancellation hidden in a timeout is recovered are decided once.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, Final, TypeGuard

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff

from ._errors import Failure, classify, pool_exhausted
from ._replicas import read_pipelined
from ._sentinel import stale_primary
from ._version import MINIMUM_SERVER, check_server, server_version

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._tracking import Invalidations, Ticket

__all__ = ["MINIMUM_SERVER", "Link", "client_retries", "connection_kwargs", "server_version"]

#: redis-py's own command path: the lane is taken only while nothing replaced it.
_EXECUTE: Final = aioredis.Redis.execute_command

logger = logging.getLogger("promptkit_async.stores.redis")

try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis is a dependency, but optional to redis-py
    _PACK: Callable[[tuple[Any, ...]], bytes] | None = None
else:
    _PACK = _hiredis_pack
_UTF8: Final = frozenset({"utf-8", "utf8", "UTF-8", "UTF8"})


def connection_kwargs(client: aioredis.Redis | RedisCluster) -> dict[str, Any]:
    if isinstance(client, RedisCluster):
        return dict(getattr(client, "get_connection_kwargs", lambda: {})())
    return dict(client.connection_pool.connection_kwargs)


def client_retries(client: aioredis.Redis | RedisCluster) -> int:
    """How many times the client re-sends a failed command by itself (-1: forever)."""
    retry = client.retry if isinstance(client, RedisCluster) else client.get_retry()
    if retry is None:
        return 1 if connection_kwargs(client).get("retry_on_error") else 0
    return retry.get_retries()


class Link:
    """A client, the key prefix, and the retries the store makes itself.

    ``retries`` is 0 for a borrowed client (it retries by its own settings, if
    at all); ``from_url`` turns redis-py's retries off and sets the store's,
    because only the store knows which failed attempt cannot have reached
    Redis (see ``_commit.py``).
    """

    __slots__ = (
        "_idle",
        "backoff",
        "checked",
        "client",
        "cluster",
        "invalidations",
        "lane",
        "prefix",
        "retries",
    )

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.cluster = isinstance(client, RedisCluster)
        self.retries = 0
        self.backoff = ExponentialBackoff(cap=0.5, base=0.05)
        self.checked = False
        # The hot path's own lane (see call()), for a standalone client whose
        # execute_command would add nothing the lane leaves out: it retries
        # nothing by itself (from_url's clients: the store retries), it is not
        # pinned to one connection, and nothing is wrapped around it (checked
        # per call: instrumentation may wrap it later).
        self.lane = (
            not self.cluster
            and not getattr(client, "single_connection_client", False)
            and client_retries(client) == 0
        )
        self._idle: Any = None
        # Set by the store when the near cache uses server-assisted invalidation.
        self.invalidations: Invalidations | None = None

    async def call(self, *args: Any) -> Any:
        """One command of a turn's hot path (a load, the commit script), as redis-py's
        ``execute_command`` would send it, minus its per-command overhead.

        With the lane on, the command goes on a connection this link keeps
        between commands (one; concurrent commands take pool connections as
        usual), sent and read directly. That skips the pool's condition
        lock and redis-py's retry wrapper, about 25 µs per command here; the
        store makes its own retries, and a deadline connection still bounds
        every write and read. A connection whose command failed other than with
        an error reply (a timeout, a lost connection, a cancellation halfway)
        may hold an unread reply: it is closed, never reused.
        """
        client = self.client
        if not self._on_lane(client):
            return await client.execute_command(*args)
        pool = client.connection_pool
        conn = await self._take(pool)
        sound = False
        try:
            await _send(conn, args)
            reply = await conn.read_response()
            sound = True
            return reply
        except rexc.ResponseError:
            sound = True  # an error reply is a whole reply: the connection is in step
            raise
        finally:
            await self._give(pool, conn, sound)

    async def call_tracked(self, session_id: str, *args: Any) -> tuple[Any, Ticket | None]:
        """:meth:`call` on a connection whose reads Redis tracks for the near cache
        (``_tracking``); also the ticket whose ``close()`` gives the token for what it
        read, to be closed as its entry is stored (None: tracking is not used).

        A connection is set up the first time it carries such a call (and again
        after it reconnects, or after the invalidation connection did): the
        ``CLIENT TRACKING`` commands go in the same write as the command, so
        this costs no round trip either.
        """
        inv = self.invalidations
        client = self.client
        if inv is None or not self._on_lane(client):
            return await self.call(*args), None
        pool = client.connection_pool
        conn = await self._take(pool)
        sound = False
        ticket = inv.begin(session_id)
        try:
            if conn._writer is None:
                await conn.connect()
            setup = inv.setup(conn)
            gen = inv.gen
            if setup is None:
                await _send(conn, args)
            else:
                await conn.send_packed_command(conn.pack_commands([*setup, args]))
                inv.set_up(conn, gen, [await _answer(conn) for _ in setup])
            reply = await conn.read_response()
            # A store closing its invalidations gives no tracked connection back
            # to a pool that outlives it: closed instead (Redis then forgets it).
            sound = not inv.closing
            ticket.read_on(conn)
        except BaseException as exc:
            ticket.close()
            sound = isinstance(exc, rexc.ResponseError)
            await self._give(pool, conn, sound)
            raise
        try:
            await self._give(pool, conn, sound)
        except BaseException:
            ticket.close()
            raise
        return reply, ticket

    def _on_lane(self, client: Any) -> TypeGuard[aioredis.Redis]:
        """The lane is on and nothing (instrumentation) has wrapped the client since."""
        return (
            self.lane
            and not isinstance(client, RedisCluster)
            and type(client).execute_command is _EXECUTE
            and "execute_command" not in client.__dict__
        )

    async def _take(self, pool: Any) -> Any:
        """The kept connection if it is still usable, else one from the pool."""
        conn, self._idle = self._idle, None
        if conn is not None and _unusable(pool, conn):
            await self._give(pool, conn, False)  # closed, and given back
            conn = None
        if conn is None:
            conn = await pool.get_connection()
        return conn

    async def _give(self, pool: Any, conn: Any, sound: bool, keep: bool = True) -> None:
        """Keep ``conn`` for the next command, or give it back (closed if it failed
        midway: it may hold an unread reply). Every connection the link gives back
        goes through here: in the pool other code may write through it, so the near
        cache stops trusting what it read (``Invalidations.lent``)."""
        if sound and keep and self._idle is None and self.lane:
            self._idle = conn
            return
        if not sound:
            await conn.disconnect(nowait=True)  # closes without waiting: no suspension
        inv = self.invalidations
        if inv is not None:
            inv.lent(conn)
        await pool.release(conn)

    async def call_pipelined(self, commands: list[tuple[Any, ...]], extra: float) -> list[Any]:
        """Commands sent in one write on one connection of a standalone client, every
        reply read (an error reply as its exception): the commit and its WAIT.

        The connection is the lane's kept one when the lane is on (else one
        from the pool, given back after); the last read may take ``extra``
        seconds beyond the connection's deadline. A connection that failed
        midway is closed, never reused.
        """
        client = self.client
        assert not isinstance(client, RedisCluster)
        pool = client.connection_pool
        conn = await (self._take(pool) if self.lane else pool.get_connection())  # type: ignore[no-untyped-call]
        sound = False
        try:
            replies = await read_pipelined(conn, commands, extra)
            sound = True
            return replies
        finally:
            await self._give(pool, conn, sound, keep=self.lane)

    async def release(self) -> None:
        """Give the kept connection back to the pool (the store is closing); from now on
        every call goes through the client, and a call still in flight gives its
        connection back too."""
        self.lane = False
        conn, self._idle = self._idle, None
        if conn is not None and not isinstance(self.client, RedisCluster):
            await self._give(self.client.connection_pool, conn, True)  # the lane is off

    async def check_server(self) -> None:
        """Refuse, once and clearly, a server older than the store needs (see
        ``_version``): called before a store's first command, one INFO per store.
        Unreachable or busy: the operation itself will say so, with what it must
        carry (the unsaved messages of a commit); checked next time.

        Raises:
            UnsupportedServer: the server is older than the store needs.
        """
        self.checked = await check_server(self.client)

    async def read(self, *args: Any) -> Any:
        """A read-only command, retried by the store when the connection failed."""
        for attempt in range(self.retries + 1):
            try:
                return await self.call(*args)
            except Exception as exc:
                failure = classify(exc)
                if failure not in (Failure.LOST, Failure.UNREACHABLE):
                    raise
                if attempt == self.retries or pool_exhausted(exc):
                    raise
            await asyncio.sleep(self.backoff.compute(attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover


async def _send(conn: Any, args: tuple[Any, ...]) -> None:
    """``conn.send_command(*args)``, packed by hiredis's C packer where it gives the same
    bytes (UTF-8 text, no float): about 7 µs less per commit than redis-py's packer."""
    if _PACK is not None and conn.encoder.encoding in _UTF8:
        try:
            packed = _PACK(args)
        except TypeError:
            pass
        else:
            await conn.send_packed_command(packed)
            return
    await conn.send_command(*args)


async def _answer(conn: Any) -> Any:
    """The next reply on ``conn``, an error reply as its exception (not raised)."""
    try:
        return await conn.read_response()
    except rexc.ResponseError as exc:
        return exc


def _unusable(pool: Any, conn: Any) -> bool:
    """A kept connection the server closed while it was idle (a server that died, or
    restarted), or one to a demoted primary: sending on it would only lose the command
    (or send it to the wrong server), so a fresh connection is taken instead. The
    pool's own ``ensure_connection`` finds the first out with a read; the stream's
    state tells it at no cost."""
    reader = getattr(conn, "_reader", None)

    return (reader is not None and reader.at_eof()) or stale_primary(pool, conn)
