"""Building a client from a URL, with the timeouts, pool and retries a store needs.

``RedisStore.from_url`` is a convenience over a client the user could build
themselves; what it adds is explicit: socket and connect timeouts kept by
timers rather than by ``asyncio.wait_for`` (``_deadlines.py``), a blocking
pool (a burst waits for a connection instead of failing), and retries made by
the store rather than by redis-py, so that a commit knows which failed attempt
cannot have reached Redis. Passwords never appear in its error messages.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Final

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff, NoBackoff

from ._deadlines import with_deadlines

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_RETRIES",
    "DEFAULT_SOCKET_TIMEOUT",
    "client_from_url",
    "redact",
]

DEFAULT_SOCKET_TIMEOUT: Final = 5.0
DEFAULT_CONNECT_TIMEOUT: Final = 2.0
DEFAULT_RETRIES: Final = 2
DEFAULT_POOL_TIMEOUT: Final = 5.0


def client_from_url(
    url: str,
    *,
    cluster: bool,
    socket_timeout: float | None,
    connect_timeout: float | None,
    retries: int,
    max_connections: int,
    pool_timeout: float | None,
    client_options: Mapping[str, Any] | None,
) -> tuple[aioredis.Redis | RedisCluster, int]:
    """A new client for ``url``, and how many retries the store itself should make.

    Raises:
        TypeError: ``url`` is not a str.
        ValueError: ``url`` is not a Redis URL, or redis-py refused it.
    """
    if not isinstance(url, str):
        raise TypeError(f"url must be a str, got {type(url).__name__}")
    for scheme in ("redis+cluster://", "rediss+cluster://"):
        if url.startswith(scheme):
            url = url.replace("+cluster", "", 1)
            cluster = True
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError(
            f"not a Redis URL: {redact(url)!r} (expected redis://, rediss:// or unix://)"
        )
    own_retry = "retry" not in (client_options or {})
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
        **(client_options or {}),
        "decode_responses": False,
    }
    try:
        client: aioredis.Redis | RedisCluster
        if cluster:
            client = RedisCluster.from_url(url, max_connections=max_connections, **options)
            _cluster_with_deadlines(client)
        else:
            # The store retries by itself (see _commit.py): it knows which failed
            # attempt cannot have reached Redis, which redis-py's retry hides.
            if own_retry:
                options["retry"] = Retry(NoBackoff(), 0)
            url_options = dict(parse_url(url))  # wins over keywords, as in redis-py
            base: type[Any] = url_options.pop("connection_class", aioredis.Connection)  # type: ignore[assignment]
            pool = aioredis.BlockingConnectionPool(
                **{**options, **url_options},
                connection_class=with_deadlines(base),
                max_connections=max_connections,
                timeout=pool_timeout,
            )
            client = aioredis.Redis.from_pool(pool)
    except ValueError as exc:
        raise ValueError(f"bad Redis URL {redact(url)!r}: {redact(str(exc))}") from None
    store_retries = max(0, retries) if not cluster and own_retry else 0
    return client, store_retries


def _cluster_with_deadlines(client: RedisCluster) -> None:
    """Make a new Cluster client's nodes use deadline-keeping connections.

    redis-py's Cluster client picks its connection class itself; every node
    it creates (now, or when the topology changes) copies the client's
    connection keywords, so changing the class there, and on the startup
    nodes made already, reaches them all (a test checks every connection).
    """
    kwargs = client.get_connection_kwargs()
    cls = with_deadlines(kwargs.get("connection_class") or aioredis.Connection)
    kwargs["connection_class"] = cls
    for node in client.nodes_manager.startup_nodes.values():
        node.connection_class = cls


_SECRET_QUERY = re.compile(r"((?:password|pass|pwd|token)=)[^&#\s]*", re.IGNORECASE)


def redact(url: str) -> str:
    """Hide the password of a URL (userinfo or ``?password=``) for messages."""
    url = _SECRET_QUERY.sub(r"\1***", url)
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"
