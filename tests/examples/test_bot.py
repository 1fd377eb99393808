"""examples/bot.py: many simulated users at once, and shutdowns mid-run.

Every conversation must end up complete (or, after a shutdown, a prefix of what
was sent), in order, with each user message directly followed by its reply.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import pytest

from examples.bot import Bot, Incoming
from promptkit_async import Conversations, MemoryStore, RedisStore, store_from_env
from promptkit_async.providers import ScriptedProvider

from ..conftest import wait_until
from ._support import delete_keys

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator, Sequence

    from promptkit_async import Message, Store, StreamEvent

USERS, CONVS, MESSAGES = 50, 3, 4


def traffic() -> list[Incoming]:
    """Every user's conversations interleaved; conversation 0 is the session ``user-{id}``."""
    return [
        Incoming(str(user), conv, f"m{n} u{user} c{conv}")
        for n in range(MESSAGES)
        for conv in range(CONVS)
        for user in range(USERS)
    ]


@pytest.fixture(params=["memory", "redis", "sqlite"])
def make_store(request: pytest.FixtureRequest, prefix: str) -> Iterator[Callable[[], Store]]:
    if request.param == "memory":
        yield MemoryStore
        return
    if request.param == "sqlite":  # the bot's store as PROMPTKIT_STORE names it
        path = request.getfixturevalue("tmp_path") / "bot.db"
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setenv("PROMPTKIT_STORE", f"sqlite:///{path}")
        yield store_from_env
        return
    url: str = request.getfixturevalue("redis_url")
    try:
        yield lambda: RedisStore.from_url(url, prefix=prefix)
    finally:
        delete_keys(url, prefix)


async def check_conversations(
    chats: Conversations, sent: list[Incoming], *, complete: bool
) -> dict[str, int]:
    """Each session holds a prefix of its sent messages (all of them if ``complete``),
    as whole, adjacent user/reply pairs. Returns the number of turns per session."""
    expected: dict[str, list[str]] = {}
    for message in sent:
        expected.setdefault(message.session_id, []).append(message.text)
    turns = {}
    for session_id, texts in expected.items():
        history = await chats.history(session_id)
        assert len(history) % 2 == 0, (session_id, history)
        users = history[::2]
        replies = history[1::2]
        assert [m.role for m in users] == ["user"] * len(users)
        assert [m.role for m in replies] == ["assistant"] * len(replies)
        assert [m.content for m in users] == texts[: len(users)], session_id
        for user, reply in zip(users, replies, strict=True):
            # The scripted echo quotes the message it answers: the pair belongs together.
            assert reply.text.startswith(f'You said: "{user.text}".'), (user, reply)
        if complete:
            assert len(users) == len(texts), session_id
        turns[session_id] = len(users)
    return turns


async def test_many_users_many_conversations(make_store: Callable[[], Store]) -> None:
    sent = traffic()
    replies: list[tuple[Incoming, str]] = []

    async def on_reply(message: Incoming, reply: str) -> None:
        replies.append((message, reply))

    async with Conversations(make_store(), provider=ScriptedProvider()) as chats:
        bot = Bot(chats, on_reply=on_reply, max_concurrency=16, max_pending=64)
        queue: asyncio.Queue[Incoming] = asyncio.Queue(maxsize=100)
        runner = asyncio.create_task(bot.run(queue))
        for message in sent:
            await queue.put(message)
        await asyncio.wait_for(queue.join(), 20)
        bot.stop()
        assert await asyncio.wait_for(runner, 5) == []
        assert (bot.completed, bot.failed, bot.cancelled) == (len(sent), 0, 0)
        turns = await check_conversations(chats, sent, complete=True)
        assert len(turns) == USERS * CONVS
        assert {"user-7", "user-7-conv-1", "user-7-conv-2"} <= turns.keys()
        # Replies were delivered per session in the order the messages came.
        for session_id in ("user-0", "user-49-conv-2"):
            got = [m.text for m, _ in replies if m.session_id == session_id]
            assert got == [m.text for m in sent if m.session_id == session_id]
        assert len(chats.store.locks) == 0  # type: ignore[attr-defined]


