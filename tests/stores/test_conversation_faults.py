"""Conversation operations of several steps, cut between their steps or killed outright:
no ghost in the next listing, no half-written fork (real Redis, and a real Cluster)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import textwrap
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import RedisStore, Session, StoreError
from promptkit_async.stores._redis import _commit, _scripts

from ..conftest import through
from ..samples import a, u

if TYPE_CHECKING:
    from ..backends import RedisBackend
    from ..faults import FaultProxy


async def _turn(store: RedisStore, session_id: str, owner: str = "ada") -> None:
    async with Session(store, session_id, owner=owner) as s:
        s.add(u(f"q {session_id}"), a("a"))
    await asyncio.sleep(0.003)


async def _listed(store: RedisStore, owner: str = "ada") -> list[str]:
    return [i.id for i in (await store.conversations(owner, limit=100)).items]


async def test_a_delete_cut_before_its_listing_step_leaves_no_ghost(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix, retries=0) as store:
        await _turn(store, "kept")
        await _turn(store, "doomed")
        proxy.drop_request(_scripts.UNLIST.sha.encode())  # the step after the delete
        assert await store.delete("doomed") is True  # done, whatever became of the listing
    raw = await truth.client.execute_command("ZRANGE", f"{prefix}:owner:{{ada}}", 0, -1)
    assert b"doomed" in raw  # the ghost is there...
    assert await _listed(truth) == ["kept"]  # ...and the next listing drops it
    raw = await truth.client.execute_command("ZRANGE", f"{prefix}:owner:{{ada}}", 0, -1)
    assert raw == [b"kept"]


@pytest.mark.parametrize("cut", ["read", "write", "write reply"])
async def test_a_fork_cut_anywhere_is_whole_or_absent(
    proxy: FaultProxy, redis_url: str, prefix: str, truth: RedisStore, cut: str
) -> None:
    async with RedisStore.from_url(through(proxy, redis_url), prefix=prefix, retries=0) as store:
        await _turn(store, "source")
        if cut == "read":
            proxy.drop_request(_scripts.FORK_READ.sha.encode())
        elif cut == "write":
            proxy.drop_request(_scripts.RESTORE.sha.encode())
        else:
            # Loaded first: on a server that has not seen it, the reply dropped would
            # be EVALSHA's NOSCRIPT, and the EVAL after it would not match.
            await truth.client.script_load(_scripts.RESTORE.source)
            proxy.drop_reply(_scripts.RESTORE.sha.encode())
        with pytest.raises(StoreError):
            await store.fork("source", "copy")
    copied = await truth.load("copy")
    if cut == "write reply":  # it ran; only its reply was lost
        assert copied == await truth.load("source")
        assert sorted(await _listed(truth)) == ["copy", "source"]
    else:
        assert copied == [] and not await truth.exists("copy")
        assert await _listed(truth) == ["source"]


async def test_a_cluster_commit_whose_listing_step_ran_alone_leaves_no_ghost(
    redis_backend: RedisBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = redis_backend.redis
    await _turn(store, "real")

    class Cut(ConnectionError):
        pass

    async def commit_never_runs(client: Any, keys: Any, args: Any) -> Any:
        raise Cut("connection cut before the commit")

    # The listing step (beside the commit on a Cluster, inside it elsewhere) ran;
    # the commit itself never did.
    if store.cluster:
        monkeypatch.setattr(_commit, "COMMIT", commit_never_runs)
        with pytest.raises(Exception):  # noqa: B017 - whatever the mapping, nothing was written
            await _turn(store, "phantom")
        monkeypatch.undo()
        listing = f"{store.prefix}:owner:{{ada}}"
        assert b"phantom" in await redis_backend.client.zrange(listing, 0, -1)
    assert not await store.exists("phantom")
    assert await _listed(store) == ["real"]


_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from promptkit_async import Message, RedisStore, Session

    async def main():
        url, prefix = sys.argv[1], sys.argv[2]
        async with RedisStore.from_url(url, prefix=prefix) as store:
            print("ready", flush=True)
            i = 0
            while True:
                i += 1
                async with Session(store, f"c{i % 7}", owner="ada") as s:
                    s.add(Message.user(f"q{i}"), Message.assistant(f"a{i}"))
                if i % 3 == 0:
                    try:
                        await store.fork(f"c{i % 7}", f"f{i % 5}", replace=True)
                    except Exception:
                        pass
                if i % 4 == 0:
                    await store.delete(f"c{(i + 3) % 7}")

    asyncio.run(main())
    """
)


async def test_a_process_killed_mid_operations_leaves_no_ghost_and_no_half_fork(
    redis_url: str, prefix: str, truth: RedisStore
) -> None:
    seed = int.from_bytes(os.urandom(2), "big")
    for round_ in range(6):
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _CHILD, redis_url, prefix, stdout=asyncio.subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            assert (await asyncio.wait_for(child.stdout.readline(), 30)).strip() == b"ready"
            await asyncio.sleep(0.05 + ((seed + round_ * 37) % 100) / 400)
        finally:
            child.send_signal(signal.SIGKILL)
            await child.wait()
        listed = await truth.conversations("ada", limit=100)
        ids = [i.id for i in listed.items]
        for info in listed.items:
            kept = await truth.load(info.id)
            assert kept, f"ghost {info.id!r} listed after round {round_}"
            # Every turn is whole: a user message, then its answer.
            assert [m.role for m in kept] == ["user", "assistant"] * (len(kept) // 2)
            assert info.message_count == len(kept)
        for i in range(5):  # a fork is whole or absent
            fork = await truth.load(f"f{i}")
            assert len(fork) % 2 == 0
            if fork:
                assert f"f{i}" in ids
