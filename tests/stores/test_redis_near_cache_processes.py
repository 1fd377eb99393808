"""The near cache across OS processes: server-assisted invalidation never loses a turn.

Two or three child processes (``tests/near_cache_worker.py``: each its own
asyncio loop and its own ``RedisStore.from_url(url, near_cache=100)``) take
turns on the same few sessions, each turn one ``Session(max_messages=20)``
block adding two messages of unique text and reporting the window it was
served. The parent checks, against what Redis holds afterwards:

- every message appended is stored exactly once, a turn's two side by side,
  in commit order;
- with ``distributed_lock``: every window is the session's newest 20
  messages at the moment of that turn (turns strictly serialised);
- without it: a window served after the process received another writer's
  invalidation (it waits for ``store.invalidations`` to grow) holds that
  writer's messages; any other window may be stale, but is a state the session
  really had (the newest messages of a prefix of its history);
- after a Redis restart or evictions, a load returns what Redis holds.

Coordinated runs pass a baton: the parent sends one turn at a time to one
child. Each process takes two turns in a row (the second served its own
commit's window, from memory), then the next one; the session changes every
few rounds (a block). A process's turn whose previous turn was in the same
block has only that session's writes between the two, so once the
invalidation of the first of them arrived its window must be the newest one.
Free runs let the children run turns concurrently; the commit order is then
read off the final histories.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import RedisStore

from ..conftest import through
from ..samples import a, u

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from ..conftest import RedisServer
    from ..faults import FaultProxy

pytestmark = [pytest.mark.redis, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WINDOW = 20  # the children's Session(max_messages=...)
REPLY_TIMEOUT = 60.0  # a deadline for one command of a child, not a measure


class Child:
    """One worker process, driven by JSON lines (see ``tests/near_cache_worker.py``)."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write((json.dumps({"op": op, **args}) + "\n").encode())
        await stdin.drain()
        line = await asyncio.wait_for(stdout.readline(), REPLY_TIMEOUT)
        if not line:
            raise AssertionError(f"{self.name} exited with {await self.proc.wait()}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    async def ok(self, op: str, **args: Any) -> dict[str, Any]:
        """``call``, failing the test if the command raised in the child."""
        reply = await self.call(op, **args)
        assert "error" not in reply, f"{self.name} {op} {args}: {reply['error']}"
        return reply

    async def close(self) -> None:
        proc = self.proc
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None and proc.stdout is not None
                proc.stdin.write(b'{"op": "quit"}\n')
                await proc.stdin.drain()
                await asyncio.wait_for(proc.stdout.readline(), 10)
                await asyncio.wait_for(proc.wait(), 10)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def children(n: int, url: str, prefix: str, *, lock: bool) -> AsyncIterator[list[Child]]:
    """``n`` worker processes on ``url``, each ready (and tracking, without the lease)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    kids: list[Child] = []
    try:
        for i in range(n):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.near_cache_worker",
                url,
                prefix,
                "1" if lock else "0",
                cwd=ROOT,
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            kids.append(Child(proc, f"process {i}"))
        for kid in kids:
            assert kid.proc.stdout is not None
            line = await asyncio.wait_for(kid.proc.stdout.readline(), REPLY_TIMEOUT)
            assert line, f"{kid.name} exited before it was ready"
            ready = json.loads(line)
            assert ready["ready"]
            # Without the lease the invalidation connection is live; with it there is none.
            assert ready["tracking"] is not lock, f"{kid.name}: {ready}"
        yield kids
    finally:
        await asyncio.gather(*(kid.close() for kid in kids))


@dataclass
class Turn:
    """What one turn was served and what it appended."""

    proc: int
    sid: str
    texts: list[str]
    window: list[str]
    exact: bool  # the window must be the session's newest messages


class Fence:
    """Waits until a child received the invalidations of every write made so far.

    The child loads a new session (its empty window now cached, tracked and
    trusted), the parent appends a message to it, and the child loads it until
    it is served that message: only the invalidation of that write makes the
    cached window untrusted, and Redis sends a connection's invalidations in
    the order of the writes, so every one before it has arrived too. (Were
    trust lost otherwise, a lost connection or a flush, it would be lost for
    every entry.) The child's ``store.invalidations`` must have grown.
    """

    def __init__(self, url: str, prefix: str) -> None:
        self.writer = RedisStore.from_url(url, prefix=prefix)
        self.count = 0

    async def __call__(self, kid: Child) -> None:
        self.count += 1
        sid = text = f"fence-{self.count}"
        assert (await kid.ok("load", sid=sid, limit=1))["window"] == []
        before = (await kid.ok("stats"))["inv"]
        await self.writer.append(sid, [u(text)])
        reply = await kid.ok("await", sid=sid, text=text)
        assert reply["ok"], f"{kid.name} was never served the fence's message"
        assert reply["inv"] > before, f"{kid.name} was served it with no invalidation"

    async def aclose(self) -> None:
        await self.writer.aclose()


async def alternate(
    kids: Sequence[Child],
    sessions: Sequence[str],
    *,
    blocks: int,
    lock: bool,
    tag: str,
    fence: Fence | None = None,
    block: int = 2,
    run: int = 2,
) -> list[Turn]:
    """Baton-passed turns: ``run`` in a row by each process in turn, ``block`` such
    rounds per session before the next session (a block).

    A process's turn right after its own is served its own commit's window
    (with tracking, from memory): ``exact``. With a ``fence`` (and no lease),
    every second turn after others' writes first waits behind the fence:
    ``exact`` too. The others may be stale.
    """
    count = len(kids)
    length = block * run * count
    schedule = [
        ((k // run) % count, sessions[(k // length) % len(sessions)])
        for k in range(blocks * length)
    ]
    for kid in kids:  # every session's keys tracked by every process to begin with
        for sid in sessions:
            await kid.ok("load", sid=sid, limit=WINDOW)
    done: list[Turn] = []
    previous: dict[int, int] = {}
    after_others = 0
    for k, (p, sid) in enumerate(schedule):
        before = previous.get(p)
        previous[p] = k
        fenced = False
        if before != k - 1:
            after_others += 1
            if fence is not None and not lock and after_others % 2:
                await fence(kids[p])
                fenced = True
        texts = [f"{tag}{k}:q", f"{tag}{k}:a"]
        reply = await kids[p].ok("turn", sid=sid, texts=texts)
        exact = lock or fenced or before == k - 1
        done.append(Turn(p, sid, texts, reply["window"], exact))
    return done


def _a_state_it_had(window: list[str], history: list[str]) -> bool:
    """``window`` is the newest messages of some prefix of ``history`` (maybe stale)."""
    return any(window == history[:j][-WINDOW:] for j in range(len(history) + 1))


def check_serial(
    turns: Sequence[Turn],
    final: dict[str, list[str]],
    start: dict[str, list[str]] | None = None,
) -> None:
    """Baton-passed turns against the final histories (``start``: what was there before)."""
    expected: dict[str, list[str]] = {k: list(v) for k, v in (start or {}).items()}
    exact = 0
    for i, t in enumerate(turns):
        history = expected.setdefault(t.sid, [])
        if t.exact:
            exact += 1
            assert t.window == history[-WINDOW:], (
                f"turn {i} ({t.sid}, process {t.proc}) was served {t.window}, "
                f"the session held {history[-WINDOW:]}"
            )
        else:
            assert _a_state_it_had(t.window, history), f"turn {i}: {t.window} never was"
        history.extend(t.texts)
    assert exact, "no turn was checked exactly"
    for sid, history in expected.items():
        assert final[sid] == history, f"{sid}: stored {final[sid]}, appended {history}"


async def free_run(
    kids: Sequence[Child], sessions: Sequence[str], turns: int, tag: str
) -> list[list[dict[str, Any]]]:
    """Every child runs ``turns`` turns at once with the others, on ``sessions``."""
    replies = await asyncio.gather(
        *(
            kid.ok("free", sids=list(sessions), turns=turns, tag=f"{tag}{i}", seed=i)
            for i, kid in enumerate(kids)
        )
    )
    return [r["turns"] for r in replies]


def check_free(
    records: Sequence[Sequence[dict[str, Any]]], final: dict[str, list[str]], *, lock: bool
) -> None:
    """Concurrent turns: each stored once, whole, each process's in its order; the windows
    the newest messages before the turn's own (with the lease) or a state the session had."""
    where: dict[str, tuple[str, int]] = {}
    for sid, history in final.items():
        for i, text in enumerate(history):
            assert text not in where, f"{text!r} stored twice"
            where[text] = (sid, i)
    total = 0
    for proc, recs in enumerate(records):
        last: dict[str, int] = {}
        for r in recs:
            total += 1
            q, ans = r["texts"]
            assert q in where and ans in where, f"process {proc}: turn {r['texts']} lost"
            sid, i = where[q]
            assert sid == r["sid"] and where[ans] == (sid, i + 1), f"turn {r['texts']} split"
            assert i > last.get(sid, -1), f"process {proc}: its turns out of order in {sid}"
            last[sid] = i
            before = final[sid][:i]
            if lock:
                assert r["window"] == before[-WINDOW:], (
                    f"{r['texts']} committed on a window older than {sid}'s version: "
                    f"served {r['window']}, the session held {before[-WINDOW:]}"
                )
            else:
                assert _a_state_it_had(r["window"], before), f"{r['window']} never was"
    assert sum(len(h) for h in final.values()) == 2 * total, "messages nobody appended"


async def histories(url: str, prefix: str, sessions: Sequence[str]) -> dict[str, list[str]]:
    """What Redis holds, read by a store with no near cache."""
    async with RedisStore.from_url(url, prefix=prefix) as store:
        return {sid: [m.text for m in await store.load(sid)] for sid in sessions}


async def _cleanup(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        async for k in client.scan_iter(match=f"{prefix}:*", count=1000):
            await client.delete(k)
    finally:
        await client.aclose()


# -- 1. two and three processes alternating ------------------------------------------


@pytest.mark.parametrize("lock", [False, True], ids=["plain", "distributed_lock"])
@pytest.mark.parametrize("count", [2, 3])
async def test_processes_alternating_turns(
    redis_url: str, prefix: str, count: int, lock: bool
) -> None:
    """Baton-passed turns on three sessions: every message stored once, in turn order;
    under the lease every window the newest; without it, every window after a fence
    the newest (the others states the session had)."""
    sessions = ["s0", "s1", "s2"]
    fence = Fence(redis_url, prefix)
    try:
        async with children(count, redis_url, prefix, lock=lock) as kids:
            turns = await alternate(kids, sessions, blocks=4, lock=lock, tag="t", fence=fence)
            stats = [await kid.ok("stats") for kid in kids]
        check_serial(turns, await histories(redis_url, prefix, sessions))
        assert fence.count or lock
        for s in stats:
            assert s["tracking"] is not lock
            assert s["hits"] > 0  # windows served from the near cache
            if lock:
                assert s["inv"] == 0  # no invalidation connection under the lease
    finally:
        await fence.aclose()
        await _cleanup(redis_url, prefix)


@pytest.mark.parametrize("lock", [False, True], ids=["plain", "distributed_lock"])
async def test_processes_running_turns_at_once(redis_url: str, prefix: str, lock: bool) -> None:
    """Uncoordinated turns of three processes: nothing lost, duplicated or split, each
    process's turns in its order; under the lease each window the session's newest."""
    sessions = ["c0", "c1"]
    try:
        async with children(3, redis_url, prefix, lock=lock) as kids:
            records = await free_run(kids, sessions, 15, "f")
        check_free(records, await histories(redis_url, prefix, sessions), lock=lock)
    finally:
        await _cleanup(redis_url, prefix)


# -- 2. invalidations delayed ----------------------------------------------------------


@pytest.mark.parametrize("lock", [False, True], ids=["plain", "distributed_lock"])
async def test_delayed_invalidations(
    redis_url: str, prefix: str, proxy: FaultProxy, lock: bool
) -> None:
    """Only the invalidation connections' replies are held 200 ms: turns stay whole and
    in order, windows states the session had; under the lease every window exact."""
    proxy.delay_replies_of(b"promptkit-inv", 0.2)
    url = through(proxy, redis_url)
    serial, free = ["d0", "d1"], ["c0", "c1"]
    try:
        async with children(3, url, prefix, lock=lock) as kids:
            turns = await alternate(kids, serial, blocks=2, lock=lock, tag="t", block=2)
            records = await free_run(kids, free, 10, "f")
        final = await histories(redis_url, prefix, serial + free)
        check_serial(turns, {sid: final[sid] for sid in serial})
        check_free(records, {sid: final[sid] for sid in free}, lock=lock)
        if lock:
            assert proxy.count(b"promptkit-inv") == 0 and proxy.delayed_links == 0
        else:
            assert proxy.delayed_links >= 3  # every child's invalidations were late
    finally:
        await _cleanup(redis_url, prefix)


# -- 3. Redis restarted ------------------------------------------------------------------


async def test_a_restart_leaves_no_cached_window_served(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    """Redis killed and restarted empty while both processes hold tracked windows:
    with Redis down nothing is served; once back, the first load is what Redis holds;
    tracking comes back and invalidations flow again."""
    server = spawn_server()
    url = server.url
    sessions = ["r0", "r1"]
    fence = Fence(url, prefix)
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(fence.aclose)
        kids = await stack.enter_async_context(children(2, url, prefix, lock=False))
        turns = await alternate(kids, sessions, blocks=2, lock=False, tag="t", fence=fence)
        before = await histories(url, prefix, sessions)
        check_serial(turns, before)
        for kid in kids:  # both hold the windows, tracked
            for sid in sessions:
                assert (await kid.ok("load", sid=sid, limit=WINDOW))["window"] == before[sid][
                    -WINDOW:
                ]
        server.kill()
        for kid in kids:
            assert (await kid.ok("wait_tracking", want=False))["ok"], f"{kid.name} never noticed"
            # Redis is down and the process knows it: nothing is served from memory.
            reply = await kid.call("load", sid="r0", limit=WINDOW)
            assert "error" in reply, f"{kid.name} served {reply} with Redis down"
        server.start()  # same port, no data
        async with RedisStore.from_url(url, prefix=prefix) as writer:
            await writer.append("r0", [u("fresh-q"), a("fresh-a")])
            for kid in kids:
                deadline = time.monotonic() + 30
                while "error" in (reply := await kid.call("load", sid="r0", limit=WINDOW)):
                    assert time.monotonic() < deadline, f"{kid.name}: {reply}"
                    await asyncio.sleep(0.05)
                # the first load that succeeds is what Redis holds, not the old window
                assert reply["window"] == ["fresh-q", "fresh-a"]
                assert (await kid.ok("load", sid="r1", limit=WINDOW))["window"] == []
            for kid in kids:
                assert (await kid.ok("wait_tracking", timeout=20))["ok"], f"{kid.name} untracked"
            # invalidations work again: a foreign write reaches both
            for kid in kids:
                assert (await kid.ok("load", sid="r1", limit=WINDOW))["window"] == []
            marks = [(await kid.ok("stats"))["inv"] for kid in kids]
            await writer.append("r1", [u("after-q"), a("after-a")])
            for kid, mark in zip(kids, marks, strict=True):
                assert (await kid.ok("wait_inv", above=mark))["ok"]
                await fence(kid)
                assert (await kid.ok("load", sid="r1", limit=WINDOW))["window"] == [
                    "after-q",
                    "after-a",
                ]
        start = await histories(url, prefix, sessions)
        more = await alternate(kids, sessions, blocks=2, lock=False, tag="n", fence=fence)
        check_serial(more, await histories(url, prefix, sessions), start)


# -- 4. eviction -----------------------------------------------------------------------------


async def test_evicted_sessions_are_reread(
    spawn_server: Callable[..., RedisServer], prefix: str
) -> None:
    """A filler evicts the sessions while both processes hold their windows tracked:
    once the evictions' invalidations are in, every load is what Redis holds, and
    nothing stored is duplicated or reordered."""
    server = spawn_server("--maxmemory", "2mb", "--maxmemory-policy", "allkeys-lru")
    url = server.url
    sessions = ["e0", "e1", "e2"]
    admin = aioredis.Redis.from_url(url)
    truth = RedisStore(admin, prefix=prefix)  # no near cache: what Redis holds
    appended: dict[str, list[str]] = {sid: [] for sid in sessions}
    junk = b"x" * 8192
    fence = Fence(url, prefix)
    try:
        async with children(2, url, prefix, lock=False) as kids:
            for round_ in range(3):
                turns = await alternate(
                    kids, sessions, blocks=3, lock=False, tag=f"e{round_}-", block=1
                )
                for t in turns:
                    appended[t.sid].extend(t.texts)
                for kid in kids:  # every process holds every window, tracked
                    await fence(kid)
                    for sid in sessions:
                        served = (await kid.ok("load", sid=sid, limit=WINDOW))["window"]
                        assert served == [m.text for m in await truth.load(sid, WINDOW)]
                marks = [(await kid.ok("stats"))["inv"] for kid in kids]
                evicted = int((await admin.info("stats"))["evicted_keys"])
                histories_ = [truth.key(sid, "h") for sid in sessions]
                for n in range(4000):  # the filler, until every history was evicted
                    await admin.set(f"{prefix}:junk:{n}", junk)
                    if n % 20 == 19 and not await admin.exists(*histories_):
                        break
                assert not await admin.exists(*histories_), "nothing evicted"
                assert int((await admin.info("stats"))["evicted_keys"]) > evicted
                async for k in admin.scan_iter(match=f"{prefix}:junk:*", count=1000):
                    await admin.delete(k)
                for kid, mark in zip(kids, marks, strict=True):
                    assert (await kid.ok("wait_inv", above=mark))["ok"], f"{kid.name}: no news"
                    await fence(kid)
                    for sid in sessions:
                        served = (await kid.ok("load", sid=sid, limit=WINDOW))["window"]
                        held = [m.text for m in await truth.load(sid, WINDOW)]
                        assert served == held, f"{kid.name} {sid}: served {served}, Redis {held}"
            last = await alternate(kids, sessions, blocks=3, lock=False, tag="z", block=1)
        for t in last:
            appended[t.sid].extend(t.texts)
        for sid in sessions:
            stored = [m.text for m in await truth.load(sid)]
            assert len(set(stored)) == len(stored), f"{sid}: duplicated {stored}"
            it = iter(appended[sid])
            assert all(text in it for text in stored), f"{sid}: {stored} out of commit order"
            tail = [text for t in last if t.sid == sid for text in t.texts]
            assert stored[-len(tail) :] == tail  # nothing evicted since: all there
    finally:
        await fence.aclose()
        await truth.aclose()
        await admin.aclose()
