"""Soak: many sessions under random faults, checked afterwards against a model.

8 workers x 20 sessions run turns for ``PROMPTKIT_SOAK_SECONDS`` (default 120)
against a ``redis-server`` with AOF ``appendfsync always``, through a fault
proxy, with two store objects (two "instances"). Faults: random
cancellations (before and during commits), delayed and stalled replies, lost
commit replies, blackholes, cut connections, ``CLIENT KILL`` of the stores'
connections, and one ``kill -9`` + restart of Redis mid-run.

Every cancellation that lands while a turn runs must be honoured (the turn
ends cancelled; one landing in the commit is settled first): the landed and
ignored counts are reported.

Every turn has a known id and content, and is classified as it ends:
confirmed (the block exited cleanly), failed (StoreUnavailable other than
CommitOutcomeUnknown, or cancelled before its commit started) or unknown
(CommitOutcomeUnknown, or cancelled while committing). Afterwards: every
confirmed turn is stored exactly once and in order, no failed turn is
stored, each unknown turn at most once, no message is in another session,
the lock registries are empty and every key has a TTL.

Skipped unless ``PROMPTKIT_SOAK=1`` (``.ci/run`` sets it). The figures are
printed and written to ``tests/.soak-last.json``.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    CommitOutcomeUnknown,
    LockLost,
    Message,
    RedisStore,
    Session,
    SessionBusy,
    StoreUnavailable,
)

from .faults import FaultProxy

if TYPE_CHECKING:
    from collections.abc import Callable

    from .conftest import RedisServer

pytestmark = [
    pytest.mark.slow,
    pytest.mark.redis,
    pytest.mark.skipif(
        os.environ.get("PROMPTKIT_SOAK") != "1",
        reason="the soak runs only with PROMPTKIT_SOAK=1 (.ci/run sets it)",
    ),
]

SECONDS = float(os.environ.get("PROMPTKIT_SOAK_SECONDS", "120"))
WORKERS = 8
SESSIONS_PER_WORKER = 20
CANCEL_RATE = 0.08
REPORT = Path(__file__).parent / ".soak-last.json"


class Model:
    """What every turn's caller was told."""

    def __init__(self) -> None:
        self.attempted = 0
        self.confirmed: dict[str, list[str]] = collections.defaultdict(list)
        self.failed: set[str] = set()
        self.unknown: set[str] = set()
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.unexpected: list[str] = []
        self.foreign_on_load: list[str] = []
        # Cancellations delivered while a turn was running, and those it ignored
        # (the turn ran on and ended as if never cancelled).
        self.cancels_landed = 0
        self.cancels_ignored = 0


def turn_of(content: str) -> tuple[str, str]:
    """``"<sid>#<n>:q"`` -> (sid, turn id)."""
    tid = content.rsplit(":", 1)[0]
    return tid.rsplit("#", 1)[0], tid


async def one_turn(store: RedisStore, sid: str, tid: str, phase: list[str], lazy: bool) -> None:
    async with Session(
        store, sid, max_messages=None, lazy=lazy, lock_timeout=10, commit_grace=2.0
    ) as s:
        if not lazy:
            phase.append(f"loaded {len(s.history)}")
        s.add(Message.user(f"{tid}:q"))
        await asyncio.sleep(0)
        s.add(Message.assistant(f"{tid}:a"))
        phase.append("commit")  # from here on, a cancellation lands in the commit


