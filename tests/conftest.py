"""Shared fixtures: a real Redis server, and one store fixture over every backend.

The real server is, in order: ``$REDIS_URL``; 127.0.0.1:6379 if it answers; a
``redis-server`` from PATH started on a free port in a temporary directory.
Failing all three, Redis tests are skipped with a loud reason, unless
``PROMPTKIT_REQUIRE_REDIS=1``, in which case they fail.

The ``cluster`` store runs the same contract on a real 3-primary Redis Cluster
started from ``redis-server`` for the test session (see ``tests/cluster.py``),
with the same skip-or-fail rule, and the ``strict`` store on a one-node
cluster-enabled server reached by a plain client, every script guarded (see
``tests/strict.py``). ``PROMPTKIT_REDIS_SERVER=/path/to/redis-server`` (the
server matrix, ``.ci/servers``) makes every server the tests start, and the
real server itself, that binary's.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from promptkit_async import RedisStore

from .backends import Backend, MemoryBackend, RedisBackend, SQLiteBackend
from .faults import FaultProxy
from .strict import strict_scripts, strict_scripts_everywhere, strict_server  # noqa: F401

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator

    from promptkit_async import BaseStore, Store

    from .cluster import ClusterServers

REQUIRE_REDIS = os.environ.get("PROMPTKIT_REQUIRE_REDIS") == "1"
#: ``PROMPTKIT_LOOP=uvloop`` runs every test on uvloop instead of asyncio's loop.
LOOP = os.environ.get("PROMPTKIT_LOOP", "asyncio")

if LOOP == "uvloop":
    import pytest_asyncio.plugin
    import uvloop

    if hasattr(pytest_asyncio.plugin, "PytestAsyncioSpecs"):  # pytest-asyncio >= 1.5

        def pytest_asyncio_loop_factories(
            config: pytest.Config, item: pytest.Item
        ) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
            return {"uvloop": uvloop.new_event_loop}

    else:

        @pytest.fixture(scope="session")
        def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
            policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
            return policy

elif LOOP != "asyncio":
    raise RuntimeError(f"PROMPTKIT_LOOP must be asyncio or uvloop, not {LOOP!r}")


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on now, never the same twice in one run (two servers
    of a cluster asking in turn could otherwise both be given a port just released)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port: int = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _answers(url: str) -> bool:
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError):
        return False


class _ExitedEarly(RuntimeError):
    """The server exited before it answered (a port taken: it logs and exits 1)."""


def _new_bus_port(args: tuple[str, ...]) -> tuple[str, ...]:
    """``args`` with any ``--cluster-port`` value replaced by a new free port."""
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg == "--cluster-port":
            out[i + 1] = str(free_port())
    return tuple(out)


class RedisServer:
    """A redis-server process owned by the tests (started and stopped by them)."""

    def __init__(
        self,
        *extra_args: str,
        port: int | None = None,
        port_factory: Callable[[], int] | None = None,
    ) -> None:
        # A port picked here (not given) is picked again if the first start finds it
        # taken: between picking and binding, any process may take a free port.
        self._factory: Callable[[], int] | None = None
        if port is None:
            self._factory = port_factory or free_port
            port = self._factory()
        self.port = port
        self.dir = Path(tempfile.mkdtemp(prefix="promptkit-redis-"))
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        """Start (or restart, on the same port) and wait until it answers."""
        first = self.proc is None
        for attempt in range(3):
            try:
                return self._start()
            except _ExitedEarly:
                if not first or self._factory is None or attempt == 2:
                    raise
            # The port (or the cluster bus port) was taken meanwhile: new ones.
            self.port = self._factory()
            self.extra_args = _new_bus_port(self.extra_args)
        raise AssertionError("unreachable")

    def _start(self) -> RedisServer:
        exe = os.environ.get("PROMPTKIT_REDIS_SERVER") or shutil.which("redis-server")
        if exe is None:
            raise RuntimeError("redis-server is not on PATH")
        self.proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--save",
                "",
                "--appendonly",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if _answers(self.url):
                return self
            if self.proc.poll() is not None:
                raise _ExitedEarly(f"redis-server exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 10 s")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def stop(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a real Redis server, or a skip (a failure when it is required)."""
    url = os.environ.get("REDIS_URL")
    if url:
        if not _answers(url):
            pytest.fail(f"REDIS_URL={url} does not answer")
        yield url
        return
    if os.environ.get("PROMPTKIT_REDIS_SERVER"):  # the server matrix: this binary's own
        own = RedisServer().start()
        try:
            yield own.url
        finally:
            own.stop()
        return
    if _answers("redis://127.0.0.1:6379/0"):
        yield "redis://127.0.0.1:6379/0"
        return
    if shutil.which("redis-server"):
        server = RedisServer().start()
        try:
            yield server.url
        finally:
            server.stop()
        return
    skip_or_fail(
        "NO REAL REDIS: set REDIS_URL, run Redis on 127.0.0.1:6379 or put redis-server on "
        "PATH; Redis behaviour is untested in this run"
    )


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test alone, so tests never touch each other's keys."""
    return f"pktest-{uuid.uuid4().hex[:12]}"


