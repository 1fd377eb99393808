"""The ACL a promptkit_async user needs, exactly: every feature works through a user
with this rule (keys restricted to the store's prefix), and without each part of it
the store fails with a typed error that says what was refused."""

from __future__ import annotations

import asyncio
import subprocess
from typing import TYPE_CHECKING

import pytest
import redis

from promptkit_async import RedisStore, Session, StoreError, StoreRejected

from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from ..conftest import RedisServer

pytestmark = pytest.mark.redis

#: The rule of the operating notes (with ``~<prefix>:*`` as its key pattern). The
#: command parts in the order they are dropped one at a time below.
NEEDED = ("+@read", "+@write", "+eval|+evalsha", "+ping", "+time")
#: Optional: without +info the server's version is trusted instead of checked;
#: without the CLIENT subcommands the near cache checks every load in Redis.
TRACKING = ("+client|tracking", "+client|id", "+client|setname", "+client|list")
RULE = (
    "-@all",
    *NEEDED[:2],
    "-@dangerous",
    "+eval",
    "+evalsha",
    "+ping",
    "+time",
    "+info",
    *TRACKING,
)


def rule_for(prefix: str, *, without: str = "", keys: str = "") -> list[str]:
    dropped = set(without.split("|")) if without else set()
    parts = [p for p in RULE if p not in dropped]
    return ["reset", "on", ">secret", f"~{keys or prefix}:*", "resetchannels", *parts]


@pytest.fixture(scope="module")
def acl_server() -> Iterator[RedisServer]:
    from ..conftest import RedisServer, skip_or_fail

    server = RedisServer()
    try:
        server.start()
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        skip_or_fail(f"NO REDIS SERVER to spawn ({exc}); the ACL rule is untested")
    try:
        yield server
    finally:
        server.stop()


def _user(server: RedisServer, name: str, rule: list[str]) -> str:
    with redis.Redis(port=server.port, protocol=2) as admin:
        admin.execute_command("ACL", "SETUSER", name, *rule)
    return f"redis://{name}:secret@127.0.0.1:{server.port}/0"


async def exercise(store: RedisStore) -> None:
    """Every feature: turns under leases, history, the near cache, listing, metrics,
    info, fork, truncate, restore, erasure."""
    await store.ping()
    for sid in ("c1", "c2"):
        for i in range(2):
            async with Session(store, sid, owner="ada") as s:
                s.add(u(f"q{i} {sid}"), a(f"r{i}"))
    assert [m.text for m in await store.load("c1", limit=2)] == ["q1 c1", "r1"]
    page = await store.load("c1", limit=1, before="2")
    assert [m.text for m in page] == ["r0"]
    assert await store.count("c1") == 4
    listed = await store.conversations("ada", limit=1)
    assert len(listed.items) == 1 and listed.next_cursor is not None
    await store.conversations("ada", limit=1, cursor=listed.next_cursor)
    assert {sid async for sid in store.sessions("c")} == {"c1", "c2"}
    m = await store.metrics()
    assert (m.active_sessions, m.exact) == (2, True) and m.storage_used > 0
    assert await store.update_info("c1", title="Trip")
    assert (await store.info("c1", owner="ada")) is not None
    await store.fork("c1", "c3", upto="1")
    await store.truncate("c3", after="0")
    await store.restore("imported", await store.load("c2"))
    assert await store.ttl("c1") is not None and await store.exists("c1")
    assert await store.delete("imported")
    assert await store.delete_owner("ada") == 3
    assert (await store.metrics()).active_sessions == 0


async def test_the_rule_is_enough_for_every_feature(acl_server: RedisServer, prefix: str) -> None:
    url = _user(acl_server, "promptkit", rule_for(prefix))
    for options in ({"distributed_lock": True}, {"near_cache": 100}):
        async with RedisStore.from_url(url, prefix=prefix, **options) as store:
            await exercise(store)
            if options.get("near_cache"):
                await _until(lambda: store.tracking)  # invalidations through this user
    with redis.Redis(port=acl_server.port, protocol=2) as admin:
        # Nothing was refused on the way but redis-py's CLIENT SETINFO, which names the
        # connection and whose refusal redis-py ignores (on 7.2+ and Valkey the rule
        # may add +client|setinfo; 7.0 does not know it).
        refused = [
            e
            for e in admin.acl_log()
            if e.get("username") == "promptkit" and not str(e.get("object")).startswith("client")
        ]
        assert refused == [], refused[:3]
        admin.acl_log_reset()


@pytest.mark.parametrize("part", NEEDED)
async def test_without_each_part_the_store_fails_with_a_typed_error(
    acl_server: RedisServer, prefix: str, part: str
) -> None:
    name = "pk-" + part.strip("+@").replace("|+", "-")
    url = _user(acl_server, name, rule_for(prefix, without=part))
    async with RedisStore.from_url(url, prefix=prefix, distributed_lock=True) as store:
        with pytest.raises(StoreError) as caught:
            await exercise(store)
    assert isinstance(caught.value, StoreRejected), repr(caught.value)
    text = str(caught.value)
    assert "no permissions" in text or "can't run this command" in text, text
    assert isinstance(caught.value.__cause__, redis.ResponseError)


async def test_keys_outside_the_pattern_are_refused_by_name(
    acl_server: RedisServer, prefix: str
) -> None:
    url = _user(acl_server, "pk-elsewhere", rule_for(prefix, keys=prefix + "-other"))
    async with RedisStore.from_url(url, prefix=prefix) as store:
        with pytest.raises(StoreRejected, match="key"):
            await store.load("s")
        with pytest.raises(StoreRejected) as caught:
            await store.append("s", [u("x")])
        assert caught.value.unsaved == (u("x"),)  # refused, so not saved


async def test_without_info_the_server_is_trusted(acl_server: RedisServer, prefix: str) -> None:
    url = _user(acl_server, "pk-noinfo", rule_for(prefix, without="+info"))
    async with RedisStore.from_url(url, prefix=prefix) as store:
        await exercise(store)


async def _until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_without_the_client_subcommands_the_near_cache_checks_every_load(
    acl_server: RedisServer, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    rule = [p for p in rule_for(prefix) if p not in TRACKING]
    url = _user(acl_server, "pk-no-tracking", rule)
    async with RedisStore.from_url(url, prefix=prefix, near_cache=10) as store:
        for i in range(4):
            async with Session(store, "s") as s:
                s.add(u(f"m{i}"))
            await asyncio.sleep(0.05)
        assert not store.tracking
        assert [m.content for m in await store.load("s")] == ["m0", "m1", "m2", "m3"]
    assert "server-assisted invalidation is off" in caplog.text