async def worker(
    w: int, stores: list[RedisStore], model: Model, deadline: float, rng: random.Random
) -> None:
    loop = asyncio.get_running_loop()
    sids = [f"w{w}-s{j}" for j in range(SESSIONS_PER_WORKER)]
    counters = dict.fromkeys(sids, 0)
    while loop.time() < deadline:
        sid = rng.choice(sids)
        counters[sid] += 1
        tid = f"{sid}#{counters[sid]}"
        store = stores[rng.randrange(len(stores))]
        phase: list[str] = []
        model.attempted += 1
        task = asyncio.create_task(one_turn(store, sid, tid, phase, lazy=rng.random() < 0.3))
        landed = False
        if rng.random() < CANCEL_RATE:
            await asyncio.wait({task}, timeout=rng.uniform(0, 0.03))
            landed = not task.done()
            task.cancel()
        await asyncio.wait({task})
        if landed:
            model.cancels_landed += 1
            if not task.cancelled():
                model.cancels_ignored += 1
        if task.cancelled():
            if phase and phase[-1] == "commit":
                model.unknown.add(tid)
                model.outcomes["cancelled in commit"] += 1
            else:
                model.failed.add(tid)
                model.outcomes["cancelled before commit"] += 1
            continue
        exc = task.exception()
        if exc is None:
            model.confirmed[sid].append(tid)
            model.outcomes["confirmed"] += 1
        elif isinstance(exc, CommitOutcomeUnknown):
            model.unknown.add(tid)
            model.outcomes["CommitOutcomeUnknown"] += 1
        elif isinstance(exc, (StoreUnavailable, LockLost, SessionBusy)):
            # Nothing was written: the store was out of reach, the fenced commit
            # was refused, or the lease could not be had in time.
            model.failed.add(tid)
            model.outcomes[type(exc).__name__] += 1
        else:
            model.failed.add(tid)
            model.unexpected.append(f"{tid}: {type(exc).__name__}: {exc}")
        await asyncio.sleep(rng.uniform(0, 0.002))


