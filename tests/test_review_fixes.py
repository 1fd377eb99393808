"""Edge cases found in review: each pins a behaviour users rely on."""

from __future__ import annotations

import asyncio
import pickle
from typing import Any

import pytest
import redis.asyncio as aioredis

from promptkit_async import (
    CommitOutcomeUnknown,
    Conversations,
    CorruptHistory,
    InvalidMessage,
    LockLost,
    MemoryStore,
    Message,
    MessageTooLarge,
    ProviderStreamError,
    RedisStore,
    ScriptedProvider,
    Session,
    SessionBusy,
    StoreUnavailable,
    ToolCall,
)


def test_errors_survive_pickling() -> None:
    errors: list[Exception] = [
        SessionBusy("s", 1.5),
        CorruptHistory("bad", session_id="s", index=3),
        CommitOutcomeUnknown("lost", session_id="s", turn_id="t", unsaved=[Message.user("x")]),
        LockLost("lost", session_id="s"),
        MessageTooLarge("big", size=10, limit=5),
        StoreUnavailable("down", session_id="s", unsaved=[Message.user("y")]),
    ]
    for error in errors:
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)
        assert copy.__dict__ == error.__dict__


def test_message_is_a_value() -> None:
    meta = {"lang": "en"}
    m = Message("user", "hi", metadata=meta)
    meta["lang"] = "fr"  # the caller's dict changing later changes nothing
    assert m.metadata == {"lang": "en"}
    assert {m, Message("user", "hi", metadata={"lang": "en"})} == {m}
    assert Message("assistant", "x", tool_calls=[]).tool_calls == ()  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage, match="surrogate"):
        Message.user("a\ud800b")


async def test_memory_store_ignores_empty_appends_like_redis() -> None:
    store = MemoryStore()
    await store.append("empty", [])
    assert not await store.exists("empty")
    assert (await store.metrics()).active_sessions == 0


async def test_memory_store_sweeps_mixed_ttls() -> None:
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    await store.append("long", [Message.user("x")], ttl=3600)
    for i in range(1000):
        await store.append(f"short-{i}", [Message.user("x")], ttl=1)
    now[0] = 10
    m = await store.metrics()
    assert m.active_sessions == 1 and list(store._data) == ["long"]
    for _ in range(500):  # rewriting one session keeps the heap bounded
        await store.append("long", [Message.user("x")], ttl=3600, max_messages=1)
    assert len(store._expiry) <= 2 * len(store._data) + 64


async def test_closing_a_stream_is_not_an_unanswered_question() -> None:
    store = MemoryStore()
    provider = ScriptedProvider(["one two three"])
    async with Session(store, "s", provider=provider, save_unanswered=True) as s:
        async with s.stream("hi") as reply:
            async for _ in reply:
                break
    assert await store.load("s") == []
    failing = ScriptedProvider([ProviderStreamError("cut")])
    async with Session(store, "s", provider=failing, save_unanswered=True) as s:
        with pytest.raises(ProviderStreamError):
            await s.send("kept")
    assert [m.content for m in await store.load("s")] == ["kept"]


async def test_a_tool_result_over_the_budget_still_carries_its_call() -> None:
    store = MemoryStore()
    call = ToolCall("c1", "lookup", "{}")
    provider = ScriptedProvider([Message.assistant("", tool_calls=[call]), "done"])
    async with Session(store, "t", provider=provider, max_tokens=12) as s:
        await s.send("look it up please")
        await s.send(Message.tool("r" * 400, tool_call_id="c1"))
    sent = provider.calls[-1].messages
    assert [m.role for m in sent] == ["assistant", "tool"]
    assert sent[0].tool_calls == (call,)


async def test_conversations_reject_bad_settings_at_once() -> None:
    with pytest.raises(ValueError, match="max_messages"):
        Conversations(MemoryStore(), max_messages=0)
    with pytest.raises(TypeError):
        Conversations(MemoryStore(), max_mesages=5)  # type: ignore[call-arg]
    chats = Conversations(MemoryStore(), commit_grace=2.0)
    async with chats.session("x", provider=ScriptedProvider(["hi"])) as s:
        assert (await s.send("hello")).content == "hi"
    with pytest.raises(ValueError, match="commit_grace"):
        Session(MemoryStore(), "x", commit_grace=float("nan"))


async def test_compressed_records_through_a_text_client_are_a_clear_error(
    redis_url: str, prefix: str
) -> None:
    raw = aioredis.Redis.from_url(redis_url)
    text = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await RedisStore(raw, prefix=prefix, compress_above=16).append(
            "z", [Message.user("compress me " * 20)]
        )
        with pytest.raises(CorruptHistory, match="decode_responses=True"):
            await RedisStore(text, prefix=prefix).load("z")
    finally:
        await RedisStore(raw, prefix=prefix).delete("z")
        await raw.delete(f"{prefix}:index")
        await raw.aclose()
        await text.aclose()


