"""SessionSettings: validated once, immutable, the one definition of the options."""

from __future__ import annotations

from typing import Any

import pytest

from promptkit_async import (
    Conversations,
    MemoryStore,
    ScriptedProvider,
    Session,
)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_messages": 0}, ValueError),
        ({"max_messages": "20"}, TypeError),
        ({"ttl": 0}, ValueError),
        ({"ttl": -5}, ValueError),
        ({"ttl": "1h"}, TypeError),
        ({"on_error": "ignore"}, ValueError),
        ({"on_load_error": "skip"}, ValueError),
        ({"lock_timeout": -1}, ValueError),
        ({"system": 3}, TypeError),
    ],
)
def test_bad_settings_fail_at_construction(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        Session(MemoryStore(), "x", **kwargs)


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
