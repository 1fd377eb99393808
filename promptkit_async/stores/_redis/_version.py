"""The oldest server the store runs on, checked once, before a store's first command.

6.2 is what the store's commands need: ``ZADD ... GT`` (the index's registry
and its hand-over from an older version) and, on the servers it is tested on,
everything else the scripts call; Valkey reports ``redis_version:7.2.4``
beside its ``valkey_version`` and passes. The check is one ``INFO server`` per
store, made by whichever call comes first (a readiness ``ping()``, a load, a
commit, ``metrics()``...), so an older server is refused by name with
:class:`UnsupportedServer` instead of failing a turn with a script error.

A server older than 6.0 does not even know ``HELLO``, which redis-py 8 sends
on every new connection: that refusal says the same, by name. A server that
does not let us read its version (INFO forbidden by an ACL, or renamed by a
managed service) is trusted, not refused.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Final

from ..._exceptions import UnsupportedServer
from ._errors import Failure, classify

if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import RedisCluster

__all__ = ["MINIMUM_SERVER", "check_server", "server_version"]

logger = logging.getLogger("promptkit_async.stores.redis")

#: The oldest Redis the store runs on.
MINIMUM_SERVER: Final = (6, 2)
_NEEDED: Final = ".".join(map(str, MINIMUM_SERVER))


async def check_server(client: aioredis.Redis | RedisCluster) -> bool:
    """Whether the server is settled as new enough (or trusted); False when it could
    not be asked (unreachable, busy): the caller's own command will say so, and the
    check is made again next time.

    Raises:
        UnsupportedServer: the server is older than :data:`MINIMUM_SERVER`.
    """
    try:
        info = await client.execute_command("INFO", "server")
    except Exception as exc:
        failure = classify(exc)
        if failure is None:
            raise
        if failure is Failure.REFUSED and _knows_no_hello(exc):
            raise UnsupportedServer(
                "the server does not know HELLO, so it is older than Redis 6.0: "
                f"promptkit_async needs Redis {_NEEDED} or newer (or Valkey 7.2+)",
                version="older than 6.0",
                required=_NEEDED,
            ) from exc
        if failure in (Failure.REFUSED, Failure.USAGE, Failure.PROTOCOL):
            logger.debug("server version unknown (INFO refused: %s); not checked", exc)
            return True
        return False
    found = server_version(info)
    if found is not None and found[0] < MINIMUM_SERVER:
        raise UnsupportedServer(
            f"Redis {found[1]} is older than promptkit_async supports: it needs Redis "
            f"{_NEEDED} or newer (or Valkey 7.2+)",
            version=found[1],
            required=_NEEDED,
        )
    return True


def _knows_no_hello(exc: BaseException) -> bool:
    """redis-py's handshake (``HELLO 3``) refused as an unknown command: before 6.0."""
    text = str(exc).lower()
    return "unknown command" in text and "hello" in text


def server_version(info: object) -> tuple[tuple[int, ...], str] | None:
    """``((major, minor, ...), text)`` from a parsed ``INFO server`` (one node's, or
    a Cluster's dict of them: the oldest), or None if it says no version."""
    found: list[tuple[tuple[int, ...], str]] = []
    nodes = (
        list(info.values()) if isinstance(info, dict) and "redis_version" not in info else [info]
    )
    for node in nodes:
        if isinstance(node, dict):
            text = str(node.get("redis_version", ""))
            numbers = re.findall(r"\d+", text)
            if numbers:
                found.append((tuple(int(n) for n in numbers[:3]), text))
    return min(found) if found else None
