"""Area: what a summarizer costs a turn, and what writing a summary costs.

The turn of ``turns.py`` on RedisStore (a window of 20, a user and an
assistant message committed), interleaved a pair at a time:

- ``plain``: no summarizer: the window is the newest 20 messages;
- ``summarized``: a summarizer configured, the summary up to date (it covers
  everything before the newest 20): the load is one script call that also
  reads the summary's fields, and the summary goes into the system prompt.

Between timed turns, untimed, each variant's session is brought back to 40
messages, the summarized one with its summary covering the first 20 again,
so both load the same window every round and the summarizer never runs
during a timed turn (the background writes would otherwise share the loop).
The summary itself (``write``) is timed alone: the compare-and-set script on a
session of 40 messages.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from promptkit_async import Message, RedisStore, Session, Summary

from ._common import Context, delete_prefix, new_prefix
from ._harness import Variant, paired_ratio, run_interleaved, summarize
from .turns import turn_messages

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["run", "steps"]

SUMMARY_TEXT = "The user and the assistant discussed the plan at length. " * 8


def steps(ctx: Context) -> int:
    p = ctx.params
    return 2 * (p.warmup + p.turn_rounds)


async def _never(previous: str | None, messages: Sequence[Message]) -> str:
    raise AssertionError("no summary is written during a timed turn")


async def run(ctx: Context) -> dict[str, Any]:
    p = ctx.params
    window = p.window
    seed, user, assistant = turn_messages(ctx)
    prefix = new_prefix()
    store = RedisStore(ctx.client, prefix=prefix)
    covered = len(seed) - window

    async def reset(session_id: str, summarized: bool) -> None:
        await store.restore(session_id, seed, replace=True)
        if summarized:
            upto = (await store.load(session_id))[covered - 1].id
            assert upto is not None
            version = secrets.token_hex(8)
            summary = Summary(SUMMARY_TEXT, upto=upto, covered=covered, version=version)
            assert await store.write_summary(session_id, summary, previous=None)  # restored: none

    def variant(name: str, summarized: bool) -> Variant:
        session_id = f"{name}-turn"
        options: dict[str, Any] = {"max_messages": window}
        if summarized:
            # summary_lag: the turn schedules nothing (the reset keeps the summary current).
            options.update(summarizer=_never, summary_lag=10**9)

        async def prepare(_: int) -> None:
            await reset(session_id, summarized)

        async def turn(_: int) -> None:
            async with Session(store, session_id, **options) as session:
                assert len(session.history) == window
                session.add(user, assistant)

        return Variant(name, turn, prepare)

    variants = [variant("plain", False), variant("summarized", True)]
    ctx.progress.section("summaries: a turn with a summarizer", p.warmup + p.turn_rounds)
    try:
        await run_interleaved(
            variants, rounds=p.turn_rounds, warmup=p.warmup, progress=ctx.progress
        )
        writes = await _writes(store, seed, covered, p.turn_rounds, p.warmup, ctx)
    finally:
        await delete_prefix(ctx.client, prefix)
    plain, summarized = (summarize(v.samples) for v in variants)
    return {
        "window": window,
        "history": len(seed),
        "plain": plain,
        "summarized": summarized,
        "paired_ratio": paired_ratio(variants[1].samples, variants[0].samples),
        "write_summary": writes,
    }


async def _writes(
    store: RedisStore, seed: list[Message], covered: int, rounds: int, warmup: int, ctx: Context
) -> dict[str, float]:
    """The compare-and-set alone, each write extending the one before."""
    session_id = "write"
    await store.restore(session_id, seed, replace=True)
    ids = [m.id for m in await store.load(session_id)]
    previous: str | None = None
    state = {"at": 0}

    async def prepare(_: int) -> None:
        nonlocal previous
        if state["at"] >= covered:  # start over: a fresh history, no summary
            await store.restore(session_id, seed, replace=True)
            previous, state["at"] = None, 0

    async def write(_: int) -> None:
        nonlocal previous
        at = state["at"]
        upto = ids[at]
        assert upto is not None
        summary = Summary(SUMMARY_TEXT, upto=upto, covered=at + 1, version=secrets.token_hex(8))
        assert await store.write_summary(session_id, summary, previous=previous)
        previous, state["at"] = summary.version, at + 1

    timed = Variant("write", write, prepare)
    await run_interleaved([timed], rounds=rounds, warmup=warmup)
    return summarize(timed.samples)
