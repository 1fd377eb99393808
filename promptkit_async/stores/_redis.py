"""RedisStore: conversation state in Redis (standalone or Cluster) via redis.asyncio.

One round trip to load (``LRANGE``), one to save: a Lua script, which Redis runs
as one atomic transaction like MULTI/EXEC, that checks the turn id, appends
(``RPUSH``), caps (``LTRIM``), refreshes the sliding TTL (``PEXPIRE``) and records
the turn id. Checking the turn id inside the atomic step is what makes a commit
idempotent: a redis-py retry or a re-send after a lost reply applies once.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from typing import TYPE_CHECKING, Any, Literal

import redis.asyncio as aioredis
from redis import exceptions as rexc
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from .._config import DEFAULT_TTL, TTL, check_limit, check_session_id, ttl_seconds
from .._exceptions import (
    CommitOutcomeUnknown,
    CorruptHistory,
    InvalidMessage,
    StoreError,
    StoreRejected,
    StoreUnavailable,
)
from .._locks import LockRegistry
from .._messages import Message, decode_message, encode_message
from . import _keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Sequence
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["RedisStore", "TurnStatus"]

logger = logging.getLogger(__name__)

TurnStatus = Literal["applied", "aborted", "unknown"]

#: How many recent turn ids a session remembers for exactly-once commits.
TURN_MEMORY = 64
#: Messages per RPUSH inside the script (Lua's unpack() has a stack limit).
_PUSH_CHUNK = 500

# KEYS: history, turns. ARGV: turn id, max messages (0 = unlimited),
# ttl in ms (0 = keep forever), turn memory, entries...
# Returns 1 applied now, 0 already applied, -1 aborted earlier (never applies).
_COMMIT = b"""
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
if redis.call('ZSCORE', KEYS[2], '!' .. ARGV[1]) then return -1 end
local n = #ARGV
for i = 5, n, 500 do
  redis.call('RPUSH', KEYS[1], unpack(ARGV, i, math.min(i + 499, n)))
end
local cap = tonumber(ARGV[2])
if cap > 0 then redis.call('LTRIM', KEYS[1], -cap, -1) end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000000 + t[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[4]))
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
  redis.call('PEXPIRE', KEYS[2], ttl)
else
  redis.call('PERSIST', KEYS[1])
  redis.call('PERSIST', KEYS[2])
