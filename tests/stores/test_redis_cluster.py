"""RedisStore on a real 3-primary Redis Cluster: URLs, listing, and slot migrations.

The contract suite itself runs on the shared session cluster through the
``cluster`` store param (tests/conftest.py). Slot migrations change the
cluster's layout, so they run on a cluster of their own.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Any

import pytest
import redis
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from promptkit_async import (
    CommitOutcomeUnknown,
    RedisStore,
    Session,
    StoreUnavailable,
)

from ..cluster import ClusterServers, cluster_unavailable_reason
from ..conftest import contents, skip_or_fail
from ..samples import u

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

pytestmark = pytest.mark.redis


def ids_in_slot(store: RedisStore, slot: int, n: int, stem: str = "m") -> list[str]:
    """``n`` session ids whose keys live in ``slot``."""
    found = []
    for i in itertools.count():
        sid = f"{stem}{i}"
        if key_slot(store.key(sid)) == slot:
            found.append(sid)
            if len(found) == n:
                return found
    raise AssertionError("unreachable")  # pragma: no cover


async def test_from_url_with_the_cluster_scheme(redis_cluster: ClusterServers, prefix: str) -> None:
    url = f"redis+cluster://127.0.0.1:{redis_cluster.ports[1]}"
    async with RedisStore.from_url(url, prefix=prefix) as store:
        assert store.cluster
        assert isinstance(store.client, RedisCluster)
        assert "cluster=True" in repr(store)
        for i in range(3):
            async with Session(store, "user-1") as s:
                s.add(u(f"q{i}"))
        assert await contents(store, "user-1") == ["q0", "q1", "q2"]
        assert await store.delete("user-1")


async def test_listing_and_delete_prefix_cover_every_primary(
    redis_cluster: ClusterServers, prefix: str
) -> None:
    async with RedisStore.from_url(
        f"redis+cluster://127.0.0.1:{redis_cluster.ports[0]}", prefix=prefix
    ) as store:
        per_node: dict[int, list[str]] = {p: [] for p in redis_cluster.ports}
        for i in range(200):
            sid = f"user-7-conv-{i}"
            per_node[redis_cluster.owner(key_slot(store.key(sid)))].append(sid)
            if all(len(v) >= 3 for v in per_node.values()):
                break
        ids = [sid for sids in per_node.values() for sid in sids]
        assert all(per_node.values()), per_node  # sessions on every primary
        for sid in ids:
            await store.append(sid, [u(sid)])
        await store.append("user-70", [u("other user")])
        listed = [s async for s in store.sessions("user-7-")]
        assert sorted(listed) == sorted(ids)
        assert await store.delete_prefix("user-7-") == len(ids)
        for port, sids in per_node.items():
            with redis.Redis(port=port) as node:
                left = [k for k in node.scan_iter(match=f"{prefix}:*") if b"user-7-" in k]
                assert left == [], (port, sids)
        assert await contents(store, "user-70") == ["other user"]
        await store.delete("user-70")


# -- slot migration ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[ClusterServers]:
    """A cluster whose slots the tests move around."""
    missing = cluster_unavailable_reason()
    if missing is not None:
        skip_or_fail(f"NO REDIS CLUSTER: {missing}; slot migration is untested")
    cluster = ClusterServers(3)
    try:
        cluster.start()
    except (RuntimeError, OSError) as exc:
        skip_or_fail(f"NO REDIS CLUSTER: could not start one ({exc})")
    try:
        yield cluster
    finally:
        cluster.stop()


class SlotMove:
    """Move one slot between primaries by hand, step by step (what a reshard does)."""

    def __init__(self, cluster: ClusterServers, slot: int) -> None:
        self.cluster = cluster
        self.slot = slot
        self.src = cluster.owner(slot)
        self.dst = next(p for p in cluster.ports if p != self.src)
        self.src_id = cluster.node_id(self.src)
        self.dst_id = cluster.node_id(self.dst)

    def _node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=5)

    def begin(self) -> None:
        with self._node(self.dst) as dst:
            dst.execute_command("CLUSTER", "SETSLOT", self.slot, "IMPORTING", self.src_id)
        with self._node(self.src) as src:
            src.execute_command("CLUSTER", "SETSLOT", self.slot, "MIGRATING", self.dst_id)

    def migrate_keys(self, batch: int = 100) -> int:
        moved = 0
        with self._node(self.src) as src:
            for _ in range(10_000):
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", self.slot, batch)
                if not keys:
                    return moved
                src.execute_command(
                    "MIGRATE", "127.0.0.1", self.dst, "", 0, 5000, "REPLACE", "KEYS", *keys
                )
                moved += len(keys)
        raise AssertionError("keys kept appearing in the slot")

    def finish(self) -> None:
        for port in (self.dst, self.src, *self.cluster.ports):
            with self._node(port) as node:
                node.execute_command("CLUSTER", "SETSLOT", self.slot, "NODE", self.dst_id)
        self.cluster.wait_ok()


async def test_commits_at_every_step_of_a_slot_migration_land_exactly_once(
    own_cluster: ClusterServers, prefix: str
) -> None:
    client = RedisCluster(host="127.0.0.1", port=own_cluster.ports[0])
    try:
        store = RedisStore(client, prefix=prefix)
        old, new = ids_in_slot(store, key_slot(store.key("anchor")), 2, stem="anchor")
        slot = key_slot(store.key(old))
        await store.append(old, [u("before")], max_messages=None)
        move = SlotMove(own_cluster, slot)

        move.begin()  # MIGRATING / IMPORTING: the keys are still on the source
        await store.append(old, [u("migrating")], max_messages=None)
        assert await contents(store, old) == ["before", "migrating"]

        assert move.migrate_keys() >= 2  # keys on the target, slot still migrating: ASK
        await store.append(old, [u("asked")], max_messages=None)
        assert await contents(store, old) == ["before", "migrating", "asked"]
        # A session with no keys yet, mid-migration: Redis answers TRYAGAIN to a
        # multi-key script until the move ends. Not saved, and it says so.
        try:
            await store.append(new, [u("first")], max_messages=None, turn_id="first")
        except StoreUnavailable as exc:
            assert not isinstance(exc, CommitOutcomeUnknown)
            assert exc.unsaved == (u("first"),)
            first_saved = False
        else:
            first_saved = True

        move.finish()  # the client's slot map is now stale: MOVED
        await store.append(old, [u("moved")], max_messages=None)
        await store.append(new, [u("first")], max_messages=None, turn_id="first")
        assert await contents(store, old) == ["before", "migrating", "asked", "moved"]
        assert await contents(store, new) == ["first"]
        assert first_saved in (True, False)
        assert own_cluster.owner(slot) == move.dst
    finally:
        await client.aclose()


async def test_concurrent_turns_during_a_slot_migration_lose_and_duplicate_nothing(
    own_cluster: ClusterServers, prefix: str
) -> None:
    client = RedisCluster(host="127.0.0.1", port=own_cluster.ports[0])
    try:
        store = RedisStore(client, prefix=prefix)
        sids = ids_in_slot(store, key_slot(store.key("hot")), 4, stem="hot")
        slot = key_slot(store.key(sids[0]))
        acked: dict[str, list[str]] = {sid: [] for sid in sids}
        failed: set[str] = set()
        unknown: set[str] = set()
        stop = asyncio.Event()

        async def writer(sid: str) -> None:
            for i in range(100_000):
                if stop.is_set():
                    return
                turn = f"{sid}-{i}"
                try:
                    async with Session(store, sid, max_messages=None, lazy=True) as s:
                        s.add(u(turn))
                except CommitOutcomeUnknown:
                    unknown.add(turn)
                except StoreUnavailable:
                    failed.add(turn)
                else:
                    acked[sid].append(turn)
                await asyncio.sleep(0)

        for sid in sids:
            await store.append(sid, [u("seed")], max_messages=None)
        tasks = [asyncio.create_task(writer(sid)) for sid in sids]
        move = SlotMove(own_cluster, slot)
        steps: list[Callable[[], object]] = [move.begin, move.migrate_keys, move.finish]
        for step in steps:
            await asyncio.sleep(0.2)
            await asyncio.to_thread(step)
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        assert own_cluster.owner(slot) == move.dst
        for sid in sids:
            stored = (await contents(store, sid))[1:]
            assert [t for t in stored if t not in unknown] == acked[sid], sid
            assert len(stored) == len(set(stored)), sid  # nothing twice
            assert not set(stored) & failed
        assert sum(map(len, acked.values())) > 20
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    "error",
    [
        redis.exceptions.ClusterDownError("The cluster is down"),
        redis.exceptions.TryAgainError("Multiple keys request during rehashing of slot"),
        redis.exceptions.ReadOnlyError("You can't write against a read only replica."),
        redis.exceptions.ClusterError("TTL exhausted."),
        redis.exceptions.SlotNotCoveredError("Slot 42 is not covered by the cluster."),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_passing_cluster_states_are_store_unavailable(
    monkeypatch: pytest.MonkeyPatch, error: redis.RedisError
) -> None:
    """Down, resharding or failing over: 'try again later', never 'refused for good'."""
    import fakeredis

    client = fakeredis.FakeAsyncRedis()
    real: Callable[..., Awaitable[Any]] = client.execute_command
    failing = True

    async def flaky(*args: Any, **kwargs: Any) -> Any:
        if failing:
            raise error
        return await real(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", flaky)
    store = RedisStore(client)
    with pytest.raises(StoreUnavailable):
        await store.load("s")
    async with Session(store, "s", on_load_error="empty") as s:  # documented fallback
        assert s.history == ()
        s.add(u("x"))
        failing = False
    assert await contents(store, "s") == ["x"]
    failing = True
    with pytest.raises(StoreUnavailable) as info:
        await store.append("s", [u("y")])
    assert not isinstance(info.value, CommitOutcomeUnknown)
    assert info.value.unsaved == (u("y"),)
    await client.aclose()
