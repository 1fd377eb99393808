"""What a conversation costs in Redis memory, measured with ``MEMORY USAGE``.

``python -m benchmarks.memory_cost [--redis-url URL]`` writes sessions through
``RedisStore`` (turns of a user and an assistant message, as a chat app does)
under a random prefix, reads ``MEMORY USAGE <key> SAMPLES 0`` (every element
counted) of each key a session has, prints bytes per session and per message
for a few message sizes and history lengths, and removes its keys.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets

from redis.crc import key_slot

from promptkit_async import Message, RedisStore, Session
from promptkit_async.stores._redis import _keys

_KINDS = ("h", "t", "m")


async def _usage(store: RedisStore, key: bytes) -> int:
    used = await store.client.execute_command("MEMORY", "USAGE", key, "SAMPLES", "0")
    return int(used or 0)


async def _session(store: RedisStore, session_id: str, turns: int, chars: int) -> dict[str, int]:
    for i in range(turns):
        async with Session(store, session_id, owner="owner-1", lazy=True) as s:
            s.add(Message.user(f"q{i} ".ljust(chars, "x")), Message.assistant("a" * chars))
    return {kind: await _usage(store, store.key(session_id, kind)) for kind in _KINDS}


async def main(url: str) -> None:
    prefix = f"pkbench-memory-{secrets.token_hex(4)}"
    store = RedisStore.from_url(url, prefix=prefix)
    try:
        info = await store.client.info("server")
        print(
            f"server {info.get('server_name', 'redis')} {info.get('redis_version')}"
            f" ({info.get('valkey_version', '-')}), prefix {prefix!r}"
        )
        print(
            f"{'message chars':>13} {'messages':>8} {'history B':>10} {'turn ids B':>10} "
            f"{'meta B':>7} {'session B':>10} {'B/message':>9} {'B/message beyond 2':>18}"
        )
        for chars in (50, 200, 1000):
            base = await _session(store, f"base-{chars}", 1, chars)
            for turns in (1, 10, 50, 500):
                sizes = await _session(store, f"s-{chars}-{turns}", turns, chars)
                messages = 2 * turns
                total = sum(sizes.values())
                beyond = (sizes["h"] - base["h"]) / (messages - 2) if messages > 2 else 0
                print(
                    f"{chars:>13} {messages:>8} {sizes['h']:>10} {sizes['t']:>10} "
                    f"{sizes['m']:>7} {total:>10} {sizes['h'] / messages:>9.0f} "
                    f"{beyond:>18.0f}"
                )
        # The index entry (one member of a slot's sorted set) and the owner's listing.
        slot = key_slot(store.key("s-200-1"))
        index = await _usage(store, _keys.slot_index_key(prefix, slot))
        owner = _keys.owner_key(prefix, "owner-1")
        listing = await _usage(store, owner)
        listed = await store.client.zcard(owner)
        registry = await _usage(store, _keys.slot_registry_key(prefix))
        print(
            f"slot index of s-200-1's slot {index} B, owner listing ({listed} conversations) "
            f"{listing} B, registry of slots {registry} B"
        )
    finally:
        async for key in store.client.scan_iter(match=f"{prefix}:*", count=5000):
            await store.client.unlink(key)
        await store.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
    )
    args = parser.parse_args()
    asyncio.run(main(args.redis_url))
