"""The oldest server the store runs on (6.2): refused by name at first use, whichever
call comes first, never a script error mid-turn; read once per store, not per turn."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from typing import TYPE_CHECKING

import pytest
import redis

from promptkit_async import RedisStore, Session, UnsupportedServer
from promptkit_async.stores._redis._link import MINIMUM_SERVER, server_version

from ..conftest import free_port
from ..resp_server import RespServer
from ..samples import u

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from ..conftest import RedisServer


def _info(**fields: str) -> bytes:
    body = "# Server\r\n" + "".join(f"{k}:{v}\r\n" for k, v in fields.items())
    data = body.encode()
    return b"$%d\r\n%s\r\n" % (len(data), data)


def test_the_minimum_is_6_2() -> None:
    assert MINIMUM_SERVER == (6, 2)


@pytest.mark.parametrize(
    "first_call",
    ["ping", "load", "commit", "metrics", "conversations"],
)
async def test_a_6_0_server_is_refused_by_whichever_call_comes_first(first_call: str) -> None:
    async with RespServer({"INFO": _info(redis_version="6.0.16", redis_mode="standalone")}) as old:
        async with RedisStore.from_url(old.url, client_options={"protocol": 2}) as store:
            calls: dict[str, Callable[[], Awaitable[object]]] = {
                "ping": store.ping,
                "load": lambda: store.load("s"),
                "commit": lambda: store.append("s", [u("x")]),
                "metrics": store.metrics,
                "conversations": lambda: store.conversations("ada"),
            }
            with pytest.raises(UnsupportedServer) as caught:
                await calls[first_call]()
            assert (caught.value.version, caught.value.required) == ("6.0.16", "6.2")
            assert "Redis 6.0.16" in str(caught.value) and "needs Redis 6.2" in str(caught.value)
            with pytest.raises(UnsupportedServer):  # and every call after it
                async with Session(store, "s") as s:
                    s.add(u("x"))
        sent = {c[0].upper() for c in old.seen}
        assert sent <= {b"INFO", b"CLIENT", b"SELECT", b"HELLO"}, sent  # no script, no PING


async def test_valkey_is_read_by_the_redis_version_it_reports() -> None:
    """Valkey 8 answers INFO with ``redis_version:7.2.4`` and ``valkey_version:8.x``."""
    info = _info(redis_version="7.2.4", server_name="valkey", valkey_version="8.1.8")
    async with RespServer({"INFO": info, "PING": b"+PONG\r\n", "LRANGE": b"*0\r\n"}) as valkey:
        async with RedisStore.from_url(valkey.url, client_options={"protocol": 2}) as store:
            await store.ping()
            assert await store.load("s") == []
    assert server_version({"redis_version": "7.2.4", "valkey_version": "8.1.8"}) == (
        (7, 2, 4),
        "7.2.4",
    )


async def test_the_version_is_read_once_per_store_not_per_turn(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    srv = spawn_server()
    with redis.Redis(port=srv.port) as r:
        r.config_resetstat()
    async with RedisStore.from_url(srv.url, prefix=prefix) as store:
        await store.ping()
        for i in range(5):
            async with Session(store, "s") as s:
                s.add(u(f"q{i}"))
        await store.metrics()
    with redis.Redis(port=srv.port) as r:
        calls = r.info("commandstats").get("cmdstat_info", {}).get("calls", 0)
    assert calls == 1  # the store's one INFO server (this INFO is counted after it runs)


async def test_the_servers_under_test_report_a_supported_version(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as r:
        info = r.info("server")
    found = server_version(info)
    assert found is not None and found[0] >= MINIMUM_SERVER, info.get("redis_version")
    if info.get("server_name") == "valkey":
        assert "valkey_version" in info


@pytest.fixture
def old_server() -> Iterator[int]:
    """``$PROMPTKIT_OLD_REDIS_SERVER`` (a redis-server older than 6.2, see .ci/servers)
    started on a free port."""
    binary = os.environ.get("PROMPTKIT_OLD_REDIS_SERVER")
    if not binary or not shutil.which(binary):
        pytest.skip("no old redis-server (set PROMPTKIT_OLD_REDIS_SERVER, see .ci/servers)")
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="promptkit-old-redis-")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port, socket_timeout=0.5, protocol=2) as r:
                    r.ping()
                break
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"{binary} did not start")
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(5)
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("protocol", [3, 2])
async def test_a_real_server_older_than_6_2_is_refused_before_any_script(
    old_server: int, prefix: str, protocol: int
) -> None:
    """redis-py 8 speaks RESP3 (HELLO 3), which a server older than 6.0 does not know:
    refused by that; with ``protocol=2`` the version it reports is read and refused."""
    with redis.Redis(port=old_server, protocol=2) as r:
        version = r.info("server")["redis_version"]
        r.config_resetstat()
    found = server_version({"redis_version": version})
    assert found is not None and found[0] < MINIMUM_SERVER
    says = rf"Redis {version} .* needs Redis 6\.2" if protocol == 2 else r"older than Redis 6\.0"
    url = f"redis://127.0.0.1:{old_server}/0"
    options = {"protocol": protocol}
    async with RedisStore.from_url(url, prefix=prefix, client_options=options) as store:
        with pytest.raises(UnsupportedServer, match=says) as caught:
            await store.ping()
        assert caught.value.required == "6.2"
        assert caught.value.version == (version if protocol == 2 else "older than 6.0")
        with pytest.raises(UnsupportedServer):
            async with Session(store, "s") as s:
                s.add(u("x"))
        with pytest.raises(UnsupportedServer):
            await store.metrics()
    with redis.Redis(port=old_server, protocol=2) as r:
        used = {name.removeprefix("cmdstat_") for name in r.info("commandstats")}
        assert not used & {"eval", "evalsha", "ping", "rpush", "lrange"}, used
