"""Area 6 (correctness): N concurrent turns on ONE session, each adding a user+assistant pair.

Every turn loads the history, "calls the model" (a 1 ms sleep), and saves its
own pair (unique texts). Afterwards the stored history is checked:

- lost: pairs' messages missing from storage;
- duplicated: messages stored more than once;
- interleaved: pairs whose assistant message does not directly follow its user message;
- overlapping: turns that loaded the same history as another turn, i.e. produced
  their reply without seeing an earlier turn (a per-session lock prevents it).

Not a timing: the same counts come out on any machine.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

from promptkit_async import Message

from ._common import Context, history
from ._contestants import Contestant, FloorContestant, OursContestant, load_peer

__all__ = ["check", "run", "steps"]

THINK = 0.001


def steps(ctx: Context) -> int:
    return 1 + len(ctx.peers) + 1


async def check(c: Contestant, n: int, seed_len: int = 4) -> dict[str, int]:
    sid = "race"
    await c.reseed([sid], history(seed_len))
    pairs = [
        (Message.user(f"question {i} of the race"), Message.assistant(f"answer {i} of the race"))
        for i in range(n)
    ]
    seen = await asyncio.gather(*(c.turn(sid, u, a, think=THINK) for u, a in pairs))
    stored = [content for _, content in await c.read_all(sid)]
    counts = Counter(stored)
    position = {content: i for i, content in enumerate(stored)}
    lost = sum(1 for u, a in pairs for m in (u, a) if m.content not in counts)
    duplicated = sum(k - 1 for k in counts.values() if k > 1)
    interleaved = sum(
        1
        for u, a in pairs
        if u.content in position
        and a.content in position
        and position[a.content] != position[u.content] + 1
    )
    overlapping = n - len(set(seen))
    return {
        "turns": n,
        "lost": lost,
        "duplicated": duplicated,
        "interleaved": interleaved,
        "overlapping": overlapping,
    }


async def run(ctx: Context) -> dict[str, Any]:
    n = ctx.params.correctness_turns
    window = 4 * n + 16  # large enough that no cap trims the evidence
    found: list[Contestant] = [
        OursContestant(ctx.store("race"), window),
        FloorContestant(ctx.client, f"{ctx.prefix}:racefloor", window),
    ]
    for name in ctx.peers:
        peer, _ = load_peer(name, ctx.client, ctx.url, f"{ctx.prefix}:race", window)
        if peer is not None:
            found.append(peer)
    ctx.progress.section(f"correctness: {n} concurrent turns on one session", len(found))
    out: dict[str, Any] = {}
    for c in found:
        out[c.name] = await check(c, n)
        ctx.progress.advance()
        await c.aclose()
    return {"turns": n, "think_s": THINK, "results": out}
