"""The Message model: helpers, validation, immutability, the OpenAI-shaped dict."""

from __future__ import annotations

import json
from typing import Any

import pytest

from promptkit_async import (
    InvalidMessage,
    Message,
    ToolCall,
)


def test_helpers_build_each_role() -> None:
    assert Message.user("hi").role == "user"
    assert Message.system("rules").role == "system"
    assert Message.assistant("ok").role == "assistant"
    t = Message.tool("42", tool_call_id="c1")
    assert (t.role, t.tool_call_id) == ("tool", "c1")
    assert Message.user("hi", lang="en").metadata == {"lang": "en"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"role": "wizard", "content": "x"}, "unknown role 'wizard'"),
        ({"role": "user", "content": 42}, "a sequence of parts, got int"),
        (
            {"role": "user", "content": None},
            "a sequence of parts, got NoneType",
        ),
        ({"role": "tool", "content": "x"}, "tool_call_id"),
        ({"role": "user", "content": "x", "tool_call_id": "c"}, "only tool messages"),
        (
            {"role": "user", "content": "x", "tool_calls": (ToolCall("c", "f"),)},
            "only assistant messages carry tool_calls",
        ),
        ({"role": "user", "content": "x", "metadata": {"k": object()}}, "not JSON"),
        ({"role": "user", "content": "x", "metadata": {1: "v"}}, "key"),
        ({"role": "user", "content": "x", "metadata": {"k": float("nan")}}, "finite"),
    ],
)
def test_bad_messages_are_clear_errors(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidMessage, match=match):
        Message(**kwargs)


def test_invalid_message_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        Message("bogus")  # type: ignore[arg-type]


def test_messages_are_immutable() -> None:
    m = Message.user("hi")
    with pytest.raises(AttributeError):
        m.content = "changed"  # type: ignore[misc]


def test_to_dict_is_openai_shaped() -> None:
    m = Message.assistant("", tool_calls=[ToolCall("c1", "f", "{}")])
    assert m.to_dict() == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
        ],
    }


def test_message_is_a_value() -> None:
    meta = {"lang": "en"}
    m = Message("user", "hi", metadata=meta)
    meta["lang"] = "fr"  # the caller's dict changing later changes nothing
    assert m.metadata == {"lang": "en"}
    assert {m, Message("user", "hi", metadata={"lang": "en"})} == {m}
    assert Message("assistant", "x", tool_calls=[]).tool_calls == ()  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage, match="surrogate"):
        Message.user("a\ud800b")


def test_metadata_is_copied_all_the_way_down_as_json_gives_it_back() -> None:
    tags: Any = ["draft"]
    nested: Any = {"by": {"name": "ann", "ids": (1, 2)}}
    m = Message.user("hi", tags=tags, nested=nested)
    tags.append("later")  # a list the caller reuses for the next message
    nested["by"]["name"] = "bob"
    assert m.metadata == {"tags": ["draft"], "nested": {"by": {"name": "ann", "ids": [1, 2]}}}
    # Tuples come back as lists: what a store's load would decode.
    meta: Any = m.metadata
    assert type(meta["nested"]["by"]["ids"]) is list
    assert json.loads(json.dumps(m.metadata)) == m.metadata
    with pytest.raises(InvalidMessage, match=r"metadata\.nested\.by\.bad"):
        Message.user("hi", nested={"by": {"bad": {1, 2}}})  # type: ignore[dict-item]


def test_tool_calls_may_be_given_as_dicts() -> None:
    from promptkit_async import ToolCall

    wire = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    flat = {"id": "c2", "name": "g", "arguments": '{"x":1}'}
    m = Message.assistant("", tool_calls=[wire, flat])
    assert m.tool_calls == (ToolCall("c1", "f", "{}"), ToolCall("c2", "g", '{"x":1}'))
    assert Message("assistant", tool_calls=[wire]).tool_calls == (ToolCall("c1", "f", "{}"),)  # type: ignore[arg-type]
    with pytest.raises(InvalidMessage, match="needs id and name"):
        Message.assistant("", tool_calls=[{"function": {}}])
    with pytest.raises(InvalidMessage, match="ToolCall or dict"):
        Message.assistant("", tool_calls=["call"])  # type: ignore[list-item]


def test_a_stamped_message_is_an_ordinary_frozen_message() -> None:
    import copy
    import dataclasses
    import pickle
    from datetime import datetime, timezone

    from promptkit_async._messages import stamped, stored_text

    when = datetime(2024, 1, 2, tzinfo=timezone.utc)
    m = Message.assistant("hi", tool_calls=[{"id": "c1", "name": "f"}], lang="en")
    s = stamped(m, "7", when)
    assert type(s) is Message and (s.id, s.created_at) == ("7", when)
    assert s == m and hash(s) == hash(m) and s.tool_calls == m.tool_calls
    assert s.metadata == {"lang": "en"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.id = "8"  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(s)).id == "7" and copy.copy(s) == s
    assert s.replace(content="yo").id == "7"
    t = stored_text("user", "héllo", "3", when)
    assert t is not None and type(t) is Message
    assert (t.role, t.content, t.id, t.metadata) == ("user", "héllo", "3", {})
    assert stored_text("tool", "x", "3", when) is None
    with pytest.raises(InvalidMessage, match="surrogate"):
        stored_text("user", "a\ud800b", "3", when)
