"""The live-session index kept per slot: exact counts, the registry of slots, an older
version's single index folded in, and the repairs (see stores/_redis/_index.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
from redis.crc import key_slot

from promptkit_async import RedisStore, Session
from promptkit_async.stores._redis import _index, _keys, _scripts

from ..samples import u

if TYPE_CHECKING:
    from ..backends import RedisBackend


def _indexed(backend: RedisBackend) -> RedisStore:
    if backend.redis.cluster:
        pytest.skip("a Cluster counts sessions with SCAN: no index")
    return backend.redis


async def _slot_index(backend: RedisBackend, session_id: str) -> dict[bytes, float]:
    store = backend.redis
    key = _keys.slot_index_key(store.prefix, key_slot(store.key(session_id)))
    pairs: Any = await backend.client.zrange(key, 0, -1, withscores=True)
    return dict(pairs)


def test_every_slot_has_a_four_letter_tag_that_hashes_to_it() -> None:
    tags = set()
    for slot in range(_keys.SLOTS):
        key = _keys.slot_index_key("pk", slot)
        assert key_slot(key) == slot
        tag = _keys.slot_tag(slot)
        assert len(tag) == 4 and all("@" <= c <= "O" for c in tag)
        tags.add(tag)
    assert len(tags) == _keys.SLOTS
    # The slot of a session's keys is read from its encoded id alone.
    for sid in ("a", "user-42", "x{y}z", "%7B"):
        assert _keys.slot_of(_keys.encode_id(sid)) == key_slot(_keys.key("pk", sid, "h"))


async def test_a_commit_indexes_its_session_in_its_own_slot(redis_backend: RedisBackend) -> None:
    store = _indexed(redis_backend)
    client = redis_backend.client
    before = time.time() * 1000
    await store.append("s", [u("x")], ttl=100)
    entries = await _slot_index(redis_backend, "s")
    assert list(entries) == [_keys.encode_id("s").encode()]
    assert before + 99_000 < entries[b"s"] < time.time() * 1000 + 101_000
    # Its slot is listed in the registry until at least then; the old single index is
    # never written.
    listed: Any = await client.zrange(_keys.slot_registry_key(store.prefix), 0, -1, withscores=True)
    registry = dict(listed)
    slot = str(key_slot(store.key("s"))).encode()
    assert registry[slot] >= entries[b"s"]
    assert not await client.exists(_keys.legacy_index_key(store.prefix))
    # Deleting drops the entry (and the slot's index with its last member).
    await store.delete("s")
    assert await _slot_index(redis_backend, "s") == {}
    assert (await store.metrics()).active_sessions == 0


async def test_metrics_count_sessions_over_many_slots_exactly(redis_backend: RedisBackend) -> None:
    store = redis_backend.redis
    ids = [f"m{i}" for i in range(120)]
    for sid in ids:
        await store.append(sid, [u("x")] * (1 + len(sid) % 3))
    await store.append("forever", [u("x")], ttl=None)
    slots = {key_slot(store.key(sid)) for sid in ids}
    assert len(slots) > 100
    every = await store.metrics(sample=1000)
    assert (every.active_sessions, every.sampled, every.exact) == (121, 121, True)
    lengths = [1 + len(sid) % 3 for sid in ids] + [1]
    assert every.avg_history_size == pytest.approx(sum(lengths) / 121)
    some = await store.metrics(sample=40)
    assert (some.active_sessions, some.sampled, some.exact) == (121, 40, False)
    assert 1 <= some.avg_history_size <= 3
    await store.delete("forever")
    assert (await store.metrics()).active_sessions == 120


async def test_a_sample_is_drawn_from_every_slot_alike(redis_backend: RedisBackend) -> None:
    """Sessions of one size in few slots and of another in many: a uniform draw lands
    near the true mean, not near the mean of the slots."""
    store = _indexed(redis_backend)
    slot = key_slot(store.key("c0"))
    crowded = ["c0"]
    i = 0
    while len(crowded) < 6:  # six sessions in ONE slot, long histories
        i += 1
        if key_slot(store.key(f"c{i}")) == slot:
            crowded.append(f"c{i}")
    for sid in crowded:
        await store.append(sid, [u("x")] * 9)
    for i in range(54):  # many sessions in other slots, one message each
        await store.append(f"s{i}", [u("x")])
    true_mean = (6 * 9 + 54) / 60  # 1.8; a draw by slot would give about 1.15
    means = [(await store.metrics(sample=30)).avg_history_size for _ in range(8)]
    assert abs(sum(means) / len(means) - true_mean) < 0.4


async def test_an_older_versions_single_index_is_folded_in(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sessions written by a version that kept one ``<prefix>:index``: read, counted,
    and their entries moved to their slots' indexes, a batch at a time."""
    store = _indexed(redis_backend)
    client = redis_backend.client
    prefix = store.prefix
    monkeypatch.setattr(_index, "_LEGACY_BATCH", 7)  # several batches
    now = time.time() * 1000
    old = [f"old{i}" for i in range(20)]
    for sid in old:
        await _write_as_the_old_version(redis_backend, sid)
    legacy = _keys.legacy_index_key(prefix)
    members: dict[str, float] = dict.fromkeys(old, now + 3_600_000)
    members["old-forever"] = float("inf")
    await _write_as_the_old_version(redis_backend, "old-forever")
    members["gone"] = now + 3_600_000  # indexed, but its history is gone
    members["expired"] = now - 1_000  # indexed, expired
    await client.zadd(legacy, members)
    await client.pexpire(legacy, 3_600_000)
    # The old records load, and commits on them go on with their ids.
    assert [m.text for m in await store.load("old3")] == ["q", "r"]
    async with Session(store, "old3") as s:
        s.add(u("new"))
    assert [m.id for m in await store.load("old3")] == ["0", "1", "2"]
    await store.append("fresh", [u("x")])
    m = await store.metrics(sample=1000)
    assert (m.active_sessions, m.exact) == (22, True)  # 20 old, the forever one, fresh
    assert not await client.exists(legacy)
    entries = await _slot_index(redis_backend, "old-forever")
    assert entries[b"old-forever"] == float("inf")
    for sid in ("gone", "expired"):
        assert sid.encode() not in await _slot_index(redis_backend, sid)
    assert (await store.metrics()).active_sessions == 22