def skip_or_fail(reason: str) -> None:
    """Skip loudly, or fail when real servers are required (PROMPTKIT_REQUIRE_REDIS=1)."""
    if REQUIRE_REDIS:
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    """A real 3-primary Redis Cluster on loopback ports, for the whole test session."""
    from .cluster import ClusterServers, cluster_unavailable_reason

    missing = cluster_unavailable_reason()
    if missing is not None:
        skip_or_fail(f"NO REDIS CLUSTER: {missing}; Redis Cluster behaviour is untested")
    cluster = ClusterServers(3)
    try:
        cluster.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        skip_or_fail(f"NO REDIS CLUSTER: could not start one ({exc}); Cluster is untested")
    try:
        yield cluster
    finally:
        cluster.stop()


def cluster_client(cluster: ClusterServers, **kwargs: object) -> RedisCluster:
    return RedisCluster(host="127.0.0.1", port=cluster.ports[0], **kwargs)  # type: ignore[arg-type]


async def _delete_prefix(client: aioredis.Redis | RedisCluster, prefix: str) -> None:
    async for k in client.scan_iter(match=f"{prefix}:*", count=1000):
        await client.delete(k)


@pytest.fixture
async def redis_client(redis_url: str, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await _delete_prefix(client, prefix)
        await client.aclose()


async def _make_fakeredis() -> aioredis.Redis:
    import fakeredis

    client: aioredis.Redis = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    return client


@contextlib.asynccontextmanager
async def _backend(
    request: pytest.FixtureRequest, kind: str, prefix: str
) -> AsyncIterator[Backend]:
    if kind == "memory":
        mem = MemoryBackend()
        async with mem.store:
            yield mem
        return
    if kind == "sqlite":
        lite = SQLiteBackend(request.getfixturevalue("tmp_path") / "store.db")
        async with lite.store:
            yield lite
        return
    client: aioredis.Redis | RedisCluster
    url: str | None = None
    guard: contextlib.AbstractContextManager[None] = contextlib.nullcontext()
    if kind == "fakeredis":
        client = await _make_fakeredis()
    elif kind == "cluster":
        servers = request.getfixturevalue("redis_cluster")
        client = cluster_client(servers)
        url = servers.url.replace("redis://", "redis+cluster://", 1)
    elif kind == "strict":  # a standalone client, a server refusing cross-slot scripts
        strict = request.getfixturevalue("strict_server")
        url = strict.url
        client = aioredis.Redis.from_url(url)
        guard = strict_scripts(shebang=strict.shebang)
    else:
        url = request.getfixturevalue("redis_url")
        client = aioredis.Redis.from_url(url)
    try:
        with guard:
            async with RedisStore(client, prefix=prefix) as rs:
                backend = RedisBackend(kind, rs, client)
                backend.url = url
                yield backend
    finally:
        await _delete_prefix(client, prefix)
        await client.aclose()


@pytest.fixture(params=["memory", "fakeredis", "redis", "cluster", "strict", "sqlite"])
async def backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Backend]:
    """The same contract on MemoryStore, fakeredis, a real Redis server, a real Cluster,
    a server refusing cross-slot and undeclared keys (tests/strict.py) and an SQLite file."""
    async with _backend(request, request.param, prefix) as b:
        yield b


