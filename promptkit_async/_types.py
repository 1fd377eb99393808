"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Literal, TypeAlias

__all__ = ["JSONValue", "Role", "ROLES"]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset(("system", "user", "assistant", "tool"))

JSONValue: TypeAlias = str | int | float | bool | None | list["JSONValue"] | dict[str, "JSONValue"]
