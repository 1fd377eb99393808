"""Redis Sentinel: the ``redis+sentinel://`` URL, and a client that follows the primary.

Sentinel watches a primary and its replicas, and promotes a replica when the
primary fails. A client asks the sentinels where the primary of a *service*
is; redis-py's ``SentinelConnectionPool`` does so each time it opens a
connection, and its ``SentinelManagedConnection`` turns the ``READONLY`` reply
of a demoted primary into a closed connection. What this module adds:

- :func:`parse_sentinel_url`: the URL (its grammar is in the docstring), with
  a ``ValueError`` naming the part that is wrong, passwords never shown;
- :func:`sentinel_client`: a client for the service's primary with what
  ``from_url`` gives a plain client: deadline-keeping connections (also to the
  sentinels), a blocking pool, and retries made by the store;
- :func:`stale_primary`: whether a connection kept by the store's fast path
  (``_link.py``) still goes to the server the sentinels name as primary; one
  that does not is closed instead of reused.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any, Final, NamedTuple
from urllib.parse import parse_qsl, unquote, urlencode

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import (
    Sentinel,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)
from redis.backoff import NoBackoff

from ._connect import redact
from ._deadlines import DeadlineConnection, DeadlineSSLConnection, _Deadlines

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = [
    "DEFAULT_SENTINEL_PORT",
    "SENTINEL_SCHEMES",
    "BlockingSentinelPool",
    "DeadlineSentinelConnection",
    "DeadlineSentinelSSLConnection",
    "SentinelURL",
    "client_from_sentinel_url",
    "is_sentinel_url",
    "parse_sentinel_url",
    "sentinel_client",
    "sentinels_from_url",
    "split_store_options",
    "stale_primary",
]

SENTINEL_SCHEMES: Final = ("redis+sentinel://", "rediss+sentinel://")
DEFAULT_SENTINEL_PORT: Final = 26379

#: Store options any Redis URL may carry in its query (the rest goes to redis-py).
_STORE_QUERY: Final = ("min_replicas", "replica_timeout")
_SSL_QUERY: Final = ("ssl_cert_reqs", "ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
_SENTINEL_QUERY: Final = (
    "db",
    "sentinel_username",
    "sentinel_password",
    "sentinel_timeout",
    "ssl_check_hostname",
    *_SSL_QUERY,
    *_STORE_QUERY,
)
_CERT_REQS: Final = ("none", "optional", "required")
_BOOLS: Final = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class DeadlineSentinelConnection(_Deadlines, SentinelManagedConnection):
    """A connection to the service's primary whose ``socket_timeout`` is kept by a timer."""


class DeadlineSentinelSSLConnection(_Deadlines, SentinelManagedSSLConnection):
    """The same over TLS."""


class BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool, blocking when full (a burst waits for a connection).

    Closing it also closes the sentinel clients when the store built them
    (``owned_sentinels``), so that a store from a URL leaves nothing open. They
    are closed from a list of their own: redis-py's ``discover_master`` reorders
    ``Sentinel.sentinels`` in place, and two concurrent discoveries (a burst of
    new connections after a failover) can leave a client out of that list.
    """

    owned_sentinels: tuple[aioredis.Redis, ...] = ()

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            closing = await asyncio.gather(
                *(client.aclose() for client in self.owned_sentinels), return_exceptions=True
            )
            failed = next((r for r in closing if isinstance(r, BaseException)), None)
            if failed is not None:
                raise failed


class SentinelURL(NamedTuple):
    """What a ``redis+sentinel://`` URL says (see :func:`parse_sentinel_url`)."""

    sentinels: tuple[tuple[str, int], ...]
    service_name: str
    db: int
    username: str | None
    password: str | None
    tls: bool
    sentinel_username: str | None
    sentinel_password: str | None
    sentinel_timeout: float | None
    ssl: dict[str, Any]
    store_options: dict[str, Any]


