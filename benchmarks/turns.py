"""Areas 1, 2, 3 and 6 (latency): PING, the floor turn, our turn, the peers' turns.

All Redis contestants run in one interleaved set, so their ratios come from
the same rounds. Each round re-seeds every contestant's session to exactly
``history_len`` messages (untimed) before timing its turn. The MemoryStore turn
runs in its own set (microseconds; it needs many more rounds). Then one turn
of each contestant is replayed to count its round trips and the commands (and
server microseconds) Redis executed for it.
"""

from __future__ import annotations

import contextlib
import inspect
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import redis.asyncio.connection as rconn

from promptkit_async import MemoryStore, Message, RedisStore, SQLiteStore

from ._common import Context, history, text
from ._contestants import (
    NOT_RUNNABLE,
    Contestant,
    FloorContestant,
    MemoryContestant,
    OursContestant,
    SQLiteContestant,
    load_peer,
)
from ._harness import Variant, paired_ratio, run_interleaved, summarize

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "contestants",
    "headline",
    "memory_turn",
    "near_cache",
    "run",
    "steps",
    "turn_messages",
    "variant",
]


def steps(ctx: Context) -> int:
    p = ctx.params
    return 5 * p.warmup + 3 * p.turn_rounds + p.memory_rounds + p.turn_rounds // 3


def contestants(
    ctx: Context, window: int, *, tag: str = ""
) -> tuple[list[Contestant], dict[str, str]]:
    """Floor, ours and the installed peers for one window size; and why the others are missing."""
    found: list[Contestant] = [
        FloorContestant(ctx.client, f"{ctx.prefix}:floor{tag}", window),
        OursContestant(ctx.store(f"ours{tag}"), window),
    ]
    missing: dict[str, str] = {}
    for name in ctx.peers:
        peer, reason = load_peer(name, ctx.client, ctx.url, f"{ctx.prefix}{tag}", window)
        if peer is None:
            missing[name] = reason
        else:
            found.append(peer)
    return found, missing


def turn_messages(ctx: Context) -> tuple[list[Message], Message, Message]:
    n = ctx.params.message_chars
    seed = history(ctx.params.history_len, n)
    return seed, Message.user(text(n, 1001)), Message.assistant(text(n, 1002))


def _ratios(variants: list[Variant]) -> dict[str, Any]:
    """Summaries with p50 ratios (and paired per-round ratios) within one interleaved set."""
    by_name = {v.name: v for v in variants}
    floor = summarize(by_name["floor"].samples)["p50_us"]
    ours = summarize(by_name["promptkit_async"].samples)["p50_us"]
    ping = summarize(by_name["PING"].samples)["p50_us"] if "PING" in by_name else None
    out: dict[str, Any] = {}
    for v in variants:
        entry: dict[str, Any] = summarize(v.samples)
        entry["ratio_to_floor_p50"] = entry["p50_us"] / floor
        entry["paired_ratio_to_floor"] = paired_ratio(v.samples, by_name["floor"].samples)
        if ping is not None:
            entry["ratio_to_ping_p50"] = entry["p50_us"] / ping
        entry["ratio_to_ours_p50"] = entry["p50_us"] / ours
        out[v.name] = entry
    return out


def variant(c: Contestant, sid: str, seed: list[Message], user: Message, reply: Message) -> Variant:
    async def prepare(_: int) -> None:
        await c.reseed([sid], seed)

    async def turn(_: int) -> None:
        seen = await c.turn(sid, user, reply)
        if seen != c.window:
            raise AssertionError(f"{c.name} loaded {seen} messages, expected {c.window}")

    return Variant(c.name, turn, prepare)


@contextlib.contextmanager
def _count_sends() -> Iterator[list[int]]:
    """Count client round trips: every packed send on any redis.asyncio connection."""
    counter = [0]
    cls: Any = rconn.AbstractConnection
    original = cls.send_packed_command

    async def counting(self: Any, command: Any, check_health: bool = True) -> None:
        counter[0] += 1
        await original(self, command, check_health)

    cls.send_packed_command = counting
    try:
        yield counter
    finally:
        cls.send_packed_command = original


