"""Type aliases shared across the package."""

from __future__ import annotations

from datetime import timedelta
from typing import Literal, TypeAlias

__all__ = ["ROLES", "TTL", "JSONValue", "OnError", "OnLoadError", "Role"]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset(("system", "user", "assistant", "tool"))

JSONValue: TypeAlias = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]

#: A sliding expiry: seconds, a timedelta, or None (keep forever).
TTL: TypeAlias = float | int | timedelta | None
#: What a block that raised does with its staged messages.
OnError = Literal["discard", "commit"]
#: What entering a session does when the history cannot be loaded.
OnLoadError = Literal["raise", "empty"]
