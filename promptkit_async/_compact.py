"""Compaction of stale tool output in what a model is sent (never in what is stored).

A tool loop that fetched a 30 KB document keeps sending it on every later turn
until it leaves the window, long after the model used it. With compaction on
(``keep_tool_turns=N``), a tool result from before the last ``N`` turns (a turn
starts at each user message) and larger than ``tool_output_threshold`` bytes
is sent as a short text saying what was elided and how large it was. The
result keeps its ``tool_call_id`` (and ``is_error``), so every call still has
its result and every result its call, as each provider's format requires; the
stored history keeps the original, which ``store.load`` returns unchanged.

Off by default: it changes what the model reads, and a model that quotes an
old tool result would silently lose it. Pure functions, no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._messages import Message, message_bytes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._settings import SessionSettings

__all__ = ["DEFAULT_TOOL_OUTPUT_THRESHOLD", "compact_tool_output", "compacted", "elided"]

#: Results at or below this many bytes are sent whole, however old: a
#: placeholder would save little and lose the value.
DEFAULT_TOOL_OUTPUT_THRESHOLD = 1024


def elided(message: Message, size: int) -> Message:
    """The placeholder sent instead of a stale tool result of ``size`` bytes."""
    where = f" (stored as message {message.id})" if message.id is not None else ""
    text = (
        f"[tool output elided: {size:,} bytes, from a turn the conversation has moved past"
        f"{where}. Call the tool again if it is needed.]"
    )
    return Message(
        "tool",
        text,
        tool_call_id=message.tool_call_id,
        name=message.name,
        is_error=message.is_error,
        id=message.id,
        created_at=message.created_at,
    )


def compact_tool_output(
    messages: Sequence[Message],
    keep_tool_turns: int | None,
    threshold: int = DEFAULT_TOOL_OUTPUT_THRESHOLD,
) -> list[Message]:
    """``messages`` with the large tool results of older turns replaced by placeholders.

    ``keep_tool_turns=None`` turns compaction off (a copy is returned as is).
    The turn in progress (from the newest user message on) counts as one of
    the kept turns, so a tool loop always sees the results it just got.
    """
    out = list(messages)
    if keep_tool_turns is None:
        return out
    users = [i for i, message in enumerate(out) if message.role == "user"]
    if len(users) < keep_tool_turns:
        return out  # fewer turns than are kept whole: nothing is stale
    for i in range(users[-keep_tool_turns]):
        message = out[i]
        if message.role == "tool":
            size = message_bytes(message)
            if size > threshold:
                out[i] = elided(message, size)
    return out


def compacted(messages: list[Message], settings: SessionSettings) -> list[Message]:
    """``messages`` as a session with ``settings`` sends them (the list itself when off)."""
    if settings.keep_tool_turns is None:
        return messages
    return compact_tool_output(messages, settings.keep_tool_turns, settings.tool_output_threshold)
