"""Conversation stores: the protocol, an in-memory store and a Redis store."""

from ._base import Store as Store
from ._memory import MemoryStore as MemoryStore
from ._redis import RedisStore as RedisStore

__all__ = ["MemoryStore", "RedisStore", "Store"]
