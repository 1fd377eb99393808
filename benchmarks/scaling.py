"""Area 4: scaling with concurrency, contention on one session, history and window size.

Concurrency: a round re-seeds ``C`` sessions (untimed), then starts ``C`` turns
at once, one per session, and times the whole burst (throughput = turns / wall
time) and every turn (latency under load, event-loop queueing included).
Contestants alternate round by round. All share one redis.asyncio client whose
connection pool grows to the concurrency (warmed up first).

One session: ``one_session_requests`` turns start at once on ONE session id.
promptkit_async serialises them with its per-session lock; the plain floor
does not (it races); ``floor+lock`` holds an asyncio.Lock per session, the fair
comparison.

History x window: the sequential turn with ``window`` messages loaded from a
``history``-message session (re-seeded every round); cost should follow the
window, not the stored total.

Retention: the same turn in steady state (no re-seeding) on sessions that keep
40 and 10,000 messages (``max_stored`` of each store: Redis, memory, an SQLite
file), interleaved: what a turn costs on a long conversation, when the window
is 20 either way.
"""

from __future__ import annotations

import asyncio
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

from promptkit_async import MemoryStore, SQLiteStore

from ._common import Context, history
from ._contestants import (
    Contestant,
    FloorContestant,
    MemoryContestant,
    OursContestant,
    SQLiteContestant,
)
from ._harness import Variant, run_interleaved, summarize
from .turns import contestants, turn_messages

__all__ = ["concurrency_level", "level_rounds", "one_session", "run", "steps"]


