"""The kept history, on every backend: retention apart from the window, pages, ids, times,
parts, restores and records written by 0.1.0."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import pytest

from promptkit_async import (
    DEFAULT_MAX_STORED,
    AudioPart,
    FilePart,
    ImagePart,
    InvalidMessage,
    MemoryStore,
    Message,
    MessageNotFound,
    PromptKitError,
    RedisStore,
    Session,
    SessionExists,
    SupportsHistory,
    TextPart,
    ThinkingPart,
    ToolCall,
    Turn,
)

from ..samples import a, u

if TYPE_CHECKING:
    from promptkit_async import BaseStore

    from ..backends import Backend

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.7\n" + b"\x00\xff binary \xfe" * 50


def every_part() -> list[Message]:
    """A message with each kind of part, and the other fields they travel with."""
    return [
        Message.user(
            [
                TextPart("Look at this: "),
                ImagePart(url="https://example.com/cat.png", detail="low"),
                ImagePart(data=PNG, media_type="image/png"),
                FilePart(data=PDF, media_type="application/pdf", filename="report.pdf"),
                FilePart(url="https://example.com/spec.pdf", media_type="application/pdf"),
                AudioPart(data=b"RIFF\x00\x01wav", media_type="audio/wav"),
                TextPart("and tell me ✨ what you see"),
            ],
            name="ada",
            source="upload",
        ),
        Message.assistant(
            [ThinkingPart("the user wants a description", signature="sig-abc=="), TextPart("ok")],
            tool_calls=[ToolCall("call_1", "describe", '{"n": 1}')],
        ),
        Message.assistant([ThinkingPart(redacted="ENCRYPTED=="), TextPart("")]),
        Message.tool("the tool failed: timeout", tool_call_id="call_1", is_error=True),
    ]


async def test_the_window_never_decides_what_is_kept(store: BaseStore) -> None:
    for turn in range(30):
        async with Session(store, "long", max_messages=20) as s:
            if turn:
                assert len(s.history) == min(20, 2 * turn)
            s.add(u(f"q{turn}"), a(f"a{turn}"))
    kept = await store.load("long")
    assert len(kept) == 60 == await store.count("long")
    assert [m.content for m in kept[:2]] == ["q0", "a0"]
    async with Session(store, "long", max_messages=20) as s:
        assert list(s.history) == kept[-20:]
    # A session with a small window truncates nothing for the readers after it.
    async with Session(store, "long", max_messages=4) as s:
        assert len(s.history) == 4
        s.add(u("q30"))
    assert await store.count("long") == 61
    async with Session(store, "long", max_messages=20) as s:
        assert [m.content for m in s.history] == [m.content for m in kept[-19:]] + ["q30"]


async def test_max_stored_trims_in_the_commit(backend: Backend) -> None:
    assert backend.store.max_stored == DEFAULT_MAX_STORED  # type: ignore[attr-defined]
    async with backend.variant(max_stored=10) as store:
        for turn in range(4):
            async with Session(store, "capped") as s:
                s.add(*(u(f"{turn}-{i}") for i in range(6)))
        kept = await store.load("capped")
        assert await store.count("capped") == 10
        assert [m.content for m in kept] == [f"2-{i}" for i in (2, 3, 4, 5)] + [
            f"3-{i}" for i in range(6)
        ]
        # Ids are never reused: the kept ones are the newest numbers.
        assert [m.id for m in kept] == [str(n) for n in range(14, 24)]
        with pytest.raises(MessageNotFound):
            await store.load("capped", before="3")  # trimmed
    with pytest.raises(ValueError, match="max_stored"):
        backend.variant(max_stored=0)


async def test_unlimited_retention(backend: Backend) -> None:
    async with backend.variant(max_stored=None) as store:
        await store.append("all", [u(str(i)) for i in range(150)])
        assert await store.count("all") == 150


async def test_paging_back_visits_every_kept_message_once_in_order(store: BaseStore) -> None:
    for turn in range(20):
        await store.append("paged", [u(f"q{turn}"), a(f"a{turn}"), a(f"b{turn}")])
    everything = await store.load("paged")
    assert len(everything) == 60
    seen: list[Message] = []
    page = await store.load("paged", limit=7)
    while page:
        seen[:0] = page
        assert page[-1].id is not None
        page = await store.load("paged", limit=7, before=page[0].id)
    assert seen == everything
    assert [m.id for m in seen] == [m.id for m in everything]
    assert len({m.id for m in seen}) == 60
    # Every message is a cursor; a page is oldest first and ends just before it.
    middle = everything[30]
    assert middle.id is not None
    assert await store.load("paged", limit=5, before=middle.id) == everything[25:30]
    assert await store.load("paged", before=middle.id) == everything[:30]
    assert await store.load("paged", limit=50, before=everything[2].id or "") == everything[:2]
    assert await store.load("paged", limit=3, before=everything[0].id or "") == []


async def test_an_unknown_cursor_is_a_typed_error_not_an_empty_page(store: BaseStore) -> None:
    await store.append("c", [u("one"), a("two")])
    for bad in ("999", "nope", "1~7", "0 "):
        with pytest.raises(MessageNotFound) as info:
            await store.load("c", limit=10, before=bad)
        assert isinstance(info.value, PromptKitError) and isinstance(info.value, LookupError)
        assert info.value.session_id == "c" and info.value.message_id == bad
        assert repr(bad) in str(info.value)
    with pytest.raises(MessageNotFound):
        await store.load("absent", before="0")
    with pytest.raises(TypeError, match="before"):
        await store.load("c", before=3)  # type: ignore[arg-type]


async def test_ids_and_times_are_given_at_commit(store: BaseStore) -> None:
    staged = [u("hello"), a("hi")]
    async with Session(store, "ids") as s:
        s.add(*staged)
        assert not s.committed
    assert [m.id for m in s.committed] == ["0", "1"]
    assert s.committed == tuple(staged)  # the same messages, now with ids and a time
    first, second = s.committed
    assert first.created_at == second.created_at  # one clock read per commit
    async with Session(store, "ids") as s:
        s.add(u("again").replace(id="client-side"))  # a staged id is replaced
    assert [m.id for m in s.committed] == ["2"]
    loaded = await store.load("ids")
    assert [m.id for m in loaded] == ["0", "1", "2"]
    assert [m.created_at for m in loaded] == [first.created_at] * 2 + [s.committed[0].created_at]
    assert loaded == await store.load("ids")  # stable across loads...
    assert [m.id for m in loaded] == [m.id for m in await store.load("ids")]
    for m in loaded:
        assert m.created_at is not None and m.created_at.utcoffset() == timedelta(0)
        assert abs(datetime.now(timezone.utc) - m.created_at) < timedelta(minutes=5)
    times = [m.created_at for m in loaded]
    assert times == sorted(times)  # type: ignore[type-var]


async def test_a_re_sent_commit_returns_the_ids_it_was_given(store: BaseStore) -> None:
    once = await store.commit(_turn("r", "turn-1", [u("x"), a("y")]))
    again = await store.commit(_turn("r", "turn-1", [u("x"), a("y")]))
    assert [m.id for m in once] == [m.id for m in again] == ["0", "1"]
    assert await store.count("r") == 2


def _turn(session_id: str, turn_id: str, messages: list[Message]) -> Turn:
    return Turn(session_id=session_id, messages=messages, turn_id=turn_id)


async def test_ids_are_the_same_for_every_reader(backend: Backend) -> None:
    store = backend.store
    await store.append("shared", [u(f"m{i}") for i in range(5)])
    expected = [(m.id, m.created_at) for m in await store.load("shared")]
    if isinstance(store, RedisStore):
        async with backend.variant(near_cache=10) as cached:
            await cached.load("shared", 3)
            await cached.append("shared", [a("more")])
            window = await cached.load("shared", 3)  # extended from our own commit
            fresh = await store.load("shared", 3)
            assert [(m.id, m.created_at) for m in window] == [(m.id, m.created_at) for m in fresh]
            expected = [(m.id, m.created_at) for m in await store.load("shared")]
    if backend.url is None:
        return  # an in-process store: no second process can read it
    assert isinstance(store, RedisStore)
    script = (
        "import asyncio, json, sys\n"
        "from promptkit_async import RedisStore\n"
        "async def main():\n"
        "    async with RedisStore.from_url(sys.argv[1], prefix=sys.argv[2]) as s:\n"
        "        ms = await s.load('shared')\n"
        "        print(json.dumps([[m.id, m.created_at.isoformat()] for m in ms]))\n"
        "asyncio.run(main())\n"
    )
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", script, backend.url, store.prefix],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    theirs = [(i, datetime.fromisoformat(t)) for i, t in json.loads(out.stdout)]
    assert theirs == expected


async def test_every_kind_of_part_round_trips(backend: Backend) -> None:
    messages = every_part()
    await backend.store.append("parts", messages)
    loaded = await backend.store.load("parts")
    assert loaded == messages
    image = loaded[0].parts[2]
    assert isinstance(image, ImagePart) and image.data == PNG
    assert loaded[0].text == "Look at this: and tell me ✨ what you see"
    assert loaded[1].text == "ok"  # thinking is not text
    assert [m.to_dict() for m in loaded] == [
        {**m.to_dict(), "id": str(i), "created_at": loaded[i].to_dict()["created_at"]}
        for i, m in enumerate(messages)
    ]
    if isinstance(backend.store, RedisStore):
        async with backend.variant(compress_above=64) as zipped:
            await zipped.append("zipped", messages)
            assert await zipped.load("zipped") == messages
            assert await backend.store.load("zipped") == messages


async def test_restore_writes_a_whole_conversation(store: BaseStore) -> None:
    assert isinstance(store, SupportsHistory)
    for turn in range(3):
        await store.append("orig", [u(f"q{turn}"), a(f"a{turn}")])
    exported = await store.load("orig")
    await store.delete("orig")
    restored = await store.restore("orig", exported)
    assert [m.to_dict() for m in restored] == [m.to_dict() for m in exported]
    assert [m.to_dict() for m in await store.load("orig")] == [m.to_dict() for m in exported]
    with pytest.raises(SessionExists) as info:
        await store.restore("orig", exported[:2])
    assert info.value.session_id == "orig"
    assert await store.count("orig") == 6  # nothing was merged
    await store.restore("orig", exported[:2], replace=True)
    assert await store.load("orig") == exported[:2]
    # The next commit continues the numbering and never goes back in time.
    async with Session(store, "orig") as s:
        s.add(u("after"))
    assert s.committed[0].id == "2"
    created = s.committed[0].created_at
    assert created is not None and exported[1].created_at is not None
    assert created >= exported[1].created_at
    # Messages without ids or times are numbered and stamped.
    fresh = await store.restore("new", [u("a"), a("b")])
    assert [m.id for m in fresh] == ["0", "1"] and all(m.created_at for m in fresh)
    assert await store.load("new", before="1") == [u("a")]


async def test_restore_refuses_ids_and_times_it_cannot_keep(store: BaseStore) -> None:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    bad = [
        [u("a").replace(id="0"), u("b")],  # ids on some only
        [u("a").replace(id="x"), u("b").replace(id="y")],  # not store ids
        [u("a").replace(id="4"), u("b").replace(id="6")],  # a gap
        [u("a").replace(created_at=t0), u("b").replace(created_at=t0 - timedelta(seconds=1))],
    ]
    for messages in bad:
        with pytest.raises(InvalidMessage):
            await store.restore("bad", messages)
    assert not await store.exists("bad")


async def test_records_of_0_1_0_load_with_positional_ids(backend: Backend) -> None:
    raw = backend.need_raw()
    old = [
        b'{"v":1,"r":"user","c":"written by 0.1.0"}',
        b'{"v":1,"r":"assistant","c":"old reply","m":{"k":1}}',
        b'{"v":1,"r":"user","c":"third"}',
    ]
    await raw.push("old", *old)
    store = backend.store
    loaded = await store.load("old")
    assert [m.content for m in loaded] == ["written by 0.1.0", "old reply", "third"]
    assert [m.id for m in loaded] == ["0", "1", "2"]
    assert all(m.created_at == datetime(1970, 1, 1, tzinfo=timezone.utc) for m in loaded)
    assert [m.id for m in await store.load("old", 2)] == ["1", "2"]
    assert await store.load("old", before="2") == loaded[:2]
    async with Session(store, "old") as s:
        assert list(s.history) == loaded
        s.add(a("new"))
    assert s.committed[0].id == "3"
    after = await store.load("old")
    assert [m.id for m in after] == ["0", "1", "2", "3"]
    assert after[:3] == loaded and after[3].created_at != loaded[0].created_at
    assert await store.load("old", limit=2, before="3") == loaded[1:]


def test_memory_store_is_bounded_by_default() -> None:
    assert MemoryStore().max_stored == DEFAULT_MAX_STORED == 10_000
    assert MemoryStore(max_stored=None).max_stored is None
    with pytest.raises(TypeError):
        MemoryStore(max_stored="10")  # type: ignore[arg-type]
