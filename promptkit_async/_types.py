"""Type aliases shared across the package."""

from __future__ import annotations

from typing import Literal, Union

__all__ = ["JSONValue", "Role", "ROLES"]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset(("system", "user", "assistant", "tool"))

JSONValue = Union[str, int, float, bool, None, list["JSONValue"], dict[str, "JSONValue"]]
