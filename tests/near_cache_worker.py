"""A child process of tests/stores/test_redis_near_cache_processes.py.

One OS process, one asyncio loop, one ``RedisStore.from_url(url, near_cache=100)``
(``distributed_lock`` when asked), driven by the parent through JSON lines:
each line read on stdin is a command, answered by one JSON line on stdout.

Run as ``python -m tests.near_cache_worker URL PREFIX LOCK`` (LOCK: 0 or 1)
from the repository root. The store is warmed up before the first line
``{"ready": ...}``: without the lease, the invalidation connection is live
(``store.tracking``), so the first turn's reads are already tracked.

Commands (``op``):

- ``turn``: one ``Session(store, sid, max_messages=20)`` block adding a user
  and an assistant message (``texts``); answers the window it was served;
- ``free``: ``turns`` such blocks back to back on sessions drawn from
  ``sids``, uncoordinated with the other processes;
- ``load``: ``store.load(sid, limit)``;
- ``await``: poll ``store.load(sid, 1)`` until its message is ``text`` (a
  write of the parent's: see the fence in the test);
- ``wait_tracking``: poll until ``store.tracking`` is ``want`` (default True);
- ``wait_inv``: poll until ``store.invalidations`` > ``above``;
- ``stats``; ``quit``.

A command that raised answers ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from typing import TYPE_CHECKING, Any

from promptkit_async import Message, RedisStore, Session

if TYPE_CHECKING:
    from collections.abc import Callable

WINDOW = 20


def _stats(store: RedisStore) -> dict[str, Any]:
    return {
        "tracking": store.tracking,
        "inv": store.invalidations,
        "hits": store.cache_hits,
        "misses": store.cache_misses,
    }


async def _poll(predicate: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.005)
    return True


class Worker:
    def __init__(self, store: RedisStore) -> None:
        self.store = store

    async def turn(self, sid: str, texts: list[str]) -> list[str]:
        async with Session(self.store, sid, max_messages=WINDOW) as s:
            window = [m.text for m in s.history]
            s.add(Message.user(texts[0]), Message.assistant(texts[1]))
        return window

    async def handle(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd["op"]
        store = self.store
        if op == "turn":
            return {"window": await self.turn(cmd["sid"], cmd["texts"]), **_stats(store)}
        if op == "free":
            rng = random.Random(cmd["seed"])
            done = []
            for i in range(cmd["turns"]):
                sid = rng.choice(cmd["sids"])
                texts = [f"{cmd['tag']}:{i}:q", f"{cmd['tag']}:{i}:a"]
                done.append({"sid": sid, "texts": texts, "window": await self.turn(sid, texts)})
            return {"turns": done, **_stats(store)}
        if op == "load":
            return {"window": [m.text for m in await store.load(cmd["sid"], cmd.get("limit"))]}
        if op == "await":
            sid, text = cmd["sid"], cmd["text"]
            deadline = time.monotonic() + cmd.get("timeout", 10.0)
            while [m.text for m in await store.load(sid, 1)] != [text]:
                if time.monotonic() > deadline:
                    return {"ok": False, **_stats(store)}
                await asyncio.sleep(0.005)
            return {"ok": True, **_stats(store)}
        if op == "wait_tracking":
            want = cmd.get("want", True)
            ok = await _poll(lambda: store.tracking is want, cmd.get("timeout", 10.0))
            return {"ok": ok, **_stats(store)}
        if op == "wait_inv":
            above = cmd["above"]
            ok = await _poll(lambda: store.invalidations > above, cmd.get("timeout", 5.0))
            return {"ok": ok, **_stats(store)}
        if op == "stats":
            return _stats(store)
        raise ValueError(f"unknown command {op!r}")


def _say(reply: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


async def main(url: str, prefix: str, lock: bool) -> None:
    async with RedisStore.from_url(
        url, prefix=prefix, near_cache=100, distributed_lock=lock
    ) as store:
        await store.load("warm-up", 1)  # starts the invalidation connection
        if not lock:
            await _poll(lambda: store.tracking, 10.0)
        worker = Worker(store)
        _say({"ready": True, **_stats(store)})
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            cmd = json.loads(line)
            if cmd["op"] == "quit":
                _say({"bye": True})
                return
            try:
                reply = await worker.handle(cmd)
            except Exception as exc:
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            _say(reply)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] == "1"))