async def chaos(
    proxy: FaultProxy,
    server: RedisServer,
    admin_url: str,
    deadline: float,
    rng: random.Random,
    faults: collections.Counter[str],
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    restart_at = start + (deadline - start) * rng.uniform(0.4, 0.6)
    restarted = False
    while loop.time() < deadline - 2:
        await asyncio.sleep(rng.uniform(0.3, 1.5))
        if not restarted and loop.time() >= restart_at:
            restarted = True
            faults["redis kill -9 + restart (AOF)"] += 1
            server.kill()
            await asyncio.sleep(rng.uniform(0.2, 1.0))
            await asyncio.to_thread(server.start)
            continue
        fault = rng.choice(
            ["delay", "stall", "drop reply", "drop request", "blackhole", "cut", "client kill"]
        )
        faults[fault] += 1
        if fault == "delay":
            proxy.reply_delay = rng.uniform(0.005, 0.1)
            await asyncio.sleep(rng.uniform(0.5, 2))
            proxy.reply_delay = 0
        elif fault == "stall":  # longer than the socket timeout: timeouts, then settling
            proxy.request_delay = 1.5
            proxy.delay_match = b"EVALSHA"
            await asyncio.sleep(rng.uniform(0.2, 1))
            proxy.request_delay = 0
            proxy.delay_match = None
        elif fault == "drop reply":
            proxy.drop_reply(b"EVALSHA")
        elif fault == "drop request":
            proxy.drop_request(b"EVALSHA")
        elif fault == "blackhole":
            proxy.blackhole()
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            proxy.mode = "pass"
        elif fault == "cut":
            proxy.kill_all()
        else:
            admin = aioredis.Redis.from_url(admin_url, socket_timeout=2)
            try:
                for info in await admin.client_list():
                    if info.get("name") == "soak":
                        await admin.client_kill_filter(_id=info["id"])
            except (OSError, aioredis.RedisError):
                faults["client kill (redis down)"] += 1
            finally:
                await admin.aclose()
    proxy.heal()


@pytest.mark.timeout(SECONDS + 600)
async def test_soak(spawn_server: Callable[..., RedisServer], prefix: str) -> None:
    seed = int(os.environ.get("PROMPTKIT_SOAK_SEED", str(time.time_ns() % 1_000_000)))
    rng = random.Random(seed)
    server = spawn_server("--appendonly", "yes", "--appendfsync", "always")
    model = Model()
    faults: collections.Counter[str] = collections.Counter()
    started = time.monotonic()
    async with FaultProxy(server.port) as proxy:
        # Two plain stores, and one with a near cache and the distributed lease,
        # so that both are exercised under the same faults.
        options: list[dict[str, Any]] = [
            {},
            {},
            {"near_cache": 200, "distributed_lock": True, "lease_ttl": 3.0},
        ]
        stores = [
            RedisStore.from_url(
                proxy.url,
                prefix=prefix,
                socket_timeout=1.0,
                connect_timeout=1.0,
                client_options={"client_name": "soak"},
                **extra,
            )
            for extra in options
        ]
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + SECONDS
            workers = [
                asyncio.create_task(worker(w, stores, model, deadline, random.Random(rng.random())))
                for w in range(WORKERS)
            ]
            await chaos(proxy, server, server.url, deadline, rng, faults)
            await asyncio.wait_for(asyncio.gather(*workers), 120)
            proxy.heal()
            await asyncio.sleep(3)  # commits still held by a stall land (or not) by now
            registries = [len(s.locks) for s in stores]
        finally:
            for s in stores:
                await s.aclose()

    # Check what Redis holds, on a direct connection.
    direct = aioredis.Redis.from_url(server.url)
    try:
        truth = RedisStore(direct, prefix=prefix)
        lost = duplicated = phantom = unknown_present = misplaced = misordered = 0
        failed_present = 0
        stored_turns = 0
        for w in range(WORKERS):
            for j in range(SESSIONS_PER_WORKER):
                sid = f"w{w}-s{j}"
                messages = await truth.load(sid)
                tids: list[str] = []
                for i in range(0, len(messages), 2):
                    q, a = messages[i], messages[i + 1] if i + 1 < len(messages) else None
                    owner, tid = turn_of(q.text)
                    if owner != sid or a is None or a.content != f"{tid}:a":
                        misplaced += 1
                        continue
                    tids.append(tid)
                stored_turns += len(tids)
                counts = collections.Counter(tids)
                duplicated += sum(n - 1 for n in counts.values() if n > 1)
                confirmed = model.confirmed.get(sid, [])
                lost += sum(1 for t in confirmed if t not in counts)
                if [t for t in tids if t in set(confirmed)] != [
                    t for t in confirmed if t in counts
                ]:
                    misordered += 1
                failed_present += sum(1 for t in tids if t in model.failed)
                unknown_present += sum(1 for t in set(tids) if t in model.unknown)
                phantom += sum(
                    1 for t in tids if t not in model.unknown and t not in set(confirmed)
                )
        no_ttl = [
            key.decode(errors="replace")
            async for key in direct.scan_iter(match=f"{prefix}:*", count=1000)
            if await direct.pttl(key) < 0
        ]
    finally:
        await direct.aclose()

    committed = sum(map(len, model.confirmed.values()))
    report: dict[str, Any] = {
        "seconds": round(time.monotonic() - started, 1),
        "seed": seed,
        "workers": WORKERS,
        "sessions": WORKERS * SESSIONS_PER_WORKER,
        "attempted": model.attempted,
        "committed": committed,
        "unknown": len(model.unknown),
        "unknown_stored": unknown_present,
        "failed": len(model.failed),
        "lost": lost,
        "duplicated": duplicated,
        "failed_but_stored": failed_present,
        "phantom": phantom,
        "misplaced": misplaced,
        "misordered_sessions": misordered,
        "keys_without_ttl": no_ttl[:10],
        "lock_registries": registries,
        "cancellations_landed": model.cancels_landed,
        "cancellations_ignored": model.cancels_ignored,
        "outcomes": dict(model.outcomes),
        "faults": dict(faults),
        "unexpected_errors": model.unexpected[:10],
    }
    REPORT.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\nSOAK {report['seconds']}s seed={seed}: attempted={model.attempted} "
        f"committed={committed} unknown={len(model.unknown)} "
        f"(stored {unknown_present}) failed={len(model.failed)} lost={lost} "
        f"duplicated={duplicated} cancellations landed={model.cancels_landed} "
        f"ignored={model.cancels_ignored} faults={dict(faults)} -> {REPORT.name}"
    )
    assert model.unexpected == []
    assert model.cancels_landed > 0 and model.cancels_ignored == 0, report
    assert (lost, duplicated, failed_present, phantom, misplaced, misordered) == (0,) * 6, report
    assert registries == [0] * len(stores)
    assert no_ttl == [], no_ttl
    assert committed > 0 and faults["redis kill -9 + restart (AOF)"] == 1