async def test_graceful_stop_mid_run_leaves_only_whole_turns(
    make_store: Callable[[], Store],
) -> None:
    sent = traffic()
    async with Conversations(make_store(), provider=ScriptedProvider(delay=0.002)) as chats:
        bot = Bot(chats, max_concurrency=20, max_pending=200)
        queue: asyncio.Queue[Incoming] = asyncio.Queue()
        for message in sent:
            queue.put_nowait(message)
        runner = asyncio.create_task(bot.run(queue))
        await wait_until(lambda: bot.completed >= 60, timeout=10)
        bot.stop()
        leftover = await asyncio.wait_for(runner, 10)
        assert bot.failed == bot.cancelled == 0
        turns = await check_conversations(chats, sent, complete=False)
        saved = sum(turns.values())
        assert saved == bot.completed
        assert 60 <= saved < len(sent)
        # Nothing lost: saved + handed back + never taken == sent, and what was
        # handed back continues each conversation exactly where it stopped.
        assert saved + len(leftover) + queue.qsize() == len(sent)
        for message in leftover:
            done = turns[message.session_id]
            later = [m for m in sent if m.session_id == message.session_id][done:]
            assert message in later


class HangAfter:
    """Scripted (echo) replies for the first ``n`` calls; later calls never answer."""

    def __init__(self, n: int) -> None:
        self.inner = ScriptedProvider()
        self.n = n
        self.calls = 0

    async def stream_reply(
        self, messages: Sequence[Message], *, system: str | None = None
    ) -> AsyncIterator[StreamEvent]:
        self.calls += 1
        if self.calls > self.n:
            await asyncio.Event().wait()  # until cancelled
        async for event in self.inner.stream_reply(messages, system=system):
            yield event

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_abort_cancels_turns_in_flight_and_writes_nothing_half_done(
    make_store: Callable[[], Store],
) -> None:
    sent = traffic()
    # The first 30 replies come at once; every later one hangs until cancelled, so
    # turns are surely in flight at stop() however the machine schedules the test.
    provider = HangAfter(30)
    async with Conversations(make_store(), provider=provider) as chats:
        bot = Bot(chats, max_concurrency=30)
        queue: asyncio.Queue[Incoming] = asyncio.Queue()
        for message in sent:
            queue.put_nowait(message)
        runner = asyncio.create_task(bot.run(queue))
        # Wait until later turns are hanging in the provider, not merely queued:
        # only those are in flight when stop() comes.
        await wait_until(lambda: bot.completed >= 30 and provider.calls > 31, timeout=10)
        started = time.monotonic()
        bot.stop(grace=0.1)  # too short for the turns in flight: they are cancelled
        await asyncio.wait_for(runner, 10)
        assert time.monotonic() - started < 5  # promptly, not after every reply ends
        assert bot.cancelled > 0
        turns = await check_conversations(chats, sent, complete=False)
        assert sum(turns.values()) == bot.completed
        assert len(chats.store.locks) == 0  # type: ignore[attr-defined]


async def test_cancelling_run_aborts() -> None:
    async with Conversations(MemoryStore(), provider=ScriptedProvider(delay=0.05)) as chats:
        bot = Bot(chats)
        queue: asyncio.Queue[Incoming] = asyncio.Queue()
        queue.put_nowait(Incoming("1", 0, "hello"))
        runner = asyncio.create_task(bot.run(queue))
        await wait_until(lambda: bot.in_flight == 1)
        await asyncio.sleep(0.1)
        runner.cancel()
        with pytest.raises(asyncio.CancelledError):
            await runner
        assert bot.cancelled == 1
        assert await chats.history("user-1") == []
