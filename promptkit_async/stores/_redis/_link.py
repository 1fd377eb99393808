"""The store's hold on its client: the client, the key prefix, and the store's own retries.

Every room of the Redis store (loading, commits, leases, the index, admin)
talks to Redis through one :class:`Link`, so that how a command is retried and
how a cancellation hidden in a timeout is recovered are decided once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff

from ._errors import Failure, classify, pool_exhausted

if TYPE_CHECKING:
    import redis.asyncio as aioredis

__all__ = ["Link", "client_retries", "connection_kwargs"]


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

    __slots__ = ("backoff", "client", "cluster", "prefix", "retries")

    def __init__(self, client: aioredis.Redis | RedisCluster, prefix: str) -> None:
        self.client = client
        self.prefix = prefix
        self.cluster = isinstance(client, RedisCluster)
        self.retries = 0
        self.backoff = ExponentialBackoff(cap=0.5, base=0.05)

    async def read(self, *args: Any) -> Any:
        """A read-only command, retried by the store when the connection failed."""
        for attempt in range(self.retries + 1):
            try:
                return await self.client.execute_command(*args)
            except Exception as exc:
                failure = classify(exc)
                if failure not in (Failure.LOST, Failure.UNREACHABLE):
                    raise
                if attempt == self.retries or pool_exhausted(exc):
                    raise
            await asyncio.sleep(self.backoff.compute(attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover
