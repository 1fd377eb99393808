"""Defaults and small validated settings shared by sessions and stores."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Final

from ._exceptions import InvalidSessionId

if TYPE_CHECKING:
    from ._types import TTL

__all__ = [
    "DEFAULT_MAX_MESSAGES",
    "DEFAULT_MAX_STORED",
    "DEFAULT_TTL",
    "MAX_SESSION_ID_LENGTH",
    "MAX_TTL",
    "check_limit",
    "check_owner",
    "check_session_id",
    "ttl_seconds",
]

DEFAULT_MAX_MESSAGES: Final = 20
#: Messages a store keeps per session (newest kept): far more than any human
#: conversation, and a bound on what a runaway tool loop can pile up.
DEFAULT_MAX_STORED: Final = 10_000
#: Sliding expiry of a session: refreshed by every write.
DEFAULT_TTL: Final = 24 * 60 * 60.0
#: Longest accepted TTL (100 years): longer is "forever", which is spelled None.
MAX_TTL: Final = 100 * 365 * 24 * 60 * 60.0
#: Longest accepted session id, in characters; keeps keys well under Redis limits.
MAX_SESSION_ID_LENGTH: Final = 4096


def check_session_id(session_id: object) -> str:
    """Return ``session_id`` if every store can key on it, else raise InvalidSessionId."""
    if type(session_id) is str and 0 < len(session_id) <= MAX_SESSION_ID_LENGTH:
        if session_id.isascii():
            return session_id  # the common case, checked first: hot path
    if type(session_id) is not str:
        if isinstance(session_id, str):  # a str subclass: key on its plain value
            session_id = str.__str__(session_id)
        else:
            raise InvalidSessionId(
                f"session id must be a str, got {type(session_id).__name__}: {session_id!r}"
            )
    assert isinstance(session_id, str)
    if not session_id:
        raise InvalidSessionId("session id must not be empty")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise InvalidSessionId(
            f"session id is {len(session_id)} characters long; the limit is {MAX_SESSION_ID_LENGTH}"
        )
    if not session_id.isascii():
        try:
            session_id.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidSessionId(
                f"session id {session_id!r} contains a lone surrogate and cannot be encoded"
            ) from None
    return session_id


def ttl_seconds(ttl: TTL) -> float | None:
    """Normalise a TTL setting to seconds (None: keep forever)."""
    if ttl is None:
        return None
    if type(ttl) is float and 0 < ttl <= MAX_TTL:  # the common case first: hot path
        return ttl
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, (int, float)) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise TypeError(f"ttl must be seconds, a timedelta or None, got {ttl!r}")
    if not 0 < seconds <= MAX_TTL:  # also rejects NaN and infinity
        raise ValueError(
            f"ttl must be positive and at most {MAX_TTL:g} s (or None to keep forever), got {ttl!r}"
        )
    return seconds


def check_limit(name: str, value: int | None, *, minimum: int = 1) -> int | None:
    """Validate a count setting such as max_messages (None: unlimited)."""
    if value is None or (type(value) is int and value >= minimum):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum} (or None for unlimited), got {value}")
    return value


def check_owner(owner: object) -> str:
    """An owner is keyed on like a session id: a non-empty str the stores can encode."""
    try:
        return check_session_id(owner)
    except InvalidSessionId as exc:
        raise InvalidSessionId(f"owner: {exc}") from None