def is_sentinel_url(url: str) -> bool:
    """Whether ``url`` is a ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""
    return url.partition("://")[0].lower() in ("redis+sentinel", "rediss+sentinel")


def split_store_options(url: str) -> tuple[str, dict[str, Any]]:
    """``url`` without the store's own query options, and those options, parsed.

    ``min_replicas`` and ``replica_timeout`` may end any Redis URL; redis-py
    would refuse them, so they are taken out before it reads the rest.

    Raises:
        ValueError: one is given twice, or is not a number.
    """
    base, _, rest = url.partition("?")
    query, mark, fragment = rest.partition("#")
    if not any(name in query for name in _STORE_QUERY):
        return url, {}
    kept: list[tuple[str, str]] = []
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in _STORE_QUERY:
            if name in options:
                raise _bad_url(url, f"{name} is given twice")
            options[name] = _store_option(name, value, lambda why: _bad_url(url, why))
        else:
            kept.append((name, value))
    left = f"?{urlencode(kept)}" if kept else ""
    return f"{base}{left}{mark}{fragment}", options


def _bad_url(url: str, why: str) -> ValueError:
    return ValueError(f"bad Redis URL {redact(url)!r}: {why}")


def _store_option(name: str, value: str, bad: Any) -> Any:
    try:
        return int(value) if name == "min_replicas" else float(value)
    except ValueError:
        kind = "an integer" if name == "min_replicas" else "a number of seconds"
        raise bad(f"{name} must be {kind}, got {value!r}") from None


def parse_sentinel_url(url: str) -> SentinelURL:
    """Read ``redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/service[/db]``.

    - ``user``/``password`` (percent-encoded) authenticate to the data nodes
      (the primary and replicas), as in a ``redis://`` URL; the sentinels get
      ``sentinel_username`` / ``sentinel_password`` from the query.
    - Each ``host[:port]`` is a sentinel (port 26379 if left out; IPv6 in
      brackets, ``[::1]:26379``); at least one.
    - ``service`` is the name the sentinels monitor (``sentinel monitor
      <service> ...``); ``db`` the database number (0 if left out; also
      ``?db=``).
    - ``rediss+sentinel://`` uses TLS to the sentinels and the data nodes,
      with ``ssl_cert_reqs`` (none, optional, required), ``ssl_ca_certs``,
      ``ssl_certfile``, ``ssl_keyfile`` and ``ssl_check_hostname`` in the query.
    - Query options: ``sentinel_timeout`` (seconds to connect to and hear
      from one sentinel), ``min_replicas`` and ``replica_timeout`` (the
      store's, see :class:`RedisStore`). Anything else is refused.

    Raises:
        ValueError: what is wrong with the URL, named (the password hidden).
    """
    shown = redact(url)

    def bad(why: str) -> ValueError:
        return ValueError(f"bad Redis Sentinel URL {shown!r}: {why}")

    scheme, sep, _ = url.partition("://")
    if not sep or f"{scheme.lower()}://" not in SENTINEL_SCHEMES:
        raise bad("expected redis+sentinel:// or rediss+sentinel://")
    tls = scheme.lower() == "rediss+sentinel"
    if "#" in url:
        raise bad("a fragment (#...) is not allowed; percent-encode '#' in a password as %23")
    # Split by hand: urlsplit() refuses a netloc of several hosts with IPv6 in it.
    rest = url.partition("://")[2]
    rest, _, query_text = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    path = slash + path
    creds, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = creds.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    sentinels = tuple(_sentinel_address(h, bad) for h in hosts.split(","))
    segments = path.split("/")[1:]
    if segments and segments[-1] == "":
        segments.pop()  # a trailing slash
    if not segments or not segments[0]:
        raise bad("no service name: expected .../<service_name>[/<db>] after the sentinels")
    if len(segments) > 2:
        raise bad(f"the path has {len(segments)} parts: expected /<service_name>[/<db>]")
    service_name = unquote(segments[0])
    db = _number(segments[1], "the database number", bad) if len(segments) == 2 else None
    query: dict[str, str] = {}
    for name, value in parse_qsl(query_text, keep_blank_values=True):
        if name not in _SENTINEL_QUERY:
            known = ", ".join(_SENTINEL_QUERY)
            raise bad(f"unknown query option {name!r} (known: {known})")
        if name in query:
            raise bad(f"{name} is given twice")
        query[name] = value
    if "db" in query:
        if db is not None:
            raise bad("the database number is given both in the path and as ?db=")
        db = _number(query["db"], "db", bad)
    timeout = None
    if "sentinel_timeout" in query:
        try:
            timeout = float(query["sentinel_timeout"])
        except ValueError:
            timeout = math.nan
        if not 0 < timeout < 1e9:
            given = query["sentinel_timeout"]
            raise bad(f"sentinel_timeout must be a number of seconds > 0, got {given!r}")
    ssl: dict[str, Any] = {}
    for name in (*_SSL_QUERY, "ssl_check_hostname"):
        if name not in query:
            continue
        if not tls:
            raise bad(f"{name} needs TLS: use rediss+sentinel://")
        value = query[name]
        if name == "ssl_cert_reqs" and value not in _CERT_REQS:
            raise bad(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, got {value!r}")
        if name == "ssl_check_hostname":
            if value.lower() not in _BOOLS:
                raise bad(f"ssl_check_hostname must be true or false, got {value!r}")
            ssl[name] = _BOOLS[value.lower()]
        else:
            ssl[name] = value
    store_options: dict[str, Any] = {
        n: _store_option(n, query[n], bad) for n in _STORE_QUERY if n in query
    }
    return SentinelURL(
        sentinels=sentinels,
        service_name=service_name,
        db=db or 0,
        username=username,
        password=password,
        tls=tls,
        sentinel_username=query.get("sentinel_username") or None,
        sentinel_password=query.get("sentinel_password") or None,
        sentinel_timeout=timeout,
        ssl=ssl,
        store_options=store_options,
    )


def _number(text: str, what: str, bad: Any) -> int:
    if not text.isdigit():
        raise bad(f"{what} must be an integer >= 0, got {text!r}")
    return int(text)


def _sentinel_address(text: str, bad: Any) -> tuple[str, int]:
    """``host``, ``host:port`` or ``[v6]:port`` of one sentinel."""
    if not text:
        raise bad("an empty sentinel address: expected host[:port][,host[:port]...]")
    if text.startswith("["):
        host, close, rest = text[1:].partition("]")
        if not close or (rest and not rest.startswith(":")):
            raise bad(f"sentinel address {text!r}: expected [ipv6]:port")
        port_text = rest[1:] if rest else ""
    else:
        host, colon, port_text = text.partition(":")
        if colon and not port_text:
            raise bad(f"sentinel address {text!r} has no port after ':'")
    if not host:
        raise bad(f"sentinel address {text!r} has no host")
    if not port_text:
        return unquote(host), DEFAULT_SENTINEL_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise bad(f"sentinel address {text!r}: the port must be 1-65535")
    return unquote(host), int(port_text)


def sentinels_from_url(parsed: SentinelURL, connect_timeout: float | None) -> Sentinel:
    """A redis-py ``Sentinel`` on the URL's sentinels, with deadline-keeping connections
    that never retry by themselves (one sentinel that is down is skipped at once)."""
    timeout = parsed.sentinel_timeout if parsed.sentinel_timeout is not None else connect_timeout
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 0),
        "username": parsed.sentinel_username,
        "password": parsed.sentinel_password,
        **parsed.ssl,
    }
    sentinel = Sentinel([], sentinel_kwargs=options)  # type: ignore[no-untyped-call]
    cls = DeadlineSSLConnection if parsed.tls else DeadlineConnection
    sentinel.sentinels = [
        aioredis.Redis.from_pool(
            aioredis.ConnectionPool(connection_class=cls, host=host, port=port, **options)
        )
        for host, port in parsed.sentinels
    ]
    return sentinel


def sentinel_client(
    sentinel: Sentinel,
    service_name: str,
    *,
    tls: bool,
    socket_timeout: float | None,
    connect_timeout: float | None,
    retries: int,
    max_connections: int,
    pool_timeout: float | None,
    client_options: Mapping[str, Any] | None,
) -> tuple[aioredis.Redis, int]:
    """A client for ``service_name``'s primary, and how many retries the store makes.

    As ``client_from_url`` does for a plain URL: deadline-keeping connections,
    a blocking pool of ``max_connections``, and retries made by the store
    (redis-py's off) unless ``client_options`` brings its own ``retry``.
    ``sentinel.connection_kwargs`` (a password, say) are kept; these override them.

    Raises:
        TypeError: ``sentinel`` is not a ``redis.asyncio.sentinel.Sentinel``.
        ValueError: an empty service name.
    """
    if not isinstance(sentinel, Sentinel):
        raise TypeError(
            f"sentinel must be a redis.asyncio.sentinel.Sentinel, got {type(sentinel).__name__}"
        )
    if not isinstance(service_name, str) or not service_name:
        raise ValueError(f"service_name must be a non-empty str, got {service_name!r}")
    own_retry = "retry" not in (client_options or {})
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        **(client_options or {}),
        "decode_responses": False,
    }
    options.pop("ssl", None)  # the connection class says it
    tls = tls or bool(sentinel.connection_kwargs.get("ssl"))
    connection_class = DeadlineSentinelSSLConnection if tls else DeadlineSentinelConnection
    client: aioredis.Redis = sentinel.master_for(
        service_name,
        redis_class=aioredis.Redis,
        connection_pool_class=BlockingSentinelPool,
        connection_class=connection_class,
        max_connections=max_connections,
        timeout=pool_timeout,
        **options,
    )
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelPool)
    pool.connection_kwargs.pop("ssl", None)
    return client, (max(0, retries) if own_retry else 0)


def client_from_sentinel_url(
    url: str,
    *,
    socket_timeout: float | None,
    connect_timeout: float | None,
    retries: int,
    max_connections: int,
    pool_timeout: float | None,
    client_options: Mapping[str, Any] | None,
) -> tuple[aioredis.Redis, int, dict[str, Any]]:
    """A client from a ``redis+sentinel://`` URL, the store's retries, and the store
    options the URL carries.

    Raises:
        ValueError: a bad URL (see :func:`parse_sentinel_url`).
    """
    parsed = parse_sentinel_url(url)
    options: dict[str, Any] = {"db": parsed.db, **parsed.ssl}
    if parsed.username is not None:
        options["username"] = parsed.username
    if parsed.password is not None:
        options["password"] = parsed.password
    sentinel = sentinels_from_url(parsed, connect_timeout)
    client, store_retries = sentinel_client(
        sentinel,
        parsed.service_name,
        tls=parsed.tls,
        socket_timeout=socket_timeout,
        connect_timeout=connect_timeout,
        retries=retries,
        max_connections=max_connections,
        pool_timeout=pool_timeout,
        client_options={**options, **(client_options or {})},
    )
    pool = client.connection_pool
    assert isinstance(pool, BlockingSentinelPool)
    pool.owned_sentinels = tuple(sentinel.sentinels)
    return client, store_retries, parsed.store_options


def stale_primary(pool: object, conn: Any) -> bool:
    """A connection of a Sentinel pool to a server that is no longer the primary.

    The pool learns the primary's address whenever it opens a connection; a
    connection kept open since (by the store's fast path) may still go to the
    old, demoted one.
    """
    if not isinstance(pool, SentinelConnectionPool) or not pool.is_master:
        return False
    address = pool.master_address
    return address is not None and (conn.host, conn.port) != tuple(address)