async def test_a_cancelled_lease_request_gives_the_lease_back(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix, distributed_lock=True)
    real: Any = client.execute_command
    sent = asyncio.Event()

    async def slow_set(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)  # the SET runs on Redis...
        if args[0] == "SET":
            sent.set()
            await asyncio.sleep(10)  # ...and its reply is "lost" to a cancellation
        return result

    monkeypatch.setattr(client, "execute_command", slow_set)
    try:
        task = asyncio.create_task(store.acquire_lease("l"))
        await sent.wait()
        assert await client.exists(store.key("l", "l"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if not await client.exists(store.key("l", "l")):
                break
            await asyncio.sleep(0.01)
        assert not await client.exists(store.key("l", "l"))
    finally:
        await client.delete(store.key("l", "l"))
        await client.aclose()


async def test_near_cache_after_a_settled_commit_is_reread(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_a = aioredis.Redis.from_url(redis_url)
    client_b = aioredis.Redis.from_url(redis_url)
    a_store = RedisStore(client_a, prefix=prefix, near_cache=10)
    b_store = RedisStore(client_b, prefix=prefix)
    real: Any = client_a.execute_command
    lose = {"reply": False}

    async def lossy(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if lose["reply"] and args[0] == "EVALSHA":
            lose["reply"] = False
            raise ConnectionError("reply lost")
        return result

    monkeypatch.setattr(client_a, "execute_command", lossy)
    try:
        async with Session(a_store, "n") as s:
            await b_store.append("n", [Message.user("from B")])
            s.add(Message.user("from A"))
            lose["reply"] = True  # applied, but A only learns it by settling
        async with Session(a_store, "n") as s:
            assert [m.content for m in s.history] == ["from B", "from A"]
    finally:
        await b_store.delete("n")
        await client_a.delete(f"{prefix}:index")
        await client_a.aclose()
        await client_b.aclose()


async def test_a_store_that_cannot_connect_says_not_saved_not_unknown() -> None:
    from .conftest import free_port

    store = RedisStore.from_url(
        f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5, retries=2
    )
    async with store:
        with pytest.raises(StoreUnavailable) as info:
            await store.append("s", [Message.user("x")])
        assert not isinstance(info.value, CommitOutcomeUnknown)
        assert "not saved" in str(info.value)
        assert info.value.unsaved == (Message.user("x"),)
        with pytest.raises(StoreUnavailable):
            await store.load("s")


async def test_the_store_resends_a_commit_whose_reply_was_lost(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RedisStore.from_url(redis_url, prefix=prefix, retries=2)
    client: Any = store.client
    real = client.execute_command
    sent: list[str] = []

    async def lossy(*args: Any, **kwargs: Any) -> Any:
        result = await real(*args, **kwargs)
        if args[0] == "EVALSHA" and not sent:
            sent.append("lost")
            raise ConnectionError("reply lost")  # applied, reply never seen
        return result

    monkeypatch.setattr(client, "execute_command", lossy)
    async with store:
        await store.append("r", [Message.user("once")])  # re-sent: applies once
        assert [m.content for m in await store.load("r")] == ["once"]
        await store.delete("r")
        await client.delete(f"{prefix}:index")


async def test_a_renewal_whose_cancellation_became_a_timeout_still_stops(
    redis_url: str, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On 3.11 a cancel that meets redis-py's own timeout can surface as TimeoutError."""
    import time

    from promptkit_async.stores._redis._scripts import RENEW as _renew_script

    client = aioredis.Redis.from_url(redis_url)
    store = RedisStore(client, prefix=prefix, distributed_lock=True, lease_ttl=0.06)
    real: Any = client.execute_command
    renewing = asyncio.Event()

    async def swallowing(*args: Any, **kwargs: Any) -> Any:
        if args[:2] == ("EVALSHA", _renew_script.sha):
            renewing.set()
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                raise TimeoutError("Timeout reading from socket") from None
        return await real(*args, **kwargs)

    monkeypatch.setattr(client, "execute_command", swallowing)
    try:
        started = time.monotonic()
        async with Session(store, "r") as s:
            await renewing.wait()
            s.add(Message.user("x"))
        assert time.monotonic() - started < 5
        assert not await real("EXISTS", store.key("r", "l"))
        assert [m.content for m in await store.load("r")] == ["x"]
    finally:
        await store.delete("r")
        await real("DEL", f"{prefix}:index")
        await client.aclose()