async def test_a_damaged_old_index_breaks_nothing(
    redis_backend: RedisBackend, caplog: pytest.LogCaptureFixture
) -> None:
    store = _indexed(redis_backend)
    client = redis_backend.client
    legacy = _keys.legacy_index_key(store.prefix)
    await client.set(legacy, b"not a sorted set")
    await store.append("s", [u("x")])
    with caplog.at_level(logging.WARNING, "promptkit_async.stores.redis"):
        assert (await store.metrics()).active_sessions == 1
        assert (await store.metrics()).active_sessions == 1
    said = [r for r in caplog.records if "not a sorted set" in r.getMessage()]
    assert len(said) == 1  # once per store
    assert await client.get(legacy) == b"not a sorted set"


async def test_a_lost_registry_is_rebuilt_by_the_next_writers(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _indexed(redis_backend)
    client = redis_backend.client
    monkeypatch.setattr(_index, "_REFRESH", 0.2)  # renewed every 0.2 s, not 15 min
    await store.append("a", [u("x")])
    await store.append("b", [u("x")])
    await client.delete(_keys.slot_registry_key(store.prefix))  # evicted, say
    assert (await store.metrics()).active_sessions == 0  # what the registry says now
    await store.append("b", [u("y")])  # registered a moment ago: not again yet
    assert (await store.metrics()).active_sessions == 0
    # Another process (its own record of what it registered) writes in a's slot...
    other = RedisStore(client, prefix=store.prefix)
    await other.append("a", [u("y")])
    assert (await store.metrics()).active_sessions == 1
    # ...and this one registers its slots again once the refresh window is past.
    await asyncio.sleep(0.25)
    await store.append("b", [u("z")])
    assert (await store.metrics()).active_sessions == 2


async def test_a_failed_registration_keeps_the_commit_and_is_tried_again(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = _indexed(redis_backend)

    class Cut(ConnectionError):
        pass

    real = _scripts.REGISTER.__class__.__call__
    calls: list[int] = []

    async def failing_once(self: Any, target: Any, keys: Any, args: Any) -> Any:
        if self is _scripts.REGISTER and not calls:
            calls.append(1)
            raise Cut("the registration was cut")
        return await real(self, target, keys, args)

    monkeypatch.setattr(_scripts.Script, "__call__", failing_once)
    with caplog.at_level(logging.WARNING, "promptkit_async.stores.redis"):
        await store.append("s", [u("x")])  # the commit stands
    assert any("not registered" in r.getMessage() for r in caplog.records)
    assert [m.text for m in await store.load("s")] == ["x"]
    assert (await store.metrics()).active_sessions == 0  # not listed yet
    await store.append("s", [u("y")])  # tried again with the next write there
    assert (await store.metrics()).active_sessions == 1


async def test_without_track_sessions_nothing_is_indexed(redis_backend: RedisBackend) -> None:
    store = _indexed(redis_backend)
    plain = RedisStore(redis_backend.client, prefix=store.prefix, track_sessions=False)
    await plain.append("s", [u("x")])
    assert await _slot_index(redis_backend, "s") == {}
    assert not await redis_backend.client.exists(_keys.slot_registry_key(store.prefix))
    assert (await plain.metrics()).active_sessions == 1  # counted by SCAN instead


async def _write_as_the_old_version(backend: RedisBackend, session_id: str) -> None:
    """A session's keys as the version with the single index left them (the same
    history, turns and meta layout: only the index moved)."""
    from promptkit_async import Message
    from promptkit_async._codec import encode_message, header

    store = backend.redis
    h, t, m = (store.key(session_id, kind) for kind in ("h", "t", "m"))
    now = int(time.time() * 1000)
    records = [
        header(now, str(i)) + encode_message(msg)
        for i, msg in enumerate([Message.user("q"), Message.assistant("r")])
    ]
    await backend.client.rpush(h, *records)
    await backend.client.zadd(t, {"#v": 1, "old-turn": 1})
    await backend.client.hset(
        m, mapping={"n": 2, "t": now, "c": now, "g": 0, "lt": "old-turn", "lf": 0, "lg": 0}
    )
    for key in (h, t, m):
        await backend.client.pexpire(key, 3_600_000)