def level_rounds(ctx: Context, level: int) -> int:
    p = ctx.params
    return max(p.min_rounds_per_level, p.turns_per_level // level)


def steps(ctx: Context) -> int:
    p = ctx.params
    total = sum(level_rounds(ctx, c) + 1 for c in p.concurrency)
    total += p.one_session_rounds + 1
    total += len(p.histories) * len(p.windows) * (p.grid_rounds + max(1, p.warmup // 10))
    total += p.grid_rounds + p.warmup
    return total


class _Burst:
    """``run`` starts one turn per session id at once; per-turn latencies are kept."""

    def __init__(self, c: Contestant, sids: list[str], ctx: Context, *, same: bool = False):
        self.c = c
        self.sids = sids
        self.same = same  # all turns on sids[0]
        self.latencies: list[int] = []
        self.recording = False
        seed, self.user, self.reply = turn_messages(ctx)
        self.seed = seed

    async def prepare(self, _: int) -> None:
        await self.c.reseed(self.sids[:1] if self.same else self.sids, self.seed)

    async def _one(self, sid: str) -> None:
        t0 = time.perf_counter_ns()
        await self.c.turn(sid, self.user, self.reply)
        if self.recording:
            self.latencies.append(time.perf_counter_ns() - t0)

    async def run(self, _: int) -> None:
        await asyncio.gather(*(self._one(s) for s in self.sids))


async def _bursts(
    ctx: Context, found: list[Contestant], sids: list[str], rounds: int, *, same: bool = False
) -> dict[str, Any]:
    bursts = [_Burst(c, sids, ctx, same=same) for c in found]
    variants = [Variant(b.c.name, b.run, b.prepare) for b in bursts]
    # Warm-up round (fills the connection pool), then the measured rounds.
    await run_interleaved(variants, rounds=1, warmup=0, progress=ctx.progress)
    for v in variants:
        v.samples.clear()
    for b in bursts:
        b.recording = True
    await run_interleaved(variants, rounds=rounds, warmup=0, progress=ctx.progress)
    out: dict[str, Any] = {}
    for b, v in zip(bursts, variants, strict=True):
        total_s = sum(v.samples) / 1e9
        entry: dict[str, Any] = {
            "turns_per_s": len(sids) * len(v.samples) / total_s if total_s else 0.0,
            "burst_wall_ms_p50": summarize(v.samples)["p50_us"] / 1000,
            "turn_latency": summarize(b.latencies),
        }
        out[b.c.name] = entry
    floor = out.get("floor+lock" if same else "floor")
    for entry in out.values():
        if floor:
            entry["throughput_ratio_to_floor"] = entry["turns_per_s"] / floor["turns_per_s"]
    ours = out.get("promptkit_async")
    for entry in out.values():
        if ours:
            entry["throughput_ratio_to_ours"] = entry["turns_per_s"] / ours["turns_per_s"]
    return out


async def _grid(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    _, user, reply = turn_messages(ctx)
    out: dict[str, Any] = {}
    mem_store = MemoryStore()
    for h in p.histories:
        seed = history(h, p.message_chars)
        for w in p.windows:
            found: list[Contestant] = [
                FloorContestant(ctx.client, f"{ctx.prefix}:gfloor", w),
                OursContestant(ctx.store("gours"), w),
                MemoryContestant(mem_store, w),
            ]
            variants = [_grid_variant(c, f"g{h}-{w}", seed, user, reply, min(h, w)) for c in found]
            ctx.progress.section(f"scaling: history {h}, window {w}", p.grid_rounds)
            await run_interleaved(
                variants,
                rounds=p.grid_rounds,
                warmup=max(1, p.warmup // 10),
                progress=ctx.progress,
            )
            out[f"h{h}_w{w}"] = {
                "history": h,
                "window": w,
                **{v.name: summarize(v.samples) for v in variants},
            }
    return out


def _grid_variant(
    c: Contestant, sid: str, seed: Any, user: Any, reply: Any, expect: int
) -> Variant:
    async def prepare(_: int) -> None:
        await c.reseed([sid], seed)
        # Re-seeding a long history allocates thousands of objects: collect them
        # here, untimed, or the timed turn pays for a collection they triggered.
        gc.collect()

    async def turn(_: int) -> None:
        seen = await c.turn(sid, user, reply)
        if seen != expect:
            raise AssertionError(f"{c.name} loaded {seen}, expected {expect}")

    return Variant(c.name, turn, prepare)


async def _retention(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    _, user, reply = turn_messages(ctx)
    found: list[OursContestant] = []
    tmp = tempfile.TemporaryDirectory(prefix="pkbench-retention-")
    for kept in p.retention:
        ours = OursContestant(
            ctx.store(f"kept{kept}", max_stored=kept), p.window, name=f"{kept} kept"
        )
        await ours.reseed(["long"], history(kept, p.message_chars))
        found.append(ours)
        memory = MemoryContestant(MemoryStore(max_stored=kept), p.window)
        memory.name = f"{kept} kept (MemoryStore)"
        await memory.reseed(["long"], history(kept, p.message_chars))
        found.append(memory)
        lite = SQLiteContestant(
            SQLiteStore(str(Path(tmp.name) / f"kept{kept}.db"), max_stored=kept),
            p.window,
            name=f"{kept} kept (SQLiteStore)",
        )
        await lite.reseed(["long"], history(kept, p.message_chars))
        found.append(lite)
    gc.collect()

    def variant(c: OursContestant) -> Variant:
        async def turn(_: int) -> None:
            seen = await c.turn("long", user, reply)
            if seen != p.window:
                raise AssertionError(f"{c.name} loaded {seen}, expected {p.window}")

        return Variant(c.name, turn)

    variants = [variant(c) for c in found]
    ctx.progress.section("scaling: a turn on 40 vs 10,000 kept messages", p.grid_rounds)
    await run_interleaved(variants, rounds=p.grid_rounds, warmup=p.warmup, progress=ctx.progress)
    out: dict[str, Any] = {"window": p.window}
    for v, c in zip(variants, found, strict=True):
        out[v.name] = {**summarize(v.samples), "kept": await c.store.count("long")}
    for c in found:
        await c.store.delete("long")
        await c.aclose()
    tmp.cleanup()
    return out


async def concurrency_level(ctx: Context, level: int) -> dict[str, Any]:
    """``level`` sessions, one turn each, started at once: floor, ours and ``ctx.peers``."""
    found, _ = contestants(ctx, ctx.params.window, tag=f"c{level}")
    sids = [f"c{level}-{i}" for i in range(level)]
    rounds = level_rounds(ctx, level)
    ctx.progress.section(f"scaling: {level} concurrent sessions ({rounds} rounds)", rounds + 1)
    try:
        return await _bursts(ctx, found, sids, rounds)
    finally:
        for c in found:
            await c.aclose()


async def one_session(ctx: Context, *, plain_floor: bool = True) -> dict[str, Any]:
    """``one_session_requests`` turns at once on ONE session: floor+lock, ours, the peers,
    and (``plain_floor``) the racing floor."""
    p = ctx.params
    found, _ = contestants(ctx, p.window, tag="one")
    if not plain_floor:
        found.pop(0)
    found.insert(
        1 if plain_floor else 0,
        FloorContestant(ctx.client, f"{ctx.prefix}:floorlock", p.window, locked=True),
    )
    n = p.one_session_requests
    ctx.progress.section(f"scaling: {n} concurrent requests on one session", p.one_session_rounds)
    try:
        one = await _bursts(ctx, found, ["one"] * n, p.one_session_rounds, same=True)
    finally:
        for c in found:
            await c.aclose()
    return {"requests": n, "results": one}


async def run(ctx: Context) -> dict[str, Any]:
    concurrency: dict[str, Any] = {}
    for level in ctx.params.concurrency:
        concurrency[str(level)] = await concurrency_level(ctx, level)
    one = await one_session(ctx)
    grid = await _grid(ctx)
    retention = await _retention(ctx)
    return {
        "concurrency": concurrency,
        "one_session": one,
        "history_window": grid,
        "retention": retention,
    }