async def _server_stats(ctx: Context) -> tuple[int, int]:
    """Total commands executed and their microseconds, from INFO commandstats."""
    info = await ctx.client.info("commandstats")
    calls = usec = 0
    for stats in info.values():
        if isinstance(stats, dict):
            calls += int(stats.get("calls", 0))
            usec += int(stats.get("usec", 0))
    return calls, usec


async def count_round_trips(
    ctx: Context, c: Contestant, seed: list[Message], user: Message, reply: Message
) -> dict[str, int]:
    """Round trips, server commands and server µs of one turn (min of 5: the server is shared)."""
    best: dict[str, int] | None = None
    for _ in range(5):
        await c.reseed(["rt"], seed)
        calls0, usec0 = await _server_stats(ctx)
        with _count_sends() as sends:
            await c.turn("rt", user, reply)
        calls1, usec1 = await _server_stats(ctx)
        got = {
            "round_trips": sends[0],
            "server_commands": calls1 - calls0 - 1,  # the first INFO counts itself
            "server_us": usec1 - usec0,
        }
        if best is None or got["server_commands"] < best["server_commands"]:
            best = got
    assert best is not None
    return best


async def near_cache(
    ctx: Context, seed: list[Message], user: Message, reply: Message
) -> dict[str, Any]:
    """Steady state, no re-seeding: the same session turn after turn (20 of 20 stored).

    This is where a near cache can help: the window is already in the process,
    and the load only revalidates its version. Skipped when RedisStore has no
    ``near_cache`` option.
    """
    if "near_cache" not in inspect.signature(RedisStore.__init__).parameters:
        return {"skipped": "RedisStore has no near_cache option"}
    p = ctx.params
    cached = RedisStore(ctx.client, prefix=f"{ctx.prefix}:nccache", near_cache=1000)
    found: list[Contestant] = [
        FloorContestant(ctx.client, f"{ctx.prefix}:ncfloor", p.window),
        OursContestant(ctx.store("ncours"), p.window),
        OursContestant(cached, p.window, name="promptkit_async near_cache"),
    ]
    try:
        return await _near_cache_set(ctx, found, seed, user, reply)
    finally:
        await cached.aclose()  # its invalidation reader and connection