@pytest.fixture(params=["fakeredis", "redis", "cluster", "strict"])
async def redis_backend(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[RedisBackend]:
    """A RedisStore on fakeredis, a real server, a real Cluster and a strict server
    (Redis-only behaviour)."""
    async with _backend(request, request.param, prefix) as b:
        assert isinstance(b, RedisBackend)
        yield b


@pytest.fixture
def store(backend: Backend) -> BaseStore:
    """The store of :func:`backend`."""
    return backend.store


def raw_client(store: Store) -> aioredis.Redis | RedisCluster:
    """The Redis client under a RedisStore: a plain client or a Cluster client."""
    assert isinstance(store, RedisStore)
    client = store.client
    assert isinstance(client, (aioredis.Redis, RedisCluster))
    return client


async def assert_pool_clean(target: aioredis.Redis | RedisCluster | RedisStore) -> None:
    """No connection is checked out of the pool, and none holds unread reply data.

    A connection given back with a reply still unread would hand that reply to
    the next caller (CVE-2023-28858/28859). Given a store, the one connection
    its hot path keeps between commands counts as idle, and is checked alike.
    """
    kept: list[Any] = []
    if isinstance(target, RedisStore):
        if target._link._idle is not None:
            kept.append(target._link._idle)
        client = target.client
    else:
        client = target
    if isinstance(client, RedisCluster):
        for node in client.get_nodes():
            free = list(node._free)
            busy = [c for c in node._connections if c not in free]
            assert not busy, f"{len(busy)} connection(s) still in use on {node.name}"
            for conn in free:
                if conn.is_connected:
                    assert not await conn.can_read(), f"unread data on a {node.name} connection"
        return
    pool = client.connection_pool
    in_use = [c for c in pool._in_use_connections if c not in kept]
    assert not in_use, f"{len(in_use)} connection(s) still checked out of the pool"
    for conn in kept:
        assert not await conn.can_read(), "the store's kept connection holds unread data"
    for idle in list(pool._available_connections):
        if idle.is_connected and await idle.can_read():
            assert await _closed_by_peer(idle), "an idle pooled connection holds unread data"


async def _closed_by_peer(conn: Any) -> bool:
    """Whether a readable idle connection holds only the server's close (EOF), which
    redis-py's pool reconnects before reuse, rather than a reply never read."""
    try:
        await asyncio.wait_for(conn.read_response(), 1)
    except redis.ConnectionError:
        return True
    return False


@pytest.fixture
async def proxy(redis_url: str) -> AsyncIterator[FaultProxy]:
    parts = urlsplit(redis_url)
    async with FaultProxy(parts.port or 6379, upstream_host=parts.hostname or "127.0.0.1") as p:
        yield p


def through(proxy: FaultProxy, redis_url: str) -> str:
    """``redis_url`` (same db, same credentials) routed through the proxy."""
    parts = urlsplit(redis_url)
    netloc = parts.netloc.rpartition("@")
    auth = netloc[0] + "@" if netloc[0] else ""
    return urlunsplit((parts.scheme, f"{auth}127.0.0.1:{proxy.port}", parts.path, "", ""))


@pytest.fixture
async def truth(redis_client: aioredis.Redis, prefix: str) -> RedisStore:
    """A store on a direct connection (no proxy), to read what really is in Redis."""
    return RedisStore(redis_client, prefix=prefix)


@pytest.fixture
def spawn_server() -> Iterator[Callable[..., RedisServer]]:
    """Factory of spawned redis-server processes, all killed at teardown."""
    spawned: list[RedisServer] = []

    def spawn(*args: str) -> RedisServer:
        srv = RedisServer(*args)
        spawned.append(srv)
        try:
            return srv.start()
        except (RuntimeError, OSError) as exc:
            skip_or_fail(f"NO REDIS SERVER to spawn ({exc}); this fault is untested")
            raise

    try:
        yield spawn
    finally:
        for srv in spawned:
            srv.stop()


async def contents(store: Store, session_id: str) -> list[str]:
    """The stored message texts of a session."""
    return [m.text for m in await store.load(session_id)]


async def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    assert callable(predicate)
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.01)
