"""Conversations a chat app lists, renames, edits, regenerates, branches and erases, per owner,
on every backend (memory, fakeredis, a real Redis, a real Cluster)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    ConversationExists,
    ConversationInfo,
    ConversationNotFound,
    InvalidCursor,
    Message,
    MessageNotFound,
    OwnerMismatch,
    RedisStore,
    ScriptedProvider,
    Session,
    SessionStateError,
)

from ..samples import a, u

if TYPE_CHECKING:
    from promptkit_async import BaseStore

    from ..backends import Backend


async def turn(store: BaseStore, session_id: str, *messages: Message, owner: str = "ada") -> None:
    async with Session(store, session_id, owner=owner) as s:
        s.add(*messages)
    # Times are in ms: a listing orders commits of one ms by id, so each turn
    # here gets a ms of its own.
    await asyncio.sleep(0.003)


async def info_of(store: BaseStore, session_id: str) -> ConversationInfo:
    found = await store.info(session_id)
    assert found is not None, session_id
    return found


async def contents(store: BaseStore, session_id: str) -> list[tuple[str | None, str]]:
    return [(m.id, m.text) for m in await store.load(session_id)]


# -- owner and info --------------------------------------------------------------------


async def test_the_first_commit_records_the_owner_and_another_owner_writes_nothing(
    store: BaseStore,
) -> None:
    await turn(store, "c1", u("mine"), a("yes"))
    with pytest.raises(OwnerMismatch) as info:
        await turn(store, "c1", u("intruder"), owner="bob")
    assert info.value.session_id == "c1" and "ada" not in str(info.value)
    assert await contents(store, "c1") == [("0", "mine"), ("1", "yes")]
    assert (await info_of(store, "c1")).owner == "ada"
    assert await store.info("c1", owner="bob") is None
    assert (await store.conversations("bob")).items == ()
    # A session without an owner is not checked (the owner stays the recorded one).
    await turn(store, "c1", u("no owner given"), owner=None)  # type: ignore[arg-type]
    assert (await info_of(store, "c1")).owner == "ada"


async def test_info_fields_and_their_clocks(store: BaseStore) -> None:
    assert await store.info("nobody") is None
    await turn(store, "i", u("one"))
    first = await info_of(store, "i")
    assert (first.id, first.owner, first.title, first.message_count) == ("i", "ada", None, 1)
    assert first.metadata == {} and first.forked_from is None
    await asyncio.sleep(0.005)
    await turn(store, "i", a("two"), u("three"))
    second = await info_of(store, "i")
    kept = await store.load("i")
    assert second.created_at == first.created_at == kept[0].created_at  # set once
    assert kept[-1].created_at is not None
    assert second.updated_at == kept[-1].created_at > first.updated_at  # the message clock
    assert second.created_at.utcoffset() == timedelta(0)
    assert second.message_count == 3


async def test_update_info_merges_removes_and_never_creates(backend: Backend) -> None:
    store = backend.store
    await turn(store, "t", u("hi"))
    assert await store.update_info("t", title="Trip", metadata={"pin": True, "n": [1, 2]})
    assert await store.update_info("t", metadata={"n": None, "color": "red"})
    info = await info_of(store, "t")
    assert info.title == "Trip" and info.metadata == {"pin": True, "color": "red"}
    assert await store.update_info("t", title=None)
    assert (await info_of(store, "t")).title is None
    assert await contents(store, "t") == [("0", "hi")]  # the history is never touched
    with pytest.raises(OwnerMismatch):
        await store.update_info("t", title="Mine now", owner="bob")
    assert await store.update_info("ghost", title="x") is False
    assert not await store.exists("ghost")
    await store.delete("t")
    assert await store.update_info("t", title="back?") is False
    assert not await backend.holds("t")
    with pytest.raises(TypeError):
        await store.update_info("t", title=5)  # type: ignore[arg-type]


# -- listing ---------------------------------------------------------------------------


async def test_listing_is_newest_first_and_pages(store: BaseStore) -> None:
    for i in range(5):
        await turn(store, f"conv-{i}", u(f"q{i}"))
    await turn(store, "other", u("not ada's"), owner="bob")
    await turn(store, "conv-1", a("moved up"))
    page = await store.conversations("ada", limit=3)
    assert [i.id for i in page.items] == ["conv-1", "conv-4", "conv-3"]
    assert page.next_cursor is not None
    rest = await store.conversations("ada", limit=3, cursor=page.next_cursor)
    assert [i.id for i in rest.items] == ["conv-2", "conv-0"] and rest.next_cursor is None
    assert [i.id for i in (await store.conversations("bob")).items] == ["other"]
    assert page.items[0].message_count == 2
    with pytest.raises(InvalidCursor):
        await store.conversations("ada", cursor="not-a-cursor")
    with pytest.raises(InvalidCursor):  # another owner's cursor is no cursor of theirs
        await store.conversations("bob", cursor=page.next_cursor)
    with pytest.raises(ValueError):
        await store.conversations("ada", limit=0)


async def test_a_listing_has_no_ghosts_after_delete_or_expiry(backend: Backend) -> None:
    store = backend.store
    await turn(store, "keep", u("a"))
    await turn(store, "gone", u("b"))
    await turn(store, "old", u("c"))
    await store.delete("gone")
    await backend.age("old", 0.05)
    await backend.advance(0.2)
    assert [i.id for i in (await store.conversations("ada")).items] == ["keep"]


async def test_paging_under_concurrent_commits_visits_each_conversation_once(
    store: BaseStore,
) -> None:
    ids = [f"p{i:02d}" for i in range(12)]
    for sid in ids:
        await turn(store, sid, u(sid))
    seen: list[str] = []
    page = await store.conversations("ada", limit=4)
    seen += [i.id for i in page.items]
    while page.next_cursor is not None:
        # Commits move conversations to the top meanwhile, and a new one appears.
        await turn(store, ids[0], a("bump"))
        await turn(store, ids[-1], a("bump"))
        await turn(store, f"new-{len(seen)}", u("new"))
        page = await store.conversations("ada", limit=4, cursor=page.next_cursor)
        seen += [i.id for i in page.items]
    assert sorted(seen) == ids  # every one that existed throughout, exactly once
    fresh = await store.conversations("ada", limit=3)
    assert fresh.items[0].id.startswith("new-")  # a new first page sees the newest


# -- rewind, regenerate, truncate ------------------------------------------------------


async def test_rewind_and_new_messages_are_one_commit(store: BaseStore) -> None:
    await turn(store, "r", u("q1"), a("a1"), u("q2"), a("a2"))
    async with Session(store, "r", owner="ada") as s:
        s.rewind(after="2")  # edit the question after q2's answer... keep up to q2
        assert [m.text for m in s.history] == ["q1", "a1", "q2"]
        s.add(a("a2, better"))
    assert await contents(store, "r") == [
        ("0", "q1"),
        ("1", "a1"),
        ("2", "q2"),
        ("3~1", "a2, better"),
    ]
    async with Session(store, "r", owner="ada") as s:
        s.rewind(after="1")
        s.add(u("q2, edited"))
    kept = await contents(store, "r")
    assert kept == [("0", "q1"), ("1", "a1"), ("2~2", "q2, edited")]
    assert len({i for i, _ in kept}) == 3  # no id ever names two contents
    with pytest.raises(MessageNotFound):
        async with Session(store, "r") as s:
            s.rewind(after="3~1")  # that message was dropped
    async with Session(store, "r") as s:
        s.add(u("x"))
        with pytest.raises(SessionStateError):
            s.rewind(after="0")


async def test_a_cancelled_or_failed_rewind_changes_nothing(store: BaseStore) -> None:
    await turn(store, "c", u("q"), a("a"), u("q2"))
    before = await contents(store, "c")
    with pytest.raises(RuntimeError):
        async with Session(store, "c") as s:
            s.rewind(after="0")
            s.add(a("new"))
            raise RuntimeError("the handler failed")
    entered = asyncio.Event()

    async def cancelled() -> None:
        async with Session(store, "c") as s:
            s.rewind(after="0")
            entered.set()
            await asyncio.sleep(3600)

    task = asyncio.create_task(cancelled())
    await entered.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await contents(store, "c") == before


async def test_regenerate_replaces_exactly_the_last_reply(store: BaseStore) -> None:
    await turn(store, "g", u("q1"), a("a1"), u("q2"), a("a2"), Message.tool("t", tool_call_id="x"))
    provider = ScriptedProvider(["a2, again"])
    async with Session(store, "g", provider=provider) as s:
        reply = s.regenerate()
        assert await reply.text() == "a2, again"
    assert [t for _, t in await contents(store, "g")] == ["q1", "a1", "q2", "a2, again"]
    sent = provider.calls[0].messages
    assert [m.text for m in sent] == ["q1", "a1", "q2"]  # the question once, not twice
    async with Session(store, "empty", provider=ScriptedProvider()) as s:
        with pytest.raises(SessionStateError):
            s.regenerate()


async def test_truncate_outside_a_block(store: BaseStore) -> None:
    await turn(store, "tr", u("q1"), a("a1"), u("q2"))
    await store.truncate("tr", after="1")
    assert await contents(store, "tr") == [("0", "q1"), ("1", "a1")]
    with pytest.raises(MessageNotFound):
        await store.truncate("tr", after="2")
    with pytest.raises(OwnerMismatch):
        await store.truncate("tr", after="0", owner="bob")
    assert len(store.locks) == 0
    await turn(store, "tr", u("q2 again"))
    assert (await store.load("tr"))[-1].id == "2~1"


# -- fork ------------------------------------------------------------------------------


async def test_fork_up_to_a_message_keeps_ids_and_refuses_an_existing_id(store: BaseStore) -> None:
    await turn(store, "src", u("q1"), a("a1"), u("q2"), a("a2"))
    await store.update_info("src", title="Trip", metadata={"k": 1})
    forked = await store.fork("src", "branch", upto="1")
    assert (forked.id, forked.owner, forked.title, forked.forked_from) == (
        "branch",
        "ada",
        "Trip",
        "src",
    )
    assert forked.metadata == {"k": 1} and forked.message_count == 2
    src, branch = await store.load("src"), await store.load("branch")
    assert [(m.id, m.created_at) for m in branch] == [(m.id, m.created_at) for m in src[:2]]
    await turn(store, "branch", u("another q2"))
    assert (await store.load("branch"))[-1].id not in {m.id for m in src}
    with pytest.raises(ConversationExists):
        await store.fork("src", "branch")
    assert len(await store.load("branch")) == 3  # untouched
    again = await store.fork("src", "branch", upto="1", title="Retry", replace=True)
    assert again.title == "Retry" and again.message_count == 2
    second = await store.fork("src", "branch-2", upto="1")
    assert second.message_count == 2  # one can branch again from the same point
    with pytest.raises(MessageNotFound):
        await store.fork("src", "nope", upto="99")
    with pytest.raises(ConversationNotFound):
        await store.fork("no-such", "nope")
    with pytest.raises(OwnerMismatch):
        await store.fork("src", "stolen", owner="bob")
    assert not await store.exists("nope") and not await store.exists("stolen")
    listed = [i.id for i in (await store.conversations("ada")).items]
    assert set(listed) == {"src", "branch", "branch-2"}


async def test_a_fork_keeps_the_source_ttl(store: BaseStore) -> None:
    async with Session(store, "short", owner="ada", ttl=timedelta(minutes=5)) as s:
        s.add(u("hi"))
    await store.fork("short", "short-copy")
    left = await store.ttl("short-copy")
    assert left is not None and 0 < left <= 300


# -- erasure ---------------------------------------------------------------------------


async def test_delete_owner_leaves_nothing_of_theirs(backend: Backend) -> None:
    store = backend.store
    for i in range(4):
        await turn(store, f"e{i}", u("x"))
    await store.fork("e0", "e0-fork")
    page = await store.conversations("ada", limit=2)
    assert page.next_cursor is not None  # a listing snapshot exists now
    await turn(store, "bobs", u("y"), owner="bob")
    assert await store.delete_owner("ada") == 5
    assert (await store.conversations("ada")).items == ()
    for sid in ("e0", "e1", "e2", "e3", "e0-fork"):
        assert not await backend.holds(sid)
    assert [i.id for i in (await store.conversations("bob")).items] == ["bobs"]
    if isinstance(store, RedisStore):
        from ..backends import RedisBackend

        assert isinstance(backend, RedisBackend)
        pattern = f"{store.prefix}:owner:{{ada}}*"
        assert [k async for k in backend.client.scan_iter(match=pattern)] == []
    assert await store.delete_owner("ada") == 0
