"""The Redis store, as a package of rooms (see ``_store.py`` for how they compose)."""

from ._leases import RedisLease as RedisLease
from ._store import RedisStore as RedisStore

__all__ = ["RedisLease", "RedisStore"]
