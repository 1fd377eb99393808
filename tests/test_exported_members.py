"""The public surface: what promptkit_async exports and how it names it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import promptkit_async
from promptkit_async import (
    PromptKitError,
)

if TYPE_CHECKING:
    from promptkit_async import TTL


def test_public_names() -> None:
    for name in [
        "Session",
        "Message",
        "MemoryStore",
        "RedisStore",
        "PromptKitError",
        "StoreUnavailable",
        "CorruptHistory",
        "SessionBusy",
        "InvalidSessionId",
        "InvalidMessage",
    ]:
        assert name in promptkit_async.__all__
        assert getattr(promptkit_async, name).__module__ == "promptkit_async"
    for name in promptkit_async.__all__:
        obj = getattr(promptkit_async, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, PromptKitError)


def test_ttl_alias_is_exported_for_typing() -> None:
    t: TTL = 5
    assert t == 5