async def _near_cache_set(
    ctx: Context, found: list[Contestant], seed: list[Message], user: Message, reply: Message
) -> dict[str, Any]:
    p = ctx.params
    variants = []
    for c in found:
        await c.reseed(["steady"], seed)

        async def turn(_: int, c: Contestant = c) -> None:
            await c.turn("steady", user, reply)

        variants.append(Variant(c.name, turn))
    rounds = max(1, p.turn_rounds // 3)
    ctx.progress.section("latency: steady state, near cache", rounds)
    await run_interleaved(variants, rounds=rounds, warmup=p.warmup, progress=ctx.progress)
    out: dict[str, Any] = {}
    floor = variants[0].samples
    for c, v in zip(found, variants, strict=True):
        out[c.name] = {
            **summarize(v.samples),
            "paired_ratio_to_floor": paired_ratio(v.samples, floor),
        }
        with _count_sends() as sends:
            await c.turn("steady", user, reply)
        out[c.name]["round_trips"] = sends[0]
    return out


async def _sqlite(ctx: Context, seed: list[Message], user: Message, reply: Message) -> Any:
    """The turn on SQLiteStore files in a temporary directory, both durability settings
    interleaved: ``FULL`` (each commit on disk before it returns) and ``NORMAL``."""
    p = ctx.params
    with tempfile.TemporaryDirectory(prefix="pkbench-sqlite-") as tmp:
        found = [
            SQLiteContestant(SQLiteStore(str(Path(tmp) / "full.db")), p.window),
            SQLiteContestant(
                SQLiteStore(str(Path(tmp) / "normal.db"), synchronous="NORMAL"),
                p.window,
                name="promptkit_async (SQLiteStore, synchronous=NORMAL)",
            ),
        ]
        variants = [variant(c, f"sqlite-{i}", seed, user, reply) for i, c in enumerate(found)]
        ctx.progress.section("latency: SQLiteStore turn (a file in a temp dir)", p.turn_rounds)
        try:
            await run_interleaved(
                variants, rounds=p.turn_rounds, warmup=p.warmup, progress=ctx.progress
            )
        finally:
            for c in found:
                await c.aclose()
    return {v.name: summarize(v.samples) for v in variants}


async def headline(
    ctx: Context, found: list[Contestant], seed: list[Message], user: Message, reply: Message
) -> dict[str, Any]:
    """The headline set: PING, the floor and ours (``found``), interleaved, re-seeded."""
    p = ctx.params

    async def ping(_: int) -> None:
        await ctx.client.ping()

    variants = [Variant("PING", ping)]
    variants += [variant(c, f"lat-{i}", seed, user, reply) for i, c in enumerate(found)]
    ctx.progress.section("latency: PING, floor, promptkit_async (interleaved)", p.turn_rounds)
    await run_interleaved(variants, rounds=p.turn_rounds, warmup=p.warmup, progress=ctx.progress)
    return _ratios(variants)


async def memory_turn(
    ctx: Context, seed: list[Message], user: Message, reply: Message
) -> dict[str, Any]:
    """The same turn on a MemoryStore (its own set: microseconds, many more rounds)."""
    p = ctx.params
    mem = MemoryContestant(MemoryStore(), p.window)
    mem_variant = variant(mem, "mem", seed, user, reply)
    ctx.progress.section("latency: MemoryStore turn", p.memory_rounds)
    await run_interleaved(
        [mem_variant], rounds=p.memory_rounds, warmup=p.warmup, progress=ctx.progress
    )
    return {mem_variant.name: summarize(mem_variant.samples)}


async def run(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    seed, user, reply = turn_messages(ctx)
    found, missing = contestants(ctx, p.window)

    # Two interleaved sets. The peers' turns are heavier and evict the others'
    # code and data from the CPU caches, which costs the larger code path more:
    # the headline (PING, floor, ours) runs on its own; the peers run with the
    # floor and ours again, and their ratios come from that second set.
    results = await headline(ctx, found[:2], seed, user, reply)
    mixed: dict[str, Any] = {}
    if len(found) > 2:
        with_peers = [variant(c, f"mix-{i}", seed, user, reply) for i, c in enumerate(found)]
        ctx.progress.section(
            "latency: floor, promptkit_async and peers (interleaved)", p.turn_rounds
        )
        await run_interleaved(
            with_peers, rounds=p.turn_rounds, warmup=p.warmup, progress=ctx.progress
        )
        mixed = _ratios(with_peers)

    for name, entry in mixed.items():
        if name not in results:
            results[name] = entry
    results.update(await memory_turn(ctx, seed, user, reply))
    sqlite = await _sqlite(ctx, seed, user, reply)

    trips: dict[str, Any] = {}
    for c in found:
        trips[c.name] = await count_round_trips(ctx, c, seed, user, reply)
    for c in found:
        await c.aclose()
    cached = await near_cache(ctx, seed, user, reply)
    return {
        "near_cache": cached,
        "definition": (
            f"load the newest {p.window} of {p.history_len} messages, add a user and an "
            f"assistant message of {p.message_chars} characters, save with TTL; "
            "every turn sees a freshly re-seeded history"
        ),
        "latency": results,
        "latency_with_peers": mixed,
        "latency_sqlite": sqlite,
        "round_trips": trips,
        "peers_missing": missing,
        "peers_not_runnable": NOT_RUNNABLE,
    }
