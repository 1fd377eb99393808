"""Conversations: settings held once for an application."""

from __future__ import annotations

from promptkit_async import (
    Conversations,
    MemoryStore,
    Message,
)


async def test_conversations_hold_settings_once() -> None:
    chats = Conversations(MemoryStore(), max_messages=4, system="Be brief.", ttl=60)
    async with chats:
        for i in range(3):
            async with chats.session("user-1") as s:
                assert s.messages[0].content == "Be brief."
                s.add(Message.user(f"q{i}"), Message.assistant(f"a{i}"))
        # The whole conversation is kept: the window is only what a turn sends.
        kept = ["q0", "a0", "q1", "a1", "q2", "a2"]
        assert [m.content for m in await chats.history("user-1")] == kept
        async with chats.session("user-1", max_messages=2) as s:
            assert len(s.history) == 2
        assert await chats.execute("user-1", "user", "no provider: appended") is None
        assert (await chats.history("user-1"))[-1].content == "no provider: appended"
        assert await chats.delete("user-1")
        assert await chats.history("user-1") == []
