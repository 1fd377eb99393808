"""RedisStore set-up and round trips: clients, URLs, text clients, compression, lazy appends."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    CorruptHistory,
    Message,
    RedisStore,
    Session,
    StoreUnavailable,
    UnsupportedServer,
)
from promptkit_async.stores._redis._link import server_version

from ..conftest import free_port
from ..resp_server import RespServer
from ..samples import u


def unreachable() -> RedisStore:
    return RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5, socket_timeout=0.5, retries=0
    )


async def test_redis_unreachable_raises_store_unavailable_quickly() -> None:
    store = unreachable()
    async with store:
        with pytest.raises(StoreUnavailable) as info:
            async with Session(store, "x"):
                pass
        assert "unavailable" in str(info.value)
        assert len(store.locks) == 0


async def test_failed_save_on_a_real_server_carries_unsaved(redis_url: str, prefix: str) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix)
    async with store:
        async with Session(store, "ok") as s:
            s.add(Message.user("saved"))
        broken = unreachable()
        async with broken:
            with pytest.raises(StoreUnavailable) as info:
                await broken.append("ok", [Message.user("lost?")])
            assert info.value.unsaved == (Message.user("lost?"),)
        assert [m.content for m in await store.load("ok")] == ["saved"]
        await store.delete("ok")


async def test_from_url_rejects_bad_urls() -> None:
    with pytest.raises(ValueError, match="not a Redis URL"):
        RedisStore.from_url("http://user:secret@localhost")
    with pytest.raises(ValueError) as info:
        RedisStore.from_url("ftp://user:hunter2@host")
    assert "hunter2" not in str(info.value)


def test_redis_store_rejects_decoded_clients() -> None:
    import redis.asyncio as aioredis

    with pytest.raises(ValueError, match="decode_responses=False"):
        RedisStore(aioredis.Redis(decode_responses=True), compress_above=100)
    with pytest.raises(TypeError):
        RedisStore("redis://localhost")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="braces"):
        RedisStore(aioredis.Redis(), prefix="a{b}")


async def test_borrowed_client_is_left_open(redis_url: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url)
    async with RedisStore(client):
        pass
    assert await client.ping()
    await client.aclose()


async def test_a_client_with_decode_responses_works(redis_url: str, prefix: str) -> None:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    store = RedisStore(client, prefix=prefix, near_cache=10)
    try:
        for i in range(2):
            async with Session(store, "text:{1}", max_messages=3) as s:
                s.add(Message.user(f"q{i} é"), Message.assistant(f"a{i}"))
        assert [m.content for m in await store.load("text:{1}")] == ["q0 é", "a0", "q1 é", "a1"]
        assert [m.id for m in await store.load("text:{1}", 3)] == ["1", "2", "3"]
        async with Session(store, "text:{1}", max_messages=3) as s:
            assert len(s.history) == 3  # served by the near cache, revalidated
        assert await store.list_sessions("text:") == ["text:{1}"]
        assert (await store.metrics()).active_sessions == 1
        assert await store.delete("text:{1}")
    finally:
        await client.delete(f"{prefix}:index")
        await store.aclose()
        await client.aclose()


async def test_compressed_records_through_a_text_client_are_a_clear_error(
    redis_url: str, prefix: str
) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    text = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await RedisStore(raw, prefix=prefix, compress_above=16).append(
            "z", [Message.user("compress me " * 20)]
        )
        with pytest.raises(CorruptHistory, match="decode_responses=True"):
            await RedisStore(text, prefix=prefix).load("z")
    finally:
        await RedisStore(raw, prefix=prefix).delete("z")
        await raw.delete(f"{prefix}:index")
        await raw.aclose()
        await text.aclose()


async def test_compression_is_transparent_on_redis(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    zipped = RedisStore(client, prefix=prefix, compress_above=256)
    plain = RedisStore(client, prefix=prefix)
    big = u("the same words again and again " * 200)
    small = u("short")
    try:
        await zipped.append("z", [big, small])
        first, second = await client.lrange(zipped.key("z"), 0, -1)
        assert isinstance(first, bytes) and isinstance(second, bytes)
        first, second = first.partition(b"\n")[2], second.partition(b"\n")[2]
        assert first.startswith(b"\x00z") and len(first) < len(big.content) // 4
        assert second.startswith(b"{")
        await plain.append("z", [big])
        assert await plain.load("z") == [big, small, big]  # read whatever the setting
        assert await zipped.load("z") == [big, small, big]
    finally:
        await client.delete(zipped.key("z"), zipped.key("z", "t"), f"{prefix}:index")
        await client.aclose()


async def test_lazy_append_is_one_round_trip(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix)
    sent: list[bytes | str] = []
    real: Any = client.execute_command

    async def spy(*args: Any, **kwargs: Any) -> Any:
        sent.append(args[0])
        return await real(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", spy)
    try:
        await store.append("lazy", [u("old")])
        sent.clear()
        async with Session(store, "lazy", lazy=True) as s:
            s.add(Message.system("user logged in"))
        assert sent == ["EVALSHA"]
        sent.clear()
        async with Session(store, "lazy") as s:
            s.add(u("eager"))
        assert sent == ["LRANGE", "EVALSHA"]
        assert len(await store.load("lazy")) == 3
    finally:
        await store.delete("lazy")
        await client.delete(f"{prefix}:index")
        await client.aclose()


def _info(version: str) -> bytes:
    body = f"# Server\r\nredis_version:{version}\r\nredis_mode:standalone\r\n".encode()
    return b"$%d\r\n%s\r\n" % (len(body), body)


async def test_a_server_older_than_supported_is_refused_at_first_use_by_name() -> None:
    async with RespServer({"INFO": _info("5.0.7")}) as old:
        async with RedisStore.from_url(old.url, client_options={"protocol": 2}) as store:
            with pytest.raises(UnsupportedServer, match=r"Redis 5\.0\.7 .* needs Redis 6\.2") as e:
                await store.append("s", [u("x")])
            assert (e.value.version, e.value.required) == ("5.0.7", "6.2")
            with pytest.raises(UnsupportedServer):
                await store.load("s")
        # Nothing but the version check was sent: no script ran on the old server.
        assert {c[0].upper() for c in old.seen} <= {b"INFO", b"CLIENT", b"SELECT"}


async def test_a_server_that_hides_its_version_is_trusted() -> None:
    replies = {"INFO": b"-NOPERM this user has no permissions to run the 'info' command\r\n"}
    async with RespServer({**replies, "LRANGE": b"*0\r\n"}) as locked_down:
        async with RedisStore.from_url(locked_down.url, client_options={"protocol": 2}) as store:
            assert await store.load("s") == []
            assert await store.load("s") == []
        assert [c[0] for c in locked_down.seen].count(b"INFO") == 1


def test_server_versions_are_read_from_one_node_or_the_oldest_of_a_cluster() -> None:
    assert server_version({"redis_version": "7.0.15"}) == ((7, 0, 15), "7.0.15")
    cluster = {"n1:7000": {"redis_version": "7.2.4"}, "n2:7001": {"redis_version": "6.2.14"}}
    assert server_version(cluster) == ((6, 2, 14), "6.2.14")
    assert server_version({"something": "else"}) is None
