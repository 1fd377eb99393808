"""Every reply checked against the shape its command promises.

A reply of another shape (a proxy or server that is not fully compatible, a
connection out of step) raises :class:`BadReply`, which the error table reads
as ``Failure.PROTOCOL``: a read then fails with ``StoreProtocolError``, and a
commit is settled by turn id as if its reply were lost. Nothing is ever
concluded from a reply that does not fit, least of all "saved".
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadReply",
    "array",
    "commit_reply",
    "entries",
    "figures",
    "flag",
    "integer",
    "last_turn_reply",
    "load_if_changed_reply",
    "status",
    "text",
]


class BadReply(Exception):
    """A reply that does not have the shape its command promises (see the module)."""

    def __init__(self, command: str, reply: object) -> None:
        shown = repr(reply)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        super().__init__(f"unexpected reply to {command}: {shown}")
        self.command = command


def text(command: str, value: object) -> str:
    """A bulk string (bytes from a binary client, str from a text one)."""
    if type(value) is bytes:
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise BadReply(command, value) from None
    if type(value) is str:
        return value
    raise BadReply(command, value)


def integer(command: str, value: object) -> int:
    if type(value) is int:
        return value
    raise BadReply(command, value)


def status(command: str, value: object, allowed: frozenset[int]) -> int:
    """An integer that must be one of ``allowed``."""
    if type(value) is int and value in allowed:
        return value
    raise BadReply(command, value)


def flag(command: str, value: object) -> bool:
    """A 0/1 integer reply."""
    return bool(status(command, value, _FLAGS))


_FLAGS = frozenset((0, 1))


def array(command: str, value: object) -> list[Any]:
    """An array reply of any items (each checked by its reader)."""
    if type(value) is list:
        return value
    raise BadReply(command, value)


def entries(command: str, value: object) -> list[Any]:
    """A list of bulk strings (stored records)."""
    if type(value) is list and all(type(v) is bytes or type(v) is str for v in value):
        return value
    raise BadReply(command, value)


_COMMIT_STATUSES = frozenset((1, 0, -1, -2, -3, -4, -5))


def commit_reply(value: object) -> tuple[int, str, int, int, int, int]:
    """The commit script's ``{status, previous version, history length before, first
    number, time in ms, generation}`` (the last three -1 when unknown)."""
    if type(value) is list and len(value) == 6:
        first, ms = integer("the commit", value[3]), integer("the commit", value[4])
        gen = integer("the commit", value[5])
        if first < -1 or ms < -1 or gen < -1 or (first < 0) != (ms < 0):
            raise BadReply("the commit", value)
        return (
            status("the commit", value[0], _COMMIT_STATUSES),
            text("the commit", value[1]),
            integer("the commit", value[2]),
            first,
            ms,
            gen,
        )
    raise BadReply("the commit", value)


def last_turn_reply(value: object, turn_id: str) -> tuple[int, int, int]:
    """``HMGET meta lt lf t lg``: the first number, time and generation of ``turn_id``
    if it was the last turn (else -1s)."""
    if type(value) is not list or len(value) != 4:
        raise BadReply("HMGET", value)
    if value[0] is None or text("HMGET", value[0]) != turn_id:
        return -1, -1, -1
    try:
        first, ms = int(text("HMGET", value[1])), int(text("HMGET", value[2]))
        gen = 0 if value[3] is None else int(text("HMGET", value[3]))
    except ValueError:
        raise BadReply("HMGET", value) from None
    return (first, ms, gen) if first >= 0 and ms >= 0 and gen >= 0 else (-1, -1, -1)


def load_if_changed_reply(value: object) -> tuple[str, int, list[Any] | None, int]:
    """``{version, length, pttl}`` (the cached window is current) or ``{version, length,
    entries, pttl}``; pttl in milliseconds (-1: no expiry, -2: no history)."""
    if type(value) is list and len(value) in (3, 4):
        version = text("the cached load", value[0])
        length = integer("the cached load", value[1])
        ttl = integer("the cached load", value[-1])
        if len(value) == 3:
            return version, length, None, ttl
        return version, length, entries("the cached load", value[2]), ttl
    raise BadReply("the cached load", value)


def figures(value: object) -> tuple[int, int, int, int]:
    """The index script's ``{live sessions, sampled, messages, bytes}``."""
    if type(value) is list and len(value) == 4 and all(type(v) is int for v in value):
        return value[0], value[1], value[2], value[3]
    raise BadReply("the metrics script", value)
