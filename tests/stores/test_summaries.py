"""Rolling summaries on every backend: coverage exact, off the request path, by compare-and-set.

The summarizer here is a plain function that records what it was given and
returns the ids it folded, so every test can check coverage exactly: the
summary covers each message before the window once, the window starts right
after it, and nothing is both summarized and sent.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

from promptkit_async import (
    Conversations,
    MemoryStore,
    Message,
    ScriptedProvider,
    Session,
    SessionSettings,
    Summary,
    flush_summaries,
)
from promptkit_async._summaries import SummaryWork, fold_plan, work_for

if TYPE_CHECKING:
    from collections.abc import Sequence

    from promptkit_async.stores import BaseStore

    from ..backends import Backend

WINDOW = 4


class Folder:
    """A deterministic summarizer: the summary is the ids folded so far, comma-joined."""

    def __init__(self) -> None:
        self.calls: list[tuple[str | None, list[str]]] = []
        self.gate: asyncio.Event | None = None  # when set: wait for it before answering
        self.entered = asyncio.Event()
        self.fail = 0  # raise this many times first
        self.hang = False

    async def summarize(self, previous: str | None, messages: Sequence[Message]) -> str:
        ids = [m.id or "?" for m in messages]
        self.calls.append((previous, ids))
        self.entered.set()
        if self.hang:
            await asyncio.sleep(3600)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail:
            self.fail -= 1
            raise RuntimeError("the summarizer is down")
        return ",".join([*([previous] if previous else []), *ids])


def covered_ids(summary: Summary | None) -> list[str]:
    return [] if summary is None else summary.text.split(",")


async def turn(store: BaseStore, folder: Folder, n: int, sid: str = "s", **options: Any) -> Session:
    provider = ScriptedProvider([f"answer {n}"])
    async with Session(
        store, sid, provider=provider, max_messages=WINDOW, summarizer=folder, **options
    ) as session:
        await session.send(f"question {n}")
    return session


async def check_exact(store: BaseStore, sid: str = "s") -> tuple[Summary | None, list[Message]]:
    """The summary covers every kept-or-dropped message before the window exactly once."""
    window, summary = await store.load_summarized(sid, 3 * WINDOW)
    everything = await store.load(sid)
    ids = [m.id for m in everything]
    covered = covered_ids(summary)
    assert len(covered) == len(set(covered)), "a message summarized twice"
    assert not set(covered) & {m.id for m in window}, "a message both summarized and sent"
    assert covered + [m.id for m in window] == ids, "a gap between summary and window"
    if summary is not None:
        assert summary.covered == len(covered) and summary.upto == covered[-1]
    return summary, window


async def test_after_n_turns_the_summary_covers_exactly_what_left_the_window(
    store: BaseStore,
) -> None:
    folder = Folder()
    for n in range(7):
        await turn(store, folder, n)
        assert await flush_summaries(store, timeout=10)
    summary, window = await check_exact(store)
    assert summary is not None and len(window) == WINDOW
    assert summary.covered == 14 - WINDOW
    # Each call folded only what was new, after the summary it extended.
    folded = [i for _, ids in folder.calls for i in ids]
    assert folded == covered_ids(summary)
    # The next turn sends the summary after the system prompt, and exactly the window.
    provider = ScriptedProvider(["ok"])
    async with Session(
        store, "s", provider=provider, max_messages=WINDOW, summarizer=folder, system="Be brief."
    ) as session:
        assert session.summary == summary
        await session.send("and now?")
    (call,) = provider.calls
    assert call.system is not None
    assert call.system.startswith("Be brief.\n\n") and summary.text in call.system
    assert [m.id for m in call.messages[:-1]] == [m.id for m in window]


async def test_a_turn_never_waits_for_the_summarizer(store: BaseStore) -> None:
    folder = Folder()
    folder.gate = asyncio.Event()  # the summarizer answers only when told
    for n in range(5):
        await asyncio.wait_for(turn(store, folder, n), 5)
    # It was asked (its background load may still be on its way), and is still thinking.
    await asyncio.wait_for(folder.entered.wait(), 5)
    summary, window = await check_exact(store)
    assert summary is None and len(window) == 10  # a longer window meanwhile
    folder.gate.set()
    assert await flush_summaries(store, timeout=10)
    summary, window = await check_exact(store)
    assert summary is not None and len(window) == WINDOW


async def test_a_commit_during_a_summarization_keeps_coverage_exact(store: BaseStore) -> None:
    folder = Folder()
    for n in range(3):
        await turn(store, folder, n)
    assert await flush_summaries(store, timeout=10)
    folder.gate = asyncio.Event()
    folder.entered.clear()
    await turn(store, folder, 3)
    await asyncio.wait_for(folder.entered.wait(), 5)  # summarizing messages 2-3...
    await turn(store, folder, 4)  # ...while this turn commits
    await turn(store, folder, 5)
    folder.gate.set()
    assert await flush_summaries(store, timeout=10)
    summary, window = await check_exact(store)
    assert summary is not None and len(window) == WINDOW


async def test_two_summarizers_at_once_leave_one_consistent_summary(backend: Backend) -> None:
    store = backend.store
    folder = Folder()
    for n in range(6):
        await turn(store, folder, n, summary_lag=100)  # nothing summarized yet
    plan = fold_plan(folder, WINDOW, 0, 10.0)
    other = SummaryWork(store)
    folder.gate = asyncio.Event()
    work_for(store).schedule("s", plan)
    other.schedule("s", plan)
    await asyncio.sleep(0.05)
    folder.gate.set()
    assert await flush_summaries(store, timeout=10) and await other.flush(timeout=10)
    summary, _ = await check_exact(store)
    assert summary is not None and summary.covered == 12 - WINDOW
    assert work_for(store).written + other.written >= 1


async def test_the_compare_and_set(store: BaseStore) -> None:
    await store.append("s", [Message.user(f"m{i}") for i in range(6)])
    first = Summary("a", upto="1", covered=2, version="v1")
    assert not await store.write_summary("nobody", first, previous=None)
    assert not await store.write_summary("s", first, previous="v0")  # there is none
    assert await store.write_summary("s", first, previous=None)
    assert not await store.write_summary("s", first, previous=None)  # taken
    stored = await store.summary("s")
    assert stored is not None and (stored.text, stored.upto, stored.covered) == ("a", "1", 2)
    assert stored.updated_at is not None
    behind = Summary("b", upto="1", covered=2, version="v2")
    assert not await store.write_summary("s", behind, previous="v1")  # covers no further
    unknown = Summary("b", upto="9", covered=10, version="v2")
    assert not await store.write_summary("s", unknown, previous="v1")  # no such message
    wrong = Summary("b", upto="3~1", covered=4, version="v2")
    assert not await store.write_summary("s", wrong, previous="v1")  # another generation
    later = Summary("b", upto="3", covered=4, version="v2")
    assert await store.write_summary("s", later, previous="v1")
    window, summary = await store.load_summarized("s", None)
    assert summary is not None and summary.version == "v2"
    assert [m.text for m in window] == ["m4", "m5"]
    window, _ = await store.load_summarized("s", 1)
    assert [m.text for m in window] == ["m5"]
    with pytest.raises(TypeError):
        await store.write_summary("s", "text", previous=None)  # type: ignore[arg-type]
    assert await store.load_summarized("nobody", 4) == ([], None)


async def test_a_rewind_before_the_summary_voids_it(store: BaseStore) -> None:
    folder = Folder()
    for n in range(5):
        await turn(store, folder, n)
        assert await flush_summaries(store, timeout=10)
    summary = await store.summary("s")
    assert summary is not None and summary.upto == "5"
    await store.truncate("s", after="2")  # drops 3..9, the summary's end with them
    assert await store.summary("s") is None
    window, none = await store.load_summarized("s", None)
    assert none is None and [m.id for m in window] == ["0", "1", "2"]
    for n in range(5, 8):
        await turn(store, folder, n)
        assert await flush_summaries(store, timeout=10)
    await check_exact(store)


async def test_retention_dropping_covered_messages_keeps_the_summary(backend: Backend) -> None:
    store = backend.variant(max_stored=8)
    try:
        folder = Folder()
        for n in range(8):
            await turn(store, folder, n)
            assert await flush_summaries(store, timeout=10)
        window, summary = await store.load_summarized("s", None)
        assert summary is not None and summary.covered == 16 - WINDOW
        assert [m.id for m in window] == [str(i) for i in range(12, 16)]
        assert len(await store.load("s")) == 8  # the rest is summarized, then dropped
    finally:
        await store.aclose()


async def test_a_failing_summarizer_is_retried_and_never_fails_a_turn(store: BaseStore) -> None:
    folder = Folder()
    folder.fail = 1
    for n in range(3):
        await turn(store, folder, n)
    assert await flush_summaries(store, timeout=10)
    metrics = await store.metrics()
    assert metrics.summaries_failed == 1 and metrics.summaries_pending == 1  # a retry is due
    assert await store.summary("s") is None
    for _ in range(60):  # the retry comes after a backoff of about a second
        await asyncio.sleep(0.1)
        await flush_summaries(store, timeout=10)
        if await store.summary("s") is not None:
            break
    summary, _ = await check_exact(store)
    assert summary is not None
    metrics = await store.metrics()
    assert metrics.summaries_written >= 1 and metrics.summaries_pending == 0


async def test_a_hanging_summarizer_times_out_and_turns_go_on(store: BaseStore) -> None:
    folder = Folder()
    folder.hang = True
    for n in range(4):
        await asyncio.wait_for(turn(store, folder, n, summary_timeout=0.2), 5)
    assert await flush_summaries(store, timeout=10)
    assert (await store.metrics()).summaries_failed >= 1
    summary, window = await check_exact(store)
    assert summary is None and len(window) == 8


async def test_aclose_cancels_a_running_summary_leaving_the_old_one_whole(
    backend: Backend,
) -> None:
    store = backend.variant()
    folder = Folder()
    try:
        for n in range(3):
            await turn(store, folder, n)
        assert await flush_summaries(store, timeout=10)
        before = await store.summary("s")
        assert before is not None
        folder.hang = True
        folder.entered.clear()
        await turn(store, folder, 3)
        await asyncio.wait_for(folder.entered.wait(), 5)
    finally:
        await store.aclose()
    leftover = [
        t for t in asyncio.all_tasks() if "_run" in repr(t.get_coro()) and "SummaryWork" in repr(t)
    ]
    assert leftover == []
    assert (await store.metrics()).summaries_pending == 0
    after = await store.summary("s")
    assert after == before
    await store.aclose()


async def test_cancelling_the_work_at_any_point_leaves_old_or_new(backend: Backend) -> None:
    store = backend.store
    folder = Folder()
    for n in range(4):
        await turn(store, folder, n, summary_lag=100)
    plan = fold_plan(folder, WINDOW, 0, 10.0)
    for delay in (0.0, 0.001, 0.003, 0.01, 0.03):
        work = SummaryWork(store)
        work.schedule("s", plan)
        await asyncio.sleep(delay)
        await work.aclose()
        summary, _ = await check_exact(store)  # whole, whichever it is
        assert summary is None or summary.covered in (4, 8 - WINDOW)
    work = SummaryWork(store)  # and the work left whole can still be done
    work.schedule("s", plan)
    assert await work.flush(timeout=10)
    summary, window = await check_exact(store)
    assert summary is not None and len(window) == WINDOW


async def test_observers_hear_of_each_summary() -> None:
    heard: list[tuple[str, int]] = []

    class Ear:
        def on_summary(self, session_id: str, seconds: float, covered: int) -> None:
            assert seconds >= 0
            heard.append((session_id, covered))

    store = MemoryStore(observers=[Ear()])
    folder = Folder()
    for n in range(4):
        await turn(store, folder, n)
        await flush_summaries(store)
    assert heard == [("s", 2), ("s", 4)]  # 6 and 8 messages: 2, then 4 left the window


async def test_settings_are_checked() -> None:
    async def fold(previous: str | None, messages: Sequence[Message]) -> str:
        return "x"

    assert SessionSettings(summarizer=fold).summarizer is fold
    with pytest.raises(ValueError, match="max_messages"):
        SessionSettings(summarizer=fold, max_messages=None)
    with pytest.raises(TypeError, match="summarize"):
        SessionSettings(summarizer=lambda previous, messages: "x")  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="summary_timeout"):
        SessionSettings(summary_timeout=0)
    with pytest.raises(ValueError, match="summary_lag"):
        SessionSettings(summary_lag=-1)

    class Plain:  # a store without summaries
        async def load(self, session_id: str, limit: int | None = None) -> list[Message]:
            return []

        async def append(self, session_id: str, messages: Any, **kw: Any) -> None: ...

        async def delete(self, session_id: str) -> bool:
            return False

        async def aclose(self) -> None: ...

    with pytest.raises(TypeError, match="keeps no summaries"):
        Session(Plain(), "s", summarizer=fold)


async def test_a_token_budget_holds_system_summary_and_window() -> None:
    store = MemoryStore()
    folder = Folder()
    for n in range(6):
        await turn(store, folder, n)
        await flush_summaries(store)
    provider = ScriptedProvider(["ok"])
    budget = 60
    async with Session(
        store,
        "s",
        provider=provider,
        max_messages=WINDOW,
        summarizer=folder,
        system="S" * 80,
        max_tokens=budget,
    ) as session:
        assert session.summary is not None
        await session.send("q")
    (call,) = provider.calls
    counted = session.settings.token_counter
    used = counted(Message("system", call.system or "")) + sum(counted(m) for m in call.messages)
    assert used <= budget or len(call.messages) == 1  # the question alone always goes
    assert len(call.messages) < WINDOW + 1  # the window shrank first


async def test_conversations_take_a_summarizer_and_aclose_stops_its_work() -> None:
    folder = Folder()
    folder.hang = True
    store = MemoryStore()
    chats = Conversations(
        store, provider=ScriptedProvider(), max_messages=WINDOW, summarizer=folder
    )
    for n in range(3):
        async with chats.session("s") as session:
            await session.send(f"question {n}")
    await asyncio.wait_for(folder.entered.wait(), 5)  # summarizing, and hanging
    assert (await store.metrics()).summaries_pending == 1
    await chats.aclose()
    running = [t for t in asyncio.all_tasks() if "SummaryWork" in repr(t)]
    assert running == []


async def test_a_long_history_without_a_summary_is_folded_in_chunks(store: BaseStore) -> None:
    """Messages beyond the longest window (here an import) are loaded and folded too."""
    await store.restore("s", [Message.user(f"m{i}") for i in range(50)])
    folder = Folder()
    await turn(store, folder, 0)
    assert await flush_summaries(store, timeout=10)
    summary, window = await check_exact(store)
    assert summary is not None and summary.covered == 52 - WINDOW
    assert all(len(ids) <= 3 * WINDOW for _, ids in folder.calls)  # chunks
    assert len(folder.calls) == 4  # 48 messages, 12 at a time
