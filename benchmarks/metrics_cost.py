"""What ``store.metrics()`` costs on a store holding many sessions.

``python -m benchmarks.metrics_cost [--sessions 100000] [--redis-url URL]``
seeds the sessions (two 200-character messages each, 1 h TTL) under a random
prefix, times ``metrics()`` on RedisStore and MemoryStore, and removes its keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time

from promptkit_async import MemoryStore, Message, RedisStore


async def _time(call: object, repeat: int) -> list[float]:
    assert callable(call)
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def main(sessions: int, url: str) -> None:
    messages = [Message.user("x" * 200), Message.assistant("y" * 200)]
    prefix = f"pkbench-metrics-{secrets.token_hex(4)}"
    store = RedisStore.from_url(url, prefix=prefix)
    try:
        started = time.perf_counter()
        for start in range(0, sessions, 500):
            batch = range(start, min(start + 500, sessions))
            await asyncio.gather(*(store.append(f"user-{i}", messages, ttl=3600) for i in batch))
        print(f"seeded {sessions:,} sessions in {time.perf_counter() - started:.1f} s")
        times = await _time(store.metrics, 30)
        m = await store.metrics()
        print(
            f"RedisStore.metrics(): median {statistics.median(times) * 1e3:.2f} ms, "
            f"max {max(times) * 1e3:.2f} ms over 30 calls "
            f"(active_sessions={m.active_sessions:,}, sampled={m.sampled})"
        )
    finally:
        async for key in store.client.scan_iter(match=f"{prefix}:*", count=5000):
            await store.client.unlink(key)
        await store.aclose()
    memory = MemoryStore()
    for i in range(sessions):
        await memory.append(f"user-{i}", messages, ttl=3600)
    times = await _time(memory.metrics, 100)
    print(f"MemoryStore.metrics(): median {statistics.median(times) * 1e6:.1f} µs over 100 calls")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    asyncio.run(main(args.sessions, args.redis_url))
