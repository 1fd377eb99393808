"""Pure trimming: the newest messages within the limits, never an orphan tool result first."""

from __future__ import annotations

from promptkit_async import Message, ToolCall, trim
from promptkit_async._trim import estimate_tokens


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
