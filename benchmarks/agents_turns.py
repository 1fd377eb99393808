"""openai-agents turns: ``AgentsSession`` on ``RedisStore`` against openai-agents' ``RedisSession``.

A framework turn is what ``Runner.run`` asks of its session around one model
call: load the history (``get_items(limit=window)``), then add the user's item
and the assistant's (one ``add_items`` of two items). Both contestants run on
the same Redis server, interleaved round by round, each with a new session
object per turn (as a request handler makes one), and each session is
re-seeded (untimed) to exactly ``history_len`` items before every timed turn.

Two item shapes: ``plain`` items (``{"role", "content"}`` text, what the
existing peer benchmark uses) and ``framework`` items (the user's text as the
Runner writes it, and the assistant message as a model returns it, with its
id, status and annotations). The whole set is run ``sets`` times; each set
reports its p50 per contestant, and the ratio (RedisSession p50 / AgentsSession
p50, above 1: AgentsSession is faster) is given per set, as a median and range.

Round trips are counted on the wire: every packed send of any redis-py
connection is one round trip (a pipeline is one send), patched onto
``AbstractConnection.send_packed_command`` for one turn; the commands Redis
executed for it come from ``INFO commandstats`` deltas (min of 5 turns, as the
server is shared).
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

from ._common import TTL, Context, text
from ._contestants import AgentsContestant
from ._harness import Variant, paired_ratio, run_interleaved, summarize
from .turns import _count_sends, _server_stats

if TYPE_CHECKING:
    from agents.items import TResponseInputItem

    from promptkit_async import RedisStore

__all__ = ["run", "steps"]

OURS = "AgentsSession (RedisStore)"
PEER = "openai-agents RedisSession"
SHAPES = ("plain", "framework")

Item = dict[str, Any]
#: A contestant: seeds a session (untimed), runs one turn (returns how many items it loaded).
Seed = Callable[[str, list[Item]], Awaitable[None]]
Turn = Callable[[str, Item, Item], Awaitable[int]]


def _sets(ctx: Context) -> int:
    return 1 if ctx.params.turn_rounds < 10 else 3 if ctx.params.quick else 5


def steps(ctx: Context) -> int:
    p = ctx.params
    return len(SHAPES) * _sets(ctx) * (p.warmup + p.peer_rounds)


def _item(shape: str, role: str, content: str, n: int) -> Item:
    if shape == "plain":
        return {"role": role, "content": content}
    if role == "user":
        return {"content": content, "role": "user"}  # as the Runner writes a user's text
    return {  # as a Responses model returns a reply, dumped by the Runner
        "id": f"msg_{n:08x}",
        "content": [{"annotations": [], "text": content, "type": "output_text"}],
        "role": "assistant",
        "status": "completed",
        "type": "message",
    }


def _items(shape: str, count: int, chars: int, seed: int = 0) -> list[Item]:
    return [
        _item(shape, "user" if i % 2 == 0 else "assistant", text(chars, seed + i), seed + i)
        for i in range(count)
    ]


def _ours(store: RedisStore, window: int) -> tuple[Seed, Turn]:
    from promptkit_async.integrations._agents_items import to_message
    from promptkit_async.integrations.openai_agents import AgentsSession

    async def seed(session_id: str, items: list[Item]) -> None:
        await store.restore(session_id, [to_message(i) for i in items], replace=True, ttl=TTL)

    async def turn(session_id: str, user: Item, reply: Item) -> int:
        session = AgentsSession(session_id, store, ttl=TTL)
        history = await session.get_items(limit=window)
        await session.add_items(cast("list[TResponseInputItem]", [user, reply]))
        return len(history)

    return seed, turn


def _peer(peer: AgentsContestant, window: int) -> tuple[Seed, Turn]:
    async def seed(session_id: str, items: list[Item]) -> None:
        records = [json.dumps(i, separators=(",", ":")) for i in items]
        base = f"{peer.prefix}:{session_id}"
        async with peer.client.pipeline(transaction=False) as p:
            p.delete(base, f"{base}:messages", f"{base}:counter")
            if records:
                p.rpush(f"{base}:messages", *records)
            await p.execute()

    async def turn(session_id: str, user: Item, reply: Item) -> int:
        session = peer._session(session_id)
        history = await session.get_items(limit=window)
        await session.add_items([user, reply])
        return len(history)

    return seed, turn


def _variant(
    name: str,
    sid: str,
    contestant: tuple[Seed, Turn],
    items: list[Item],
    new: list[Item],
    window: int,
) -> Variant:
    seed, turn = contestant
    expected = min(window, len(items))

    async def prepare(_: int) -> None:
        await seed(sid, items)

    async def run(_: int) -> None:
        seen = await turn(sid, new[0], new[1])
        if seen != expected:
            raise AssertionError(f"{name} loaded {seen} items, expected {expected}")

    return Variant(name, run, prepare)


async def _round_trips(
    ctx: Context, seed: Seed, turn: Turn, items: list[Item], new: list[Item]
) -> dict[str, int]:
    """Round trips, server commands and server µs of one turn (min of 5: the server is shared)."""
    best: dict[str, int] | None = None
    for _ in range(5):
        await seed("rt", items)
        calls0, usec0 = await _server_stats(ctx)
        with _count_sends() as sends:
            await turn("rt", new[0], new[1])
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


def _spread(values: list[float]) -> dict[str, Any]:
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "per_set": values,
    }


async def _shape(ctx: Context, shape: str, found: dict[str, tuple[Seed, Turn]]) -> dict[str, Any]:
    p = ctx.params
    items = _items(shape, p.history_len, p.message_chars)
    new = _items(shape, 2, p.message_chars, seed=1000)
    sets = _sets(ctx)
    samples: dict[str, list[int]] = {name: [] for name in found}
    p50s: dict[str, list[float]] = {name: [] for name in found}
    ratios: list[float] = []
    paired: list[float] = []
    for k in range(sets):
        variants = [
            _variant(name, f"{shape}-{k}-{i}", contestant, items, new, p.window)
            for i, (name, contestant) in enumerate(found.items())
        ]
        ctx.progress.section(
            f"agents turns ({shape} items): set {k + 1} of {sets}, interleaved", p.peer_rounds
        )
        await run_interleaved(
            variants, rounds=p.peer_rounds, warmup=p.warmup, progress=ctx.progress
        )
        for v in variants:
            samples[v.name] += v.samples
            p50s[v.name].append(summarize(v.samples)["p50_us"])
        if len(variants) == 2:
            ratios.append(p50s[PEER][-1] / p50s[OURS][-1])
            paired.append(paired_ratio(variants[1].samples, variants[0].samples))
    out: dict[str, Any] = {}
    for name in found:
        out[name] = {**summarize(samples[name]), "p50_us_sets": _spread(p50s[name])}
    if ratios:
        out["peer_p50_over_ours_p50"] = _spread(ratios)
        out["paired_peer_over_ours"] = _spread(paired)
    out["round_trips"] = {
        name: await _round_trips(ctx, seed, turn, items, new)
        for name, (seed, turn) in found.items()
    }
    return out


async def run(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    try:
        found: dict[str, tuple[Seed, Turn]] = {OURS: _ours(ctx.store("agents-ours"), p.window)}
    except ImportError as exc:
        return {"skipped": f"promptkit_async[agents] is not installed ({exc})"}
    missing = ""
    if "openai-agents" in ctx.peers:
        try:
            peer = AgentsContestant(ctx.client, f"{ctx.prefix}:agents-peer", p.window)
        except ImportError as exc:
            missing = f"not installed ({exc.name or exc}); pip install -e '.[bench]'"
        else:
            found[PEER] = _peer(peer, p.window)
    else:
        missing = "peers not run (--no-peers)"
    results = {shape: await _shape(ctx, shape, found) for shape in SHAPES}
    return {
        "definition": (
            f"a framework turn: get_items(limit={p.window}) of a {p.history_len}-item session, "
            f"then add_items([user, assistant]) of {p.message_chars} characters each, TTL on; "
            "a new session object per turn; every turn sees a freshly re-seeded history"
        ),
        "round_trips_counted": (
            "packed sends on redis-py connections during one turn (a pipeline is one); "
            "server_commands and server_us: INFO commandstats deltas; min of 5 turns"
        ),
        "sets": _sets(ctx),
        **results,
        "peer_missing": missing,
    }
