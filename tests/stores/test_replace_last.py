"""``Turn.replace_last``: a compare-and-set on the newest message, on every backend.

A commit with ``replace_last=id`` removes the session's newest message only if
it still has that id, then appends the turn's messages, all in the one atomic,
exactly-once commit. Anything else refuses it with ``MessageNotFound`` and
writes nothing. It is what lets a client pop the newest message while others
append: a pop never removes a message it did not read.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    Message,
    MessageNotFound,
    OwnerMismatch,
    RedisStore,
    StoreUnavailable,
    Turn,
)
from promptkit_async._ids import new_turn_id

from ..samples import a, u

if TYPE_CHECKING:
    from promptkit_async import BaseStore

    from ..backends import Backend


def turn(
    session_id: str,
    *messages: Message,
    replace_last: str | None = None,
    turn_id: str | None = None,
    owner: str | None = None,
) -> Turn:
    return Turn(
        session_id=session_id,
        messages=messages,
        turn_id=turn_id or new_turn_id(),
        owner=owner,
        replace_last=replace_last,
    )


async def kept(store: BaseStore, session_id: str) -> list[tuple[str | None, str]]:
    return [(m.id, m.text) for m in await store.load(session_id)]


async def test_it_removes_the_newest_message_and_appends_in_one_commit(store: BaseStore) -> None:
    await store.commit(turn("s", u("q1"), a("r1"), u("q2")))
    [newest] = await store.load("s", limit=1)
    assert newest.id is not None
    stored = await store.commit(turn("s", a("r2"), replace_last=newest.id))
    assert [m.text for m in stored] == ["r2"]
    assert [t for _, t in await kept(store, "s")] == ["q1", "r1", "r2"]
    # The new message never reuses the removed one's id, and its id is the one loaded.
    assert stored[0].id != newest.id
    assert [m.id for m in await store.load("s", limit=1)] == [stored[0].id]
    assert await store.count("s") == 3


async def test_with_no_messages_it_is_a_removal_down_to_an_empty_session(
    store: BaseStore,
) -> None:
    await store.commit(turn("s", u("q1"), a("r1")))
    removed: list[str] = []
    while newest := await store.load("s", limit=1):
        assert newest[0].id is not None
        await store.commit(turn("s", replace_last=newest[0].id))
        removed.append(newest[0].text)
    assert removed == ["r1", "q1"]
    assert await store.load("s") == []
    assert await store.count("s") == 0
    # The session goes on, with ids never given before.
    again = await store.commit(turn("s", u("q again")))
    assert [t for _, t in await kept(store, "s")] == ["q again"]
    assert again[0].id not in {"0", "1"}


async def test_a_newest_message_that_changed_refuses_it_and_writes_nothing(
    store: BaseStore,
) -> None:
    await store.commit(turn("s", u("q1"), a("r1")))
    [read] = await store.load("s", limit=1)
    assert read.id is not None
    await store.commit(turn("s", u("q2")))  # another writer, after the read
    before = await kept(store, "s")
    with pytest.raises(MessageNotFound) as info:
        await store.commit(turn("s", a("mine"), replace_last=read.id))
    assert info.value.session_id == "s"
    assert info.value.message_id == read.id
    assert "newest message is not" in str(info.value)
    assert await kept(store, "s") == before
    # An older message that is still kept is not the newest either.
    with pytest.raises(MessageNotFound):
        await store.commit(turn("s", replace_last=before[0][0] or "?"))
    assert await kept(store, "s") == before


async def test_an_empty_or_unknown_session_refuses_it(store: BaseStore) -> None:
    with pytest.raises(MessageNotFound):
        await store.commit(turn("nobody", u("x"), replace_last="0"))
    assert await store.load("nobody") == []
    await store.commit(turn("s", u("only")))
    with pytest.raises(MessageNotFound):
        await store.commit(turn("s", replace_last="1"))  # not an id this session gave
    assert [t for _, t in await kept(store, "s")] == ["only"]


async def test_a_refused_commit_does_not_use_up_its_turn_id(store: BaseStore) -> None:
    await store.commit(turn("s", u("q1")))
    tid = new_turn_id()
    with pytest.raises(MessageNotFound):
        await store.commit(turn("s", a("x"), replace_last="7", turn_id=tid))
    [newest] = await store.load("s", limit=1)
    assert newest.id is not None
    await store.commit(turn("s", a("r1"), replace_last=newest.id, turn_id=tid))
    assert [t for _, t in await kept(store, "s")] == ["r1"]


async def test_a_resent_commit_applies_once_even_though_the_tail_moved(store: BaseStore) -> None:
    await store.commit(turn("s", u("q1"), a("r1")))
    [newest] = await store.load("s", limit=1)
    assert newest.id is not None
    again = turn("s", a("r1 again"), replace_last=newest.id)
    first = await store.commit(again)
    second = await store.commit(again)  # a lost reply re-sent: already applied
    assert [m.text for m in second] == ["r1 again"]
    assert [m.id for m in second] == [m.id for m in first]
    assert [t for _, t in await kept(store, "s")] == ["q1", "r1 again"]


async def test_concurrent_removals_of_the_same_message_apply_once(store: BaseStore) -> None:
    await store.commit(turn("s", u("q1"), a("r1"), u("q2")))
    [newest] = await store.load("s", limit=1)
    assert newest.id is not None
    results = await asyncio.gather(
        *(store.commit(turn("s", replace_last=newest.id)) for _ in range(8)),
        return_exceptions=True,
    )
    assert sum(1 for r in results if not isinstance(r, BaseException)) == 1
    assert all(isinstance(r, MessageNotFound) for r in results if isinstance(r, BaseException))
    assert [t for _, t in await kept(store, "s")] == ["q1", "r1"]


async def test_an_aborted_removal_never_applies(store: BaseStore) -> None:
    await store.commit(turn("s", u("q1"), a("r1")))
    [newest] = await store.load("s", limit=1)
    assert newest.id is not None
    doomed = turn("s", replace_last=newest.id)
    assert await store.settle_turn("s", doomed.turn_id) == "aborted"
    with pytest.raises(StoreUnavailable, match="aborted"):
        await store.commit(doomed)
    assert [t for _, t in await kept(store, "s")] == ["q1", "r1"]


async def test_ids_stay_cursors_after_a_removal(store: BaseStore) -> None:
    await store.commit(turn("s", u("q1"), a("r1"), u("q2"), a("r2")))
    [newest] = await store.load("s", limit=1)
    assert newest.id is not None
    await store.commit(turn("s", a("r2 bis"), u("q3"), replace_last=newest.id))
    every = await store.load("s")
    assert [m.text for m in every] == ["q1", "r1", "q2", "r2 bis", "q3"]
    assert len({m.id for m in every}) == 5
    page = await store.load("s", limit=2, before=every[-1].id)
    assert [m.text for m in page] == ["q2", "r2 bis"]
    # and a rewind by `after` still finds the new messages by their ids
    await store.commit(Turn(session_id="s", messages=(), turn_id=new_turn_id(), after=every[3].id))
    assert [t for _, t in await kept(store, "s")] == ["q1", "r1", "q2", "r2 bis"]


async def test_the_owner_check_still_applies(store: BaseStore) -> None:
    await store.commit(turn("s", u("q1"), owner="ada"))
    [newest] = await store.load("s", limit=1)
    assert newest.id is not None
    with pytest.raises(OwnerMismatch):
        await store.commit(turn("s", replace_last=newest.id, owner="bob"))
    assert [t for _, t in await kept(store, "s")] == ["q1"]


async def test_a_near_cache_never_serves_the_removed_message(backend: Backend) -> None:
    if not isinstance(backend.store, RedisStore):
        pytest.skip("only RedisStore has a near cache")
    cached = backend.variant(near_cache=100)
    try:
        await cached.commit(turn("s", u("q1"), a("r1")))
        assert [m.text for m in await cached.load("s", limit=5)] == ["q1", "r1"]
        [newest] = await cached.load("s", limit=1)
        assert newest.id is not None
        await cached.commit(turn("s", a("r1 bis"), replace_last=newest.id))
        assert [m.text for m in await cached.load("s", limit=5)] == ["q1", "r1 bis"]
        # another store on the same data removes it: the cache sees the new version
        [newest] = await cached.load("s", limit=1)
        assert newest.id is not None
        await backend.store.commit(turn("s", replace_last=newest.id))
        assert [m.text for m in await cached.load("s", limit=5)] == ["q1"]
    finally:
        await cached.aclose()


def test_the_turn_checks_its_arguments() -> None:
    with pytest.raises(ValueError, match="not both"):
        Turn(session_id="s", messages=(), turn_id="t", after="1", replace_last="2")
    with pytest.raises(TypeError, match="replace_last"):
        Turn(session_id="s", messages=(), turn_id="t", replace_last="")
    with pytest.raises(TypeError, match="replace_last"):
        Turn(session_id="s", messages=(), turn_id="t", replace_last=3)  # type: ignore[arg-type]
    removal = Turn(session_id="s", messages=(), turn_id="t", replace_last="4")
    assert removal.replace_last == "4" and removal.messages == ()
    assert "replace_last='4'" in repr(removal)
    assert removal._replace(fence="f").replace_last == "4"
    assert Turn(session_id="s", messages=(u("x"),), turn_id="t").replace_last is None
