"""Sample data shared by the tests."""

from __future__ import annotations

from promptkit_async import Message

__all__ = ["IDS", "a", "u"]


def u(text: str) -> Message:
    """A user message."""
    return Message.user(text)


def a(text: str) -> Message:
    """An assistant message."""
    return Message.assistant(text)


#: Session ids that differ only in characters with a meaning somewhere: the key
#: schema's braces and escapes, glob characters, separators, non-ASCII, long ids.
IDS = [
    "a:b",
    "a{b}",
    "a}b{",
    "a*b",
    "a",
    "a:{b}",
    "a%7Bb%7D",
    "a%b",
    "{a}",
    "{}",
    "*",
    "a\\*b",
    "a?b",
    "a[b]",
    "user-1",
    "user-1:conv-2",
    "üñî©ødé 🎉",
    "x" * 600,
    "x" * 601,
    " ",
    "a\nb",
]