end
return 1
"""

# KEYS: history, turns. ARGV: turn id, ttl in ms for the abort marker.
# Settles a commit whose reply was lost: 1 it was applied; -1 it was not, and
# the abort marker guarantees a copy still in flight can never apply later.
_RESOLVE = b"""
if redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 1 end
if redis.call('ZSCORE', KEYS[2], '!' .. ARGV[1]) then return -1 end
local t = redis.call('TIME')
redis.call('ZADD', KEYS[2], t[1] * 1000000 + t[2], '!' .. ARGV[1])
local left = redis.call('PTTL', KEYS[2])
if left < 0 then redis.call('PEXPIRE', KEYS[2], ARGV[2]) end
return -1
"""

_DEFAULT_SOCKET_TIMEOUT = 5.0
_DEFAULT_CONNECT_TIMEOUT = 2.0
_DEFAULT_RETRIES = 2
_ABORT_MARKER_TTL_MS = 3_600_000


class _Script:
    """EVALSHA with an EVAL fallback: survives SCRIPT FLUSH and restarts, works on Cluster."""

    __slots__ = ("sha", "source")

    def __init__(self, source: bytes) -> None:
        import hashlib

        self.source = source
        self.sha = hashlib.sha1(source).hexdigest()

    async def __call__(self, client: Any, keys: Sequence[bytes], args: Sequence[Any]) -> Any:
        try:
            return await client.execute_command("EVALSHA", self.sha, len(keys), *keys, *args)
        except rexc.NoScriptError:
            return await client.execute_command("EVAL", self.source, len(keys), *keys, *args)


_commit_script = _Script(_COMMIT)
_resolve_script = _Script(_RESOLVE)


def _is_connect_failure(exc: BaseException) -> bool:
    """True when the command cannot have reached Redis (refused or no route)."""
    if isinstance(exc, rexc.ConnectionError) and "connecting to" in str(exc):
        return True
    return isinstance(exc.__context__, ConnectionRefusedError)


@contextlib.contextmanager
def _mapped_errors(session_id: str | None, action: str) -> Iterator[None]:
    try:
        yield
    except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
        raise StoreUnavailable(
            f"Redis unavailable while {action}: {type(exc).__name__}: {exc}",
            session_id=session_id,
        ) from exc
    except rexc.ResponseError as exc:
        if str(exc).startswith("WRONGTYPE") and session_id is not None:
            raise CorruptHistory(
                f"session {session_id!r}: the Redis key has the wrong type ({exc})",
                session_id=session_id,
            ) from exc
        raise StoreError(f"Redis refused {action}: {exc}") from exc
    except rexc.RedisError as exc:
        raise StoreError(f"Redis error while {action}: {type(exc).__name__}: {exc}") from exc


class RedisStore:
    """Conversation histories in Redis.

    Args:
        client: a ``redis.asyncio.Redis`` or ``redis.asyncio.cluster.RedisCluster``
            created with ``decode_responses=False``. It is borrowed: ``aclose()``
            leaves it open. Use :meth:`from_url` to let the store own one.
        prefix: first part of every key; must not contain ``{`` or ``}``.
        compress_above: zlib-compress stored records larger than this many
            bytes (None: never). Reads decode either form whatever the setting.

    Commits are idempotent by turn id, so the client's own retries cannot
    duplicate a turn.
    """

    def __init__(
        self,
        client: aioredis.Redis | RedisCluster,
        *,
        prefix: str = "promptkit",
        compress_above: int | None = None,
    ) -> None:
        if not isinstance(client, (aioredis.Redis, RedisCluster)):
            raise TypeError(
                "RedisStore needs a redis.asyncio.Redis or redis.asyncio.cluster.RedisCluster, "
                f"got {type(client).__name__}"
            )
        kwargs = _connection_kwargs(client)
        if kwargs.get("decode_responses"):
            raise ValueError(
                "RedisStore needs a client created with decode_responses=False: "
                "stored records are bytes (possibly compressed)"
            )
        if not isinstance(prefix, str) or not prefix or "{" in prefix or "}" in prefix:
            raise ValueError(f"prefix must be a non-empty str without braces, got {prefix!r}")
        check_limit("compress_above", compress_above, minimum=0)
        self._client = client
        self._owns_client = False
        self.prefix = prefix
        self.compress_above = compress_above
        self.locks = LockRegistry()
        self._closed = False

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        cluster: bool = False,
        prefix: str = "promptkit",
        compress_above: int | None = None,
        socket_timeout: float | None = _DEFAULT_SOCKET_TIMEOUT,
        connect_timeout: float | None = _DEFAULT_CONNECT_TIMEOUT,
        retries: int = _DEFAULT_RETRIES,
        **client_kwargs: Any,
    ) -> RedisStore:
        """Build a store that owns its client (closed by ``aclose()``).

        ``redis://``, ``rediss://`` (TLS) and ``unix://`` URLs are accepted;
        ``cluster=True`` (or a ``redis+cluster://`` / ``rediss+cluster://`` URL)
        connects to a Redis Cluster. Timeouts and retries are explicit: a few
        quick retries with backoff, never a storm (commits are idempotent, so a
        retry cannot duplicate a turn).

        Raises:
            ValueError: the URL is not a Redis URL.
        """
        if not isinstance(url, str):
            raise TypeError(f"url must be a str, got {type(url).__name__}")
        for scheme in ("redis+cluster://", "rediss+cluster://"):
            if url.startswith(scheme):
                url = url.replace("+cluster", "", 1)
                cluster = True
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(
                f"not a Redis URL: {_redact(url)!r} (expected redis://, rediss:// or unix://)"
            )
        options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries),
            "retry_on_error": [rexc.ConnectionError, rexc.TimeoutError, ConnectionResetError],
            **client_kwargs,
        }
        options["decode_responses"] = False
        try:
            client: aioredis.Redis | RedisCluster
            if cluster:
                options.pop("retry_on_error", None)
                client = RedisCluster.from_url(url, **options)
            else:
                client = aioredis.Redis.from_url(url, **options)
        except ValueError as exc:
            raise ValueError(f"bad Redis URL {_redact(url)!r}: {exc}") from None
        store = cls(client, prefix=prefix, compress_above=compress_above)
        store._owns_client = True
        return store

    @property
    def client(self) -> aioredis.Redis | RedisCluster:
        return self._client

    def __repr__(self) -> str:
        return (
            f"RedisStore(prefix={self.prefix!r}, cluster={isinstance(self._client, RedisCluster)})"
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the client if this store created it; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._owns_client:
            await self._client.aclose()

    def key(self, session_id: str, kind: str = _keys.HISTORY) -> bytes:
        """The Redis key holding ``session_id``'s history (or another kind of its keys)."""
        return _keys.key(self.prefix, check_session_id(session_id), kind)

    async def ping(self) -> None:
        """Check the server answers.

        Raises:
            StoreUnavailable: it does not.
        """
        with _mapped_errors(None, "pinging"):
            await self._client.execute_command("PING")

    async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
        """The newest ``limit`` messages (all when None), oldest first; one LRANGE."""
        session_id = check_session_id(session_id)
        check_limit("limit", limit, minimum=0)
        if limit == 0:
            return []
        k = _keys.key(self.prefix, session_id, _keys.HISTORY)
        with _mapped_errors(session_id, f"loading session {session_id!r}"):
            raw = await self._client.execute_command("LRANGE", k, -limit if limit else 0, -1)
        windowed = limit is not None and len(raw) == limit
        return [
            # A windowed load cannot know absolute positions: count from the end.
            decode_message(item, session_id=session_id, index=i - len(raw) if windowed else i)
            for i, item in enumerate(raw)
        ]

    async def append(
        self,
        session_id: str,
        messages: Sequence[Message],
        *,
        max_messages: int | None = None,
        ttl: TTL = DEFAULT_TTL,
        turn_id: str | None = None,
    ) -> None:
        """Append atomically and exactly once, cap to ``max_messages``, refresh the TTL.

        Raises:
            StoreUnavailable: Redis could not be reached; nothing was written.
                ``.unsaved`` holds the messages.
            CommitOutcomeUnknown: the reply was lost and could not be checked;
                the turn is stored once or not at all.
            StoreRejected: Redis refused the write (out of memory, wrong key
                type); nothing was written.
        """
        session_id = check_session_id(session_id)
        check_limit("max_messages", max_messages)
        seconds = ttl_seconds(ttl)
        batch = list(messages)
        if not batch:
            return
        compress = self.compress_above
        entries = []
        for i, m in enumerate(batch):
            if not isinstance(m, Message):
                raise InvalidMessage(f"messages[{i}] is {type(m).__name__}, not a Message")
            entries.append(encode_message(m, compress_above=compress))
        if turn_id is None:
            turn_id = secrets.token_hex(12)
        keys = (
            _keys.key(self.prefix, session_id, _keys.HISTORY),
            _keys.key(self.prefix, session_id, _keys.TURNS),
        )
        ttl_ms = 0 if seconds is None else max(1, int(seconds * 1000))
        args = (turn_id, max_messages or 0, ttl_ms, TURN_MEMORY, *entries)
        try:
            result = await _commit_script(self._client, keys, args)
        except (rexc.ConnectionError, rexc.TimeoutError, OSError) as exc:
            if _is_connect_failure(exc):
                raise StoreUnavailable(
                    f"Redis unavailable, session {session_id!r} not saved: {exc}",
                    session_id=session_id,
                    unsaved=batch,
                ) from exc
            result = await self._resolve(session_id, keys, turn_id, batch, exc)
        except rexc.ResponseError as exc:
            text = str(exc)
            reason = (
                "out of memory"
                if "OOM" in text
                else "wrong key type"
                if "WRONGTYPE" in text
                else "error"
            )
            raise StoreRejected(
                f"Redis refused to save session {session_id!r} ({reason}): {text}",
                session_id=session_id,
                unsaved=batch,
            ) from exc
        except rexc.RedisError as exc:
            raise StoreUnavailable(
                f"Redis error, session {session_id!r} not saved: {type(exc).__name__}: {exc}",
                session_id=session_id,
                unsaved=batch,
            ) from exc
        if result == -1:
            raise StoreUnavailable(
                f"session {session_id!r} not saved: turn {turn_id} was aborted earlier",
                session_id=session_id,
                unsaved=batch,
            )

    async def _resolve(
        self,
        session_id: str,
        keys: Sequence[bytes],
        turn_id: str,
        batch: list[Message],
        cause: BaseException,
    ) -> int:
        """Settle a commit whose reply was lost: applied (1) or aborted (-1), never both."""
        try:
            return int(await _resolve_script(self._client, keys, (turn_id, _ABORT_MARKER_TTL_MS)))
        except rexc.RedisError as exc:
            logger.warning(
                "commit of session %r turn %s: reply lost and not resolved (%s)",
                session_id,
                turn_id,
                type(exc).__name__,
            )
            raise CommitOutcomeUnknown(
                f"session {session_id!r}: the commit of turn {turn_id} was sent but its reply "
                f"was lost ({type(cause).__name__}: {cause}); it is stored once or not at all",
                session_id=session_id,
                turn_id=turn_id,
                unsaved=batch,
            ) from cause

    async def turn_status(self, session_id: str, turn_id: str) -> TurnStatus:
        """Whether a turn was applied, aborted, or is unknown here (too old or never sent)."""
        k = _keys.key(self.prefix, check_session_id(session_id), _keys.TURNS)
        with _mapped_errors(session_id, "checking a turn"):
            applied = await self._client.execute_command("ZSCORE", k, turn_id)
            if applied is not None:
                return "applied"
            aborted = await self._client.execute_command("ZSCORE", k, "!" + turn_id)
        return "aborted" if aborted is not None else "unknown"

    async def delete(self, session_id: str) -> bool:
        """Erase every key of the session (one DEL: they share a slot); True if it existed."""
        session_id = check_session_id(session_id)
        keys = [_keys.key(self.prefix, session_id, kind) for kind in (_keys.HISTORY, _keys.TURNS)]
        with _mapped_errors(session_id, f"deleting session {session_id!r}"):
            removed = await self._client.execute_command("DEL", *keys)
        return bool(removed)

    async def ttl(self, session_id: str) -> float | None:
        """Seconds until the session expires; None if it has no TTL or does not exist."""
        k = self.key(session_id)
        with _mapped_errors(session_id, "reading a TTL"):
            ms = await self._client.execute_command("PTTL", k)
        return None if ms < 0 else ms / 1000.0

    async def exists(self, session_id: str) -> bool:
        k = self.key(session_id)
        with _mapped_errors(session_id, "checking a session"):
            return bool(await self._client.execute_command("EXISTS", k))

    async def sessions(self, prefix: str = "", *, page_size: int = 500) -> AsyncIterator[str]:
        """Yield ids of sessions starting with ``prefix`` (literal, glob characters are safe).

        Uses SCAN, never KEYS; on a Cluster every primary is scanned. An id may
        be yielded twice if the keyspace is rehashed during the scan (SCAN's
        guarantee); deduplicate if that matters.
        """
        if not isinstance(prefix, str):
            raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
        pattern = (
            _keys.glob_escape(f"{self.prefix}:{{{_keys.encode_id(prefix)}") + "*}:" + _keys.HISTORY
        )
        with _mapped_errors(None, "listing sessions"):
            async for raw in self._client.scan_iter(match=pattern, count=page_size):
                session_id = _keys.parse_key(self.prefix, raw)
                if session_id is not None and session_id.startswith(prefix):
                    yield session_id

    async def delete_prefix(self, prefix: str) -> int:
        """Erase every session whose id starts with ``prefix``; returns how many.

        Raises:
            ValueError: an empty prefix (erasing everything must be explicit:
                iterate :meth:`sessions` yourself).
        """
        if not isinstance(prefix, str) or not prefix:
            raise ValueError("delete_prefix needs a non-empty str prefix")
        count = 0
        doomed = [s async for s in self.sessions(prefix)]
        for session_id in doomed:
            count += await self.delete(session_id)
        return count


def _connection_kwargs(client: aioredis.Redis | RedisCluster) -> dict[str, Any]:
    if isinstance(client, RedisCluster):
        return dict(getattr(client, "get_connection_kwargs", lambda: {})())
    return dict(client.connection_pool.connection_kwargs)


def _redact(url: str) -> str:
    """Hide the password of a URL for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    user = creds.split(":", 1)[0]
    return f"{scheme}://{user + ':' if user else ''}***@{host}"
