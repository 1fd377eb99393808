"""Strict scripting: the checks of tests/strict.py catch what they exist for, and the
store's scripts pass them (the contract suite runs on the ``strict`` backend too)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import redis
import redis.asyncio as aioredis
from redis.crc import key_slot

import promptkit_async
from promptkit_async import RedisStore, Session
from promptkit_async.stores._redis import _keys, _scripts

from ..samples import a, u
from ..strict import _FIRST_KEY, STRICT_SCRIPTS, StrictScriptViolation, guarded, strict_scripts

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from ..strict import StrictServer

pytestmark = pytest.mark.redis

#: These compare a guarded run with an unguarded one, which a run that guards every
#: script (PROMPTKIT_STRICT_SCRIPTS=1) has not.
compares = pytest.mark.skipif(STRICT_SCRIPTS, reason="every script of this run is guarded")


def _two_slots(prefix: str) -> tuple[bytes, bytes]:
    """Two keys of the schema in different slots: a session's history and another's."""
    first = _keys.key(prefix, "a", _keys.HISTORY)
    for i in range(100):
        other = _keys.key(prefix, f"b{i}", _keys.HISTORY)
        if key_slot(other) != key_slot(first):
            return first, other
    raise AssertionError("unreachable")  # pragma: no cover


@pytest.fixture
async def strict_client(strict_server: StrictServer, prefix: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(strict_server.url)
    try:
        yield client
    finally:
        async for k in client.scan_iter(match=f"{prefix}*"):
            await client.delete(k)
        await client.aclose()


def test_the_guard_knows_every_command_the_scripts_send() -> None:
    """A command added to a script of the package (any module) without teaching the
    guard its keys fails here, not only when that script first runs guarded."""
    known = {*_FIRST_KEY, "DEL", "EXISTS", "UNLINK", "TIME", "MEMORY", "ZUNIONSTORE"}
    package = Path(promptkit_async.__file__).parent
    used: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        source = path.read_text()
        for name in re.findall(r"redis\.p?call\('([A-Za-z]+)'", source):
            used.setdefault(name.upper(), set()).add(path.name)
        # Every call names its command literally, so the guard's table is checkable.
        assert not re.search(r"redis\.p?call\([^']", source), path
    assert "ZADD" in used and "TIME" in used
    unknown = {name: files for name, files in used.items() if name not in known}
    assert not unknown, unknown


@compares
async def test_an_undeclared_key_is_refused_by_the_guard(
    strict_client: aioredis.Redis, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    declared, _ = _two_slots(prefix)
    undeclared = declared[:-1] + b"m"  # the same slot, but not in KEYS
    # Scripts of the store's own module, as the guard finds them.
    sneaky = _scripts.Script(b"return redis.call('GET', KEYS[1] .. 'x') or 1")
    honest = _scripts.Script(b"redis.call('SET', KEYS[1], 'v'); return redis.call('GET', KEYS[1])")
    monkeypatch.setattr(_scripts, "SNEAKY", sneaky, raising=False)
    monkeypatch.setattr(_scripts, "HONEST", honest, raising=False)
    assert await sneaky(strict_client, (declared,), ()) == 1  # unguarded, it gets through
    with strict_scripts():
        assert await honest(strict_client, (undeclared,), ()) == b"v"
        with pytest.raises(StrictScriptViolation, match="not in KEYS"):
            await sneaky(strict_client, (declared,), ())


@compares
async def test_keys_of_two_slots_are_refused_before_sending_and_by_the_server(
    strict_client: aioredis.Redis, prefix: str
) -> None:
    one, other = _two_slots(prefix)
    both = _scripts.Script(b"return redis.call('EXISTS', KEYS[1], KEYS[2])")
    with strict_scripts(), pytest.raises(StrictScriptViolation, match="slots"):
        await both(strict_client, (one, other), ())
    # The server itself (cluster-enabled, serving every slot) refuses it to a plain client.
    with pytest.raises(redis.ResponseError, match="same slot"):
        await both(strict_client, (one, other), ())


@compares
async def test_the_old_layouts_commit_is_what_the_strict_server_refuses(
    strict_client: aioredis.Redis, prefix: str
) -> None:
    """The single ``<prefix>:index`` and the owner's listing, written beside a session's
    keys in one script, as the older versions did: CROSSSLOT behind a Cluster proxy."""
    history = _keys.key(prefix, "s", _keys.HISTORY)
    for beside in (_keys.legacy_index_key(prefix), _keys.owner_key(prefix, "ada")):
        assert key_slot(beside) != key_slot(history)
        script = _scripts.Script(b"redis.call('RPUSH', KEYS[1], 'x'); return 1")
        with pytest.raises(redis.ResponseError, match="same slot"):
            await script(strict_client, (history, beside), ())


async def test_the_servers_own_check_refuses_an_undeclared_key_of_another_slot(
    strict_server: StrictServer, strict_client: aioredis.Redis, prefix: str
) -> None:
    """Redis 7+ and Valkey: a ``#!lua`` script without allow-cross-slot-keys may touch no
    key of another slot than its KEYS', declared or not (the guard aside)."""
    if not strict_server.shebang:
        pytest.skip(f"server {strict_server.version} has no script flags (7.0+)")
    one, other = _two_slots(prefix)
    source = "#!lua\nreturn redis.call('GET', ARGV[1])"
    with pytest.raises(redis.ResponseError, match="same slot"):
        await strict_client.eval(source, 1, one, other)
    # ...while the same script without the shebang is let through (compatibility mode).
    assert await strict_client.eval(source.removeprefix("#!lua\n"), 1, one, other) is None


@compares
async def test_guarded_scripts_run_a_conversation_on_the_strict_server(
    strict_server: StrictServer, strict_client: aioredis.Redis, prefix: str
) -> None:
    """Turns, listing, metrics, fork, truncate and erasure through a plain client."""
    store = RedisStore(strict_client, prefix=prefix)
    with strict_scripts(shebang=strict_server.shebang):
        for sid in ("c1", "c2", "c3"):
            async with Session(store, sid, owner="ada") as s:
                s.add(u(f"q {sid}"), a("r"))
        page = await store.conversations("ada", limit=2)
        assert len(page.items) == 2 and page.next_cursor is not None
        rest = await store.conversations("ada", limit=2, cursor=page.next_cursor)
        assert {i.id for i in page.items + rest.items} == {"c1", "c2", "c3"}
        m = await store.metrics()
        assert (m.active_sessions, m.exact) == (3, True)
        await store.fork("c1", "c1-copy")
        await store.truncate("c1-copy", after="0")
        assert [m.text for m in await store.load("c1-copy")] == ["q c1"]
        assert await store.delete_owner("ada") == 4
        assert (await store.metrics()).active_sessions == 0
    # Everything ran guarded: the scripts are back as they were outside.
    scripts = [s for s in vars(_scripts).values() if isinstance(s, _scripts.Script)]
    assert scripts and all(b"__call(" not in s.source for s in scripts)


def test_the_guard_rewrites_every_call_and_keeps_the_script_whole() -> None:
    source = b"local x = redis.call('GET', KEYS[1])\nreturn redis.pcall('TIME')"
    out = guarded(source, shebang=True)
    assert out.startswith(b"#!lua\n")
    assert b"redis.call('GET'" not in out and b"__call('GET', KEYS[1])" in out
    assert b"__pcall('TIME')" in out
