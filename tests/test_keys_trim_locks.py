"""Pure pieces: the key schema, trimming, the lock registry."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from promptkit_async import LockRegistry, Message, SessionBusy, ToolCall, trim
from promptkit_async._trim import estimate_tokens
from promptkit_async.stores._redis import _keys

ids = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=80)


@given(ids, ids)
def test_distinct_ids_never_share_a_key(a: str, b: str) -> None:
    if a != b:
        assert _keys.key("pk", a, "h") != _keys.key("pk", b, "h")


@given(ids)
def test_key_round_trips_and_hash_tag_is_the_whole_id(sid: str) -> None:
    raw = _keys.key("pk", sid, "h")
    assert _keys.parse_key("pk", raw) == sid
    text = raw.decode()
    start = text.index("{")
    end = text.index("}", start)
    assert text[start + 1 : end] == _keys.encode_id(sid)
    assert key_slot(raw) == key_slot(_keys.key("pk", sid, "t"))


def test_glob_escape() -> None:
    assert _keys.glob_escape("a*b?[c]\\") == "a\\*b\\?\\[c\\]\\\\"


def test_parse_key_rejects_foreign_keys() -> None:
    assert _keys.parse_key("pk", b"other:{x}:h") is None
    assert _keys.parse_key("pk", b"pk:{x}:t") is None
    assert _keys.parse_key("pk", b"pk:{x}y}:h") is None
    assert _keys.parse_key("pk", b"\xff") is None


def u(i: int) -> Message:
    return Message.user(str(i))


def test_trim_keeps_the_newest() -> None:
    msgs = [u(i) for i in range(10)]
    assert trim(msgs, 3) == msgs[-3:]
    assert trim(msgs, None) == msgs
    assert trim(msgs, 20) == msgs


def test_trim_drops_orphan_tool_results() -> None:
    msgs = [
        u(0),
        Message.assistant("", tool_calls=[ToolCall("a", "f"), ToolCall("b", "f")]),
        Message.tool("ra", tool_call_id="a"),
        Message.tool("rb", tool_call_id="b"),
        Message.assistant("done"),
    ]
    assert [m.role for m in trim(msgs, 3)] == ["assistant"]
    assert [m.role for m in trim(msgs, 2)] == ["assistant"]
    assert trim(msgs, 4) == msgs[1:]
    assert trim(msgs[2:4], None) == []


def test_token_budget_keeps_the_newest_that_fit() -> None:
    msgs = [Message.user("x" * 40) for _ in range(10)]  # 10 + 4 tokens each
    assert len(trim(msgs, None, max_tokens=14 * 3)) == 3
    assert len(trim(msgs, 2, max_tokens=1000)) == 2
    assert trim(msgs, None, max_tokens=5) == []
    assert len(trim(msgs, None, max_tokens=100, count_tokens=lambda m: 1)) == 10


def test_token_budget_never_leaves_an_orphan() -> None:
    msgs = [
        Message.assistant("", tool_calls=[ToolCall("a", "f")]),
        Message.tool("r" * 400, tool_call_id="a"),
        Message.assistant("ok"),
    ]
    window = trim(msgs, None, max_tokens=estimate_tokens(msgs[1]) + estimate_tokens(msgs[2]))
    assert [m.role for m in window] == ["assistant"]


async def test_registry_serialises_and_empties() -> None:
    reg = LockRegistry()
    order: list[str] = []

    async def hold(name: str) -> None:
        entry = await reg.acquire("s")
        order.append(f"in {name}")
        await asyncio.sleep(0.01)
        order.append(f"out {name}")
        reg.release("s", entry)

    await asyncio.gather(hold("a"), hold("b"))
    assert order == ["in a", "out a", "in b", "out b"]
    assert len(reg) == 0


async def test_registry_timeout() -> None:
    reg = LockRegistry()
    entry = await reg.acquire("s")
    with pytest.raises(SessionBusy, match="'s' is busy"):
        await reg.acquire("s", timeout=0.01)
    assert "s" in reg
    reg.release("s", entry)
    assert len(reg) == 0
    again = await reg.acquire("s", timeout=0)
    reg.release("s", again)
